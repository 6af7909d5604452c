//! Reading a libvirt domain XML: vgpuctl's metadata and the GPU hostdevs.
//! Used by the qemu hook (XML on stdin) and `vm show`, so it trusts nothing:
//! every attribute goes through the strict grammar of its identifier, and a
//! malformed vgpuctl element is an error naming it, not a guess.

use serde::Serialize;

use crate::ids::{MdevUuid, PciAddress};
use crate::vgpu::alloc::Policy;
use crate::vgpu::typename::VgpuTypeName;

pub const NAMESPACE: &str = "https://vgpuctl.dev/xmlns/libvirt/domain/1";
/// Domain XML larger than this is refused before parsing (real ones are a few KiB).
pub const MAX_XML_BYTES: usize = 4 << 20;

/// What a VM asked vgpuctl for: the one device model (`vm xml`, `vm
/// define`/`attach` and the hook read and write the same type).
pub use super::generate::DeviceSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hostdev {
    Mdev { uuid: MdevUuid },
    Pci { address: PciAddress, managed: bool },
}

impl DomainGpus {
    /// The guest OS the domain's libosinfo id names, when it names one.
    pub fn guest_os(&self) -> Option<super::guest::GuestOs> {
        self.os_hint.as_deref().and_then(super::guest::GuestOs::from_libosinfo)
    }

    /// The vGPU types the domain asks for.
    pub fn vgpu_types(&self) -> Vec<crate::vgpu::typename::VgpuTypeName> {
        self.requests
            .iter()
            .filter_map(|r| match r {
                DeviceSpec::LegacyVgpu { type_name, .. } | DeviceSpec::VendorVgpu { type_name, .. } => type_name.parse().ok(),
                _ => None,
            })
            .collect()
    }
}

impl Hostdev {
    /// The same device, however it is managed.
    pub fn same_device(&self, other: &Hostdev) -> bool {
        match (self, other) {
            (Hostdev::Mdev { uuid: a }, Hostdev::Mdev { uuid: b }) => a == b,
            (Hostdev::Pci { address: a, .. }, Hostdev::Pci { address: b, .. }) => a == b,
            _ => false,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Hostdev::Mdev { uuid } => format!("mdev {uuid}"),
            Hostdev::Pci { address, .. } => format!("PCI device {address}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DomainGpus {
    pub name: String,
    pub uuid: Option<String>,
    pub requests: Vec<DeviceSpec>,
    pub hostdevs: Vec<Hostdev>,
    /// The `<os>` type hints a Windows guest (libosinfo id).
    pub os_hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainXmlError {
    #[error("domain XML is larger than 4 MiB")]
    TooLarge,
    #[error("domain XML does not parse: {0}")]
    Parse(String),
    #[error("domain XML has no <domain> root")]
    NotADomain,
    #[error("domain XML has no <name>")]
    NoName,
    #[error("vgpuctl metadata element <{element}>: {why}")]
    Metadata { element: String, why: String },
    #[error("hostdev: {0}")]
    Hostdev(String),
}

fn attr<'a>(n: &roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    n.attribute(name)
}

/// The first child element `name` in no namespace (libvirt's own elements).
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == name && c.tag_name().namespace().is_none())
}

fn meta_err(el: &str, why: impl Into<String>) -> DomainXmlError {
    DomainXmlError::Metadata { element: el.to_string(), why: why.into() }
}

fn parse_opt<T: std::str::FromStr>(n: &roxmltree::Node, el: &str, name: &str) -> Result<Option<T>, DomainXmlError>
where
    T::Err: std::fmt::Display,
{
    match attr(n, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e: T::Err| meta_err(el, format!("attribute {name}: {e}"))),
    }
}

