//! The libvirt qemu hook: makes a VM's GPU devices exist at `prepare begin`
//! and frees exactly what it made at `release end`.
//!
//! It never calls libvirt (libvirt documents that a hook calling back into
//! libvirtd deadlocks): everything comes from argv, the domain XML on stdin
//! and the host. Every allocation runs under the host-wide lock, and a
//! journal per domain records intent and completion around each sysfs change,
//! so a crash mid-prepare is undone by the next hook call for that domain or
//! by `vgpuctl gc`.

pub mod counters;
pub mod install;
pub mod journal;

use std::io::Read;
use std::time::Duration;

use serde::Serialize;

use crate::host::Host;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid, PciAddress};
use crate::inventory::{read_device, Inventory, ScanOptions, VfioUsers, Warnings};
use crate::libvirt::domain_xml::{self, DomainGpus, Hostdev};
use crate::lock::HostLock;
use crate::mdev::{self, CreateRequest};
use crate::nvidia::Wants;
use crate::vgpu::alloc::Policy;
use crate::vgpu::typename::VgpuTypeName;
pub use journal::{Entry, Journal, State};

/// One device a VM start needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// An mdev of a type, on `parent` or on any parent offering the type.
    Mdev { uuid: MdevUuid, mdev_type: MdevTypeId, parent: Option<MdevParent> },
    /// A vGPU type on the legacy interface, as an mdev with this UUID.
    LegacyVgpu { uuid: MdevUuid, type_name: String, policy: Policy, gpu: Option<PciAddress> },
    /// A vGPU type written to the VF the domain's hostdev names.
    VendorVgpu { vf: PciAddress, type_name: String },
    /// Nothing to make; a note for `hook test` (passthrough is libvirt's job with managed='yes').
    Note { what: String },
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Failed(String),
    /// The start was refused because no GPU or mdev parent had room (counted
    /// apart in the hook's metrics).
    #[error("{0}")]
    NoRoom(String),
    #[error(transparent)]
    Xml(#[from] domain_xml::DomainXmlError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

/// The devices a domain's start needs, from its metadata and hostdevs.
pub fn plan(host: &Host, d: &DomainGpus) -> Result<Vec<Action>, HookError> {
    // A guest that cannot use what it asks for does not start with it.
    crate::libvirt::guest::check(d.guest_os(), &d.vgpu_types()).map_err(|e| HookError::Failed(e.to_string()))?;
    let mut actions = Vec::new();
    let mut covered: Vec<Hostdev> = Vec::new();
    for r in &d.requests {
        let dev = r.hostdev();
        // One device, one request: a second one would be silently "already
        // there" and the VM would start with fewer GPUs than it asked for.
        if covered.iter().any(|c| c.same_device(&dev)) {
            return Err(HookError::Failed(format!(
                "the domain's vgpuctl metadata names {} twice: each GPU request needs its own device (regenerate it with vgpuctl vm xml)",
                dev.label()
            )));
        }
        covered.push(dev);
        actions.push(Action::from(r));
    }
    for h in &d.hostdevs {
        let Hostdev::Mdev { uuid } = h else { continue };
        if covered.contains(h) || host.exists(&format!("/sys/bus/mdev/devices/{uuid}")) {
            continue;
        }
        // A plain mdev hostdev: make it from its mdevctl/vgpuctl definition.
        match mdev::definitions::find(host, uuid).map_err(|e| HookError::Failed(crate::error_chain(&e)))? {
            Some(def) => actions.push(Action::Mdev { uuid: *uuid, mdev_type: def.mdev_type, parent: Some(def.parent) }),
            None => {
                return Err(HookError::Failed(format!(
                    "mdev {uuid} does not exist and has no definition in /etc/mdevctl.d: create it (vgpuctl mdev create … --uuid {uuid} --persist) or add vgpuctl metadata to the domain"
                )))
            }
        }
    }
    Ok(actions)
}

fn mdev_exists(host: &Host, uuid: MdevUuid) -> Option<MdevTypeId> {
    read_device(host, uuid, &VfioUsers::unknown(), &mut Warnings::default()).and_then(|d| d.type_id)
}

/// Why one device could not be made.
#[derive(Debug)]
struct Failure {
    msg: String,
    /// Refused for lack of room (every candidate full), not broken.
    no_room: bool,
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Self { msg, no_room: false }
    }
}

