//! The NVIDIA driver seam: every fact vgpuctl needs from the NVIDIA driver
//! beyond sysfs (MIG mode and UUIDs, mixed-size mode, utilization, compute
//! processes, GPU and compute instances) is asked of one [`NvidiaDriver`],
//! chosen once when the host is opened and carried by the [`Host`]:
//!
//! - the real driver ([`real::RealDriver`]): NVML through the vgpuctl-nvml
//!   helper, else nvidia-smi, else "no NVIDIA driver", as
//!   `VGPUCTL_NVIDIA_BACKEND` says; it owns the NVML snapshot cache;
//! - the simulated driver (`sim::driver::SimDriver`), which `sim::attach`
//!   puts on a simulated host.
//!
//! Nothing above this seam asks whether the host is simulated: it asks the
//! driver, as mig-parted's code above its `Manager` interfaces never knows
//! whether NVML is mocked.

pub mod known;
pub mod profiles;
pub mod real;
pub mod typename;

use std::collections::HashMap;

use serde::Serialize;

use crate::host::Host;
use crate::ids::PciAddress;
use crate::mig::backend::{GiUser, MigBackend, MigError};
use crate::nvml::NvmlSnapshot;
use crate::parse::MigModeState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MigMode {
    pub current: MigModeState,
    pub pending: MigModeState,
}

/// What the driver says of one GPU that sysfs does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFacts {
    pub mig: MigMode,
    pub uuid: Option<String>,
}

/// Per-GPU utilization and memory, as the driver reports them.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Utilization {
    pub gpu_percent: Option<u32>,
    pub memory_percent: Option<u32>,
    pub memory_used_mib: Option<u64>,
    pub memory_total_mib: Option<u64>,
}

/// The parts of the driver's state a command will read, declared up front
/// ([`NvidiaDriver::expect`]) so one NVML session answers all of them. A part
/// asked for later that was not declared is still answered, at the cost of
/// another session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Wants(u8);

impl Wants {
    /// Bus ids, UUIDs, names and MIG modes: always part of an answer.
    pub const IDENTITY: Wants = Wants(0);
    /// GPU-instance profiles and their placements, of every MIG-capable GPU.
    pub const MIG_PROFILES: Wants = Wants(1);
    /// GPU and compute instances (with their memory), and so the profile
    /// table, of every GPU in MIG mode.
    pub const MIG_INSTANCES: Wants = Wants(1 << 1);
    /// Compute processes.
    pub const PROCESSES: Wants = Wants(1 << 2);
    /// GPU utilization and memory.
    pub const UTILIZATION: Wants = Wants(1 << 3);
    /// Mixed-size mode and the vGPUs with their samples.
    pub const VGPU: Wants = Wants(1 << 4);
    /// GPU-instance utilization over a sampling window (GPM needs two samples).
    pub const SAMPLED: Wants = Wants(1 << 5);
    /// Everything MIG placement reads.
    pub const MIG: Wants = Wants(Self::MIG_PROFILES.0 | Self::MIG_INSTANCES.0 | Self::PROCESSES.0);
    pub const ALL: Wants = Wants(0b11_1111);

    const NAMES: [(Wants, &'static str); 6] = [
        (Self::MIG_PROFILES, "profiles"),
        (Self::MIG_INSTANCES, "instances"),
        (Self::PROCESSES, "processes"),
        (Self::UTILIZATION, "utilization"),
        (Self::VGPU, "vgpu"),
        (Self::SAMPLED, "sampled"),
    ];

    pub fn contains(self, other: Wants) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Wants) -> Wants {
        Wants(self.0 | other.0)
    }

    /// The helper's `--want` list (`identity` alone when nothing else).
    pub fn to_arg(self) -> String {
        let names: Vec<&str> = Self::NAMES.iter().filter(|(w, _)| self.contains(*w)).map(|(_, n)| *n).collect();
        if names.is_empty() {
            "identity".to_string()
        } else {
            names.join(",")
        }
    }

    /// Parses a `--want` list; `None` names the unknown word.
    pub fn parse(text: &str) -> Result<Wants, String> {
        let mut w = Wants::IDENTITY;
        for word in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            w = match word {
                "identity" => w,
                "all" => Wants::ALL,
                "mig" => w.union(Wants::MIG),
                _ => w.union(Self::NAMES.iter().find(|(_, n)| *n == word).map(|(x, _)| *x).ok_or_else(|| word.to_string())?),
            };
        }
        Ok(w)
    }
}

