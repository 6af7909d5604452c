//! The MIG instance manager: the one place that creates and destroys GPU
//! instances and keeps the ledger of those vgpuctl made. The CLI, vGPU
//! create/remove, the hook, `gc` and `apply` all go through it, so one set
//! of checks guards every destroy, and every instance vgpuctl makes for its
//! own use is on the ledger before the driver is asked (a crash at any point
//! leaves an entry `gc` can resolve).

use super::backend::{ledger, vgpu_holders, GpuInstance, MigBackend, MigError};
use super::moves;
use super::profiles::Profile;
use crate::host::Host;
use crate::ids::PciAddress;
use crate::parse::MigModeState;

/// Whose a new GPU instance is. Both are on the ledger (vgpuctl made them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// vgpuctl's, for a MIG-backed vGPU: removed with the vGPU and swept by `gc`.
    #[default]
    Vgpuctl,
    /// The admin's (`mig create`, a layout `apply` declares, `--keep-gi`):
    /// never removed by vgpuctl on its own; moved while idle by `mig defrag`.
    Admin,
}

/// Why a destroy may go on although something is on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestroyOptions {
    /// Destroy its compute instances with it (`mig destroy --force`).
    pub with_compute_instances: bool,
}

/// Why a GPU instance may not move ([`Instances::idleness`]); the text is
/// what `mig defrag`, `plan` and the errors say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A vGPU sits on it: part of that vGPU.
    Vgpu {
        vf: PciAddress,
    },
    /// A VF of it is held through VFIO (by the process named, when known).
    Vfio {
        vf: PciAddress,
        by: Option<String>,
    },
    /// /proc could not be read for a VF of it.
    VfioUnknown {
        vf: PciAddress,
    },
    /// Compute processes run on it (as the driver names them).
    Processes(String),
    ComputeInstances,
    /// A hook journal names it: a VM is starting or running on it.
    Hook {
        domain: String,
    },
    /// The ledger or a hook journal cannot be read: nothing it could vouch for moves.
    Unreadable(String),
    /// Not on the ledger: another tool made it.
    Foreign,
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::Vgpu { vf } => write!(f, "a vGPU on VF {vf} uses it"),
            Pin::Vfio { vf, by } => write!(f, "VF {vf} is held through VFIO{}", by.as_ref().map(|u| format!(" by {u}")).unwrap_or_default()),
            Pin::VfioUnknown { vf } => write!(f, "whether VF {vf} is held through VFIO is unknown (/proc could not be read)"),
            Pin::Processes(p) => write!(f, "processes run on it: {p}"),
            Pin::ComputeInstances => f.write_str("it has compute instances (host workloads address them by MIG UUID, which a move changes)"),
            Pin::Hook { domain } => write!(f, "the hook made it for VM {domain}"),
            Pin::Unreadable(why) => f.write_str(why),
            Pin::Foreign => f.write_str("vgpuctl did not make it (--include-foreign moves it anyway)"),
        }
    }
}

/// What judging an instance idle reads host-wide ([`Instances::judge`]).
struct IdleFacts {
    made: Result<Vec<ledger::Made>, ledger::LedgerError>,
    journals: Result<Vec<crate::hook::journal::LoadedJournal>, String>,
    users: crate::inventory::VfioUsers,
}

/// [`Instances::idleness`] for many GPUs under one hold of the host lock.
/// A move on one GPU changes only that GPU's ledger entries, so what was
/// read before it still judges the others; a GPU judged again after its
/// own moves needs a new judge.
pub struct IdleJudge<'m, 'a> {
    m: &'m Instances<'a>,
    include_foreign: bool,
    facts: std::cell::OnceCell<IdleFacts>,
}

impl IdleJudge<'_, '_> {
    /// Every GPU instance of `gpu`, with why it may not move (`None`: idle).
    pub fn gpu(&self, gpu: PciAddress) -> Result<Vec<(GpuInstance, Option<Pin>)>, MigError> {
        let instances = self.m.backend.instances(gpu)?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let facts = self.facts.get_or_init(|| self.m.idle_facts());
        let vfs = super::backend::vf_instances(self.m.host, gpu);
        Ok(instances
            .into_iter()
            .map(|inst| {
                let pinned = self.m.pinned_by(gpu, &inst, facts, &vfs, self.include_foreign);
                (inst, pinned)
            })
            .collect())
    }
}

/// Where a new GPU instance goes, and what was moved to make room for it.
#[derive(Debug, Clone)]
pub struct Placement {
    pub gpu: PciAddress,
    pub start: u8,
    /// Idle instances moved (on `gpu`) by the opt-in repack.
    pub moved: Vec<moves::Moved>,
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

    pub fn host(&self) -> &'a Host {
        self.host
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