/// A number as libvirt reads one in an `<address>` (`virStrToLong_uip` with
/// base 0, i.e. C's `strtoul`): `0x` hex, a leading `0` octal, otherwise
/// decimal, optional leading blanks and `+`, the whole string consumed, no
/// sign, within 32 bits. So `bus='65'` is bus 0x41, as libvirt takes it.
pub fn libvirt_uint(v: &str) -> Option<u32> {
    let t = v.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let t = t.strip_prefix('+').unwrap_or(t);
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// An `<address>` attribute; absent is 0, as in libvirt.
fn address_attr(n: &roxmltree::Node, name: &str) -> Result<u32, DomainXmlError> {
    match attr(n, name) {
        None => Ok(0),
        Some(v) => libvirt_uint(v)
            .ok_or_else(|| DomainXmlError::Hostdev(format!("PCI address {name}={v:?} is not a number libvirt reads (0x hex, 0 octal, or decimal)"))),
    }
}

fn pci_from_address(a: &roxmltree::Node) -> Result<PciAddress, DomainXmlError> {
    let (d, b, s, f) = (address_attr(a, "domain")?, address_attr(a, "bus")?, address_attr(a, "slot")?, address_attr(a, "function")?);
    match (u16::try_from(d), u8::try_from(b), u8::try_from(s), u8::try_from(f)) {
        (Ok(d), Ok(b), Ok(s), Ok(f)) => PciAddress::new(d, b, s, f).ok_or_else(|| DomainXmlError::Hostdev("PCI address out of range".into())),
        _ => Err(DomainXmlError::Hostdev(format!("PCI address out of range (domain {d}, bus {b}, slot {s}, function {f})"))),
    }
}

pub fn parse(xml: &str) -> Result<DomainGpus, DomainXmlError> {
    if xml.len() > MAX_XML_BYTES {
        return Err(DomainXmlError::TooLarge);
    }
    let doc = roxmltree::Document::parse(xml).map_err(|e| DomainXmlError::Parse(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(DomainXmlError::NotADomain);
    }
    let name = child(root, "name").and_then(|n| n.text()).map(str::to_string).ok_or(DomainXmlError::NoName)?;
    let uuid = child(root, "uuid").and_then(|n| n.text()).map(|s| s.trim().to_string());
    let mut requests = Vec::new();
    if let Some(md) = child(root, "metadata") {
        for gpus in md.children().filter(|c| c.is_element() && c.tag_name().namespace() == Some(NAMESPACE)) {
            if gpus.tag_name().name() != "gpus" {
                return Err(meta_err(gpus.tag_name().name(), "unknown element in vgpuctl's namespace (expected <gpus>)"));
            }
            for d in gpus.children().filter(|c| c.is_element()) {
                let el = d.tag_name().name();
                if d.tag_name().namespace() != Some(NAMESPACE) {
                    return Err(meta_err(el, "element outside vgpuctl's namespace inside <vgpuctl:gpus>"));
                }
                requests.push(parse_request(&d, el)?);
            }
        }
    }
    let mut hostdevs = Vec::new();
    if let Some(devs) = child(root, "devices") {
        for h in devs.children().filter(|c| c.is_element() && c.tag_name().name() == "hostdev") {
            if attr(&h, "mode") != Some("subsystem") {
                continue;
            }
            let Some(src) = child(h, "source") else { continue };
            match attr(&h, "type") {
                Some("mdev") => {
                    let a = child(src, "address").ok_or_else(|| DomainXmlError::Hostdev("mdev hostdev without <address uuid=…>".into()))?;
                    let u = attr(&a, "uuid").ok_or_else(|| DomainXmlError::Hostdev("mdev hostdev without uuid".into()))?;
                    let uuid = u.parse().map_err(|e: crate::ids::IdError| DomainXmlError::Hostdev(e.to_string()))?;
                    hostdevs.push(Hostdev::Mdev { uuid });
                }
                Some("pci") => {
                    let Some(a) = child(src, "address") else { continue };
                    hostdevs.push(Hostdev::Pci { address: pci_from_address(&a)?, managed: attr(&h, "managed") == Some("yes") });
                }
                _ => {}
            }
        }
    }
    // libosinfo ids such as http://microsoft.com/win/11 mark Windows guests.
    let os_hint = child(root, "metadata")
        .and_then(|m| m.descendants().find(|d| d.tag_name().name() == "os" && attr(d, "id").is_some()))
        .and_then(|o| attr(&o, "id"))
        .map(str::to_string);
    Ok(DomainGpus { name, uuid, requests, hostdevs, os_hint })
}

fn parse_request(d: &roxmltree::Node, el: &str) -> Result<DeviceSpec, DomainXmlError> {
    let known: &[&str] = match el {
        "vgpu" => &["type", "policy", "gpu", "vf", "uuid"],
        "mdev" => &["type", "parent", "uuid"],
        "passthrough" => &["address", "companions"],
        _ => return Err(meta_err(el, "unknown element (expected vgpu, mdev or passthrough)")),
    };
    for a in d.attributes() {
        if !known.contains(&a.name()) {
            return Err(meta_err(el, format!("unknown attribute {:?}", a.name())));
        }
    }
    Ok(match el {
        "vgpu" => {
            let t = attr(d, "type").ok_or_else(|| meta_err(el, "missing type"))?;
            let parsed: VgpuTypeName = t.parse().map_err(|e: crate::vgpu::typename::TypeNameError| meta_err(el, e.to_string()))?;
            let policy = match attr(d, "policy") {
                None | Some("pack") => Policy::Pack,
                Some("spread") => Policy::Spread,
                Some(p) => return Err(meta_err(el, format!("policy {p:?} (expected pack or spread)"))),
            };
            let gpu = parse_opt(d, el, "gpu")?;
            let type_name = parsed.to_string();
            match (parse_opt(d, el, "vf")?, parse_opt(d, el, "uuid")?) {
                (Some(vf), None) => DeviceSpec::VendorVgpu { vf, type_name, policy, gpu },
                (None, Some(uuid)) => DeviceSpec::LegacyVgpu { uuid, type_name, policy, gpu, display: None },
                _ => return Err(meta_err(el, "needs exactly one of vf (vendor-specific VFIO) or uuid (mdev)")),
            }
        }
        "mdev" => DeviceSpec::Mdev {
            mdev_type: parse_opt(d, el, "type")?.ok_or_else(|| meta_err(el, "missing type"))?,
            parent: parse_opt(d, el, "parent")?,
            uuid: parse_opt(d, el, "uuid")?.ok_or_else(|| meta_err(el, "missing uuid"))?,
            display: None,
            ramfb: None,
        },
        _ => {
            let companions = match attr(d, "companions") {
                None => Vec::new(),
                Some(list) => {
                    list.split(',').map(|a| a.trim().parse().map_err(|e: crate::ids::IdError| meta_err(el, e.to_string()))).collect::<Result<_, _>>()?
                }
            };
            DeviceSpec::Passthrough {
                address: parse_opt(d, el, "address")?.ok_or_else(|| meta_err(el, "missing address"))?,
                companions,
                rom_file: None,
                rom_bar: None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "xmlns:vgpuctl='https://vgpuctl.dev/xmlns/libvirt/domain/1'";

    fn dom(meta: &str, devices: &str) -> String {
        format!("<domain type='qemu'><name>vm1</name><uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid><metadata>{meta}</metadata><devices>{devices}</devices></domain>")
    }

    #[test]
    fn test_parses_metadata_and_hostdevs() {
        let x = dom(
            &format!("<vgpuctl:gpus {NS}><vgpuctl:mdev type='mbochs-medium' parent='mbochs' uuid='11111111-2222-3333-4444-555555555555'/><vgpuctl:vgpu type='NVIDIA H100-10C' vf='0000:18:00.4'/><vgpuctl:passthrough address='0000:41:00.0' companions='0000:41:00.1'/></vgpuctl:gpus>"),
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='11111111-2222-3333-4444-555555555555'/></source></hostdev><hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x0000' bus='0x18' slot='0x00' function='0x4'/></source></hostdev>",
        );
        let d = parse(&x).unwrap();
        assert_eq!(d.name, "vm1");
        assert_eq!(d.requests.len(), 3);
        assert!(matches!(&d.requests[1], DeviceSpec::VendorVgpu { type_name, .. } if type_name == "H100-10C"));
        assert_eq!(d.hostdevs.len(), 2);
        assert_eq!(d.hostdevs[1], Hostdev::Pci { address: "0000:18:00.4".parse().unwrap(), managed: false });
    }

    /// Numbers in `<address>` as libvirt reads them (its docs write hex,
    /// `virsh nodedev-dumpxml` writes hex, hand-written XML often decimal).
    #[test]
    fn test_address_numbers_are_read_as_libvirt_reads_them() {
        for (v, want) in [("0x0000", Some(0)), ("0x06", Some(6)), ("0x12", Some(0x12)), ("0x5", Some(5)), ("0X1f", Some(31))] {
            assert_eq!(libvirt_uint(v), want, "{v}");
        }
        assert_eq!(libvirt_uint("65"), Some(65), "decimal, not hex");
        assert_eq!(libvirt_uint("010"), Some(8), "a leading 0 is octal");
        assert_eq!(libvirt_uint("0"), Some(0));
        assert_eq!(libvirt_uint(" +7"), Some(7));
        for bad in ["", "0x", "-1", "08", "1a", "0x1g", "4294967296", "6 "] {
            assert_eq!(libvirt_uint(bad), None, "{bad:?}");
        }
        let xml = |bus: &str| {
            format!("<domain><name>d</name><devices><hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='{bus}' slot='0x00' function='0x0'/></source></hostdev></devices></domain>")
        };
        let at = |bus: &str| match parse(&xml(bus)).unwrap().hostdevs.first() {
            Some(Hostdev::Pci { address, .. }) => address.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at("65"), "0000:41:00.0", "bus 65 is 0x41 to libvirt");
        assert_eq!(at("0x65"), "0000:65:00.0");
        assert!(parse(&xml("256")).is_err(), "out of range");
        assert!(parse(&xml("x")).is_err());
    }

    #[test]
    fn test_domain_without_gpus_is_empty_not_an_error() {
        let d = parse("<domain type='kvm'><name>plain</name><devices><disk/></devices></domain>").unwrap();
        assert!(d.requests.is_empty() && d.hostdevs.is_empty());
    }

    #[test]
    fn test_hostile_metadata_is_refused_with_the_element_named() {
        for (meta, needle) in [
            (format!("<vgpuctl:gpus {NS}><vgpuctl:mdev type='../x' uuid='11111111-2222-3333-4444-555555555555'/></vgpuctl:gpus>"), "invalid mdev type"),
            (
                format!("<vgpuctl:gpus {NS}><vgpuctl:mdev type='x' parent='../../etc' uuid='11111111-2222-3333-4444-555555555555'/></vgpuctl:gpus>"),
                "invalid mdev parent",
            ),
            (format!("<vgpuctl:gpus {NS}><vgpuctl:mdev type='x' uuid='not-a-uuid'/></vgpuctl:gpus>"), "invalid mdev UUID"),
            (format!("<vgpuctl:gpus {NS}><vgpuctl:vgpu type='H100-10C'/></vgpuctl:gpus>"), "exactly one of vf"),
            (format!("<vgpuctl:gpus {NS}><vgpuctl:vgpu type='H100-10C; rm -rf /' vf='0000:18:00.4'/></vgpuctl:gpus>"), "invalid vGPU type name"),
            (format!("<vgpuctl:gpus {NS}><vgpuctl:bogus/></vgpuctl:gpus>"), "unknown element"),
            (format!("<vgpuctl:gpus {NS}><vgpuctl:mdev type='x' uuid='11111111-2222-3333-4444-555555555555' evil='1'/></vgpuctl:gpus>"), "unknown attribute"),
            (format!("<vgpuctl:gpus {NS}><vgpuctl:passthrough address='0000:41:00.0' companions='0000:41:00.1,../x'/></vgpuctl:gpus>"), "invalid PCI address"),
        ] {
            let e = parse(&dom(&meta, "")).unwrap_err().to_string();
            assert!(e.contains(needle), "{meta}: {e}");
        }
        assert!(parse(
            "<domain><name>x</name><devices><hostdev mode='subsystem' type='mdev'><source><address uuid='zz'/></source></hostdev></devices></domain>"
        )
        .is_err());
        assert!(parse("<domain><name>x</name><devices><hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x1ff' slot='0x00' function='0x0'/></source></hostdev></devices></domain>").is_err());
        assert!(matches!(parse("not xml"), Err(DomainXmlError::Parse(_))));
        assert!(matches!(parse("<network/>"), Err(DomainXmlError::NotADomain)));
        assert!(matches!(parse(&"x".repeat(MAX_XML_BYTES + 1)), Err(DomainXmlError::TooLarge)));
    }
}
