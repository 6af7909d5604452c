//! `vgpuctl mdev restore`: start every `auto` definition, at boot or after a
//! driver reload. Parents that are not there yet (VFs still being enabled,
//! the NVIDIA vGPU manager still starting) are waited for, up to a bound, by
//! re-checking with a growing pause (100 ms doubling to 2 s): never a fixed
//! sleep, never a tight loop. The lock is held per device, not across the
//! wait, so VM starts are not blocked by a slow boot.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::definitions::{self, StartPolicy};
use super::ops::start_definition_locked;
use super::MdevError;
use crate::host::Host;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid};
use crate::lock::HostLock;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum RestoreOutcome {
    /// Created now.
    Started,
    /// Already there as defined.
    AlreadyActive,
    /// Creation failed; the reason is the error chain.
    Failed { error: String },
    /// The parent did not appear within the wait.
    ParentMissing { waited_seconds: f64 },
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RestoreItem {
    pub uuid: MdevUuid,
    pub parent: MdevParent,
    #[serde(rename = "type")]
    pub type_id: MdevTypeId,
    #[serde(flatten)]
    pub outcome: RestoreOutcome,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RestoreReport {
    pub schema_version: u32,
    pub devices: Vec<RestoreItem>,
    /// Definition files that could not be read (left untouched).
    pub warnings: Vec<String>,
}

impl RestoreReport {
    pub fn all_ok(&self) -> bool {
        self.devices.iter().all(|d| matches!(d.outcome, RestoreOutcome::Started | RestoreOutcome::AlreadyActive))
    }
}

pub fn restore(host: &Host, wait: Duration, lock_timeout: Duration) -> Result<RestoreReport, MdevError> {
    let (defs, warnings) = definitions::load_all(host)?;
    let mut pending: Vec<_> = defs.into_iter().filter(|d| d.start == StartPolicy::Auto).collect();
    let mut done = Vec::new();
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|d| host.exists(&format!("/sys/class/mdev_bus/{}", d.parent)));
        pending = waiting;
        for d in ready {
            let outcome = match HostLock::acquire(host, lock_timeout).map_err(MdevError::from).and_then(|_l| start_definition_locked(host, &d)) {
                Ok(c) if c.created => RestoreOutcome::Started,
                Ok(_) => RestoreOutcome::AlreadyActive,
                Err(e) => RestoreOutcome::Failed { error: crate::error_chain(&e) },
            };
            tracing::info!(uuid = %d.uuid, parent = %d.parent, "restore: {outcome:?}");
            done.push(RestoreItem { uuid: d.uuid, parent: d.parent, type_id: d.mdev_type, outcome });
        }
        let elapsed = start.elapsed();
        if pending.is_empty() || elapsed >= wait {
            break;
        }
        std::thread::sleep(pause.min(wait - elapsed));
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    let waited = start.elapsed().as_secs_f64();
    for d in pending {
        done.push(RestoreItem {
            uuid: d.uuid,
            parent: d.parent,
            type_id: d.mdev_type,
            outcome: RestoreOutcome::ParentMissing { waited_seconds: (waited * 10.0).round() / 10.0 },
        });
    }
    done.sort_by(|a, b| (&a.parent, a.uuid).cmp(&(&b.parent, b.uuid)));
    Ok(RestoreReport { schema_version: crate::inventory::SCHEMA_VERSION, devices: done, warnings })
}
