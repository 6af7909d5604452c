//! The NVIDIA driver of a simulated host: what NVML or nvidia-smi would
//! report, answered from the simulated state file. `sim::attach` puts it on
//! the host; nothing above the driver seam knows it is simulated.

use std::collections::HashMap;

use super::{gpu_uuid, refresh_gpu, SimState};
use crate::host::Host;
use crate::ids::PciAddress;
use crate::mig::backend::{GiUser, MigBackend, MigError};
use crate::nvidia::known;
use crate::nvidia::{smi_bus_id, ControlError, GpuFacts, MigMode, NvidiaDriver, Utilization};

#[derive(Debug, Default)]
pub struct SimDriver;

impl NvidiaDriver for SimDriver {
    fn gpus(&self, host: &Host, warnings: &mut Vec<String>) -> Option<HashMap<PciAddress, GpuFacts>> {
        let state = match SimState::load(host) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("cannot read the simulated host state: {e}"));
                return None;
            }
        };
        Some(
            state
                .gpus
                .iter()
                .map(|(a, g)| (*a, GpuFacts { mig: MigMode { current: g.mig_current, pending: g.mig_pending }, uuid: Some(gpu_uuid(*a)) }))
                .collect(),
        )
    }

    fn heterogeneous(&self, host: &Host, gpu: PciAddress) -> Result<Option<bool>, ControlError> {
        let state = SimState::load(host).map_err(ControlError::SimState)?;
        let g = state.gpus.get(&gpu).ok_or(ControlError::UnknownGpu { gpu })?;
        Ok(known::supports_mixed_size(&g.model).then_some(g.heterogeneous))
    }

    fn set_heterogeneous(&self, host: &Host, gpu: PciAddress, on: bool) -> Result<(), ControlError> {
        let mut state = SimState::load(host).map_err(ControlError::SimState)?;
        let g = state.gpus.get_mut(&gpu).ok_or(ControlError::UnknownGpu { gpu })?;
        if !known::supports_mixed_size(&g.model) {
            return Err(ControlError::Smi { args: format!("vgpu -i {} -shm 1", smi_bus_id(gpu)), stderr: "Not Supported".into() });
        }
        g.heterogeneous = on;
        state.save(host.root()).map_err(ControlError::SimState)?;
        refresh_gpu(host, gpu).map_err(ControlError::SimState)
    }

    /// Simulated type ids are vgpuctl's own table's, so a name can be given
    /// for one no VF lists any more (a real driver's ids are never guessed).
    fn type_name(&self, host: &Host, gpu: PciAddress, id: u32) -> Option<String> {
        let state = SimState::load(host).ok()?;
        let model = &state.gpus.get(&gpu)?.model;
        known::name_for_id(id).filter(|n| n.starts_with(&format!("{model}-")))
    }

    /// The simulator models no load.
    fn utilization(&self, _host: &Host) -> HashMap<PciAddress, Utilization> {
        HashMap::new()
    }

    /// No process runs on a simulated GPU.
    fn processes(&self, _host: &Host, _gpu: PciAddress) -> Vec<GiUser> {
        Vec::new()
    }

    fn mig<'a>(&'a self, host: &'a Host) -> Result<Box<dyn MigBackend + 'a>, MigError> {
        Ok(Box::new(super::mig::SimMig::new(host)))
    }

    fn simulated_profile(&self, host: &Host) -> Option<String> {
        SimState::load(host).ok().map(|s| s.profile)
    }
}
