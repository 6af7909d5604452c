//! The MIG instance manager: the one place that creates and destroys GPU
//! instances and keeps the ledger of those vgpuctl made. The CLI, vGPU
//! create/remove, the hook, `gc` and `apply` all go through it, so one set
//! of checks guards every destroy, and every instance vgpuctl makes for its
//! own use is on the ledger before the driver is asked (a crash at any point
//! leaves an entry `gc` can resolve).

use super::backend::{ledger, vgpu_holders, GpuInstance, MigBackend, MigError};
use super::profiles::Profile;
use crate::host::Host;
use crate::ids::PciAddress;
use crate::parse::MigModeState;

/// Whose a new GPU instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// vgpuctl's, for a MIG-backed vGPU: ledgered, removed with the vGPU and swept by `gc`.
    Vgpuctl,
    /// The admin's (`mig create`, a layout `apply` declares): never removed by vgpuctl on its own.
    Admin,
}

/// Why a destroy may go on although something is on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestroyOptions {
    /// Destroy its compute instances with it (`mig destroy --force`).
    pub with_compute_instances: bool,
}

pub struct Instances<'a> {
    host: &'a Host,
    backend: Box<dyn MigBackend + 'a>,
}

impl<'a> Instances<'a> {
    /// The host's MIG side, as its NVIDIA driver gives it.
    pub fn open(host: &'a Host) -> Result<Self, MigError> {
        Ok(Self { host, backend: host.nvidia().mig(host)? })
    }

    /// Reads (mode, profiles, instances, users) go to the backend directly.
    pub fn backend(&self) -> &dyn MigBackend {
        self.backend.as_ref()
    }

    /// Where the placement planner, with the admin's policy
    /// (/etc/vgpuctl/mig-planner.toml), puts a GPU instance of `p` among
    /// `gpus` (all in MIG mode, sharing `table`): the GPU and start, or why
    /// not (a slice map per GPU, and which policy rule turned it away when
    /// it would fit without it).
    pub fn place(&self, gpus: &[PciAddress], table: &[Profile], p: &Profile) -> Result<(PciAddress, u8), MigError> {
        let first = *gpus.first().ok_or(MigError::NoDriver)?;
        let mut layouts = Vec::with_capacity(gpus.len());
        for g in gpus {
            layouts.push(super::backend::layout(&self.backend.instances(*g)?));
        }
        let policy = super::policy::load(self.host)?;
        if let Some((i, start)) = policy.planner(table)?.choose(&layouts, p) {
            return Ok((gpus[i], start));
        }
        let unrestricted = super::policy::PlannerConfig { reserve_whole_gpus: 0, reserve_half_gpus: 0, admission: false, ..policy.clone() };
        let at = if unrestricted.planner(table)?.choose(&layouts, p).is_some() {
            let unreserved = super::policy::PlannerConfig { reserve_whole_gpus: 0, reserve_half_gpus: 0, ..policy.clone() };
            if policy.admission && unreserved.planner(table)?.choose(&layouts, p).is_none() {
                format!(
                    " now: admission = true in {} turns it away, since it is worth less than the room it would take; --placement places it anyway",
                    super::policy::FILE
                )
            } else {
                format!(
                    " without breaking the reserve in {} (reserve_whole_gpus = {}, reserve_half_gpus = {}); --placement places it anyway",
                    super::policy::FILE,
                    policy.reserve_whole_gpus,
                    policy.reserve_half_gpus
                )
            }
        } else {
            String::new()
        };
        let map = gpus.iter().zip(&layouts).map(|(g, l)| format!("{g} [{}]", l.slice_map(table))).collect::<Vec<_>>().join(", ");
        Err(MigError::NoRoom { gpu: first, profile: p.name.to_string(), at, map })
    }

    /// Creates a GPU instance of `p` at `start` on `gpu`. For vgpuctl's own,
    /// the intent is recorded first and the id after; an instance whose id
    /// cannot be recorded is destroyed again rather than kept unrecorded.
    pub fn create(&self, gpu: PciAddress, p: &Profile, start: u8, owner: Owner) -> Result<u32, MigError> {
        if owner == Owner::Admin {
            return self.backend.create(gpu, p, start);
        }
        ledger::intend(self.host, gpu, p.id, start)?;
        let gi = match self.backend.create(gpu, p, start) {
            Ok(gi) => gi,
            Err(e) => {
                if let Err(x) = ledger::settle(self.host, gpu, p.id, start, None) {
                    tracing::warn!(%gpu, "{x}");
                }
                return Err(e);
            }
        };
        if let Err(e) = ledger::settle(self.host, gpu, p.id, start, Some(gi)) {
            // Dropping the intent may fail too: gc then resolves it by profile and start.
            match self.backend.destroy(gpu, gi) {
                Ok(()) => {
                    if let Err(x) = ledger::settle(self.host, gpu, p.id, start, None) {
                        tracing::warn!(%gpu, "{x}");
                    }
                }
                Err(d) => tracing::error!(%gpu, gi, "could not destroy the GPU instance that could not be recorded (vgpuctl gc retries): {d}"),
            }
            return Err(e.into());
        }
        tracing::info!(%gpu, gi, "created a {} GPU instance for vgpuctl", p.name);
        Ok(gi)
    }

