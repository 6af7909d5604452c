//! The NVIDIA driver of a real host: NVML through the vgpuctl-nvml helper
//! when it answers, else nvidia-smi through the replaceable command runner,
//! else "no NVIDIA driver" (`VGPUCTL_NVIDIA_BACKEND=auto|nvml|nvidia-smi`
//! overrides). This is the only place that picks between them; each answer
//! below is "NVML's snapshot, or the one nvidia-smi query that says it".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{smi_bus_id, ControlError, GpuFacts, MigMode, NvidiaDriver, Utilization, Wants};
use crate::host::{Host, Tool};
use crate::ids::PciAddress;
use crate::mig::backend::{GiUser, MigBackend, MigError};
use crate::mig::nvml_backend::NvmlMig;
use crate::mig::smi_backend::SmiMig;
use crate::nvml::{self, Choice, NvmlSnapshot, NvmlSource};
use crate::parse;

const SMI_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct RealDriver {
    nvml: NvmlSource,
}

impl RealDriver {
    /// NVML's snapshot holding `need`, or `None` where NVML does not answer
    /// (a failure is logged: every caller then tries nvidia-smi).
    fn nvml(&self, host: &Host, need: Wants) -> Option<Arc<NvmlSnapshot>> {
        if !loaded(host) {
            return None;
        }
        match self.nvml.snapshot(host, need) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn smi(&self, host: &Host) -> bool {
        host.runner().is_available(Tool::NvidiaSmi)
    }
}

impl NvidiaDriver for RealDriver {
    fn expect(&self, wants: Wants) {
        self.nvml.expect(wants);
    }

    fn prefetch(&self, host: &Host) {
        // Without a loaded driver nothing will be asked.
        if loaded(host) {
            self.nvml.prefetch(host);
        }
    }

    fn gpus(&self, host: &Host, warnings: &mut Vec<String>) -> Option<HashMap<PciAddress, GpuFacts>> {
        // No loaded driver: nothing to ask, and no helper run on a host without NVIDIA.
        if !loaded(host) {
            return None;
        }
        // NVML first: one helper run answers for every GPU.
        match self.nvml.snapshot(host, Wants::IDENTITY) {
            Ok(Some(snap)) => {
                return Some(snap.gpus.iter().filter_map(|g| Some((g.address()?, GpuFacts { mig: g.mig_mode(), uuid: g.uuid.clone() }))).collect())
            }
            Ok(None) => {}
            Err(e) => warnings.push(e.to_string()),
        }
        if !self.smi(host) {
            return None;
        }
        let out = match host.runner().run(
            Tool::NvidiaSmi,
            &["--query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending,uuid", "--format=csv,noheader"],
            Duration::from_secs(20),
        ) {
            Ok(o) => o,
            Err(e) => {
                warnings.push(e.to_string());
                return None;
            }
        };
        if !out.success() {
            warnings.push(format!("nvidia-smi --query-gpu failed: {}", out.stderr.trim()));
            return None;
        }
        Some(
            parse::mig_mode_csv(&out.stdout)
                .into_iter()
                .map(|r| (r.address, GpuFacts { mig: MigMode { current: r.current, pending: r.pending }, uuid: r.uuid }))
                .collect(),
        )
    }

    fn heterogeneous(&self, host: &Host, gpu: PciAddress) -> Result<Option<bool>, ControlError> {
        // NVML's snapshot, when there is one, answers without another
        // nvidia-smi run per GPU (this is on the hook's path).
        if let Some(snap) = self.nvml(host, Wants::VGPU) {
            if let Some(g) = snap.gpu(gpu) {
                return Ok(g.heterogeneous);
            }
        }
        let id = smi_bus_id(gpu);
        let out = host.runner().run(Tool::NvidiaSmi, &["-q", "-i", &id], SMI_TIMEOUT)?;
        if !out.success() {
            return Err(ControlError::Smi { args: format!("-q -i {id}"), stderr: out.stderr.trim().to_string() });
        }
        Ok(parse::smi_q_field(&out.stdout, "vGPU Heterogeneous Mode").and_then(|v| match v.as_str() {
            "Enabled" => Some(true),
            "Disabled" => Some(false),
            _ => None,
        }))
    }

