//! What the hook made for each domain, under /run/vgpuctl/domains: written
//! atomically before (intent) and after (done) every sysfs change, so a
//! crash at any point leaves enough to undo exactly what was made.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};
use crate::ids::{MdevUuid, PciAddress};

pub const DIR: &str = "/run/vgpuctl/domains";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A prepare is (or was, if its pid is gone) under way.
    Preparing,
    /// Every device was made; the VM is starting or running.
    Prepared,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Mdev {
        uuid: MdevUuid,
        done: bool,
    },
    VfType {
        vf: PciAddress,
        type_id: u32,
        done: bool,
    },
    /// A MIG GPU instance made for a MIG-backed vGPU of this domain.
    MigGi {
        gpu: PciAddress,
        gi: u32,
        done: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub format: u32,
    pub domain: String,
    pub uuid: Option<String>,
    pub pid: u32,
    pub state: State,
    /// Seconds since the epoch of the last write.
    pub updated: u64,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the hook journal {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hook journal {path} is corrupt: {why}")]
    Corrupt { path: String, why: String },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// The file name for a domain: its UUID when it has a valid one, else the
/// name hex-encoded (names may hold anything but '/').
pub fn key(domain: &str, uuid: Option<&str>) -> String {
    match uuid.and_then(|u| u.parse::<uuid::Uuid>().ok()) {
        Some(u) => u.hyphenated().to_string(),
        None => format!("name-{}", domain.bytes().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The host path of a domain's journal.
fn file(key: &str) -> String {
    format!("{DIR}/{key}.json")
}

fn path(host: &Host, key: &str) -> Result<PathBuf, JournalError> {
    Ok(host.path(&file(key))?)
}

pub fn load(host: &Host, key: &str) -> Result<Option<Journal>, JournalError> {
    let p = path(host, key)?;
    match fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| JournalError::Corrupt { path: p.display().to_string(), why: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JournalError::Read { path: p.display().to_string(), source }),
    }
}

/// Through the host layer: atomic, root-relative, a fault point.
pub fn save(host: &Host, key: &str, j: &mut Journal) -> Result<(), JournalError> {
    j.updated = now();
    let text = serde_json::to_string_pretty(j).unwrap_or_default();
    Ok(host.write_state(&file(key), text.as_bytes(), 0o600)?)
}

/// Whether any domain has a journal (one directory listing, no lock).
pub fn any(host: &Host) -> bool {
    host.list_dir(DIR).is_ok_and(|v| v.iter().any(|n| n.ends_with(".json")))
}

/// Whether the domain has a journal (one stat, no lock).
pub fn exists(host: &Host, key: &str) -> bool {
    host.exists(&file(key))
}

pub fn delete(host: &Host, key: &str) -> Result<(), JournalError> {
    host.remove_state(&file(key))?;
    Ok(())
}

/// A journal file's key and what reading it gave.
pub type LoadedJournal = (String, Result<Journal, JournalError>);

/// Every journal on the host, by key.
pub fn all(host: &Host) -> Result<Vec<LoadedJournal>, JournalError> {
    let mut out = Vec::new();
    for name in host.list_dir(DIR)? {
        let Some(key) = name.strip_suffix(".json") else { continue };
        if key.starts_with('.') {
            continue;
        }
        out.push((key.to_string(), load(host, key).and_then(|j| j.ok_or_else(|| JournalError::Corrupt { path: name.clone(), why: "vanished".into() }))));
    }
    Ok(out)
}

impl Journal {
    pub fn new(domain: &str, uuid: Option<&str>) -> Self {
        Self {
            format: 1,
            domain: domain.to_string(),
            uuid: uuid.map(str::to_string),
            pid: std::process::id(),
            state: State::Preparing,
            updated: now(),
            entries: Vec::new(),
        }
    }
}
