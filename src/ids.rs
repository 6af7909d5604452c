//! Identifiers parsed at the edge.
//!
//! Every name that ends up inside a path under /sys, /dev or /etc is parsed
//! into one of these types first. The grammars are strict on purpose: a value
//! that is not exactly what the kernel or the NVIDIA driver would produce is
//! rejected, so `..`, `/`, NUL and friends can never reach a path join.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected. The message names the value and the
/// expected form so an admin can fix the command line without reading code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid PCI address {value:?}: {why} (expected DDDD:BB:SS.F such as 0000:3b:00.0, or BB:SS.F as lspci prints it)")]
    PciAddress { value: String, why: &'static str },
    #[error("invalid mdev UUID {value:?}: expected 8-4-4-4-12 hex digits, e.g. 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")]
    Uuid { value: String },
    #[error("invalid mdev type {value:?}: {why}")]
    MdevType { value: String, why: &'static str },
    #[error("invalid mdev parent {value:?}: {why}")]
    MdevParent { value: String, why: &'static str },
    #[error("invalid MIG profile {value:?}: {why} (expected e.g. 1g.10gb, 1g.10gb+me, 1c.3g.40gb)")]
    MigProfile { value: String, why: &'static str },
}

/// Longest sysfs name component we accept. Kernel device names are far shorter;
/// the bound keeps hostile input from producing huge paths.
const MAX_NAME_LEN: usize = 64;

/// A PCI function address with its domain: `0000:3b:00.0`.
///
/// Displayed in the kernel's lower-case sysfs form. Parsing also accepts the
/// 8-digit domain and upper case that `nvidia-smi` prints (`00000000:3B:00.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    pub fn new(domain: u16, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self { domain, bus, device, function })
    }

    /// The same slot with another function number (GPU + HDMI audio live side by side).
    pub fn with_function(self, function: u8) -> Option<Self> {
        Self::new(self.domain, self.bus, self.device, function)
    }
}

fn hex_field(s: &str, digits: &[usize]) -> Option<u32> {
    if !digits.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl FromStr for PciAddress {
    type Err = IdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |why| IdError::PciAddress { value: value.to_string(), why };
        if value.len() > 16 {
            return Err(err("too long"));
        }
        let (domain_bus_slot, function) = value.rsplit_once('.').ok_or_else(|| err("missing '.function'"))?;
        let mut parts = domain_bus_slot.split(':');
        let (domain, bus, slot) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(b), Some(s), None) => (d, b, s),
            // As lspci prints it: bus:slot.function in PCI domain 0000.
            (Some(b), Some(s), None, None) => ("0000", b, s),
            _ => return Err(err("expected domain:bus:slot.function (0000:18:00.0) or bus:slot.function (18:00.0)")),
        };
        // nvidia-smi prints an 8-digit domain; the upper half must then be zero.
        let domain = hex_field(domain, &[4, 8]).ok_or_else(|| err("domain must be 4 or 8 hex digits"))?;
        let domain = u16::try_from(domain).map_err(|_| err("domain out of range"))?;
        let bus = hex_field(bus, &[2]).ok_or_else(|| err("bus must be 2 hex digits"))? as u8;
        let slot = hex_field(slot, &[2]).ok_or_else(|| err("slot must be 2 hex digits"))? as u8;
        let function = hex_field(function, &[1]).ok_or_else(|| err("function must be 1 hex digit"))? as u8;
        if slot >= 32 {
            return Err(err("slot must be below 0x20"));
        }
        if function >= 8 {
            return Err(err("function must be 0-7"));
        }
        Ok(Self { domain, bus, device: slot, function })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

/// A JSON schema for an identifier that serializes as its string form, so
/// the published schemas say what scripts receive (docs/schema/).
macro_rules! string_schema {
    ($ty:ty, $name:literal, $description:literal $(, pattern = $pattern:literal)?) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                #[allow(unused_mut)]
                let mut schema = schemars::json_schema!({ "type": "string", "description": $description });
                $(schema.insert("pattern".into(), $pattern.into());)?
                schema
            }
        }
    };
}

pub(crate) use string_schema;