    /// [`Instances::place`], and when nothing fits and the policy allows it
    /// (`repack_moves`), an on-demand repack: the GPU where the fewest
    /// moves of idle instances (within that GPU, at most `repack_moves`)
    /// make room, with the moves carried out (journaled, as `mig defrag`
    /// makes them). The moves are not undone if what the room was made for
    /// fails afterwards: every instance is still there. Call under the host lock.
    pub fn place_or_repack(&self, gpus: &[PciAddress], table: &[Profile], p: &Profile) -> Result<Placement, MigError> {
        let refused = match self.place(gpus, table, p) {
            Ok((gpu, start)) => return Ok(Placement { gpu, start, moved: Vec::new() }),
            Err(e @ MigError::NoRoom { .. }) => e,
            Err(e) => return Err(e),
        };
        let policy = super::policy::load(self.host)?;
        if policy.repack_moves == 0 {
            return Err(refused);
        }
        let planner = policy.planner(table)?;
        let judge = self.judge(false);
        let idle = gpus.iter().map(|g| judge.gpu(*g)).collect::<Result<Vec<_>, _>>()?;
        let items: Vec<Vec<super::reshape::Item>> = idle
            .iter()
            .map(|v| v.iter().map(|(i, why)| super::reshape::Item { profile_id: i.profile_id, start: i.start, movable: why.is_none() }).collect())
            .collect();
        let Some((g, a)) = super::reshape::repack(table, &items, p.id, policy.repack_moves as usize, &|l| planner.capacity(l)) else {
            return Err(refused);
        };
        let Some(start) = a.added.first().map(|(_, s)| *s) else { return Err(refused) };
        let moving: Vec<(GpuInstance, u8)> = a.moves.iter().map(|m| (idle[g][m.index].0.clone(), m.to)).collect();
        let moved = self.relocate_judged(gpus[g], &moving, &idle[g])?;
        for m in &moved {
            tracing::info!(gpu = %gpus[g], "moved idle GPU instance {} ({}) from slice {} to {} to make room for a {}", m.gi_before, m.profile, m.from, m.to, p.name);
        }
        Ok(Placement { gpu: gpus[g], start, moved })
    }

