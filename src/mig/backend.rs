//! Where MIG state comes from and changes go to: nvidia-smi on a real host
//! (through the replaceable command runner), or the simulated host's state.
//! NVML is not used here: vgpuctl is a static binary, and NVML is only
//! reachable by loading the driver's shared library at run time.

use std::time::Duration;

use serde::Serialize;

use super::layout::{Layout, Placed};
use super::profiles::{self, Profile};
use super::smi;
use crate::host::{Host, HostError, Tool};
use crate::ids::PciAddress;
use crate::inventory::MigMode;
use crate::nvctl::smi_bus_id;
use crate::parse::{self, MigModeState};
use crate::sim::SimState;

#[derive(Debug, thiserror::Error)]
pub enum MigError {
    #[error("no NVIDIA driver here (no nvidia-smi, not a simulated host): MIG needs the NVIDIA driver")]
    NoDriver,
    #[error("{gpu} does not support MIG")]
    Unsupported { gpu: PciAddress },
    #[error("MIG mode is off on {gpu}: vgpuctl mig enable {gpu}")]
    Off { gpu: PciAddress },
    #[error("{gpu} has no MIG profile {wanted:?} (profiles: {known})")]
    UnknownProfile { gpu: PciAddress, wanted: String, known: String },
    #[error("{profile} does not fit on {gpu}{at}: slice map {map}")]
    NoRoom { gpu: PciAddress, profile: String, at: String, map: String },
    #[error("no GPU instance {gi} on {gpu}")]
    NoInstance { gpu: PciAddress, gi: u32 },
    #[error("nvidia-smi {args} failed: {msg}")]
    Smi { args: String, msg: String },
    #[error("cannot update the simulated host state")]
    Sim(#[source] std::io::Error),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuInstance {
    pub gi: u32,
    pub profile_id: u32,
    pub profile: String,
    pub start: u8,
    pub size: u8,
}

pub trait MigBackend {
    fn mode(&self, gpu: PciAddress) -> Result<MigMode, MigError>;
    fn set_mode(&self, gpu: PciAddress, on: bool) -> Result<MigMode, MigError>;
    fn profiles(&self, gpu: PciAddress) -> Result<Vec<Profile>, MigError>;
    fn instances(&self, gpu: PciAddress) -> Result<Vec<GpuInstance>, MigError>;
    /// Creates a GPU instance at an explicit start (never the driver's default placement).
    fn create(&self, gpu: PciAddress, p: &Profile, start: u8) -> Result<u32, MigError>;
    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError>;
}

pub fn backend(host: &Host) -> Result<Box<dyn MigBackend + '_>, MigError> {
    if host.is_simulated() {
        return Ok(Box::new(SimMig { host }));
    }
    if host.runner().is_available(Tool::NvidiaSmi) {
        return Ok(Box::new(SmiMig { host }));
    }
    Err(MigError::NoDriver)
}

pub fn layout(instances: &[GpuInstance]) -> Layout {
    Layout { instances: instances.iter().map(|i| Placed { profile_id: i.profile_id, start: i.start, size: i.size }).collect() }
}

struct SmiMig<'a> {
    host: &'a Host,
}

impl SmiMig<'_> {
    fn run(&self, args: &[&str]) -> Result<String, MigError> {
        let out = self.host.runner().run(Tool::NvidiaSmi, args, Duration::from_secs(60))?;
        if !out.success() {
            let msg = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
            return Err(MigError::Smi { args: args.join(" "), msg: msg.to_string() });
        }
        Ok(out.stdout)
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
        self.run(&["-i", &id, "-mig", if on { "1" } else { "0" }])?;
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
        let table = self.profiles(gpu).unwrap_or_default();
        Ok(smi::lgi(&out)
            .into_iter()
            .map(|r| GpuInstance {
                gi: r.gi,
                profile_id: r.profile_id,
                profile: table.iter().find(|p| p.id == r.profile_id).map(|p| p.name.to_string()).unwrap_or_default(),
                start: r.start,
                size: r.size,
            })
            .collect())
    }

    fn create(&self, gpu: PciAddress, p: &Profile, start: u8) -> Result<u32, MigError> {
        let id = smi_bus_id(gpu);
        let spec = format!("{}:{start}", p.id);
        let out = self.run(&["mig", "-cgi", &spec, "-i", &id])?;
        smi::created_gi(&out).ok_or_else(|| MigError::Smi { args: format!("mig -cgi {spec} -i {id}"), msg: format!("unexpected output {:?}", out.trim()) })
    }

    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        let id = smi_bus_id(gpu);
        let g = gi.to_string();
        // Compute instances first: a GPU instance with compute instances cannot go.
        let _ = self.run(&["mig", "-dci", "-gi", &g, "-i", &id]);
        self.run(&["mig", "-dgi", "-gi", &g, "-i", &id]).map(|_| ())
    }
}

struct SimMig<'a> {
    host: &'a Host,
}

impl SimMig<'_> {
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
        g.mig_current = m;
        g.mig_pending = m;
        if !on {
            g.gis.clear();
        }
        st.save(self.host.root()).map_err(MigError::Sim)?;
        crate::sim::refresh_gpu(self.host, gpu).map_err(MigError::Sim)?;
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
                Some(GpuInstance { gi: *gi, profile_id: *pid, profile: p.name.to_string(), start: *start, size: p.size })
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
        g.gis.push((gi, p.id, start));
        st.save(self.host.root()).map_err(MigError::Sim)?;
        crate::sim::refresh_gpu(self.host, gpu).map_err(MigError::Sim)?;
        Ok(gi)
    }

    fn destroy(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        let mut st = self.state()?;
        let g = st.gpus.get_mut(&gpu).ok_or(MigError::Unsupported { gpu })?;
        let before = g.gis.len();
        g.gis.retain(|(x, _, _)| *x != gi);
        if g.gis.len() == before {
            return Err(MigError::NoInstance { gpu, gi });
        }
        st.save(self.host.root()).map_err(MigError::Sim)?;
        crate::sim::refresh_gpu(self.host, gpu).map_err(MigError::Sim)
    }
}

/// GPU instances vgpuctl created for MIG-backed vGPUs, so removing the vGPU
/// can remove the instance too (never one an admin made).
pub mod ledger {
    use std::fs;

    use crate::host::Host;
    use crate::ids::PciAddress;

    const FILE: &str = "/run/vgpuctl/mig-gis.json";

    pub fn load(host: &Host) -> Vec<(PciAddress, u32)> {
        host.read_attr_opt(FILE).ok().flatten().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    pub fn save(host: &Host, v: &[(PciAddress, u32)]) -> std::io::Result<()> {
        let p = host.path(FILE).map_err(std::io::Error::other)?;
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        crate::host::atomic::write_atomic(&p, serde_json::to_string(v).unwrap_or_default().as_bytes(), 0o600)
    }
}
