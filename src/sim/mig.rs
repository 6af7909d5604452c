//! MIG on a simulated host: the state file holds GPU and compute instances;
//! the profile table is the real H100 one; what the driver refuses (no
//! room, instance in use) is refused the same way.

use super::SimState;
use crate::host::Host;
use crate::ids::PciAddress;
use crate::mig::backend::{layout, vgpu_holders, ComputeInstance, GiUser, GpuInstance, MigBackend, MigError};
use crate::mig::compute::{self, CiProfile};
use crate::mig::layout::mask;
use crate::mig::profiles::{self, Profile};
use crate::nvidia::MigMode;
use crate::parse::MigModeState;

pub struct SimMig<'a> {
    host: &'a Host,
}

impl<'a> SimMig<'a> {
    pub fn new(host: &'a Host) -> Self {
        Self { host }
    }

    fn state(&self) -> Result<SimState, MigError> {
        SimState::load(self.host).map_err(MigError::Sim)
    }

    fn table(&self, gpu: PciAddress, st: &SimState) -> Result<Vec<Profile>, MigError> {
        let g = st.gpus.get(&gpu).ok_or(MigError::Unsupported { gpu })?;
        if g.mig_current == MigModeState::NotSupported {
            return Err(MigError::Unsupported { gpu });
        }
        Ok(profiles::for_model(match g.model.as_str() {
            "A100D" => "A100 80GB",
            m => m,
        })
        .unwrap_or_default())
    }
}

