//! NVML, through the `vgpuctl-nvml` helper (nvml-helper/). NVML is only
//! reachable by loading the driver's `libnvidia-ml.so.1` at run time, which
//! a static binary cannot do; the helper loads it, takes one snapshot of
//! what the command in hand reads (`--want`), and prints it as JSON. The
//! real driver (`nvidia::real`) asks once per command, through its own
//! [`NvmlSource`], and keeps the answer until it changes something.
//!
//! Which source is used: `VGPUCTL_NVIDIA_BACKEND=auto|nvml|nvidia-smi`
//! (auto: NVML when the helper and the driver library are there, else
//! nvidia-smi, else "no NVIDIA driver").

pub mod snapshot;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use snapshot::*;

use crate::host::{CommandOutput, Host, HostError, Running, Tool};
use crate::ids::{MigProfile, PciAddress};
use crate::nvidia::profiles::Profile;
use crate::nvidia::{MigMode, Wants};
use crate::parse::MigModeState;

/// The helper's exit status when NVML itself cannot be loaded or
/// initialised (no driver, no library): not an error, just "use nvidia-smi".
pub const EXIT_NO_NVML: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    #[error("vgpuctl-nvml failed: {0}")]
    Helper(String),
    #[error("vgpuctl-nvml printed something that is not a snapshot: {0}")]
    Parse(String),
    #[error("VGPUCTL_NVIDIA_BACKEND=nvml, but NVML is not usable here: {0}")]
    Required(String),
    #[error("VGPUCTL_NVIDIA_BACKEND={0:?}: use auto, nvml or nvidia-smi")]
    BadChoice(String),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Nvml,
    NvidiaSmi,
}

pub fn choice() -> Result<Choice, NvmlError> {
    match std::env::var("VGPUCTL_NVIDIA_BACKEND").ok().as_deref().map(str::trim) {
        None | Some("") | Some("auto") => Ok(Choice::Auto),
        Some("nvml") => Ok(Choice::Nvml),
        Some("nvidia-smi") | Some("smi") => Ok(Choice::NvidiaSmi),
        Some(other) => Err(NvmlError::BadChoice(other.to_string())),
    }
}

/// NVML as one host's driver sees it: the snapshots taken so far in this
/// process, owned by the driver object (never a global), and what the
/// command in hand said it will read, so the first helper run asks for all
/// of it in one NVML session.
#[derive(Debug, Default)]
pub struct NvmlSource {
    cache: Mutex<Option<Cached>>,
    declared: Mutex<Wants>,
    /// A helper run started ahead ([`NvmlSource::prefetch`]), with what it asks for.
    pending: Mutex<Option<(Wants, Choice, Running)>>,
}

#[derive(Debug, Clone)]
struct Cached {
    /// What the snapshot holds (identity always).
    parts: Wants,
    /// `None`: NVML is not usable here; every later ask gets the same answer.
    snap: Option<Arc<NvmlSnapshot>>,
}

impl NvmlSource {
    /// Adds to what the next helper run asks for.
    pub fn expect(&self, wants: Wants) {
        if let Ok(mut d) = self.declared.lock() {
            *d = d.union(wants);
        }
    }

    /// Starts the helper now for everything declared, so NVML's start runs
    /// while vgpuctl reads sysfs; the next [`NvmlSource::snapshot`] collects
    /// it. Nothing happens when a snapshot is held or NVML is not to be used.
    pub fn prefetch(&self, host: &Host) {
        let Ok(choice) = choice() else { return };
        if choice == Choice::NvidiaSmi || !host.runner().is_available(Tool::NvmlHelper) {
            return;
        }
        if self.cache.lock().map(|c| c.is_some()).unwrap_or(true) {
            return;
        }
        let Ok(mut pending) = self.pending.lock() else { return };
        if pending.is_some() {
            return;
        }
        let parts = self.declared.lock().map(|d| *d).unwrap_or_default();
        match host.runner().start(Tool::NvmlHelper, &helper_args(parts).iter().map(String::as_str).collect::<Vec<_>>()) {
            Ok(r) => *pending = Some((parts, choice, r)),
            Err(e) => tracing::debug!("cannot start vgpuctl-nvml ahead: {e}"),
        }
    }

