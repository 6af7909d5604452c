//! vgpuctl: NVIDIA GPUs for KVM guests.
//!
//! Layers, one way: `host` (root-relocatable sysfs/procfs access and external
//! commands) → `inventory` (typed view of the host) → actuators → `cli`.
//! See docs/architecture.md.

pub mod apply;
pub mod binary;
pub mod cli;
pub mod fleet;
pub mod hook;
pub mod host;
pub mod ids;
pub mod inventory;
pub mod libvirt;
pub mod lock;
pub mod logging;
pub mod mdev;
pub mod metrics;
pub mod mig;
pub mod nvidia;
pub mod nvml;
pub mod parse;
pub mod sim;
pub mod sriov;
pub mod status;
pub mod table;
pub mod types;
pub mod units;
pub mod version;
pub mod vfio;
pub mod vgpu;

/// `outer: cause: root cause` on one line: how every vgpuctl error is shown.
/// A cause whose text the outer message already contains is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// The host at `root` (or `/`), with simulated kernel behaviour attached when
/// the root is a simulated host.
pub fn open_host(root: Option<&std::path::Path>) -> Result<host::Host, host::HostError> {
    let host = match root {
        Some(r) => host::Host::at_root(r)?,
        None => host::Host::real(),
    };
    Ok(sim::attach(host))
}
