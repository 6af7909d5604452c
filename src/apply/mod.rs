//! Declarative host config: `plan` what would change, in the safe order;
//! `apply` it; `apply --check` for monitoring and Ansible check mode;
//! `export` the current host as a config.
//!
//! Order (re-running sriov-manage destroys GPU instances; mdevs need their
//! VFs): driver binding → SR-IOV VFs → MIG mode → GPU instances →
//! mixed-size mode → vGPUs and mdevs. Every step is idempotent and read back
//! from the host on the next run, so an apply interrupted anywhere converges
//! when run again. Devices the config does not ask for are reported, never
//! removed: they may be in use by VMs.

pub mod config;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::host::Host;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid, PciAddress};
use crate::inventory::{Inventory, ScanOptions};
use crate::parse::MigModeState;
use crate::vgpu::typename::{VgpuKind, VgpuTypeName};
use crate::vgpu::view::{self, GpuView, HostFacts};
pub use config::{HostConfig, Mode};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    BindVfio {
        gpu: PciAddress,
    },
    EnableVfs {
        gpu: PciAddress,
    },
    SetMig {
        gpu: PciAddress,
        on: bool,
    },
    /// An idle GPU instance vgpuctl made that the declared layout no longer has.
    DestroyGi {
        gpu: PciAddress,
        gi: u32,
        profile: String,
        start: u8,
    },
    /// Idle GPU instances moved within the GPU so the declared layout fits
    /// beside the busy ones (journaled, as `mig defrag` moves them).
    MoveGis {
        gpu: PciAddress,
        moves: Vec<GiMove>,
    },
    CreateGi {
        gpu: PciAddress,
        profile: String,
        placement: Option<u8>,
    },
    SetHeterogeneous {
        gpu: PciAddress,
        on: bool,
    },
    /// `count` more, for `target` in all (counted again when the step runs).
    CreateVgpus {
        gpu: PciAddress,
        #[serde(rename = "type")]
        type_name: String,
        count: u32,
        target: u32,
    },
    CreateMdev {
        uuid: MdevUuid,
        parent: MdevParent,
        #[serde(rename = "type")]
        mdev_type: MdevTypeId,
    },
    DefineMdev {
        uuid: MdevUuid,
        parent: MdevParent,
        #[serde(rename = "type")]
        mdev_type: MdevTypeId,
    },
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GiMove {
    pub gi: u32,
    pub profile: String,
    pub from: u8,
    pub to: u8,
}

/// What `plan` does with one GPU's instances for its declared layout.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LayoutPlan {
    pub gpu: PciAddress,
    /// Instances that stay where they are (`3g.40gb at 4 (GPU instance 2)`).
    pub stay: Vec<String>,
    /// Idle instances moved to another start.
    #[serde(rename = "move")]
    pub moves: Vec<String>,
    /// Instances made.
    pub make: Vec<String>,
    /// Idle instances vgpuctl made that the layout no longer has.
    pub destroy: Vec<String>,
    /// Busy or foreign instances the layout does not name: kept, with why.
    pub kept: Vec<String>,
    /// Those of `kept` that are not a vGPU's own instance (the vGPU, which
    /// `vgpus` counts, owns that one): reported as left alone.
    #[serde(skip)]
    pub left_alone: Vec<String>,
}

