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
}

impl std::fmt::Display for GpuRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuRef::Pci(a) => write!(f, "{a}"),
            GpuRef::Uuid(u) => write!(f, "{u}"),
            GpuRef::Index(i) => write!(f, "with index {i}"),
        }
    }
}

pub fn gpu_ref(s: &str) -> Result<GpuRef, String> {
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
        GpuRef::Pci(_) => None,
    };
    found.map(|g| g.address).ok_or_else(|| CliError::Refused(format!("no NVIDIA GPU {r} here (vgpuctl list shows them)")))
}

/// Resolves an optional GPU.
pub fn resolve_opt(host: &Host, r: Option<&GpuRef>) -> Result<Option<PciAddress>, CliError> {
    r.map(|r| resolve(host, r)).transpose()
}
