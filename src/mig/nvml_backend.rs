//! MIG read through NVML (the vgpuctl-nvml snapshot), changed through
//! nvidia-smi: nvml-wrapper does not wrap GPU/compute-instance creation, and
//! nvidia-smi prints the driver's own messages, which admins know. After a
//! change the snapshot is taken again.

use std::sync::Arc;

use super::backend::{ComputeInstance, GiUser, GpuInstance, MigBackend, MigError};
use super::compute::{self, CiProfile};
use super::profiles::Profile;
use super::smi_backend::SmiMig;
use crate::host::Host;
use crate::ids::PciAddress;
use crate::nvidia::{MigMode, Wants};
use crate::nvml::{NvmlGpu, NvmlSnapshot, NvmlSource};

pub struct NvmlMig<'a> {
    host: &'a Host,
    /// The driver's own source: it keeps the snapshot, and a change made
    /// here is forgotten there.
    source: &'a NvmlSource,
    smi: SmiMig<'a>,
}

impl<'a> NvmlMig<'a> {
    pub fn new(host: &'a Host, source: &'a NvmlSource) -> Self {
        Self { host, source, smi: SmiMig::new(host) }
    }

    /// Reads one GPU of a snapshot holding `need`, in place.
    fn with_gpu<T>(&self, need: Wants, gpu: PciAddress, f: impl FnOnce(&NvmlGpu) -> T) -> Result<T, MigError> {
        let snap: Option<Arc<NvmlSnapshot>> = self.source.snapshot(self.host, need)?;
        snap.as_ref().and_then(|s| s.gpu(gpu).map(f)).ok_or(MigError::Unsupported { gpu })
    }

    fn changed<T>(&self, r: Result<T, MigError>) -> Result<T, MigError> {
        self.source.forget();
        r
    }
}

impl MigBackend for NvmlMig<'_> {
    fn mode(&self, gpu: PciAddress) -> Result<MigMode, MigError> {
        self.with_gpu(Wants::IDENTITY, gpu, NvmlGpu::mig_mode)
    }

    fn set_mode(&self, gpu: PciAddress, on: bool) -> Result<MigMode, MigError> {
        let r = self.smi.set_mode(gpu, on);
        self.changed(r)?;
        self.mode(gpu)
    }

    fn profiles(&self, gpu: PciAddress) -> Result<Vec<Profile>, MigError> {
        // A snapshot with instances holds the table of every GPU in MIG mode
        // (the helper needs it to list them): no second session for it.
        if let Some((parts, s)) = self.source.held() {
            if let Some(g) = s.gpu(gpu).filter(|g| parts.contains(Wants::MIG_INSTANCES) && g.mig.is_some_and(|m| m.current)) {
                return Ok(g.profile_table());
            }
        }
        self.with_gpu(Wants::MIG_PROFILES, gpu, |g| g.mig.is_some().then(|| g.profile_table()))?.ok_or(MigError::Unsupported { gpu })
    }

    fn instances(&self, gpu: PciAddress) -> Result<Vec<GpuInstance>, MigError> {
        self.with_gpu(Wants::MIG_INSTANCES, gpu, instances_of)
    }

    fn create(&self, gpu: PciAddress, p: &Profile, start: u8) -> Result<u32, MigError> {
        let r = self.smi.create(gpu, p, start);
        self.changed(r)
    }

    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        // NVML's process list names the users; no nvidia-smi run for it.
        let r = self.smi.destroy_naming(gpu, gi, &|| self.users(gpu, gi));
        self.changed(r)
    }

    fn ci_profiles(&self, gpu: PciAddress, gi: &GpuInstance) -> Result<Vec<CiProfile>, MigError> {
        self.smi.ci_profiles(gpu, gi)
    }

    fn create_ci(&self, gpu: PciAddress, gi: u32, p: &CiProfile) -> Result<u32, MigError> {
        let r = self.smi.create_ci(gpu, gi, p);
        self.changed(r)
    }

    fn destroy_cis(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        let r = self.smi.destroy_cis_naming(gpu, gi, &|| self.users(gpu, gi));
        self.changed(r)
    }

    fn users(&self, gpu: PciAddress, gi: u32) -> Vec<GiUser> {
        self.with_gpu(Wants::PROCESSES, gpu, |g| g.processes.iter().filter(|p| p.gi == Some(gi)).map(|p| GiUser { pid: p.pid, name: p.name.clone() }).collect())
            .unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "nvml"
    }
}

/// A GPU's instances in vgpuctl's terms, names from its profile tables.
fn instances_of(g: &NvmlGpu) -> Vec<GpuInstance> {
    let table = g.profile_table();
    NvmlSnapshot::sane_instances(g)
        .map(|i| {
            let p = table.iter().find(|p| p.id == i.profile_id);
            let cis = p.map(compute::modeled).unwrap_or_default();
            GpuInstance {
                gi: i.gi,
                profile_id: i.profile_id,
                profile: p.map(|p| p.name.to_string()).unwrap_or_default(),
                start: i.start,
                size: i.size,
                compute_instances: i
                    .compute_instances
                    .iter()
                    .map(|c| ComputeInstance {
                        ci: c.ci,
                        profile_id: c.profile_id,
                        profile: cis.iter().find(|x| x.id == c.profile_id).map(|x| x.name.to_string()).unwrap_or_default(),
                        start: c.start,
                        size: c.size,
                    })
                    .collect(),
            }
        })
        .collect()
}
