//! `vgpuctl mig …`

use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;

use super::{print_json, print_out, CliError};
use crate::host::Host;
use crate::ids::PciAddress;
use crate::inventory::{Inventory, ScanOptions};
use crate::lock::HostLock;
use crate::mig::backend::{self, layout, GpuInstance, MigError};
use crate::mig::layout::Layout;
use crate::mig::planner::{Mix, Planner};
use crate::mig::profiles::{self, Profile};
use crate::parse::MigModeState;

fn pci(s: &str) -> Result<PciAddress, String> {
    s.parse().map_err(|e: crate::ids::IdError| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum MigCommand {
    /// MIG mode, GPU instances and a slice map per GPU.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The GPU-instance profiles of a GPU, with their placements.
    Profiles {
        #[arg(long, value_parser = pci)]
        gpu: Option<PciAddress>,
        #[arg(long)]
        json: bool,
    },
    /// Turn MIG mode on.
    Enable {
        #[arg(value_parser = pci)]
        gpu: PciAddress,
    },
    /// Turn MIG mode off (GPU instances must be gone).
    Disable {
        #[arg(value_parser = pci)]
        gpu: PciAddress,
    },
    /// Create a GPU instance where the planner (or --placement) says.
    Create {
        /// Profile name (3g.40gb, 1g.10gb+me) or id.
        #[arg(long)]
        profile: String,
        #[arg(long, value_parser = pci)]
        gpu: Option<PciAddress>,
        /// Start slice, or `auto` (the planner).
        #[arg(long, default_value = "auto")]
        placement: String,
        #[arg(long)]
        json: bool,
    },
    /// Destroy a GPU instance (its compute instances first).
    Destroy {
        #[arg(long, value_parser = pci)]
        gpu: PciAddress,
        gi: u32,
    },
    /// Would these instances fit, and where? e.g. --want "3g.40gb,2x2g.20gb,1g.10gb"
    Plan {
        #[arg(long)]
        want: String,
        #[arg(long, value_parser = pci)]
        gpu: Option<PciAddress>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct GpuMig {
    gpu: PciAddress,
    name: Option<String>,
    current: MigModeState,
    pending: MigModeState,
    instances: Vec<GpuInstance>,
    slice_map: String,
    /// How many more of each profile fit now.
    free: Vec<(String, u32)>,
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
    let table = b.profiles(gpu)?;
    let instances = if m.current == MigModeState::Enabled { b.instances(gpu)? } else { Vec::new() };
    let l = layout(&instances);
    let free = if m.current == MigModeState::Enabled { table.iter().map(|p| (p.name.to_string(), l.more(p))).collect() } else { Vec::new() };
    Ok(GpuMig { gpu, name, current: m.current, pending: m.pending, slice_map: l.slice_map(&table), instances, free })
}

fn parse_want(s: &str) -> Result<Vec<(String, u32)>, CliError> {
    s.split(',')
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
    let b = backend::backend(host).map_err(mig_err)?;
    let lock = Duration::from_secs(60);
    match cmd {
        MigCommand::Status { json } => {
            let mut all = Vec::new();
            for (g, name) in mig_gpus(host)? {
                all.push(status_of(b.as_ref(), g, name).map_err(mig_err)?);
            }
            if *json {
                print_json(&all)?;
            } else if all.is_empty() {
                print_out("No MIG-capable GPUs.\n");
            } else {
                let mut t = String::new();
                for s in &all {
                    let pending = if s.pending != s.current { format!(" (pending: {:?}; reset the GPU to apply)", s.pending).to_lowercase() } else { String::new() };
                    t.push_str(&format!("{} {}: MIG {:?}{pending}\n", s.gpu, s.name.as_deref().unwrap_or(""), s.current));
                    if s.current == MigModeState::Enabled {
                        t.push_str(&format!("  slices [{}]\n", s.slice_map));
                        for i in &s.instances {
                            t.push_str(&format!("  GI {:<3} {:<11} start {} size {}\n", i.gi, i.profile, i.start, i.size));
                        }
                        let free: Vec<String> = s.free.iter().filter(|(_, n)| *n > 0).map(|(p, n)| format!("{n}×{p}")).collect();
                        t.push_str(&format!("  room for: {}\n", if free.is_empty() { "nothing".into() } else { free.join(", ") }));
                    }
                }
                print_out(&t);
            }
        }
        MigCommand::Profiles { gpu, json } => {
            let g = match gpu {
                Some(g) => *g,
                None => mig_gpus(host)?.first().map(|(g, _)| *g).ok_or_else(|| CliError::Usage("no MIG-capable GPU on this host".into()))?,
            };
            let table = b.profiles(g).map_err(mig_err)?;
            if *json {
                print_json(&table)?;
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
        MigCommand::Enable { gpu } | MigCommand::Disable { gpu } => {
            let on = matches!(cmd, MigCommand::Enable { .. });
            let _l = HostLock::acquire(host, lock)?;
            if !on && !b.instances(*gpu).map_err(mig_err)?.is_empty() {
                return Err(CliError::Usage(format!("{gpu} still has GPU instances: destroy them first (vgpuctl mig status lists them)")));
            }
            let m = b.set_mode(*gpu, on).map_err(mig_err)?;
            let want = if on { MigModeState::Enabled } else { MigModeState::Disabled };
            if m.current == want {
                print_out(&format!("{gpu}: MIG {}\nHopper and newer GPUs lose MIG mode on reboot and driver reload (Ampere keeps it): re-apply at boot.\n", if on { "enabled" } else { "disabled" }));
            } else {
                print_out(&format!(
                    "{gpu}: MIG mode change is pending. Stop what holds the GPU (nvidia-persistenced, nvsm, dcgm, nvidia-fabricmanager, processes shown by nvidia-smi), then reset it: nvidia-smi -r -i {}\n",
                    crate::nvctl::smi_bus_id(*gpu)
                ));
                return Ok(super::exit::PENDING);
            }
        }
        MigCommand::Create { profile, gpu, placement, json } => {
            let _l = HostLock::acquire(host, lock)?;
            let candidates: Vec<PciAddress> = match gpu {
                Some(g) => vec![*g],
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
                return Err(CliError::Usage("no GPU with MIG mode on: vgpuctl mig enable <gpu>".into()));
            };
            let table = table.clone();
            let p = profiles::find(&table, profile).ok_or_else(|| {
                mig_err(MigError::UnknownProfile { gpu: layouts[0].0, wanted: profile.clone(), known: table.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", ") })
            })?;
            let (gi_index, start) = if placement == "auto" {
                let ls: Vec<Layout> = layouts.iter().map(|(_, _, l)| l.clone()).collect();
                Planner::new(&table, &Mix::uniform(&table)).choose(&ls, p).ok_or_else(|| {
                    mig_err(MigError::NoRoom { gpu: layouts[0].0, profile: p.name.to_string(), at: String::new(), map: layouts.iter().map(|(g, _, l)| format!("{g} [{}]", l.slice_map(&table))).collect::<Vec<_>>().join(", ") })
                })?
            } else {
                let s: u8 = placement.parse().map_err(|_| CliError::Usage(format!("--placement {placement:?}: a start slice 0-7 or auto")))?;
                if layouts.len() != 1 {
                    return Err(CliError::Usage("--placement needs --gpu".into()));
                }
                if !layouts[0].2.fits_at(p, s) {
                    return Err(mig_err(MigError::NoRoom { gpu: layouts[0].0, profile: p.name.to_string(), at: format!(" at {s} (allowed starts {:?})", p.starts), map: layouts[0].2.slice_map(&table) }));
                }
                (0, s)
            };
            let g = layouts[gi_index].0;
            let gi = b.create(g, p, start).map_err(mig_err)?;
            if *json {
                print_json(&serde_json::json!({ "gpu": g, "gi": gi, "profile": p.name.to_string(), "start": start }))?;
            } else {
                print_out(&format!("GPU instance {gi}: {} on {g} at slice {start}\n", p.name));
            }
        }
        MigCommand::Destroy { gpu, gi } => {
            let _l = HostLock::acquire(host, lock)?;
            b.destroy(*gpu, *gi).map_err(mig_err)?;
        }
        MigCommand::Plan { want, gpu, json } => {
            let wanted = parse_want(want)?;
            let candidates: Vec<PciAddress> = match gpu {
                Some(g) => vec![*g],
                None => mig_gpus(host)?.into_iter().map(|(g, _)| g).collect(),
            };
            if candidates.is_empty() {
                return Err(CliError::Usage("no MIG-capable GPU on this host".into()));
            }
            let table = b.profiles(candidates[0]).map_err(mig_err)?;
            let mut layouts: Vec<Layout> = Vec::new();
            for g in &candidates {
                let on = b.mode(*g).map_err(mig_err)?.current == MigModeState::Enabled;
                layouts.push(if on { layout(&b.instances(*g).map_err(mig_err)?) } else { Layout::default() });
            }
            let planner = Planner::new(&table, &Mix::uniform(&table));
            // Largest first, as a layout is best built.
            let mut items: Vec<&Profile> = Vec::new();
            for (name, n) in &wanted {
                let p = profiles::find(&table, name).ok_or_else(|| mig_err(MigError::UnknownProfile { gpu: candidates[0], wanted: name.clone(), known: table.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", ") }))?;
                items.extend(std::iter::repeat_n(p, *n as usize));
            }
            items.sort_by_key(|p| std::cmp::Reverse(p.size));
            let mut placed = Vec::new();
            let mut missing = Vec::new();
            for p in items {
                match planner.choose(&layouts, p) {
                    Some((g, s)) => {
                        layouts[g].place(p, s);
                        placed.push(serde_json::json!({ "profile": p.name.to_string(), "gpu": candidates[g], "start": s }));
                    }
                    None => missing.push(p.name.to_string()),
                }
            }
            let fits = missing.is_empty();
            if *json {
                print_json(&serde_json::json!({ "fits": fits, "placements": placed, "does_not_fit": missing }))?;
            } else {
                let mut t = String::new();
                for p in &placed {
                    t.push_str(&format!("{} -> {} at slice {}\n", p["profile"].as_str().unwrap_or(""), p["gpu"].as_str().unwrap_or(""), p["start"]));
                }
                for (g, l) in candidates.iter().zip(&layouts) {
                    t.push_str(&format!("{g} [{}]\n", l.slice_map(&table)));
                }
                if !fits {
                    t.push_str(&format!("does not fit: {} (a GPU has 8 memory slices; 4g and 7g need an empty half or GPU)\n", missing.join(", ")));
                }
                print_out(&t);
            }
            return Ok(if fits { super::exit::OK } else { super::exit::FAILED });
        }
    }
    Ok(super::exit::OK)
}
