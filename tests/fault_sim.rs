//! Fault injection: every host write of `mdev create`, `vgpu create` and
//! `sriov enable` fails once in turn (EIO, EBUSY, ENOSPC) or the process is
//! killed there; the host must be exactly as before (or, after a kill, a
//! rerun must converge), with nothing leaked.

mod common;

use common::sim::SimHost;

fn writes_of(h: &SimHost, args: &[&str]) -> u32 {
    // The first N for which the command succeeds with write N failing... is
    // one past its last write; count by failing each write until it passes.
    for n in 1..64 {
        let before = h.snapshot();
        let o = h.cmd().args(args).env("VGPUCTL_FAULT", format!("write:{n}:EIO")).output().unwrap();
        if o.status.success() {
            return n - 1;
        }
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!e.contains("panicked"), "{e}");
        h.assert_unchanged(&before, &format!("{args:?} failing at write {n}"));
    }
    panic!("{args:?} never succeeded");
}

#[test]
fn test_mdev_create_each_write_fails_in_turn() {
    let h = SimHost::new("t4x2-mdev");
    let args = [
        "mdev",
        "create",
        "--parent",
        "0000:3b:00.0",
        "--type",
        "T4-4Q",
        "--uuid",
        "11111111-2222-3333-4444-555555555555",
        "--persist",
        "--attr",
        "nvidia/vgpu_params=frame_rate_limiter=0",
    ];
    // create, the vgpu_params attribute, the definition: three writes, each
    // failing in turn (a failed attribute or definition write is rolled back
    // with a remove).
    let n = writes_of(&h, &args);
    assert_eq!(n, 3);
    h.ok(&["mdev", "remove", "11111111-2222-3333-4444-555555555555", "--undefine"]);
    for errno in ["EBUSY", "ENOSPC"] {
        let before = h.snapshot();
        let o = h.cmd().args(args).env("VGPUCTL_FAULT", format!("write:1:{errno}")).output().unwrap();
        assert!(!o.status.success());
        h.assert_unchanged(&before, errno);
    }
}

#[test]
fn test_vgpu_create_each_write_fails_in_turn_on_both_interfaces() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    let n = writes_of(&h, &["vgpu", "create", "--type", "H100-10C"]);
    assert_eq!(n, 1, "one write: the VF's type");
    let a = SimHost::new("a100x4-mdev");
    let n = writes_of(&a, &["vgpu", "create", "--type", "A100D-10C"]);
    assert_eq!(n, 1, "one write: the mdev's create");
}

#[test]
fn test_sriov_enable_killed_midway_then_rerun_converges() {
    let h = SimHost::new("h100x8-vfio");
    let o = h.cmd().args(["sriov", "enable", "all"]).env("VGPUCTL_FAULT", "write:3:die").output().unwrap();
    assert!(!o.status.success());
    h.ok(&["sriov", "enable", "all"]);
    let s = h.json(&["sriov", "status", "--json"])["gpus"].clone();
    assert!(s.as_array().unwrap().iter().all(|g| g["num_vfs"] == 32), "{s}");
}

const G: &str = "0000:18:00.0";

fn mig_host() -> SimHost {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", G]);
    h.ok(&["mig", "enable", G]);
    h
}

#[test]
fn test_mig_create_with_compute_instances_each_step_fails_in_turn() {
    let h = mig_host();
    // The ledger's intent, the GPU instance, its id on the ledger, then
    // three compute instances: six steps, each failing in turn leaves no
    // instance and no ledger entry behind (rolled back).
    let n = writes_of(&h, &["mig", "create", "--profile", "3g.40gb", "--gpu", G, "--compute-instances", "3x1c.3g.40gb"]);
    assert_eq!(n, 6);
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    assert_eq!(s[0]["instances"][0]["compute_instances"].as_array().unwrap().len(), 3);
    // destroy --force: the compute instances, then the GPU instance.
    let gi = s[0]["instances"][0]["gi"].to_string();
    let before = h.snapshot();
    for errno in ["EBUSY", "EIO", "ENOSPC"] {
        let o = h.cmd().args(["mig", "destroy", "--gpu", G, &gi, "--force"]).env("VGPUCTL_FAULT", format!("write:1:{errno}")).output().unwrap();
        assert!(!o.status.success());
        h.assert_unchanged(&before, "destroy failing at its first step");
    }
    // Failing at the GPU instance (second step): the compute instances are
    // gone, the instance stays, and a rerun finishes the job.
    let o = h.cmd().args(["mig", "destroy", "--gpu", G, &gi, "--force"]).env("VGPUCTL_FAULT", "write:2:EBUSY").output().unwrap();
    assert!(!o.status.success());
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    assert_eq!(s[0]["instances"][0]["compute_instances"], serde_json::json!([]));
    h.ok(&["mig", "destroy", "--gpu", G, &gi, "--force"]);
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"], serde_json::json!([]));
}

