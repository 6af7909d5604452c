//! Create and remove vGPUs by type name, on either NVIDIA interface.

use std::time::Duration;

use serde::Serialize;

use super::alloc::{self, Policy};
use super::explain;
use super::typename::VgpuTypeName;
use super::view::{self, GpuView, HostFacts, Interface, Slot, TypeRef};
use crate::host::{Host, HostError};
use crate::ids::{MdevParent, MdevUuid, PciAddress};
use crate::inventory::{Inventory, ScanOptions, VfioUsers};
use crate::lock::{HostLock, LockError};
use crate::mdev::{self, CreateRequest, MdevError};

#[derive(Debug, thiserror::Error)]
pub enum VgpuError {
    #[error("no GPU can take a {wanted} now:\n{reasons}")]
    NoRoom { wanted: String, reasons: String },
    #[error("{gpu} is not a GPU with vGPU support here (see `vgpuctl explain --type {wanted}`)")]
    NotAVgpuGpu { gpu: PciAddress, wanted: String },
    #[error("--uuid applies to mdev-based vGPUs only; {gpu} uses NVIDIA's vendor-specific VFIO interface, where the VM's own UUID identifies the vGPU")]
    UuidOnVendorVfio { gpu: PciAddress },
    #[error("{target} is neither an mdev UUID nor the PCI address of a VF holding a vGPU")]
    UnknownTarget { target: String },
    #[error("{addr} is a physical GPU; remove a vGPU by its VF address or mdev UUID (vgpuctl list --json shows them)")]
    IsPhysicalGpu { addr: PciAddress },
    #[error("VF {vf} holds no vGPU")]
    VfEmpty { vf: PciAddress },
    #[error("VF {vf} is in use{by}; stop the VM first")]
    VfBusy { vf: PciAddress, by: String },
    #[error("VF {vf} changed behind vgpuctl's back: {why}")]
    VfChanged { vf: PciAddress, why: String },
    #[error("the driver refused type {type_id} on VF {vf}")]
    VfRejected {
        vf: PciAddress,
        type_id: u32,
        #[source]
        source: HostError,
    },
    #[error(transparent)]
    Mode(ModeError),
    #[error(transparent)]
    Nvctl(#[from] crate::nvidia::ControlError),
    #[error(transparent)]
    Mdev(#[from] MdevError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Ledger(#[from] crate::mig::backend::ledger::LedgerError),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, Serialize)]
pub struct VgpuCreated {
    pub interface: Interface,
    pub gpu: PciAddress,
    #[serde(rename = "type")]
    pub type_name: String,
    pub type_id: TypeRef,
    /// Vendor-specific VFIO: the VF now carrying the vGPU (give it to the VM, unmanaged).
    pub vf: Option<PciAddress>,
    /// Legacy mdev: the mdev and its parent.
    pub uuid: Option<MdevUuid>,
    pub parent: Option<MdevParent>,
    /// MIG-backed: the GPU instance it sits on, and whether vgpuctl made it for this vGPU.
    pub gi: Option<u32>,
    pub gi_created: bool,
}

#[derive(Debug, Clone)]
pub struct VgpuCreateRequest {
    pub type_name: VgpuTypeName,
    pub gpu: Option<PciAddress>,
    pub uuid: Option<MdevUuid>,
    pub policy: Policy,
}

/// The current vGPU view of the host (no usage scan: callers under the lock
/// need allocation facts, not who holds what).
pub fn views(host: &Host) -> Result<(Inventory, Vec<GpuView>), HostError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let v = view::build(&inv, &HostFacts { host });
    Ok((inv, v))
}

pub fn create(host: &Host, req: &VgpuCreateRequest, lock_timeout: Duration) -> Result<VgpuCreated, VgpuError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    create_locked(host, req)
}

pub fn create_locked(host: &Host, req: &VgpuCreateRequest) -> Result<VgpuCreated, VgpuError> {
    let (_, mut views) = views(host)?;
    let mut gi_created = None;
    if req.type_name.kind() == super::typename::VgpuKind::MigBacked && alloc::choose(&views, &req.type_name, req.gpu, req.policy).is_none() {
        // No free GPU instance of the profile: make one where the planner says.
        // Recorded in the ledger before and after the driver call: if this
        // process dies before the vGPU lands on it, `vgpuctl gc` frees it.
        if let Some((gpu, gi)) = make_gi_for(host, &views, &req.type_name, req.gpu)? {
            gi_created = Some((gpu, gi));
            views = match self::views(host) {
                Ok(v) => v.1,
                Err(e) => {
                    drop_made_gi(host, gpu, gi);
                    return Err(e.into());
                }
            };
        }
    }
    let mut c = match create_on(host, req, &views) {
        Ok(c) => c,
        Err(e) => {
            // Nothing half-done: the GPU instance made for it goes again.
            if let Some((gpu, gi)) = gi_created {
                drop_made_gi(host, gpu, gi);
            }
            return Err(e);
        }
    };
    if let (Some(vf), true) = (c.vf, c.interface == Interface::VendorVfio) {
        c.gi = host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/gpu_instance_id")).ok().flatten().and_then(|g| g.trim().parse().ok());
    }
    if let Some((_, gi)) = gi_created {
        c.gi_created = c.gi == Some(gi);
    }
    Ok(c)
}

/// Destroys a GPU instance vgpuctl made (and takes it off the ledger).
fn drop_made_gi(host: &Host, gpu: PciAddress, gi: u32) {
    match crate::mig::backend::backend(host).and_then(|b| b.destroy(gpu, gi)) {
        Ok(()) | Err(crate::mig::backend::MigError::NoInstance { .. }) => {
            if let Err(e) = crate::mig::backend::ledger::forget(host, gpu, gi) {
                tracing::warn!(%gpu, gi, "destroyed the GPU instance, but {e}");
            }
        }
        Err(e) => tracing::error!(%gpu, gi, "could not destroy the GPU instance made for the vGPU (vgpuctl gc retries): {e}"),
    }
}

/// GPU instances vgpuctl made that hold no vGPU any more (a crash between
/// making one and placing the vGPU on it): destroyed. Call under the host lock.
/// Returns (what, what happened) per ledger entry it acted on.
pub fn sweep_made_gis(host: &Host) -> Result<Vec<(String, String)>, crate::mig::backend::ledger::LedgerError> {
    use crate::mig::backend::ledger;
    let mut out = Vec::new();
    let entries = ledger::load(host)?;
    if entries.is_empty() {
        return Ok(out);
    }
    let Ok(b) = crate::mig::backend::backend(host) else { return Ok(out) };
    let mut keep = Vec::new();
    for mut m in entries {
        let Ok(instances) = b.instances(m.gpu) else {
            keep.push(m);
            continue;
        };
        // An intent without an id (a crash while the driver was asked):
        // the instance of that profile at that start, if one was made.
        if m.gi.is_none() {
            match instances.iter().find(|i| i.profile_id == m.profile_id && i.start == m.start) {
                Some(i) => m.gi = Some(i.gi),
                None => {
                    out.push((format!("{} GPU instance of profile {} at slice {}", m.gpu, m.profile_id, m.start), "never made; forgotten".to_string()));
                    continue;
                }
            }
        }
        let Some(gi) = m.gi else { continue };
        if !instances.iter().any(|i| i.gi == gi) {
            out.push((format!("{} GPU instance {gi}", m.gpu), "gone already; forgotten".to_string()));
        } else if crate::mig::backend::vgpu_holders(host, m.gpu, gi).is_empty() && b.users(m.gpu, gi).is_empty() {
            match b.destroy(m.gpu, gi) {
                Ok(()) => out.push((format!("{} GPU instance {gi}", m.gpu), "held no vGPU; destroyed".to_string())),
                Err(e) => {
                    out.push((format!("{} GPU instance {gi}", m.gpu), format!("could not destroy: {e}")));
                    keep.push(m);
                }
            }
        } else {
            keep.push(m);
        }
    }
    ledger::save(host, &keep)?;
    Ok(out)
}

/// Creates a GPU instance for a MIG-backed type on a GPU in MIG mode whose
/// vGPU model matches, at the planner's placement.
/// Makes a GPU instance for a MIG-backed type where the planner says, with
/// the intent in the ledger first; `Ok(None)` when no GPU can take one.
pub fn make_gi_for(host: &Host, views: &[GpuView], t: &VgpuTypeName, only: Option<PciAddress>) -> Result<Option<(PciAddress, u32)>, VgpuError> {
    // One backend for the placement, the create and a rollback: it reads
    // the driver once and keeps what it changed.
    let Ok(b) = crate::mig::backend::backend(host) else { return Ok(None) };
    let Some((gpu, p, start)) = gi_placement(host, &*b, views, t, only) else { return Ok(None) };
    use crate::mig::backend::ledger;
    ledger::intend(host, gpu, p.id, start)?;
    let made = b.create(gpu, &p, start);
    let gi = match made {
        Ok(gi) => gi,
        Err(e) => {
            tracing::warn!(%gpu, "could not create a {} GPU instance at slice {start}: {e}", p.name);
            ledger::settle(host, gpu, p.id, start, None)?;
            return Ok(None);
        }
    };
    if let Err(e) = ledger::settle(host, gpu, p.id, start, Some(gi)) {
        // Not kept without its id on record: destroyed, and the intent
        // dropped (should that fail too, gc resolves it by profile and start).
        match b.destroy(gpu, gi) {
            Ok(()) => {
                if let Err(x) = ledger::settle(host, gpu, p.id, start, None) {
                    tracing::warn!(%gpu, "{x}");
                }
            }
            Err(d) => tracing::error!(%gpu, gi, "could not destroy the GPU instance that could not be recorded (vgpuctl gc retries): {d}"),
        }
        return Err(e.into());
    }
    tracing::info!(%gpu, gi, "created a {} GPU instance for a vGPU", p.name);
    Ok(Some((gpu, gi)))
}

/// Where the planner would put a GPU instance for a MIG-backed type.
fn gi_placement(
    host: &Host,
    b: &dyn crate::mig::backend::MigBackend,
    views: &[GpuView],
    t: &VgpuTypeName,
    only: Option<PciAddress>,
) -> Option<(PciAddress, crate::mig::profiles::Profile, u8)> {
    let profile = t.mig_profile()?;
    let gpus: Vec<&GpuView> = views
        .iter()
        .filter(|v| only.is_none_or(|g| g == v.gpu) && v.mig_enabled() && v.model.as_deref() == Some(t.model.as_str()))
        .filter(|v| !v.vgpus.iter().any(|x| x.kind == Some(super::typename::VgpuKind::TimeSliced)))
        .collect();
    let table = b.profiles(gpus.first()?.gpu).ok()?;
    let p = crate::mig::profiles::find(&table, &profile.to_string())?;
    let layouts: Vec<crate::mig::layout::Layout> = gpus.iter().map(|v| crate::mig::backend::layout(&b.instances(v.gpu).unwrap_or_default())).collect();
    let planner = match crate::mig::policy::planner(host, &table) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e}");
            return None;
        }
    };
    let (i, start) = planner.choose(&layouts, p)?;
    Some((gpus[i].gpu, p.clone(), start))
}

