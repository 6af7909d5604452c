//! Moving idle GPU instances within a GPU, crash-safe.
//!
//! A move destroys an idle instance and makes one of the same profile at
//! another start (the instance id changes; nothing used the old one). The
//! whole set of moves of one reshape is written to an intent journal
//! (/run/vgpuctl/mig-move.json) before the first driver call: every moving
//! instance is destroyed, then every new one made, then the journal goes.
//! A crash at any step leaves the journal; `gc` (and the next move, before
//! it starts) reads the GPU as it is and finishes the reshape, or, when an
//! instance can no longer be made where the plan said, puts the destroyed
//! ones back where they were. Either way the GPU ends with the old layout or
//! the new one, never a mix, and the ledger names every instance vgpuctl made.

use serde::{Deserialize, Serialize};

use super::backend::MigError;
use super::instances::{Instances, Owner};
use crate::host::Host;
use crate::ids::PciAddress;

pub const FILE: &str = "/run/vgpuctl/mig-move.json";

/// One planned move, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub profile_id: u32,
    pub profile: String,
    pub from: u8,
    pub to: u8,
    /// The instance id before the move.
    pub gi: u32,
    pub owner: Owner,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Journal {
    format: u32,
    gpu: PciAddress,
    moves: Vec<Planned>,
}

/// One instance moved.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Moved {
    pub profile: String,
    pub from: u8,
    pub to: u8,
    /// Its id before the move.
    pub gi_before: u32,
    /// Its id now.
    pub gi: u32,
}

fn load(host: &Host) -> Result<Option<Journal>, MigError> {
    let Some(text) = host.read_attr_opt(FILE)? else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| MigError::MoveJournalCorrupt { file: FILE, why: e.to_string() })
}

fn save(host: &Host, j: &Journal) -> Result<(), MigError> {
    Ok(host.write_state(FILE, serde_json::to_string_pretty(j).unwrap_or_default().as_bytes(), 0o600)?)
}

/// Whether a move is unfinished (one stat, no lock).
pub fn pending(host: &Host) -> bool {
    host.exists(FILE)
}

/// Carries out the moves on `gpu`: journal, destroy every moving instance,
/// make each again at its new start, drop the journal. A failure part-way
/// is undone at once where it can be (the old layout comes back); what
/// cannot be undone stays journaled for `gc`.
pub(crate) fn run(m: &Instances, gpu: PciAddress, plan: Vec<Planned>) -> Result<Vec<Moved>, MigError> {
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    let host = m.host();
    // An earlier reshape a crash cut short is settled first.
    if pending(host) {
        recover(m)?;
    }
    let j = Journal { format: 1, gpu, moves: plan };
    save(host, &j)?;
    for mv in &j.moves {
        if let Err(e) = m.take_down(gpu, mv.gi) {
            return Err(undo(m, &j, e));
        }
    }
    let mut out = Vec::with_capacity(j.moves.len());
    for mv in &j.moves {
        match m.remake(gpu, mv.profile_id, mv.to, mv.owner) {
            Ok(gi) => out.push(Moved { profile: mv.profile.clone(), from: mv.from, to: mv.to, gi_before: mv.gi, gi }),
            Err(e) => return Err(undo(m, &j, e)),
        }
    }
    // Every move is made: a journal that cannot be removed now only says
    // so, and whoever reads it next (gc, the next move) finds nothing to do.
    if let Err(e) = host.remove_state(FILE) {
        tracing::warn!("the moves on {gpu} are done, but {e}; vgpuctl gc removes it");
    }
    tracing::info!(%gpu, moves = out.len(), "moved idle GPU instances");
    Ok(out)
}

/// After a failure part-way: back to the old layout, journal gone; when
/// even that fails the journal stays for `gc`, and the error says so.
fn undo(m: &Instances, j: &Journal, e: MigError) -> MigError {
    match revert(m, j).and_then(|_| Ok(m.host().remove_state(FILE)?)) {
        Ok(_) => e,
        Err(u) => {
            tracing::error!(gpu = %j.gpu, "could not put the GPU instances back ({u}); vgpuctl gc retries");
            MigError::MoveUnfinished { gpu: j.gpu, file: format!("{FILE}; {e}; putting them back failed too: {u}") }
        }
    }
}