    /// NVML's view with at least `need` in it, or `None` when NVML is not to
    /// be used here (no helper, no driver library, or nvidia-smi chosen).
    /// A snapshot already taken answers when it holds `need`; otherwise one
    /// helper run asks for `need`, everything declared and everything held.
    pub fn snapshot(&self, host: &Host, need: Wants) -> Result<Option<Arc<NvmlSnapshot>>, NvmlError> {
        let choice = choice()?;
        if choice == Choice::NvidiaSmi {
            return Ok(None);
        }
        let held = match self.cache.lock() {
            Ok(guard) => guard.clone(),
            Err(_) => None,
        };
        if let Some(c) = &held {
            if c.snap.is_none() || c.parts.contains(need) {
                return Ok(c.snap.clone());
            }
        }
        // A run started ahead answers when it asks for enough (else it is
        // reaped, and one run asks for all of it).
        let ahead = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some((parts, ahead_choice, running)) = ahead {
            if parts.contains(need) && ahead_choice == choice && held.is_none() {
                let fresh = answer(choice, running.finish_output(HELPER_TIMEOUT, printed_answer)?)?.map(Arc::new);
                if let Ok(mut guard) = self.cache.lock() {
                    *guard = Some(Cached { parts, snap: fresh.clone() });
                }
                return Ok(fresh);
            }
        }
        let declared = self.declared.lock().map(|d| *d).unwrap_or_default();
        let parts = need.union(declared).union(held.map(|c| c.parts).unwrap_or_default());
        let fresh = take(host, choice, parts)?.map(Arc::new);
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some(Cached { parts, snap: fresh.clone() });
        }
        Ok(fresh)
    }

    /// The snapshot already taken, with what it holds, without asking.
    pub fn held(&self) -> Option<(Wants, Arc<NvmlSnapshot>)> {
        let guard = self.cache.lock().ok()?;
        let c = guard.as_ref()?;
        Some((c.parts, c.snap.clone()?))
    }

    /// Drops the snapshot after a change: the next read asks the driver again.
    pub fn forget(&self) {
        if let Ok(mut guard) = self.cache.lock() {
            *guard = None;
        }
        if let Ok(mut p) = self.pending.lock() {
            *p = None;
        }
    }
}

fn take(host: &Host, choice: Choice, parts: Wants) -> Result<Option<NvmlSnapshot>, NvmlError> {
    let runner = host.runner();
    if !runner.is_available(Tool::NvmlHelper) {
        return match choice {
            Choice::Nvml => Err(NvmlError::Required(format!("vgpuctl-nvml is not installed ({})", crate::host::HELPER_HINT))),
            _ => Ok(None),
        };
    }
    let args = helper_args(parts);
    let out = runner.run_output(Tool::NvmlHelper, &args.iter().map(String::as_str).collect::<Vec<_>>(), HELPER_TIMEOUT, printed_answer)?;
    answer(choice, out)
}

const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The helper prints nothing on stdout unless it has a snapshot, and ends
/// its output early only after printing one (a cut-short one fails to parse).
fn printed_answer(stdout: &str) -> bool {
    !stdout.trim().is_empty()
}

fn helper_args(parts: Wants) -> Vec<String> {
    // The GPU-instance utilization window is waited for only when sampled.
    let window = if parts.contains(Wants::SAMPLED) { "100" } else { "0" };
    ["snapshot", "--want", &parts.to_arg(), "--sample-ms", window].map(String::from).to_vec()
}

/// The helper's answer: a snapshot, "no NVML here" (`None`, under auto), or an error.
fn answer(choice: Choice, out: CommandOutput) -> Result<Option<NvmlSnapshot>, NvmlError> {
    // The helper ends its output only after a whole snapshot, then shuts
    // NVML down without vgpuctl waiting; a cut-short answer fails to parse.
    if out.still_running {
        return parse(&out.stdout).map(Some);
    }
    match out.status {
        Some(0) => parse(&out.stdout).map(Some),
        Some(EXIT_NO_NVML) if choice == Choice::Auto => {
            tracing::debug!(why = out.stderr.trim(), "NVML not usable, falling back to nvidia-smi");
            Ok(None)
        }
        Some(EXIT_NO_NVML) => Err(NvmlError::Required(out.stderr.trim().to_string())),
        _ => Err(NvmlError::Helper(if out.stderr.trim().is_empty() { format!("exit {:?}", out.status) } else { out.stderr.trim().to_string() })),
    }
}

pub fn parse(text: &str) -> Result<NvmlSnapshot, NvmlError> {
    let s: NvmlSnapshot = serde_json::from_str(text).map_err(|e| NvmlError::Parse(e.to_string()))?;
    if !(OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&s.schema_version) {
        return Err(NvmlError::Parse(format!(
            "schema_version {} (this vgpuctl reads {SCHEMA_VERSION}): install matching vgpuctl and vgpuctl-nvml",
            s.schema_version
        )));
    }
    Ok(s)
}

impl NvmlSnapshot {
    /// GPU instances whose placement lies inside the GPU (anything else is
    /// a driver answer vgpuctl cannot place, and is left out).
    pub fn sane_instances(g: &NvmlGpu) -> impl Iterator<Item = &NvmlGpuInstance> {
        g.gpu_instances.iter().filter(|i| (1..=8).contains(&i.size) && i.start < 8 && i.start + i.size <= 8)
    }

    pub fn gpu(&self, address: PciAddress) -> Option<&NvmlGpu> {
        self.gpus.iter().find(|g| g.address() == Some(address))
    }
}

impl NvmlGpu {
    pub fn address(&self) -> Option<PciAddress> {
        self.pci_bus_id.parse().ok()
    }