    /// What every destroy checks first: MIG is on, the instance exists, no
    /// vGPU sits on it (named with the VM using it), no process runs on it,
    /// and it has no compute instances unless they may go with it.
    pub fn check_destroy(&self, gpu: PciAddress, gi: u32, opts: DestroyOptions) -> Result<GpuInstance, MigError> {
        if self.backend.mode(gpu)?.current != MigModeState::Enabled {
            return Err(MigError::Off { gpu });
        }
        let inst = self.backend.instances(gpu)?.into_iter().find(|i| i.gi == gi).ok_or(MigError::NoInstance { gpu, gi })?;
        let holders = vgpu_holders(self.host, gpu, gi);
        if !holders.is_empty() {
            let users = crate::inventory::VfioUsers::scan(self.host);
            let list: Vec<String> = holders
                .iter()
                .map(|vf| {
                    let group = self.host.link_name(&format!("/sys/bus/pci/devices/{vf}/iommu_group")).ok().flatten().and_then(|g| g.parse::<u32>().ok());
                    match group.and_then(|g| users.user_of(g)) {
                        Some(u) => format!("vGPU on VF {vf} used by {u}"),
                        None => format!("vGPU on VF {vf}"),
                    }
                })
                .collect();
            return Err(MigError::InUse { gpu, gi, users: list.join(", "), hint: " (vgpuctl vgpu remove <vf> after the VM has stopped)" });
        }
        let procs = self.backend.users(gpu, gi);
        if !procs.is_empty() {
            return Err(MigError::InUse { gpu, gi, users: procs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), hint: "" });
        }
        if !inst.compute_instances.is_empty() && !opts.with_compute_instances {
            let cis: Vec<String> = inst.compute_instances.iter().map(|c| format!("{} ({})", c.ci, c.profile)).collect();
            return Err(MigError::HasComputeInstances { gpu, gi, cis: cis.join(", ") });
        }
        Ok(inst)
    }

    /// Destroys a GPU instance after [`Instances::check_destroy`], and takes
    /// it off the ledger if vgpuctl made it.
    pub fn destroy(&self, gpu: PciAddress, gi: u32, opts: DestroyOptions) -> Result<(), MigError> {
        let inst = self.check_destroy(gpu, gi, opts)?;
        if !inst.compute_instances.is_empty() {
            self.backend.destroy_cis(gpu, gi)?;
        }
        self.backend.destroy(gpu, gi)?;
        if let Err(e) = ledger::forget(self.host, gpu, gi) {
            tracing::warn!("destroyed GPU instance {gi} on {gpu}, but {e}");
        }
        Ok(())
    }

    /// Destroys a GPU instance only if the ledger proves vgpuctl made it,
    /// after the same checks (its compute instances may go with it: vgpuctl
    /// made none an admin could have wanted). `Ok(false)`: not vgpuctl's,
    /// or the ledger cannot be read (then none is taken for vgpuctl's), and
    /// left in place. An instance already gone is forgotten.
    pub fn destroy_if_made(&self, gpu: PciAddress, gi: u32) -> Result<bool, MigError> {
        match ledger::holds(self.host, gpu, gi) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                tracing::warn!("{e}: GPU instance {gi} on {gpu} is left in place");
                return Ok(false);
            }
        }
        match self.destroy(gpu, gi, DestroyOptions { with_compute_instances: true }) {
            Ok(()) => Ok(true),
            Err(MigError::NoInstance { .. }) => {
                ledger::forget(self.host, gpu, gi)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Hands an instance vgpuctl made to the admin (`vgpu remove --keep-gi`):
    /// off the ledger, never vgpuctl's to remove again.
    pub fn hand_over(&self, gpu: PciAddress, gi: u32) -> Result<bool, MigError> {
        Ok(ledger::forget(self.host, gpu, gi)?)
    }

    /// Takes an instance that is gone off the ledger.
    pub fn forget(&self, gpu: PciAddress, gi: u32) -> Result<bool, MigError> {
        Ok(ledger::forget(self.host, gpu, gi)?)
    }

    /// Rolls back an instance this command just made (its compute instances
    /// first), off the ledger too; one already gone is fine.
    pub fn roll_back(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        match self.backend.destroy(gpu, gi) {
            Ok(()) | Err(MigError::NoInstance { .. }) => {
                ledger::forget(self.host, gpu, gi)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Instances vgpuctl made that hold no vGPU and run nothing any more (a
    /// crash between making one and placing its vGPU): destroyed; intents
    /// without an id resolved by profile and start. Call under the host lock.
    /// Returns (what, what happened) per ledger entry acted on.
    pub fn sweep(&self) -> Result<Vec<(String, String)>, MigError> {
        let mut out = Vec::new();
        let entries = ledger::load(self.host)?;
        if entries.is_empty() {
            return Ok(out);
        }
        let mut keep = Vec::new();
        for mut m in entries {
            let Ok(instances) = self.backend.instances(m.gpu) else {
                keep.push(m);
                continue;
            };
            if m.gi.is_none() {
                match instances.iter().find(|i| i.profile_id == m.profile_id && i.start == m.start) {
                    Some(i) => m.gi = Some(i.gi),
                    None => {
                        out.push((format!("{} GPU instance of profile {} at slice {}", m.gpu, m.profile_id, m.start), "never made; forgotten".to_string()));
                        continue;
                    }
                }
            }
            let Some(gi) = m.gi else { continue };
            let what = format!("{} GPU instance {gi}", m.gpu);
            if !instances.iter().any(|i| i.gi == gi) {
                out.push((what, "gone already; forgotten".to_string()));
                continue;
            }
            match self.check_destroy(m.gpu, gi, DestroyOptions { with_compute_instances: true }) {
                Ok(_) => match self.backend.destroy(m.gpu, gi) {
                    Ok(()) => out.push((what, "held no vGPU; destroyed".to_string())),
                    Err(e) => {
                        out.push((what, format!("could not destroy: {e}")));
                        keep.push(m);
                    }
                },
                // In use: a vGPU or process is on it, so it stays vgpuctl's.
                Err(_) => keep.push(m),
            }
        }
        ledger::save(self.host, &keep)?;
        Ok(out)
    }
}
