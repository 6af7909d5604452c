//! NVIDIA specifics of the inventory: driver version, the vendor-specific
//! VFIO files of a VF, and MIG mode per GPU (asked of the host's driver).

use std::collections::HashMap;

use serde::Serialize;

use super::Warnings;
use crate::host::Host;
use crate::ids::PciAddress;
pub use crate::nvidia::MigMode;
use crate::parse::{self, CreatableType, NvidiaDriverVersion};

pub(super) fn driver_version(host: &Host, w: &mut Warnings) -> Option<NvidiaDriverVersion> {
    let text = w.ok(host.read_attr_opt("/proc/driver/nvidia/version")).flatten()?;
    let v = parse::nvidia_driver_version(&text);
    if v.is_none() {
        w.push("/proc/driver/nvidia/version: no 'NVRM version:' line with a version number");
    }
    v
}

/// What a VF carries in vendor-specific VFIO mode (vGPU 17+).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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

/// MIG mode and GPU UUID per GPU, as the host's NVIDIA driver reports them
/// (NVML, nvidia-smi or the simulated state). `None` when there is no
/// NVIDIA driver or tool: that is a normal host, not an error.
pub(super) fn mig_modes(host: &Host, w: &mut Warnings) -> Option<HashMap<PciAddress, (MigMode, Option<String>)>> {
    let mut problems = Vec::new();
    let facts = host.nvidia().gpus(host, &mut problems);
    for p in problems {
        w.push(p);
    }
    Some(facts?.into_iter().map(|(a, f)| (a, (f.mig, f.uuid))).collect())
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
