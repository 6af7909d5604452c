//! MIG through nvidia-smi alone (hosts without the NVML helper), run
//! through the replaceable command runner; also what the NVML backend uses
//! for changes.

use std::time::Duration;

use super::backend::{ComputeInstance, GiUser, GpuInstance, MigBackend, MigError};
use super::compute::{self, CiProfile};
use super::profiles::Profile;
use super::smi;
use crate::host::{Host, Tool};
use crate::ids::PciAddress;
use crate::nvidia::{smi_bus_id, MigMode};
use crate::parse;

pub struct SmiMig<'a> {
    host: &'a Host,
}

impl<'a> SmiMig<'a> {
    pub fn new(host: &'a Host) -> Self {
        Self { host }
    }

    /// A driver change: a fault-injection point first.
    fn change(&self, args: &[&str]) -> Result<String, MigError> {
        self.host.fault_point(&format!("nvidia-smi {}", args.join(" "))).map_err(|e| MigError::Smi { args: args.join(" "), msg: e.to_string() })?;
        self.run(args)
    }

    fn run(&self, args: &[&str]) -> Result<String, MigError> {
        let out = self.host.runner().run(Tool::NvidiaSmi, args, Duration::from_secs(60))?;
        if !out.success() {
            let msg = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
            return Err(MigError::Smi { args: args.join(" "), msg: msg.to_string() });
        }
        Ok(out.stdout)
    }

    /// `destroy`, naming the GPU instance's users from `users` when the
    /// driver says it is in use (the NVML backend passes its own list).
    pub fn destroy_naming(&self, gpu: PciAddress, gi: u32, users: &dyn Fn() -> Vec<GiUser>) -> Result<(), MigError> {
        let id = smi_bus_id(gpu);
        let g = gi.to_string();
        // Compute instances first: a GPU instance with compute instances cannot go.
        let _ = self.change(&["mig", "-dci", "-gi", &g, "-i", &id]);
        self.change(&["mig", "-dgi", "-gi", &g, "-i", &id]).map(|_| ()).map_err(|e| Self::in_use(gpu, gi, e, users))
    }

    /// `destroy_cis`, naming users as `destroy_naming` does.
    pub fn destroy_cis_naming(&self, gpu: PciAddress, gi: u32, users: &dyn Fn() -> Vec<GiUser>) -> Result<(), MigError> {
        let id = smi_bus_id(gpu);
        let g = gi.to_string();
        match self.change(&["mig", "-dci", "-gi", &g, "-i", &id]) {
            Err(MigError::Smi { msg, .. }) if msg.contains("No compute instances") || msg.contains("Not Found") => Ok(()),
            r => r.map(|_| ()).map_err(|e| Self::in_use(gpu, gi, e, users)),
        }
    }

    /// Turns the driver's "In use by another client" into who uses it;
    /// `users` is asked only then (it may run nvidia-smi).
    fn in_use(gpu: PciAddress, gi: u32, e: MigError, users: &dyn Fn() -> Vec<GiUser>) -> MigError {
        match &e {
            MigError::Smi { msg, .. } if msg.contains("In use by another client") => {
                let users = users();
                let list = if users.is_empty() {
                    "a client the driver does not name (a VM's vGPU, nvidia-persistenced, DCGM or nv-hostengine)".to_string()
                } else {
                    users.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                };
                MigError::InUse { gpu, gi, users: list, hint: "" }
            }
            _ => e,
        }
    }
}

