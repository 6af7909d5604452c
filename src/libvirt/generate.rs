//! Domain XML and hostdev fragments from the templates, and the checks that
//! turn command-line wishes (`--vgpu H100-10C`, `--mdev U`, `--passthrough P`)
//! into concrete devices.

use std::fmt;
use std::str::FromStr;

use minijinja::{context, Value};
use serde::Serialize;

use super::templates::{safe, TemplateError, Templates};
use crate::host::Host;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid, PciAddress};
use crate::inventory::{Inventory, ScanOptions};
use crate::vgpu::alloc::{self, Policy};
use crate::vgpu::typename::VgpuTypeName;
use crate::vgpu::view::{self, HostFacts, Slot, TypeRef};

/// A libvirt domain name: no control characters and no `/` (libvirt uses
/// names as file names); quotes, `<` and `&` are fine and get escaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct DomainName(String);

impl FromStr for DomainName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 200 {
            return Err(format!("domain name {s:?} must be 1-200 bytes"));
        }
        if s.chars().any(|c| c.is_control()) || s.contains('/') {
            return Err(format!("domain name {s:?} must not contain '/' or control characters (newlines, tabs)"));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DomainName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A GPU device of a domain, the one model of it: what `vm xml`, `vm
/// define` and `vm attach` generate, what the domain's vgpuctl metadata
/// records (read back by `domain_xml`), and what the hook and a live attach
/// make (`hook::Action::from`). Presentation options (display, ramfb, ROM)
/// go into the hostdev only; read back from metadata they are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceSpec {
    /// An mdev by UUID; the hook creates it at start when it does not exist.
    Mdev { uuid: MdevUuid, mdev_type: MdevTypeId, parent: Option<MdevParent>, display: Option<bool>, ramfb: Option<bool> },
    /// A vGPU type on the legacy interface: an mdev with a fixed UUID, made at start on whichever GPU has room.
    LegacyVgpu { uuid: MdevUuid, type_name: String, policy: Policy, gpu: Option<PciAddress>, display: Option<bool> },
    /// A vGPU type on the vendor interface: the VF is fixed in the XML.
    VendorVgpu { vf: PciAddress, type_name: String, policy: Policy, gpu: Option<PciAddress> },
    /// A whole GPU through vfio-pci, with its companion functions.
    Passthrough { address: PciAddress, companions: Vec<PciAddress>, rom_file: Option<String>, rom_bar: Option<bool> },
}

