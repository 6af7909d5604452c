//! Real NVIDIA cards replayed: captures taken read-only on the device
//! machine (tests/fixtures/*-device-run/), laid out as a host root with the
//! card's sysfs entry and driver version, a fake nvidia-smi that answers the
//! queries vgpuctl makes with the captured text (logging each call to
//! `dir/smi.log`), and a fake vgpuctl-nvml that prints the captured snapshot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct Capture {
    pub name: &'static str,
    /// `## file` sections, each ending in `rc=N`.
    pub smi: &'static str,
    pub snapshot: &'static str,
    /// sysfs identity: (attribute, value) where the capture has no sysfs sections.
    pub sysfs: &'static [(&'static str, &'static str)],
}

pub const H100: Capture = Capture {
    name: "H100 80GB HBM3 (driver 580.159.04)",
    smi: include_str!("../fixtures/h100-device-run/nvidia-smi-outputs.txt"),
    snapshot: include_str!("../fixtures/h100-device-run/nvml-snapshot.json"),
    sysfs: &[
        ("class", "0x030200"),
        ("vendor", "0x10de"),
        ("device", "0x2330"),
        ("subsystem_vendor", "0x10de"),
        ("subsystem_device", "0x16c1"),
        ("numa_node", "-1"),
    ],
};

pub const H200: Capture = Capture {
    name: "H200 (driver 580.159.04)",
    smi: include_str!("../fixtures/h200-device-run/nvidia-smi-outputs.txt"),
    snapshot: include_str!("../fixtures/h200-device-run/nvml-snapshot.json"),
    sysfs: &[],
};

/// One `## name` section of a capture, without its `rc=` line.
pub fn section(text: &str, name: &str) -> String {
    try_section(text, name).unwrap_or_else(|| panic!("{name} not captured"))
}

pub fn try_section(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("## {name}\n"))? + name.len() + 4;
    let rest = &text[start..];
    let end = rest.find("\nrc=").unwrap_or(rest.len());
    Some(rest[..end].to_string() + "\n")
}

pub fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The card's host root under `dir/host` and a fake nvidia-smi; returns both.
pub fn host(dir: &Path, cap: &Capture) -> (PathBuf, PathBuf) {
    let root = dir.join("host");
    let dev = root.join("sys/devices/pci0000:00/0000:00:06.0");
    std::fs::create_dir_all(&dev).unwrap();
    for attr in ["class", "vendor", "device", "subsystem_vendor", "subsystem_device", "numa_node"] {
        let v = match try_section(cap.smi, &format!("sysfs-{attr}.txt")) {
            Some(v) => v.trim().to_string(),
            None => cap.sysfs.iter().find(|(a, _)| *a == attr).map(|(_, v)| v.to_string()).unwrap_or_else(|| panic!("{}: no sysfs {attr}", cap.name)),
        };
        std::fs::write(dev.join(attr), format!("{v}\n")).unwrap();
    }
    std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
    std::os::unix::fs::symlink("../../../devices/pci0000:00/0000:00:06.0", root.join("sys/bus/pci/devices/0000:00:06.0")).unwrap();
    std::fs::create_dir_all(root.join("proc/driver/nvidia")).unwrap();
    std::fs::write(root.join("proc/driver/nvidia/version"), section(cap.smi, "version.txt")).unwrap();
    let data = dir.join("smi");
    std::fs::create_dir_all(&data).unwrap();
    for s in ["smi-lgip.txt", "smi-lgipp.txt", "smi-query.txt"] {
        std::fs::write(data.join(s), section(cap.smi, s)).unwrap();
    }
    // Utilization was captured on later runs only; without it the query fails
    // like a query nvidia-smi does not know.
    let util = match try_section(cap.smi, "smi-util.txt") {
        Some(u) => {
            std::fs::write(data.join("smi-util.txt"), u).unwrap();
            "cat $d/smi-util.txt"
        }
        None => "echo 'unexpected query' >&2; exit 9",
    };
    let fake = dir.join("nvidia-smi");
    script(
        &fake,
        &format!(
            "d={}\necho \"$*\" >>$d/../smi.log\ncase \"$*\" in\n*utilization.gpu*) {util} ;;\n*--query-gpu=*) cat $d/smi-query.txt ;;\n*-mig\\ 1*) echo 'Warning: MIG mode is in pending enable state for GPU 00000000:00:06.0:In use by another client'; echo 'All done.' ;;\n*mig\\ -lgipp*) cat $d/smi-lgipp.txt ;;\n*mig\\ -lgip*) cat $d/smi-lgip.txt ;;\n*) echo \"unexpected: $*\" >&2; exit 9 ;;\nesac",
            data.display()
        ),
    );
    (root, fake)
}

/// Runs vgpuctl on a replayed card with the fake tools and a backend choice.
pub fn vgpuctl(root: &Path, smi: &Path, helper: &Path, backend: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("VGPUCTL_NVIDIA_SMI", smi)
        .env("VGPUCTL_NVML_HELPER", helper)
        .env("VGPUCTL_NVIDIA_BACKEND", backend)
        .output()
        .unwrap()
}

/// Runs vgpuctl once on a fresh replay of `cap` (its own root, fake
/// nvidia-smi and fake NVML helper) through `backend`.
pub fn run_on(cap: &Capture, backend: &str, args: &[&str]) -> std::process::Output {
    let dir = super::sim::tempdir();
    let (root, smi) = host(dir.path(), cap);
    let helper = nvml_helper(dir.path(), cap.snapshot);
    vgpuctl(&root, &smi, &helper, backend, args)
}

/// A fake vgpuctl-nvml printing `snapshot` (logging its arguments to `dir/helper.log`).
pub fn nvml_helper(dir: &Path, snapshot: &str) -> PathBuf {
    let snap = dir.join("snapshot.json");
    std::fs::write(&snap, snapshot).unwrap();
    let helper = dir.join("vgpuctl-nvml");
    script(&helper, &format!("[ \"$1\" = snapshot ] || exit 2\necho \"$*\" >>{}\ncat {}", dir.join("helper.log").display(), snap.display()));
    helper
}
