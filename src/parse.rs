//! Parsers for the text formats the kernel and the NVIDIA driver expose.
//! Each takes untrusted text and returns a typed value or a reason; none panics.

use serde::{Deserialize, Serialize};

/// `0x10de` → 0x10de. sysfs always writes ids with the `0x` prefix.
pub fn hex_id(s: &str) -> Option<u32> {
    let digits = s.trim().strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// A decimal count such as `available_instances` or `sriov_numvfs`.
pub fn count(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `numa_node`: `-1` means "no NUMA information" (`Some(None)`), which is
/// not an error; `None` means the text is garbage.
pub fn numa_node(s: &str) -> Option<Option<u32>> {
    match s.trim() {
        "-1" => Some(None),
        other => count(other).map(Some),
    }
}

/// `boot_vga`: `0` or `1`.
pub fn flag(s: &str) -> Option<bool> {
    match s.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// `driver_override`: `(null)` when unset.
pub fn driver_override(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s != "(null)").then(|| s.to_string())
}

/// The first line of /proc/driver/nvidia/version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NvidiaDriverVersion {
    pub version: String,
    /// The open GPU kernel modules rather than the proprietary ones.
    pub open_kernel_module: bool,
    /// The vGPU manager (host) build, which is what time-sliced and MIG-backed vGPU need.
    pub vgpu_host: bool,
}

/// Parses lines like
/// `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)`
/// and `NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023`.
pub fn nvidia_driver_version(text: &str) -> Option<NvidiaDriverVersion> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    let rest = line.strip_prefix("NVRM version:")?;
    let version = rest.split_whitespace().find(|w| is_version(w))?.to_string();
    Some(NvidiaDriverVersion { version, open_kernel_module: rest.contains("Open Kernel Module"), vgpu_host: rest.contains("vGPU") || rest.contains("VGX") })
}

fn is_version(w: &str) -> bool {
    let parts: Vec<&str> = w.split('.').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// One `key=value` list as NVIDIA writes in an mdev type's `description`:
/// `num_heads=1, frl_config=60, framebuffer=8192M, max_resolution=4096x2160, max_instance=2`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VgpuDescription {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frl_config: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framebuffer_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instance: Option<u32>,
}

impl VgpuDescription {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Parses NVIDIA's description format; unknown keys and malformed pairs are
/// ignored so a newer driver does not break listing.
pub fn vgpu_description(text: &str) -> VgpuDescription {
    let mut d = VgpuDescription::default();
    for pair in text.split(',') {
        let Some((k, v)) = pair.split_once('=') else { continue };
        let v = v.trim();
        match k.trim() {
            "num_heads" => d.num_heads = count(v),
            "frl_config" => d.frl_config = count(v),
            "framebuffer" => d.framebuffer_mib = size_mib(v),
            "max_resolution" => d.max_resolution = (v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit() || b == b'x')).then(|| v.to_string()),
            "max_instance" => d.max_instance = count(v),
            _ => {}
        }
    }
    d
}

/// `8192M` → 8192, `16G` → 16384.
pub fn size_mib(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.as_bytes().last()? {
        b'M' => (&v[..v.len() - 1], 1),
        b'G' => (&v[..v.len() - 1], 1024),
        _ => (v, 1),
    };
    count(num).map(|n| u64::from(n) * mult)
}

/// One line of a VF's `nvidia/creatable_vgpu_types`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CreatableType {
    pub id: u32,
    pub name: String,
}

/// Parses `creatable_vgpu_types`: a header `ID    : vGPU Name`, then lines
/// formatted `%-5d : %s`. Returns the types and the lines that did not parse
/// (reported by callers, not fatal).
pub fn creatable_vgpu_types(text: &str) -> (Vec<CreatableType>, Vec<String>) {
    let mut types = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some((id, name)) = trimmed.split_once(':') else {
            bad.push(line.to_string());
            continue;
        };
        let id = id.trim();
        if id == "ID" {
            continue;
        }
        let name = name.trim();
        match count(id) {
            Some(id) if !name.is_empty() && name.len() <= 64 && name.chars().all(|c| !c.is_control()) => {
                types.push(CreatableType { id, name: name.to_string() })
            }
            _ => bad.push(line.to_string()),
        }
    }
    (types, bad)
}

/// MIG mode as nvidia-smi reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigModeState {
    Enabled,
    Disabled,
    /// The GPU does not support MIG (`[N/A]`).
    NotSupported,
}

pub fn mig_mode_state(s: &str) -> Option<MigModeState> {
    match s.trim() {
        "Enabled" => Some(MigModeState::Enabled),
        "Disabled" => Some(MigModeState::Disabled),
        "[N/A]" | "N/A" | "[Not Supported]" => Some(MigModeState::NotSupported),
        _ => None,
    }
}

/// One row of `nvidia-smi --query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending --format=csv,noheader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigModeRow {
    pub address: crate::ids::PciAddress,
    pub current: MigModeState,
    pub pending: MigModeState,
    /// `GPU-…` when the query asked for `uuid` (4th column).
    pub uuid: Option<String>,
}

