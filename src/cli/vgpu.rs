//! `vgpuctl vgpu …`, `vgpuctl sriov …`, `vgpuctl explain`.

use std::time::Duration;

use clap::Subcommand;

use super::gpu_ref::{gpu_ref, resolve, resolve_opt, GpuRef};
use super::mdev::Common;
use super::table::{opt, Table};
use super::{note, print_json, print_out, CliError};
use crate::host::Host;
use crate::ids::{MdevUuid, PciAddress};
use crate::vgpu::alloc::Policy;
use crate::vgpu::typename::VgpuTypeName;
use crate::vgpu::{self, VgpuCreateRequest};

fn parse_type(s: &str) -> Result<VgpuTypeName, String> {
    s.parse().map_err(|e: crate::vgpu::typename::TypeNameError| e.to_string())
}

fn parse_uuid(s: &str) -> Result<MdevUuid, String> {
    s.parse().map_err(|e: crate::ids::IdError| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum VgpuCommand {
    /// Create a vGPU of a type, on a GPU and slot chosen by policy.
    Create {
        /// vGPU type name: H100-10C, NVIDIA H100-1-10C, GRID A100D-4C.
        #[arg(long = "type", value_parser = parse_type)]
        type_name: VgpuTypeName,
        /// Only this GPU: PCI address, GPU UUID or nvidia-smi index.
        #[arg(long, value_parser = gpu_ref)]
        gpu: Option<GpuRef>,
        /// mdev UUID (legacy interface only).
        #[arg(long, value_parser = parse_uuid)]
        uuid: Option<MdevUuid>,
        /// Which GPU when several can take it: pack (the one holding most vGPUs of this size) or spread (the one holding fewest vGPUs).
        #[arg(long, value_enum, default_value_t = Policy::Pack)]
        policy: Policy,
        #[command(flatten)]
        common: Common,
    },
    /// Remove a vGPU: an mdev UUID, or the PCI address of the VF holding it.
    Remove {
        /// An mdev UUID, or the PCI address of the VF holding the vGPU.
        target: String,
        /// Succeed when there is nothing to remove.
        #[arg(long)]
        if_exists: bool,
        /// Keep the MIG GPU instance vgpuctl made for this vGPU.
        #[arg(long)]
        keep_gi: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Mixed-size (heterogeneous) time-sliced mode of a GPU.
    Mode {
        /// on: vGPUs of different framebuffer sizes may share the GPU; off: one size per GPU.
        #[arg(long, value_parser = ["on", "off"])]
        heterogeneous: String,
        /// The physical GPU: PCI address, GPU UUID or nvidia-smi index.
        #[arg(value_parser = gpu_ref)]
        gpu: GpuRef,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum SriovCommand {
    /// Enable VFs on a GPU (or `all`), and wait until they and their NVIDIA files are there.
    Enable {
        /// The physical GPU (PCI address, GPU UUID or nvidia-smi index), or `all`.
        target: String,
        /// How many VFs (default: all the GPU supports).
        #[arg(long)]
        num: Option<u32>,
        /// Longest wait for the VFs to appear, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Disable the VFs of a GPU (or `all`); refused while a VF holds a vGPU or a VM.
    Disable {
        /// The physical GPU (PCI address, GPU UUID or nvidia-smi index), or `all`.
        target: String,
        /// Longest wait for the VFs to go, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[command(flatten)]
        common: Common,
    },
    /// SR-IOV state of every NVIDIA GPU.
    Status {
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
}

fn targets(host: &Host, t: &str) -> Result<Option<Vec<PciAddress>>, CliError> {
    if t == "all" {
        return Ok(None);
    }
    Ok(Some(vec![resolve(host, &gpu_ref(t).map_err(CliError::Usage)?)?]))
}

pub fn run_vgpu(host: &Host, cmd: &VgpuCommand) -> Result<i32, CliError> {
    match cmd {
        VgpuCommand::Create { type_name, gpu, uuid, policy, common } => {
            let gpu = resolve_opt(host, gpu.as_ref())?;
            let c = vgpu::create(host, &VgpuCreateRequest { type_name: type_name.clone(), gpu, uuid: *uuid, policy: *policy }, common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(c))?;
            } else {
                let what = match (c.vf, c.uuid) {
                    (Some(vf), None) => format!("VF {vf}"),
                    (_, Some(u)) => format!("mdev {u}"),
                    _ => "?".into(),
                };
                for m in &c.gi_moved {
                    print_out(&format!(
                        "moved idle GPU instance {} ({}) on {} from slice {} to {} (now GPU instance {}) to make room\n",
                        m.gi_before, m.profile, c.gpu, m.from, m.to, m.gi
                    ));
                }
                print_out(&format!("{} on {} ({what})\n", c.type_name, c.gpu));
            }
        }
        VgpuCommand::Remove { target, if_exists, keep_gi, common } => {
            let r = vgpu::remove(host, target, *if_exists, *keep_gi, common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(r))?;
            } else if !r.removed {
                note(&format!("{target} holds no vGPU; nothing to do"));
            } else {
                let what = match (r.vf, r.uuid) {
                    (Some(vf), _) => format!("the vGPU on VF {vf}"),
                    (None, Some(u)) => format!("mdev {u}"),
                    (None, None) => target.clone(),
                };
                let gi = r.gi_removed.map(|gi| format!(" and GPU instance {gi} made for it")).unwrap_or_default();
                print_out(&format!("removed {what}{gi}\n"));
            }
        }
        VgpuCommand::Mode { heterogeneous, gpu, common } => {
            let on = heterogeneous == "on";
            let r = vgpu::set_heterogeneous(host, resolve(host, gpu)?, on, common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(r))?;
            } else if !r.changed {
                note(&format!("mixed-size mode is already {} on {gpu}; nothing to do", heterogeneous));
            } else {
                print_out(&format!("{}: mixed-size mode {}\n", r.gpu, heterogeneous));
            }
        }
    }
    Ok(super::exit::OK)
}

pub fn run_sriov(host: &Host, cmd: &SriovCommand) -> Result<i32, CliError> {
    match cmd {
        SriovCommand::Enable { target, num, wait, common } => {
            let r = crate::sriov::set(host, targets(host, target)?.as_deref(), *num, Duration::from_secs(*wait), common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(SriovChanges { gpus: r }))?;
            } else {
                let text: String = r
                    .iter()
                    .map(|c| {
                        if c.changed {
                            format!("{}: {} -> {} VFs\n", c.gpu, c.before, c.after)
                        } else {
                            format!("{}: {} VFs already enabled\n", c.gpu, c.after)
                        }
                    })
                    .collect();
                print_out(&text);
            }
        }
        SriovCommand::Disable { target, wait, common } => {
            let r = crate::sriov::set(host, targets(host, target)?.as_deref(), Some(0), Duration::from_secs(*wait), common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(SriovChanges { gpus: r }))?;
            } else {
                let text: String = r.iter().map(|c| format!("{}: {} -> 0 VFs\n", c.gpu, c.before)).collect();
                print_out(&text);
            }
        }
        SriovCommand::Status { json } => {
            let s = crate::sriov::status(host)?;
            if *json {
                print_json(&super::doc::Versioned::new(SriovStatusDoc { gpus: s }))?;
            } else {
                let mut t = Table::new(&["GPU", "MODEL", "VFS", "TOTAL", "WITH_VGPU"]);
                for g in &s {
                    t.row(vec![g.gpu.to_string(), opt(&g.name), g.num_vfs.to_string(), g.total_vfs.to_string(), g.vfs_with_vgpu.to_string()]);
                }
                print_out(&if t.is_empty() { "No SR-IOV capable NVIDIA GPUs.\n".into() } else { t.render() });
            }
        }
    }
    Ok(super::exit::OK)
}

pub fn run_explain(host: &Host, type_name: &VgpuTypeName, json: bool) -> Result<i32, CliError> {
    let (_, views) = vgpu::views(host)?;
    crate::vgpu::exists::check(&views, type_name).map_err(|e| CliError::Usage(e.to_string()))?;
    let e = crate::vgpu::explain::explain(&views, type_name);
    if json {
        print_json(&e)?;
    } else {
        print_out(&crate::vgpu::explain::render(&e));
    }
    Ok(super::exit::OK)
}

pub fn parse_type_arg(s: &str) -> Result<VgpuTypeName, String> {
    parse_type(s)
}

/// `sriov enable|disable --json`: one entry per GPU asked for.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct SriovChanges {
    pub gpus: Vec<crate::sriov::SriovChange>,
}

/// `sriov status --json`: one entry per SR-IOV capable NVIDIA GPU.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct SriovStatusDoc {
    pub gpus: Vec<crate::sriov::SriovStatus>,
}
