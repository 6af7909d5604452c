//! `vgpuctl mig …`

use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;

use super::gpu_ref::{gpu_ref, resolve, GpuRef};
use super::{print_json, print_out, CliError};
use crate::host::Host;
use crate::ids::PciAddress;
use crate::inventory::{Inventory, ScanOptions};
use crate::lock::HostLock;
use crate::mig::backend::{self, layout, GpuInstance, MigError};
use crate::mig::compute::{self, CiRequest};
use crate::mig::instances::{DestroyOptions, Instances, Owner};
use crate::mig::layout::Layout;
use crate::mig::profiles::{self, Profile};
use crate::parse::MigModeState;

#[derive(Debug, Subcommand)]
pub enum MigCommand {
    /// MIG mode, GPU instances and a slice map per GPU.
    Status {
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// The GPU-instance profiles of a GPU, with their placements.
    Profiles {
        /// Only this GPU: PCI address, GPU UUID or index (default: every MIG-capable GPU).
        #[arg(long, value_parser = gpu_ref)]
        gpu: Option<GpuRef>,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Turn MIG mode on.
    Enable {
        /// PCI address, GPU UUID or index.
        #[arg(value_parser = gpu_ref)]
        gpu: GpuRef,
        /// Print the mode change as JSON (docs/schema/mig-mode.json).
        #[arg(long)]
        json: bool,
    },
    /// Turn MIG mode off (GPU instances must be gone).
    Disable {
        /// PCI address, GPU UUID or index.
        #[arg(value_parser = gpu_ref)]
        gpu: GpuRef,
        /// Print the mode change as JSON (docs/schema/mig-mode.json).
        #[arg(long)]
        json: bool,
    },
    /// Create a GPU instance where the planner (or --placement) says.
    Create {
        /// Profile name (3g.40gb, 1g.10gb+me) or id.
        #[arg(long)]
        profile: String,
        /// PCI address, GPU UUID or index; the planner picks one when left out.
        #[arg(long, value_parser = gpu_ref)]
        gpu: Option<GpuRef>,
        /// Start slice, or `auto` (the planner).
        #[arg(long, default_value = "auto")]
        placement: String,
        /// Compute instances to make in it: none (MIG-backed vGPUs make their
        /// own), all (one over the whole instance, like nvidia-smi -C), or
        /// profiles such as 1c.3g.40gb or 3x1c.3g.40gb.
        #[arg(long, default_value = "none")]
        compute_instances: CiRequest,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Destroy a GPU instance. Refused while a vGPU or a process uses it;
    /// --force also destroys its compute instances (refused without).
    Destroy {
        /// PCI address, GPU UUID or index.
        #[arg(long, value_parser = gpu_ref)]
        gpu: GpuRef,
        /// The GPU instance id (as `mig status` shows it).
        gi: u32,
        /// Also destroy the compute instances inside it.
        #[arg(long)]
        force: bool,
        /// Print what was destroyed as JSON (docs/schema/mig-destroy.json).
        #[arg(long)]
        json: bool,
    },
    /// Move idle GPU instances within each GPU so it can take the largest
    /// profile it can (then the most of the planner's mix); busy instances
    /// never move.
    Defrag {
        /// Only this GPU: PCI address, GPU UUID or index (default: every GPU in MIG mode).
        #[arg(long, value_parser = gpu_ref)]
        gpu: Option<GpuRef>,
        /// Show the moves without making them.
        #[arg(long)]
        dry_run: bool,
        /// Also move idle instances vgpuctl did not make (by nvidia-smi or another tool).
        #[arg(long)]
        include_foreign: bool,
        /// Print the result as JSON (docs/schema/mig-defrag.json).
        #[arg(long)]
        json: bool,
    },
    /// Would these instances fit, and where? e.g. --want "3g.40gb,2x2g.20gb,1g.10gb"
    Plan {
        /// The instances wanted: profiles, each optionally with a count, comma-separated ("3g.40gb,2x2g.20gb").
        #[arg(long)]
        want: String,
        /// Only this GPU: PCI address, GPU UUID or index.
        #[arg(long, value_parser = gpu_ref)]
        gpu: Option<GpuRef>,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
struct GpuMig {
    gpu: PciAddress,
    name: Option<String>,
    current: MigModeState,
    pending: MigModeState,
    instances: Vec<GpuInstance>,
    slice_map: String,
    /// How many more of each profile fit now.
    free: Vec<Room>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Room {
    profile: String,
    /// How many more of it fit now.
    more: u32,
}

/// `mig status --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigStatusDoc {
    /// One entry per MIG-capable GPU.
    gpus: Vec<GpuMig>,
}

/// `mig profiles --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigProfilesDoc {
    gpu: PciAddress,
    profiles: Vec<Profile>,
}

/// `mig enable|disable --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigModeDoc {
    gpu: PciAddress,
    /// The mode was changed (false: it already was what was asked).
    changed: bool,
    current: MigModeState,
    pending: MigModeState,
    /// The mode change waits for a GPU reset (exit 2).
    reset_needed: bool,
    /// What must be done next, as the plain output says it.
    next: String,
}

/// `mig create --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigCreatedDoc {
    gpu: PciAddress,
    gi: u32,
    profile: String,
    start: u8,
    compute_instances: Vec<MadeCi>,
    /// Idle instances moved on the GPU to make room (`repack_moves` in the planner policy).
    moved: Vec<crate::mig::moves::Moved>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MadeCi {
    ci: u32,
    profile: String,
}

/// `mig destroy --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigDestroyedDoc {
    gpu: PciAddress,
    gi: u32,
    /// Destroyed with it (--force).
    compute_instances_destroyed: bool,
}

/// `mig defrag --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigDefragDoc {
    /// Nothing was changed (--dry-run).
    dry_run: bool,
    /// An unfinished earlier move that was settled first (finished or reverted).
    recovered: Vec<String>,
    gpus: Vec<GpuDefrag>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct GpuDefrag {
    gpu: PciAddress,
    slice_map_before: String,
    slice_map_after: String,
    /// The largest profile that fits before and after (null: none).
    largest_free_before: Option<String>,
    largest_free_after: Option<String>,
    /// Empty: no move lets the GPU take more.
    moves: Vec<DefragMove>,
    /// Instances that may not move, and why.
    pinned: Vec<PinnedGi>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DefragMove {
    /// The instance id before the move.
    gi: u32,
    profile: String,
    from: u8,
    to: u8,
    /// Its id after the move (null with --dry-run).
    gi_after: Option<u32>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct PinnedGi {
    gi: u32,
    profile: String,
    start: u8,
    why: String,
}

/// `mig plan --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MigPlanDoc {
    /// Everything fits as the host stands now (exit 0; else 3).
    fits: bool,
    /// Everything fits once `steps` have run.
    fits_after_steps: bool,
    /// The commands that must run first, in order, each once.
    steps: Vec<String>,
    placements: Vec<Placement>,
    /// Profiles with no place even after the steps.
    does_not_fit: Vec<String>,
    /// GPUs that cannot take GPU instances at all.
    blocked: Vec<Blocked>,
    /// `not needed`, `placed`, `no placement` or `gave up`.
    exact_search: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct Placement {
    profile: String,
    gpu: PciAddress,
    start: u8,
    /// Commands that must run before that GPU can take it (empty: it can now).
    first: Vec<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Blocked {
    gpu: PciAddress,
    why: String,
}

fn mig_gpus(host: &Host) -> Result<Vec<(PciAddress, Option<String>)>, CliError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    Ok(inv.gpus.iter().filter(|g| g.mig.is_some_and(|m| m.current != MigModeState::NotSupported)).map(|g| (g.address, g.name.clone())).collect())
}

fn mig_err(e: MigError) -> CliError {
    CliError::Mig(e)
}

fn status_of(b: &dyn backend::MigBackend, gpu: PciAddress, name: Option<String>) -> Result<GpuMig, MigError> {
    let m = b.mode(gpu)?;
    // With MIG off there are no instances to place on the table: not read.
    let on = m.current == MigModeState::Enabled;
    let table = if on { b.profiles(gpu)? } else { Vec::new() };
    let instances = if on { b.instances(gpu)? } else { Vec::new() };
    let l = layout(&instances);
    let free = if on { table.iter().map(|p| Room { profile: p.name.to_string(), more: l.more(p) }).collect() } else { Vec::new() };
    Ok(GpuMig { gpu, name, current: m.current, pending: m.pending, slice_map: l.slice_map(&table), instances, free })
}

/// Whether a GPU can take GPU instances for `mig plan`, and what must happen first.
enum Readiness {
    Now,
    After(Vec<String>),
    Blocked(String),
}

impl Readiness {
    fn usable(&self, allow_steps: bool) -> bool {
        match self {
            Readiness::Now => true,
            Readiness::After(_) => allow_steps,
            Readiness::Blocked(_) => false,
        }
    }

    fn steps(&self) -> Vec<String> {
        match self {
            Readiness::After(s) => s.clone(),
            _ => Vec::new(),
        }
    }
}

fn readiness_of(gpu: PciAddress, mig_on: bool, state: Option<&crate::status::GpuStatus>) -> Readiness {
    match state.and_then(mig_blocker) {
        Some(MigBlocker::Passthrough) => Readiness::After(vec![format!("vgpuctl passthrough release {gpu}"), format!("vgpuctl mig enable {gpu}")]),
        Some(MigBlocker::TimeSliced(v)) => {
            Readiness::Blocked(format!("it holds {} time-sliced vGPU(s), and time-sliced and MIG-backed vGPUs never share a GPU", v.len()))
        }
        None if mig_on => Readiness::Now,
        None => Readiness::After(vec![format!("vgpuctl mig enable {gpu}")]),
    }
}

/// What keeps a GPU out of MIG mode: the one answer `mig enable` (which
/// refuses) and `mig plan` (which steps around it) share. Time-sliced and
/// MIG-backed vGPUs never share a GPU, and a GPU passed through to a VM is
/// not the nvidia driver's to change. Already in MIG mode: nothing.
enum MigBlocker<'a> {
    Passthrough,
    TimeSliced(Vec<&'a crate::status::Device>),
}

fn mig_blocker(g: &crate::status::GpuStatus) -> Option<MigBlocker<'_>> {
    match g.mode {
        "mig" => None,
        "passthrough" => Some(MigBlocker::Passthrough),
        _ => {
            let vgpus: Vec<&crate::status::Device> = g.devices.iter().filter(|d| matches!(d.kind, "vgpu" | "mdev")).collect();
            (!vgpus.is_empty()).then_some(MigBlocker::TimeSliced(vgpus))
        }
    }
}

fn refuse_if_not_free_for_mig(host: &Host, gpu: PciAddress) -> Result<(), CliError> {
    let state = crate::status::gpu(host, gpu)?;
    match state.as_ref().and_then(mig_blocker) {
        None => Ok(()),
        Some(MigBlocker::Passthrough) => Err(CliError::Refused(format!(
            "{gpu} is bound to vfio-pci for passthrough; MIG mode needs the nvidia driver: give it back first (vgpuctl passthrough release {gpu})"
        ))),
        Some(MigBlocker::TimeSliced(vgpus)) => {
            let held: Vec<String> = vgpus
                .iter()
                .map(|d| {
                    format!("{} {}{}", d.type_name.as_deref().unwrap_or("vGPU"), d.id, d.vm.as_deref().map(|vm| format!(" (VM {vm})")).unwrap_or_default())
                })
                .collect();
            let removes: Vec<String> = vgpus.iter().map(|d| format!("vgpuctl vgpu remove {}", d.id)).collect();
            Err(CliError::Refused(format!(
                "{gpu} holds time-sliced vGPUs: {}; time-sliced and MIG-backed vGPUs never share a GPU: stop their VMs, then remove them ({})",
                held.join(", "),
                removes.join("; ")
            )))
        }
    }
}

/// Ampere MIG GPUs (A100, A30, A800) keep MIG mode in their InfoROM.
fn is_ampere(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["A100", "A30", "A800"].iter().any(|m| n.contains(m))
}

/// Creates the compute instances asked for in a new GPU instance; on a
/// failure the ones made are destroyed again before the error returns.
fn make_cis(b: &dyn backend::MigBackend, gpu: PciAddress, gi: u32, req: &CiRequest) -> Result<Vec<(u32, String)>, MigError> {
    if *req == CiRequest::None {
        return Ok(Vec::new());
    }
    let inst = b.instances(gpu)?.into_iter().find(|i| i.gi == gi).ok_or(MigError::NoInstance { gpu, gi })?;
    let table = b.ci_profiles(gpu, &inst)?;
    let slices = table.iter().map(|p| p.slices).max().unwrap_or(0);
    let todo = compute::resolve(&table, req, slices, &inst.compute_instances).map_err(|why| MigError::CiNoRoom { gi, profile: inst.profile.clone(), why })?;
    let mut made = Vec::new();
    for p in todo {
        match b.create_ci(gpu, gi, p) {
            Ok(ci) => made.push((ci, p.name.to_string())),
            Err(e) => {
                if !made.is_empty() {
                    let _ = b.destroy_cis(gpu, gi);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// `3g.40gb,4x1g.10gb` or the same separated by spaces.
fn parse_want(s: &str) -> Result<Vec<(String, u32)>, CliError> {
    s.split([',', ' ', '\t'])
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            let (n, name) = match part.split_once(['x', '×']) {
                Some((n, name)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => (n.parse().unwrap_or(1), name),
                _ => (1, part),
            };
            if n == 0 || n > 64 {
                return Err(CliError::Usage(format!("count in {part:?} must be 1-64")));
            }
            Ok((name.to_string(), n))
        })
        .collect()
}

pub fn run(host: &Host, cmd: &MigCommand) -> Result<i32, CliError> {
    let instances = Instances::open(host).map_err(mig_err)?;
    let b = instances.backend();
    let lock = Duration::from_secs(60);
    match cmd {
        MigCommand::Status { json } => {
            let mut all = Vec::new();
            for (g, name) in mig_gpus(host)? {
                all.push(status_of(b, g, name).map_err(mig_err)?);
            }
            if *json {
                print_json(&super::doc::Versioned::new(MigStatusDoc { gpus: all }))?;
            } else if all.is_empty() {
                print_out("No MIG-capable GPUs.\n");
            } else {
                let mut t = String::new();
                for s in &all {
                    let pending =
                        if s.pending != s.current { format!(" (pending: {:?}; reset the GPU to apply)", s.pending).to_lowercase() } else { String::new() };
                    t.push_str(&format!("{} {}: MIG {:?}{pending}\n", s.gpu, s.name.as_deref().unwrap_or(""), s.current));
                    if s.current == MigModeState::Enabled {
                        t.push_str(&format!("  slices [{}]\n", s.slice_map));
                        for i in &s.instances {
                            let cis: Vec<String> = i.compute_instances.iter().map(|c| format!("CI {} {}", c.ci, c.profile)).collect();
                            let cis = if cis.is_empty() { "no compute instances".to_string() } else { cis.join(", ") };
                            t.push_str(&format!("  GI {:<3} {:<11} start {} size {}  {cis}\n", i.gi, i.profile, i.start, i.size));
                        }
                        let free: Vec<String> = s.free.iter().filter(|r| r.more > 0).map(|r| format!("{}×{}", r.more, r.profile)).collect();
                        t.push_str(&format!("  room for: {}\n", if free.is_empty() { "nothing".into() } else { free.join(", ") }));
                    }
                }
                print_out(&t);
            }
        }
        MigCommand::Profiles { gpu, json } => {
            let g = match gpu {
                Some(r) => resolve(host, r)?,
                None => mig_gpus(host)?.first().map(|(g, _)| *g).ok_or_else(|| CliError::Refused("no MIG-capable GPU on this host".into()))?,
            };
            let table = b.profiles(g).map_err(mig_err)?;
            if *json {
                print_json(&super::doc::Versioned::new(MigProfilesDoc { gpu: g, profiles: table }))?;
            } else {
                let mut t = super::table::Table::new(&["PROFILE", "ID", "SLICES", "MEMORY", "MAX", "PLACEMENTS"]);
                for p in &table {
                    t.row(vec![
                        p.name.to_string(),
                        p.id.to_string(),
                        p.compute_slices().to_string(),
                        format!("{} MiB", p.memory_mib),
                        p.max_instances.to_string(),
                        format!("{{{}}}:{}", p.starts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","), p.size),
                    ]);
                }
                print_out(&t.render());
            }
        }
        MigCommand::Enable { gpu, json } | MigCommand::Disable { gpu, json } => {
            let gpu = &resolve(host, gpu)?;
            let on = matches!(cmd, MigCommand::Enable { .. });
            let _l = HostLock::acquire(host, lock)?;
            if on {
                refuse_if_not_free_for_mig(host, *gpu)?;
            }
            if !on && !b.instances(*gpu).map_err(mig_err)?.is_empty() {
                return Err(CliError::Refused(format!("{gpu} still has GPU instances: destroy them first (vgpuctl mig status lists them)")));
            }
            let want = if on { MigModeState::Enabled } else { MigModeState::Disabled };
            let before = b.mode(*gpu).map_err(mig_err)?;
            let m = if before.current == want && before.pending == want { before } else { b.set_mode(*gpu, on).map_err(mig_err)? };
            let changed = m != before;
            let name = mig_gpus(host)?.into_iter().find(|(g, _)| g == gpu).and_then(|(_, n)| n).unwrap_or_default();
            let done = m.current == want;
            let (line, next) = if done {
                let next = if is_ampere(&name) {
                    "This GPU (Ampere) keeps MIG mode across reboots; its GPU instances do not: re-create them at boot (vgpuctl-apply.service)."
                } else {
                    "Hopper and newer GPUs lose MIG mode on reboot and driver reload, and all GPU instances with it: re-apply at boot (vgpuctl-apply.service)."
                };
                let what = if on { "enabled" } else { "disabled" };
                let line = if changed { format!("{gpu}: MIG {what}") } else { format!("{gpu}: MIG already {what}; nothing to do") };
                (line, next.to_string())
            } else {
                let procs = backend::gpu_processes(host, *gpu);
                let holders = if procs.is_empty() {
                    String::new()
                } else {
                    format!(" Processes on it now: {}.", procs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
                };
                let next = format!(
                    "Stop what holds the GPU (nvidia-persistenced, nvsm, dcgm / nv-hostengine, nvidia-fabricmanager, the processes above), then reset it: nvidia-smi -r -i {}",
                    crate::nvidia::smi_bus_id(*gpu)
                );
                (format!("{gpu}: MIG mode change is pending.{holders}"), next)
            };
            if *json {
                print_json(&super::doc::Versioned::new(MigModeDoc { gpu: *gpu, changed, current: m.current, pending: m.pending, reset_needed: !done, next }))?;
            } else {
                print_out(&format!("{line}\n{next}\n"));
            }
            if !done {
                return Ok(super::exit::PENDING);
            }
        }
        MigCommand::Create { profile, gpu, placement, compute_instances, json } => {
            let gpu = match gpu {
                Some(r) => Some(resolve(host, r)?),
                None => None,
            };
            let _l = HostLock::acquire(host, lock)?;
            let candidates: Vec<PciAddress> = match gpu {
                Some(g) => vec![g],
                None => mig_gpus(host)?.into_iter().map(|(g, _)| g).collect(),
            };
            let mut layouts: Vec<(PciAddress, Vec<Profile>, Layout)> = Vec::new();
            for g in &candidates {
                if b.mode(*g).map_err(mig_err)?.current != MigModeState::Enabled {
                    if gpu.is_some() {
                        return Err(mig_err(MigError::Off { gpu: *g }));
                    }
                    continue;
                }
                let table = b.profiles(*g).map_err(mig_err)?;
                layouts.push((*g, table, layout(&b.instances(*g).map_err(mig_err)?)));
            }
            let Some((_, table, _)) = layouts.first() else {
                return Err(CliError::Refused("no GPU with MIG mode on: vgpuctl mig enable <gpu>".into()));
            };
            let table = table.clone();
            // A compute-instance profile (1c.3g.40gb) names its GPU instance
            // and one compute instance of itself in it.
            let (gi_profile, ci_request): (String, CiRequest) = match profile.parse::<crate::ids::MigProfile>() {
                Ok(m) if m.is_compute_instance_profile() => {
                    let mut list = match compute_instances {
                        CiRequest::Profiles(l) => l.clone(),
                        CiRequest::None => Vec::new(),
                        CiRequest::All => return Err(CliError::Usage(format!("--profile {profile} already asks for a compute instance; --compute-instances all would ask for another over the whole GPU instance"))),
                    };
                    list.insert(0, (m.to_string(), 1));
                    (m.gpu_instance_profile().to_string(), CiRequest::Profiles(list))
                }
                _ => (profile.clone(), compute_instances.clone()),
            };
            let (profile, compute_instances) = (&gi_profile, &ci_request);
            let p = profiles::find(&table, profile).ok_or_else(|| mig_err(MigError::unknown_profile(layouts[0].0, profile, &table)))?;
            let mut moved = Vec::new();
            let (g, start) = if placement == "auto" {
                let gpus: Vec<PciAddress> = layouts.iter().map(|(g, _, _)| *g).collect();
                let at = instances.place_or_repack(&gpus, &table, p).map_err(mig_err)?;
                moved = at.moved;
                (at.gpu, at.start)
            } else {
                let s: u8 = placement.parse().map_err(|_| CliError::Usage(format!("--placement {placement:?}: a start slice 0-7 or auto")))?;
                if layouts.len() != 1 {
                    return Err(CliError::Usage("--placement needs --gpu".into()));
                }
                if !layouts[0].2.fits_at(p, s) {
                    return Err(mig_err(MigError::NoRoom {
                        gpu: layouts[0].0,
                        profile: p.name.to_string(),
                        at: format!(" at {s} (allowed starts {:?})", p.starts),
                        map: layouts[0].2.slice_map(&table),
                    }));
                }
                (layouts[0].0, s)
            };
            // Refuse a compute-instance request that cannot be met before
            // anything is made (the table is the modeled one until the GI exists).
            let gi_slices = p.compute_slices();
            compute::resolve(&compute::modeled(p), compute_instances, gi_slices, &[])
                .map_err(|why| mig_err(MigError::CiNoRoom { gi: 0, profile: p.name.to_string(), why }))?;
            let gi = instances.create(g, p, start, Owner::Admin).map_err(mig_err)?;
            let cis = match make_cis(b, g, gi, compute_instances) {
                Ok(c) => c,
                Err(e) => {
                    // Nothing half-done: the instance goes again, its compute instances first.
                    if let Err(undo) = instances.roll_back(g, gi) {
                        tracing::error!(gpu = %g, gi, "could not roll back the GPU instance: {undo}");
                    }
                    return Err(mig_err(e));
                }
            };
            if *json {
                let compute_instances = cis.iter().map(|(ci, profile)| MadeCi { ci: *ci, profile: profile.clone() }).collect();
                print_json(&super::doc::Versioned::new(MigCreatedDoc { gpu: g, gi, profile: p.name.to_string(), start, compute_instances, moved }))?;
            } else {
                let ci_text = if cis.is_empty() {
                    String::new()
                } else {
                    format!(", compute instances {}", cis.iter().map(|(ci, n)| format!("{ci} ({n})")).collect::<Vec<_>>().join(", "))
                };
                for m in &moved {
                    print_out(&format!(
                        "moved idle GPU instance {} ({}) on {g} from slice {} to {} (now GPU instance {}) to make room\n",
                        m.gi_before, m.profile, m.from, m.to, m.gi
                    ));
                }
                print_out(&format!("GPU instance {gi}: {} on {g} at slice {start}{ci_text}\n", p.name));
            }
        }
        MigCommand::Destroy { gpu, gi, force, json } => {
            let gpu = resolve(host, gpu)?;
            let _l = HostLock::acquire(host, lock)?;
            instances.destroy(gpu, *gi, DestroyOptions { with_compute_instances: *force }).map_err(mig_err)?;
            if *json {
                print_json(&super::doc::Versioned::new(MigDestroyedDoc { gpu, gi: *gi, compute_instances_destroyed: *force }))?;
            } else {
                print_out(&format!("GPU instance {gi} on {gpu} destroyed\n"));
            }
        }
        MigCommand::Defrag { gpu, dry_run, include_foreign, json } => {
            let candidates: Vec<PciAddress> = match gpu {
                Some(r) => vec![resolve(host, r)?],
                None => mig_gpus(host)?.into_iter().map(|(g, _)| g).collect(),
            };
            let _l = HostLock::acquire(host, lock)?;
            let recovered: Vec<String> = if !*dry_run && crate::mig::moves::pending(host) {
                crate::mig::moves::recover(&instances).map_err(mig_err)?.into_iter().map(|(w, a)| format!("{w}: {a}")).collect()
            } else {
                Vec::new()
            };
            let mut gpus = Vec::new();
            // Moves on one GPU touch only its own ledger entries: one judge serves every GPU.
            let judge = instances.judge(*include_foreign);
            for g in candidates {
                if b.mode(g).map_err(mig_err)?.current != MigModeState::Enabled {
                    if gpu.is_some() {
                        return Err(mig_err(MigError::Off { gpu: g }));
                    }
                    continue;
                }
                gpus.push(defrag_gpu(&instances, &judge, host, g, *dry_run)?);
            }
            if *json {
                print_json(&super::doc::Versioned::new(MigDefragDoc { dry_run: *dry_run, recovered, gpus }))?;
            } else {
                print_out(&render_defrag(&recovered, &gpus, *dry_run));
            }
        }
        MigCommand::Plan { want, gpu, json } => {
            let wanted = parse_want(want)?;
            let candidates: Vec<PciAddress> = match gpu {
                Some(r) => vec![resolve(host, r)?],
                None => mig_gpus(host)?.into_iter().map(|(g, _)| g).collect(),
            };
            if candidates.is_empty() {
                return Err(CliError::Refused("no MIG-capable GPU on this host".into()));
            }
            let table = b.profiles(candidates[0]).map_err(mig_err)?;
            // What each GPU needs before it can take a GPU instance, from one read.
            let states = crate::status::gpus(host)?;
            let mut layouts: Vec<Layout> = Vec::new();
            let mut readiness: Vec<Readiness> = Vec::new();
            for g in &candidates {
                let on = b.mode(*g).map_err(mig_err)?.current == MigModeState::Enabled;
                layouts.push(if on { layout(&b.instances(*g).map_err(mig_err)?) } else { Layout::default() });
                readiness.push(readiness_of(*g, on, states.iter().find(|s| s.gpu == *g)));
            }
            let planner = crate::mig::policy::planner(host, &table).map_err(|e| mig_err(e.into()))?;
            // Largest first, as a layout is best built.
            let mut items: Vec<&Profile> = Vec::new();
            for (name, n) in &wanted {
                let p = profiles::find(&table, name).ok_or_else(|| mig_err(MigError::unknown_profile(candidates[0], name, &table)))?;
                items.extend(std::iter::repeat_n(p, *n as usize));
            }
            items.sort_by_key(|p| std::cmp::Reverse(p.size));
            let before = layouts.clone();
            let demand: Vec<u32> = table.iter().map(|t| items.iter().filter(|p| p.id == t.id).count() as u32).collect();
            // GPUs that can take instances now first; then those that can
            // after the steps named (MIG enable, giving a passthrough GPU
            // back); never a GPU with time-sliced vGPUs.
            let mut placed = Vec::new();
            let mut left = items;
            for allow_steps in [false, true] {
                let open: Vec<usize> = (0..candidates.len()).filter(|&i| readiness[i].usable(allow_steps)).collect();
                let mut view: Vec<Layout> = open.iter().map(|&i| layouts[i].clone()).collect();
                let mut missing = Vec::new();
                for p in left {
                    match planner.choose(&view, p) {
                        Some((k, s)) => {
                            view[k].place(p, s);
                            let i = open[k];
                            layouts[i].place(p, s);
                            placed.push(Placement { profile: p.name.to_string(), gpu: candidates[i], start: s, first: readiness[i].steps() });
                        }
                        None => missing.push(p),
                    }
                }
                left = missing;
            }
            // The online planner (one instance at a time) may strand part of a
            // batch that can be placed: then the exact search (mig::batch)
            // places the whole batch, on GPUs ready now if it can.
            let mut exact = if left.is_empty() { "not needed" } else { "no placement" };
            if !left.is_empty() {
                for allow_steps in [false, true] {
                    let open: Vec<usize> = (0..candidates.len()).filter(|&i| readiness[i].usable(allow_steps)).collect();
                    let current: Vec<Layout> = open.iter().map(|&i| before[i].clone()).collect();
                    // Bounded (about a second): a plan answers, even when unproven.
                    let found = match crate::mig::batch::place_within(&table, &current, &demand, crate::mig::batch::PLAN_BUDGET) {
                        Ok(found) => found,
                        Err(crate::mig::batch::GaveUp) => {
                            exact = "gave up";
                            None
                        }
                    };
                    if let Some(adds) = found {
                        exact = "placed";
                        layouts = before.clone();
                        placed.clear();
                        for (add, &i) in adds.iter().zip(&open) {
                            for &(k, start) in add {
                                layouts[i].place(&table[k], start);
                                placed.push(Placement { profile: table[k].name.to_string(), gpu: candidates[i], start, first: readiness[i].steps() });
                            }
                        }
                        left.clear();
                        break;
                    }
                }
            }
            let missing: Vec<String> = left.iter().map(|p| p.name.to_string()).collect();
            let needs_steps = placed.iter().any(|p| !p.first.is_empty());
            let fits = missing.is_empty() && !needs_steps;
            let mut steps: Vec<String> = Vec::new();
            for p in &placed {
                for s in &p.first {
                    if !steps.contains(s) {
                        steps.push(s.clone());
                    }
                }
            }
            let blocked: Vec<Blocked> = candidates
                .iter()
                .zip(&readiness)
                .filter_map(|(g, r)| match r {
                    Readiness::Blocked(why) => Some(Blocked { gpu: *g, why: why.clone() }),
                    _ => None,
                })
                .collect();
            if *json {
                print_json(&super::doc::Versioned::new(MigPlanDoc {
                    fits,
                    fits_after_steps: missing.is_empty(),
                    steps,
                    placements: placed,
                    does_not_fit: missing,
                    blocked,
                    exact_search: exact.to_string(),
                }))?;
            } else {
                let mut t = String::new();
                for p in &placed {
                    let first = (!p.first.is_empty()).then(|| format!("  (first: {})", p.first.join("; ")));
                    t.push_str(&format!("{} -> {} at slice {}{}\n", p.profile, p.gpu, p.start, first.unwrap_or_default()));
                }
                for (g, l) in candidates.iter().zip(&layouts) {
                    t.push_str(&format!("{g} [{}]\n", l.slice_map(&table)));
                }
                for b in &blocked {
                    t.push_str(&format!("{} cannot take GPU instances: {}\n", b.gpu, b.why));
                }
                if !missing.is_empty() {
                    t.push_str(&format!("does not fit: {} (a GPU has 8 memory slices; 4g and 7g need an empty half or GPU)\n", missing.join(", ")));
                    if exact == "gave up" {
                        t.push_str("(the exact search gave up before proving it: the batch is near what these GPUs hold)\n");
                    }
                } else if needs_steps {
                    t.push_str(&format!("fits after: {}\n", steps.join("; ")));
                }
                print_out(&t);
            }
            // Not placeable as the host stands now: refused, like a create would be.
            return Ok(if fits { super::exit::OK } else { super::exit::REFUSED });
        }
    }
    Ok(super::exit::OK)
}

/// One GPU of `mig defrag`: which instances are pinned, the best reshape,
/// and (unless a dry run) the moves carried out.
fn defrag_gpu(instances: &Instances, judge: &crate::mig::instances::IdleJudge, host: &Host, gpu: PciAddress, dry_run: bool) -> Result<GpuDefrag, CliError> {
    use crate::mig::reshape;
    let b = instances.backend();
    let table = b.profiles(gpu).map_err(mig_err)?;
    let planner = crate::mig::policy::planner(host, &table).map_err(|e| mig_err(e.into()))?;
    let idle = judge.gpu(gpu).map_err(mig_err)?;
    let items: Vec<reshape::Item> = idle.iter().map(|(i, why)| reshape::Item { profile_id: i.profile_id, start: i.start, movable: why.is_none() }).collect();
    let all: Vec<GpuInstance> = idle.iter().map(|(i, _)| i.clone()).collect();
    let before = layout(&all);
    let name_of = |l: &Layout| {
        let best = reshape::largest_free(&table, l);
        table.iter().find(|p| u32::from(p.compute_slices()) * 16 + u32::from(p.size) == best && best > 0).map(|p| p.name.to_string())
    };
    let pinned = idle
        .iter()
        .filter_map(|(i, why)| why.as_ref().map(|w| PinnedGi { gi: i.gi, profile: i.profile.clone(), start: i.start, why: w.to_string() }))
        .collect();
    let reshaped = reshape::defrag(&table, &items, &|l| planner.capacity(l));
    let (after, mut moves) = match &reshaped {
        Some(a) => (
            a.layout.clone(),
            a.moves
                .iter()
                .map(|m| DefragMove { gi: idle[m.index].0.gi, profile: idle[m.index].0.profile.clone(), from: m.from, to: m.to, gi_after: None })
                .collect(),
        ),
        None => (before.clone(), Vec::new()),
    };
    if let (Some(a), false) = (&reshaped, dry_run) {
        let moving: Vec<(GpuInstance, u8)> = a.moves.iter().map(|m| (idle[m.index].0.clone(), m.to)).collect();
        let done = instances.relocate_judged(gpu, &moving, &idle).map_err(mig_err)?;
        for (m, d) in moves.iter_mut().zip(&done) {
            m.gi_after = Some(d.gi);
        }
    }
    Ok(GpuDefrag {
        gpu,
        slice_map_before: before.slice_map(&table),
        slice_map_after: after.slice_map(&table),
        largest_free_before: name_of(&before),
        largest_free_after: name_of(&after),
        moves,
        pinned,
    })
}

fn render_defrag(recovered: &[String], gpus: &[GpuDefrag], dry_run: bool) -> String {
    let mut out = String::new();
    for r in recovered {
        out.push_str(&format!("unfinished earlier move: {r}\n"));
    }
    if gpus.is_empty() {
        out.push_str("no GPU in MIG mode\n");
    }
    let none = |n: &Option<String>| n.clone().unwrap_or_else(|| "nothing".into());
    for g in gpus {
        if g.moves.is_empty() {
            out.push_str(&format!("{}: no move lets it take more ({}; room for {})\n", g.gpu, g.slice_map_before, none(&g.largest_free_before)));
        } else {
            let verb = if dry_run { "would move" } else { "moved" };
            out.push_str(&format!(
                "{}: {verb} {} idle GPU instance(s): {} → {}; room for {} (was {})\n",
                g.gpu,
                g.moves.len(),
                g.slice_map_before,
                g.slice_map_after,
                none(&g.largest_free_after),
                none(&g.largest_free_before)
            ));
            for m in &g.moves {
                let now = m.gi_after.map(|x| format!(", now GPU instance {x}")).unwrap_or_default();
                out.push_str(&format!("  GPU instance {} ({}): slice {} → {}{now}\n", m.gi, m.profile, m.from, m.to));
            }
        }
        for p in &g.pinned {
            out.push_str(&format!("  stays: GPU instance {} ({} at slice {}): {}\n", p.gi, p.profile, p.start, p.why));
        }
    }
    out
}
