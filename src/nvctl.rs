//! NVIDIA driver controls that are not sysfs files: heterogeneous (mixed-size)
//! vGPU mode today, MIG later. One trait, two backends: nvidia-smi through
//! the replaceable command runner, and the simulated host's state file.

use std::time::Duration;

use crate::host::{Host, HostError, Tool};
use crate::ids::PciAddress;
use crate::sim::SimState;

#[derive(Debug, thiserror::Error)]
pub enum NvctlError {
    #[error("nvidia-smi {args} failed: {stderr}")]
    Smi { args: String, stderr: String },
    #[error("GPU {gpu} is not known to the NVIDIA driver here")]
    UnknownGpu { gpu: PciAddress },
    #[error("cannot update the simulated host state")]
    SimState(#[source] std::io::Error),
    #[error(transparent)]
    Host(#[from] HostError),
}

pub trait NvidiaControl {
    /// `Some(on)` when the driver reports the mode, `None` when it does not
    /// support it (non-vGPU host, GPU without mixed-size support).
    fn heterogeneous(&self, gpu: PciAddress) -> Result<Option<bool>, NvctlError>;
    fn set_heterogeneous(&self, gpu: PciAddress, on: bool) -> Result<(), NvctlError>;
}

/// The simulated host's state, or nvidia-smi on a real one.
pub fn backend(host: &Host) -> Box<dyn NvidiaControl + '_> {
    if host.is_simulated() {
        Box::new(SimControl { host })
    } else {
        Box::new(SmiControl { host })
    }
}

/// nvidia-smi's bus-id form.
pub fn smi_bus_id(gpu: PciAddress) -> String {
    format!("{:08X}:{:02X}:{:02X}.{:X}", gpu.domain, gpu.bus, gpu.device, gpu.function)
}

pub struct SmiControl<'a> {
    host: &'a Host,
}

const SMI_TIMEOUT: Duration = Duration::from_secs(30);

impl NvidiaControl for SmiControl<'_> {
    fn heterogeneous(&self, gpu: PciAddress) -> Result<Option<bool>, NvctlError> {
        // NVML's snapshot, when there is one, answers without another
        // nvidia-smi run per GPU (this is on the hook's path).
        if let Ok(Some(snap)) = crate::nvml::snapshot(self.host) {
            if let Some(g) = snap.gpu(gpu) {
                return Ok(g.heterogeneous);
            }
        }
        let id = smi_bus_id(gpu);
        let out = self.host.runner().run(Tool::NvidiaSmi, &["-q", "-i", &id], SMI_TIMEOUT)?;
        if !out.success() {
            return Err(NvctlError::Smi { args: format!("-q -i {id}"), stderr: out.stderr.trim().to_string() });
        }
        Ok(crate::parse::smi_q_field(&out.stdout, "vGPU Heterogeneous Mode").and_then(|v| match v.as_str() {
            "Enabled" => Some(true),
            "Disabled" => Some(false),
            _ => None,
        }))
    }

    fn set_heterogeneous(&self, gpu: PciAddress, on: bool) -> Result<(), NvctlError> {
        let id = smi_bus_id(gpu);
        let v = if on { "1" } else { "0" };
        let out = self.host.runner().run(Tool::NvidiaSmi, &["vgpu", "-i", &id, "-shm", v], SMI_TIMEOUT)?;
        if !out.success() {
            let msg = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
            return Err(NvctlError::Smi { args: format!("vgpu -i {id} -shm {v}"), stderr: msg.to_string() });
        }
        crate::nvml::forget();
        Ok(())
    }
}

pub struct SimControl<'a> {
    host: &'a Host,
}

impl NvidiaControl for SimControl<'_> {
    fn heterogeneous(&self, gpu: PciAddress) -> Result<Option<bool>, NvctlError> {
        let state = SimState::load(self.host).map_err(NvctlError::SimState)?;
        let g = state.gpus.get(&gpu).ok_or(NvctlError::UnknownGpu { gpu })?;
        Ok(crate::vgpu::known::supports_mixed_size(&g.model).then_some(g.heterogeneous))
    }

    fn set_heterogeneous(&self, gpu: PciAddress, on: bool) -> Result<(), NvctlError> {
        let mut state = SimState::load(self.host).map_err(NvctlError::SimState)?;
        let g = state.gpus.get_mut(&gpu).ok_or(NvctlError::UnknownGpu { gpu })?;
        if !crate::vgpu::known::supports_mixed_size(&g.model) {
            return Err(NvctlError::Smi { args: format!("vgpu -i {} -shm 1", smi_bus_id(gpu)), stderr: "Not Supported".into() });
        }
        g.heterogeneous = on;
        state.save(self.host.root()).map_err(NvctlError::SimState)?;
        crate::sim::refresh_gpu(self.host, gpu).map_err(NvctlError::SimState)
    }
}