#[test]
fn test_mig_backed_vgpu_each_step_fails_in_turn_and_a_crash_is_swept_by_gc() {
    let h = mig_host();
    let before = h.snapshot();
    // The intent in the ledger, the GPU instance, its id in the ledger, the
    // VF's type: a failure at any step leaves no instance and no ledger entry.
    for errno in ["EIO", "EBUSY", "ENOSPC"] {
        for n in 1..=4 {
            let o = h.cmd().args(["vgpu", "create", "--type", "H100-3-40C"]).env("VGPUCTL_FAULT", format!("write:{n}:{errno}")).output().unwrap();
            assert!(!o.status.success(), "write {n} {errno}");
            let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
            assert_eq!(s[0]["instances"], serde_json::json!([]), "write {n} {errno}: GPU instance left behind");
            h.assert_unchanged(&before, &format!("MIG-backed vGPU create failing at write {n} ({errno})"));
        }
    }
    // Killed before the driver call, between it and the id, and before the
    // VF's type: gc frees whatever the crash left, from the ledger.
    for (n, left) in [(2, 0), (3, 1), (4, 1)] {
        let o = h.cmd().args(["vgpu", "create", "--type", "H100-3-40C"]).env("VGPUCTL_FAULT", format!("write:{n}:die")).output().unwrap();
        assert!(!o.status.success());
        assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), left, "killed at write {n}");
        let gc = h.json(&["gc", "--json"])["cleaned"].clone();
        let said = if left == 0 { "never made; forgotten" } else { "held no vGPU; destroyed" };
        assert!(gc.to_string().contains(said), "killed at write {n}: {gc}");
        assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"], serde_json::json!([]));
        assert!(!h.path("/run/vgpuctl/mig-gis.json").exists(), "the ledger is empty again");
    }
    // An instance kept with --keep-gi is the admin's: gc leaves it alone.
    let v = h.json(&["vgpu", "create", "--type", "H100-3-40C", "--json"]);
    h.ok(&["vgpu", "remove", v["vf"].as_str().unwrap(), "--keep-gi"]);
    let gc = h.json(&["gc", "--json"])["cleaned"].clone();
    assert!(!gc.to_string().contains("destroyed"), "{gc}");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), 1);
    // A vGPU in use keeps its instance through gc too.
    let w = h.json(&["vgpu", "create", "--type", "H100-3-40C", "--json"]);
    assert_eq!(w["gi"], v["gi"], "the kept free instance is used");
    h.json(&["gc", "--json"]);
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), 1);
}

/// Every file vgpuctl writes outside sysfs (units, the hook entry, mdev
/// definitions) is whole or absent when its write fails: no temporary file,
/// no half-written unit, and a rerun completes.
#[test]
fn test_state_writes_fail_whole_and_leave_no_temporary_files() {
    let h = SimHost::new("t4x2-mdev");
    h.place_vgpuctl("/usr/bin/vgpuctl");
    let stray = |h: &SimHost| -> Vec<String> {
        h.snapshot().into_iter().map(|(p, _)| p).filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))).collect()
    };
    let units =
        ["vgpuctl-mdev-restore.service", "vgpuctl-apply.service", "vgpuctl-metrics.service", "vgpuctl-metrics.timer", "vgpuctl-gc.service", "vgpuctl-gc.timer"];
    for n in 1..=units.len() {
        let o = h.cmd().args(["install-units", "--binary", "/usr/bin/vgpuctl"]).env("VGPUCTL_FAULT", format!("write:{n}:ENOSPC")).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "unit write {n}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(units[n - 1]), "the error names the unit: {}", String::from_utf8_lossy(&o.stderr));
        assert!(stray(&h).is_empty(), "{:?}", stray(&h));
        for u in &units[n - 1..] {
            let p = h.path(&format!("/etc/systemd/system/{u}"));
            assert!(!p.exists() || std::fs::read_to_string(&p).unwrap().contains("ExecStart=/usr/bin/vgpuctl") || u.ends_with(".timer"), "{u} half-written");
        }
        h.ok(&["install-units", "--binary", "/usr/bin/vgpuctl"]);
        for u in &units {
            std::fs::remove_file(h.path(&format!("/etc/systemd/system/{u}"))).unwrap();
        }
    }
    // The hook entry: one write, as a symlink and as a script.
    for script in [false, true] {
        let mut args = vec!["hook", "install", "--binary", "/usr/bin/vgpuctl"];
        if script {
            args.push("--script");
        }
        let o = h.cmd().args(&args).env("VGPUCTL_FAULT", "write:1:EIO").output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(h.path("/etc/libvirt/hooks/qemu.d/vgpuctl").symlink_metadata().is_err(), "no hook entry after a failed write");
        assert!(stray(&h).is_empty());
    }
    // An mdev definition: the write fails, nothing is defined, nothing stray.
    let before = h.snapshot();
    let o = h
        .cmd()
        .args(["mdev", "define", "--parent", "0000:3b:00.0", "--type", "T4-4Q", "--uuid", "11111111-2222-3333-4444-555555555555"])
        .env("VGPUCTL_FAULT", "write:1:EIO")
        .output()
        .unwrap();
    assert!(!o.status.success());
    h.assert_unchanged(&before, "a failed mdev define");
}

