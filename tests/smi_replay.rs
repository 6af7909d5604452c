//! A fake nvidia-smi and a fake vgpuctl-nvml that replay outputs captured
//! on a real H100 (driver 580.159.04, tests/fixtures/h100-device-run/), in
//! place of the real tools (VGPUCTL_NVIDIA_SMI, VGPUCTL_NVML_HELPER): both
//! backends must read MIG mode and the profile table exactly as the real
//! card reported them, and agree with each other.

mod common;

use std::process::Command;

use common::replay::{script, section, vgpuctl};

/// The real H100's host root and a fake nvidia-smi replaying its captures.
fn real_h100(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    common::replay::host(dir, &common::replay::H100)
}

#[test]
fn test_nvidia_smi_backend_reads_the_real_captures() {
    let dir = common::sim::tempdir();
    let (root, fake) = real_h100(dir.path());
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("VGPUCTL_NVIDIA_SMI", &fake)
            .env("VGPUCTL_NVML_HELPER", dir.path().join("no-helper"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let list = run(&["list", "--json"]);
    assert_eq!(list["gpus"][0]["name"], "H100 80GB HBM3");
    assert_eq!(list["gpus"][0]["mig"]["current"], "disabled");
    assert_eq!(list["nvidia_driver"]["version"], "580.159.04");
    let profiles = run(&["mig", "profiles", "--gpu", "0000:00:06.0", "--json"])["profiles"].clone();
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
    let status = run(&["mig", "status", "--json"])["gpus"].clone();
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

const SNAPSHOT: &str = common::replay::H100.snapshot;

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn test_nvml_backend_reads_the_real_snapshot_agrees_with_nvidia_smi_and_skips_it() {
    let dir = common::sim::tempdir();
    let (root, smi) = real_h100(dir.path());
    let snap = dir.path().join("snapshot.json");
    std::fs::write(&snap, SNAPSHOT).unwrap();
    let helper = dir.path().join("vgpuctl-nvml");
    let helper_log = dir.path().join("helper.log");
    script(&helper, &format!("[ \"$1\" = snapshot ] || exit 2\necho \"$*\" >>{}\ncat {}", helper_log.display(), snap.display()));
    let log = dir.path().join("smi.log");

    let by_nvml = json(&vgpuctl(&root, &smi, &helper, "auto", &["mig", "profiles", "--gpu", "0000:00:06.0", "--json"]))["profiles"].clone();
    let status = json(&vgpuctl(&root, &smi, &helper, "auto", &["mig", "status", "--json"]))["gpus"].clone();
    let list = json(&vgpuctl(&root, &smi, &helper, "auto", &["list", "--json"]));
    let st = json(&vgpuctl(&root, &smi, &helper, "auto", &["status", "--json"]));
    // NVML answered everything: not one nvidia-smi run, one helper run per
    // command asking only for what that command reads, and only `status`
    // waits for a utilization sample.
    assert!(!log.exists(), "nvidia-smi was run: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let calls = std::fs::read_to_string(&helper_log).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "snapshot --want profiles,instances --sample-ms 0",
            "snapshot --want instances --sample-ms 0",
            "snapshot --want identity --sample-ms 0",
            "snapshot --want instances,utilization,vgpu,sampled --sample-ms 100"
        ],
        "{calls}"
    );
    assert_eq!(status[0]["current"], "disabled");
    assert_eq!(list["gpus"][0]["uuid"], "GPU-fa0e3f9d-a225-ca1d-8933-489580f84c3b");
    assert_eq!(st["gpus"][0]["utilization"]["memory_total_mib"], 81559, "GPU utilization from NVML");

    // NVML's table is exactly the built-in one (same MiB), nvidia-smi's is
    // the same within its two-decimal GiB rounding.
    let built_in = serde_json::to_value(vgpuctl::mig::profiles::hopper_80gb()).unwrap();
    assert_eq!(by_nvml, built_in);
    let by_smi = json(&vgpuctl(&root, &smi, &helper, "nvidia-smi", &["mig", "profiles", "--gpu", "0000:00:06.0", "--json"]))["profiles"].clone();
    assert!(log.exists(), "the nvidia-smi backend was chosen");
    for (a, b) in by_nvml.as_array().unwrap().iter().zip(by_smi.as_array().unwrap()) {
        for k in ["id", "name", "size", "starts", "max_instances", "sms"] {
            assert_eq!(a[k], b[k], "{k} of {}", a["name"]);
        }
    }
    // The same comparison as recorded on the real card.
    let real = include_str!("fixtures/h100-device-run/nvml-vs-smi.txt");
    assert_eq!(real.matches("rc=0").count(), real.matches("rc=").count(), "every recorded command succeeded");
    // The second run (another H100, later binaries) ends with a refusal.
    let second = include_str!("fixtures/h100-device-run/nvml-vs-smi-2.txt");
    let (reads, refusal) = second.split_once("=== mig destroy").unwrap();
    assert_eq!(reads.matches("rc=0").count(), reads.matches("rc=").count(), "every recorded read succeeded");
    assert!(refusal.contains("rc=1"), "destroying on a GPU without MIG was refused on the real card");
    // Both cards report the same profile table through NVML.
    let other = vgpuctl::nvml::parse(include_str!("fixtures/h100-device-run/nvml-snapshot-2.json")).unwrap();
    assert_eq!(serde_json::to_value(other.gpus[0].profile_table()).unwrap(), built_in);
}

#[test]
fn test_without_nvml_auto_falls_back_to_nvidia_smi_and_nvml_choice_refuses() {
    let dir = common::sim::tempdir();
    let (root, smi) = real_h100(dir.path());
    let helper = dir.path().join("vgpuctl-nvml");
    script(&helper, "echo 'NVML is not usable here: libnvidia-ml.so.1: cannot open shared object file' >&2\nexit 3");
    let status = json(&vgpuctl(&root, &smi, &helper, "auto", &["mig", "status", "--json"]))["gpus"].clone();
    assert_eq!(status[0]["current"], "disabled");
    assert!(dir.path().join("smi.log").exists(), "fell back to nvidia-smi");
    let o = vgpuctl(&root, &smi, &helper, "nvml", &["mig", "status", "--json"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("VGPUCTL_NVIDIA_BACKEND=nvml") && err.contains("libnvidia-ml.so.1"), "{err}");
    let o = vgpuctl(&root, &smi, &helper, "bogus", &["mig", "status"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("auto, nvml or nvidia-smi"));
    // A helper printing garbage is an error naming it, not a panic.
    script(&helper, "echo '{not json'");
    let o = vgpuctl(&root, &smi, &helper, "auto", &["mig", "status"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("vgpuctl-nvml"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The real snapshot with MIG turned on and instances added (what NVML
/// reports in that state, per its documented structures): status shows
/// each GPU instance with its compute instances, memory and GPM utilization.
#[test]
fn test_status_shows_per_instance_utilization_from_nvml() {
    let dir = common::sim::tempdir();
    let (root, smi) = real_h100(dir.path());
    let mut s: serde_json::Value = serde_json::from_str(SNAPSHOT).unwrap();
    let g = &mut s["gpus"][0];
    g["mig"] = serde_json::json!({ "current": true, "pending": true });
    g["gpu_instances"] = serde_json::json!([
        { "gi": 1, "profile_id": 9, "start": 4, "size": 4, "sm_percent": 37.5, "memory": { "total_mib": 40448, "used_mib": 1200 },
          "compute_instances": [ { "ci": 0, "profile_id": 0, "start": 0, "size": 1 }, { "ci": 1, "profile_id": 0, "start": 1, "size": 1 } ] },
        { "gi": 2, "profile_id": 19, "start": 0, "size": 1 }
    ]);
    g["processes"] = serde_json::json!([{ "pid": 4242, "name": "python3", "used_mib": 1100, "gi": 1, "ci": 0 }]);
    let snap = dir.path().join("snapshot.json");
    std::fs::write(&snap, s.to_string()).unwrap();
    let helper = dir.path().join("vgpuctl-nvml");
    script(&helper, &format!("cat {}", snap.display()));
    let m = json(&vgpuctl(&root, &smi, &helper, "auto", &["mig", "status", "--json"]))["gpus"].clone();
    assert_eq!(m[0]["slice_map"].as_str().unwrap().len(), 8);
    assert_eq!(m[0]["instances"][0]["compute_instances"][1]["profile"], "1c.3g.40gb");
    let st = json(&vgpuctl(&root, &smi, &helper, "auto", &["status", "--json"]));
    let devs = st["gpus"][0]["devices"].as_array().unwrap();
    let gi1 = devs.iter().find(|d| d["id"] == "GI 1").unwrap();
    assert_eq!(gi1["utilization"]["sm_percent"], 37.5);
    assert_eq!(gi1["utilization"]["memory_used_mib"], 1200);
    assert!(devs.iter().find(|d| d["id"] == "GI 2").unwrap().get("utilization").is_none(), "no numbers: field absent");
    // --watch asks NVML afresh on every refresh.
    let log = dir.path().join("helper-watch.log");
    script(&helper, &format!("echo \"$*\" >>{}\ncat {}", log.display(), snap.display()));
    let w = vgpuctl(&root, &smi, &helper, "auto", &["status", "--json", "--watch", "1", "--count", "2"]);
    assert!(w.status.success());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    let text = vgpuctl(&root, &smi, &helper, "auto", &["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("sm 38%"), "{}", String::from_utf8_lossy(&text.stdout));
    // The same per-instance numbers as Prometheus metrics, and MIG room from NVML's instances.
    let m = vgpuctl(&root, &smi, &helper, "auto", &["metrics"]);
    let m = String::from_utf8_lossy(&m.stdout);
    assert!(m.contains("vgpuctl_device_sm_utilization_ratio{gpu=\"0000:00:06.0\",kind=\"mig-instance\",id=\"GI 1\"} 0.375"), "{m}");
    assert!(m.contains("vgpuctl_gpu_info{gpu=\"0000:00:06.0\"") && m.contains("mode=\"mig\""), "{m}");
    assert!(m.contains("vgpuctl_mig_memory_slices{gpu=\"0000:00:06.0\",state=\"used\"}"), "{m}");
    // The process on GI 1 is named when destroying it is refused.
    let o = vgpuctl(&root, &smi, &helper, "auto", &["mig", "destroy", "--gpu", "0000:00:06.0", "1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("python3 (pid 4242)"), "{err}");
    let o = vgpuctl(&root, &smi, &helper, "auto", &["mig", "destroy", "--gpu", "GPU-fa0e3f9d-a225-ca1d-8933-489580f84c3b", "2"]);
    // GI 2 is free; the fake nvidia-smi does not know -dci/-dgi, so the driver step fails with its message.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("-dgi"), "{err}");
    // The driver answering "In use by another client" becomes the users NVML
    // lists (none on GI 2 here), without asking nvidia-smi for its process list.
    let busy = dir.path().join("nvidia-smi-busy");
    script(
        &busy,
        &format!(
            "case \"$*\" in\n*-dgi*) echo 'Unable to destroy GPU instance ID 2: In use by another client' >&2; exit 1 ;;\n*) exec {} \"$@\" ;;\nesac",
            smi.display()
        ),
    );
    let _ = std::fs::remove_file(dir.path().join("smi.log"));
    let o = vgpuctl(&root, &busy, &helper, "auto", &["mig", "destroy", "--gpu", "0000:00:06.0", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("GPU instance 2 on 0000:00:06.0 is in use") && err.contains("a client the driver does not name"), "{err}");
    assert!(!std::fs::read_to_string(dir.path().join("smi.log")).unwrap_or_default().contains("PIDS"), "NVML named the users");
}

/// The real helper binary (built by scripts/test.sh from nvml-helper/) on a
/// machine without NVIDIA: it says so with exit 3, and vgpuctl carries on
/// with nvidia-smi.
#[test]
fn test_real_helper_without_a_driver_exits_3_and_vgpuctl_falls_back() {
    let helper = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nvml-helper/target/x86_64-unknown-linux-gnu/debug/vgpuctl-nvml");
    if !helper.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must build nvml-helper/ first (scripts/test.sh does)");
        eprintln!("skipped: {} not built", helper.display());
        return;
    }
    if std::path::Path::new("/proc/driver/nvidia/version").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let o = Command::new(&helper).arg("snapshot").output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NVML is not usable"));
    assert_eq!(Command::new(&helper).arg("frobnicate").output().unwrap().status.code(), Some(2));
    // What vgpuctl asks for is accepted; an unknown part is named, before NVML is touched.
    let o = Command::new(&helper).args(["snapshot", "--want", "instances,utilization,vgpu,sampled", "--sample-ms", "100"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(&helper).args(["snapshot", "--want", "instances,everything"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"everything\""), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = common::sim::tempdir();
    let (root, smi) = real_h100(dir.path());
    let status = json(&vgpuctl(&root, &smi, &helper, "auto", &["mig", "status", "--json"]))["gpus"].clone();
    assert_eq!(status[0]["current"], "disabled");
    assert!(dir.path().join("smi.log").exists());
}

/// A MIG enable that only becomes pending (the real H100 answer while a
/// process holds the GPU): exit 2, with the processes NVML lists and what to do.
#[test]
fn test_pending_mig_enable_names_the_processes_and_the_reset() {
    let dir = common::sim::tempdir();
    let (root, smi) = real_h100(dir.path());
    let mut s: serde_json::Value = serde_json::from_str(SNAPSHOT).unwrap();
    s["gpus"][0]["mig"] = serde_json::json!({ "current": false, "pending": true });
    s["gpus"][0]["processes"] = serde_json::json!([{ "pid": 4242, "name": "python3" }]);
    let snap = dir.path().join("snapshot.json");
    std::fs::write(&snap, s.to_string()).unwrap();
    let helper = dir.path().join("vgpuctl-nvml");
    script(&helper, &format!("cat {}", snap.display()));
    let o = vgpuctl(&root, &smi, &helper, "auto", &["mig", "enable", "0000:00:06.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("pending") && out.contains("python3 (pid 4242)") && out.contains("nvidia-smi -r -i 00000000:00:06.0"), "{out}");
}
