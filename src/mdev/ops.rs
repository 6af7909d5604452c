use std::time::Duration;

use serde::Serialize;

use super::definitions::{self, Attr, Definition, StartPolicy};
use super::MdevError;
use crate::host::Host;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid};
use crate::inventory::{read_device, scan_parent, MdevDevice, MdevParentInfo, MdevTypeInfo, VfioUsers, Warnings};
use crate::lock::HostLock;

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub parent: MdevParent,
    /// Directory name (`nvidia-699`, `mbochs-large`) or the type's `name`
    /// (`GRID A100D-1-10C`, `A100D-1-10C`).
    pub mdev_type: String,
    pub uuid: Option<MdevUuid>,
    /// Also write a definition with this start policy.
    pub persist: Option<StartPolicy>,
    pub attrs: Vec<Attr>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Created {
    pub uuid: MdevUuid,
    pub parent: MdevParent,
    #[serde(rename = "type")]
    pub type_id: MdevTypeId,
    pub type_name: Option<String>,
    pub iommu_group: Option<u32>,
    /// `false` when the device already existed as asked (start of an active definition).
    pub created: bool,
    pub defined: bool,
    pub start: Option<StartPolicy>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Removed {
    pub uuid: MdevUuid,
    /// The device existed and was removed.
    pub removed: bool,
    /// Its definition was deleted (`--undefine`).
    pub undefined: bool,
}

fn parent_info(host: &Host, parent: &MdevParent) -> Result<MdevParentInfo, MdevError> {
    let mut w = Warnings::default();
    scan_parent(host, parent, &mut w).ok_or_else(|| MdevError::UnknownParent {
        parent: parent.clone(),
        known: {
            let names = host.list_dir("/sys/class/mdev_bus").unwrap_or_default();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        },
    })
}

fn resolve_type<'a>(info: &'a MdevParentInfo, wanted: &str) -> Result<&'a MdevTypeInfo, MdevError> {
    info.find_type(wanted).ok_or_else(|| MdevError::UnknownType {
        parent: info.name.clone(),
        wanted: wanted.to_string(),
        known: info
            .types
            .iter()
            .map(|t| match &t.name {
                Some(n) if n != t.id.as_str() => format!("{} ({n})", t.id),
                _ => t.id.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn device(host: &Host, uuid: MdevUuid) -> Option<MdevDevice> {
    read_device(host, uuid, &VfioUsers::unknown(), &mut Warnings::default())
}

/// What holds a parent's capacity, for "no room" messages.
fn occupants(info: &MdevParentInfo, wanted: &MdevTypeInfo) -> String {
    let held: Vec<String> =
        info.types.iter().flat_map(|t| t.devices.iter().map(move |u| format!("{u} ({})", t.name.as_deref().unwrap_or(t.id.as_str())))).collect();
    let fb = |t: &MdevTypeInfo| t.vgpu.as_ref().and_then(|v| v.framebuffer_mib);
    let other_sizes: Vec<u64> = info.types.iter().filter(|t| !t.devices.is_empty() && fb(t).is_some() && fb(t) != fb(wanted)).filter_map(fb).collect();
    if let (Some(size), false) = (fb(wanted), other_sizes.is_empty()) {
        return format!(
            "the GPU holds vGPUs with {} MiB framebuffers ({}) and NVIDIA's equal-size mode allows one size per GPU, but this type has {size} MiB; remove those vGPUs, use a type of their size, or enable heterogeneous mode",
            other_sizes[0],
            held.join(", ")
        );
    }
    if held.is_empty() {
        "available_instances is 0 and the parent holds no mdevs itself; on NVIDIA GPUs the physical GPU's other vGPUs (another framebuffer size, or all slots used) or MIG mode decide this: see `vgpuctl types`".into()
    } else {
        format!("available_instances is 0; it holds {} mdev(s): {}; remove one or pick another parent", held.len(), held.join(", "))
    }
}

fn in_use_by(host: &Host, d: &MdevDevice) -> String {
    d.iommu_group.and_then(|g| VfioUsers::scan(host).user_of(g)).map(|u| format!(" by {u}")).unwrap_or_default()
}

pub fn create(host: &Host, req: &CreateRequest, lock_timeout: Duration) -> Result<Created, MdevError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    create_locked(host, req)
}

/// Creates the mdev; the caller holds the host lock. Nothing is left behind
/// on failure: a device made before a failed attribute or definition write is
/// removed again.
pub fn create_locked(host: &Host, req: &CreateRequest) -> Result<Created, MdevError> {
    let info = parent_info(host, &req.parent)?;
    let ty = resolve_type(&info, &req.mdev_type)?;
    let uuid = req.uuid.unwrap_or_else(MdevUuid::new_random);
    if let Some(existing) = device(host, uuid) {
        return Err(MdevError::UuidInUse {
            uuid,
            parent: existing.parent.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            type_id: existing.type_id.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
        });
    }
    if req.persist.is_some() {
        if let Some(d) = definitions::find(host, &uuid)? {
            if d.parent != req.parent || d.mdev_type != ty.id {
                return Err(MdevError::DefinitionExists { uuid, path: definitions::path_of(&d.parent, &uuid) });
            }
        }
    }
    if ty.available_instances == Some(0) {
        return Err(MdevError::NoRoom { parent: req.parent.clone(), type_id: ty.id.clone(), occupants: occupants(&info, ty) });
    }
    let create_path = format!("/sys/class/mdev_bus/{}/mdev_supported_types/{}/create", req.parent, ty.id);
    tracing::info!(%uuid, parent = %req.parent, r#type = %ty.id, "creating mdev");
    if let Err(e) = host.write_attr(&create_path, &uuid.to_string()) {
        use nix::errno::Errno;
        return Err(match e.errno().map(Errno::from_raw) {
            Some(Errno::EEXIST) => {
                let d = device(host, uuid);
                MdevError::UuidInUse {
                    uuid,
                    parent: d.as_ref().and_then(|d| d.parent.as_ref()).map(|p| p.to_string()).unwrap_or_else(|| "another parent".into()),
                    type_id: d.and_then(|d| d.type_id).map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                }
            }
            Some(Errno::ENOSPC | Errno::EUSERS | Errno::EDQUOT) => {
                // Re-read: another process may have taken the last slot.
                let info = parent_info(host, &req.parent).unwrap_or(info.clone());
                MdevError::NoRoom { parent: req.parent.clone(), type_id: ty.id.clone(), occupants: occupants(&info, ty) }
            }
            Some(Errno::EINVAL) => MdevError::Rejected {
                parent: req.parent.clone(),
                type_id: ty.id.clone(),
                hint: "on NVIDIA hosts this usually means the type does not fit beside the GPU's existing vGPUs (equal-size mode, or MIG mode without a free GPU instance) or nvidia-vgpu-mgr is not running (journalctl -u nvidia-vgpu-mgr)",
            },
            _ => MdevError::Host(e),
        });
    }
    let rollback = |why: MdevError| -> MdevError {
        // One retry: a transient EBUSY/EIO on the first attempt must not leak a device.
        let path = format!("/sys/bus/mdev/devices/{uuid}/remove");
        if let Err(e) = host.write_attr(&path, "1").or_else(|_| host.write_attr(&path, "1")) {
            if !e.is_not_found() {
                tracing::error!(%uuid, "rollback of a half-made mdev failed: {}; remove it with `vgpuctl mdev remove {uuid}`", crate::error_chain(&e));
            }
        }
        why
    };
    let made = match device(host, uuid) {
        Some(d) if d.type_id.as_ref() == Some(&ty.id) => d,
        Some(d) => {
            return Err(rollback(MdevError::VerifyFailed { uuid, why: format!("its mdev_type is {:?}, not {}", d.type_id.map(|t| t.to_string()), ty.id) }))
        }
        None => return Err(MdevError::VerifyFailed { uuid, why: "it does not exist in /sys/bus/mdev/devices".into() }),
    };
    for a in &req.attrs {
        if let Err(source) = host.write_attr(&format!("/sys/bus/mdev/devices/{uuid}/{}", a.name), &a.value) {
            return Err(rollback(MdevError::AttrWrite { uuid, name: a.name.clone(), source }));
        }
    }
    let mut defined = false;
    if let Some(start) = req.persist {
        let def = Definition { uuid, parent: req.parent.clone(), mdev_type: ty.id.clone(), start, attrs: req.attrs.clone() };
        if let Err(e) = definitions::save(host, &def) {
            return Err(rollback(e));
        }
        defined = true;
    }
    Ok(Created {
        uuid,
        parent: req.parent.clone(),
        type_id: ty.id.clone(),
        type_name: ty.name.clone(),
        iommu_group: made.iommu_group,
        created: true,
        defined,
        start: req.persist,
    })
}

pub fn remove(host: &Host, uuid: MdevUuid, undefine: bool, if_exists: bool, lock_timeout: Duration) -> Result<Removed, MdevError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    remove_locked(host, uuid, undefine, if_exists)
}

pub fn remove_locked(host: &Host, uuid: MdevUuid, undefine: bool, if_exists: bool) -> Result<Removed, MdevError> {
    let def = definitions::find(host, &uuid)?;
    let removed = match device(host, uuid) {
        Some(d) => {
            tracing::info!(%uuid, "removing mdev");
            if let Err(e) = host.write_attr(&format!("/sys/bus/mdev/devices/{uuid}/remove"), "1") {
                use nix::errno::Errno;
                return Err(match e.errno().map(Errno::from_raw) {
                    Some(Errno::EBUSY | Errno::EPERM) => MdevError::Busy { uuid, by: in_use_by(host, &d) },
                    // Gone between the check and the write: someone else removed it.
                    Some(Errno::ENOENT) => return finish_remove(host, uuid, def, undefine, false),
                    _ => MdevError::Host(e),
                });
            }
            true
        }
        None if if_exists || (undefine && def.is_some()) => false,
        None => {
            return Err(MdevError::NotFound {
                uuid,
                defined: match &def {
                    Some(d) => format!(" (it is defined on {} as {}; `vgpuctl mdev start {uuid}` creates it)", d.parent, d.mdev_type),
                    None => String::new(),
                },
            })
        }
    };
    finish_remove(host, uuid, def, undefine, removed)
}

fn finish_remove(host: &Host, uuid: MdevUuid, def: Option<Definition>, undefine: bool, removed: bool) -> Result<Removed, MdevError> {
    let undefined = match (undefine, def) {
        (true, Some(d)) => definitions::delete(host, &d.parent, &uuid)?,
        _ => false,
    };
    Ok(Removed { uuid, removed, undefined })
}

/// Creates a defined device. Starting one that is already active as defined
/// is a success (`created: false`), so boot scripts and hooks can repeat it.
pub fn start(host: &Host, uuid: MdevUuid, parent: Option<&MdevParent>, lock_timeout: Duration) -> Result<Created, MdevError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    start_locked(host, uuid, parent)
}

pub(super) fn start_locked(host: &Host, uuid: MdevUuid, parent: Option<&MdevParent>) -> Result<Created, MdevError> {
    let def = definitions::find_on(host, &uuid, parent)?.ok_or(MdevError::NotDefined { uuid })?;
    start_definition_locked(host, &def)
}

pub(super) fn start_definition_locked(host: &Host, def: &Definition) -> Result<Created, MdevError> {
    if let Some(d) = device(host, def.uuid) {
        if d.parent.as_ref() == Some(&def.parent) && d.type_id.as_ref() == Some(&def.mdev_type) {
            return Ok(Created {
                uuid: def.uuid,
                parent: def.parent.clone(),
                type_id: def.mdev_type.clone(),
                type_name: None,
                iommu_group: d.iommu_group,
                created: false,
                defined: true,
                start: Some(def.start),
            });
        }
        return Err(MdevError::Conflict {
            uuid: def.uuid,
            active_parent: d.parent.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            active_type: d.type_id.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            parent: def.parent.clone(),
            type_id: def.mdev_type.clone(),
        });
    }
    let req = CreateRequest { parent: def.parent.clone(), mdev_type: def.mdev_type.to_string(), uuid: Some(def.uuid), persist: None, attrs: def.attrs.clone() };
    let mut c = create_locked(host, &req)?;
    c.defined = true;
    c.start = Some(def.start);
    Ok(c)
}

pub fn stop(host: &Host, uuid: MdevUuid, lock_timeout: Duration) -> Result<Removed, MdevError> {
    remove(host, uuid, false, false, lock_timeout)
}

/// Writes a definition without creating the device. When the parent is
/// present, the type is checked against it (and a type `name` is turned into
/// its directory name, which is what mdevctl stores).
pub fn define(
    host: &Host,
    parent: &MdevParent,
    mdev_type: &str,
    uuid: Option<MdevUuid>,
    start: StartPolicy,
    attrs: Vec<Attr>,
    lock_timeout: Duration,
) -> Result<Definition, MdevError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let mut w = Warnings::default();
    let type_id = match scan_parent(host, parent, &mut w) {
        Some(info) => resolve_type(&info, mdev_type)?.id.clone(),
        // The parent may appear later (VFs not enabled yet): store the
        // directory name as given; it must at least be a valid one.
        None => mdev_type.parse().map_err(|e: crate::ids::IdError| MdevError::UnknownType {
            parent: parent.clone(),
            wanted: mdev_type.to_string(),
            known: format!("parent not present, so the type must be given as its directory name ({e})"),
        })?,
    };
    let uuid = uuid.unwrap_or_else(MdevUuid::new_random);
    if let Some(existing) = definitions::find(host, &uuid)? {
        return Err(MdevError::DefinitionExists { uuid, path: definitions::path_of(&existing.parent, &uuid) });
    }
    let def = Definition { uuid, parent: parent.clone(), mdev_type: type_id, start, attrs };
    definitions::save(host, &def)?;
    Ok(def)
}

pub fn undefine(host: &Host, uuid: MdevUuid, parent: Option<&MdevParent>, lock_timeout: Duration) -> Result<Definition, MdevError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let def = definitions::find_on(host, &uuid, parent)?.ok_or(MdevError::NotDefined { uuid })?;
    definitions::delete(host, &def.parent, &uuid)?;
    Ok(def)
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ListRow {
    pub uuid: MdevUuid,
    pub parent: Option<MdevParent>,
    #[serde(rename = "type")]
    pub type_id: Option<MdevTypeId>,
    /// The type's name as the admin knows it (`A100D-4C` for nvidia-709),
    /// while its parent lists the type.
    pub type_name: Option<String>,
    pub active: bool,
    pub defined: bool,
    pub start: Option<StartPolicy>,
    pub iommu_group: Option<u32>,
    pub in_use: Option<bool>,
    pub attrs: Vec<Attr>,
    /// A live device and a definition with the same UUID that disagree on
    /// parent or type: what the other one says (then `active`/`defined` is
    /// false for this row's side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ListReport {
    pub schema_version: u32,
    pub devices: Vec<ListRow>,
    /// Definition files that could not be read (left untouched).
    pub warnings: Vec<String>,
}

/// Active mdevs (and whether each is defined), or with `defined` the
/// definitions (and whether each is active): mdevctl's `list` and `list -d`.
fn opt_text<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_else(|| "?".into())
}