impl DeviceSpec {
    /// The hostdev this device puts in the domain.
    pub fn hostdev(&self) -> super::domain_xml::Hostdev {
        use super::domain_xml::Hostdev;
        match self {
            DeviceSpec::Mdev { uuid, .. } | DeviceSpec::LegacyVgpu { uuid, .. } => Hostdev::Mdev { uuid: *uuid },
            DeviceSpec::VendorVgpu { vf, .. } => Hostdev::Pci { address: *vf, managed: false },
            DeviceSpec::Passthrough { address, .. } => Hostdev::Pci { address: *address, managed: true },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("no GPU can take a {wanted} now:\n{reasons}")]
    NoRoom { wanted: String, reasons: String },
    #[error(transparent)]
    UnknownType(#[from] crate::vgpu::exists::UnknownType),
    #[error("{uuid} is neither an existing mdev nor a definition in /etc/mdevctl.d; create or define it first, or use --mdev-type")]
    UnknownMdev { uuid: MdevUuid },
    #[error("{address} is not a PCI device on this host")]
    NoSuchDevice { address: PciAddress },
    #[error("{address} is not a GPU (class {class}); vgpuctl passes through display devices only")]
    NotAGpu { address: PciAddress, class: String },
    #[error(
        "{address} is the host's boot display (boot_vga=1): giving it to a guest takes the console away from the host; pass --force if that is really wanted"
    )]
    BootVga { address: PciAddress },
    #[error("{path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("no mdev parent offers type {mdev_type}{on}")]
    NoMdevType { mdev_type: String, on: String },
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Mdev(#[from] crate::mdev::MdevError),
}

/// Paths go into XML attributes: absolute, no control characters, no `..`.
pub fn check_path(p: &str) -> Result<String, GenerateError> {
    let bad = |why| GenerateError::BadPath { path: p.to_string(), why };
    if !p.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(bad("must not contain control characters"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(bad("must not contain '..'"));
    }
    Ok(p.to_string())
}

fn hex_parts(a: PciAddress) -> (String, String, String, String) {
    (format!("{:04x}", a.domain), format!("{:02x}", a.bus), format!("{:02x}", a.device), format!("{:x}", a.function))
}

fn onoff(v: Option<bool>) -> Option<&'static str> {
    v.map(|b| if b { "on" } else { "off" })
}

pub fn hostdevs(t: &Templates, d: &DeviceSpec, guest_slot: u8) -> Result<Vec<String>, GenerateError> {
    Ok(match d {
        DeviceSpec::Mdev { uuid, display, ramfb, .. } => {
            vec![t.render("hostdev-mdev.xml", context! { uuid => uuid.to_string(), display => onoff(*display), ramfb => onoff(*ramfb) })?]
        }
        DeviceSpec::LegacyVgpu { uuid, display, .. } => {
            vec![t.render("hostdev-mdev.xml", context! { uuid => uuid.to_string(), display => onoff(*display), ramfb => Value::from(()) })?]
        }
        DeviceSpec::VendorVgpu { vf, .. } => {
            let (domain, bus, slot, function) = hex_parts(*vf);
            vec![t.render("hostdev-vf.xml", context! { domain, bus, slot, function })?]
        }
        DeviceSpec::Passthrough { address, companions, rom_file, rom_bar } => {
            let mut out = Vec::new();
            let multi = !companions.is_empty();
            for (i, a) in std::iter::once(address).chain(companions.iter()).enumerate() {
                let (domain, bus, slot, function) = hex_parts(*a);
                out.push(t.render(
                    "hostdev-pci.xml",
                    context! {
                        domain, bus, slot, function,
                        rom_file => if i == 0 { rom_file.clone() } else { None },
                        rom_bar => if i == 0 { onoff(*rom_bar) } else { None },
                        guest_slot => multi.then(|| format!("{guest_slot:02x}")),
                        guest_function => format!("{:x}", a.function),
                        multifunction => multi && i == 0,
                    },
                )?);
            }
            out
        }
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
struct MetaDevice {
    kind: &'static str,
    #[serde(rename = "type")]
    type_name: Option<String>,
    policy: Option<&'static str>,
    gpu: Option<String>,
    vf: Option<String>,
    uuid: Option<String>,
    parent: Option<String>,
    address: Option<String>,
    companions: Option<String>,
}

fn meta_device(d: &DeviceSpec) -> MetaDevice {
    let policy = |p: &Policy| Some(if *p == Policy::Spread { "spread" } else { "pack" });
    let base = MetaDevice { kind: "", type_name: None, policy: None, gpu: None, vf: None, uuid: None, parent: None, address: None, companions: None };
    match d {
        DeviceSpec::Mdev { uuid, mdev_type, parent, .. } => MetaDevice {
            kind: "mdev",
            type_name: Some(mdev_type.to_string()),
            uuid: Some(uuid.to_string()),
            parent: parent.as_ref().map(|p| p.to_string()),
            ..base
        },
        DeviceSpec::LegacyVgpu { uuid, type_name, policy: p, gpu, .. } => MetaDevice {
            kind: "vgpu",
            type_name: Some(type_name.clone()),
            policy: policy(p),
            gpu: gpu.map(|g| g.to_string()),
            uuid: Some(uuid.to_string()),
            ..base
        },
        DeviceSpec::VendorVgpu { vf, type_name, policy: p, gpu } => MetaDevice {
            kind: "vgpu",
            type_name: Some(type_name.clone()),
            policy: policy(p),
            gpu: gpu.map(|g| g.to_string()),
            vf: Some(vf.to_string()),
            ..base
        },
        DeviceSpec::Passthrough { address, companions, .. } => MetaDevice {
            kind: "passthrough",
            address: Some(address.to_string()),
            companions: (!companions.is_empty()).then(|| companions.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")),
            ..base
        },
    }
}

pub fn metadata(t: &Templates, devices: &[DeviceSpec]) -> Result<String, GenerateError> {
    let devs: Vec<MetaDevice> = devices.iter().map(meta_device).collect();
    Ok(t.render("metadata.xml", context! { devices => Value::from_serialize(&devs) })?)
}

#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: DomainName,
    pub uuid: uuid::Uuid,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disk: Option<String>,
    pub disk_format: String,
    /// `qemu` (TCG) or `kvm`.
    pub domain_type: String,
    pub devices: Vec<DeviceSpec>,
    /// The guest OS, when the admin said: written as a libosinfo id.
    pub os: Option<super::guest::GuestOs>,
}

pub fn domain(t: &Templates, spec: &DomainSpec) -> Result<String, GenerateError> {
    let mut hds = Vec::new();
    for (i, d) in spec.devices.iter().enumerate() {
        for h in hostdevs(t, d, 0x10 + i as u8)? {
            hds.push(safe(h));
        }
    }
    Ok(t.render(
        "domain.xml",
        context! {
            domain_type => spec.domain_type.clone(),
            name => spec.name.as_str(),
            uuid => spec.uuid.hyphenated().to_string(),
            memory_mib => spec.memory_mib,
            vcpus => spec.vcpus,
            disk => spec.disk.clone(),
            disk_format => spec.disk_format.clone(),
            machine => "q35",
            cpu_mode => if spec.domain_type == "kvm" { "host-passthrough" } else { "maximum" },
            video => if spec.devices.is_empty() { "virtio" } else { "none" },
            hostdevs => hds,
            metadata => safe(metadata(t, &spec.devices)?),
            os_id => spec.os.map(|o| o.libosinfo_id()),
            windows => spec.os == Some(super::guest::GuestOs::Windows),
        },
    )?)
}

/// `--vgpu TYPE`: chooses now where the vGPU will live. Vendor VFIO fixes a
/// VF (libvirt needs its address in the XML); legacy mdev fixes a UUID and
/// leaves the GPU to the hook at start.
pub fn resolve_vgpus(
    host: &Host,
    wanted: &[VgpuTypeName],
    gpu: Option<PciAddress>,
    policy: Policy,
    display: Option<bool>,
) -> Result<Vec<DeviceSpec>, GenerateError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let mut views = view::build(&inv, &HostFacts { host });
    let mut out = Vec::new();
    for w in wanted {
        crate::vgpu::exists::check(&views, w)?;
        let d = resolve_one_vgpu(&views, w, gpu, policy, display)?;
        let (g, slot) = match &d {
            DeviceSpec::VendorVgpu { vf, .. } => (
                views
                    .iter()
                    .find(|v| v.free_vf_list.contains(vf) || v.types.iter().any(|t| t.slots.iter().any(|(s, _)| *s == Slot::Vf { vf: *vf })))
                    .map(|v| v.gpu),
                Slot::Vf { vf: *vf },
            ),
            _ => (None, Slot::Mdev { parent: "unused".parse().expect("valid parent name") }),
        };
        if let Some(g) = g {
            alloc::reserve(&mut views, g, &slot, w);
        } else if let Some(c) = alloc::choose(&views, w, gpu, policy) {
            // Legacy: the hook picks the parent at start; reserve capacity now.
            let (g, s) = (c.view.gpu, c.slot.clone());
            alloc::reserve(&mut views, g, &s, w);
        }
        out.push(d);
    }
    Ok(out)
}

fn resolve_one_vgpu(
    views: &[crate::vgpu::view::GpuView],
    wanted: &VgpuTypeName,
    gpu: Option<PciAddress>,
    policy: Policy,
    display: Option<bool>,
) -> Result<DeviceSpec, GenerateError> {
    if wanted.kind() == crate::vgpu::typename::VgpuKind::MigBacked && alloc::choose(views, wanted, gpu, policy).is_none() {
        // MIG on, no free GPU instance yet: the hook makes one at start. Fix
        // a free VF of a matching GPU in MIG mode (without time-sliced vGPUs).
        let vf = views
            .iter()
            .filter(|v| gpu.is_none_or(|g| g == v.gpu) && v.mig_enabled() && v.model.as_deref() == Some(wanted.model.as_str()))
            .filter(|v| {
                v.interface == crate::vgpu::view::Interface::VendorVfio && !v.vgpus.iter().any(|x| x.kind == Some(crate::vgpu::typename::VgpuKind::TimeSliced))
            })
            .find_map(|v| v.free_vf_list.first().copied());
        if let Some(vf) = vf {
            return Ok(DeviceSpec::VendorVgpu { vf, type_name: wanted.to_string(), policy, gpu });
        }
    }
    let Some(c) = alloc::choose(views, wanted, gpu, policy) else {
        let e = crate::vgpu::explain::explain(views, wanted);
        let reasons = e.gpus.iter().map(|v| format!("  {}: {}", v.gpu, v.reason)).collect::<Vec<_>>().join("\n");
        return Err(GenerateError::NoRoom { wanted: wanted.to_string(), reasons: if reasons.is_empty() { "  no NVIDIA GPUs".into() } else { reasons } });
    };
    Ok(match (&c.slot, &c.id) {
        (Slot::Vf { vf }, TypeRef::VendorId(_)) => DeviceSpec::VendorVgpu { vf: *vf, type_name: c.ty.name.clone(), policy, gpu },
        _ => DeviceSpec::LegacyVgpu { uuid: MdevUuid::new_random(), type_name: c.ty.name.clone(), policy, gpu, display },
    })
}

/// `--mdev UUID`: an existing mdev or an mdevctl/vgpuctl definition.
pub fn resolve_mdev(host: &Host, uuid: MdevUuid, display: Option<bool>, ramfb: Option<bool>) -> Result<DeviceSpec, GenerateError> {
    let mut w = crate::inventory::Warnings::default();
    if let Some(d) = crate::inventory::read_device(host, uuid, &crate::inventory::VfioUsers::unknown(), &mut w) {
        if let Some(t) = d.type_id {
            return Ok(DeviceSpec::Mdev { uuid, mdev_type: t, parent: d.parent, display, ramfb });
        }
    }
    match crate::mdev::definitions::find(host, &uuid)? {
        Some(def) => Ok(DeviceSpec::Mdev { uuid, mdev_type: def.mdev_type, parent: Some(def.parent), display, ramfb }),
        None => Err(GenerateError::UnknownMdev { uuid }),
    }
}

/// `--mdev-type T [--parent P]`: a new mdev the hook will create at start.
pub fn resolve_mdev_type(
    host: &Host,
    wanted: &str,
    parent: Option<MdevParent>,
    display: Option<bool>,
    ramfb: Option<bool>,
) -> Result<DeviceSpec, GenerateError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: false })?;
    let found = inv.mdev_parents.iter().filter(|p| parent.as_ref().is_none_or(|x| *x == p.name)).find_map(|p| p.find_type(wanted).map(|t| t.id.clone()));
    let mdev_type = found
        .ok_or_else(|| GenerateError::NoMdevType { mdev_type: wanted.to_string(), on: parent.as_ref().map(|p| format!(" on {p}")).unwrap_or_default() })?;
    Ok(DeviceSpec::Mdev { uuid: MdevUuid::new_random(), mdev_type, parent, display, ramfb })
}

/// `--passthrough PCI`: a display-class function, not the boot display
/// (unless forced), with the other functions of its slot (HDMI audio).
pub fn resolve_passthrough(
    host: &Host,
    address: PciAddress,
    force: bool,
    rom_file: Option<String>,
    rom_bar: Option<bool>,
) -> Result<DeviceSpec, GenerateError> {
    let base = format!("/sys/bus/pci/devices/{address}");
    let class = host.read_attr_opt(&format!("{base}/class"))?.ok_or(GenerateError::NoSuchDevice { address })?;
    if !class.trim().starts_with("0x03") {
        return Err(GenerateError::NotAGpu { address, class: class.trim().to_string() });
    }
    if !force && host.read_attr_opt(&format!("{base}/boot_vga"))?.as_deref().map(str::trim) == Some("1") {
        return Err(GenerateError::BootVga { address });
    }
    let companions = crate::vfio::passthrough::companions(host, address);
    let rom_file = rom_file.map(|p| check_path(&p)).transpose()?;
    Ok(DeviceSpec::Passthrough { address, companions, rom_file, rom_bar })
}
