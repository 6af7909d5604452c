//! SR-IOV virtual functions of NVIDIA GPUs: the job of NVIDIA's
//! `sriov-manage -e|-d`, with a bounded wait for the VFs and their NVIDIA
//! files, and a refusal to pull VFs out from under vGPUs or VMs.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{Host, HostError};
use crate::ids::PciAddress;
use crate::inventory::{Gpu, Inventory, ScanOptions, VfioUsers};
use crate::lock::{HostLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    #[error("{gpu} is not an SR-IOV capable GPU here (no sriov_totalvfs); `vgpuctl sriov status` lists those that are")]
    NotSriov { gpu: PciAddress },
    #[error("{gpu} supports at most {total} VFs, not {wanted}")]
    TooMany { gpu: PciAddress, total: u32, wanted: u32 },
    #[error("refusing to change the VFs of {gpu}: {what}; remove those vGPUs (or stop the VMs) first")]
    InUse { gpu: PciAddress, what: String },
    #[error("{gpu}: the kernel refused {count} VFs")]
    Write {
        gpu: PciAddress,
        count: u32,
        #[source]
        source: HostError,
    },
    #[error("{gpu}: {missing} of {wanted} VFs (or their NVIDIA files) did not appear within {seconds} s; check `dmesg` and that nvidia-vgpu-mgr is running")]
    Timeout { gpu: PciAddress, missing: usize, wanted: u32, seconds: u64 },
    #[error("no SR-IOV capable NVIDIA GPUs on this host")]
    NoGpus,
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SriovStatus {
    pub gpu: PciAddress,
    pub name: Option<String>,
    pub total_vfs: u32,
    pub num_vfs: u32,
    /// VFs that carry a vGPU (vendor type set, or an mdev on the VF).
    pub vfs_with_vgpu: usize,
    pub vfs: Vec<PciAddress>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SriovChange {
    pub gpu: PciAddress,
    pub before: u32,
    pub after: u32,
    pub changed: bool,
    pub vfs: Vec<PciAddress>,
}

fn busy_vfs(inv: &Inventory, g: &Gpu, users: &VfioUsers) -> Vec<String> {
    let mut out = Vec::new();
    let Some(s) = &g.sriov else { return out };
    for vf in &s.vfs {
        if let Some(v) = vf.vgpu.as_ref() {
            if let Some(t) = v.current_type {
                // The name the admin knows, with the id the VF reads.
                let what = match &v.current_type_name {
                    Some(n) => format!("vGPU {} (type {t})", crate::vgpu::typename::short_name(n)),
                    None => format!("vGPU type {t}"),
                };
                out.push(format!("VF {} holds {what}", vf.address));
            }
        }
        for m in inv.mdevs.iter().filter(|m| m.parent.as_ref().and_then(|p| p.pci_address()) == Some(vf.address)) {
            out.push(format!("VF {} holds mdev {}", vf.address, m.uuid));
        }
        if let Some(u) = vf.iommu_group.and_then(|grp| users.user_of(grp)) {
            out.push(format!("VF {} is open by {} (pid {})", vf.address, u.process, u.pid));
        }
    }
    out
}

pub fn status(host: &Host) -> Result<Vec<SriovStatus>, SriovError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: false })?;
    let users = VfioUsers::unknown();
    Ok(inv
        .gpus
        .iter()
        .filter(|g| g.is_nvidia())
        .filter_map(|g| {
            let s = g.sriov.as_ref()?;
            Some(SriovStatus {
                gpu: g.address,
                name: g.name.clone(),
                total_vfs: s.total_vfs,
                num_vfs: s.num_vfs,
                vfs_with_vgpu: busy_vfs(&inv, g, &users).len(),
                vfs: s.vfs.iter().map(|v| v.address).collect(),
            })
        })
        .collect())
}