string_schema!(PciAddress, "PciAddress", "A PCI address in the kernel's form: 0000:3b:00.0", pattern = "^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\\.[0-7]$");
string_schema!(MdevUuid, "MdevUuid", "An mdev UUID, lower case", pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
string_schema!(MigProfile, "MigProfile", "A MIG profile name: 1g.10gb, 1g.10gb+me, 1c.3g.40gb");

impl Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An mdev UUID in the canonical hyphenated lower-case form the kernel uses
/// for directory names under /sys/bus/mdev/devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MdevUuid(uuid::Uuid);

impl MdevUuid {
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl FromStr for MdevUuid {
    type Err = IdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        // uuid::Uuid accepts braces, urn: prefixes and the simple form; the
        // kernel only writes the hyphenated form, so insist on that shape.
        let shaped = value.len() == 36
            && value.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !shaped {
            return Err(IdError::Uuid { value: value.to_string() });
        }
        uuid::Uuid::parse_str(value).map(Self).map_err(|_| IdError::Uuid { value: value.to_string() })
    }
}

impl fmt::Display for MdevUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl Serialize for MdevUuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MdevUuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a single sysfs path component against the character set the
/// kernel's mdev and PCI code produce. Returns the reason when rejected.
fn check_component(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if value.len() > MAX_NAME_LEN {
        return Err("longer than 64 characters");
    }
    if value == "." || value == ".." || value.starts_with('.') {
        return Err("must not start with '.'");
    }
    if value.contains('/') {
        return Err("must not contain '/'");
    }
    if value.contains("..") {
        // Harmless inside a name, but no kernel name has it and it is what
        // path traversal looks like: refuse it outright (found by fuzzing).
        return Err("must not contain '..'");
    }
    if value.contains('\0') {
        return Err("must not contain NUL");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')) {
        return Err("only letters, digits, '-', '_', '.' and ':' are allowed");
    }
    Ok(())
}

/// The directory name of an mdev type under `mdev_supported_types`,
/// e.g. `nvidia-699` or `mbochs-large`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct MdevTypeId(String);

impl MdevTypeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MdevTypeId {
    type Err = IdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_component(value).map_err(|why| IdError::MdevType { value: value.to_string(), why })?;
        if value.contains(':') {
            return Err(IdError::MdevType { value: value.to_string(), why: "must not contain ':'" });
        }
        Ok(Self(value.to_string()))
    }
}

impl fmt::Display for MdevTypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MdevTypeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The name of an mdev parent device under /sys/class/mdev_bus: a PCI address
/// for GPUs and VFs, or a plain device name for virtual parents (`mbochs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct MdevParent(String);

impl MdevParent {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn pci_address(&self) -> Option<PciAddress> {
        self.0.parse().ok()
    }
}

impl FromStr for MdevParent {
    type Err = IdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_component(value).map_err(|why| IdError::MdevParent { value: value.to_string(), why })?;
        // Canonicalise PCI parents so `00000000:3B:00.0` finds `0000:3b:00.0`.
        if let Ok(addr) = value.parse::<PciAddress>() {
            return Ok(Self(addr.to_string()));
        }
        if value.contains(':') {
            return Err(IdError::MdevParent { value: value.to_string(), why: "looks like a PCI address but is not a valid one" });
        }
        Ok(Self(value.to_string()))
    }
}

impl fmt::Display for MdevParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MdevParent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A MIG profile name: GPU-instance profiles like `3g.40gb` or `1g.10gb+me`,
/// and compute-instance profiles inside a GI like `1c.3g.40gb`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MigProfile {
    /// Compute slices for a compute-instance profile (`1c.` prefix).
    pub compute_slices: Option<u8>,
    /// GPU slices (the `Ng` part).
    pub gpu_slices: u8,
    /// Memory in GB as printed in the name (`40gb`).
    pub memory_gb: u16,
    /// Attribute suffixes such as `me` (media extensions) or `all`/`gfx`.
    pub attributes: Vec<String>,
}

impl MigProfile {
    pub fn is_compute_instance_profile(&self) -> bool {
        self.compute_slices.is_some()
    }

    /// The GPU-instance profile this compute-instance profile lives on.
    pub fn gpu_instance_profile(&self) -> MigProfile {
        MigProfile { compute_slices: None, ..self.clone() }
    }
}

fn small_number(s: &str, suffix: char) -> Option<u32> {
    let digits = s.strip_suffix(suffix)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

impl FromStr for MigProfile {
    type Err = IdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |why| IdError::MigProfile { value: value.to_string(), why };
        if value.len() > 32 {
            return Err(err("too long"));
        }
        let mut plus = value.split('+');
        let base = plus.next().unwrap_or_default();
        let attributes: Vec<String> = plus.map(str::to_string).collect();
        for attr in &attributes {
            if attr.is_empty() || attr.len() > 8 || !attr.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(err("attributes after '+' must be lower-case letters"));
            }
        }
        let parts: Vec<&str> = base.split('.').collect();
        let (compute, gpu, mem) = match parts.as_slice() {
            [g, m] => (None, *g, *m),
            [c, g, m] => (Some(*c), *g, *m),
            _ => return Err(err("expected [Nc.]Ng.Mgb")),
        };
        let compute_slices = match compute {
            Some(c) => Some(small_number(c, 'c').filter(|n| *n <= 8).ok_or_else(|| err("compute part must be like 1c"))? as u8),
            None => None,
        };
        let gpu_slices = small_number(gpu, 'g').filter(|n| *n <= 8).ok_or_else(|| err("GPU part must be like 3g"))? as u8;
        let memory_gb = mem.strip_suffix("gb").and_then(|m| small_number(&format!("{m}x"), 'x')).ok_or_else(|| err("memory part must be like 40gb"))? as u16;
        if let Some(c) = compute_slices {
            if c > gpu_slices {
                return Err(err("compute slices exceed GPU slices"));
            }
        }
        Ok(Self { compute_slices, gpu_slices, memory_gb, attributes })
    }
}