/// The GPU's instances now, as (profile id, start) → instance id: each
/// phase below reads the driver once (every planned start is distinct, so
/// changing one place does not change what another move finds).
fn places(m: &Instances, gpu: PciAddress) -> Result<Vec<(u32, u8, u32)>, MigError> {
    Ok(m.backend().instances(gpu)?.into_iter().map(|i| (i.profile_id, i.start, i.gi)).collect())
}

fn at(places: &[(u32, u8, u32)], profile_id: u32, start: u8) -> Option<u32> {
    places.iter().find(|(p, s, _)| *p == profile_id && *s == start).map(|(.., gi)| *gi)
}

/// Every move back: an instance made at `to` is destroyed, one missing at
/// `from` made again.
fn revert(m: &Instances, j: &Journal) -> Result<(), MigError> {
    let now = places(m, j.gpu)?;
    for mv in &j.moves {
        if at(&now, mv.profile_id, mv.from).is_some() {
            continue;
        }
        if let Some(gi) = at(&now, mv.profile_id, mv.to) {
            m.take_down(j.gpu, gi)?;
        }
    }
    fill(m, j, |mv| mv.from)
}

/// Every planned instance at its start (`start`: the old or the new one):
/// one already there is recorded on the ledger as the journal's owner's,
/// one missing is made.
fn fill(m: &Instances, j: &Journal, start: impl Fn(&Planned) -> u8) -> Result<(), MigError> {
    let now = places(m, j.gpu)?;
    for mv in &j.moves {
        match at(&now, mv.profile_id, start(mv)) {
            Some(gi) => m.adopt(j.gpu, gi, mv.profile_id, start(mv), mv.owner)?,
            None => {
                m.remake(j.gpu, mv.profile_id, start(mv), mv.owner)?;
            }
        }
    }
    Ok(())
}

/// Every move forward: what is still at `from` is destroyed (after the idle
/// checks again: a VM may have started on it since), what is missing at
/// `to` made.
fn finish(m: &Instances, j: &Journal) -> Result<(), MigError> {
    // Judged once: destroying idle instances makes no other one busy. The
    // judgement lists the GPU's instances, so the driver is not asked twice.
    let idle = m.idleness(j.gpu, true)?;
    let now: Vec<(u32, u8, u32)> = idle.iter().map(|(i, _)| (i.profile_id, i.start, i.gi)).collect();
    for mv in &j.moves {
        let Some(gi) = at(&now, mv.profile_id, mv.from) else { continue };
        if at(&now, mv.profile_id, mv.to).is_some() {
            continue;
        }
        if let Some((_, Some(why))) = idle.iter().find(|(i, _)| i.gi == gi) {
            return Err(MigError::Pinned { gpu: j.gpu, gi, why: why.to_string() });
        }
        m.take_down(j.gpu, gi)?;
    }
    fill(m, j, |mv| mv.to)
}

/// Settles a reshape a crash cut short: finished when it can be, else
/// reverted. (what, what happened), for `gc`. Call under the host lock.
pub fn recover(m: &Instances) -> Result<Vec<(String, String)>, MigError> {
    let host = m.host();
    let Some(j) = load(host)? else { return Ok(Vec::new()) };
    let what = format!("{} move of {} GPU instance(s)", j.gpu, j.moves.len());
    let done = match finish(m, &j) {
        Ok(()) => "finished".to_string(),
        Err(f) => {
            revert(m, &j).map_err(|r| MigError::MoveUnfinished { gpu: j.gpu, file: format!("{FILE}; finishing failed ({f}) and so did reverting ({r})") })?;
            format!("reverted (finishing failed: {f})")
        }
    };
    host.remove_state(FILE)?;
    Ok(vec![(what, done)])
}
