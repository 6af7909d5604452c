//! The part of a simulated host that does not live in sysfs files: what
//! nvidia-smi and NVML would answer (MIG mode, heterogeneous mode). Kept in
//! the marker file at the root so the same tree can be reopened by any run.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};

use crate::host::{Host, SIM_MARKER};
use crate::ids::PciAddress;
use crate::parse::MigModeState;

pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimInterface {
    /// Not a vGPU host (passthrough only).
    None,
    /// mdev types under each VF or GPU (`nvidia-NNN`).
    LegacyMdev,
    /// vGPU 17+: `nvidia/current_vgpu_type` on each VF.
    VendorVfio,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SimGpu {
    /// The model part of vGPU type names (`H100`, `A100D`) or the product name.
    pub model: String,
    pub interface: SimInterface,
    pub mig_current: MigModeState,
    pub mig_pending: MigModeState,
    #[serde(default)]
    pub heterogeneous: bool,
    /// MIG GPU instances: (GPU instance id, profile id, start slice).
    #[serde(default)]
    pub gis: Vec<(u32, u32, u8)>,
    /// MIG compute instances: (GPU instance id, compute instance id, CI profile id, start).
    #[serde(default)]
    pub cis: Vec<(u32, u32, u32, u8)>,
}

impl SimGpu {
    pub fn nvidia(model: &str, interface: SimInterface, mig: MigModeState) -> Self {
        Self { model: model.to_string(), interface, mig_current: mig, mig_pending: mig, heterogeneous: false, gis: Vec::new(), cis: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimState {
    pub format: u32,
    pub profile: String,
    pub gpus: BTreeMap<PciAddress, SimGpu>,
}

impl SimState {
    pub fn new(gpus: BTreeMap<PciAddress, SimGpu>) -> Self {
        Self { format: STATE_FORMAT, profile: String::new(), gpus }
    }

    pub fn load(host: &Host) -> io::Result<Self> {
        let p = host.root().join(SIM_MARKER);
        let text = std::fs::read_to_string(&p)?;
        let state: SimState = serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display())))?;
        if state.format != STATE_FORMAT {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: unknown format {}", p.display(), state.format)));
        }
        Ok(state)
    }

    pub fn save(&self, root: &std::path::Path) -> io::Result<()> {
        let p = root.join(SIM_MARKER);
        let tmp = root.join(format!("{SIM_MARKER}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(tmp, p)
    }
}
