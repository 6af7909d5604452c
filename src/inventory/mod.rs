//! What the host has: GPUs, their VFs and IOMMU groups, mdev parents, types
//! and devices, the NVIDIA driver and MIG mode. Read-only; one pass over sysfs.
//!
//! Garbage in one device never hides the others: an item that cannot be read
//! is skipped and reported in `warnings`, and only a root that cannot be read
//! at all is an error.

mod mdev;
mod names;
mod nvidia;
mod pci;
mod usage;

use serde::Serialize;

use crate::host::{Host, HostResult};
use crate::parse::NvidiaDriverVersion;

pub use mdev::{read_device, scan_parent, type_name_matches, MdevDevice, MdevParentInfo, MdevTypeInfo};
pub use names::{nvidia_model_name, vendor_name, vgpu_model};
pub use nvidia::{MigMode, VfVgpu};
pub use pci::{Gpu, IommuGroup, Sriov, Vf};
pub use usage::{VfioUser, VfioUsers};

/// Bumped only on incompatible changes to the JSON; fields may be added freely.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Inventory {
    pub schema_version: u32,
    /// The root the host was read from (`/` on a real host).
    pub root: String,
    /// The simulated profile when the root is a simulated host.
    pub simulated_profile: Option<String>,
    pub nvidia_driver: Option<NvidiaDriverVersion>,
    pub gpus: Vec<Gpu>,
    pub mdev_parents: Vec<MdevParentInfo>,
    pub mdevs: Vec<MdevDevice>,
    /// Items that were seen but could not be read, with the reason.
    pub warnings: Vec<String>,
}

/// Collects warnings while scanning so one bad item is reported, not fatal.
#[derive(Debug, Default)]
pub struct Warnings(pub Vec<String>);

impl Warnings {
    pub fn push(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::debug!("{msg}");
        self.0.push(msg);
    }

    /// Turns a failed read into a warning and `None`.
    pub fn ok<T, E: std::error::Error>(&mut self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(crate::error_chain(&e));
                None
            }
        }
    }
}

pub struct ScanOptions {
    /// Look for processes holding /dev/vfio groups (needs root on a real host).
    pub usage: bool,
    /// Ask nvidia-smi (or the simulated state) for MIG mode.
    pub mig: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self { usage: true, mig: true }
    }
}

impl Inventory {
    pub fn scan(host: &Host) -> HostResult<Self> {
        Self::scan_with(host, &ScanOptions::default())
    }

    pub fn scan_with(host: &Host, opts: &ScanOptions) -> HostResult<Self> {
        let mut warnings = Warnings::default();
        // The one listing that must work: without /sys/bus/pci the root is not a host.
        if !host.is_dir("/sys") {
            warnings.push(format!("{} has no sys/ directory: nothing to inventory", host.root().display()));
        }
        let nvidia_driver = nvidia::driver_version(host, &mut warnings);
        let mdev_parents = mdev::scan_parents(host, &mut warnings)?;
        let users = if opts.usage { VfioUsers::scan(host) } else { VfioUsers::unknown() };
        let mdevs = mdev::scan_devices(host, &users, &mut warnings)?;
        let mut gpus = pci::scan_gpus(host, &mdev_parents, &mut warnings)?;
        // The driver last: its answer (an NVML helper started with the host)
        // has had all of the sysfs reading above to arrive.
        if opts.mig {
            if let Some(modes) = nvidia::mig_modes(host, &mut warnings) {
                for g in &mut gpus {
                    if let Some((mode, uuid)) = modes.get(&g.address) {
                        g.mig = Some(*mode);
                        g.uuid = uuid.clone();
                    }
                }
            }
        }
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            root: host.root().display().to_string(),
            simulated_profile: host.nvidia().simulated_profile(host),
            nvidia_driver,
            gpus,
            mdev_parents,
            mdevs,
            warnings: warnings.0,
        })
    }

    pub fn gpu(&self, address: crate::ids::PciAddress) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.address == address)
    }

    pub fn parent(&self, name: &crate::ids::MdevParent) -> Option<&MdevParentInfo> {
        self.mdev_parents.iter().find(|p| &p.name == name)
    }
}
