//! `vgpuctl hook install|uninstall`: puts the hook where libvirt looks,
//! without clobbering an existing one. libvirt (6.5+) runs
//! /etc/libvirt/hooks/qemu and then every executable in
//! /etc/libvirt/hooks/qemu.d/, so vgpuctl installs itself into qemu.d and
//! leaves any admin's `qemu` script alone.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::host::{Host, HostError};

pub const ENTRY: &str = "vgpuctl";
const SCRIPT: &str = include_str!("../../hooks/qemu");

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path} exists and is not vgpuctl's; remove or rename it first")]
    Foreign { path: String },
    #[error("the binary path {0:?} must be absolute, without spaces or quotes")]
    BadBinary(String),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Serialize)]
pub struct Installed {
    pub path: String,
    pub kind: &'static str,
    pub note: &'static str,
}

const RESTART: &str = "libvirtd notices new hook files only when it starts: restart it once (systemctl restart libvirtd, or virtqemud on modular daemons)";

fn is_ours(p: &Path) -> bool {
    match fs::read_link(p) {
        Ok(t) => t.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vgpuctl")),
        Err(_) => fs::read_to_string(p).is_ok_and(|s| s.contains("vgpuctl hook qemu")),
    }
}

/// Installs `<hooks_dir>/qemu.d/vgpuctl`: a symlink to the binary (the fast
/// form: one static exec per hook call), or with `script` the shell script
/// from hooks/qemu.
pub fn install(host: &Host, hooks_dir: &str, binary: &str, script: bool) -> Result<Installed, InstallError> {
    if !crate::units::valid_binary_path(binary) {
        return Err(InstallError::BadBinary(binary.to_string()));
    }
    let shown = format!("{}/qemu.d/{ENTRY}", hooks_dir.trim_end_matches('/'));
    let path = host.path(&shown)?;
    // Writes through the host layer (root-relative, fault points).
    if path.symlink_metadata().is_ok() {
        if !is_ours(&path) {
            return Err(InstallError::Foreign { path: shown });
        }
        host.remove_state(&shown)?;
    }
    if script {
        host.write_state(&shown, SCRIPT.replace("/usr/local/bin/vgpuctl", binary).as_bytes(), 0o755)?;
        Ok(Installed { path: shown, kind: "script", note: RESTART })
    } else {
        host.symlink_state(binary, &shown)?;
        Ok(Installed { path: shown, kind: "symlink", note: RESTART })
    }
}

pub fn uninstall(host: &Host, hooks_dir: &str) -> Result<bool, InstallError> {
    let shown = format!("{}/qemu.d/{ENTRY}", hooks_dir.trim_end_matches('/'));
    let path = host.path(&format!("{hooks_dir}/qemu.d/{ENTRY}"))?;
    if path.symlink_metadata().is_err() {
        return Ok(false);
    }
    if !is_ours(&path) {
        return Err(InstallError::Foreign { path: shown });
    }
    host.remove_state(&shown)?;
    Ok(true)
}