    fn set_heterogeneous(&self, host: &Host, gpu: PciAddress, on: bool) -> Result<(), ControlError> {
        let id = smi_bus_id(gpu);
        let v = if on { "1" } else { "0" };
        let out = host.runner().run(Tool::NvidiaSmi, &["vgpu", "-i", &id, "-shm", v], SMI_TIMEOUT)?;
        self.forget();
        if !out.success() {
            let msg = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
            return Err(ControlError::Smi { args: format!("vgpu -i {id} -shm {v}"), stderr: msg.to_string() });
        }
        Ok(())
    }

    /// NVML names the type of each active vGPU; nvidia-smi's answer would
    /// be another run per VF, and a real driver's ids are never guessed.
    fn type_name(&self, host: &Host, gpu: PciAddress, id: u32) -> Option<String> {
        let s = self.nvml(host, Wants::VGPU)?;
        s.gpu(gpu)?.vgpus.iter().find(|v| v.type_id == Some(id))?.type_name.clone()
    }

    fn utilization(&self, host: &Host) -> HashMap<PciAddress, Utilization> {
        if let Some(s) = self.nvml(host, Wants::UTILIZATION) {
            return s
                .gpus
                .iter()
                .filter_map(|g| {
                    Some((
                        g.address()?,
                        Utilization {
                            gpu_percent: g.utilization.map(|u| u.gpu_percent),
                            memory_percent: g.utilization.map(|u| u.memory_percent),
                            memory_used_mib: g.memory.map(|m| m.used_mib),
                            memory_total_mib: g.memory.map(|m| m.total_mib),
                        },
                    ))
                })
                .collect();
        }
        if !self.smi(host) {
            return HashMap::new();
        }
        let Ok(out) = host.runner().run(
            Tool::NvidiaSmi,
            &["--query-gpu=pci.bus_id,utilization.gpu,utilization.memory,memory.used,memory.total", "--format=csv,noheader,nounits"],
            Duration::from_secs(20),
        ) else {
            return HashMap::new();
        };
        parse_utilization(&out.stdout)
    }

    fn samples(&self, host: &Host) -> Option<Arc<NvmlSnapshot>> {
        self.nvml(host, Wants::SAMPLED | Wants::VGPU | Wants::MIG_INSTANCES)
    }

    fn processes(&self, host: &Host, gpu: PciAddress) -> Vec<GiUser> {
        if let Some(s) = self.nvml(host, Wants::PROCESSES) {
            if let Some(g) = s.gpu(gpu) {
                return g.processes.iter().map(|p| GiUser { pid: p.pid, name: p.name.clone() }).collect();
            }
        }
        let id = smi_bus_id(gpu);
        let Ok(out) = host.runner().run(Tool::NvidiaSmi, &["--query-compute-apps=pid,process_name", "--format=csv,noheader", "-i", &id], SMI_TIMEOUT) else {
            return Vec::new();
        };
        if !out.success() {
            return Vec::new();
        }
        crate::mig::smi::compute_apps(&out.stdout).into_iter().map(|(pid, name)| GiUser { pid, name: Some(name) }).collect()
    }

    fn mig<'a>(&'a self, host: &'a Host) -> Result<Box<dyn MigBackend + 'a>, MigError> {
        if loaded(host) && self.nvml.snapshot(host, Wants::IDENTITY)?.is_some() {
            return Ok(Box::new(NvmlMig::new(host, &self.nvml)));
        }
        if nvml::choice()? == Choice::Nvml {
            return Err(MigError::NoDriver);
        }
        if self.smi(host) {
            return Ok(Box::new(SmiMig::new(host)));
        }
        Err(MigError::NoDriver)
    }

    fn forget(&self) {
        self.nvml.forget();
    }
}

/// Whether the NVIDIA kernel driver is loaded: without it NVML has nothing
/// to say, and the helper is not started.
fn loaded(host: &Host) -> bool {
    host.exists("/proc/driver/nvidia/version")
}

/// nvidia-smi's `--query-gpu=pci.bus_id,utilization.gpu,utilization.memory,memory.used,memory.total` rows.
pub fn parse_utilization(text: &str) -> HashMap<PciAddress, Utilization> {
    text.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').map(str::trim).collect();
            let [bus, g, m, used, total] = c.as_slice() else { return None };
            Some((
                bus.parse().ok()?,
                Utilization {
                    gpu_percent: g.parse().ok(),
                    memory_percent: m.parse().ok(),
                    memory_used_mib: used.parse().ok(),
                    memory_total_mib: total.parse().ok(),
                },
            ))
        })
        .collect()
}
