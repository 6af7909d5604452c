//! GPU-class PCI functions, their IOMMU groups and SR-IOV virtual functions.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::mdev::MdevParentInfo;
use super::nvidia::{self, MigMode, VfVgpu};
use super::Warnings;
use crate::host::{Host, HostResult};
use crate::ids::PciAddress;
use crate::parse;

pub const NVIDIA_VENDOR: u32 = 0x10de;
/// PCI base class 0x03: display controllers (VGA 0x0300, 3D 0x0302, other 0x0380).
const DISPLAY_CLASS: u32 = 0x03;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct IommuGroup {
    pub id: u32,
    /// Every device in the group (PCI addresses, or mdev UUIDs for mdev groups).
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Vf {
    pub address: PciAddress,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    /// Legacy NVIDIA mode: the VF is an mdev parent with its own types.
    pub mdev_parent: bool,
    /// Vendor-specific VFIO mode (vGPU 17+): the VF's `nvidia/` files.
    pub vgpu: Option<VfVgpu>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Sriov {
    pub total_vfs: u32,
    pub num_vfs: u32,
    pub vfs: Vec<Vf>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Gpu {
    pub address: PciAddress,
    pub vendor_id: String,
    pub device_id: String,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_device_id: Option<String>,
    pub class: String,
    /// Vendor name for well-known vendors; model name for NVIDIA devices.
    pub vendor: Option<String>,
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    /// The firmware's boot display: never hand this one to a guest.
    pub boot_vga: Option<bool>,
    pub numa_node: Option<u32>,
    pub iommu_group: Option<IommuGroup>,
    pub sriov: Option<Sriov>,
    pub mdev_parent: bool,
    pub mig: Option<MigMode>,
    /// The NVIDIA GPU UUID (`GPU-…`), when nvidia-smi reports it.
    pub uuid: Option<String>,
}

impl Gpu {
    pub fn is_nvidia(&self) -> bool {
        self.vendor_id == format!("0x{NVIDIA_VENDOR:04x}")
    }
}

fn dev(addr: &str, attr: &str) -> String {
    format!("/sys/bus/pci/devices/{addr}/{attr}")
}

/// Caches group listings: on an 8×32-VF host many lookups hit the same groups.
struct Groups<'a> {
    host: &'a Host,
    cache: HashMap<u32, Vec<String>>,
}

impl Groups<'_> {
    fn members(&mut self, id: u32) -> HostResult<Vec<String>> {
        if let Some(m) = self.cache.get(&id) {
            return Ok(m.clone());
        }
        let m = self.host.list_dir(&format!("/sys/kernel/iommu_groups/{id}/devices"))?;
        self.cache.insert(id, m.clone());
        Ok(m)
    }
}

fn group_id(host: &Host, addr: &str, w: &mut Warnings) -> Option<u32> {
    let name = w.ok(host.link_name(&dev(addr, "iommu_group")))??;
    match parse::count(&name) {
        Some(id) => Some(id),
        None => {
            w.push(format!("{addr}: iommu_group link points at {name:?}, not a group number"));
            None
        }
    }
}

fn hex_attr(host: &Host, addr: &str, attr: &str, w: &mut Warnings) -> Option<u32> {
    let raw = w.ok(host.read_attr_opt(&dev(addr, attr)))??;
    let v = parse::hex_id(&raw);
    if v.is_none() {
        w.push(format!("{addr}: {attr} holds {raw:?}, not a hex id"));
    }
    v
}

pub(super) fn scan_gpus(host: &Host, parents: &[MdevParentInfo], w: &mut Warnings) -> HostResult<Vec<Gpu>> {
    let parent_names: std::collections::HashSet<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    let mut groups = Groups { host, cache: HashMap::new() };
    let mut gpus = BTreeMap::new();
    let mut vfs_of: BTreeMap<PciAddress, Vec<Vf>> = BTreeMap::new();

    for name in host.list_dir("/sys/bus/pci/devices")? {
        let Ok(addr) = name.parse::<PciAddress>() else {
            w.push(format!("/sys/bus/pci/devices/{name}: not a PCI address, skipped"));
            continue;
        };
        let Some(class_raw) = w.ok(host.read_attr_opt(&dev(&name, "class"))) else { continue };
        let Some(class_raw) = class_raw else {
            // A dangling /sys/bus/pci/devices link or a half-removed device.
            w.push(format!("/sys/bus/pci/devices/{name}: no class attribute (broken link?), skipped"));
            continue;
        };
        let Some(class) = parse::hex_id(&class_raw) else {
            w.push(format!("{name}: class holds {class_raw:?}, not a hex id"));
            continue;
        };
        if class >> 16 != DISPLAY_CLASS {
            continue;
        }
        let physfn = w.ok(host.link_name(&dev(&name, "physfn"))).flatten();
        if let Some(pf) = physfn {
            match pf.parse::<PciAddress>() {
                Ok(pf) => {
                    let vf = Vf {
                        address: addr,
                        driver: w.ok(host.link_name(&dev(&name, "driver"))).flatten(),
                        iommu_group: group_id(host, &name, w),
                        mdev_parent: parent_names.contains(name.as_str()),
                        vgpu: nvidia::vf_vgpu(host, addr, w),
                    };
                    vfs_of.entry(pf).or_default().push(vf);
                }
                Err(_) => w.push(format!("{name}: physfn link points at {pf:?}, not a PCI address")),
            }
            continue;
        }
        let Some(vendor) = hex_attr(host, &name, "vendor", w) else { continue };
        let Some(device) = hex_attr(host, &name, "device", w) else { continue };
        let is_nvidia = vendor == NVIDIA_VENDOR;
        let iommu_group = match group_id(host, &name, w) {
            Some(id) => w.ok(groups.members(id)).map(|members| IommuGroup { id, members }),
            None => None,
        };
        let numa_node = match w.ok(host.read_attr_opt(&dev(&name, "numa_node"))).flatten() {
            Some(raw) => match parse::numa_node(&raw) {
                Some(n) => n,
                None => {
                    w.push(format!("{name}: numa_node holds {raw:?}"));
                    None
                }
            },
            None => None,
        };
        let sriov = match w.ok(host.read_attr_opt(&dev(&name, "sriov_totalvfs"))).flatten() {
            Some(total) => {
                let num = w.ok(host.read_attr_opt(&dev(&name, "sriov_numvfs"))).flatten();
                match (parse::count(&total), num.as_deref().and_then(parse::count)) {
                    (Some(total_vfs), Some(num_vfs)) => Some(Sriov { total_vfs, num_vfs, vfs: Vec::new() }),
                    _ => {
                        w.push(format!("{name}: sriov_totalvfs/sriov_numvfs hold garbage ({total:?}, {num:?})"));
                        None
                    }
                }
            }
            None => None,
        };
        let gpu = Gpu {
            address: addr,
            vendor_id: format!("0x{vendor:04x}"),
            device_id: format!("0x{device:04x}"),
            subsystem_vendor_id: hex_attr(host, &name, "subsystem_vendor", w).map(|v| format!("0x{v:04x}")),
            subsystem_device_id: hex_attr(host, &name, "subsystem_device", w).map(|v| format!("0x{v:04x}")),
            class: format!("0x{class:06x}"),
            vendor: super::vendor_name(vendor).map(str::to_string),
            name: if is_nvidia { super::nvidia_model_name(device).map(str::to_string) } else { None },
            driver: w.ok(host.link_name(&dev(&name, "driver"))).flatten(),
            driver_override: w.ok(host.read_attr_opt(&dev(&name, "driver_override"))).flatten().and_then(|s| parse::driver_override(&s)),
            boot_vga: w.ok(host.read_attr_opt(&dev(&name, "boot_vga"))).flatten().and_then(|s| parse::flag(&s)),
            numa_node,
            iommu_group,
            sriov,
            mdev_parent: parent_names.contains(name.as_str()),
            // Filled from the NVIDIA driver once every GPU is read (see `Inventory::scan_with`).
            mig: None,
            uuid: None,
        };
        gpus.insert(addr, gpu);
    }

    for (pf, mut vfs) in vfs_of {
        nvidia::name_current_types(&mut vfs);
        match gpus.get_mut(&pf) {
            Some(Gpu { sriov: Some(s), .. }) => s.vfs = vfs,
            Some(g) => {
                // VFs exist but the PF shows no SR-IOV capability files: keep the VFs.
                w.push(format!("{pf}: has VFs but no sriov_totalvfs"));
                g.sriov = Some(Sriov { total_vfs: vfs.len() as u32, num_vfs: vfs.len() as u32, vfs });
            }
            None => w.push(format!("{} VF(s) point at PF {pf}, which is not a GPU here", vfs.len())),
        }
    }
    Ok(gpus.into_values().collect())
}
