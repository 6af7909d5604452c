//! A GPU as an admin names it in any command: its PCI address (as lspci
//! prints it, too), its GPU UUID, or its nvidia-smi index. Parsed at the
//! edge (clap), resolved against the host once the command runs.

use super::CliError;
use crate::host::Host;
use crate::ids::PciAddress;
use crate::inventory::{Inventory, ScanOptions};

/// A GPU as the admin names it: PCI address, GPU UUID (`GPU-…`), or the
/// nvidia-smi index as a convenience (indexes follow PCI order).
#[derive(Debug, Clone)]
pub enum GpuRef {
    Pci(PciAddress),
    Uuid(String),
    Index(u32),
    /// Something that is none of the above. Kept until the command runs so
    /// the refusal can name the closest GPU the host has (clap cannot see
    /// the host).
    Malformed {
        text: String,
        why: String,
    },
}

impl std::fmt::Display for GpuRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuRef::Pci(a) => write!(f, "{a}"),
            GpuRef::Uuid(u) => write!(f, "{u}"),
            GpuRef::Index(i) => write!(f, "with index {i}"),
            GpuRef::Malformed { text, .. } => write!(f, "{text:?}"),
        }
    }
}

/// Never fails at the edge: a malformed name becomes `GpuRef::Malformed`
/// and is refused by `resolve` (exit 64) with the closest GPU named.
pub fn gpu_ref(s: &str) -> Result<GpuRef, String> {
    Ok(parse(s))
}

fn parse(s: &str) -> GpuRef {
    match try_parse(s) {
        Ok(r) => r,
        Err(why) => GpuRef::Malformed { text: s.to_string(), why },
    }
}

fn try_parse(s: &str) -> Result<GpuRef, String> {
    let pci = match s.parse::<PciAddress>() {
        Ok(a) => return Ok(GpuRef::Pci(a)),
        Err(e) => e,
    };
    if let Some(u) = crate::parse::gpu_uuid(s) {
        return Ok(GpuRef::Uuid(u));
    }
    if s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("GPU-")) {
        return Err(format!("{s:?} is not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as vgpuctl list --json and nvidia-smi -L show it)"));
    }
    if !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(GpuRef::Index).map_err(|e| e.to_string());
    }
    Err(format!("{pci}; a GPU may also be named by its UUID (GPU-…) or nvidia-smi index"))
}

pub fn resolve(host: &Host, r: &GpuRef) -> Result<PciAddress, CliError> {
    if let GpuRef::Malformed { text, why } = r {
        // UUIDs come with the driver's facts; addresses need only sysfs.
        let uuids = text.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("GPU-"));
        let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: uuids })?;
        // Closest by what was typed: a UUID against the UUIDs, anything
        // else against the full address and the lspci form. A guess that
        // far off helps nobody, so it is named only when near.
        let typed = text.to_ascii_lowercase();
        let distance = |g: &crate::inventory::Gpu| -> Option<usize> {
            if uuids {
                return g.uuid.as_deref().map(|u| strsim::levenshtein(&u.to_ascii_lowercase(), &typed));
            }
            let full = g.address.to_string();
            Some(strsim::levenshtein(&full, &typed).min(strsim::levenshtein(&full[5..], &typed)))
        };
        let closest = inv
            .gpus
            .iter()
            .filter_map(|g| distance(g).map(|d| (d, g)))
            .filter(|(d, _)| *d <= 3)
            .min_by_key(|(d, g)| (*d, g.address))
            .map(|(_, g)| format!("; the closest GPU here is {} ({})", g.address, g.name.as_deref().unwrap_or("unknown model")))
            .unwrap_or_else(|| if inv.gpus.is_empty() { "; this host has no GPU".into() } else { " (vgpuctl list shows the GPUs here)".into() });
        return Err(CliError::Usage(format!("{why}{closest}")));
    }
    if let GpuRef::Pci(a) = r {
        // One stat on the common path; a miss names the closest GPU there is.
        if host.exists(&format!("/sys/bus/pci/devices/{a}")) {
            return Ok(*a);
        }
        let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: false })?;
        let closest = inv
            .gpus
            .iter()
            .map(|g| (strsim::levenshtein(&g.address.to_string(), &a.to_string()), g))
            .min_by_key(|(d, g)| (*d, g.address))
            .map(|(_, g)| format!("; the closest GPU is {} ({})", g.address, g.name.as_deref().unwrap_or("unknown model")))
            .unwrap_or_else(|| "; this host has no GPU".into());
        return Err(CliError::Refused(format!("no PCI device {a} here{closest} (vgpuctl list shows them)")));
    }
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    // nvidia-smi numbers the GPUs the nvidia driver drives, in PCI order.
    let mut nvidia: Vec<_> = inv.gpus.iter().filter(|g| g.is_nvidia() && g.driver.as_deref() == Some("nvidia")).collect();
    nvidia.sort_by_key(|g| g.address);
    let found = match r {
        GpuRef::Uuid(u) => inv.gpus.iter().find(|g| g.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u))),
        GpuRef::Index(i) => nvidia.get(*i as usize).copied(),
        GpuRef::Pci(_) | GpuRef::Malformed { .. } => None,
    };
    found.map(|g| g.address).ok_or_else(|| CliError::Refused(format!("no NVIDIA GPU {r} here (vgpuctl list shows them)")))
}

/// Resolves an optional GPU.
pub fn resolve_opt(host: &Host, r: Option<&GpuRef>) -> Result<Option<PciAddress>, CliError> {
    r.map(|r| resolve(host, r)).transpose()
}