/// Sets the VF count of each target GPU (`None` = every SR-IOV NVIDIA GPU).
/// `count` `None` means "all it supports"; 0 disables.
pub fn set(host: &Host, targets: Option<&[PciAddress]>, count: Option<u32>, wait: Duration, lock_timeout: Duration) -> Result<Vec<SriovChange>, SriovError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: false })?;
    let gpus: Vec<&Gpu> = match targets {
        Some(list) => list.iter().map(|a| inv.gpu(*a).filter(|g| g.sriov.is_some()).ok_or(SriovError::NotSriov { gpu: *a })).collect::<Result<_, _>>()?,
        None => inv.gpus.iter().filter(|g| g.is_nvidia() && g.sriov.as_ref().is_some_and(|s| s.total_vfs > 0)).collect(),
    };
    if gpus.is_empty() {
        return Err(SriovError::NoGpus);
    }
    // Check everything before changing anything: all or nothing.
    let users = VfioUsers::scan(host);
    let mut plan = Vec::new();
    for g in &gpus {
        let s = g.sriov.as_ref().ok_or(SriovError::NotSriov { gpu: g.address })?;
        let wanted = count.unwrap_or(s.total_vfs);
        if wanted > s.total_vfs {
            return Err(SriovError::TooMany { gpu: g.address, total: s.total_vfs, wanted });
        }
        if wanted != s.num_vfs && s.num_vfs > 0 {
            let busy = busy_vfs(&inv, g, &users);
            if !busy.is_empty() {
                return Err(SriovError::InUse { gpu: g.address, what: busy.join(", ") });
            }
        }
        plan.push((g.address, s.num_vfs, wanted));
    }
    let mut out = Vec::new();
    for (gpu, before, wanted) in plan {
        if before == wanted {
            out.push(SriovChange { gpu, before, after: before, changed: false, vfs: vf_list(host, gpu, before)? });
            continue;
        }
        let file = format!("/sys/bus/pci/devices/{gpu}/sriov_numvfs");
        // The kernel refuses one non-zero count over another: go through 0.
        if before > 0 {
            tracing::info!(%gpu, "disabling {before} VFs");
            host.write_attr(&file, "0").map_err(|source| SriovError::Write { gpu, count: 0, source })?;
        }
        if wanted > 0 {
            tracing::info!(%gpu, "enabling {wanted} VFs");
            host.write_attr(&file, &wanted.to_string()).map_err(|source| SriovError::Write { gpu, count: wanted, source })?;
        }
        wait_for(host, gpu, wanted, wait)?;
        out.push(SriovChange { gpu, before, after: wanted, changed: true, vfs: vf_list(host, gpu, wanted)? });
    }
    Ok(out)
}

fn vf_list(host: &Host, gpu: PciAddress, n: u32) -> Result<Vec<PciAddress>, SriovError> {
    let mut v = Vec::new();
    for i in 0..n {
        if let Some(name) = host.link_name(&format!("/sys/bus/pci/devices/{gpu}/virtfn{i}"))? {
            if let Ok(a) = name.parse() {
                v.push(a);
            }
        }
    }
    Ok(v)
}

/// Waits until `n` VFs exist, each with the files of an NVIDIA vGPU
/// interface (`nvidia/` or `mdev_supported_types/`), re-checking with a pause
/// that grows from 10 ms to 500 ms. With 0, until the VFs are gone.
fn wait_for(host: &Host, gpu: PciAddress, n: u32, wait: Duration) -> Result<(), SriovError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let mut missing = 0;
        for i in 0..n {
            let ready = match host.link_name(&format!("/sys/bus/pci/devices/{gpu}/virtfn{i}"))? {
                Some(vf) => {
                    host.is_dir(&format!("/sys/bus/pci/devices/{vf}/nvidia")) || host.is_dir(&format!("/sys/bus/pci/devices/{vf}/mdev_supported_types"))
                }
                None => false,
            };
            missing += usize::from(!ready);
        }
        let gone = n > 0 || host.link_name(&format!("/sys/bus/pci/devices/{gpu}/virtfn0"))?.is_none();
        if missing == 0 && gone {
            return Ok(());
        }
        if start.elapsed() >= wait {
            return Err(SriovError::Timeout { gpu, missing, wanted: n, seconds: wait.as_secs() });
        }
        std::thread::sleep(pause.min(wait.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