/// Whether an error (or one of its sources) is a "no room" refusal.
fn is_no_room(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if matches!(x.downcast_ref::<crate::vgpu::VgpuError>(), Some(crate::vgpu::VgpuError::NoRoom { .. }))
            || matches!(x.downcast_ref::<mdev::MdevError>(), Some(mdev::MdevError::NoRoom { .. }))
            || matches!(x.downcast_ref::<crate::mig::backend::MigError>(), Some(crate::mig::backend::MigError::NoRoom { .. }))
        {
            return true;
        }
        cur = x.source();
    }
    false
}

fn fail(e: &(dyn std::error::Error + 'static)) -> Failure {
    Failure { msg: crate::error_chain(e), no_room: is_no_room(e) }
}

/// Makes one device; `Ok(())` also when it already existed as wanted (then
/// it is not journaled, so not ours to remove at release).
fn perform(host: &Host, a: &Action, j: &mut Journal, key: &str) -> Result<(), Failure> {
    match a {
        Action::Mdev { uuid, mdev_type, parent } => {
            if let Some(t) = mdev_exists(host, *uuid) {
                return if t == *mdev_type { Ok(()) } else { Err(format!("mdev {uuid} exists as {t}, but the domain wants {mdev_type}").into()) };
            }
            record(host, key, j, Entry::Mdev { uuid: *uuid, done: false })?;
            let parents: Vec<MdevParent> = match parent {
                Some(p) => vec![p.clone()],
                None => {
                    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: false }).map_err(|e| fail(&e))?;
                    let offering: Vec<_> = inv.mdev_parents.iter().filter(|p| p.types.iter().any(|t| t.id == *mdev_type)).collect();
                    let free: Vec<MdevParent> = offering
                        .iter()
                        .filter(|p| p.types.iter().any(|t| t.id == *mdev_type && t.available_instances.unwrap_or(0) > 0))
                        .map(|p| p.name.clone())
                        .collect();
                    if free.is_empty() {
                        let held: Vec<String> =
                            offering.iter().map(|p| format!("{} holds {} mdev(s)", p.name, p.types.iter().map(|t| t.devices.len()).sum::<usize>())).collect();
                        return Err(if held.is_empty() {
                            format!("no mdev parent on this host offers type {mdev_type}").into()
                        } else {
                            Failure {
                                msg: format!("no room for an mdev of type {mdev_type}: {}; stop a VM using one, or see `vgpuctl types`", held.join(", ")),
                                no_room: true,
                            }
                        });
                    }
                    free
                }
            };
            let mut last = Failure::from(String::new());
            for p in parents {
                let req = CreateRequest { parent: p, mdev_type: mdev_type.to_string(), uuid: Some(*uuid), persist: None, attrs: vec![] };
                match mdev::create_locked(host, &req) {
                    Ok(_) => return Ok(finish(host, key, j)?),
                    Err(e) => last = fail(&e),
                }
            }
            Err(last)
        }
        Action::LegacyVgpu { uuid, type_name, policy, gpu } => {
            if mdev_exists(host, *uuid).is_some() {
                return Ok(());
            }
            let t: VgpuTypeName = type_name.parse().map_err(|e| fail(&e))?;
            record(host, key, j, Entry::Mdev { uuid: *uuid, done: false })?;
            let req = crate::vgpu::VgpuCreateRequest { type_name: t, gpu: *gpu, uuid: Some(*uuid), policy: *policy };
            crate::vgpu::create_locked(host, &req).map_err(|e| fail(&e))?;
            Ok(finish(host, key, j)?)
        }
        Action::VendorVgpu { vf, type_name } => {
            let t: VgpuTypeName = type_name.parse().map_err(|e| fail(&e))?;
            if t.kind() == crate::vgpu::typename::VgpuKind::MigBacked
                && host.read_attr(&format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type")).map(|v| v.trim() == "0").unwrap_or(false)
            {
                // No free GPU instance of the profile: make one for this VM, and
                // free it again at release.
                let listed = host.read_attr(&format!("/sys/bus/pci/devices/{vf}/nvidia/creatable_vgpu_types")).unwrap_or_default();
                if !crate::parse::creatable_vgpu_types(&listed).0.iter().any(|x| t.matches(&x.name)) {
                    let pf = host.link_name(&format!("/sys/bus/pci/devices/{vf}/physfn")).ok().flatten().and_then(|p| p.parse::<PciAddress>().ok());
                    let (_, views) = crate::vgpu::views(host).map_err(|e| fail(&e))?;
                    let made = match pf {
                        Some(pf) => crate::vgpu::make_gi_for(host, &views, &t, Some(pf)).map_err(|e| fail(&e))?,
                        None => None,
                    };
                    if let Some((gpu, gi, _moved)) = made {
                        // Moves to make room (opt-in) are logged where they are made.
                        record(host, key, j, Entry::MigGi { gpu, gi, done: false })?;
                        finish(host, key, j)?;
                    }
                }
            }
            // Record the intent with the id only once known: ensure_vf_type
            // writes at most once, and reads back before returning.
            match crate::vgpu::ensure_vf_type(host, *vf, &t).map_err(|e| fail(&e))? {
                Some(id) => {
                    record(host, key, j, Entry::VfType { vf: *vf, type_id: id, done: false })?;
                    Ok(finish(host, key, j)?)
                }
                None => Ok(()),
            }
        }
        Action::Note { .. } => Ok(()),
    }
}

