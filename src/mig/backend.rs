//! Where MIG state comes from and changes go to. Three backends behind one
//! trait: NVML (read through the vgpuctl-nvml helper; changes through
//! nvidia-smi, as nvml-wrapper does not wrap instance creation), nvidia-smi
//! alone (through the replaceable command runner), and the simulated host's
//! state. Which one answers is the host's NVIDIA driver's choice
//! (`crate::nvidia`), made once; `backend` only asks it.

use serde::Serialize;

use super::compute::CiProfile;
use super::layout::{Layout, Placed};
use super::profiles::Profile;
use crate::host::{Host, HostError};
use crate::ids::PciAddress;
use crate::nvidia::MigMode;
use crate::nvml::NvmlError;

#[derive(Debug, thiserror::Error)]
pub enum MigError {
    #[error("no NVIDIA driver here (no nvidia-smi, not a simulated host): MIG needs the NVIDIA driver")]
    NoDriver,
    #[error("{gpu} does not support MIG")]
    Unsupported { gpu: PciAddress },
    #[error("MIG mode is off on {gpu}: vgpuctl mig enable {gpu}")]
    Off { gpu: PciAddress },
    #[error("{gpu} has no MIG profile {wanted:?}{hint} (profiles: {known})")]
    UnknownProfile { gpu: PciAddress, wanted: String, hint: String, known: String },
    #[error("{profile} does not fit on {gpu}{at}: slice map {map}")]
    NoRoom { gpu: PciAddress, profile: String, at: String, map: String },
    #[error("no GPU instance {gi} on {gpu}")]
    NoInstance { gpu: PciAddress, gi: u32 },
    #[error("GPU instance {gi} on {gpu} is in use: {users}; stop these first{hint}")]
    InUse { gpu: PciAddress, gi: u32, users: String, hint: &'static str },
    #[error("GPU instance {gi} ({gi_profile}) has no compute-instance profile {wanted:?} (profiles: {known})")]
    UnknownCiProfile { gi: u32, gi_profile: String, wanted: String, known: String },
    #[error("compute instance {profile} does not fit in GPU instance {gi}: {why}")]
    CiNoRoom { gi: u32, profile: String, why: String },
    #[error("GPU instance {gi} on {gpu} cannot move: {why}")]
    Pinned { gpu: PciAddress, gi: u32, why: String },
    #[error("a move of GPU instances on {gpu} is unfinished ({file}): run vgpuctl gc to finish or revert it first")]
    MoveUnfinished { gpu: PciAddress, file: String },
    #[error("the journal of GPU instance moves, {file}, is corrupt ({why}); look at the GPUs with vgpuctl mig status, then remove it")]
    MoveJournalCorrupt { file: &'static str, why: String },
    #[error("GPU instance {gi} on {gpu} has compute instances {cis}: add --force to destroy them with it")]
    HasComputeInstances { gpu: PciAddress, gi: u32, cis: String },
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Nvml(#[from] NvmlError),
    #[error(transparent)]
    Policy(#[from] super::policy::PolicyError),
    #[error("nvidia-smi {args} failed: {msg}")]
    Smi { args: String, msg: String },
    #[error("cannot update the simulated host state")]
    Sim(#[source] std::io::Error),
    #[error(transparent)]
    Host(#[from] HostError),
}

impl MigError {
    /// A profile name the GPU's table does not have, with the closest one
    /// when it is a near miss (`3g.4gb` → 3g.40gb).
    pub fn unknown_profile(gpu: PciAddress, wanted: &str, table: &[Profile]) -> Self {
        let names: Vec<String> = table.iter().map(|p| p.name.to_string()).collect();
        let closest = crate::nvidia::near_miss(names.iter().map(String::as_str), wanted).map(|n| format!(": did you mean {n}?")).unwrap_or_default();
        MigError::UnknownProfile {
            gpu,
            wanted: wanted.to_string(),
            hint: closest,
            known: table.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", "),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GpuInstance {
    pub gi: u32,
    pub profile_id: u32,
    pub profile: String,
    pub start: u8,
    pub size: u8,
    pub compute_instances: Vec<ComputeInstance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ComputeInstance {
    pub ci: u32,
    pub profile_id: u32,
    /// `1c.3g.40gb`, or the GPU instance's own name for a full-size one.
    pub profile: String,
    pub start: u8,
    pub size: u8,
}

/// Something running on a GPU instance, for "in use" errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GiUser {
    pub pid: u32,
    pub name: Option<String>,
}

impl std::fmt::Display for GiUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name.as_deref().unwrap_or("process"), self.pid)
    }
}

pub trait MigBackend {
    fn mode(&self, gpu: PciAddress) -> Result<MigMode, MigError>;
    fn set_mode(&self, gpu: PciAddress, on: bool) -> Result<MigMode, MigError>;
    fn profiles(&self, gpu: PciAddress) -> Result<Vec<Profile>, MigError>;
    fn instances(&self, gpu: PciAddress) -> Result<Vec<GpuInstance>, MigError>;
    /// Creates a GPU instance at an explicit start (never the driver's default placement).
    fn create(&self, gpu: PciAddress, p: &Profile, start: u8) -> Result<u32, MigError>;
    /// Destroys the GPU instance, its compute instances first.
    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError>;
    /// The compute-instance profiles a GPU instance offers.
    fn ci_profiles(&self, gpu: PciAddress, gi: &GpuInstance) -> Result<Vec<CiProfile>, MigError>;
    /// Creates a compute instance; the driver places it (nvidia-smi takes no start).
    fn create_ci(&self, gpu: PciAddress, gi: u32, p: &CiProfile) -> Result<u32, MigError>;
    /// Destroys every compute instance of a GPU instance.
    fn destroy_cis(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError>;
    /// Processes running on a GPU instance, as far as the driver says.
    fn users(&self, gpu: PciAddress, gi: u32) -> Vec<GiUser>;
    /// `nvml`, `nvidia-smi` or `simulated`, for status output.
    fn name(&self) -> &'static str;
}

/// The host's NVIDIA driver's MIG side (NVML, nvidia-smi or simulated).
pub fn backend(host: &Host) -> Result<Box<dyn MigBackend + '_>, MigError> {
    host.nvidia().mig(host)
}

pub fn layout(instances: &[GpuInstance]) -> Layout {
    Layout { instances: instances.iter().map(|i| Placed { profile_id: i.profile_id, start: i.start, size: i.size }).collect() }
}

/// GPU instances vgpuctl created: for MIG-backed vGPUs (owner `vgpuctl`),
/// so removing the vGPU can remove the instance too and `gc` can free one a
/// crash left; and for the admin (owner `admin`: `mig create`, a layout
/// `apply` declares, one handed over with `--keep-gi`), which vgpuctl never
/// removes on its own but may move while idle (`mig defrag`), since it knows
/// nothing outside vgpuctl was set up around it. An instance not on the
/// ledger was made by another tool. The intent (GPU, profile, start) is
/// recorded *before* the driver is asked, and the instance id added once
/// known, so a crash at any point leaves an entry `gc` can resolve.
pub mod ledger {
    use serde::{Deserialize, Serialize};

    use crate::host::{Host, HostError};
    use crate::ids::PciAddress;
    pub use crate::mig::instances::Owner;

    pub const FILE: &str = "/run/vgpuctl/mig-gis.json";

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Made {
        pub gpu: PciAddress,
        pub profile_id: u32,
        pub start: u8,
        /// `None` while the driver has not answered yet (or a crash came first).
        pub gi: Option<u32>,
        /// Entries of vgpuctl before 2026-12 have none: they were all its own.
        #[serde(default)]
        pub owner: Owner,
    }

    /// What the file holds: entries, or the (GPU, instance) pairs older
    /// vgpuctl wrote, read the same way.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Entry(Made),
        Pair(PciAddress, u32),
    }

    #[derive(Debug, thiserror::Error)]
    pub enum LedgerError {
        /// Never read as empty: the next save would forget every instance in it.
        #[error("the ledger of GPU instances vgpuctl made, {FILE}, is corrupt ({why}); until it is fixed or removed, no instance is taken for vgpuctl's own")]
        Corrupt { why: String },
        #[error(transparent)]
        Host(#[from] HostError),
    }

    pub fn load(host: &Host) -> Result<Vec<Made>, LedgerError> {
        let Some(t) = host.read_attr_opt(FILE)? else { return Ok(Vec::new()) };
        let stored: Vec<Stored> = serde_json::from_str(&t).map_err(|e| LedgerError::Corrupt { why: e.to_string() })?;
        Ok(stored
            .into_iter()
            .map(|s| match s {
                Stored::Entry(m) => m,
                // Profile and start of an old entry are not known; it is matched by its id.
                Stored::Pair(gpu, gi) => Made { gpu, profile_id: u32::MAX, start: u8::MAX, gi: Some(gi), owner: Owner::Vgpuctl },
            })
            .collect())
    }

    /// Through the host layer: atomic, root-relative, a fault point. An
    /// empty ledger is no file at all.
    pub fn save(host: &Host, v: &[Made]) -> Result<(), LedgerError> {
        if v.is_empty() {
            host.remove_state(FILE)?;
            return Ok(());
        }
        Ok(host.write_state(FILE, serde_json::to_string(v).unwrap_or_default().as_bytes(), 0o600)?)
    }

    /// Whether vgpuctl made GPU instance `gi` on `gpu` for its own use.
    pub fn holds(host: &Host, gpu: PciAddress, gi: u32) -> Result<bool, LedgerError> {
        Ok(owner(host, gpu, gi)? == Some(Owner::Vgpuctl))
    }

    /// Whose GPU instance `gi` on `gpu` is, when vgpuctl made it.
    pub fn owner(host: &Host, gpu: PciAddress, gi: u32) -> Result<Option<Owner>, LedgerError> {
        Ok(load(host)?.iter().find(|m| m.gpu == gpu && m.gi == Some(gi)).map(|m| m.owner))
    }

    /// Records that an instance of `profile_id` at `start` is about to be made on `gpu`.
    pub fn intend(host: &Host, gpu: PciAddress, profile_id: u32, start: u8, owner: Owner) -> Result<(), LedgerError> {
        let mut l = load(host)?;
        // An intent a crash left for the same place was never made (the
        // place is free again, or the driver would refuse): it is this one.
        l.retain(|m| !(m.gpu == gpu && m.profile_id == profile_id && m.start == start && m.gi.is_none()));
        l.push(Made { gpu, profile_id, start, gi: None, owner });
        save(host, &l)
    }

    /// Makes sure instance `gi` (of `profile_id` at `start`) is recorded as
    /// `owner`'s: an intent for it gets its id, a missing entry is added.
    pub fn adopt(host: &Host, gpu: PciAddress, gi: u32, profile_id: u32, start: u8, owner: Owner) -> Result<(), LedgerError> {
        let mut l = load(host)?;
        if l.iter().any(|m| m.gpu == gpu && m.gi == Some(gi)) {
            return Ok(());
        }
        match l.iter_mut().find(|m| m.gpu == gpu && m.gi.is_none() && m.profile_id == profile_id && m.start == start) {
            Some(m) => m.gi = Some(gi),
            None => l.push(Made { gpu, profile_id, start, gi: Some(gi), owner }),
        }
        save(host, &l)
    }

    /// Hands an instance vgpuctl made for itself to the admin; `true` when it was recorded.
    pub fn hand_over(host: &Host, gpu: PciAddress, gi: u32) -> Result<bool, LedgerError> {
        let mut l = load(host)?;
        let mut found = false;
        for m in l.iter_mut().filter(|m| m.gpu == gpu && m.gi == Some(gi)) {
            m.owner = Owner::Admin;
            found = true;
        }
        if found {
            save(host, &l)?;
        }
        Ok(found)
    }

    /// The driver made it: its id. `None` for `gi`: it did not, the intent goes.
    pub fn settle(host: &Host, gpu: PciAddress, profile_id: u32, start: u8, gi: Option<u32>) -> Result<(), LedgerError> {
        let mut l = load(host)?;
        let pending = |m: &Made| m.gpu == gpu && m.profile_id == profile_id && m.start == start && m.gi.is_none();
        match gi {
            Some(id) => l.iter_mut().filter(|m| pending(m)).for_each(|m| m.gi = Some(id)),
            None => l.retain(|m| !pending(m)),
        }
        save(host, &l)
    }

    /// Forgets a GPU instance (destroyed, or handed to the admin); `true` when it was recorded.
    pub fn forget(host: &Host, gpu: PciAddress, gi: u32) -> Result<bool, LedgerError> {
        let mut l = load(host)?;
        let before = l.len();
        l.retain(|m| !(m.gpu == gpu && m.gi == Some(gi)));
        if l.len() != before {
            save(host, &l)?;
        }
        Ok(l.len() != before)
    }
}

/// VFs of `gpu` whose vGPU sits on GPU instance `gi` (`nvidia/gpu_instance_id`
/// with a type set): the users the driver means by "In use by another client".
pub fn vgpu_holders(host: &Host, gpu: PciAddress, gi: u32) -> Vec<PciAddress> {
    let mut out: Vec<PciAddress> = vf_instances(host, gpu).into_iter().filter(|(_, g, typed, _)| *g == gi && *typed).map(|(vf, ..)| vf).collect();
    out.sort();
    out
}

/// Every VF of `gpu` that names a GPU instance: (VF, instance, whether a
/// vGPU type is set on it, its IOMMU group).
pub(crate) fn vf_instances(host: &Host, gpu: PciAddress) -> Vec<(PciAddress, u32, bool, Option<u32>)> {
    let dir = format!("/sys/bus/pci/devices/{gpu}");
    let mut out = Vec::new();
    for name in host.list_dir(&dir).unwrap_or_default().into_iter().filter(|n| n.starts_with("virtfn")) {
        let Some(vf) = host.link_name(&format!("{dir}/{name}")).ok().flatten().and_then(|v| v.parse::<PciAddress>().ok()) else { continue };
        let read =
            |attr: &str| host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/{attr}")).ok().flatten().and_then(|v| v.trim().parse::<u32>().ok());
        let Some(gi) = read("gpu_instance_id") else { continue };
        let typed = read("current_vgpu_type").is_some_and(|t| t != 0);
        let group = host.link_name(&format!("/sys/bus/pci/devices/{vf}/iommu_group")).ok().flatten().and_then(|g| g.parse::<u32>().ok());
        out.push((vf, gi, typed, group));
    }
    out
}

/// Every compute process on a GPU (what blocks a MIG mode change), as the
/// host's NVIDIA driver reports them.
pub fn gpu_processes(host: &Host, gpu: PciAddress) -> Vec<GiUser> {
    host.nvidia().processes(host, gpu)
}