impl fmt::Display for MigProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.compute_slices {
            write!(f, "{c}c.")?;
        }
        write!(f, "{}g.{}gb", self.gpu_slices, self.memory_gb)?;
        for attr in &self.attributes {
            write!(f, "+{attr}")?;
        }
        Ok(())
    }
}

impl Serialize for MigProfile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MigProfile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pci_address_kernel_form_round_trips() {
        let a: PciAddress = "0000:3b:00.0".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 0x3b, 0, 0).unwrap());
        assert_eq!(a.to_string(), "0000:3b:00.0");
    }

    #[test]
    fn test_pci_address_as_lspci_prints_it_is_domain_0000() {
        let a: PciAddress = "3b:00.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:3b:00.0");
        assert_eq!("D8:1F.7".parse::<PciAddress>().unwrap().to_string(), "0000:d8:1f.7");
        let e = "3b:00".parse::<PciAddress>().unwrap_err().to_string();
        assert!(e.contains("0000:3b:00.0") && e.contains("BB:SS.F as lspci prints it"), "the expected forms are named: {e}");
    }

    #[test]
    fn test_pci_address_nvidia_smi_form_is_canonicalised() {
        let a: PciAddress = "00000000:3B:00.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:3b:00.0");
        let b: PciAddress = "0001:C1:1F.7".parse().unwrap();
        assert_eq!(b.to_string(), "0001:c1:1f.7");
    }

    #[test]
    fn test_pci_address_hostile_input_is_rejected() {
        for bad in [
            "",
            "3b:0.0",
            ":00.0",
            "0000:3b:00",
            "0000:3b:00.8",
            "0000:3b:20.0",
            "0000:3b:0.0",
            "000:3b:00.0",
            "00010000:3b:00.0",
            "0000:3b:00.0/..",
            "../0000:3b:00.0",
            "0000:3b:00.0\0",
            "0000:+b:00.0",
            "0000:3b:00.0.0",
            "0000:3b:00:00.0",
            " 0000:3b:00.0",
            "0000:3b:00.-1",
            "ffffffffffffffff:00:00.0",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn test_uuid_only_canonical_hyphenated_form_is_accepted() {
        let u: MdevUuid = "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001".parse().unwrap();
        assert_eq!(u.to_string(), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
        for bad in [
            "",
            "83b8f4f2509f382f3c1ee6bfe0fa1001",
            "{83b8f4f2-509f-382f-3c1e-e6bfe0fa1001}",
            "urn:uuid:83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa100g",
            "../../../../etc/passwd-aaaaaaaaaaaaaaaa",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001/",
        ] {
            assert!(bad.parse::<MdevUuid>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn test_mdev_type_id_rejects_path_tricks() {
        assert_eq!("nvidia-699".parse::<MdevTypeId>().unwrap().as_str(), "nvidia-699");
        assert!("mbochs-large".parse::<MdevTypeId>().is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "a\0b", ".hidden", "a b", "x:y", "x..", "a..b", &"a".repeat(65), "é"] {
            assert!(bad.parse::<MdevTypeId>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn test_mdev_parent_canonicalises_pci_and_accepts_virtual_names() {
        assert_eq!("00000000:3B:00.4".parse::<MdevParent>().unwrap().as_str(), "0000:3b:00.4");
        assert_eq!("mbochs".parse::<MdevParent>().unwrap().as_str(), "mbochs");
        for bad in ["..", "../mbochs", "mbochs/", "0000:3b:00.9", "0000:zz:00.0", ""] {
            assert!(bad.parse::<MdevParent>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn test_mig_profile_parses_gi_ci_and_attributes() {
        let p: MigProfile = "3g.40gb".parse().unwrap();
        assert_eq!((p.compute_slices, p.gpu_slices, p.memory_gb), (None, 3, 40));
        let me: MigProfile = "1g.10gb+me".parse().unwrap();
        assert_eq!(me.attributes, vec!["me".to_string()]);
        assert_eq!(me.to_string(), "1g.10gb+me");
        let ci: MigProfile = "1c.3g.40gb".parse().unwrap();
        assert!(ci.is_compute_instance_profile());
        assert_eq!(ci.gpu_instance_profile().to_string(), "3g.40gb");
    }

    #[test]
    fn test_mig_profile_hostile_input_is_rejected() {
        for bad in
            ["", "3g", "3g.40", "0g.10gb", "9g.10gb", "3g.40gb+", "3g.40gb+ME", "4c.3g.40gb", "3G.40GB", "3g.040gb", "../3g.40gb", "3g.40gb/x", "1c.1c.1g.10gb"]
        {
            assert!(bad.parse::<MigProfile>().is_err(), "accepted {bad:?}");
        }
    }
}
