//! `vgpuctl vm …`: domain XML, and (through the vgpuctl-libvirt helper,
//! which links libvirt so this binary does not have to) define, attach,
//! detach and show against libvirtd.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{print_json, print_out, CliError};
use crate::host::Host;
use crate::ids::{MdevParent, MdevUuid};
use crate::libvirt::domain_xml::{self, DomainGpus, Hostdev};
use crate::libvirt::generate::{self, DeviceSpec, DomainName, DomainSpec};
use crate::libvirt::templates::Templates;
use crate::vgpu::alloc::Policy;
use crate::vgpu::typename::VgpuTypeName;

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// The GPU devices a command asks for; shared by `vm xml`, `define`, `attach`.
#[derive(Debug, Args, Clone, Default)]
pub struct DeviceArgs {
    /// A vGPU by type name (repeatable): H100-10C, A100D-3-40C, T4-4Q.
    #[arg(long, value_parser = super::vgpu::parse_type_arg)]
    pub vgpu: Vec<VgpuTypeName>,
    /// With --vgpu: only this GPU (PCI address, GPU UUID or nvidia-smi index).
    #[arg(long, value_parser = super::gpu_ref::gpu_ref)]
    pub gpu: Option<super::gpu_ref::GpuRef>,
    /// With --vgpu: which GPU when several can take it: pack (most vGPUs of this size) or spread (fewest vGPUs).
    #[arg(long, value_enum, default_value_t = Policy::Pack)]
    pub policy: Policy,
    /// An existing or defined mdev by UUID (repeatable).
    #[arg(long, value_parser = |s: &str| s.parse::<MdevUuid>().map_err(|e| e.to_string()))]
    pub mdev: Vec<MdevUuid>,
    /// A new mdev of this type (directory name or name), made by the hook at start (repeatable).
    #[arg(long)]
    pub mdev_type: Vec<String>,
    /// With --mdev-type: only this parent.
    #[arg(long, value_parser = |s: &str| s.parse::<MdevParent>().map_err(|e| e.to_string()))]
    pub parent: Option<MdevParent>,
    /// A whole GPU (PCI address, GPU UUID or nvidia-smi index), with the other functions of its slot (repeatable).
    #[arg(long, value_parser = super::gpu_ref::gpu_ref)]
    pub passthrough: Vec<super::gpu_ref::GpuRef>,
    /// With --passthrough: allow the host's boot display.
    #[arg(long)]
    pub force: bool,
    /// mdev display (on/off): a vGPU's own display through VNC/SPICE.
    #[arg(long, value_parser = parse_on_off)]
    pub display: Option<bool>,
    /// mdev ramfb (on/off): boot display before the guest driver loads.
    #[arg(long, value_parser = parse_on_off)]
    pub ramfb: Option<bool>,
    /// With --passthrough: a ROM file for the GPU.
    #[arg(long)]
    pub rom_file: Option<String>,
    /// With --passthrough: expose the ROM BAR (on/off).
    #[arg(long, value_parser = parse_on_off)]
    pub rom_bar: Option<bool>,
}