    pub fn mig_mode(&self) -> MigMode {
        let state = |on: bool| if on { MigModeState::Enabled } else { MigModeState::Disabled };
        match self.mig {
            Some(m) => MigMode { current: state(m.current), pending: state(m.pending) },
            None => MigMode { current: MigModeState::NotSupported, pending: MigModeState::NotSupported },
        }
    }

    /// The GPU-instance profile table in vgpuctl's terms (names as
    /// nvidia-smi prints them), ordered like `nvidia-smi mig -lgip`.
    pub fn profile_table(&self) -> Vec<Profile> {
        let mut t: Vec<Profile> = self
            .gi_profiles
            .iter()
            .filter_map(|p| {
                // Only placements inside the GPU's 8 slices, all of one size.
                let size = p.placements.first()?.size;
                if !(1..=8).contains(&size) || p.placements.iter().any(|pl| pl.size != size || pl.start >= 8 || pl.start + size > 8) {
                    return None;
                }
                Some(Profile {
                    id: p.id,
                    name: profile_name(p)?,
                    size,
                    starts: p.placements.iter().map(|pl| pl.start).collect(),
                    max_instances: p.max_instances,
                    memory_mib: p.memory_mib,
                    sms: p.sms,
                })
            })
            .collect();
        t.sort_by_key(|p| (p.name.gpu_slices, p.memory_mib, p.name.attributes.len()));
        t
    }
}

/// The name nvidia-smi gives a profile: the driver's own when NVML reports
/// it, else built as nvidia-smi does from slices, memory rounded up to GB
/// and the attribute the profile index stands for.
pub fn profile_name(p: &NvmlGiProfile) -> Option<MigProfile> {
    if let Some(n) = &p.name {
        if let Ok(m) = n.trim().trim_start_matches("MIG ").parse::<MigProfile>() {
            return Some(m);
        }
    }
    let gb = p.memory_mib.div_ceil(1024);
    let suffix = match p.index {
        7 | 8 => "+me",
        10..=12 => "+gfx",
        13 | 14 => "-me",
        15 | 16 => "+me.all",
        _ => "",
    };
    format!("{}g.{gb}gb{suffix}", p.slices).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prof(index: u32, id: u32, slices: u32, mem: u64, starts: &[u8], size: u8) -> NvmlGiProfile {
        NvmlGiProfile {
            index,
            id,
            name: None,
            slices,
            memory_mib: mem,
            sms: 16,
            max_instances: starts.len() as u32,
            placements: starts.iter().map(|s| NvmlPlacement { start: *s, size }).collect(),
        }
    }

    #[test]
    fn test_profile_names_built_like_nvidia_smi_from_the_real_h100_numbers() {
        // memorySizeMB values from tests/fixtures/h100-passthrough/nvml.txt
        let cases = [
            (0, 1, 9984, "1g.10gb"),
            (7, 1, 9984, "1g.10gb+me"),
            (9, 1, 20096, "1g.20gb"),
            (1, 2, 20096, "2g.20gb"),
            (2, 3, 40448, "3g.40gb"),
            (3, 4, 40448, "4g.40gb"),
            (4, 7, 81152, "7g.80gb"),
        ];
        for (index, slices, mem, want) in cases {
            assert_eq!(profile_name(&prof(index, 0, slices, mem, &[0], 1)).map(|p| p.to_string()).as_deref(), Some(want));
        }
        let mut named = prof(0, 19, 1, 1, &[0], 1);
        named.name = Some("MIG 1g.12gb".into());
        assert_eq!(profile_name(&named).map(|p| p.to_string()).as_deref(), Some("1g.12gb"));
    }

    #[test]
    fn test_schema_mismatch_and_garbage_are_errors_not_panics() {
        assert!(parse("{\"schema_version\": 99}").unwrap_err().to_string().contains("99"));
        assert!(parse("not json").is_err());
        let s = parse("{\"schema_version\": 1, \"gpus\": [{\"index\": 0, \"pci_bus_id\": \"00000000:1B:00.0\"}]}").unwrap();
        let g = &s.gpus[0];
        assert_eq!(g.address().map(|a| a.to_string()).as_deref(), Some("0000:1b:00.0"));
        assert_eq!(g.mig_mode().current, MigModeState::NotSupported);
    }

    #[test]
    fn test_an_answer_taken_before_the_helper_exits_must_be_whole() {
        let early = |stdout: &str| CommandOutput { status: None, stdout: stdout.into(), stderr: String::new(), still_running: true };
        let whole = "{\"schema_version\": 1, \"gpus\": []}";
        assert!(answer(Choice::Auto, early(whole)).unwrap().is_some_and(|s| s.gpus.is_empty()));
        assert!(matches!(answer(Choice::Auto, early(&whole[..10])), Err(NvmlError::Parse(_))));
        // Killed by a signal after exiting (not ending its output early): an error, whatever it printed.
        let killed = CommandOutput { status: None, stdout: whole.into(), stderr: String::new(), still_running: false };
        assert!(matches!(answer(Choice::Auto, killed), Err(NvmlError::Helper(_))));
    }
}
