//! `vgpuctl status`: per GPU its mode, every vGPU / MIG instance / mdev with
//! the VM using it, and utilization where the driver reports it (NVML
//! through vgpuctl-nvml: per GPU, per vGPU and per MIG GPU instance; else
//! nvidia-smi per GPU; absent, not an error, without NVIDIA). Read-only.

use std::collections::HashMap;

use serde::Serialize;

use crate::host::{Host, HostResult};
use crate::ids::PciAddress;
use crate::inventory::{Inventory, ScanOptions, VfioUsers};
use crate::nvidia::Wants;
use crate::parse::MigModeState;
use crate::vgpu::view::{self, HostFacts, Interface};

pub use crate::nvidia::real::parse_utilization;
pub use crate::nvidia::Utilization;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Device {
    /// `vgpu`, `mdev`, `mig-instance`.
    pub kind: &'static str,
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub framebuffer_mib: Option<u64>,
    /// The VM using it: the QEMU holding its VFIO group, else the domain whose start made it.
    pub vm: Option<String>,
    pub in_use: Option<bool>,
    /// What NVML reports for this vGPU or GPU instance; absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization: Option<DeviceUtilization>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeviceUtilization {
    /// SM (compute) busy percent: NVML vGPU samples, or GPM for a GPU instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total_mib: Option<u64>,
}

fn vgpu_utilization(g: &crate::nvml::NvmlGpu, mdev: Option<&str>, gi: Option<u32>) -> Option<DeviceUtilization> {
    let v = g.vgpus.iter().find(|v| mdev.is_some_and(|m| v.mdev_uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(m))) || gi.is_some() && v.gi == gi)?;
    Some(DeviceUtilization {
        sm_percent: v.sm_percent.map(f64::from),
        memory_percent: v.memory_percent,
        encoder_percent: v.encoder_percent,
        decoder_percent: v.decoder_percent,
        memory_used_mib: v.fb_used_mib,
        memory_total_mib: None,
    })
}

