//! `vgpuctl passthrough check|prepare|release <pci>`.
//!
//! prepare: refuse the boot display (unless forced) and non-GPUs; check the
//! IOMMU group is viable — every member bound to vfio-pci or to no driver,
//! PCIe bridges aside — and list what blocks it, before changing anything;
//! then for the GPU and its slot companions (HDMI audio): unbind,
//! `driver_override` = vfio-pci, `drivers_probe`, and verify. The previous
//! drivers are recorded so release can give each function back. Any failure
//! puts every function back where it was.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};
use crate::ids::PciAddress;
use crate::lock::{HostLock, LockError};
use crate::parse;

pub const STATE_DIR: &str = "/run/vgpuctl/passthrough";
const VFIO: &str = "vfio-pci";

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("{addr} is not a PCI device on this host")]
    NoDevice { addr: PciAddress },
    #[error("{addr} is not a GPU (class {class}); vgpuctl passes through display devices")]
    NotAGpu { addr: PciAddress, class: String },
    #[error("{addr} is the host's boot display (boot_vga=1): giving it away takes the host's console; pass --force if that is really wanted")]
    BootVga { addr: PciAddress },
    #[error("{addr} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)")]
    NoIommu { addr: PciAddress },
    #[error("IOMMU group {group} of {addr} is not viable: {blockers}; every device in a group goes to the guest together (move the GPU to a slot with its own group, or pass the others through too)")]
    NotViable { addr: PciAddress, group: u32, blockers: String },
    #[error("the vfio-pci driver is not loaded: modprobe vfio-pci")]
    NoVfioDriver,
    #[error("{addr} did not bind to {wanted} (bound to {got}); it was put back")]
    BindFailed { addr: PciAddress, wanted: String, got: String },
    #[error("{addr} is in use by {by}; stop the VM first")]
    InUse { addr: PciAddress, by: String },
    #[error("nothing recorded for {addr}: it was not prepared by vgpuctl (state in {STATE_DIR})")]
    NotPrepared { addr: PciAddress },
    #[error("cannot write {path}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Member {
    pub address: String,
    pub class: Option<String>,
    pub driver: Option<String>,
    /// Bound to vfio-pci, to no driver, or a bridge: no obstacle.
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GroupReport {
    pub address: PciAddress,
    pub class: String,
    pub group: u32,
    pub boot_vga: bool,
    /// The functions that move with it (same slot).
    pub functions: Vec<PciAddress>,
    pub members: Vec<Member>,
    /// Viable once `functions` are on vfio-pci.
    pub viable: bool,
    pub blockers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct Saved {
    address: PciAddress,
    previous: Vec<(PciAddress, Option<String>)>,
}

fn dev(a: impl std::fmt::Display, attr: &str) -> String {
    format!("/sys/bus/pci/devices/{a}/{attr}")
}

fn driver(host: &Host, a: impl std::fmt::Display) -> Result<Option<String>, HostError> {
    host.link_name(&dev(a, "driver"))
}

/// The function itself and, for a GPU, the other functions of its slot that
/// belong to the card: HDMI/DP audio (0x0403), and the USB-C controller
/// (0x0c03) and UCSI serial bus (0x0c80) of some NVIDIA cards. Nothing else
/// moves along: a slot's other functions on a chipset (LPC, AHCI, SMBus) are
/// the host's and show up as blockers instead.
fn functions(host: &Host, addr: PciAddress) -> Vec<PciAddress> {
    let mut v = vec![addr];
    let class = |a: PciAddress| host.read_attr_opt(&dev(a, "class")).ok().flatten().and_then(|c| parse::hex_id(&c));
    if class(addr).is_none_or(|c| c >> 16 != 0x03) {
        return v;
    }
    for f in 0..8 {
        if let Some(o) = addr.with_function(f).filter(|o| *o != addr) {
            if class(o).is_some_and(|c| matches!(c >> 8, 0x0403 | 0x0c03 | 0x0c80) || c >> 16 == 0x03) {
                v.push(o);
            }
        }
    }
    v
}

/// The other functions that go to a guest with this GPU.
pub fn companions(host: &Host, addr: PciAddress) -> Vec<PciAddress> {
    functions(host, addr).into_iter().skip(1).collect()
}

pub fn check(host: &Host, addr: PciAddress) -> Result<GroupReport, PassthroughError> {
    let class = host.read_attr_opt(&dev(addr, "class"))?.ok_or(PassthroughError::NoDevice { addr })?;
    let boot_vga = host.read_attr_opt(&dev(addr, "boot_vga"))?.as_deref().map(str::trim) == Some("1");
    let group = host.link_name(&dev(addr, "iommu_group"))?.and_then(|g| parse::count(&g)).ok_or(PassthroughError::NoIommu { addr })?;
    let fns = functions(host, addr);
    let mut members = Vec::new();
    let mut blockers = Vec::new();
    for m in host.list_dir(&format!("/sys/kernel/iommu_groups/{group}/devices"))? {
        let class = host.read_attr_opt(&dev(&m, "class")).ok().flatten().map(|c| c.trim().to_string());
        let drv = driver(host, &m)?;
        let is_bridge = class.as_deref().is_some_and(|c| c.starts_with("0x0604"));
        let moving = m.parse::<PciAddress>().is_ok_and(|a| fns.contains(&a));
        let ok = moving || is_bridge || drv.is_none() || drv.as_deref() == Some(VFIO);
        if !ok {
            blockers.push(format!("{m} ({}) is bound to {}", class.clone().unwrap_or_default(), drv.clone().unwrap_or_default()));
        }
        members.push(Member { address: m, class, driver: drv, ok });
    }
    Ok(GroupReport { address: addr, class: class.trim().to_string(), group, boot_vga, functions: fns, viable: blockers.is_empty(), members, blockers })
}

fn state_path(addr: PciAddress) -> String {
    format!("{STATE_DIR}/{addr}.json")
}

/// Binds `a` to `target` (`None`: whatever driver the kernel picks) and waits
/// briefly for the bind to show (drivers_probe binds synchronously; the wait
/// covers drivers that probe asynchronously).
fn rebind(host: &Host, a: PciAddress, target: Option<&str>) -> Result<Option<String>, HostError> {
    if driver(host, a)?.is_some() {
        host.write_attr(&dev(a, "driver/unbind"), &a.to_string())?;
    }
    host.write_attr(&dev(a, "driver_override"), target.unwrap_or("\n"))?;
    host.write_attr("/sys/bus/pci/drivers_probe", &a.to_string())?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let d = driver(host, a)?;
        if target.is_none() || d.as_deref() == target || start.elapsed() > Duration::from_secs(5) {
            return Ok(d);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn users(host: &Host, group: u32) -> Option<String> {
    crate::inventory::VfioUsers::scan(host).user_of(group).map(|u| u.to_string())
}

/// One function moved from one driver to another.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Rebound {
    pub address: PciAddress,
    /// The driver before (`null`: none).
    pub from: Option<String>,
    /// The driver now (`null`: none).
    pub to: Option<String>,
}

/// What `prepare` did: the functions it moved to vfio-pci (none when they
/// were there already) and the group as it is now.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Prepared {
    pub changed: bool,
    pub moved: Vec<Rebound>,
    pub group: GroupReport,
}

/// What `release` did: each function given back, from vfio-pci to its driver.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Released {
    pub changed: bool,
    pub moved: Vec<Rebound>,
}