fn record(host: &Host, key: &str, j: &mut Journal, e: Entry) -> Result<(), String> {
    j.entries.push(e);
    journal::save(host, key, j).map_err(|e| crate::error_chain(&e))
}

fn finish(host: &Host, key: &str, j: &mut Journal) -> Result<(), String> {
    if let Some(last) = j.entries.last_mut() {
        match last {
            Entry::Mdev { done, .. } | Entry::VfType { done, .. } | Entry::MigGi { done, .. } => *done = true,
        }
    }
    journal::save(host, key, j).map_err(|e| crate::error_chain(&e))
}

/// Undoes a journal's devices, newest first; pending entries too, when the
/// device got made before the crash. Returns the problems (devices left).
pub fn undo(host: &Host, j: &Journal) -> Vec<String> {
    if j.entries.iter().any(|e| matches!(e, Entry::MigGi { .. })) {
        // Destroying a GPU instance reads its instances and their users.
        host.nvidia().expect(Wants::MIG);
    }
    let mut problems = Vec::new();
    for e in j.entries.iter().rev() {
        match e {
            Entry::Mdev { uuid, .. } => {
                if let Err(err) = mdev::remove_locked(host, *uuid, false, true) {
                    problems.push(crate::error_chain(&err));
                }
            }
            Entry::VfType { vf, type_id, .. } => {
                if let Err(err) = crate::vgpu::clear_vf_type(host, *vf, *type_id) {
                    problems.push(crate::error_chain(&err));
                }
            }
            // The journal proves this start made it: destroyed after the
            // checks every destroy makes (its vGPU went just before), and off
            // the ledger; one already gone is fine.
            Entry::MigGi { gpu, gi, .. } => {
                let opts = crate::mig::instances::DestroyOptions { with_compute_instances: true };
                let gone = |m: &crate::mig::instances::Instances| match m.destroy(*gpu, *gi, opts) {
                    Err(crate::mig::backend::MigError::NoInstance { .. }) => m.forget(*gpu, *gi).map(|_| ()),
                    r => r,
                };
                if let Err(err) = crate::mig::instances::Instances::open(host).and_then(|m| gone(&m)) {
                    problems.push(crate::error_chain(&err));
                }
            }
        }
    }
    problems
}

fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// What making `actions` reads from the NVIDIA driver: nothing for mdevs of
/// other parents (the helper is never started for them), the vGPU view (and
/// so MIG room) for vGPUs. Declared once, so a VM start costs one NVML session
/// at most.
pub fn driver_wants(actions: &[Action]) -> Wants {
    let vgpu = actions.iter().any(|a| matches!(a, Action::LegacyVgpu { .. } | Action::VendorVgpu { .. }));
    if vgpu {
        // MIG room is asked only of GPUs in MIG mode: their instances bring their tables.
        Wants::VGPU | Wants::MIG_INSTANCES
    } else {
        Wants::IDENTITY
    }
}

pub fn prepare(host: &Host, d: &DomainGpus) -> Result<Vec<Action>, HookError> {
    let actions = plan(host, d)?;
    let wants = driver_wants(&actions);
    if wants != Wants::IDENTITY {
        host.nvidia().expect(wants);
        // It will be asked: NVML starts while the lock is taken and the journal read.
        host.nvidia().prefetch(host);
    }
    let key = journal::key(&d.name, d.uuid.as_deref());
    let _lock = HostLock::acquire(host, LOCK_TIMEOUT)?;
    if let Some(old) = journal::load(host, &key)? {
        let intact = old.state == State::Prepared
            && old.entries.iter().all(|e| match e {
                Entry::Mdev { uuid, .. } => mdev_exists(host, *uuid).is_some(),
                Entry::VfType { vf, type_id, .. } => {
                    host.read_attr(&format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type")).ok().as_deref().map(str::trim) == Some(&type_id.to_string())
                }
                Entry::MigGi { .. } => true,
            });
        if intact {
            return Ok(actions); // prepare twice: everything is already there
        }
        tracing::warn!(domain = %d.name, "cleaning up an earlier interrupted prepare");
        let problems = undo(host, &old);
        if !problems.is_empty() {
            return Err(HookError::Failed(format!("an earlier start of {} left devices that cannot be removed: {}", d.name, problems.join("; "))));
        }
        journal::delete(host, &key)?;
    }
    let mut j = Journal::new(&d.name, d.uuid.as_deref());
    journal::save(host, &key, &mut j)?;
    let mut errors = Vec::new();
    let mut no_room = false;
    for a in &actions {
        if let Err(e) = perform(host, a, &mut j, &key) {
            no_room = e.no_room;
            errors.push(e.msg);
            break;
        }
    }
    if !errors.is_empty() {
        let msg = abandon(host, &key, &j, errors);
        return Err(if no_room { HookError::NoRoom(msg) } else { HookError::Failed(msg) });
    }
    if j.entries.is_empty() {
        journal::delete(host, &key)?;
    } else {
        j.state = State::Prepared;
        if let Err(e) = journal::save(host, &key, &mut j) {
            // Not recorded as prepared: the start fails, so nothing it made may stay.
            return Err(HookError::Failed(abandon(host, &key, &j, vec![crate::error_chain(&e)])));
        }
    }
    Ok(actions)
}

/// A failed start: frees what it made and drops its journal. Returns the
/// message: the failure, then what the rollback could not do.
fn abandon(host: &Host, key: &str, j: &Journal, mut errors: Vec<String>) -> String {
    errors.extend(undo(host, j).into_iter().map(|p| format!("rollback: {p}")));
    if journal::delete(host, key).is_err() {
        errors.push("the journal could not be removed; `vgpuctl gc` will".into());
    }
    errors.join("\n")
}

pub fn release(host: &Host, d: &DomainGpus) -> Result<(), HookError> {
    let key = journal::key(&d.name, d.uuid.as_deref());
    let _lock = HostLock::acquire(host, LOCK_TIMEOUT)?;
    let Some(j) = journal::load(host, &key)? else { return Ok(()) };
    let problems = undo(host, &j);
    if problems.is_empty() {
        journal::delete(host, &key)?;
        Ok(())
    } else {
        Err(HookError::Failed(format!("could not free every device of {}: {}; `vgpuctl gc` retries", d.name, problems.join("; "))))
    }
}

/// Entry point for libvirt: `<hook> <domain> <op> <subop> <extra>`, XML on stdin.
/// Returns the exit code; prints one line per problem to stderr (libvirt
/// shows it to whoever ran `virsh start`).
pub fn run_qemu(host: &Host, args: &[String], stdin: &mut dyn std::io::Read) -> i32 {
    let op = args.get(1).map(String::as_str).unwrap_or("");
    let sub = args.get(2).map(String::as_str).unwrap_or("");
    let wanted = matches!((op, sub), ("prepare", "begin") | ("release", "end"));
    let mut xml = String::new();
    // libvirt writes the XML whatever the op; read it so it never sees EPIPE.
    if stdin.take(domain_xml::MAX_XML_BYTES as u64 + 1).read_to_string(&mut xml).is_err() {
        if wanted {
            eprintln!("vgpuctl hook: cannot read the domain XML on stdin");
            return 1;
        }
        return 0;
    }
    let gpu_xml = xml.contains(domain_xml::NAMESPACE) || xml.contains("mdev");
    // Devices attached live without --config are not in the XML libvirt
    // passes at release, only in the domain's journal: looked for when any
    // journal exists.
    let maybe_journaled = op == "release" && !gpu_xml && journal::any(host);
    if !wanted || !(gpu_xml || maybe_journaled) {
        return 0; // no GPU work: the common case, kept cheap
    }
    let counted = if op == "prepare" { counters::Op::Prepare } else { counters::Op::Release };
    let d = match domain_xml::parse(&xml) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vgpuctl hook: {}", crate::error_chain(&e));
            count(host, counted, counters::Outcome::Failed);
            return 1;
        }
    };
    // A domain without GPU devices is left alone, unless it has a journal.
    let journaled = op == "release" && journal::exists(host, &journal::key(&d.name, d.uuid.as_deref()));
    if !journaled && d.requests.is_empty() && !d.hostdevs.iter().any(|h| matches!(h, Hostdev::Mdev { .. })) {
        return 0;
    }
    let r = if op == "prepare" { prepare(host, &d).map(|_| ()) } else { release(host, &d) };
    match r {
        Ok(()) => {
            count(host, counted, counters::Outcome::Ok);
            0
        }
        Err(e) => {
            for line in crate::error_chain(&e).lines() {
                eprintln!("vgpuctl: {}: {line}", d.name);
            }
            count(host, counted, if matches!(e, HookError::NoRoom(_)) { counters::Outcome::NoRoom } else { counters::Outcome::Failed });
            1
        }
    }
}