impl DeviceArgs {
    pub fn resolve(&self, host: &Host) -> Result<Vec<DeviceSpec>, CliError> {
        let mut out = Vec::new();
        if !self.vgpu.is_empty() {
            let gpu = super::gpu_ref::resolve_opt(host, self.gpu.as_ref())?;
            out.extend(generate::resolve_vgpus(host, &self.vgpu, gpu, self.policy, self.display)?);
        }
        for u in &self.mdev {
            out.push(generate::resolve_mdev(host, *u, self.display, self.ramfb)?);
        }
        for t in &self.mdev_type {
            out.push(generate::resolve_mdev_type(host, t, self.parent.clone(), self.display, self.ramfb)?);
        }
        for a in &self.passthrough {
            let a = super::gpu_ref::resolve(host, a)?;
            out.push(generate::resolve_passthrough(host, a, self.force, self.rom_file.clone(), self.rom_bar)?);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.vgpu.is_empty() && self.mdev.is_empty() && self.mdev_type.is_empty() && self.passthrough.is_empty()
    }
}

#[derive(Debug, Args, Clone)]
pub struct DomainArgs {
    /// The domain's name.
    #[arg(long, value_parser = |s: &str| s.parse::<DomainName>())]
    pub name: DomainName,
    /// Memory in MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory: u64,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 4)]
    pub vcpus: u32,
    /// Disk image path, or `none`.
    #[arg(long, default_value = "none")]
    pub disk: String,
    /// The disk image's format (qcow2, raw).
    #[arg(long, default_value = "qcow2", value_parser = ["qcow2", "raw"])]
    pub disk_format: String,
    /// Domain type: kvm, or qemu (TCG, for test hosts without KVM).
    #[arg(long = "domain-type", default_value = "kvm", value_parser = ["kvm", "qemu"])]
    pub domain_type: String,
    /// The domain's UUID (default: a new random one).
    #[arg(long)]
    pub uuid: Option<uuid::Uuid>,
    /// The guest OS: recorded as a libosinfo id; windows also refuses
    /// MIG-backed vGPUs (Linux guests only) and adds Hyper-V enlightenments.
    #[arg(long, value_enum)]
    pub os: Option<crate::libvirt::guest::GuestOs>,
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Templates folder (default: /etc/vgpuctl/xml-templates, /usr/share/vgpuctl/xml-templates, built-in).
    #[arg(long, env = "VGPUCTL_TEMPLATES")]
    pub templates: Option<PathBuf>,
}

impl DomainArgs {
    pub fn render(&self, host: &Host) -> Result<String, CliError> {
        let t = Templates::load(crate::libvirt::templates::find_dir(host, self.templates.as_deref()).as_deref())?;
        let disk = match self.disk.as_str() {
            "none" => None,
            p => Some(generate::check_path(p)?),
        };
        let spec = DomainSpec {
            name: self.name.clone(),
            uuid: self.uuid.unwrap_or_else(uuid::Uuid::new_v4),
            memory_mib: self.memory,
            vcpus: self.vcpus,
            disk,
            disk_format: self.disk_format.clone(),
            domain_type: self.domain_type.clone(),
            devices: {
                crate::libvirt::guest::check(self.os, &self.devices.vgpu).map_err(|e| CliError::Usage(e.to_string()))?;
                self.devices.resolve(host)?
            },
            os: self.os,
        };
        Ok(generate::domain(&t, &spec)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Print a domain XML with the GPUs asked for (nothing is created).
    Xml(DomainArgs),
    /// Print the hostdev XML for the devices asked for (for `virsh attach-device`).
    HostdevXml {
        #[command(flatten)]
        devices: DeviceArgs,
        /// Templates folder (default: /etc/vgpuctl/xml-templates, /usr/share/vgpuctl/xml-templates, built-in).
        #[arg(long, env = "VGPUCTL_TEMPLATES")]
        templates: Option<PathBuf>,
    },
    /// Explain a domain's GPUs from its XML (a file, or - for stdin).
    Explain {
        /// The domain XML: a file, or - for stdin.
        xml: PathBuf,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// define, attach, detach, show: parsed here, run by vgpuctl-libvirt.
    #[command(flatten)]
    Libvirt(crate::cli::vm_libvirt::Cmd),
}

/// Runs the libvirt helper with the arguments this command was given, from
/// the subcommand on (vgpuctl has parsed them already, so they are valid).
fn exec_helper(root: Option<&std::path::Path>) -> Result<i32, CliError> {
    use std::os::unix::process::CommandExt;
    let argv: Vec<String> = std::env::args().collect();
    // `… vm <define|attach|detach|show> …`: the first `vm` followed by one
    // of them (a global option's value may itself be "vm").
    let Some(at) = argv.windows(2).position(|w| w[0] == "vm" && crate::cli::vm_libvirt::Cmd::NAMES.contains(&w[1].as_str())) else {
        return Err(CliError::Usage("cannot find the vm subcommand in the command line".into()));
    };
    // Found where every helper is: VGPUCTL_LIBVIRT_HELPER, beside vgpuctl,
    // the package's libexec folder, PATH.
    let Some(h) = crate::host::CommandRunner::from_env().locate(crate::host::Tool::LibvirtHelper) else {
        return Err(CliError::Unavailable(format!("vgpuctl-libvirt is not installed ({})", crate::host::HELPER_HINT)));
    };
    let mut c = std::process::Command::new(&h);
    c.args(&argv[at + 1..]);
    if let Some(r) = root {
        c.env("VGPUCTL_ROOT", r);
    }
    let e = c.exec();
    Err(CliError::Unavailable(format!("cannot run {}: {e}", h.display())))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeviceState {
    pub request: Option<DeviceSpec>,
    pub hostdev: Option<Hostdev>,
    pub state: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VmReport {
    pub schema_version: u32,
    pub domain: String,
    pub devices: Vec<DeviceState>,
    pub warnings: Vec<String>,
}

/// What each GPU request and hostdev of a domain means on this host now.
pub fn report(host: &Host, d: &DomainGpus) -> VmReport {
    let mut devices = Vec::new();
    let mdev_exists = |u: &MdevUuid| host.exists(&format!("/sys/bus/mdev/devices/{u}"));
    let mut covered = Vec::new();
    for r in &d.requests {
        let hostdev = r.hostdev();
        covered.push(hostdev.clone());
        let state = match r {
            DeviceSpec::Mdev { uuid, mdev_type, parent, .. } => {
                if mdev_exists(uuid) {
                    "mdev exists".to_string()
                } else {
                    format!("created by the hook at start ({mdev_type}{})", parent.as_ref().map(|p| format!(" on {p}")).unwrap_or_default())
                }
            }
            DeviceSpec::VendorVgpu { type_name, vf, .. } => {
                let cur = host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type")).ok().flatten();
                match cur.as_deref().map(str::trim) {
                    None => format!("VF {vf} is not present (VFs enabled?)"),
                    Some("0") => format!("{type_name} written to VF {vf} by the hook at start"),
                    Some(t) => format!("VF {vf} holds type {t}"),
                }
            }
            DeviceSpec::LegacyVgpu { type_name, uuid: u, .. } => {
                if mdev_exists(u) {
                    "mdev exists".into()
                } else {
                    format!("{type_name} created by the hook at start on a GPU with room")
                }
            }
            DeviceSpec::Passthrough { address, .. } => {
                let drv = host.link_name(&format!("/sys/bus/pci/devices/{address}/driver")).ok().flatten();
                format!("bound to {}", drv.unwrap_or_else(|| "no driver".into()))
            }
        };
        devices.push(DeviceState { request: Some(r.clone()), hostdev: Some(hostdev), state });
    }
    for h in &d.hostdevs {
        if covered.contains(h) {
            continue;
        }
        let state = match h {
            Hostdev::Mdev { uuid } if mdev_exists(uuid) => "mdev exists (not managed by vgpuctl metadata)".to_string(),
            Hostdev::Mdev { uuid } => match crate::mdev::definitions::find(host, uuid) {
                Ok(Some(def)) => format!("created by the hook at start from its definition ({} on {})", def.mdev_type, def.parent),
                _ => "missing: no such mdev and no definition; the VM will not start".into(),
            },
            Hostdev::Pci { address, .. } => format!("PCI device {address}"),
        };
        devices.push(DeviceState { request: None, hostdev: Some(h.clone()), state });
    }
    let mut warnings = Vec::new();
    match crate::libvirt::guest::check(d.guest_os(), &d.vgpu_types()) {
        Ok(notes) => warnings.extend(notes),
        Err(e) => warnings.push(format!("{e}; the VM will not start with it")),
    }
    VmReport { schema_version: crate::inventory::SCHEMA_VERSION, domain: d.name.clone(), devices, warnings }
}

pub fn render_report(r: &VmReport) -> String {
    let mut out = format!("{}\n", r.domain);
    if r.devices.is_empty() {
        out.push_str("  no GPUs\n");
    }
    for d in &r.devices {
        let what = match (&d.request, &d.hostdev) {
            (Some(DeviceSpec::LegacyVgpu { type_name, .. } | DeviceSpec::VendorVgpu { type_name, .. }), _) => format!("vGPU {type_name}"),
            (Some(DeviceSpec::Mdev { mdev_type, uuid, .. }), _) => format!("mdev {uuid} ({mdev_type})"),
            (Some(DeviceSpec::Passthrough { address, companions, .. }), _) => {
                format!("passthrough {address}{}", if companions.is_empty() { String::new() } else { format!(" (+{} functions)", companions.len()) })
            }
            (None, Some(Hostdev::Mdev { uuid })) => format!("mdev hostdev {uuid}"),
            (None, Some(Hostdev::Pci { address, managed })) => format!("pci hostdev {address} ({})", if *managed { "managed" } else { "unmanaged" }),
            (None, None) => "?".into(),
        };
        out.push_str(&format!("  {what}: {}\n", d.state));
    }
    for w in &r.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out
}

pub fn read_xml_arg(p: &std::path::Path) -> Result<String, CliError> {
    use std::io::Read;
    let mut s = String::new();
    if p == std::path::Path::new("-") {
        std::io::stdin().take(domain_xml::MAX_XML_BYTES as u64 + 1).read_to_string(&mut s).map_err(|e| CliError::Failed(format!("cannot read stdin: {e}")))?;
    } else {
        s = std::fs::read_to_string(p).map_err(|e| CliError::Failed(format!("cannot read {}: {e}", p.display())))?;
    }
    Ok(s)
}

pub fn run(host: &Host, cmd: &VmCommand) -> Result<i32, CliError> {
    match cmd {
        VmCommand::Libvirt(_) => return exec_helper((!host.is_real_root()).then(|| host.root())),
        VmCommand::Xml(args) => print_out(&format!("{}\n", args.render(host)?)),
        VmCommand::HostdevXml { devices, templates } => {
            let t = Templates::load(crate::libvirt::templates::find_dir(host, templates.as_deref()).as_deref())?;
            let mut out = String::new();
            for (i, d) in devices.resolve(host)?.iter().enumerate() {
                for h in generate::hostdevs(&t, d, 0x10 + i as u8)? {
                    out.push_str(h.trim_start());
                    out.push('\n');
                }
            }
            print_out(&out);
        }
        VmCommand::Explain { xml, json } => {
            let d = domain_xml::parse(&read_xml_arg(xml)?)?;
            let r = report(host, &d);
            if *json {
                print_json(&r)?;
            } else {
                print_out(&render_report(&r));
            }
        }
    }
    Ok(super::exit::OK)
}