fn create_on(host: &Host, req: &VgpuCreateRequest, views: &[GpuView]) -> Result<VgpuCreated, VgpuError> {
    if let Some(g) = req.gpu {
        if !views.iter().any(|v| v.gpu == g && v.interface != Interface::None) {
            return Err(VgpuError::NotAVgpuGpu { gpu: g, wanted: req.type_name.to_string() });
        }
    }
    let Some(choice) = alloc::choose(views, &req.type_name, req.gpu, req.policy) else {
        let e = explain::explain(views, &req.type_name);
        let reasons = e.gpus.iter().filter(|v| req.gpu.is_none_or(|g| g == v.gpu)).map(|v| format!("  {}: {}", v.gpu, v.reason)).collect::<Vec<_>>().join("\n");
        return Err(VgpuError::NoRoom { wanted: req.type_name.to_string(), reasons: if reasons.is_empty() { "  no NVIDIA GPUs".into() } else { reasons } });
    };
    let gpu = choice.view.gpu;
    let type_name = choice.ty.name.clone();
    match (&choice.slot, &choice.id) {
        (Slot::Vf { vf }, TypeRef::VendorId(id)) => {
            if req.uuid.is_some() {
                return Err(VgpuError::UuidOnVendorVfio { gpu });
            }
            set_vf_type(host, *vf, *id)?;
            Ok(VgpuCreated {
                interface: Interface::VendorVfio,
                gpu,
                type_name,
                type_id: choice.id.clone(),
                vf: Some(*vf),
                uuid: None,
                parent: None,
                gi: None,
                gi_created: false,
            })
        }
        (Slot::Mdev { parent }, TypeRef::Mdev(t)) => {
            let c =
                mdev::create_locked(host, &CreateRequest { parent: parent.clone(), mdev_type: t.to_string(), uuid: req.uuid, persist: None, attrs: vec![] })?;
            Ok(VgpuCreated {
                interface: choice.view.interface,
                gpu,
                type_name,
                type_id: choice.id.clone(),
                vf: parent.pci_address().filter(|_| choice.view.interface == Interface::LegacyMdevVfs),
                uuid: Some(c.uuid),
                parent: Some(parent.clone()),
                gi: None,
                gi_created: false,
            })
        }
        // A vendor slot always carries a vendor id and an mdev slot an mdev type.
        _ => Err(VgpuError::NoRoom { wanted: type_name, reasons: "inconsistent slot".into() }),
    }
}

