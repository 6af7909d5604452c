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

/// The guest's results, booted once per test binary. The tests that call it
/// are `#[ignore]`d (a quick `cargo test` does not boot), and panic when
/// asked for and the stack is missing: never a pass by skipping.
pub fn guest() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    boot(&RUN, "real-kernel", None, env!("CARGO_BIN_EXE_vgpuctl"))
}

/// The guest with an emulated IOMMU and spare display devices, running the
/// scenarios in tests/real-kernel/passthrough/.
pub fn passthrough_guest() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    boot(&RUN, "real-kernel-passthrough", Some("passthrough"), env!("CARGO_BIN_EXE_vgpuctl"))
}

/// The guest running tests/real-kernel/package/ against the vgpuctl package
/// installed on this machine (the guest shares its root file system), whose
/// /usr/bin/vgpuctl is the binary under test. Booted once, when asked.
pub fn package_guest() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    boot(&RUN, "real-kernel-package", Some("package"), "/usr/bin/vgpuctl")
}

fn boot(cell: &'static OnceLock<Result<GuestRun, String>>, name: &str, mode: Option<&str>, binary: &str) -> &'static GuestRun {
    let run = cell.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let mut cmd = Command::new("bash");
        cmd.arg(root.join("tests/real-kernel/boot.sh")).arg(&work).arg(binary);
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
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}
