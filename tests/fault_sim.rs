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
    let args = ["mdev", "create", "--parent", "0000:3b:00.0", "--type", "T4-4Q", "--uuid", "11111111-2222-3333-4444-555555555555", "--persist", "--attr", "nvidia/vgpu_params=frame_rate_limiter=0"];
    // create, the vgpu_params attribute: two writes, each failing in turn
    // (a failed attribute write is rolled back with a remove).
    let n = writes_of(&h, &args);
    assert_eq!(n, 2);
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
    let s = h.json(&["sriov", "status", "--json"]);
    assert!(s.as_array().unwrap().iter().all(|g| g["num_vfs"] == 32), "{s}");
}
