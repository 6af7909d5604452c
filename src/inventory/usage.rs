//! Who holds a VFIO group open. A VM (QEMU) opens /dev/vfio/<group> for each
//! mdev or passthrough device it uses, so an open group means "in use".

use std::collections::HashMap;

use serde::Serialize;

use crate::host::Host;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VfioUser {
    pub pid: u32,
    /// The process name (`qemu-system-x86`).
    pub process: String,
    /// The libvirt/QEMU guest name from `-name guest=…`, when there is one.
    pub vm: Option<String>,
}

/// `qemu-system-x86 (pid 368), VM vm1`: how every message names a holder.
impl std::fmt::Display for VfioUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.process, self.pid)?;
        if let Some(vm) = &self.vm {
            write!(f, ", VM {vm}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct VfioUsers {
    /// `None` when /proc could not be read (not root, or a relocated root
    /// without /proc): usage is then unknown, not "free".
    by_group: Option<HashMap<u32, VfioUser>>,
}

impl VfioUsers {
    pub fn unknown() -> Self {
        Self { by_group: None }
    }

    /// One pass over /proc/<pid>/fd. Processes we may not inspect make the
    /// answer unknown, since one of them could be the QEMU holding a device.
    pub fn scan(host: &Host) -> Self {
        // No group nodes means nothing is bound to VFIO, so nobody can hold one:
        // a known "free" answer without walking every process.
        match host.list_dir("/dev/vfio") {
            Ok(nodes) if nodes.iter().all(|n| n == "vfio") => return Self { by_group: Some(HashMap::new()) },
            Ok(_) => {}
            Err(_) => return Self::unknown(),
        }
        let Ok(pids) = host.list_dir("/proc") else { return Self::unknown() };
        let pids: Vec<u32> = pids.iter().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            return Self::unknown();
        }
        let mut by_group = HashMap::new();
        for pid in pids {
            let fds = match host.list_dir(&format!("/proc/{pid}/fd")) {
                Ok(f) => f,
                // The process ended between the two listings.
                Err(e) if e.is_not_found() => continue,
                Err(_) => return Self::unknown(),
            };
            for fd in fds {
                let Ok(Some(target)) = host.read_link(&format!("/proc/{pid}/fd/{fd}")) else { continue };
                let Some(group) = target.strip_prefix("/dev/vfio").ok().and_then(|g| g.to_str()).and_then(|g| g.parse::<u32>().ok()) else {
                    continue;
                };
                by_group.entry(group).or_insert_with(|| VfioUser {
                    pid,
                    process: host.read_attr(&format!("/proc/{pid}/comm")).unwrap_or_default(),
                    vm: guest_name(host, pid),
                });
            }
        }
        Self { by_group: Some(by_group) }
    }

    pub fn in_use(&self, group: u32) -> Option<bool> {
        self.by_group.as_ref().map(|m| m.contains_key(&group))
    }

    pub fn user_of(&self, group: u32) -> Option<VfioUser> {
        self.by_group.as_ref().and_then(|m| m.get(&group).cloned())
    }
}

/// QEMU started by libvirt carries `-name guest=<domain>,debug-threads=on`.
fn guest_name(host: &Host, pid: u32) -> Option<String> {
    let p = host.path(&format!("/proc/{pid}/cmdline")).ok()?;
    let raw = std::fs::read(p).ok()?;
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let i = args.iter().position(|a| *a == b"-name")?;
    let value = std::str::from_utf8(args.get(i + 1)?).ok()?;
    let first = value.split(',').next()?;
    Some(first.strip_prefix("guest=").unwrap_or(first).to_string())
}