pub fn prepare(host: &Host, addr: PciAddress, force: bool, lock_timeout: Duration) -> Result<Prepared, PassthroughError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let class = host.read_attr_opt(&dev(addr, "class"))?.ok_or(PassthroughError::NoDevice { addr })?;
    if !class.trim().starts_with("0x03") {
        return Err(PassthroughError::NotAGpu { addr, class: class.trim().to_string() });
    }
    let report = check(host, addr)?;
    if report.boot_vga && !force {
        return Err(PassthroughError::BootVga { addr });
    }
    if !report.viable {
        return Err(PassthroughError::NotViable { addr, group: report.group, blockers: report.blockers.join(", ") });
    }
    if !host.is_dir(&format!("/sys/bus/pci/drivers/{VFIO}")) {
        return Err(PassthroughError::NoVfioDriver);
    }
    let previous: Vec<(PciAddress, Option<String>)> = report.functions.iter().map(|a| driver(host, a).map(|d| (*a, d))).collect::<Result<_, _>>()?;
    if previous.iter().all(|(_, d)| d.as_deref() == Some(VFIO)) {
        return Ok(Prepared { changed: false, moved: Vec::new(), group: report });
        // already prepared
    }
    // Record before changing anything: a crash mid-way still says where each function came from.
    if host.read_attr_opt(&state_path(addr))?.is_none() {
        save(host, &Saved { address: addr, previous: previous.clone() })?;
    }
    let mut moved = Vec::new();
    for (a, _) in &previous {
        tracing::info!(%a, "binding to vfio-pci");
        let got = match rebind(host, *a, Some(VFIO)) {
            Ok(g) => g,
            Err(e) => {
                // This function too: a failure after its unbind left it
                // without a driver.
                moved.push(*a);
                restore(host, &moved, &previous);
                let _ = delete(host, addr);
                return Err(e.into());
            }
        };
        moved.push(*a);
        if got.as_deref() != Some(VFIO) {
            restore(host, &moved, &previous);
            let _ = delete(host, addr);
            return Err(PassthroughError::BindFailed { addr: *a, wanted: VFIO.into(), got: got.unwrap_or_else(|| "no driver".into()) });
        }
    }
    let moved = previous.into_iter().filter(|(_, d)| d.as_deref() != Some(VFIO)).map(|(a, from)| Rebound { address: a, from, to: Some(VFIO.into()) }).collect();
    Ok(Prepared { changed: true, moved, group: check(host, addr)? })
}

