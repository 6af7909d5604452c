//! Command-line front end: clap definitions, dispatch and exit codes.

pub mod doc;
pub mod exit_code;
pub mod gpu_ref;
pub mod mdev;
pub mod mig;
pub mod render;
pub use crate::table;
pub mod vgpu;
pub mod vm;
pub mod vm_libvirt;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::host::Host;
use crate::ids::MdevParent;
use crate::inventory::{Inventory, ScanOptions};
use crate::nvidia::Wants;

/// Exit codes, documented in docs/admin-guide.md.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The operation failed; stderr says why.
    pub const FAILED: i32 = 1;
    /// `--check`: the host differs from what is wanted (nothing was changed).
    pub const PENDING: i32 = 2;
    /// The host as it is now does not allow it (no room, in use, MIG off, no
    /// such device here); nothing was changed.
    pub const REFUSED: i32 = 3;
    /// A tool, helper or driver it needs is missing (vgpuctl-libvirt,
    /// nvidia-smi, NVML, vfio-pci).
    pub const UNAVAILABLE: i32 = 4;
    /// The command line itself is wrong (unknown flag, malformed identifier).
    pub const USAGE: i32 = 64;
}

#[derive(Debug, Parser)]
#[command(name = "vgpuctl", version = crate::version::SHORT, about = "Give NVIDIA GPUs to KVM virtual machines: passthrough, time-sliced vGPU and MIG-backed vGPU")]
pub struct Cli {
    /// Read and write the host under this directory instead of / (a simulated
    /// host from `vgpuctl sim create`, or a test tree).
    #[arg(long, global = true, env = "VGPUCTL_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug); VGPUCTL_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print only errors: nothing on stdout (except the document --json asks
    /// for), no notes or warnings on stderr. The exit code says the rest.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List GPUs, their VFs and IOMMU groups, mdev parents and mdevs.
    List(ListArgs),
    /// List mdev and vGPU types per parent and per GPU.
    Types(TypesArgs),
    /// Create, remove, persist and restore mediated devices.
    #[command(subcommand)]
    Mdev(mdev::MdevCommand),
    /// Create and remove vGPUs by type name; mixed-size mode.
    #[command(subcommand)]
    Vgpu(vgpu::VgpuCommand),
    /// SR-IOV virtual functions of NVIDIA GPUs.
    #[command(subcommand)]
    Sriov(vgpu::SriovCommand),
    /// Why a vGPU type can or cannot be created on each GPU, and what would make room.
    Explain {
        /// The vGPU type to explain: H100-10C, NVIDIA H100-1-10C, GRID A100D-4C.
        #[arg(long = "type", value_parser = vgpu::parse_type_arg)]
        type_name: crate::vgpu::typename::VgpuTypeName,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Domain XML for GPU VMs; define/attach/detach go through vgpuctl-libvirt.
    #[command(subcommand)]
    Vm(Box<vm::VmCommand>),
    /// MIG mode, GPU instances and the placement planner.
    #[command(subcommand)]
    Mig(mig::MigCommand),
    /// Whole-GPU passthrough through vfio-pci.
    #[command(subcommand)]
    Passthrough(PassthroughCommand),
    /// The libvirt qemu hook.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Free devices left by crashed VM starts and releases that never came.
    Gc {
        /// Keep devices of prepared domains younger than this (seconds): their VM may be starting.
        #[arg(long, default_value_t = 60)]
        grace: u64,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Per GPU: mode, vGPUs / MIG instances / mdevs with their VMs, utilization.
    Status {
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
        /// Refresh every N seconds (Ctrl-C to stop).
        #[arg(long, value_name = "N")]
        watch: Option<u64>,
        /// With --watch: stop after this many refreshes.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Prometheus metrics: capacity by vGPU type, MIG room, devices and their VMs, utilization, hook outcomes.
    ///
    /// Without options the metrics go to stdout. --textfile writes them for
    /// node_exporter's textfile collector (vgpuctl-metrics.timer does so every
    /// 15 s); --listen serves them at http://ADDR/metrics. docs/metrics.md lists
    /// every metric.
    Metrics {
        /// Write the metrics atomically to this file (absolute, *.prom), e.g.
        /// /var/lib/prometheus/node-exporter/vgpuctl.prom.
        #[arg(long, value_name = "FILE", conflicts_with = "listen")]
        textfile: Option<String>,
        /// Serve /metrics over HTTP on this address (loopback unless --allow-remote), e.g. 127.0.0.1:9835.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// With --listen: allow an address that is not loopback.
        #[arg(long, requires = "listen")]
        allow_remote: bool,
        /// With --listen: stop after answering this many requests.
        #[arg(long, requires = "listen", value_name = "N")]
        max_requests: Option<u64>,
    },
    /// What applying the host config would change, in order.
    Plan {
        /// The host config to plan from (`-` reads it from stdin).
        #[arg(short = 'f', long = "file", default_value = crate::apply::config::DEFAULT_PATH)]
        file: String,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Converge the host to its config (VFs, MIG, GPU instances, vGPUs, mdevs).
    Apply {
        /// The host config to converge to (`-` reads it from stdin).
        #[arg(short = 'f', long = "file", default_value = crate::apply::config::DEFAULT_PATH)]
        file: String,
        /// Change nothing: exit 0 when the host matches, 2 when changes are pending.
        #[arg(long)]
        check: bool,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Write the current host as a config (TOML), or the configuration an
    /// engine needs for it (--format nova: the nova.conf vGPU options), to stdout.
    Export {
        /// `toml`: the host as a vgpuctl config; `nova`: the nova.conf
        /// [devices]/[mdev_<type>] options for the host config; `kubevirt`:
        /// the KubeVirt CR's permittedHostDevices and mediated-device
        /// configuration for it (docs/fleet.md).
        #[arg(long, default_value = "toml", value_parser = ["toml", "nova", "kubevirt"])]
        format: String,
        /// With --format nova: the host config to export (default: the host
        /// config when there is one, else the host as it is now).
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        /// With --format nova: the Nova release the options are for, by name
        /// or version (wallaby, xena, 2024.1, 29.0.0; default: 2024.1 or later).
        #[arg(long, value_parser = |s: &str| s.parse::<crate::fleet::nova::Release>())]
        nova_release: Option<crate::fleet::nova::Release>,
        /// With --format kubevirt: this host's Kubernetes node name
        /// (default: its hostname), for nodeMediatedDeviceTypes.
        #[arg(long)]
        node: Option<String>,
    },
    /// Install the systemd units shipped with vgpuctl.
    InstallUnits {
        /// Where unit files go (below --root).
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: String,
        /// The vgpuctl binary the units run (default: this one, by the path it was started as; refused from a cargo build tree).
        #[arg(long)]
        binary: Option<String>,
        /// Print the files written as JSON (docs/schema/install-units.json).
        #[arg(long)]
        json: bool,
    },
    /// Simulated hosts for demos, tests and planning.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Build a simulated host and walk through it: no GPU needed.
    Demo {
        /// Which simulated host (see `vgpuctl sim profiles`).
        #[arg(long, default_value = "h100x8-vfio")]
        profile: String,
        /// Where to write it (default: a new folder under $TMPDIR, kept afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PassthroughCommand {
    /// Is the GPU's IOMMU group viable, and what blocks it (sysfs only; --probe opens it through VFIO).
    Check {
        /// The GPU: PCI address (0000:18:00.0 or 18:00.0), GPU UUID or nvidia-smi index.
        #[arg(value_parser = gpu_ref::gpu_ref)]
        gpu: gpu_ref::GpuRef,
        /// Also open the device through VFIO and report regions and IRQs (needs it on vfio-pci).
        #[arg(long)]
        probe: bool,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Move the GPU and its slot's other functions to vfio-pci.
    Prepare {
        /// The GPU: PCI address (0000:18:00.0 or 18:00.0), GPU UUID or nvidia-smi index.
        #[arg(value_parser = gpu_ref::gpu_ref)]
        gpu: gpu_ref::GpuRef,
        /// Allow the host's boot display.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Give the GPU and its functions back to their previous drivers.
    Release {
        /// The GPU: PCI address (0000:18:00.0 or 18:00.0), GPU UUID or nvidia-smi index.
        #[arg(value_parser = gpu_ref::gpu_ref)]
        gpu: gpu_ref::GpuRef,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Run as libvirt's qemu hook: <domain> <op> <subop> <extra>, domain XML on stdin.
    Qemu {
        /// What libvirt passes: <domain> <operation> <sub-operation> <extra> (the domain XML comes on stdin).
        #[arg(num_args = 0.., allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Dry run: what a start of this domain (XML file, or - for stdin) would create.
    Test {
        /// The domain XML: a file, or - for stdin.
        xml: PathBuf,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Install the hook into <hooks-dir>/qemu.d/vgpuctl (never replacing another hook).
    Install {
        /// libvirt's hook folder; the hook goes into its qemu.d/.
        #[arg(long, default_value = "/etc/libvirt/hooks")]
        hooks_dir: String,
        /// The vgpuctl binary the hook runs (default: this one, by the path it was started as; refused from a cargo build tree).
        #[arg(long)]
        binary: Option<String>,
        /// Install the shell script hooks/qemu instead of a symlink to the binary.
        #[arg(long)]
        script: bool,
        /// Print what was installed as JSON (docs/schema/hook-install.json).
        #[arg(long)]
        json: bool,
    },
    /// Remove vgpuctl's hook.
    Uninstall {
        /// libvirt's hook folder; the hook is removed from its qemu.d/.
        #[arg(long, default_value = "/etc/libvirt/hooks")]
        hooks_dir: String,
        /// Print what was removed as JSON (docs/schema/hook-uninstall.json).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Machine-readable output (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    /// Do not ask nvidia-smi for MIG mode (faster on hosts with many GPUs).
    #[arg(long)]
    pub no_mig: bool,
}

#[derive(Debug, Args)]
pub struct TypesArgs {
    /// Print the result as JSON (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    /// Only this GPU: PCI address, GPU UUID or nvidia-smi index.
    #[arg(long, value_parser = gpu_ref::gpu_ref, conflicts_with = "parent")]
    pub gpu: Option<gpu_ref::GpuRef>,
    /// Only this parent (PCI address of a GPU/VF, or a virtual parent like mbochs).
    #[arg(long, value_parser = parse_parent)]
    pub parent: Option<MdevParent>,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Write a simulated host tree into DIR (missing or empty).
    Create {
        /// Where to write the simulated host (a missing or empty folder).
        dir: PathBuf,
        /// Which simulated host (see `vgpuctl sim profiles`).
        #[arg(long, default_value = "h100x8-vfio")]
        profile: String,
        /// Enable every GPU's SR-IOV VFs right away (as `vgpuctl sriov enable all` would).
        #[arg(long)]
        vfs: bool,
    },
    /// The built-in profiles.
    Profiles,
}

fn parse_parent(s: &str) -> Result<MdevParent, String> {
    s.parse().map_err(|e: crate::ids::IdError| e.to_string())
}

/// Every failure a command reports; printed with its whole source chain.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    #[error("cannot encode JSON output")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Mdev(#[from] crate::mdev::MdevError),
    #[error(transparent)]
    Units(#[from] crate::units::UnitError),
    #[error(transparent)]
    Vgpu(#[from] crate::vgpu::VgpuError),
    #[error(transparent)]
    Sriov(#[from] crate::sriov::SriovError),
    #[error(transparent)]
    Nvctl(#[from] crate::nvidia::ControlError),
    /// The command line itself is wrong (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The host as it is now does not allow it (exit 3).
    #[error("{0}")]
    Refused(String),
    /// A tool, helper or driver it needs is missing (exit 4).
    #[error("{0}")]
    Unavailable(String),
    /// An I/O or driver failure (exit 1).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Template(#[from] crate::libvirt::templates::TemplateError),
    #[error(transparent)]
    Generate(#[from] crate::libvirt::generate::GenerateError),
    #[error(transparent)]
    DomainXml(#[from] crate::libvirt::domain_xml::DomainXmlError),
    #[error(transparent)]
    Hook(#[from] crate::hook::HookError),
    #[error(transparent)]
    Mig(#[from] crate::mig::backend::MigError),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Passthrough(#[from] crate::vfio::passthrough::PassthroughError),
    #[error(transparent)]
    HookInstall(#[from] crate::hook::install::InstallError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Serve(#[from] crate::metrics::http::ServeError),
}

/// Opens the host and tells its NVIDIA driver what this command will read,
/// so one NVML session answers all of it.
fn open_host(cli: &Cli) -> Result<Host, CliError> {
    let host = crate::open_host(cli.root.as_deref())?;
    if let Some(wants) = driver_wants(&cli.command) {
        host.nvidia().expect(wants);
        // These commands will ask: NVML starts while sysfs is read.
        host.nvidia().prefetch(&host);
    }
    Ok(host)
}

/// What each command reads from the NVIDIA driver beyond MIG modes and
/// UUIDs (which every inventory reads); `None` for commands that may not
/// ask it at all (the hook declares per domain).
fn driver_wants(cmd: &Command) -> Option<Wants> {
    Some(match cmd {
        Command::List(_) => Wants::IDENTITY,
        // What `status::collect` reads (and declares again itself).
        Command::Status { .. } => crate::status::wants(false, true),
        Command::Metrics { .. } => crate::status::wants(true, true),
        // The vGPU view: mixed-size mode, names of active types, and
        // MIG-backed room (asked only of GPUs in MIG mode, whose profile
        // tables come with their instances).
        Command::Types(_) | Command::Explain { .. } | Command::Vgpu(_) | Command::Vm(_) => Wants::VGPU | Wants::MIG_INSTANCES,
        Command::Mig(m) => match m {
            // Instances bring the profile table of each GPU in MIG mode with them.
            mig::MigCommand::Status { .. } => Wants::MIG_INSTANCES,
            mig::MigCommand::Profiles { .. } | mig::MigCommand::Plan { .. } => Wants::MIG_PROFILES | Wants::MIG_INSTANCES,
            _ => Wants::MIG | Wants::VGPU,
        },
        Command::Plan { .. } | Command::Apply { .. } | Command::Export { .. } | Command::Sriov(_) => Wants::VGPU | Wants::MIG,
        _ => return None,
    })
}

pub(crate) fn print_json<T: doc::Document>(v: &T) -> Result<(), CliError> {
    write_out(&doc::render(v)?);
    Ok(())
}

/// `-q`: set once from the command line, before anything is printed.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// A note or warning for a person on stderr (not an error): silent with -q.
pub fn note(text: &str) {
    if !quiet() {
        eprintln!("{text}");
    }
}

/// Writes text for a person to stdout (nothing with -q); a closed pipe
/// (`vgpuctl list | head`) ends the output quietly instead of panicking
/// like `print!` would.
pub fn print_out(text: &str) {
    if !quiet() {
        write_out(text);
    }
}

fn write_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(exit::OK);
        }
        eprintln!("vgpuctl: cannot write output: {e}");
        std::process::exit(exit::FAILED);
    }
}

pub fn run(cli: Cli) -> Result<i32, CliError> {
    set_quiet(cli.quiet);
    match &cli.command {
        Command::List(args) => {
            let host = open_host(&cli)?;
            let inv = Inventory::scan_with(&host, &ScanOptions { usage: true, mig: !args.no_mig })?;
            if args.json {
                print_json(&inv)?;
            } else {
                print_out(&render::list(&inv));
                for w in &inv.warnings {
                    note(&format!("warning: {w}"));
                }
            }
        }
        Command::Types(args) => {
            let host = open_host(&cli)?;
            let inv = Inventory::scan_with(&host, &ScanOptions { usage: false, mig: true })?;
            let views = crate::vgpu::view::build(&inv, &crate::vgpu::view::HostFacts { host: &host });
            let report = crate::types::report(&inv, views, args.parent.as_ref(), gpu_ref::resolve_opt(&host, args.gpu.as_ref())?);
            if args.json {
                print_json(&report)?;
            } else {
                print_out(&crate::types::render(&report));
            }
        }
        Command::Sim(SimCommand::Create { dir, profile, vfs }) => {
            let state = crate::sim::create(dir, profile)?;
            if *vfs {
                let host = crate::open_host(Some(dir))?;
                if crate::sriov::status(&host)?.iter().any(|s| s.num_vfs < s.total_vfs) {
                    crate::sriov::set(&host, None, None, std::time::Duration::from_secs(30), std::time::Duration::from_secs(30))?;
                }
            }
            print_out(&format!(
                "Created simulated host {:?} ({} GPUs) in {}. Read it with: vgpuctl --root {} list\n",
                state.profile,
                state.gpus.len(),
                dir.display(),
                dir.display()
            ));
        }
        Command::Mdev(cmd) => {
            let host = open_host(&cli)?;
            return mdev::run(&host, cmd);
        }
        Command::Vgpu(cmd) => {
            let host = open_host(&cli)?;
            return vgpu::run_vgpu(&host, cmd);
        }
        Command::Sriov(cmd) => {
            let host = open_host(&cli)?;
            return vgpu::run_sriov(&host, cmd);
        }
        Command::Vm(cmd) => {
            let host = open_host(&cli)?;
            return vm::run(&host, cmd);
        }
        Command::Status { json, watch, count } => {
            let host = open_host(&cli)?;
            let mut n = 0u64;
            loop {
                // Every refresh asks the driver again (the first one's answer
                // was started ahead, with the host).
                if n > 0 {
                    host.nvidia().forget();
                }
                let s = crate::status::status(&host)?;
                if *json {
                    print_out(&json_line(&s)?);
                } else {
                    // Clear the screen only for a person at a terminal, not into a pipe.
                    if watch.is_some() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        print_out("\x1b[H\x1b[2J");
                    }
                    print_out(&crate::status::render(&s));
                }
                n += 1;
                match (watch, count) {
                    (Some(_), Some(c)) if n >= *c => break,
                    (Some(w), _) => std::thread::sleep(std::time::Duration::from_secs((*w).max(1))),
                    (None, _) => break,
                }
            }
        }
        Command::Metrics { textfile, listen, allow_remote, max_requests } => {
            if let Some(path) = textfile {
                crate::metrics::check_textfile(path).map_err(|e| CliError::Usage(e.to_string()))?;
            }
            let host = open_host(&cli)?;
            match (textfile, listen) {
                (Some(path), _) => crate::metrics::write_textfile(&host, path)?,
                (None, Some(addr)) => {
                    crate::metrics::http::check_addr(*addr, *allow_remote).map_err(|e| CliError::Usage(e.to_string()))?;
                    let mut gather = || crate::metrics::gather(&host).map_err(|e| crate::error_chain(&e));
                    crate::metrics::http::serve(*addr, *max_requests, &mut |a| eprintln!("vgpuctl: serving metrics at http://{a}/metrics"), &mut gather)?;
                }
                (None, None) => print_out(&crate::metrics::gather(&host)?),
            }
        }
        Command::Plan { file, json } => {
            let host = open_host(&cli)?;
            let cfg = load_config(&host, file)?;
            let p = crate::apply::plan(&host, &cfg)?;
            if *json {
                print_json(&p)?;
            } else {
                print_out(&render_plan(&p));
            }
        }
        Command::Apply { file, check, json } => {
            let host = open_host(&cli)?;
            let cfg = load_config(&host, file)?;
            if *check {
                let p = crate::apply::plan(&host, &cfg)?;
                let pending = !p.steps.is_empty();
                if *json {
                    // The apply document, `changed` meaning "would change".
                    print_json(&crate::apply::Applied {
                        schema_version: p.schema_version,
                        changed: !p.steps.is_empty(),
                        steps: p.steps,
                        untouched: p.untouched,
                    })?;
                } else {
                    print_out(&render_plan(&p));
                }
                return Ok(if pending { exit::PENDING } else { exit::OK });
            }
            let quiet = *json;
            let r = crate::apply::apply(&host, &cfg, &mut |n, total, s| {
                if !quiet {
                    note(&format!("[{n}/{total}] {}", s.describe()));
                }
            })?;
            if *json {
                print_json(&r)?;
            } else {
                print_out(if r.changed { "applied\n" } else { "the host already matches its config\n" });
            }
        }
        Command::Export { format, file, nova_release, node } => {
            let host = open_host(&cli)?;
            if nova_release.is_some() && format != "nova" {
                return Err(CliError::Usage("--nova-release goes with --format nova".into()));
            }
            if node.is_some() && format != "kubevirt" {
                return Err(CliError::Usage("--node goes with --format kubevirt".into()));
            }
            if format == "nova" {
                return export_nova(&host, file.as_deref(), nova_release.unwrap_or(crate::fleet::nova::Release::Caracal));
            }
            if format == "kubevirt" {
                return export_kubevirt(&host, file.as_deref(), node.as_deref());
            }
            if file.is_some() {
                return Err(CliError::Usage("--file goes with --format nova or kubevirt".into()));
            }
            let cfg = crate::apply::export(&host)?;
            print_out(&format!(
                "# vgpuctl host config, exported from the current host\n{}",
                toml::to_string(&cfg).map_err(|e| CliError::Failed(e.to_string()))?
            ));
        }
        Command::Mig(cmd) => {
            let host = open_host(&cli)?;
            return mig::run(&host, cmd);
        }
        Command::Passthrough(cmd) => {
            let host = open_host(&cli)?;
            return run_passthrough(&host, cmd);
        }
        Command::Hook(cmd) => {
            let host = open_host(&cli)?;
            return run_hook(&host, cmd);
        }
        Command::Gc { grace, json } => {
            let host = open_host(&cli)?;
            let r = crate::hook::gc(&host, std::time::Duration::from_secs(*grace))?;
            if *json {
                print_json(&doc::Versioned::new(Cleaned { cleaned: r }))?;
            } else {
                let text: String = r.iter().map(|i| format!("{} ({}): {}\n", i.domain, i.key, i.action)).collect();
                print_out(if text.is_empty() { "nothing to clean up\n" } else { &text });
            }
        }
        Command::Explain { type_name, json } => {
            let host = open_host(&cli)?;
            return vgpu::run_explain(&host, type_name, *json);
        }
        Command::InstallUnits { unit_dir, binary, json } => {
            let host = open_host(&cli)?;
            let binary = crate::binary::chosen(binary.as_deref()).map_err(crate::units::UnitError::from)?;
            let written = crate::units::install(&host, unit_dir, &binary)?;
            if *json {
                print_json(&doc::Versioned::new(UnitsInstalled { written, binary }))?;
                return Ok(exit::OK);
            }
            let mut text = String::new();
            for w in &written {
                text.push_str(&format!("wrote {w}\n"));
            }
            text.push_str("Now run: systemctl daemon-reload && systemctl enable vgpuctl-apply.service (host config) or vgpuctl-mdev-restore.service (mdev definitions only); systemctl enable --now vgpuctl-gc.timer (frees leftovers of crashed VM starts); systemctl enable --now vgpuctl-metrics.timer for Prometheus (node_exporter textfile)\n");
            print_out(&text);
        }
        Command::Demo { profile, dir } => demo(profile, dir.as_deref())?,
        Command::Sim(SimCommand::Profiles) => {
            let text: String = crate::sim::PROFILES.iter().map(|p| format!("{:<14} {}\n", p.name, p.summary)).collect();
            print_out(&text);
        }
    }
    Ok(exit::OK)
}

pub fn error_line(e: &dyn std::error::Error) -> String {
    crate::error_chain(e)
}

/// An error as one JSON object (for `--json`): the message with its cause
/// chain, its class and the exit code that goes with it.
pub fn error_json(e: &CliError) -> String {
    let code = e.exit_code();
    let kind = match code {
        exit::USAGE => doc::ErrorKind::Usage,
        exit::REFUSED => doc::ErrorKind::Refused,
        exit::UNAVAILABLE => doc::ErrorKind::Unavailable,
        _ => doc::ErrorKind::Failed,
    };
    let error = error_line(e);
    let items = doc::named_items(&error);
    let d = doc::ErrorDoc { schema_version: doc::SCHEMA_VERSION, error, kind, exit_code: code, items };
    // An error document cannot fail to encode; the fallback keeps stderr JSON anyway.
    serde_json::to_string(&d).unwrap_or_else(|_| format!("{{\"schema_version\":{},\"exit_code\":{code}}}", doc::SCHEMA_VERSION))
}

/// One compact line (for `status --watch --json`, a document per refresh).
fn json_line<T: doc::Document>(v: &T) -> Result<String, CliError> {
    let mut text = serde_json::to_string(v)?;
    text.push('\n');
    Ok(text)
}

/// `gc --json`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Cleaned {
    /// What was freed, one entry per device.
    pub cleaned: Vec<crate::hook::GcItem>,
}

/// `hook test --json`: what `prepare begin` would do for the domain.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct HookTest {
    pub domain: String,
    pub actions: Vec<crate::hook::Action>,
}

/// The host config from `-f FILE`, or from stdin with `-f -` (what a
/// configuration tool checks without writing a file first).
fn load_config(host: &Host, file: &str) -> Result<crate::apply::config::HostConfig, CliError> {
    if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .map_err(|e| CliError::Failed(format!("cannot read the host config from stdin: {e}")))?;
        return Ok(crate::apply::config::parse(&text, "<stdin>").map_err(crate::apply::ApplyError::from)?);
    }
    Ok(crate::apply::config::load(host, file).map_err(crate::apply::ApplyError::from)?)
}

/// The host config an export is for: `-f FILE`, else the host config when
/// there is one, else the host as it is now.
fn export_config(host: &Host, file: Option<&str>) -> Result<crate::apply::config::HostConfig, CliError> {
    let path = file.unwrap_or(crate::apply::config::DEFAULT_PATH);
    if file.is_some() || host.exists(path) {
        load_config(host, path)
    } else {
        Ok(crate::apply::export(host)?)
    }
}

/// What an export could not hand to `engine`: a refusal naming every GPU
/// and why when nothing is left (exit 3), else one warning per GPU.
fn left_out(engine: &str, modes: &str, nothing: bool, not_exported: &[(crate::ids::PciAddress, String)]) -> Result<(), CliError> {
    if nothing {
        let why: Vec<String> = not_exported.iter().map(|(g, w)| format!("{g}: {w}")).collect();
        let why = if why.is_empty() { format!(" (the config puts no GPU {modes})") } else { format!(": {}", why.join("; ")) };
        return Err(CliError::Refused(format!("no GPU here can be given to {engine}{why}")));
    }
    for (g, w) in not_exported {
        note(&format!("warning: not exported: {g}: {w}"));
    }
    Ok(())
}

/// `export --format kubevirt`: the KubeVirt CR (JSON, which kubectl takes as
/// YAML too), or a refusal naming each GPU when none can be handed over.
fn export_kubevirt(host: &Host, file: Option<&str>, node: Option<&str>) -> Result<i32, CliError> {
    let cfg = export_config(host, file)?;
    let hostname = match node {
        Some(n) => n.to_string(),
        None => host.read_attr_opt("/proc/sys/kernel/hostname")?.map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into()),
    };
    let e = crate::fleet::kubevirt::export(host, &cfg, &hostname).map_err(|e| CliError::Refused(e.to_string()))?;
    left_out("KubeVirt", "in vgpu or passthrough mode", e.empty, &e.not_exported)?;
    let mut text = serde_json::to_string_pretty(&e.cr)?;
    text.push('\n');
    print_out(&text);
    Ok(exit::OK)
}

/// `export --format nova`: the config, or — when Nova can be given none of
/// the host's GPUs — a refusal that says why for each (exit 3).
fn export_nova(host: &Host, file: Option<&str>, release: crate::fleet::nova::Release) -> Result<i32, CliError> {
    let cfg = export_config(host, file)?;
    let e = crate::fleet::nova::export(host, &cfg).map_err(|e| CliError::Refused(e.to_string()))?;
    left_out("Nova as an mdev type", "in vgpu mode", e.groups.is_empty(), &e.not_exported)?;
    print_out(&crate::fleet::nova::render(&e, release));
    Ok(exit::OK)
}

/// `install-units --json`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct UnitsInstalled {
    /// The unit files written, as the host names them.
    pub written: Vec<String>,
    /// The vgpuctl binary the units run.
    pub binary: String,
}

/// `hook uninstall --json`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct HookRemoved {
    pub path: String,
    /// False: there was no vgpuctl hook (nothing changed).
    pub removed: bool,
}

/// `passthrough check --json`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct PassthroughCheck {
    pub group: crate::vfio::passthrough::GroupReport,
    /// With --probe: what VFIO reports of the device (`null` without).
    pub probe: Option<crate::vfio::probe::Probe>,
}

fn render_moves(moved: &[crate::vfio::passthrough::Rebound]) -> String {
    moved.iter().map(|m| format!("{}: {} -> {}\n", m.address, m.from.as_deref().unwrap_or("no driver"), m.to.as_deref().unwrap_or("no driver"))).collect()
}

fn demo(profile: &str, dir: Option<&std::path::Path>) -> Result<(), CliError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!(
            "vgpuctl-demo-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
        )),
    };
    let state = crate::sim::create(&dir, profile)?;
    let host = crate::open_host(Some(&dir))?;
    let root = dir.display().to_string();
    let step = |cmd: &str| print_out(&format!("\n$ vgpuctl --root {root} {cmd}\n"));
    print_out(&format!("# Simulated host {:?} written to {root}\n", state.profile));
    step("list");
    print_out(&render::list(&Inventory::scan(&host)?));
    let lock = std::time::Duration::from_secs(60);
    if crate::sriov::status(&host)?.iter().any(|s| s.num_vfs == 0 && s.total_vfs > 0) {
        step("sriov enable all");
        for c in crate::sriov::set(&host, None, None, std::time::Duration::from_secs(30), lock)? {
            print_out(&format!("{}: {} -> {} VFs\n", c.gpu, c.before, c.after));
        }
    }
    let views = crate::vgpu::view::build(&Inventory::scan(&host)?, &crate::vgpu::view::HostFacts { host: &host });
    // A time-sliced type of the first vGPU GPU, to show create and explain.
    let wanted = views
        .iter()
        .flat_map(|v| v.types.iter())
        .filter(|t| t.kind == Some(crate::vgpu::typename::VgpuKind::TimeSliced) && t.creatable > 1)
        .filter_map(|t| t.name.parse::<crate::vgpu::typename::VgpuTypeName>().ok())
        .max_by_key(|t| t.framebuffer_gb.min(20));
    if let Some(t) = wanted {
        for _ in 0..2 {
            step(&format!("vgpu create --type {t}"));
            let c =
                crate::vgpu::create(&host, &crate::vgpu::VgpuCreateRequest { type_name: t.clone(), gpu: None, uuid: None, policy: Default::default() }, lock)?;
            print_out(&format!(
                "{} on {} ({})\n",
                c.type_name,
                c.gpu,
                c.vf.map(|v| format!("VF {v}")).or(c.uuid.map(|u| format!("mdev {u}"))).unwrap_or_default()
            ));
        }
        let smaller = format!("{}-{}{}", t.model, (t.framebuffer_gb / 2).max(1), t.series.letter());
        if let Ok(other) = smaller.parse::<crate::vgpu::typename::VgpuTypeName>() {
            step(&format!("explain --type {other}"));
            let (_, views) = crate::vgpu::views(&host)?;
            print_out(&crate::vgpu::explain::render(&crate::vgpu::explain::explain(&views, &other)));
        }
    }
    let inv = Inventory::scan(&host)?;
    let views = crate::vgpu::view::build(&inv, &crate::vgpu::view::HostFacts { host: &host });
    let first: Vec<_> = views.into_iter().take(1).collect();
    step("types   (first GPU shown)");
    print_out(&crate::types::render(&crate::types::report(&inv, first, None, None)));
    print_out(&format!("\nExplore further with: vgpuctl --root {root} list --json\n"));
    Ok(())
}

fn run_hook(host: &Host, cmd: &HookCommand) -> Result<i32, CliError> {
    match cmd {
        HookCommand::Qemu { args } => Ok(crate::hook::run_qemu(host, args, &mut std::io::stdin().lock())),
        HookCommand::Test { xml, json } => {
            let d = crate::libvirt::domain_xml::parse(&vm::read_xml_arg(xml)?)?;
            let actions = crate::hook::plan(host, &d)?;
            if *json {
                print_json(&doc::Versioned::new(HookTest { domain: d.name.clone(), actions }))?;
            } else {
                let mut text = format!("on `prepare begin` of {}:\n", d.name);
                if actions.is_empty() {
                    text.push_str("  nothing to do (no vgpuctl metadata, no mdev hostdevs)\n");
                }
                for a in &actions {
                    text.push_str(&match a {
                        crate::hook::Action::Mdev { uuid, mdev_type, parent } => {
                            format!(
                                "  mdev {uuid}: {mdev_type} on {}\n",
                                parent.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "any parent with room".into())
                            )
                        }
                        crate::hook::Action::LegacyVgpu { uuid, type_name, .. } => format!("  vGPU {type_name} as mdev {uuid} on a GPU with room\n"),
                        crate::hook::Action::VendorVgpu { vf, type_name } => format!("  vGPU {type_name} written to VF {vf}\n"),
                        crate::hook::Action::Note { what } => format!("  {what}\n"),
                    });
                }
                text.push_str("on `release end`: free exactly what that start created\n");
                print_out(&text);
            }
            Ok(exit::OK)
        }
        HookCommand::Install { hooks_dir, binary, script, json } => {
            let bin = crate::binary::chosen(binary.as_deref()).map_err(crate::hook::install::InstallError::from)?;
            let r = crate::hook::install::install(host, hooks_dir, &bin, *script)?;
            if *json {
                print_json(&doc::Versioned::new(r))?;
            } else {
                print_out(&format!("installed {} ({} to {bin})\n{}\n", r.path, r.kind, r.note));
            }
            Ok(exit::OK)
        }
        HookCommand::Uninstall { hooks_dir, json } => {
            let removed = crate::hook::install::uninstall(host, hooks_dir)?;
            if *json {
                let path = format!("{}/qemu.d/vgpuctl", hooks_dir.trim_end_matches('/'));
                print_json(&doc::Versioned::new(HookRemoved { path, removed }))?;
            } else if removed {
                print_out("removed vgpuctl's hook; restart libvirtd for it to take effect\n");
            } else {
                print_out("vgpuctl's hook was not installed; nothing to do\n");
            }
            Ok(exit::OK)
        }
    }
}

fn render_group(r: &crate::vfio::passthrough::GroupReport) -> String {
    let mut t =
        format!("{} IOMMU group {}: {}\n", r.address, r.group, if r.viable { "viable".to_string() } else { format!("NOT viable ({})", r.blockers.join(", ")) });
    for m in &r.members {
        t.push_str(&format!(
            "  {} {} {}{}\n",
            m.address,
            m.class.as_deref().unwrap_or("?"),
            m.driver.as_deref().unwrap_or("(no driver)"),
            if m.ok { "" } else { "  <- blocks" }
        ));
    }
    if r.boot_vga {
        t.push_str("  boot display: refused unless --force\n");
    }
    t
}

fn run_passthrough(host: &Host, cmd: &PassthroughCommand) -> Result<i32, CliError> {
    use crate::vfio::passthrough;
    let lock = std::time::Duration::from_secs(60);
    match cmd {
        PassthroughCommand::Check { gpu, probe, json } => {
            let gpu = gpu_ref::resolve(host, gpu)?;
            let r = passthrough::check(host, gpu)?;
            let p = if *probe { Some(crate::vfio::probe::probe(gpu).map_err(CliError::Failed)?) } else { None };
            if *json {
                print_json(&doc::Versioned::new(PassthroughCheck { group: r.clone(), probe: p.clone() }))?;
            } else {
                let mut t = render_group(&r);
                if let Some(p) = p {
                    t.push_str(&format!("  VFIO: {} regions, {} IRQ types, max {} interrupts\n", p.regions.len(), p.irqs.len(), p.max_interrupts));
                    for reg in &p.regions {
                        t.push_str(&format!("    region {}: {} bytes, flags {:#x}\n", reg.index, reg.size, reg.flags));
                    }
                }
                print_out(&t);
            }
            Ok(if r.viable { exit::OK } else { exit::FAILED })
        }
        PassthroughCommand::Prepare { gpu, force, json } => {
            let r = passthrough::prepare(host, gpu_ref::resolve(host, gpu)?, *force, lock)?;
            if *json {
                print_json(&doc::Versioned::new(r))?;
            } else if r.moved.is_empty() {
                print_out(&format!("{}: already on vfio-pci; nothing to do\n", r.group.address));
            } else {
                print_out(&render_moves(&r.moved));
            }
            Ok(exit::OK)
        }
        PassthroughCommand::Release { gpu, json } => {
            let r = passthrough::release(host, gpu_ref::resolve(host, gpu)?, lock)?;
            if *json {
                print_json(&doc::Versioned::new(r))?;
            } else {
                print_out(&render_moves(&r.moved));
            }
            Ok(exit::OK)
        }
    }
}

fn render_plan(p: &crate::apply::Plan) -> String {
    let mut t = String::new();
    if p.steps.is_empty() {
        t.push_str("the host matches its config: nothing to do\n");
    }
    for (i, s) in p.steps.iter().enumerate() {
        t.push_str(&format!("{:>3}. {}\n", i + 1, s.describe()));
    }
    // What each MIG layout keeps, moves and makes, when it changes anything.
    for l in p.layouts.iter().filter(|l| !(l.moves.is_empty() && l.make.is_empty() && l.destroy.is_empty())) {
        t.push_str(&format!("     {} layout:", l.gpu));
        for (what, list) in [("stay", &l.stay), ("move", &l.moves), ("make", &l.make), ("destroy", &l.destroy)] {
            if !list.is_empty() {
                t.push_str(&format!(" {what} {};", list.join(", ")));
            }
        }
        t.pop();
        t.push('\n');
    }
    for u in &p.untouched {
        t.push_str(&format!("     left alone (not in the config): {u}\n"));
    }
    t
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every option and argument of every (sub)command, `vm define` and
    /// friends included, with the path of commands leading to it, that has
    /// no help sentence.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || matches!(id, "help" | "version") {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for s in cmd.get_subcommands() {
            if s.get_name() != "help" {
                undocumented(s, &format!("{path} {}", s.get_name()), out);
            }
        }
    }

    #[test]
    fn test_every_option_of_every_command_has_a_sentence() {
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "vgpuctl", &mut missing);
        assert!(missing.is_empty(), "options without help ({}):\n{}", missing.len(), missing.join("\n"));
    }
}
