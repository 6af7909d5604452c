//! The layering docs/architecture.md promises, checked on the source: one
//! place decides whether a host is simulated (`sim::attach`), nothing but
//! the simulator and the commands that write simulated hosts imports it,
//! and the module cycles the driver seam removed stay removed.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (path relative to src/, text without `//` comment lines and `#[cfg(test)]` modules).
fn files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
            (p.strip_prefix(&src).unwrap().display().to_string(), code)
        })
        .collect()
}

fn in_module(path: &str, module: &str) -> bool {
    path == format!("{module}.rs") || path.starts_with(&format!("{module}/"))
}

#[test]
fn test_only_the_simulator_knows_a_host_is_simulated() {
    for (path, code) in files() {
        if in_module(&path, "sim") {
            continue;
        }
        if path != "host/mod.rs" {
            assert!(!code.contains("is_simulated()"), "{path} asks whether the host is simulated: ask host.nvidia() instead");
        }
        // lib.rs attaches the simulator when opening a host; cli/mod.rs runs
        // `vgpuctl sim`/`demo`, which write simulated hosts.
        if path != "lib.rs" && path != "cli/mod.rs" {
            assert!(!code.contains("crate::sim::") && !code.contains("crate::sim;") && !code.contains("crate::{sim"), "{path} imports the simulator");
        }
    }
}

#[test]
fn test_the_module_cycles_the_driver_seam_removed_stay_removed() {
    let forbidden = [
        ("inventory", "sim"),
        ("inventory", "nvml"),
        ("mig", "sim"),
        ("nvml", "mig"),
        ("nvml", "inventory"),
        ("vgpu", "sim"),
        ("types", "cli"),
        ("sim", "vgpu"),
    ];
    // The shared NVIDIA domain types import nothing above the identifiers.
    let leaves = ["nvidia/profiles.rs", "nvidia/known.rs", "nvidia/typename.rs"];
    for (path, code) in files() {
        for (from, to) in forbidden {
            if in_module(&path, from) {
                assert!(!code.contains(&format!("crate::{to}::")) && !code.contains(&format!("crate::{to};")), "{path} imports crate::{to}");
            }
        }
        if leaves.contains(&path.as_str()) {
            for line in code.lines().filter(|l| l.contains("crate::")) {
                assert!(line.contains("crate::ids::"), "{path} imports above the identifiers: {line}");
            }
        }
    }
}

#[test]
fn test_the_nvml_snapshot_cache_is_no_global() {
    for (path, code) in files() {
        let statics =
            code.lines().map(str::trim_start).filter(|l| l.starts_with("static ") || l.starts_with("pub static ") || l.starts_with("pub(crate) static "));
        for s in statics {
            assert!(!s.contains("Nvml") && !s.contains("Mutex"), "{path}: a process-global holding driver state: {s}");
        }
    }
}
