//! What the qemu hook did since boot, for `vgpuctl metrics`: VM starts it
//! prepared, refused for lack of room or failed, and releases. Kept in
//! /run (a tmpfs, so "since boot" is what the kernel gives us) and updated
//! under the host lock with an atomic replace, so concurrent VM starts never
//! lose a count and a reader never sees half a file.
//!
//! Only hook runs that have GPU work count: the no-GPU path returns before
//! anything is read or written, and stays as cheap as before.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};
use crate::lock::HostLock;

pub const FILE: &str = "/run/vgpuctl/hook-counters.json";

/// How long a count waits for the lock; a busy host loses one count rather
/// than holding up a VM start.
const LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Prepare,
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The start was refused because no GPU (or mdev parent) had room.
    NoRoom,
    /// Any other failure (bad domain, driver error, unsupported guest).
    Failed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookCounters {
    pub prepare_ok: u64,
    pub prepare_no_room: u64,
    pub prepare_failed: u64,
    pub release_ok: u64,
    pub release_failed: u64,
}

impl HookCounters {
    fn bump(&mut self, op: Op, outcome: Outcome) {
        let c = match (op, outcome) {
            (Op::Prepare, Outcome::Ok) => &mut self.prepare_ok,
            (Op::Prepare, Outcome::NoRoom) => &mut self.prepare_no_room,
            (Op::Prepare, Outcome::Failed) => &mut self.prepare_failed,
            (Op::Release, Outcome::Ok) => &mut self.release_ok,
            (Op::Release, Outcome::NoRoom | Outcome::Failed) => &mut self.release_failed,
        };
        *c = c.saturating_add(1);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("hook counters {FILE} are corrupt ({why}); delete the file to start counting again")]
    Corrupt { why: String },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

/// The counts since boot; all zero when the hook has not run with GPU work.
pub fn load(host: &Host) -> Result<HookCounters, CountersError> {
    match host.read_attr_opt(FILE)? {
        None => Ok(HookCounters::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| CountersError::Corrupt { why: e.to_string() }),
    }
}

/// Adds one outcome. A corrupt file is replaced (its counts are lost and a
/// warning says so) rather than failing the hook.
pub fn record(host: &Host, op: Op, outcome: Outcome) -> Result<(), CountersError> {
    let _lock = HostLock::acquire(host, LOCK_WAIT)?;
    let mut c = match load(host) {
        Ok(c) => c,
        Err(CountersError::Corrupt { why }) => {
            tracing::warn!("hook counters {FILE} were corrupt ({why}); counting again from zero");
            HookCounters::default()
        }
        Err(e) => return Err(e),
    };
    c.bump(op, outcome);
    let text = serde_json::to_string(&c).map_err(|e| CountersError::Corrupt { why: e.to_string() })?;
    host.write_state(FILE, text.as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counts_add_up_and_a_corrupt_file_restarts_from_zero() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::at_root(d.path()).unwrap();
        assert_eq!(load(&h).unwrap(), HookCounters::default());
        record(&h, Op::Prepare, Outcome::Ok).unwrap();
        record(&h, Op::Prepare, Outcome::NoRoom).unwrap();
        record(&h, Op::Prepare, Outcome::NoRoom).unwrap();
        record(&h, Op::Release, Outcome::Ok).unwrap();
        record(&h, Op::Release, Outcome::Failed).unwrap();
        let c = load(&h).unwrap();
        assert_eq!((c.prepare_ok, c.prepare_no_room, c.prepare_failed, c.release_ok, c.release_failed), (1, 2, 0, 1, 1));
        std::fs::write(d.path().join("run/vgpuctl/hook-counters.json"), "{garbage").unwrap();
        let e = load(&h).unwrap_err();
        assert!(e.to_string().contains("hook-counters.json"), "{e}");
        record(&h, Op::Prepare, Outcome::Failed).unwrap();
        assert_eq!(load(&h).unwrap(), HookCounters { prepare_failed: 1, ..Default::default() });
    }
}