impl std::ops::BitOr for Wants {
    type Output = Wants;
    fn bitor(self, rhs: Wants) -> Wants {
        self.union(rhs)
    }
}

/// Errors of the driver's own controls (mixed-size mode).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("nvidia-smi {args} failed: {stderr}")]
    Smi { args: String, stderr: String },
    #[error("GPU {gpu} is not known to the NVIDIA driver here")]
    UnknownGpu { gpu: PciAddress },
    #[error("cannot update the simulated host state")]
    SimState(#[source] std::io::Error),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

/// One NVIDIA driver, as the host has it. Every method takes the host it
/// answers for (the driver reads files and runs tools through it).
pub trait NvidiaDriver: Send + Sync + std::fmt::Debug {
    /// Declares what the command in hand will read, before it reads any of it.
    fn expect(&self, _wants: Wants) {}

    /// Starts asking the driver for what was declared, to be collected at
    /// the first question: for commands that will surely ask, so the
    /// driver's start overlaps vgpuctl's own reading of sysfs.
    fn prefetch(&self, _host: &Host) {}

    /// MIG mode and UUID per GPU; `None` when there is no NVIDIA driver (a
    /// normal host, not an error). Problems reading it go to `warnings`.
    fn gpus(&self, host: &Host, warnings: &mut Vec<String>) -> Option<HashMap<PciAddress, GpuFacts>>;

    /// Mixed-size mode: `Some(on)`, or `None` where unsupported.
    fn heterogeneous(&self, host: &Host, gpu: PciAddress) -> Result<Option<bool>, ControlError>;

    fn set_heterogeneous(&self, host: &Host, gpu: PciAddress, on: bool) -> Result<(), ControlError>;

    /// The name of a vendor vGPU type id no VF lists any more, where the
    /// driver can say it.
    fn type_name(&self, _host: &Host, _gpu: PciAddress, _id: u32) -> Option<String> {
        None
    }

    /// Utilization and memory per GPU; empty where the driver says nothing.
    fn utilization(&self, host: &Host) -> HashMap<PciAddress, Utilization>;

    /// NVML's per-vGPU and per-GPU-instance samples, when NVML answers here.
    fn samples(&self, _host: &Host) -> Option<std::sync::Arc<NvmlSnapshot>> {
        None
    }

    /// Every compute process on a GPU, as far as the driver says.
    fn processes(&self, host: &Host, gpu: PciAddress) -> Vec<GiUser>;

    /// GPU and compute instances: reads and changes.
    fn mig<'a>(&'a self, host: &'a Host) -> Result<Box<dyn MigBackend + 'a>, MigError>;

    /// Forgets what was read: the next question asks the driver again.
    fn forget(&self) {}

    /// The simulated profile's name, on a simulated host.
    fn simulated_profile(&self, _host: &Host) -> Option<String> {
        None
    }
}

/// The candidate closest to `wanted` when it is a near miss (at most two
/// single-character edits, case ignored): the "did you mean" of every name
/// an admin types (vGPU types, MIG profiles). The first of equals wins.
pub fn near_miss<'a>(candidates: impl IntoIterator<Item = &'a str>, wanted: &str) -> Option<&'a str> {
    let w = wanted.to_ascii_uppercase();
    candidates.into_iter().map(|c| (strsim::levenshtein(&c.to_ascii_uppercase(), &w), c)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

/// nvidia-smi's bus-id form.
pub fn smi_bus_id(gpu: PciAddress) -> String {
    format!("{:08X}:{:02X}:{:02X}.{:X}", gpu.domain, gpu.bus, gpu.device, gpu.function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_wants_round_trip_through_the_helper_argument() {
        for w in [Wants::IDENTITY, Wants::MIG, Wants::ALL, Wants::UTILIZATION | Wants::VGPU, Wants::SAMPLED] {
            assert_eq!(Wants::parse(&w.to_arg()), Ok(w), "{}", w.to_arg());
        }
        assert_eq!(Wants::IDENTITY.to_arg(), "identity");
        assert_eq!(Wants::parse("mig").map(|w| w.contains(Wants::PROCESSES)), Ok(true));
        assert_eq!(Wants::parse("profiles,bogus"), Err("bogus".to_string()));
        assert!(Wants::ALL.contains(Wants::MIG | Wants::VGPU | Wants::SAMPLED | Wants::UTILIZATION));
        assert!(!Wants::MIG.contains(Wants::UTILIZATION));
    }
}