impl Step {
    pub fn describe(&self) -> String {
        match self {
            Step::BindVfio { gpu } => format!("bind {gpu} (and its card's functions) to vfio-pci"),
            Step::EnableVfs { gpu } => format!("enable SR-IOV VFs on {gpu}"),
            Step::SetMig { gpu, on } => format!("turn MIG mode {} on {gpu}", if *on { "on" } else { "off" }),
            Step::DestroyGi { gpu, gi, profile, start } => format!("destroy idle GPU instance {gi} ({profile} at slice {start}) on {gpu}: not in the layout"),
            Step::MoveGis { gpu, moves } => format!(
                "move idle GPU instance(s) on {gpu}: {}",
                moves.iter().map(|m| format!("{} ({}) slice {} → {}", m.gi, m.profile, m.from, m.to)).collect::<Vec<_>>().join(", ")
            ),
            Step::CreateGi { gpu, profile, placement } => {
                format!("create a {profile} GPU instance on {gpu}{}", placement.map(|p| format!(" at slice {p}")).unwrap_or_default())
            }
            Step::SetHeterogeneous { gpu, on } => format!("turn mixed-size vGPU mode {} on {gpu}", if *on { "on" } else { "off" }),
            Step::CreateVgpus { gpu, type_name, count, .. } => format!("create {count}× {type_name} on {gpu}"),
            Step::CreateMdev { uuid, parent, mdev_type } => format!("create mdev {uuid} ({mdev_type} on {parent})"),
            Step::DefineMdev { uuid, parent, mdev_type } => format!("define mdev {uuid} ({mdev_type} on {parent}, auto-start)"),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Plan {
    pub schema_version: u32,
    pub steps: Vec<Step>,
    /// Devices on the host the config does not ask for: left alone.
    pub untouched: Vec<String>,
    /// Per GPU in mode = "mig": which instances stay, move, are made or destroyed.
    pub layouts: Vec<LayoutPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the config cannot be applied:\n  {}", .0.join("\n  "))]
    Rejected(Vec<String>),
    #[error("step {n} ({what}) failed")]
    Step {
        n: usize,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

/// The NVIDIA GPUs as a `select` sees them (also for the fleet exports).
pub fn selectable_gpus(inv: &Inventory) -> Vec<config::Selectable> {
    inv.gpus
        .iter()
        .filter(|g| g.is_nvidia())
        .map(|g| config::Selectable {
            address: g.address,
            name: g.name.clone(),
            uuid: g.uuid.clone(),
            vgpu_model: crate::parse::hex_id(&g.device_id).and_then(crate::inventory::vgpu_model).map(str::to_string),
        })
        .collect()
}

/// Checks the whole config against the host and lists what would change.
/// Every problem is collected before anything is changed.
pub fn plan(host: &Host, cfg: &HostConfig) -> Result<Plan, ApplyError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let views: Vec<GpuView> = view::build(&inv, &HostFacts { host });
    let gpus = selectable_gpus(&inv);
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let mut seen: BTreeMap<PciAddress, usize> = BTreeMap::new();
    let gis = crate::mig::instances::Instances::open(host).ok();
    // One judgement of idleness for every GPU the config names (the host-wide facts read once).
    let judge = gis.as_ref().map(|m| m.judge(false));
    let mut layouts = Vec::new();
    for (i, spec) in cfg.gpu.iter().enumerate() {
        let at = format!("[[gpu]] #{} ({})", i + 1, spec.select);
        let targets = match config::select(&spec.select, &gpus) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        for gpu in targets {
            if let Some(prev) = seen.insert(gpu, i + 1) {
                problems.push(format!("{at}: {gpu} is already selected by [[gpu]] #{prev}; each GPU may be selected once"));
                continue;
            }
            let g = inv.gpu(gpu).expect("selected from the inventory");
            let v = views.iter().find(|v| v.gpu == gpu);
            match spec.mode {
                Mode::Unmanaged => {}
                Mode::Passthrough => {
                    if g.boot_vga == Some(true) {
                        problems.push(format!("{at}: {gpu} is the host's boot display and cannot be passed through"));
                        continue;
                    }
                    // The group is judged now, as `passthrough prepare` would
                    // judge it: a config whose GPU shares its group with the
                    // host's devices is refused here, not half-way through apply.
                    match crate::vfio::passthrough::check(host, gpu) {
                        // The refusal `passthrough prepare` gives, word for word.
                        Ok(r) if !r.viable => problems.push(format!(
                            "{at}: {gpu} cannot be passed through: {}",
                            crate::vfio::passthrough::PassthroughError::NotViable { addr: gpu, group: r.group, blockers: r.blockers.join(", ") }
                        )),
                        Ok(_) => {
                            if g.driver.as_deref() != Some("vfio-pci") {
                                steps.push(Step::BindVfio { gpu });
                            }
                        }
                        Err(e) => problems.push(format!("{at}: {gpu} cannot be passed through: {e}")),
                    }
                }
                Mode::Vgpu | Mode::Mig if g.driver.as_deref() == Some("vfio-pci") => problems.push(format!(
                    "{at}: {gpu} is bound to vfio-pci (whole-GPU passthrough), so it cannot hold vGPUs or MIG instances; give it back to the nvidia driver first (vgpuctl passthrough release {gpu}), or select mode = \"passthrough\""
                )),
                Mode::Vgpu | Mode::Mig => {
                    if let Some(l) = plan_vgpu(spec, &at, gpu, g, v, gis.as_ref().zip(judge.as_ref()), &mut steps, &mut problems) {
                        layouts.push(l);
                    }
                }
            }
        }
    }
    // Fixed-UUID mdevs.
    let mut uuids: BTreeMap<MdevUuid, usize> = BTreeMap::new();
    let (defs, _) = crate::mdev::definitions::load_all(host).map_err(|e| ApplyError::Rejected(vec![crate::error_chain(&e)]))?;
    for (i, m) in cfg.mdev.iter().enumerate() {
        let at = format!("[[mdev]] #{} ({})", i + 1, m.uuid);
        if let Some(prev) = uuids.insert(m.uuid, i + 1) {
            problems.push(format!("{at}: UUID {} is used by [[mdev]] #{prev} too", m.uuid));
            continue;
        }
        match inv.mdevs.iter().find(|d| d.uuid == m.uuid) {
            Some(d) if d.parent.as_ref() == Some(&m.parent) && d.type_id.as_ref() == Some(&m.mdev_type) => {}
            Some(d) => problems.push(format!("{at}: UUID {} exists as {:?} on {:?}; remove it or change the config", m.uuid, d.type_id, d.parent)),
            None => {
                if inv.parent(&m.parent).is_some_and(|p| p.find_type(m.mdev_type.as_str()).is_none()) {
                    problems.push(format!("{at}: parent {} has no type {}", m.parent, m.mdev_type));
                    continue;
                }
                steps.push(Step::CreateMdev { uuid: m.uuid, parent: m.parent.clone(), mdev_type: m.mdev_type.clone() });
            }
        }
        if !defs.iter().any(|d| d.uuid == m.uuid && d.parent == m.parent && d.mdev_type == m.mdev_type) {
            steps.push(Step::DefineMdev { uuid: m.uuid, parent: m.parent.clone(), mdev_type: m.mdev_type.clone() });
        }
    }
    if !problems.is_empty() {
        return Err(ApplyError::Rejected(problems));
    }
    // Safe order, whatever order the config lists things in.
    steps.sort_by_key(|s| match s {
        Step::BindVfio { .. } => 0,
        Step::EnableVfs { .. } => 1,
        Step::SetMig { .. } => 2,
        // Room first: what goes, then what moves, then what is made.
        Step::DestroyGi { .. } => 3,
        Step::MoveGis { .. } => 4,
        Step::CreateGi { .. } => 5,
        Step::SetHeterogeneous { .. } => 6,
        // Fixed-UUID mdevs first: legacy vGPUs among them count towards `vgpus`.
        Step::CreateMdev { .. } => 7,
        Step::DefineMdev { .. } => 8,
        Step::CreateVgpus { .. } => 9,
    });
    let planned: Vec<(PciAddress, String)> = steps
        .iter()
        .filter_map(|st| match st {
            Step::CreateMdev { parent, mdev_type, .. } => {
                let name = inv.parent(parent)?.types.iter().find(|t| t.id == *mdev_type)?.name.clone()?;
                let pf = parent.pci_address().map(|a| {
                    inv.gpus.iter().find(|g| g.address == a || g.sriov.as_ref().is_some_and(|s| s.vfs.iter().any(|v| v.address == a))).map(|g| g.address)
                })??;
                Some((pf, name))
            }
            _ => None,
        })
        .collect();
    for st in steps.iter_mut() {
        if let Step::CreateVgpus { gpu, type_name, count, .. } = st {
            let made = planned.iter().filter(|(g, n)| g == gpu && type_name.parse::<VgpuTypeName>().is_ok_and(|t| t.matches(n))).count() as u32;
            *count = count.saturating_sub(made);
        }
    }
    steps.retain(|st| !matches!(st, Step::CreateVgpus { count: 0, .. }));
    let wanted: Vec<MdevUuid> = cfg.mdev.iter().map(|m| m.uuid).collect();
    let mut untouched: Vec<String> = inv
        .mdevs
        .iter()
        .filter(|d| !wanted.contains(&d.uuid) && d.parent.as_ref().is_some_and(|p| p.pci_address().is_none()))
        .map(|d| format!("mdev {} ({:?})", d.uuid, d.type_id.as_ref().map(|t| t.to_string())))
        .collect();
    untouched.extend(layouts.iter().flat_map(|l| l.left_alone.iter().cloned()));
    Ok(Plan { schema_version: crate::inventory::SCHEMA_VERSION, steps, untouched, layouts })
}

#[allow(clippy::too_many_arguments)]
fn plan_vgpu(
    spec: &config::GpuSpec,
    at: &str,
    gpu: PciAddress,
    g: &crate::inventory::Gpu,
    v: Option<&GpuView>,
    gis: Option<(&crate::mig::instances::Instances, &crate::mig::instances::IdleJudge)>,
    steps: &mut Vec<Step>,
    problems: &mut Vec<String>,
) -> Option<LayoutPlan> {
    let want_mig = spec.mode == Mode::Mig;
    let mut types = Vec::new();
    for c in &spec.vgpus {
        match c.type_name.parse::<VgpuTypeName>() {
            Ok(t) => {
                if let Err(e) = crate::vgpu::exists::check(v.map(std::slice::from_ref).unwrap_or_default(), &t) {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
                if want_mig != (t.kind() == VgpuKind::MigBacked) {
                    problems.push(format!(
                        "{at}: {} is {} but the GPU's mode is {}; time-sliced and MIG-backed vGPUs never share a GPU",
                        t,
                        if t.kind() == VgpuKind::MigBacked { "MIG-backed" } else { "time-sliced" },
                        if want_mig { "mig" } else { "vgpu" }
                    ));
                }
                if let Some(model) = v.and_then(|v| v.model.as_deref()).or_else(|| crate::parse::hex_id(&g.device_id).and_then(crate::inventory::vgpu_model)) {
                    if model != t.model {
                        problems.push(format!("{at}: {t} is for {} GPUs, {gpu} takes {model} types", t.model));
                    }
                }
                types.push((t, c.count));
            }
            Err(e) => problems.push(format!("{at}: {e}")),
        }
    }
    // Equal-size rule unless mixed-size mode is asked for.
    let sizes: std::collections::BTreeSet<u32> = types.iter().filter(|(t, _)| t.kind() == VgpuKind::TimeSliced).map(|(t, _)| t.framebuffer_gb).collect();
    if sizes.len() > 1 && spec.heterogeneous != Some(true) {
        problems
            .push(format!("{at}: time-sliced sizes {:?} GB differ; equal-size mode allows one size per GPU: use one size or set heterogeneous = true", sizes));
    }
    for (t, n) in &types {
        if let Some(k) = crate::vgpu::known::lookup(t) {
            let max = if spec.heterogeneous == Some(true) { k.max_mixed.unwrap_or(k.max_instances) } else { k.max_instances };
            if *n > max {
                problems.push(format!("{at}: {n}× {t} exceeds the {max} NVIDIA allows per GPU"));
            }
        }
    }
    let needs_vfs = g.sriov.as_ref().is_some_and(|s| s.total_vfs > 0 && s.num_vfs == 0);
    if needs_vfs {
        steps.push(Step::EnableVfs { gpu });
    }
    let current_mig = g.mig.map(|m| m.current);
    // Switching a GPU between time-sliced and MIG would pull vGPUs out from
    // under their VMs: apply never removes devices, so the admin must.
    if let Some(v) = v {
        let wrong: Vec<String> = v
            .vgpus
            .iter()
            .filter(|x| x.kind.is_some_and(|k| (k == VgpuKind::MigBacked) != want_mig))
            .map(|x| {
                format!("{} ({})", x.type_name.as_deref().unwrap_or("?"), x.vf.map(|f| f.to_string()).or(x.uuid.map(|u| u.to_string())).unwrap_or_default())
            })
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "{at}: {gpu} holds {} vGPU(s) of the other kind ({}); apply leaves existing devices alone: remove them (vgpuctl vgpu remove …) before changing the GPU's mode",
                wrong.len(),
                wrong.join(", ")
            ));
            return None;
        }
    }
    if want_mig {
        if current_mig.is_none() || current_mig == Some(MigModeState::NotSupported) {
            problems.push(format!("{at}: {gpu} does not support MIG (or no NVIDIA driver reports it)"));
            return None;
        }
        if current_mig != Some(MigModeState::Enabled) {
            steps.push(Step::SetMig { gpu, on: true });
        }
        // The layout must fit the GPU's own profile table; without it apply
        // stops here rather than plan with another model's slices.
        let table = match gis.map(|(m, _)| m.backend().profiles(gpu)) {
            Some(Ok(t)) if !t.is_empty() => t,
            Some(Err(e)) => {
                problems.push(format!("{at}: cannot read the MIG profile table of {gpu} ({e}); apply does not plan a layout with another GPU's"));
                return None;
            }
            Some(Ok(_)) => {
                problems.push(format!("{at}: the NVIDIA driver reports no MIG profiles for {gpu}; apply does not plan a layout with another GPU's"));
                return None;
            }
            _ => {
                problems.push(format!(
                    "{at}: no MIG profile table for {gpu} (no NVIDIA driver answers for MIG here); apply does not plan a layout with another GPU's"
                ));
                return None;
            }
        };
        let mut want: Vec<(&crate::mig::profiles::Profile, Option<u8>)> = Vec::new();
        for gi in &spec.layout {
            match crate::mig::profiles::find(&table, &gi.profile) {
                Some(p) => want.push((p, gi.placement)),
                None => problems.push(format!(
                    "{at}: unknown MIG profile {:?} (profiles: {})",
                    gi.profile,
                    table.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        // The instances there now, each idle (may move or go) or not, and why.
        // (Without a driver to answer, the profile table above already stopped the plan.)
        let existing: Vec<(crate::mig::backend::GpuInstance, Option<crate::mig::instances::Pin>)> = match gis {
            Some((_, judge)) if current_mig == Some(MigModeState::Enabled) => match judge.gpu(gpu) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{at}: cannot read the GPU instances of {gpu} ({e})"));
                    return None;
                }
            },
            _ => Vec::new(),
        };
        match plan_layout(at, gpu, &table, &want, &existing, steps) {
            Ok(l) => {
                for (t, n) in &types {
                    let have = v.map(|v| v.count_of(t)).unwrap_or(0);
                    if have < *n {
                        steps.push(Step::CreateVgpus { gpu, type_name: t.to_string(), count: n - have, target: *n });
                    }
                }
                return Some(l);
            }
            Err(p) => {
                problems.push(p);
                return None;
            }
        }
    }
    if current_mig == Some(MigModeState::Enabled) {
        steps.push(Step::SetMig { gpu, on: false });
    }
    if let Some(want) = spec.heterogeneous {
        // With VFs not enabled yet the driver does not report the mode; it
        // is off after every boot on GPUs that have it.
        let model = v.and_then(|v| v.model.clone()).or_else(|| crate::parse::hex_id(&g.device_id).and_then(crate::inventory::vgpu_model).map(str::to_string));
        let current =
            v.and_then(|v| v.heterogeneous).or_else(|| (needs_vfs && model.as_deref().is_some_and(crate::vgpu::known::supports_mixed_size)).then_some(false));
        match current {
            Some(c) if c != want => steps.push(Step::SetHeterogeneous { gpu, on: want }),
            None if want => problems.push(format!("{at}: {gpu} has no mixed-size (heterogeneous) vGPU mode")),
            _ => {}
        }
    }
    for (t, n) in &types {
        let have = v.map(|v| v.count_of(t)).unwrap_or(0);
        if have < *n {
            steps.push(Step::CreateVgpus { gpu, type_name: t.to_string(), count: n - have, target: *n });
        }
    }
    None
}

/// One GPU's declared layout against its instances: an instance at a
/// declared start, or of a declared profile, satisfies that entry (a busy
/// one first: it cannot move anyway); busy and foreign instances never
/// move; idle ones vgpuctl made move when that lets the layout fit, and go
/// when the layout no longer has them; the rest is made. The fewest moves
/// win (then the most room left). Every step it needs is added to `steps`.
fn plan_layout(
    at: &str,
    gpu: PciAddress,
    table: &[crate::mig::profiles::Profile],
    want: &[(&crate::mig::profiles::Profile, Option<u8>)],
    existing: &[(crate::mig::backend::GpuInstance, Option<crate::mig::instances::Pin>)],
    steps: &mut Vec<Step>,
) -> Result<LayoutPlan, String> {
    use crate::mig::reshape::{self, Item};
    let name = |id: u32| table.iter().find(|p| p.id == id).map(|p| p.name.to_string()).unwrap_or_else(|| id.to_string());
    let mut matched = vec![false; existing.len()];
    let mut stay_put: Vec<usize> = Vec::new();
    let mut may_move: Vec<usize> = Vec::new();
    let mut add: Vec<(u32, Option<u8>)> = Vec::new();
    for (p, s) in want.iter().filter(|(_, s)| s.is_some()) {
        match (0..existing.len()).find(|i| !matched[*i] && existing[*i].0.profile_id == p.id && Some(existing[*i].0.start) == *s) {
            Some(i) => {
                matched[i] = true;
                stay_put.push(i);
            }
            None => add.push((p.id, *s)),
        }
    }
    for (p, _) in want.iter().filter(|(_, s)| s.is_none()) {
        match (0..existing.len()).filter(|i| !matched[*i] && existing[*i].0.profile_id == p.id).min_by_key(|i| existing[*i].1.is_none()) {
            Some(i) => {
                matched[i] = true;
                if existing[i].1.is_some() {
                    stay_put.push(i);
                } else {
                    may_move.push(i);
                }
            }
            None => add.push((p.id, None)),
        }
    }
    let mut plan = LayoutPlan { gpu, stay: Vec::new(), moves: Vec::new(), make: Vec::new(), destroy: Vec::new(), kept: Vec::new(), left_alone: Vec::new() };
    let describe = |e: &crate::mig::backend::GpuInstance| format!("{} at {} (GPU instance {})", e.profile, e.start, e.gi);
    let mut items: Vec<Item> = Vec::new();
    let mut index: Vec<usize> = Vec::new();
    for (i, (e, why)) in existing.iter().enumerate() {
        if matched[i] {
            continue;
        }
        match why {
            Some(w) => {
                items.push(Item { profile_id: e.profile_id, start: e.start, movable: false });
                index.push(i);
                let line = format!("{} ({} at slice {}): {w}", e.gi, e.profile, e.start);
                if !matches!(w, crate::mig::instances::Pin::Vgpu { .. }) {
                    plan.left_alone.push(format!("{gpu} GPU instance {line}"));
                }
                plan.kept.push(line);
            }
            None => {
                steps.push(Step::DestroyGi { gpu, gi: e.gi, profile: e.profile.clone(), start: e.start });
                plan.destroy.push(describe(e));
            }
        }
    }
    for &i in &stay_put {
        items.push(Item { profile_id: existing[i].0.profile_id, start: existing[i].0.start, movable: false });
        index.push(i);
    }
    for &i in &may_move {
        items.push(Item { profile_id: existing[i].0.profile_id, start: existing[i].0.start, movable: true });
        index.push(i);
    }
    let room = crate::mig::planner::Planner::new(table, &crate::mig::planner::Mix::uniform(table));
    let rank = |a: &reshape::Arrangement| [-(a.moves.len() as f64), room.capacity(&a.layout), 0.0];
    let Some(a) = reshape::best(table, &items, &add, &rank) else {
        // Name what does not fit: the smallest new instances dropped until the rest does.
        let mut rest = add.clone();
        let mut dropped = Vec::new();
        rest.sort_by_key(|(id, s)| (s.is_some(), std::cmp::Reverse(table.iter().find(|p| p.id == *id).map(|p| p.size).unwrap_or(0))));
        while !rest.is_empty() && reshape::best(table, &items, &rest, &rank).is_none() {
            if let Some((id, _)) = rest.pop() {
                dropped.push(name(id));
            }
        }
        let pinned: Vec<String> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| !it.movable)
            .map(|(k, _)| &existing[index[k]])
            .map(|(e, w)| match w {
                Some(w) => format!("{}: {w}", describe(e)),
                None => describe(e),
            })
            .collect();
        return Err(format!(
            "{at}: {} does not fit beside the instances that stay on {gpu} ({}); a GPU has 8 slices: e.g. 4g.40gb+3g.40gb, 3g.40gb+2×2g.20gb, or 7×1g.10gb fit",
            if dropped.is_empty() { "the layout".to_string() } else { dropped.join(" + ") },
            if pinned.is_empty() { "none".to_string() } else { pinned.join("; ") }
        ));
    };
    let moved: Vec<usize> = a.moves.iter().map(|m| index[m.index]).collect();
    for &i in &index {
        if matched[i] && !moved.contains(&i) {
            plan.stay.push(describe(&existing[i].0));
        }
    }
    if !a.moves.is_empty() {
        let moves: Vec<GiMove> = a
            .moves
            .iter()
            .map(|m| {
                let e = &existing[index[m.index]].0;
                plan.moves.push(format!("{} (GPU instance {}) from {} to {}", e.profile, e.gi, m.from, m.to));
                GiMove { gi: e.gi, profile: e.profile.clone(), from: m.from, to: m.to }
            })
            .collect();
        steps.push(Step::MoveGis { gpu, moves });
    }
    for (id, start) in &a.added {
        plan.make.push(format!("{} at {start}", name(*id)));
        steps.push(Step::CreateGi { gpu, profile: name(*id), placement: Some(*start) });
    }
    Ok(plan)
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Applied {
    pub schema_version: u32,
    pub changed: bool,
    pub steps: Vec<Step>,
    pub untouched: Vec<String>,
}

/// Carries out the plan, step by step, each under the host-wide lock.
pub fn apply(host: &Host, cfg: &HostConfig, progress: &mut dyn FnMut(usize, usize, &Step)) -> Result<Applied, ApplyError> {
    let p = plan(host, cfg)?;
    let lock = Duration::from_secs(120);
    let total = p.steps.len();
    for (i, s) in p.steps.iter().enumerate() {
        progress(i + 1, total, s);
        let err = |e: Box<dyn std::error::Error + Send + Sync>| ApplyError::Step { n: i + 1, what: s.describe(), source: e };
        match s {
            Step::BindVfio { gpu } => {
                crate::vfio::passthrough::prepare(host, *gpu, false, lock).map_err(|e| err(Box::new(e)))?;
            }
            Step::EnableVfs { gpu } => {
                crate::sriov::set(host, Some(&[*gpu]), None, Duration::from_secs(120), lock).map_err(|e| err(Box::new(e)))?;
            }
            Step::SetMig { gpu, on } => {
                let _l = crate::lock::HostLock::acquire(host, lock).map_err(|e| err(Box::new(e)))?;
                let b = crate::mig::backend::backend(host).map_err(|e| err(Box::new(e)))?;
                let m = b.set_mode(*gpu, *on).map_err(|e| err(Box::new(e)))?;
                if m.current != if *on { MigModeState::Enabled } else { MigModeState::Disabled } {
                    return Err(err(format!("the MIG mode change of {gpu} is pending a GPU reset (nvidia-smi -r); apply again after it").into()));
                }
            }
            Step::DestroyGi { gpu, gi, profile, start } => {
                let _l = crate::lock::HostLock::acquire(host, lock).map_err(|e| err(Box::new(e)))?;
                let m = crate::mig::instances::Instances::open(host).map_err(|e| err(Box::new(e)))?;
                // Idle again now, under the lock: a VM may have started on it since the plan.
                let idle = m.idleness(*gpu, false).map_err(|e| err(Box::new(e)))?;
                match idle.iter().find(|(i, _)| i.gi == *gi && i.start == *start && i.profile == *profile) {
                    None => {}
                    Some((_, Some(why))) => return Err(err(Box::new(crate::mig::backend::MigError::Pinned { gpu: *gpu, gi: *gi, why: why.to_string() }))),
                    Some((_, None)) => m.destroy(*gpu, *gi, crate::mig::instances::DestroyOptions::default()).map_err(|e| err(Box::new(e)))?,
                }
            }
            Step::MoveGis { gpu, moves } => {
                let _l = crate::lock::HostLock::acquire(host, lock).map_err(|e| err(Box::new(e)))?;
                let m = crate::mig::instances::Instances::open(host).map_err(|e| err(Box::new(e)))?;
                // Judged again now, under the lock (the plan came before it), and once.
                let idle = m.idleness(*gpu, false).map_err(|e| err(Box::new(e)))?;
                let mut moving = Vec::new();
                for mv in moves {
                    let (inst, _) = idle
                        .iter()
                        .find(|(i, _)| i.gi == mv.gi && i.start == mv.from && i.profile == mv.profile)
                        .ok_or_else(|| err(Box::new(crate::mig::backend::MigError::NoInstance { gpu: *gpu, gi: mv.gi })))?;
                    moving.push((inst.clone(), mv.to));
                }
                m.relocate_judged(*gpu, &moving, &idle).map_err(|e| err(Box::new(e)))?;
            }
            Step::CreateGi { gpu, profile, placement } => {
                let _l = crate::lock::HostLock::acquire(host, lock).map_err(|e| err(Box::new(e)))?;
                // The declared layout's: the admin's, as if made with `mig create`.
                let m = crate::mig::instances::Instances::open(host).map_err(|e| err(Box::new(e)))?;
                let table = m.backend().profiles(*gpu).map_err(|e| err(Box::new(e)))?;
                let pr = crate::mig::profiles::find(&table, profile).ok_or_else(|| err(format!("unknown profile {profile}").into()))?;
                m.create(*gpu, pr, placement.unwrap_or(0), crate::mig::instances::Owner::Admin).map_err(|e| err(Box::new(e)))?;
            }
            Step::SetHeterogeneous { gpu, on } => {
                crate::vgpu::set_heterogeneous(host, *gpu, *on, lock).map_err(|e| err(Box::new(e)))?;
            }
            Step::CreateVgpus { gpu, type_name, target, .. } => {
                let t: VgpuTypeName = type_name.parse().map_err(|e| err(Box::new(e)))?;
                // Count again: earlier steps (fixed-UUID mdevs) may have made some.
                let (_, views) = crate::vgpu::views(host).map_err(|e| err(Box::new(e)))?;
                let have = views.iter().find(|v| v.gpu == *gpu).map(|v| v.count_of(&t)).unwrap_or(0);
                for _ in have..*target {
                    crate::vgpu::create(
                        host,
                        &crate::vgpu::VgpuCreateRequest { type_name: t.clone(), gpu: Some(*gpu), uuid: None, policy: Default::default() },
                        lock,
                    )
                    .map_err(|e| err(Box::new(e)))?;
                }
            }
            Step::CreateMdev { uuid, parent, mdev_type } => {
                let req =
                    crate::mdev::CreateRequest { parent: parent.clone(), mdev_type: mdev_type.to_string(), uuid: Some(*uuid), persist: None, attrs: vec![] };
                crate::mdev::create(host, &req, lock).map_err(|e| err(Box::new(e)))?;
            }
            Step::DefineMdev { uuid, parent, mdev_type } => {
                let _l = crate::lock::HostLock::acquire(host, lock).map_err(|e| err(Box::new(e)))?;
                let def = crate::mdev::Definition {
                    uuid: *uuid,
                    parent: parent.clone(),
                    mdev_type: mdev_type.clone(),
                    start: crate::mdev::StartPolicy::Auto,
                    attrs: vec![],
                };
                crate::mdev::definitions::save(host, &def).map_err(|e| err(Box::new(e)))?;
            }
        }
    }
    Ok(Applied { schema_version: crate::inventory::SCHEMA_VERSION, changed: total > 0, steps: p.steps, untouched: p.untouched })
}

/// The current host as a config: what `apply` would keep as it is.
pub fn export(host: &Host) -> Result<HostConfig, ApplyError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let views = view::build(&inv, &HostFacts { host });
    let mig = crate::mig::backend::backend(host).ok();
    let mut cfg = HostConfig::default();
    for g in inv.gpus.iter().filter(|g| g.is_nvidia()) {
        let v = views.iter().find(|v| v.gpu == g.address);
        let mut spec = config::GpuSpec { select: g.address.to_string(), mode: Mode::Unmanaged, heterogeneous: None, vgpus: vec![], layout: vec![] };
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for x in v.map(|v| v.vgpus.as_slice()).unwrap_or_default() {
            if let Some(t) = &x.type_name {
                *counts.entry(t.clone()).or_default() += 1;
            }
        }
        spec.vgpus = counts.into_iter().map(|(type_name, count)| config::VgpuCount { type_name, count }).collect();
        if g.driver.as_deref() == Some("vfio-pci") {
            spec.mode = Mode::Passthrough;
        } else if g.mig.is_some_and(|m| m.current == MigModeState::Enabled) {
            spec.mode = Mode::Mig;
            if let Some(b) = &mig {
                spec.layout =
                    b.instances(g.address).unwrap_or_default().into_iter().map(|i| config::GiSpec { profile: i.profile, placement: Some(i.start) }).collect();
            }
        } else if !spec.vgpus.is_empty() {
            spec.mode = Mode::Vgpu;
            spec.heterogeneous = v.and_then(|v| v.heterogeneous).filter(|h| *h);
        }
        cfg.gpu.push(spec);
    }
    for d in &inv.mdevs {
        if let (Some(parent), Some(mdev_type)) = (&d.parent, &d.type_id) {
            if parent.pci_address().is_none() {
                cfg.mdev.push(config::MdevSpec { uuid: d.uuid, parent: parent.clone(), mdev_type: mdev_type.clone() });
            }
        }
    }
    Ok(cfg)
}
