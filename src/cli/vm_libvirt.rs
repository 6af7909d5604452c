//! The command line of `vgpuctl vm define|attach|detach|show`, which the
//! libvirt helper (libvirt-helper/) parses and runs. Defined here, beside the
//! rest of vgpuctl's command line, so the man pages and shell completions
//! (examples/gen-docs.rs) cover these subcommands too.

use clap::{Parser, Subcommand};

use crate::cli::vm::{DeviceArgs, DomainArgs};
use crate::ids::{MdevUuid, PciAddress};

#[derive(Debug, Parser)]
#[command(name = "vgpuctl vm", about = "GPU VMs through libvirt")]
pub struct LibvirtCli {
    /// libvirt connection URI, as for virsh.
    #[arg(long, short = 'c', global = true, env = "LIBVIRT_DEFAULT_URI", default_value = "qemu:///system")]
    pub connect: String,
    #[arg(long, global = true, env = "VGPUCTL_ROOT")]
    pub root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Define a domain with the GPUs asked for (devices are made at start by the hook).
    Define {
        #[command(flatten)]
        domain: DomainArgs,
        #[arg(long)]
        json: bool,
    },
    /// Attach GPUs to a domain (live, persistent, or both).
    Attach {
        domain: String,
        #[command(flatten)]
        devices: DeviceArgs,
        #[arg(long)]
        live: bool,
        #[arg(long)]
        config: bool,
    },
    /// Detach a GPU: an mdev UUID, a VF or a passthrough PCI address.
    Detach {
        domain: String,
        #[arg(long, value_parser = |s: &str| s.parse::<MdevUuid>().map_err(|e| e.to_string()))]
        mdev: Option<MdevUuid>,
        #[arg(long, value_parser = |s: &str| s.parse::<PciAddress>().map_err(|e| e.to_string()))]
        pci: Option<PciAddress>,
        #[arg(long)]
        live: bool,
        #[arg(long)]
        config: bool,
    },
    /// A domain's GPUs and their state on this host.
    Show {
        domain: String,
        /// The persistent definition instead of the running domain.
        #[arg(long)]
        inactive: bool,
        #[arg(long)]
        json: bool,
    },
}