fn gi_utilization(g: &crate::nvml::NvmlGpu, gi: u32) -> Option<DeviceUtilization> {
    let i = g.gpu_instances.iter().find(|i| i.gi == gi)?;
    (i.sm_percent.is_some() || i.memory.is_some()).then(|| DeviceUtilization {
        sm_percent: i.sm_percent,
        memory_used_mib: i.memory.map(|m| m.used_mib),
        memory_total_mib: i.memory.map(|m| m.total_mib),
        ..Default::default()
    })
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GpuStatus {
    pub gpu: PciAddress,
    pub name: Option<String>,
    /// `passthrough`, `time-sliced`, `mig`, `unmanaged`.
    pub mode: &'static str,
    pub driver: Option<String>,
    pub devices: Vec<Device>,
    pub utilization: Option<Utilization>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Status {
    pub schema_version: u32,
    pub gpus: Vec<GpuStatus>,
    /// mdevs of parents that are not GPUs (mbochs, …).
    pub other_mdevs: Vec<Device>,
}

/// Which domain's start made each device, from the hook journals.
fn journal_owners(host: &Host) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (_, j) in crate::hook::journal::all(host).unwrap_or_default() {
        let Ok(j) = j else { continue };
        for e in &j.entries {
            let key = match e {
                crate::hook::Entry::Mdev { uuid, .. } => uuid.to_string(),
                crate::hook::Entry::VfType { vf, .. } => vf.to_string(),
                crate::hook::Entry::MigGi { gpu, gi, .. } => format!("{gpu}/gi{gi}"),
            };
            m.insert(key, j.domain.clone());
        }
    }
    m
}

/// MIG room on one GPU in MIG mode: its own profile table and the slices
/// its GPU instances hold.
#[derive(Debug, Clone)]
pub struct MigRoom {
    pub gpu: PciAddress,
    pub table: Vec<crate::mig::profiles::Profile>,
    pub layout: crate::mig::layout::Layout,
}

/// Everything one status read saw: the report, the per-GPU vGPU views it was
/// built from (the same `types` and `explain` use), and, when asked for, MIG
/// room per GPU.
/// `vgpuctl metrics` renders this, so it never answers a question
/// differently from `status`, `types` or `explain`.
#[derive(Debug, Clone)]
pub struct Collected {
    pub status: Status,
    pub views: Vec<view::GpuView>,
    /// Empty unless `collect` was asked for MIG room.
    pub mig: Vec<MigRoom>,
    pub nvidia_driver: Option<String>,
    pub uuids: HashMap<PciAddress, String>,
}

pub fn status(host: &Host) -> HostResult<Status> {
    Ok(collect(host, false)?.status)
}

/// With `mig_room`, each MIG GPU's profile table is read as well (what
/// `metrics` reports as room; through nvidia-smi that is two more runs per
/// GPU, which `status` does not need).
pub fn collect(host: &Host, mig_room: bool) -> HostResult<Collected> {
    collect_with(host, mig_room, true)
}

/// What is on one GPU now (vGPUs, mdevs, GPU instances, with their VMs) and
/// its mode, without sampling utilization: what a command that is about to
/// change the GPU's mode must not pull from under anyone.
pub fn gpu(host: &Host, gpu: PciAddress) -> HostResult<Option<GpuStatus>> {
    Ok(gpus(host)?.into_iter().find(|g| g.gpu == gpu))
}

/// [`gpu`] for every GPU, from one read.
pub fn gpus(host: &Host) -> HostResult<Vec<GpuStatus>> {
    Ok(collect_with(host, false, false)?.status.gpus)
}

/// What a status read asks the NVIDIA driver.
pub fn wants(mig_room: bool, sample: bool) -> Wants {
    let mut w = Wants::UTILIZATION | Wants::VGPU | Wants::MIG_INSTANCES;
    if mig_room {
        w = w | Wants::MIG_PROFILES;
    }
    if sample {
        w = w | Wants::SAMPLED;
    }
    w
}

fn collect_with(host: &Host, mig_room: bool, sample: bool) -> HostResult<Collected> {
    let driver = host.nvidia();
    // Declared first, so one NVML session answers the inventory, the views,
    // MIG and utilization below.
    driver.expect(wants(mig_room, sample));
    let users = VfioUsers::scan(host);
    let owners = journal_owners(host);
    // The driver's answers are read after sysfs and /proc, while they arrive.
    let inv = Inventory::scan_with(host, &ScanOptions { usage: true, mig: true })?;
    let views = view::build(&inv, &HostFacts { host });
    let nvml = if sample { driver.samples(host) } else { None };
    let util = driver.utilization(host);
    let group_of = |addr: &str| host.link_name(&format!("/sys/bus/pci/devices/{addr}/iommu_group")).ok().flatten().and_then(|g| g.parse::<u32>().ok());
    let mig = crate::mig::backend::backend(host).ok();
    let mut gpus = Vec::new();
    let mut rooms = Vec::new();
    for g in inv.gpus.iter().filter(|g| g.is_nvidia() || g.mdev_parent) {
        let v = views.iter().find(|v| v.gpu == g.address);
        let nv = nvml.as_ref().and_then(|s| s.gpu(g.address));
        let mig_on = g.mig.is_some_and(|m| m.current == MigModeState::Enabled);
        let mode = if g.driver.as_deref() == Some("vfio-pci") {
            "passthrough"
        } else if mig_on {
            "mig"
        } else if v.is_some_and(|v| v.interface != Interface::None) {
            "time-sliced"
        } else {
            "unmanaged"
        };
        let mut devices = Vec::new();
        for x in v.map(|v| v.vgpus.as_slice()).unwrap_or_default() {
            let id = x.uuid.map(|u| u.to_string()).or_else(|| x.vf.map(|f| f.to_string())).unwrap_or_default();
            let group = match (&x.uuid, &x.vf) {
                (Some(u), _) => inv.mdevs.iter().find(|m| m.uuid == *u).and_then(|m| m.iommu_group),
                (None, Some(vf)) => group_of(&vf.to_string()),
                _ => None,
            };
            let holder = group.and_then(|gr| users.user_of(gr));
            // The VF's GPU instance matters only to match NVML's vGPU samples.
            let vf_gi = || {
                x.vf.and_then(|vf| host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/gpu_instance_id")).ok().flatten())
                    .and_then(|t| t.trim().parse().ok())
            };
            devices.push(Device {
                utilization: nv.and_then(|n| vgpu_utilization(n, x.uuid.map(|u| u.to_string()).as_deref(), vf_gi())),
                kind: if x.uuid.is_some() { "mdev" } else { "vgpu" },
                vm: holder.as_ref().and_then(|u| u.vm.clone()).or_else(|| owners.get(&id).cloned()),
                in_use: group.and_then(|gr| users.in_use(gr)),
                type_name: x.type_name.clone(),
                framebuffer_mib: x.framebuffer_mib,
                id,
            });
        }
        if mig_on {
            if let Some(b) = &mig {
                let instances = b.instances(g.address).unwrap_or_default();
                if mig_room {
                    if let Ok(table) = b.profiles(g.address) {
                        rooms.push(MigRoom { gpu: g.address, table, layout: crate::mig::backend::layout(&instances) });
                    }
                }
                for i in instances {
                    let key = format!("{}/gi{}", g.address, i.gi);
                    devices.push(Device {
                        kind: "mig-instance",
                        id: format!("GI {}", i.gi),
                        type_name: Some(i.profile.clone()),
                        framebuffer_mib: None,
                        vm: owners.get(&key).cloned(),
                        in_use: None,
                        utilization: nv.and_then(|n| gi_utilization(n, i.gi)),
                    });
                }
            }
        }
        if mode == "passthrough" {
            let gr = g.iommu_group.as_ref().map(|x| x.id);
            devices.push(Device {
                kind: "passthrough",
                id: g.address.to_string(),
                type_name: None,
                framebuffer_mib: None,
                vm: gr.and_then(|x| users.user_of(x)).and_then(|u| u.vm),
                in_use: gr.and_then(|x| users.in_use(x)),
                utilization: None,
            });
        }
        gpus.push(GpuStatus { gpu: g.address, name: g.name.clone(), mode, driver: g.driver.clone(), devices, utilization: util.get(&g.address).cloned() });
    }
    let other_mdevs = inv
        .mdevs
        .iter()
        .filter(|m| m.parent.as_ref().is_some_and(|p| p.pci_address().is_none()))
        .map(|m| Device {
            kind: "mdev",
            id: m.uuid.to_string(),
            type_name: m.type_id.as_ref().map(|t| t.to_string()),
            framebuffer_mib: None,
            vm: m.used_by.as_ref().and_then(|u| u.vm.clone()).or_else(|| owners.get(&m.uuid.to_string()).cloned()),
            in_use: m.in_use,
            utilization: None,
        })
        .collect();
    Ok(Collected {
        status: Status { schema_version: crate::inventory::SCHEMA_VERSION, gpus, other_mdevs },
        views,
        mig: rooms,
        nvidia_driver: inv.nvidia_driver.as_ref().map(|d| d.version.clone()),
        uuids: inv.gpus.iter().filter_map(|g| Some((g.address, g.uuid.clone()?))).collect(),
    })
}

pub fn render(s: &Status) -> String {
    render_to(s, crate::table::width())
}

fn device_utilization(d: &Device) -> String {
    let Some(u) = d.utilization.as_ref() else { return "-".into() };
    let mut parts = Vec::new();
    if let Some(x) = u.sm_percent {
        parts.push(format!("sm {x:.0}%"));
    }
    if let Some(x) = u.memory_percent {
        parts.push(format!("mem {x}%"));
    }
    if let Some(x) = u.memory_used_mib {
        parts.push(format!("fb {x}{} MiB", u.memory_total_mib.map(|t| format!("/{t}")).unwrap_or_default()));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// A line per GPU (mode, utilization), under it a table of its devices.
pub fn render_to(s: &Status, width: Option<usize>) -> String {
    let mut out = String::new();
    let devices = |list: &[Device]| -> String {
        let mut t = crate::table::Table::new(&["KIND", "ID", "TYPE", "VM", "IN USE", "UTILIZATION"]).indented(2);
        for d in list {
            t.row(vec![
                d.kind.to_string(),
                d.id.clone(),
                d.type_name.clone().unwrap_or_else(|| "-".into()),
                d.vm.clone().unwrap_or_else(|| "-".into()),
                crate::table::in_use(d.in_use).to_string(),
                device_utilization(d),
            ]);
        }
        t.render_to(width)
    };
    for g in &s.gpus {
        let util = g
            .utilization
            .as_ref()
            .map(|u| {
                format!(
                    ", gpu {}%, memory {}/{} MiB",
                    u.gpu_percent.map(|x| x.to_string()).unwrap_or("-".into()),
                    u.memory_used_mib.unwrap_or(0),
                    u.memory_total_mib.unwrap_or(0)
                )
            })
            .unwrap_or_default();
        let n = g.devices.len();
        let what = if n == 0 { "no devices".to_string() } else { format!("{n} device(s)") };
        out.push_str(&crate::table::wrap(&format!("{} {} ({}, {what}{util})", g.gpu, g.name.as_deref().unwrap_or(""), g.mode), width, 0, 2));
        if !g.devices.is_empty() {
            out.push_str(&devices(&g.devices));
        }
    }
    if !s.other_mdevs.is_empty() {
        out.push_str("other mdevs\n");
        out.push_str(&devices(&s.other_mdevs));
    }
    if out.is_empty() {
        out.push_str("No GPUs or mdevs.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_utilization_csv_from_real_format() {
        let u = parse_utilization("00000000:00:06.0, 0, 0, 0, 81559\nbad\n");
        let x = &u[&"0000:00:06.0".parse().unwrap()];
        assert_eq!((x.gpu_percent, x.memory_total_mib), (Some(0), Some(81559)));
        assert_eq!(u.len(), 1);
    }
}
