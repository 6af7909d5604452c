//! Which build a binary is: its version and the git commit it was built from
//! (build.rs), for vgpuctl and both helpers, which link this crate and so
//! carry the same line. `vgpuctl --version` also asks each helper it would
//! run, so a mismatched install shows before it misbehaves.

use std::time::Duration;

use serde::Serialize;

use crate::host::{CommandRunner, Tool};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("VGPUCTL_BUILD_COMMIT");
/// `<version> (commit <id>)`, for clap's `--version` of a subcommand.
pub const SHORT: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("VGPUCTL_BUILD_COMMIT"), ")");

/// `<program> <version> (commit <id>)`: what each binary prints for `--version`.
pub fn line(program: &str) -> String {
    format!("{program} {VERSION} (commit {COMMIT})")
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HelperVersion {
    pub name: &'static str,
    /// Where it was found; absent when it was not.
    pub path: Option<String>,
    /// Its own `--version` line, as it printed it.
    pub version: Option<String>,
    /// The same version and commit as this vgpuctl.
    pub matches: bool,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VersionReport {
    pub version: &'static str,
    pub commit: &'static str,
    pub helpers: Vec<HelperVersion>,
}

pub fn report(runner: &CommandRunner) -> VersionReport {
    let helpers = [Tool::LibvirtHelper, Tool::NvmlHelper]
        .into_iter()
        .map(|tool| {
            let path = runner.locate(tool).map(|p| p.display().to_string());
            let version = path
                .as_ref()
                .and_then(|_| runner.run(tool, &["--version"], Duration::from_secs(5)).ok())
                .filter(|o| o.success())
                .map(|o| o.stdout.trim().to_string());
            let matches = version.as_deref() == Some(line(tool.program()).as_str());
            HelperVersion { name: tool.program(), path, version, matches }
        })
        .collect();
    VersionReport { version: VERSION, commit: COMMIT, helpers }
}

pub fn render(r: &VersionReport) -> String {
    let mut t = format!("{}\n", line("vgpuctl"));
    for h in &r.helpers {
        t.push_str(&match (&h.path, &h.version) {
            (None, _) => format!("{}: not found\n", h.name),
            (Some(p), None) => format!("{}: {p} does not say its version (older than this vgpuctl?); install both from one build\n", h.name),
            (Some(p), Some(_)) if h.matches => format!("{}: {p}, same build\n", h.name),
            (Some(p), Some(v)) => format!("{}: {p} is {v:?}, a different build; install both from one build\n", h.name),
        });
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn test_report_tells_a_matching_helper_from_a_different_or_silent_one() {
        let d = tempfile::tempdir().unwrap();
        let fake = |name: &str, body: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let same = fake("libvirt", &format!("echo '{}'", line("vgpuctl-libvirt")));
        let other = fake("nvml", "echo 'vgpuctl-nvml 0.0.9 (commit 000000000000)'");
        let runner = CommandRunner::none().with_program(Tool::LibvirtHelper, &same).with_program(Tool::NvmlHelper, &other);
        let r = report(&runner);
        assert!(r.helpers[0].matches && !r.helpers[1].matches, "{r:?}");
        let text = render(&r);
        assert!(text.starts_with(&format!("vgpuctl {VERSION} (commit {COMMIT})\n")), "{text}");
        assert!(text.contains("vgpuctl-libvirt: ") && text.contains(", same build"), "{text}");
        assert!(text.contains("a different build; install both from one build"), "{text}");
        let silent = fake("old", "exit 2");
        let r = report(&CommandRunner::none().with_program(Tool::NvmlHelper, &silent));
        assert!(render(&r).contains("vgpuctl-libvirt: not found"), "{}", render(&r));
        assert!(render(&r).contains("does not say its version"), "{}", render(&r));
    }
}