impl MigBackend for SmiMig<'_> {
    fn mode(&self, gpu: PciAddress) -> Result<MigMode, MigError> {
        let id = smi_bus_id(gpu);
        let out = self.run(&["-i", &id, "--query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending", "--format=csv,noheader"])?;
        parse::mig_mode_csv(&out).into_iter().next().map(|r| MigMode { current: r.current, pending: r.pending }).ok_or(MigError::Unsupported { gpu })
    }

    fn set_mode(&self, gpu: PciAddress, on: bool) -> Result<MigMode, MigError> {
        let id = smi_bus_id(gpu);
        self.change(&["-i", &id, "-mig", if on { "1" } else { "0" }])?;
        self.mode(gpu)
    }

    fn profiles(&self, gpu: PciAddress) -> Result<Vec<Profile>, MigError> {
        let id = smi_bus_id(gpu);
        let lgip = self.run(&["mig", "-lgip", "-i", &id])?;
        let lgipp = self.run(&["mig", "-lgipp", "-i", &id])?;
        Ok(smi::table(&lgip, &lgipp))
    }

    fn instances(&self, gpu: PciAddress) -> Result<Vec<GpuInstance>, MigError> {
        let id = smi_bus_id(gpu);
        let out = self.run(&["mig", "-lgi", "-i", &id])?;
        // No compute instances is a failure exit for -lci ("No compute instances found").
        let cis = self.run(&["mig", "-lci", "-i", &id]).map(|t| smi::lci(&t)).unwrap_or_default();
        let table = self.profiles(gpu).unwrap_or_default();
        Ok(smi::lgi(&out)
            .into_iter()
            .map(|r| GpuInstance {
                gi: r.gi,
                profile_id: r.profile_id,
                profile: table.iter().find(|p| p.id == r.profile_id).map(|p| p.name.to_string()).unwrap_or_default(),
                start: r.start,
                size: r.size,
                compute_instances: cis
                    .iter()
                    .filter(|c| c.gi == r.gi)
                    .map(|c| ComputeInstance { ci: c.ci, profile_id: c.profile_id, profile: c.profile.clone(), start: c.start, size: c.size })
                    .collect(),
            })
            .collect())
    }

    fn create(&self, gpu: PciAddress, p: &Profile, start: u8) -> Result<u32, MigError> {
        let id = smi_bus_id(gpu);
        let spec = format!("{}:{start}", p.id);
        let out = self.change(&["mig", "-cgi", &spec, "-i", &id])?;
        smi::created_gi(&out).ok_or_else(|| MigError::Smi { args: format!("mig -cgi {spec} -i {id}"), msg: format!("unexpected output {:?}", out.trim()) })
    }

    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        self.destroy_naming(gpu, gi, &|| self.users(gpu, gi))
    }

    fn ci_profiles(&self, gpu: PciAddress, gi: &GpuInstance) -> Result<Vec<CiProfile>, MigError> {
        let id = smi_bus_id(gpu);
        let g = gi.gi.to_string();
        let table = self.profiles(gpu)?;
        let Some(gp) = table.iter().find(|p| p.id == gi.profile_id) else { return Ok(Vec::new()) };
        let modeled = compute::modeled(gp);
        // The driver's ids win over the modeled ones where it lists them.
        let listed = self.run(&["mig", "-lcip", "-gi", &g, "-i", &id]).map(|t| smi::lcip(&t)).unwrap_or_default();
        Ok(modeled
            .into_iter()
            .map(|mut p| {
                if let Some((_, _, real_id)) = listed.iter().find(|(_, n, _)| n.parse().ok() == Some(p.name.clone())) {
                    p.id = *real_id;
                }
                p
            })
            .collect())
    }

    fn create_ci(&self, gpu: PciAddress, gi: u32, p: &CiProfile) -> Result<u32, MigError> {
        let id = smi_bus_id(gpu);
        let (g, pid) = (gi.to_string(), p.id.to_string());
        let out = self.change(&["mig", "-cci", &pid, "-gi", &g, "-i", &id])?;
        smi::created_ci(&out)
            .ok_or_else(|| MigError::Smi { args: format!("mig -cci {pid} -gi {g} -i {id}"), msg: format!("unexpected output {:?}", out.trim()) })
    }

    fn destroy_cis(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        self.destroy_cis_naming(gpu, gi, &|| self.users(gpu, gi))
    }

    fn users(&self, gpu: PciAddress, gi: u32) -> Vec<GiUser> {
        let id = smi_bus_id(gpu);
        self.run(&["-q", "-d", "PIDS", "-i", &id])
            .map(|t| {
                smi::pids_by_gi(&t)
                    .into_iter()
                    .filter(|(g, _, _)| *g == gi)
                    .map(|(_, pid, name)| GiUser { pid, name: (!name.is_empty()).then_some(name) })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "nvidia-smi"
    }
}
