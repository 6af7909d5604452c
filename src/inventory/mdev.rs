//! mdev parents (/sys/class/mdev_bus), their types and the mdevs that exist.

use serde::Serialize;

use super::usage::{VfioUser, VfioUsers};
use super::Warnings;
use crate::host::{Host, HostResult};
use crate::ids::{MdevParent, MdevTypeId, MdevUuid};
use crate::parse::{self, VgpuDescription};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MdevTypeInfo {
    /// Directory name under `mdev_supported_types` (`nvidia-699`, `mbochs-large`).
    pub id: MdevTypeId,
    /// The type's `name` attribute (`GRID A100D-1-10C`), when the driver has one.
    pub name: Option<String>,
    pub description: Option<String>,
    /// NVIDIA's `key=value` description, parsed; absent for other drivers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgpu: Option<VgpuDescription>,
    pub available_instances: Option<u32>,
    pub device_api: Option<String>,
    /// UUIDs of the mdevs of this type on this parent.
    pub devices: Vec<MdevUuid>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MdevParentInfo {
    pub name: MdevParent,
    pub types: Vec<MdevTypeInfo>,
}

impl MdevParentInfo {
    /// A type by directory name or by its `name` attribute, the way admins
    /// know NVIDIA types (the directory numbers differ per GPU and driver).
    /// The `GRID `/`NVIDIA ` prefix may be left out.
    pub fn find_type(&self, wanted: &str) -> Option<&MdevTypeInfo> {
        self.types
            .iter()
            .find(|t| t.id.as_str() == wanted)
            .or_else(|| self.types.iter().find(|t| t.name.as_deref().is_some_and(|n| type_name_matches(n, wanted))))
    }
}

pub fn type_name_matches(name: &str, wanted: &str) -> bool {
    let strip = |s: &str| -> String {
        let s = s.trim();
        let s = s.strip_prefix("GRID ").or_else(|| s.strip_prefix("NVIDIA ")).unwrap_or(s);
        s.to_ascii_lowercase()
    };
    strip(name) == strip(wanted)
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MdevDevice {
    pub uuid: MdevUuid,
    pub parent: Option<MdevParent>,
    #[serde(rename = "type")]
    pub type_id: Option<MdevTypeId>,
    pub iommu_group: Option<u32>,
    /// `true`/`false` when the host can tell (root, /proc readable), else absent.
    pub in_use: Option<bool>,
    pub used_by: Option<VfioUser>,
}

pub(super) fn scan_parents(host: &Host, w: &mut Warnings) -> HostResult<Vec<MdevParentInfo>> {
    let mut parents = Vec::new();
    for name in host.list_dir("/sys/class/mdev_bus")? {
        let parent: MdevParent = match name.parse() {
            Ok(p) => p,
            Err(e) => {
                w.push(format!("/sys/class/mdev_bus/{name}: {e}; skipped"));
                continue;
            }
        };
        if let Some(info) = scan_parent(host, &parent, w) {
            parents.push(info);
        }
    }
    Ok(parents)
}

/// One parent's types and devices; `None` when it is not an mdev parent here.
pub fn scan_parent(host: &Host, parent: &MdevParent, w: &mut Warnings) -> Option<MdevParentInfo> {
    let base = format!("/sys/class/mdev_bus/{parent}/mdev_supported_types");
    let names = match host.list_dir(&base) {
        Ok(n) if n.is_empty() && !host.exists(&format!("/sys/class/mdev_bus/{parent}")) => return None,
        Ok(n) => n,
        Err(e) => {
            w.push(format!("{base}: {e}"));
            return None;
        }
    };
    let mut types = Vec::new();
    for tname in names {
        let id: MdevTypeId = match tname.parse() {
            Ok(t) => t,
            Err(e) => {
                w.push(format!("{base}/{tname}: {e}; skipped"));
                continue;
            }
        };
        let tdir = format!("{base}/{id}");
        let attr = |w: &mut Warnings, a: &str| w.ok(host.read_attr_opt(&format!("{tdir}/{a}"))).flatten();
        let description = attr(w, "description");
        let available_raw = attr(w, "available_instances");
        let available_instances = available_raw.as_deref().and_then(parse::count);
        if available_raw.is_some() && available_instances.is_none() {
            w.push(format!("{tdir}/available_instances holds {available_raw:?}, not a count"));
        }
        let vgpu = description.as_deref().map(parse::vgpu_description).filter(|d| !d.is_empty());
        let mut devices = Vec::new();
        for d in w.ok(host.list_dir(&format!("{tdir}/devices"))).unwrap_or_default() {
            match d.parse() {
                Ok(u) => devices.push(u),
                Err(e) => w.push(format!("{tdir}/devices/{d}: {e}")),
            }
        }
        types.push(MdevTypeInfo { name: attr(w, "name"), description, vgpu, available_instances, device_api: attr(w, "device_api"), devices, id });
    }
    Some(MdevParentInfo { name: parent.clone(), types })
}

pub(super) fn scan_devices(host: &Host, users: &VfioUsers, w: &mut Warnings) -> HostResult<Vec<MdevDevice>> {
    let mut out = Vec::new();
    for name in host.list_dir("/sys/bus/mdev/devices")? {
        let uuid: MdevUuid = match name.parse() {
            Ok(u) => u,
            Err(e) => {
                w.push(format!("/sys/bus/mdev/devices/{name}: {e}; skipped"));
                continue;
            }
        };
        if let Some(d) = read_device(host, uuid, users, w) {
            out.push(d);
        }
    }
    Ok(out)
}

/// One mdev as sysfs shows it now; `None` when it does not exist.
pub fn read_device(host: &Host, uuid: MdevUuid, users: &VfioUsers, w: &mut Warnings) -> Option<MdevDevice> {
    let base = format!("/sys/bus/mdev/devices/{uuid}");
    // The device directory lives inside its parent's: .../<parent>/<uuid>.
    let target = w.ok(host.read_link(&base)).flatten()?;
    let parent = {
        let comps: Vec<_> = target.components().collect();
        comps.len().checked_sub(2).and_then(|i| comps.get(i)).and_then(|p| p.as_os_str().to_str()).and_then(|p| p.parse::<MdevParent>().ok())
    };
    let type_id = w.ok(host.link_name(&format!("{base}/mdev_type"))).flatten().and_then(|t| t.parse().ok());
    let iommu_group = w.ok(host.link_name(&format!("{base}/iommu_group"))).flatten().and_then(|g| parse::count(&g));
    Some(MdevDevice {
        uuid,
        parent,
        type_id,
        iommu_group,
        in_use: iommu_group.and_then(|g| users.in_use(g)),
        used_by: iommu_group.and_then(|g| users.user_of(g)),
    })
}