fn vf_file(vf: PciAddress) -> String {
    format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type")
}

fn read_vf_type(host: &Host, vf: PciAddress) -> Result<u32, VgpuError> {
    let raw = host.read_attr(&vf_file(vf))?;
    crate::parse::count(&raw).ok_or_else(|| VgpuError::VfChanged { vf, why: format!("current_vgpu_type holds {raw:?}") })
}

/// Writes a type to an empty VF and checks it took. The driver answers EPERM
/// when the VF already has a type; we read first so the admin never sees that.
fn set_vf_type(host: &Host, vf: PciAddress, id: u32) -> Result<(), VgpuError> {
    let current = read_vf_type(host, vf)?;
    if current != 0 {
        return Err(VgpuError::VfChanged { vf, why: format!("it already holds type {current}") });
    }
    tracing::info!(%vf, id, "setting vGPU type");
    host.write_attr(&vf_file(vf), &id.to_string()).map_err(|source| VgpuError::VfRejected { vf, type_id: id, source })?;
    let now = read_vf_type(host, vf)?;
    if now != id {
        let _ = host.write_attr(&vf_file(vf), "0");
        return Err(VgpuError::VfChanged { vf, why: format!("wrote {id} but it reads {now}; set back to 0") });
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct VgpuRemoved {
    pub vf: Option<PciAddress>,
    pub uuid: Option<MdevUuid>,
    pub removed: bool,
    /// The GPU instance vgpuctl had made for this vGPU, removed with it.
    pub gi_removed: Option<u32>,
}

pub fn remove(host: &Host, target: &str, if_exists: bool, keep_gi: bool, lock_timeout: Duration) -> Result<VgpuRemoved, VgpuError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    remove_locked_keep(host, target, if_exists, keep_gi)
}

pub fn remove_locked(host: &Host, target: &str, if_exists: bool) -> Result<VgpuRemoved, VgpuError> {
    remove_locked_keep(host, target, if_exists, false)
}

pub fn remove_locked_keep(host: &Host, target: &str, if_exists: bool, keep_gi: bool) -> Result<VgpuRemoved, VgpuError> {
    if let Ok(uuid) = target.parse::<MdevUuid>() {
        let r = mdev::remove_locked(host, uuid, false, if_exists)?;
        return Ok(VgpuRemoved { vf: None, uuid: Some(uuid), removed: r.removed, gi_removed: None });
    }
    let Ok(vf) = target.parse::<PciAddress>() else {
        return Err(VgpuError::UnknownTarget { target: target.to_string() });
    };
    if !host.exists(&vf_file(vf)) {
        if host.exists(&format!("/sys/bus/pci/devices/{vf}/sriov_totalvfs")) {
            return Err(VgpuError::IsPhysicalGpu { addr: vf });
        }
        return Err(VgpuError::UnknownTarget { target: target.to_string() });
    }
    if read_vf_type(host, vf)? == 0 {
        // Writing 0 to an empty VF is EPERM on real hosts: say what it means.
        return if if_exists { Ok(VgpuRemoved { vf: Some(vf), uuid: None, removed: false, gi_removed: None }) } else { Err(VgpuError::VfEmpty { vf }) };
    }
    if let Some(by) = vf_user(host, vf) {
        return Err(VgpuError::VfBusy { vf, by });
    }
    let gi: Option<u32> = host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/gpu_instance_id")).ok().flatten().and_then(|g| g.trim().parse().ok());
    tracing::info!(%vf, "clearing vGPU type");
    host.write_attr(&vf_file(vf), "0").map_err(|e| match e.errno().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::EBUSY | nix::errno::Errno::EPERM) => VgpuError::VfBusy { vf, by: String::new() },
        _ => VgpuError::Host(e),
    })?;
    let mut gi_removed = None;
    if let (Some(gi), Some(pf)) = (gi, host.link_name(&format!("/sys/bus/pci/devices/{vf}/physfn")).ok().flatten().and_then(|p| p.parse::<PciAddress>().ok())) {
        // Only an instance the ledger proves vgpuctl made goes with the vGPU;
        // with the ledger unreadable, none is taken for vgpuctl's.
        let made = match crate::mig::backend::ledger::holds(host, pf, gi) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("{e}: GPU instance {gi} on {pf} is left in place");
                false
            }
        };
        if made && keep_gi {
            // Kept: it is the admin's now, never vgpuctl's to remove.
            if let Err(e) = crate::mig::backend::ledger::forget(host, pf, gi) {
                tracing::warn!("{e}");
            }
        } else if made {
            if let Ok(b) = crate::mig::backend::backend(host) {
                if b.destroy(pf, gi).is_ok() {
                    if let Err(e) = crate::mig::backend::ledger::forget(host, pf, gi) {
                        tracing::warn!("destroyed GPU instance {gi} on {pf}, but {e}");
                    }
                    gi_removed = Some(gi);
                }
            }
        }
    }
    Ok(VgpuRemoved { vf: Some(vf), uuid: None, removed: true, gi_removed })
}