/// Counts a hook outcome for `vgpuctl metrics`; a count that cannot be
/// written is logged, never a reason to fail the VM's start or stop.
fn count(host: &Host, op: counters::Op, outcome: counters::Outcome) {
    if let Err(e) = counters::record(host, op, outcome) {
        tracing::warn!("cannot count the hook outcome: {}", crate::error_chain(&e));
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct GcItem {
    pub domain: String,
    pub key: String,
    pub action: String,
}

/// Cleans up after crashed prepares and releases that never came: journals
/// whose hook process is gone mid-prepare, and prepared ones whose VM is not
/// running (no QEMU with `-name guest=<domain>`) for over `grace`.
pub fn gc(host: &Host, grace: Duration) -> Result<Vec<GcItem>, HookError> {
    let _lock = HostLock::acquire(host, LOCK_TIMEOUT)?;
    let running = running_guests(host);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut out = Vec::new();
    for (key, j) in journal::all(host)? {
        let j = match j {
            Ok(j) => j,
            Err(e) => {
                out.push(GcItem { domain: "?".into(), key, action: format!("left alone: {}", crate::error_chain(&e)) });
                continue;
            }
        };
        let stale = match j.state {
            State::Preparing => !pid_alive(j.pid),
            State::Prepared => running.as_ref().is_some_and(|r| !r.contains(&j.domain)) && now.saturating_sub(j.updated) >= grace.as_secs(),
        };
        if !stale {
            out.push(GcItem { domain: j.domain.clone(), key, action: "kept: in use".into() });
            continue;
        }
        let problems = undo(host, &j);
        let action = if problems.is_empty() {
            journal::delete(host, &key)?;
            format!("freed {} device(s)", j.entries.len())
        } else {
            format!("could not free: {}", problems.join("; "))
        };
        out.push(GcItem { domain: j.domain, key, action });
    }
    // A reshape of GPU instances a crash cut short: finished or reverted
    // before the sweep, which would otherwise see its new instances as strays.
    if crate::mig::moves::pending(host) {
        match crate::mig::instances::Instances::open(host).and_then(|m| crate::mig::moves::recover(&m)) {
            Ok(done) => out.extend(done.into_iter().map(|(key, action)| GcItem { domain: "-".into(), key, action })),
            Err(e) => out.push(GcItem { domain: "-".into(), key: crate::mig::moves::FILE.into(), action: format!("left alone: {e}") }),
        }
    }
    match crate::mig::instances::Instances::open(host).and_then(|m| m.sweep()) {
        Ok(swept) => {
            for (key, action) in swept {
                out.push(GcItem { domain: "-".into(), key, action });
            }
        }
        Err(e) => out.push(GcItem { domain: "-".into(), key: crate::mig::backend::ledger::FILE.into(), action: format!("left alone: {e}") }),
    }
    Ok(out)
}

/// Names of running QEMU guests, or `None` when /proc cannot be read.
fn running_guests(host: &Host) -> Option<Vec<String>> {
    let pids = host.list_dir("/proc").ok()?;
    let mut names = Vec::new();
    for pid in pids.iter().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        let Ok(p) = host.path(&format!("/proc/{pid}/cmdline")) else { continue };
        let Ok(raw) = std::fs::read(p) else { continue };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        if let Some(i) = args.iter().position(|a| *a == b"-name") {
            if let Some(v) = args.get(i + 1).and_then(|v| std::str::from_utf8(v).ok()) {
                let first = v.split(',').next().unwrap_or(v);
                names.push(first.strip_prefix("guest=").unwrap_or(first).to_string());
            }
        }
    }
    Some(names)
}

impl From<&crate::libvirt::generate::DeviceSpec> for Action {
    /// What a VM start would make for a device `vm xml`/`vm attach` resolved.
    fn from(d: &crate::libvirt::generate::DeviceSpec) -> Self {
        use crate::libvirt::generate::DeviceSpec;
        match d {
            DeviceSpec::Mdev { uuid, mdev_type, parent, .. } => Action::Mdev { uuid: *uuid, mdev_type: mdev_type.clone(), parent: parent.clone() },
            DeviceSpec::LegacyVgpu { uuid, type_name, policy, gpu, .. } => {
                Action::LegacyVgpu { uuid: *uuid, type_name: type_name.clone(), policy: *policy, gpu: *gpu }
            }
            DeviceSpec::VendorVgpu { vf, type_name, .. } => Action::VendorVgpu { vf: *vf, type_name: type_name.clone() },
            DeviceSpec::Passthrough { address, .. } => Action::Note { what: format!("passthrough {address}: libvirt binds it to vfio-pci (managed='yes')") },
        }
    }
}

/// Makes a device for a running domain now (a live attach), exactly as its
/// start would (the same `perform`: every candidate parent, a GPU instance
/// for a MIG-backed vGPU), journaled in the domain's journal as it goes, so
/// its release frees it and a crash leaves nothing `gc` cannot find.
/// Returns the entries it added, for [`release_one`] if libvirt then refuses
/// the device; on failure, what it made is freed again.
pub fn make_live(host: &Host, domain: &str, uuid: Option<&str>, a: &Action) -> Result<Vec<Entry>, HookError> {
    let _lock = HostLock::acquire(host, LOCK_TIMEOUT)?;
    host.nvidia().expect(driver_wants(std::slice::from_ref(a)));
    let key = journal::key(domain, uuid);
    let mut j = journal::load(host, &key)?.unwrap_or_else(|| {
        let mut j = Journal::new(domain, uuid);
        j.state = State::Prepared;
        j
    });
    let before = j.entries.len();
    match perform(host, a, &mut j, &key) {
        Ok(()) => Ok(j.entries[before..].to_vec()),
        Err(e) => {
            let mine = Journal { entries: j.entries.split_off(before), ..j.clone() };
            let mut problems = vec![e.msg];
            problems.extend(undo(host, &mine));
            let saved = if j.entries.is_empty() { journal::delete(host, &key) } else { journal::save(host, &key, &mut j) };
            if let Err(err) = saved {
                problems.push(crate::error_chain(&err));
            }
            let msg = problems.join("; ");
            Err(if e.no_room { HookError::NoRoom(msg) } else { HookError::Failed(msg) })
        }
    }
}

/// Which journal entries a device of a domain stands for: its mdev, its VF's
/// type, and the GPU instance under a MIG-backed vGPU on that VF (read from
/// the VF before anything is freed).
pub fn made_for(host: &Host, spec: &crate::libvirt::generate::DeviceSpec) -> impl Fn(&Entry) -> bool {
    use crate::libvirt::generate::DeviceSpec;
    let (uuid, vf) = match spec {
        DeviceSpec::Mdev { uuid, .. } | DeviceSpec::LegacyVgpu { uuid, .. } => (Some(*uuid), None),
        DeviceSpec::VendorVgpu { vf, .. } => (None, Some(*vf)),
        DeviceSpec::Passthrough { .. } => (None, None),
    };
    let gi = vf.and_then(|vf| {
        let pf = host.link_name(&format!("/sys/bus/pci/devices/{vf}/physfn")).ok().flatten()?.parse::<PciAddress>().ok()?;
        let gi = host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/gpu_instance_id")).ok().flatten()?.trim().parse::<u32>().ok()?;
        Some((pf, gi))
    });
    move |e: &Entry| match e {
        Entry::Mdev { uuid: u, .. } => uuid == Some(*u),
        Entry::VfType { vf: v, .. } => vf == Some(*v),
        Entry::MigGi { gpu, gi: g, .. } => gi == Some((*gpu, *g)),
    }
}

/// After a detach: frees the device if vgpuctl made it for this domain, and
/// drops it from the journal. `true` when something was freed.
pub fn release_one(host: &Host, domain: &str, uuid: Option<&str>, is_it: &dyn Fn(&Entry) -> bool) -> Result<bool, HookError> {
    let key = journal::key(domain, uuid);
    let Some(mut j) = journal::load(host, &key)? else { return Ok(false) };
    let (mine, rest): (Vec<Entry>, Vec<Entry>) = j.entries.drain(..).partition(|e| is_it(e));
    j.entries = rest;
    let problems = undo(host, &Journal { entries: mine.clone(), ..j.clone() });
    if !problems.is_empty() {
        return Err(HookError::Failed(problems.join("; ")));
    }
    if j.entries.is_empty() {
        journal::delete(host, &key)?;
    } else {
        journal::save(host, &key, &mut j)?;
    }
    Ok(!mine.is_empty())
}
