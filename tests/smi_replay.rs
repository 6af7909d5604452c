//! A fake nvidia-smi that replays outputs captured on a real H100 (driver
//! 580.159.04, tests/fixtures/h100-device-run/), in place of the real tool
//! (VGPUCTL_NVIDIA_SMI): vgpuctl's nvidia-smi backend must read MIG mode and
//! the profile table exactly as the real card reported them.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn section(text: &str, name: &str) -> String {
    let start = text.find(&format!("## {name}\n")).unwrap_or_else(|| panic!("{name} not captured")) + name.len() + 4;
    let rest = &text[start..];
    let end = rest.find("\nrc=").unwrap_or(rest.len());
    rest[..end].to_string() + "\n"
}

#[test]
fn test_nvidia_smi_backend_reads_the_real_captures() {
    let captured = include_str!("fixtures/h100-device-run/nvidia-smi-outputs.txt");
    let dir = common::sim::tempdir();
    let root = dir.path().join("host");
    // The real card's sysfs entry and driver version.
    let dev = root.join("sys/devices/pci0000:00/0000:00:06.0");
    std::fs::create_dir_all(&dev).unwrap();
    for (f, v) in [("class", "0x030200"), ("vendor", "0x10de"), ("device", "0x2330"), ("subsystem_vendor", "0x10de"), ("subsystem_device", "0x16c1"), ("numa_node", "-1")] {
        std::fs::write(dev.join(f), format!("{v}\n")).unwrap();
    }
    std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
    std::os::unix::fs::symlink("../../../devices/pci0000:00/0000:00:06.0", root.join("sys/bus/pci/devices/0000:00:06.0")).unwrap();
    std::fs::create_dir_all(root.join("proc/driver/nvidia")).unwrap();
    std::fs::write(root.join("proc/driver/nvidia/version"), section(captured, "version.txt")).unwrap();
    // The fake tool answers the queries vgpuctl makes with the captured text.
    let data = dir.path().join("smi");
    std::fs::create_dir_all(&data).unwrap();
    for s in ["smi-lgip.txt", "smi-lgipp.txt", "smi-query.txt"] {
        std::fs::write(data.join(s), section(captured, s)).unwrap();
    }
    let fake = dir.path().join("nvidia-smi");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nd={}\ncase \"$*\" in\n*--query-gpu=*) cat $d/smi-query.txt ;;\n*mig\\ -lgipp*) cat $d/smi-lgipp.txt ;;\n*mig\\ -lgip*) cat $d/smi-lgip.txt ;;\n*) echo \"unexpected: $*\" >&2; exit 9 ;;\nesac\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl")).arg("--root").arg(&root).args(args).env("VGPUCTL_NVIDIA_SMI", &fake).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let list = run(&["list", "--json"]);
    assert_eq!(list["gpus"][0]["name"], "H100 80GB HBM3");
    assert_eq!(list["gpus"][0]["mig"]["current"], "disabled");
    assert_eq!(list["nvidia_driver"]["version"], "580.159.04");
    let profiles = run(&["mig", "profiles", "--gpu", "0000:00:06.0", "--json"]);
    let built_in = serde_json::to_value(vgpuctl::mig::profiles::hopper_80gb()).unwrap();
    // nvidia-smi prints memory in GiB with two decimals (19.62); NVML's exact
    // MiB (20096) is what the built-in table holds: equal within rounding.
    for (a, b) in profiles.as_array().unwrap().iter().zip(built_in.as_array().unwrap()) {
        for k in ["id", "name", "size", "starts", "max_instances", "sms"] {
            assert_eq!(a[k], b[k], "{k} of {}", b["name"]);
        }
        let (ma, mb) = (a["memory_mib"].as_i64().unwrap(), b["memory_mib"].as_i64().unwrap());
        assert!((ma - mb).abs() <= 8, "{} memory {ma} vs {mb}", b["name"]);
    }
    let status = run(&["mig", "status", "--json"]);
    assert_eq!(status[0]["current"], "disabled");
    // Utilization is not among the replayed queries: absent, not an error.
    let st = run(&["status", "--json"]);
    assert_eq!(st["gpus"][0]["mode"], "unmanaged");
    assert!(st["gpus"][0]["utilization"].is_null());
    // What status printed on the real card.
    let real = include_str!("fixtures/h100-device-run/vgpuctl-outputs.txt");
    let j: serde_json::Value = serde_json::from_str(&section(real, "vgpuctl-status-json.txt")).unwrap();
    assert_eq!(j["gpus"][0]["utilization"]["memory_total_mib"], 81559);
}