/// Driver names come back from the state file: only the kernel's own
/// character set may go into a sysfs path.
fn valid_driver(d: &str) -> bool {
    !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn restore(host: &Host, moved: &[PciAddress], previous: &[(PciAddress, Option<String>)]) {
    for a in moved.iter().rev() {
        let prev = previous.iter().find(|(p, _)| p == a).and_then(|(_, d)| d.clone()).filter(|d| valid_driver(d));
        if let Err(e) = rebind(host, *a, None).and_then(|_| match &prev {
            // drivers_probe picks the device's own driver; an explicit bind
            // covers drivers that were bound by hand.
            Some(d) if driver(host, a)?.as_deref() != Some(d.as_str()) => host.write_attr(&format!("/sys/bus/pci/drivers/{d}/bind"), &a.to_string()),
            _ => Ok(()),
        }) {
            tracing::error!(%a, "could not give the device back: {}", crate::error_chain(&e));
        }
    }
}

pub fn release(host: &Host, addr: PciAddress, lock_timeout: Duration) -> Result<Released, PassthroughError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let text = host.read_attr_opt(&state_path(addr))?.ok_or(PassthroughError::NotPrepared { addr })?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| PassthroughError::State { path: state_path(addr), source: std::io::Error::other(e) })?;
    if let Some(group) = host.link_name(&dev(addr, "iommu_group"))?.and_then(|g| parse::count(&g)) {
        if let Some(by) = users(host, group) {
            return Err(PassthroughError::InUse { addr, by });
        }
    }
    let moved: Vec<PciAddress> = saved.previous.iter().map(|(a, _)| *a).collect();
    restore(host, &moved, &saved.previous);
    let now: Vec<(PciAddress, Option<String>)> = moved.iter().map(|a| (*a, driver(host, a).ok().flatten())).collect();
    for ((a, want), (_, got)) in saved.previous.iter().zip(&now) {
        if want != got {
            return Err(PassthroughError::BindFailed {
                addr: *a,
                wanted: want.clone().unwrap_or_else(|| "no driver".into()),
                got: got.clone().unwrap_or_else(|| "no driver".into()),
            });
        }
    }
    delete(host, addr)?;
    let moved = now.into_iter().map(|(address, to)| Rebound { address, from: Some(VFIO.into()), to }).collect();
    Ok(Released { changed: true, moved })
}

/// Through the host layer: atomic, root-relative, a fault point.
fn save(host: &Host, s: &Saved) -> Result<(), PassthroughError> {
    Ok(host.write_state(&state_path(s.address), serde_json::to_string_pretty(s).unwrap_or_default().as_bytes(), 0o600)?)
}

fn delete(host: &Host, addr: PciAddress) -> Result<(), PassthroughError> {
    host.remove_state(&state_path(addr))?;
    Ok(())
}