    /// Creates a GPU instance of `p` at `start` on `gpu`. The intent is
    /// recorded first and the id after; an instance whose id cannot be
    /// recorded is destroyed again rather than kept unrecorded.
    pub fn create(&self, gpu: PciAddress, p: &Profile, start: u8, owner: Owner) -> Result<u32, MigError> {
        ledger::intend(self.host, gpu, p.id, start, owner)?;
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
        tracing::info!(%gpu, gi, ?owner, "created a {} GPU instance", p.name);
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

    /// Which GPU instances of `gpu` may move (destroyed and made again at
    /// another start of the same GPU) and why each other one may not. Idle
    /// means provably idle: no vGPU on it (a VF's `gpu_instance_id` with a
    /// type), no VF of it held through VFIO, no compute process, no hook
    /// journal naming it (a VM starting or running), no compute instances
    /// (host workloads address those by MIG UUID, which a move changes), and
    /// vgpuctl made it (on the ledger) unless `include_foreign`. When
    /// something cannot be read (the ledger, a journal, /proc), nothing it
    /// could have vouched for moves. Call under the host lock.
    pub fn idleness(&self, gpu: PciAddress, include_foreign: bool) -> Result<Vec<(GpuInstance, Option<Pin>)>, MigError> {
        self.judge(include_foreign).gpu(gpu)
    }

    /// Judges instances idle GPU after GPU with what the host as a whole
    /// says (the ledger, the hook journals, a /proc walk for VFIO users)
    /// read once, when first needed, instead of once per GPU.
    pub fn judge(&self, include_foreign: bool) -> IdleJudge<'_, 'a> {
        IdleJudge { m: self, include_foreign, facts: std::cell::OnceCell::new() }
    }

    fn idle_facts(&self) -> IdleFacts {
        IdleFacts {
            made: ledger::load(self.host),
            journals: if self.host.exists(crate::hook::journal::DIR) {
                crate::hook::journal::all(self.host).map_err(|e| e.to_string())
            } else {
                Ok(Vec::new())
            },
            users: crate::inventory::VfioUsers::scan(self.host),
        }
    }

    fn pinned_by(
        &self,
        gpu: PciAddress,
        inst: &GpuInstance,
        facts: &IdleFacts,
        vfs: &[(PciAddress, u32, bool, Option<u32>)],
        include_foreign: bool,
    ) -> Option<Pin> {
        let IdleFacts { made, journals, users } = facts;
        let gi = inst.gi;
        if let Some((vf, ..)) = vfs.iter().find(|(_, g, typed, _)| *g == gi && *typed) {
            return Some(Pin::Vgpu { vf: *vf });
        }
        for (vf, _, _, group) in vfs.iter().filter(|(_, g, ..)| *g == gi) {
            match group.map(|grp| users.in_use(grp)) {
                Some(Some(false)) | None => {}
                Some(Some(true)) => return Some(Pin::Vfio { vf: *vf, by: group.and_then(|grp| users.user_of(grp)).map(|u| u.to_string()) }),
                Some(None) => return Some(Pin::VfioUnknown { vf: *vf }),
            }
        }
        let procs = self.backend.users(gpu, gi);
        if !procs.is_empty() {
            return Some(Pin::Processes(procs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
        }
        if !inst.compute_instances.is_empty() {
            return Some(Pin::ComputeInstances);
        }
        match journals {
            Err(e) => return Some(Pin::Unreadable(format!("the hook journals cannot be read ({e})"))),
            Ok(all) => {
                for (key, j) in all {
                    match j {
                        Err(e) => return Some(Pin::Unreadable(format!("hook journal {key} cannot be read ({e})"))),
                        Ok(j) if j.entries.iter().any(|e| matches!(e, crate::hook::journal::Entry::MigGi { gpu: g, gi: x, .. } if *g == gpu && *x == gi)) => {
                            return Some(Pin::Hook { domain: j.domain.clone() });
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        match made {
            Err(e) => Some(Pin::Unreadable(e.to_string())),
            Ok(m) if !include_foreign && !m.iter().any(|m| m.gpu == gpu && m.gi == Some(gi)) => Some(Pin::Foreign),
            Ok(_) => None,
        }
    }

    /// Moves idle GPU instances of `gpu` as `moves` say ((instance, new
    /// start)), journaled so a crash at any step leaves what `gc` finishes
    /// (or, when finishing is impossible, reverts): see [`moves`]. Every
    /// instance is checked idle again first. Call under the host lock.
    pub fn relocate(&self, gpu: PciAddress, moving: &[(GpuInstance, u8)], include_foreign: bool) -> Result<Vec<moves::Moved>, MigError> {
        let idle = self.idleness(gpu, include_foreign)?;
        self.relocate_judged(gpu, moving, &idle)
    }

    /// [`Instances::relocate`] for a caller that judged the GPU's
    /// instances ([`Instances::idleness`]) under the same hold of the host
    /// lock it moves them in: not judged twice.
    pub fn relocate_judged(&self, gpu: PciAddress, moving: &[(GpuInstance, u8)], idle: &[(GpuInstance, Option<Pin>)]) -> Result<Vec<moves::Moved>, MigError> {
        for (inst, _) in moving {
            match idle.iter().find(|(i, _)| i.gi == inst.gi && i.start == inst.start && i.profile_id == inst.profile_id) {
                None => return Err(MigError::NoInstance { gpu, gi: inst.gi }),
                Some((_, Some(why))) => return Err(MigError::Pinned { gpu, gi: inst.gi, why: why.to_string() }),
                Some((_, None)) => {}
            }
        }
        let owners = ledger::load(self.host)?;
        let plan: Vec<moves::Planned> = moving
            .iter()
            .map(|(i, to)| moves::Planned {
                profile_id: i.profile_id,
                profile: i.profile.clone(),
                from: i.start,
                to: *to,
                gi: i.gi,
                owner: owners.iter().find(|m| m.gpu == gpu && m.gi == Some(i.gi)).map(|m| m.owner).unwrap_or(Owner::Admin),
            })
            .collect();
        moves::run(self, gpu, plan)
    }

    /// A ledger-and-driver create without the placement checks of callers,
    /// for the move engine.
    pub(crate) fn remake(&self, gpu: PciAddress, profile_id: u32, start: u8, owner: Owner) -> Result<u32, MigError> {
        let table = self.backend.profiles(gpu)?;
        let p = table.iter().find(|p| p.id == profile_id).ok_or_else(|| MigError::unknown_profile(gpu, &profile_id.to_string(), &table))?;
        self.create(gpu, p, start, owner)
    }

    /// Destroys an instance the move engine checked idle (no compute
    /// instances). Off the ledger first: instance ids are reused, so an
    /// entry outliving its instance could later name another one; an
    /// instance a crash leaves unrecorded is named by the move journal.
    pub(crate) fn take_down(&self, gpu: PciAddress, gi: u32) -> Result<(), MigError> {
        ledger::forget(self.host, gpu, gi)?;
        self.backend.destroy(gpu, gi)
    }

    /// Records an instance the move engine found in place as `owner`'s.
    pub(crate) fn adopt(&self, gpu: PciAddress, gi: u32, profile_id: u32, start: u8, owner: Owner) -> Result<(), MigError> {
        Ok(ledger::adopt(self.host, gpu, gi, profile_id, start, owner)?)
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
        Ok(ledger::hand_over(self.host, gpu, gi)?)
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
            // The admin's: never destroyed here, only kept track of.
            if m.owner == Owner::Admin {
                keep.push(m);
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