/// Who holds the VF's VFIO group, if anyone (and if we can tell).
fn vf_user(host: &Host, vf: PciAddress) -> Option<String> {
    let group = host.link_name(&format!("/sys/bus/pci/devices/{vf}/iommu_group")).ok()??.parse::<u32>().ok()?;
    let u = VfioUsers::scan(host).user_of(group)?;
    Some(format!(" by {u}"))
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeChange {
    pub gpu: PciAddress,
    pub heterogeneous: bool,
    pub changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error(
        "{gpu} has no mixed-size (heterogeneous) vGPU mode (it needs vGPU 17+ on a GPU that supports it; `nvidia-smi -q` shows 'vGPU Heterogeneous Mode')"
    )]
    Unsupported { gpu: PciAddress },
    #[error("cannot change the mixed-size mode of {gpu} while it holds vGPUs ({what}); the driver refuses (IN_USE): remove them first")]
    VgpusExist { gpu: PciAddress, what: String },
    #[error("cannot enable mixed-size mode on {gpu} while MIG mode is on (the driver answers NOT_SUPPORTED)")]
    MigOn { gpu: PciAddress },
}

/// Turns mixed-size mode on or off, after the checks the driver would fail
/// with less helpful messages.
pub fn set_heterogeneous(host: &Host, gpu: PciAddress, on: bool, lock_timeout: Duration) -> Result<ModeChange, VgpuError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let (_, views) = views(host)?;
    let v = views.iter().find(|v| v.gpu == gpu).ok_or(VgpuError::NotAVgpuGpu { gpu, wanted: "a vGPU".into() })?;
    let current = v.heterogeneous.ok_or(VgpuError::Mode(ModeError::Unsupported { gpu }))?;
    if current == on {
        return Ok(ModeChange { gpu, heterogeneous: on, changed: false });
    }
    if !v.vgpus.is_empty() {
        let what = v.vgpus.iter().map(|x| x.type_name.clone().unwrap_or_default()).collect::<Vec<_>>().join(", ");
        return Err(VgpuError::Mode(ModeError::VgpusExist { gpu, what }));
    }
    if on && v.mig_enabled() {
        return Err(VgpuError::Mode(ModeError::MigOn { gpu }));
    }
    host.nvidia().set_heterogeneous(host, gpu, on)?;
    Ok(ModeChange { gpu, heterogeneous: on, changed: true })
}