impl MigBackend for SimMig<'_> {
    fn mode(&self, gpu: PciAddress) -> Result<MigMode, MigError> {
        let st = self.state()?;
        let g = st.gpus.get(&gpu).ok_or(MigError::Unsupported { gpu })?;
        Ok(MigMode { current: g.mig_current, pending: g.mig_pending })
    }

    fn set_mode(&self, gpu: PciAddress, on: bool) -> Result<MigMode, MigError> {
        let mut st = self.state()?;
        let g = st.gpus.get_mut(&gpu).ok_or(MigError::Unsupported { gpu })?;
        if g.mig_current == MigModeState::NotSupported {
            return Err(MigError::Unsupported { gpu });
        }
        let m = if on { MigModeState::Enabled } else { MigModeState::Disabled };
        self.host.fault_point("mig mode").map_err(MigError::Sim)?;
        g.mig_current = m;
        g.mig_pending = m;
        if !on {
            g.gis.clear();
        }
        st.save(self.host.root()).map_err(MigError::Sim)?;
        super::refresh_gpu(self.host, gpu).map_err(MigError::Sim)?;
        self.mode(gpu)
    }

    fn profiles(&self, gpu: PciAddress) -> Result<Vec<Profile>, MigError> {
        let st = self.state()?;
        self.table(gpu, &st)
    }

    fn instances(&self, gpu: PciAddress) -> Result<Vec<GpuInstance>, MigError> {
        let st = self.state()?;
        let table = self.table(gpu, &st)?;
        let g = st.gpus.get(&gpu).ok_or(MigError::Unsupported { gpu })?;
        Ok(g.gis
            .iter()
            .filter_map(|(gi, pid, start)| {
                let p = table.iter().find(|p| p.id == *pid)?;
                let cis = compute::modeled(p);
                let compute_instances = g
                    .cis
                    .iter()
                    .filter(|(cgi, ..)| cgi == gi)
                    .map(|(_, ci, cpid, cstart)| {
                        let cp = cis.iter().find(|c| c.id == *cpid);
                        ComputeInstance {
                            ci: *ci,
                            profile_id: *cpid,
                            profile: cp.map(|c| c.name.to_string()).unwrap_or_default(),
                            start: *cstart,
                            size: cp.map(|c| c.slices).unwrap_or(1),
                        }
                    })
                    .collect();
                Some(GpuInstance { gi: *gi, profile_id: *pid, profile: p.name.to_string(), start: *start, size: p.size, compute_instances })
            })
            .collect())
    }

    fn create(&self, gpu: PciAddress, p: &Profile, start: u8) -> Result<u32, MigError> {
        let mut st = self.state()?;
        let table = self.table(gpu, &st)?;
        let current = self.instances(gpu)?;
        let g = st.gpus.get_mut(&gpu).ok_or(MigError::Unsupported { gpu })?;
        if g.mig_current != MigModeState::Enabled {
            return Err(MigError::Off { gpu });
        }
        let mut l = layout(&current);
        if !l.place(p, start) {
            return Err(MigError::NoRoom { gpu, profile: p.name.to_string(), at: format!(" at {start}"), map: layout(&current).slice_map(&table) });
        }
        // The driver numbers GPU instances itself; 1 upwards, reusing gaps.
        let gi = (1..).find(|n| !g.gis.iter().any(|(x, _, _)| x == n)).unwrap_or(1);
        self.host.fault_point("mig create").map_err(MigError::Sim)?;
        g.gis.push((gi, p.id, start));
        st.save(self.host.root()).map_err(MigError::Sim)?;
        super::refresh_gpu(self.host, gpu).map_err(MigError::Sim)?;
        Ok(gi)
    }

    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        let mut st = self.state()?;
        let g = st.gpus.get_mut(&gpu).ok_or(MigError::Unsupported { gpu })?;
        if !g.gis.iter().any(|(x, _, _)| *x == gi) {
            return Err(MigError::NoInstance { gpu, gi });
        }
        // The driver refuses while a vGPU sits on the instance.
        if !vgpu_holders(self.host, gpu, gi).is_empty() {
            return Err(MigError::Smi { args: format!("mig -dgi -gi {gi}"), msg: "Unable to destroy GPU instance: In use by another client".into() });
        }
        self.host.fault_point("mig destroy").map_err(MigError::Sim)?;
        g.cis.retain(|(x, ..)| *x != gi);
        g.gis.retain(|(x, _, _)| *x != gi);
        st.save(self.host.root()).map_err(MigError::Sim)?;
        super::refresh_gpu(self.host, gpu).map_err(MigError::Sim)
    }

    fn ci_profiles(&self, gpu: PciAddress, gi: &GpuInstance) -> Result<Vec<CiProfile>, MigError> {
        let st = self.state()?;
        let table = self.table(gpu, &st)?;
        Ok(table.iter().find(|p| p.id == gi.profile_id).map(compute::modeled).unwrap_or_default())
    }

    fn create_ci(&self, gpu: PciAddress, gi: u32, p: &CiProfile) -> Result<u32, MigError> {
        let mut st = self.state()?;
        let current = self.instances(gpu)?;
        let inst = current.iter().find(|i| i.gi == gi).ok_or(MigError::NoInstance { gpu, gi })?;
        let used = inst.compute_instances.iter().fold(0u8, |a, c| a | mask(c.size, c.start));
        let start = p
            .starts
            .iter()
            .copied()
            .find(|s| used & mask(p.slices, *s) == 0)
            .ok_or_else(|| MigError::Smi { args: format!("mig -cci {} -gi {gi}", p.id), msg: "Insufficient Resources".into() })?;
        self.host.fault_point("mig create-ci").map_err(MigError::Sim)?;
        let g = st.gpus.get_mut(&gpu).ok_or(MigError::Unsupported { gpu })?;
        let ci = (0..).find(|n| !g.cis.iter().any(|(x, c, ..)| *x == gi && c == n)).unwrap_or(0);
        g.cis.push((gi, ci, p.id, start));
        st.save(self.host.root()).map_err(MigError::Sim)?;
        Ok(ci)
    }

    fn destroy_cis(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        let mut st = self.state()?;
        let g = st.gpus.get_mut(&gpu).ok_or(MigError::Unsupported { gpu })?;
        if !g.cis.iter().any(|(x, ..)| *x == gi) {
            return Ok(());
        }
        self.host.fault_point("mig destroy-ci").map_err(MigError::Sim)?;
        g.cis.retain(|(x, ..)| *x != gi);
        st.save(self.host.root()).map_err(MigError::Sim)
    }

    fn users(&self, _gpu: PciAddress, _gi: u32) -> Vec<GiUser> {
        // Simulated GPUs run no processes; vGPUs on an instance are found from sysfs.
        Vec::new()
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}
