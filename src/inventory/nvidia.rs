//! NVIDIA specifics of the inventory: driver version, the vendor-specific
//! VFIO files of a VF, and MIG mode per GPU.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::Warnings;
use crate::host::{Host, Tool};
use crate::ids::PciAddress;
use crate::parse::{self, CreatableType, MigModeState, NvidiaDriverVersion};

pub(super) fn driver_version(host: &Host, w: &mut Warnings) -> Option<NvidiaDriverVersion> {
    let text = w.ok(host.read_attr_opt("/proc/driver/nvidia/version")).flatten()?;
    let v = parse::nvidia_driver_version(&text);
    if v.is_none() {
        w.push("/proc/driver/nvidia/version: no 'NVRM version:' line with a version number");
    }
    v
}

/// What a VF carries in vendor-specific VFIO mode (vGPU 17+).
#[derive(Debug, Clone, Serialize)]
pub struct VfVgpu {
    /// The vGPU type id written to `current_vgpu_type`; `None` when it reads 0.
    pub current_type: Option<u32>,
    /// The name of the current type, when some VF of the same GPU still lists
    /// that id as creatable (a VF stops listing types once it holds one, and
    /// the driver offers no other id-to-name file, so this may be absent).
    pub current_type_name: Option<String>,
    /// What `creatable_vgpu_types` offers now; it shrinks as the GPU fills.
    pub creatable: Vec<CreatableType>,
}

pub(super) fn vf_vgpu(host: &Host, vf: PciAddress, w: &mut Warnings) -> Option<VfVgpu> {
    let base = format!("/sys/bus/pci/devices/{vf}/nvidia");
    // No nvidia/ directory (legacy mode, or not an NVIDIA VF): the read fails
    // with ENOENT, which is cheaper than asking first.
    let creatable_text = w.ok(host.read_attr_opt(&format!("{base}/creatable_vgpu_types"))).flatten()?;
    let (creatable, bad) = parse::creatable_vgpu_types(&creatable_text);
    for line in bad {
        w.push(format!("{base}/creatable_vgpu_types: cannot parse line {line:?}"));
    }
    let current = w.ok(host.read_attr_opt(&format!("{base}/current_vgpu_type"))).flatten();
    let current_type = match current.as_deref().map(str::trim) {
        None | Some("0") => None,
        Some(raw) => match parse::count(raw) {
            Some(id) => Some(id),
            None => {
                w.push(format!("{base}/current_vgpu_type holds {raw:?}, not a type id"));
                None
            }
        },
    };
    // Filled in once all VFs of the PF are known (see `name_current_types`).
    Some(VfVgpu { current_type, current_type_name: None, creatable })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigMode {
    pub current: MigModeState,
    pub pending: MigModeState,
}

/// MIG mode and GPU UUID per GPU from the simulated state or from
/// nvidia-smi. `None` when there is no NVIDIA driver or tool: that is a
/// normal host, not an error.
pub(super) fn mig_modes(host: &Host, driver_loaded: bool, w: &mut Warnings) -> Option<HashMap<PciAddress, (MigMode, Option<String>)>> {
    if host.is_simulated() {
        return crate::sim::mig_modes(host).map(|m| m.into_iter().map(|(a, mode)| (a, (mode, Some(crate::sim::gpu_uuid(a))))).collect());
    }
    if !driver_loaded {
        return None;
    }
    // NVML first: one helper run answers for every GPU.
    match crate::nvml::snapshot(host) {
        Ok(Some(snap)) => return Some(snap.gpus.iter().filter_map(|g| Some((g.address()?, (g.mig_mode(), g.uuid.clone())))).collect()),
        Ok(None) => {}
        Err(e) => w.push(e.to_string()),
    }
    if !host.runner().is_available(Tool::NvidiaSmi) {
        return None;
    }
    let out = w.ok(host.runner().run(
        Tool::NvidiaSmi,
        &["--query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending,uuid", "--format=csv,noheader"],
        Duration::from_secs(20),
    ))?;
    if !out.success() {
        w.push(format!("nvidia-smi --query-gpu failed: {}", out.stderr.trim()));
        return None;
    }
    Some(parse::mig_mode_csv(&out.stdout).into_iter().map(|r| (r.address, (MigMode { current: r.current, pending: r.pending }, r.uuid))).collect())
}

/// Names each VF's current type from the creatable lists of its sibling VFs.
pub(super) fn name_current_types(vfs: &mut [super::Vf]) {
    let names: HashMap<u32, String> = vfs.iter().filter_map(|vf| vf.vgpu.as_ref()).flat_map(|v| v.creatable.iter().map(|t| (t.id, t.name.clone()))).collect();
    for v in vfs.iter_mut().filter_map(|vf| vf.vgpu.as_mut()) {
        if let Some(id) = v.current_type {
            v.current_type_name = names.get(&id).cloned();
        }
    }
}