fn mig_shape(h: &SimHost) -> Vec<(String, u64)> {
    let s = h.json(&["mig", "status", "--json"]);
    let mut v: Vec<(String, u64)> =
        s["gpus"][0]["instances"].as_array().unwrap().iter().map(|i| (i["profile"].as_str().unwrap().to_string(), i["start"].as_u64().unwrap())).collect();
    v.sort();
    v
}

/// Every instance on the GPU is on the ledger exactly once, with its id.
fn assert_ledger_matches(h: &SimHost, what: &str) {
    let s = h.json(&["mig", "status", "--json"]);
    let ids: Vec<u64> = s["gpus"][0]["instances"].as_array().unwrap().iter().map(|i| i["gi"].as_u64().unwrap()).collect();
    let l: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(h.path("/run/vgpuctl/mig-gis.json")).unwrap_or("[]".into())).unwrap();
    let mut on: Vec<u64> = l.iter().filter_map(|m| m["gi"].as_u64()).collect();
    on.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(on, ids, "{what}: ledger {l:?}");
}

/// `mig defrag` journals its moves: failing any step undoes it at once (the
/// old layout), a kill at any step leaves what `gc` finishes or reverts;
/// either way the GPU ends with the old or the new layout, the ledger names
/// every instance, and no journal is left.
#[test]
fn test_defrag_each_step_fails_and_crashes_in_turn() {
    let fresh = || {
        let h = mig_host();
        h.json(&["vgpu", "create", "--type", "H100-1-10C", "--gpu", G, "--json"]);
        h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "1"]);
        h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "3"]);
        h
    };
    let h = fresh();
    let old = mig_shape(&h);
    let new = vec![("1g.10gb".to_string(), 4), ("1g.10gb".to_string(), 5), ("1g.10gb".to_string(), 6)];
    let mut steps = 0;
    for n in 1..64 {
        let h = fresh();
        let o = h.cmd().args(["mig", "defrag"]).env("VGPUCTL_FAULT", format!("write:{n}:EIO")).output().unwrap();
        let what = format!("defrag failing at write {n}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"), "{what}");
        if o.status.success() {
            assert_eq!(mig_shape(&h), new, "{what}");
            steps = n;
            break;
        }
        assert_eq!(mig_shape(&h), old, "{what}: undone at once");
        assert!(!h.path("/run/vgpuctl/mig-move.json").exists(), "{what}: journal left");
        assert_ledger_matches(&h, &what);
    }
    assert!(steps > 6, "journal, two destroys, two creates with their ledger writes: {steps}");
    for n in 1..steps {
        let h = fresh();
        let o = h.cmd().args(["mig", "defrag"]).env("VGPUCTL_FAULT", format!("write:{n}:die")).output().unwrap();
        let what = format!("defrag killed at write {n}");
        assert!(!o.status.success(), "{what}");
        let gc = h.json(&["gc", "--json"]);
        let shape = mig_shape(&h);
        assert!(shape == old || shape == new, "{what}: {shape:?} after gc {gc}");
        if n > 1 {
            assert_eq!(shape, new, "{what}: every instance was idle, so gc finishes: {gc}");
            assert!(gc.to_string().contains("finished"), "{what}: {gc}");
        }
        assert!(!h.path("/run/vgpuctl/mig-move.json").exists(), "{what}: journal left");
        assert_ledger_matches(&h, &what);
        // The GPU works as before: a second defrag converges.
        h.ok(&["mig", "defrag"]);
        assert_eq!(mig_shape(&h), new, "{what}");
    }
}

/// A corrupt move journal is named, with what to do, and nothing moves.
#[test]
fn test_a_corrupt_move_journal_is_reported_not_guessed() {
    let h = mig_host();
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "1"]);
    std::fs::write(h.path("/run/vgpuctl/mig-move.json"), "{not json").unwrap();
    let e = h.fails(&["mig", "defrag"], 1);
    assert!(e.contains("/run/vgpuctl/mig-move.json") && e.contains("is corrupt") && e.contains("then remove it"), "{e}");
    let gc = h.json(&["gc", "--json"]);
    assert!(gc.to_string().contains("left alone"), "{gc}");
    assert_eq!(mig_shape(&h), vec![("1g.10gb".to_string(), 1)]);
}
