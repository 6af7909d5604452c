//! `vgpuctl hook install|uninstall`: puts the hook where libvirt looks,
//! without clobbering an existing one. libvirt (6.5+) runs
//! /etc/libvirt/hooks/qemu and then every executable in
//! /etc/libvirt/hooks/qemu.d/, so vgpuctl installs itself into qemu.d and
//! leaves any admin's `qemu` script alone.
//!
//! Whether the entry there is vgpuctl's never depends on what the binary is
//! called: a script carries the marker line, and a symlink is vgpuctl's when
//! the file it points to is a vgpuctl binary (it carries `BINARY_MARKER`).

use std::path::Path;

use serde::Serialize;

use crate::binary::{self, BinaryError};
use crate::host::{Host, HostError};

pub const ENTRY: &str = "vgpuctl";
const SCRIPT: &str = include_str!("../../hooks/qemu");
/// The line every hook script vgpuctl writes carries (hooks/qemu).
pub const SCRIPT_MARKER: &str = "# vgpuctl-hook: ";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path} exists and is not vgpuctl's; remove or rename it first")]
    Foreign { path: String },
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Installed {
    /// The hook entry, as the host names it.
    pub path: String,
    /// `symlink` (to the binary) or `script`.
    pub kind: &'static str,
    /// The vgpuctl binary the hook runs.
    pub binary: String,
    pub note: &'static str,
}

const RESTART: &str = "libvirtd notices new hook files only when it starts: restart it once (systemctl restart libvirtd, or virtqemud on modular daemons)";

/// Whether the entry at `shown` (a host path) is vgpuctl's hook.
fn is_ours(host: &Host, shown: &str) -> Result<bool, HostError> {
    match host.read_link(shown) {
        Ok(Some(target)) => {
            // The target as the host sees it: absolute, or relative to qemu.d.
            let target = if target.is_absolute() { target } else { Path::new(shown).parent().map(|d| d.join(&target)).unwrap_or(target) };
            let target = binary::tidy(&target);
            let Some(target) = target.to_str() else {
                return Ok(false);
            };
            // A dangling link at vgpuctl's own entry runs nothing: replacing
            // or removing it cannot break anyone's hook.
            Ok(!host.exists(target) || binary::is_vgpuctl(host, target)?)
        }
        Ok(None) => Ok(false),
        // Not a link: a script, vgpuctl's when it carries the marker line
        // (or, from before the marker, runs `vgpuctl hook qemu`).
        Err(HostError::Garbage { .. }) => Ok(host.file_contains(shown, SCRIPT_MARKER.as_bytes())? || host.file_contains(shown, b"vgpuctl hook qemu")?),
        Err(e) => Err(e),
    }
}

/// Installs `<hooks_dir>/qemu.d/vgpuctl`: a symlink to the binary (the fast
/// form: one static exec per hook call), or with `script` the shell script
/// from hooks/qemu.
pub fn install(host: &Host, hooks_dir: &str, binary: &str, script: bool) -> Result<Installed, InstallError> {
    binary::check(host, binary)?;
    let shown = format!("{}/qemu.d/{ENTRY}", hooks_dir.trim_end_matches('/'));
    let path = host.path(&shown)?;
    // Writes through the host layer (root-relative, fault points).
    if path.symlink_metadata().is_ok() {
        if !is_ours(host, &shown)? {
            return Err(InstallError::Foreign { path: shown });
        }
        host.remove_state(&shown)?;
    }
    if script {
        host.write_state(&shown, SCRIPT.replace("/usr/local/bin/vgpuctl", binary).as_bytes(), 0o755)?;
        Ok(Installed { path: shown, kind: "script", binary: binary.to_string(), note: RESTART })
    } else {
        host.symlink_state(binary, &shown)?;
        Ok(Installed { path: shown, kind: "symlink", binary: binary.to_string(), note: RESTART })
    }
}

pub fn uninstall(host: &Host, hooks_dir: &str) -> Result<bool, InstallError> {
    let shown = format!("{}/qemu.d/{ENTRY}", hooks_dir.trim_end_matches('/'));
    let path = host.path(&shown)?;
    if path.symlink_metadata().is_err() {
        return Ok(false);
    }
    if !is_ours(host, &shown)? {
        return Err(InstallError::Foreign { path: shown });
    }
    host.remove_state(&shown)?;
    Ok(true)
}
