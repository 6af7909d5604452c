//! The systemd units shipped in `systemd/`, installed by `vgpuctl install-units`.

use crate::binary::{self, BinaryError};
use crate::host::{Host, HostError};

pub const UNITS: &[(&str, &str)] = &[
    ("vgpuctl-mdev-restore.service", include_str!("../systemd/vgpuctl-mdev-restore.service")),
    ("vgpuctl-apply.service", include_str!("../systemd/vgpuctl-apply.service")),
    ("vgpuctl-metrics.service", include_str!("../systemd/vgpuctl-metrics.service")),
    ("vgpuctl-metrics.timer", include_str!("../systemd/vgpuctl-metrics.timer")),
    ("vgpuctl-gc.service", include_str!("../systemd/vgpuctl-gc.service")),
    ("vgpuctl-gc.timer", include_str!("../systemd/vgpuctl-gc.timer")),
];

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error("the unit directory {0:?} must be an absolute path without '..'")]
    BadDir(String),
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Writes every unit into `unit_dir` (below the host root) atomically, with
/// `@VGPUCTL@` replaced by `binary`. Returns the written paths.
pub fn install(host: &Host, unit_dir: &str, binary: &str) -> Result<Vec<String>, UnitError> {
    binary::check(host, binary)?;
    if !unit_dir.starts_with('/') || unit_dir.split('/').any(|c| c == "..") {
        return Err(UnitError::BadDir(unit_dir.to_string()));
    }
    let mut written = Vec::new();
    for (name, text) in UNITS {
        let shown = format!("{}/{name}", unit_dir.trim_end_matches('/'));
        let body = text.replace("@VGPUCTL@", binary);
        // Through the host layer: atomic, root-relative, a fault point.
        host.write_state(&shown, body.as_bytes(), 0o644)?;
        written.push(shown);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_install_units_substitutes_binary_and_refuses_odd_paths() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::at_root(d.path()).unwrap();
        // The units run a vgpuctl binary: a file with vgpuctl's marker.
        std::fs::create_dir_all(d.path().join("usr/local/bin")).unwrap();
        std::fs::write(d.path().join("usr/local/bin/vgpuctl"), crate::binary::MARKER).unwrap();
        let w = install(&h, "/etc/systemd/system", "/usr/local/bin/vgpuctl").unwrap();
        assert_eq!(
            w,
            vec![
                "/etc/systemd/system/vgpuctl-mdev-restore.service",
                "/etc/systemd/system/vgpuctl-apply.service",
                "/etc/systemd/system/vgpuctl-metrics.service",
                "/etc/systemd/system/vgpuctl-metrics.timer",
                "/etc/systemd/system/vgpuctl-gc.service",
                "/etc/systemd/system/vgpuctl-gc.timer"
            ]
        );
        let metrics = std::fs::read_to_string(d.path().join("etc/systemd/system/vgpuctl-metrics.service")).unwrap();
        assert!(metrics.contains("ExecStart=/usr/local/bin/vgpuctl metrics --textfile /var/lib/prometheus/node-exporter/vgpuctl.prom"), "{metrics}");
        let text = std::fs::read_to_string(d.path().join("etc/systemd/system/vgpuctl-mdev-restore.service")).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/vgpuctl mdev restore --wait 120"));
        assert!(!text.contains("@VGPUCTL@"));
        assert!(install(&h, "/etc/systemd/system", "vgpuctl").is_err());
        assert!(install(&h, "/etc/systemd/system", "/usr/bin/vgpu ctl").is_err());
        assert!(install(&h, "/etc/../tmp", "/usr/bin/vgpuctl").is_err());
    }
}