/// nvidia-smi's GPU UUIDs: `GPU-` and a hyphenated UUID.
pub fn gpu_uuid(s: &str) -> Option<String> {
    let rest = s.trim().strip_prefix("GPU-")?;
    rest.parse::<crate::ids::MdevUuid>().ok().map(|u| format!("GPU-{u}"))
}

pub fn mig_mode_csv(text: &str) -> Vec<MigModeRow> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let (bus, cur, pend, uuid) = match cols.as_slice() {
                [bus, cur, pend] => (bus, cur, pend, None),
                [bus, cur, pend, uuid] => (bus, cur, pend, gpu_uuid(uuid)),
                _ => return None,
            };
            Some(MigModeRow { address: bus.parse().ok()?, current: mig_mode_state(cur)?, pending: mig_mode_state(pend)?, uuid })
        })
        .collect()
}

/// The value of a `Name : value` line in `nvidia-smi -q` output (first match).
pub fn smi_q_field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hex_id_accepts_sysfs_form_only() {
        assert_eq!(hex_id("0x10de"), Some(0x10de));
        assert_eq!(hex_id("0x030200\n"), Some(0x030200));
        for bad in ["10de", "0x", "0xzz", "0x123456789", "", "-0x1"] {
            assert_eq!(hex_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn test_numa_node_minus_one_is_none() {
        assert_eq!(numa_node("-1"), Some(None));
        assert_eq!(numa_node("1"), Some(Some(1)));
        assert_eq!(numa_node("x"), None);
    }

    #[test]
    fn test_driver_override_null_is_unset() {
        assert_eq!(driver_override("(null)"), None);
        assert_eq!(driver_override("vfio-pci"), Some("vfio-pci".into()));
    }

    #[test]
    fn test_driver_version_open_module_from_real_capture() {
        let v = nvidia_driver_version(
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)  \nGCC version:  gcc version 15.3.0 (GCC) \n",
        )
        .unwrap();
        assert_eq!(v.version, "580.159.04");
        assert!(v.open_kernel_module);
        assert!(!v.vgpu_host);
    }

    #[test]
    fn test_driver_version_proprietary_and_garbage() {
        let v = nvidia_driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023").unwrap();
        assert_eq!(v.version, "535.104.05");
        assert!(!v.open_kernel_module);
        assert_eq!(nvidia_driver_version(""), None);
        assert_eq!(nvidia_driver_version("NVRM version: nothing here"), None);
        assert_eq!(nvidia_driver_version("\u{0}\u{1}garbage"), None);
    }

    #[test]
    fn test_vgpu_description_nvidia_format() {
        let d = vgpu_description("num_heads=1, frl_config=60, framebuffer=8192M, max_resolution=4096x2160, max_instance=2");
        assert_eq!(d.num_heads, Some(1));
        assert_eq!(d.frl_config, Some(60));
        assert_eq!(d.framebuffer_mib, Some(8192));
        assert_eq!(d.max_resolution.as_deref(), Some("4096x2160"));
        assert_eq!(d.max_instance, Some(2));
        assert!(vgpu_description("mbochs-small: 64 MB memory").is_empty());
        assert!(vgpu_description("framebuffer=lots, ===, ,").is_empty());
    }

    #[test]
    fn test_creatable_vgpu_types_real_format() {
        let text = "ID    : vGPU Name\n1414  : NVIDIA H200X-1-18C\n1148  : NVIDIA L40S-2Q\n";
        let (types, bad) = creatable_vgpu_types(text);
        assert_eq!(types, vec![CreatableType { id: 1414, name: "NVIDIA H200X-1-18C".into() }, CreatableType { id: 1148, name: "NVIDIA L40S-2Q".into() },]);
        assert!(bad.is_empty());
        let (types, bad) = creatable_vgpu_types("ID    : vGPU Name\n");
        assert!(types.is_empty() && bad.is_empty());
        let (types, bad) = creatable_vgpu_types("ID : vGPU Name\nabc : x\n12 :\nnonsense\n99999999999 : big\n");
        assert!(types.is_empty());
        assert_eq!(bad.len(), 4);
    }

    #[test]
    fn test_mig_mode_csv_from_real_capture() {
        let rows = mig_mode_csv("00000000:00:06.0, Disabled, Disabled\n00000000:3B:00.0, Enabled, Enabled\nbad line\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].address.to_string(), "0000:00:06.0");
        assert_eq!(rows[1].current, MigModeState::Enabled);
        assert_eq!(mig_mode_csv("00000000:00:06.0, [N/A], [N/A]")[0].current, MigModeState::NotSupported);
    }

    #[test]
    fn test_smi_q_field_from_real_capture() {
        let text = include_str!("../tests/fixtures/h100-passthrough/nvidia-smi-q.txt");
        assert_eq!(smi_q_field(text, "vGPU Heterogeneous Mode").as_deref(), Some("N/A"));
        assert_eq!(smi_q_field(text, "Virtualization Mode").as_deref(), Some("Pass-Through"));
        assert_eq!(smi_q_field(text, "No Such Field"), None);
    }

    #[test]
    fn test_size_mib_units() {
        assert_eq!(size_mib("8192M"), Some(8192));
        assert_eq!(size_mib("16G"), Some(16384));
        assert_eq!(size_mib("x"), None);
    }
}
