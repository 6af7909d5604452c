//! Boots the real-kernel guest once per test binary and hands every test the
//! folder of results. See tests/real-kernel/boot.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct GuestRun {
    pub out: PathBuf,
}

impl GuestRun {
    pub fn scenario(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    pub fn read(&self, scenario: &str, file: &str) -> String {
        let p = self.scenario(scenario).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    pub fn json(&self, scenario: &str, file: &str) -> serde_json::Value {
        let text = self.read(scenario, file);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{scenario}/{file}: {e}\n{text}"))
    }

    /// The `key=value` lines a scenario recorded in facts.txt.
    pub fn facts(&self, scenario: &str) -> std::collections::HashMap<String, String> {
        self.read(scenario, "facts.txt").lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
    }

    /// Asserts that the scenario's script itself finished cleanly.
    pub fn assert_ran(&self, scenario: &str) {
        let rc = self.read(scenario, "rc");
        assert_eq!(rc.trim(), "0", "scenario {scenario} failed:\n--- stdout\n{}\n--- stderr\n{}", self.read(scenario, "stdout"), self.read(scenario, "stderr"));
    }
}

fn wanted() -> bool {
    std::env::var_os("VGPUCTL_REAL_KERNEL").is_some_and(|v| v == "1") || std::env::var_os("CI").is_some_and(|v| v == "true")
}

/// `None` when the real-kernel tests are not asked for (a quick local `cargo
/// test`). Panics when they are asked for and cannot run: in CI a missing
/// stack is a failure, never a skip.
pub fn guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    boot(&RUN, "real-kernel", None)
}

/// The guest with an emulated IOMMU and spare display devices, running the
/// scenarios in tests/real-kernel/passthrough/.
pub fn passthrough_guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    boot(&RUN, "real-kernel-passthrough", Some("passthrough"))
}

fn boot(cell: &'static OnceLock<Result<GuestRun, String>>, name: &str, mode: Option<&str>) -> Option<&'static GuestRun> {
    if !wanted() {
        eprintln!("real-kernel tests not requested: set VGPUCTL_REAL_KERNEL=1 (CI=true implies it)");
        return None;
    }
    let run = cell.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let mut cmd = Command::new("bash");
        cmd.arg(root.join("tests/real-kernel/boot.sh")).arg(&work).arg(env!("CARGO_BIN_EXE_vgpuctl"));
        if let Some(m) = mode {
            cmd.arg(m).env("VGPUCTL_SCENARIO_DIR", root.join("tests/real-kernel").join(m));
        }
        let status = cmd.status().map_err(|e| format!("cannot run boot.sh: {e}"))?;
        match status.code() {
            Some(0) => Ok(GuestRun { out: work.join("out") }),
            Some(3) => Err("the real-kernel stack is missing (see stderr); run scripts/test.sh, which installs it".into()),
            _ => Err(format!("the real-kernel guest failed ({status}); see {}", work.join("console.log").display())),
        }
    });
    match run {
        Ok(r) => Some(r),
        Err(e) => panic!("{e}"),
    }
}
