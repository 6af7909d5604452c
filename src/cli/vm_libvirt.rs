//! The command line of `vgpuctl vm define|attach|detach|show`, which the
//! libvirt helper (libvirt-helper/) parses and runs. Defined here, beside the
//! rest of vgpuctl's command line, so the man pages and shell completions
//! (examples/gen-docs.rs) cover these subcommands too, and vgpuctl itself
//! parses them (so `--help` and bad arguments never need the helper) before
//! it runs the helper with the same arguments.

use clap::{Args, Parser, Subcommand};

use crate::cli::vm::{DeviceArgs, DomainArgs};
use crate::ids::{MdevUuid, PciAddress};

#[derive(Debug, Parser)]
#[command(name = "vgpuctl vm", about = "GPU VMs through libvirt")]
pub struct LibvirtCli {
    /// Read and write the host under this directory instead of / (as vgpuctl's --root).
    #[arg(long, global = true, env = "VGPUCTL_ROOT", value_name = "DIR")]
    pub root: Option<std::path::PathBuf>,
    /// Accepted as vgpuctl accepts it; the helper logs warnings only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Which libvirt to talk to.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// libvirt connection URI, as for virsh.
    #[arg(long, short = 'c', env = "LIBVIRT_DEFAULT_URI", default_value = "qemu:///system")]
    pub connect: String,
}

impl Cmd {
    pub const NAMES: [&'static str; 4] = ["define", "attach", "detach", "show"];

    pub fn connect(&self) -> &str {
        match self {
            Cmd::Define { conn, .. } | Cmd::Attach { conn, .. } | Cmd::Detach { conn, .. } | Cmd::Show { conn, .. } => &conn.connect,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Define a domain with the GPUs asked for (devices are made at start by the hook).
    Define {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        domain: DomainArgs,
        /// Print the defined domain's name and UUID as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach GPUs to a domain (live, persistent, or both).
    Attach {
        #[command(flatten)]
        conn: Conn,
        /// The libvirt domain (name or UUID).
        domain: String,
        #[command(flatten)]
        devices: DeviceArgs,
        /// Attach to the running domain (the default when it runs).
        #[arg(long)]
        live: bool,
        /// Attach to the persistent definition (the default when it is not running).
        #[arg(long)]
        config: bool,
        /// Print what was attached as JSON (docs/schema/vm-attach.json).
        #[arg(long)]
        json: bool,
    },
    /// Detach a GPU: an mdev UUID, a VF or a passthrough PCI address.
    Detach {
        #[command(flatten)]
        conn: Conn,
        /// The libvirt domain (name or UUID).
        domain: String,
        /// The mdev to detach, by UUID.
        #[arg(long, value_parser = |s: &str| s.parse::<MdevUuid>().map_err(|e| e.to_string()))]
        mdev: Option<MdevUuid>,
        /// The VF or passthrough GPU to detach, by PCI address.
        #[arg(long, value_parser = |s: &str| s.parse::<PciAddress>().map_err(|e| e.to_string()))]
        pci: Option<PciAddress>,
        /// Detach from the running domain (the default when it runs).
        #[arg(long)]
        live: bool,
        /// Detach from the persistent definition (the default when it is not running).
        #[arg(long)]
        config: bool,
        /// Print what was detached as JSON (docs/schema/vm-detach.json).
        #[arg(long)]
        json: bool,
    },
    /// A domain's GPUs and their state on this host.
    Show {
        #[command(flatten)]
        conn: Conn,
        /// The libvirt domain (name or UUID).
        domain: String,
        /// The persistent definition instead of the running domain.
        #[arg(long)]
        inactive: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}
