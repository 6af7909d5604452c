//! Which vgpuctl binary the libvirt hook and the systemd units run: one
//! answer for `hook install` and `install-units`. It must be a vgpuctl
//! binary (told by the marker compiled into every one, never by its file
//! name), at a path a unit file and a hook script can hold verbatim, and by
//! default the path vgpuctl was started as, symlinks kept, so an admin's
//! `/usr/local/bin/vgpuctl` survives an upgrade of the file it links to.

use std::path::{Component, Path, PathBuf};

use crate::host::{Host, HostError};

/// Bytes every vgpuctl binary holds (this constant is compiled into it).
pub const MARKER: &[u8] = b"vgpuctl-binary-marker:6d2f0c8e";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("the binary path {0:?} must be absolute, without spaces, quotes, '$', '%' or backslashes")]
    BadPath(String),
    #[error("{0} is not a vgpuctl binary (missing, or another program); pass the installed vgpuctl's path with --binary")]
    NotVgpuctl(String),
    #[error("this vgpuctl runs from a build tree ({0}), which a rebuild or `cargo clean` replaces; install vgpuctl (README, Install) and run the installed one, or pass --binary PATH")]
    BuildTree(String),
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Whether the file at `binary` (a host path) is a vgpuctl binary.
pub fn is_vgpuctl(host: &Host, binary: &str) -> Result<bool, HostError> {
    host.file_contains(binary, MARKER)
}

/// A binary path that unit files and hook scripts can hold verbatim:
/// absolute, no whitespace, quotes, `$`, backquotes, backslashes or `%`
/// (systemd's specifier character).
pub fn valid_path(p: &str) -> bool {
    p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '$' | '`' | '\\' | '%'))
}

/// `binary` (a host path) may be what the hook and units run.
pub fn check(host: &Host, binary: &str) -> Result<(), BinaryError> {
    if !valid_path(binary) {
        return Err(BinaryError::BadPath(binary.to_string()));
    }
    if !is_vgpuctl(host, binary)? {
        return Err(BinaryError::NotVgpuctl(binary.to_string()));
    }
    Ok(())
}

/// `--binary` as given, or the path this vgpuctl was started as.
pub fn chosen(given: Option<&str>) -> Result<String, BinaryError> {
    match given {
        Some(b) => Ok(b.to_string()),
        None => invoked(),
    }
}

/// The path this vgpuctl was started as, symlinks kept; refused when that is
/// a cargo build tree.
pub fn invoked() -> Result<String, BinaryError> {
    let argv0 = std::env::args_os().next().map(PathBuf::from).unwrap_or_default();
    let found = if argv0.components().count() > 1 {
        std::env::current_dir().ok().map(|cwd| cwd.join(&argv0))
    } else {
        std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(&argv0)).find(|p| p.is_file()))
    };
    let path = found.or_else(|| std::env::current_exe().ok()).ok_or_else(|| BinaryError::NotVgpuctl(argv0.display().to_string()))?;
    let clean = tidy(&path);
    let shown = clean.display().to_string();
    if in_build_tree(&clean) {
        return Err(BinaryError::BuildTree(shown));
    }
    Ok(shown)
}

/// Drops `.` and folds `a/..` without resolving symlinks.
pub(crate) fn tidy(p: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// `…/target/debug/…`, `…/target/release/…`, `…/target/<triple>/…`.
fn in_build_tree(p: &Path) -> bool {
    let parts: Vec<&str> = p.components().filter_map(|c| c.as_os_str().to_str()).collect();
    parts.windows(2).any(|w| w[0] == "target" && (matches!(w[1], "debug" | "release") || w[1].matches('-').count() >= 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_build_trees_are_told_from_installed_paths() {
        assert!(in_build_tree(Path::new("/work/main/target/release/vgpuctl")));
        assert!(in_build_tree(Path::new("/src/target/x86_64-unknown-linux-gnu/debug/vgpuctl")));
        assert!(!in_build_tree(Path::new("/usr/bin/vgpuctl")));
        assert!(!in_build_tree(Path::new("/opt/target/vgpuctl")));
        assert_eq!(tidy(Path::new("/usr/./local/bin/../bin/vgpuctl")), PathBuf::from("/usr/local/bin/vgpuctl"));
    }

    #[test]
    fn test_a_binary_is_vgpuctl_by_its_marker_not_its_name() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::at_root(d.path()).unwrap();
        std::fs::create_dir_all(d.path().join("opt")).unwrap();
        assert!(!is_vgpuctl(&h, "/opt/missing").unwrap());
        let mut body = b"\x7fELF...".to_vec();
        body.extend_from_slice(MARKER);
        std::fs::write(d.path().join("opt/gpu-tool-2.1"), &body).unwrap();
        std::fs::write(d.path().join("opt/vgpuctl"), b"#!/bin/sh\necho not really\n").unwrap();
        assert!(check(&h, "/opt/gpu-tool-2.1").is_ok());
        assert!(matches!(check(&h, "/opt/vgpuctl"), Err(BinaryError::NotVgpuctl(_))));
        assert!(matches!(check(&h, "/opt/missing"), Err(BinaryError::NotVgpuctl(_))));
        assert!(matches!(check(&h, "opt/gpu-tool-2.1"), Err(BinaryError::BadPath(_))));
        assert!(matches!(check(&h, "/opt/a%b"), Err(BinaryError::BadPath(_))));
    }
}