/// For the hook: makes the VF a domain names carry `wanted`. `Ok(Some(id))`
/// when it wrote the type, `Ok(None)` when the VF already had it.
pub fn ensure_vf_type(host: &Host, vf: PciAddress, wanted: &VgpuTypeName) -> Result<Option<u32>, VgpuError> {
    let (_, views) = views(host)?;
    let view = views.iter().find(|v| v.slots > 0 && v.interface == Interface::VendorVfio && host_vf_of(host, v.gpu, vf));
    let current = read_vf_type(host, vf)?;
    if current != 0 {
        let name = view.and_then(|v| v.vgpus.iter().find(|x| x.vf == Some(vf))).and_then(|x| x.type_name.clone());
        return match name {
            Some(n) if wanted.matches(&n) => Ok(None),
            other => {
                Err(VgpuError::VfChanged { vf, why: format!("it holds {} while this VM wants {wanted}", other.unwrap_or_else(|| format!("type {current}"))) })
            }
        };
    }
    let listed = host.read_attr(&format!("/sys/bus/pci/devices/{vf}/nvidia/creatable_vgpu_types"))?;
    let (types, _) = crate::parse::creatable_vgpu_types(&listed);
    let Some(t) = types.iter().find(|t| wanted.matches(&t.name)) else {
        let reason = view
            .map(|v| explain::explain(std::slice::from_ref(v), wanted))
            .and_then(|e| e.gpus.first().map(|g| g.reason.clone()))
            .unwrap_or_else(|| format!("VF {vf} does not list {wanted} as creatable"));
        return Err(VgpuError::NoRoom { wanted: wanted.to_string(), reasons: format!("  VF {vf}: {reason}") });
    };
    set_vf_type(host, vf, t.id)?;
    Ok(Some(t.id))
}

/// Clears a VF the hook set, if it still holds `type_id` (never touching a
/// type someone else wrote since).
pub fn clear_vf_type(host: &Host, vf: PciAddress, type_id: u32) -> Result<bool, VgpuError> {
    match read_vf_type(host, vf) {
        Ok(t) if t == type_id => {
            host.write_attr(&vf_file(vf), "0")?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(VgpuError::Host(e)) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

fn host_vf_of(host: &Host, pf: PciAddress, vf: PciAddress) -> bool {
    host.link_name(&format!("/sys/bus/pci/devices/{vf}/physfn")).ok().flatten().and_then(|n| n.parse::<PciAddress>().ok()) == Some(pf)
}