/// The name a parent gives its type (`GRID A100D-4C` → `A100D-4C`).
fn type_name(host: &Host, parent: &MdevParent, t: &MdevTypeId) -> Option<String> {
    let name = host.read_attr_opt(&format!("/sys/class/mdev_bus/{parent}/mdev_supported_types/{t}/name")).ok()??;
    Some(crate::vgpu::typename::short_name(&name))
}

pub fn list(host: &Host, defined_only: bool) -> Result<ListReport, MdevError> {
    let (defs, warnings) = definitions::load_all(host)?;
    let mut rows = Vec::new();
    if defined_only {
        let names = host.list_dir("/sys/bus/mdev/devices")?;
        for d in defs {
            // Active as defined: the same UUID on the same parent with the same type.
            let dev = if names.iter().any(|n| n == &d.uuid.to_string()) { device(host, d.uuid) } else { None };
            let matches = dev.as_ref().is_some_and(|x| x.parent.as_ref() == Some(&d.parent) && x.type_id.as_ref() == Some(&d.mdev_type));
            let mismatch = dev.as_ref().filter(|_| !matches).map(|x| format!("active on {} as {}", opt_text(&x.parent), opt_text(&x.type_id)));
            rows.push(ListRow {
                uuid: d.uuid,
                type_name: type_name(host, &d.parent, &d.mdev_type),
                parent: Some(d.parent),
                type_id: Some(d.mdev_type),
                active: matches,
                defined: true,
                start: Some(d.start),
                iommu_group: dev.filter(|_| matches).and_then(|d| d.iommu_group),
                in_use: None,
                attrs: d.attrs,
                mismatch,
            });
        }
    } else {
        let mut w = Warnings::default();
        let users = VfioUsers::scan(host);
        for name in host.list_dir("/sys/bus/mdev/devices")? {
            let Ok(uuid) = name.parse::<MdevUuid>() else { continue };
            let Some(d) = read_device(host, uuid, &users, &mut w) else { continue };
            // Defined as it is: a definition of this UUID on its parent with its type.
            let def = defs.iter().find(|x| x.uuid == uuid && Some(&x.parent) == d.parent.as_ref() && Some(&x.mdev_type) == d.type_id.as_ref());
            let other = defs.iter().find(|x| x.uuid == uuid).filter(|_| def.is_none());
            let type_name = match (&d.parent, &d.type_id) {
                (Some(p), Some(t)) => type_name(host, p, t),
                _ => None,
            };
            rows.push(ListRow {
                uuid,
                type_name,
                parent: d.parent,
                type_id: d.type_id,
                active: true,
                defined: def.is_some(),
                start: def.map(|x| x.start),
                iommu_group: d.iommu_group,
                in_use: d.in_use,
                attrs: def.map(|x| x.attrs.clone()).unwrap_or_default(),
                mismatch: other.map(|x| format!("defined on {} as {}", x.parent, x.mdev_type)),
            });
        }
    }
    rows.sort_by(|a, b| (&a.parent, a.uuid).cmp(&(&b.parent, b.uuid)));
    Ok(ListReport { schema_version: crate::inventory::SCHEMA_VERSION, devices: rows, warnings })
}
