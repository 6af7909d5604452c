//! The qemu hook on simulated NVIDIA hosts and in edge cases: vendor-VFIO
//! VFs get their type at prepare and 0 at release, legacy vGPUs are made on
//! a GPU with room, prepare twice is harmless, release of something already
//! gone is fine, other operations and GPU-less domains are no-ops, bad XML is
//! refused, and install never clobbers another hook.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::sim::SimHost;

fn vf_type(h: &SimHost, vf: &str) -> String {
    std::fs::read_to_string(h.path(&format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"))).unwrap().trim().to_string()
}

fn journals(h: &SimHost) -> usize {
    std::fs::read_dir(h.path("/run/vgpuctl/domains"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

#[test]
fn test_vendor_vfio_type_written_at_prepare_and_cleared_at_release() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "all"]);
    let xml = h.ok(&["vm", "xml", "--name", "vm1", "--vgpu", "H100-20C", "--domain-type", "qemu"]);
    assert!(xml.contains("managed='no'") && xml.contains("vf='0000:18:00.4'"), "{xml}");
    assert_eq!(vf_type(&h, "0000:18:00.4"), "0", "define creates nothing");
    assert_eq!(h.hook(&["vm1", "prepare", "begin", "-"], &xml).0, 0);
    assert_eq!(vf_type(&h, "0000:18:00.4"), "1215");
    assert_eq!(journals(&h), 1);
    // status names the VM whose start made the vGPU (from the hook's journal).
    let st = h.json(&["status", "--json"]);
    let dev = &st["gpus"][0]["devices"][0];
    assert_eq!((dev["id"].as_str(), dev["vm"].as_str(), dev["type"].as_str()), (Some("0000:18:00.4"), Some("vm1"), Some("H100-20C")), "{st}");
    assert_eq!(st["gpus"][0]["mode"], "time-sliced");
    // prepare twice: harmless, nothing more is made.
    assert_eq!(h.hook(&["vm1", "prepare", "begin", "-"], &xml).0, 0);
    assert_eq!(h.json(&["list", "--json"])["gpus"][1]["sriov"]["vfs"][1]["vgpu"]["current_type"], serde_json::Value::Null);
    // Other operations never touch anything.
    for op in [["start", "begin"], ["started", "begin"], ["stopped", "end"], ["reconnect", "begin"]] {
        assert_eq!(h.hook(&["vm1", op[0], op[1], "-"], &xml).0, 0);
    }
    assert_eq!(vf_type(&h, "0000:18:00.4"), "1215");
    assert_eq!(h.hook(&["vm1", "release", "end", "-"], &xml).0, 0);
    assert_eq!(vf_type(&h, "0000:18:00.4"), "0");
    assert_eq!(journals(&h), 0);
    // Release again (nothing recorded, nothing there): fine.
    assert_eq!(h.hook(&["vm1", "release", "end", "-"], &xml).0, 0);
}

#[test]
fn test_vendor_vf_taken_by_another_type_aborts_the_start_clearly() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    let xml = h.ok(&["vm", "xml", "--name", "vm1", "--vgpu", "H100-20C"]);
    // Someone gives the same VF a 40C after the domain was defined.
    std::fs::write(h.path("/sys/bus/pci/devices/0000:18:00.4/nvidia/current_vgpu_type"), "1216\n").unwrap();
    let (rc, err) = h.hook(&["vm1", "prepare", "begin", "-"], &xml);
    assert_eq!(rc, 1);
    assert!(err.contains("vm1") && err.contains("0000:18:00.4") && err.contains("wants H100-20C"), "{err}");
    assert_eq!(journals(&h), 0);
    assert_eq!(vf_type(&h, "0000:18:00.4"), "1216", "another's vGPU is never touched");
}

#[test]
fn test_legacy_vgpus_made_on_gpus_with_room_and_rolled_back_on_failure() {
    let h = SimHost::new("t4x2-mdev");
    // Two T4s, one 16Q each: three never fit, and define says so.
    let e = h.fails(&["vm", "xml", "--name", "big", "--vgpu", "T4-16Q", "--vgpu", "T4-16Q", "--vgpu", "T4-16Q"], 3);
    assert!(e.contains("taken by the other vGPUs of this request"), "{e}");
    // Two fit when defined; by start time someone took a GPU: the first is
    // made, the second cannot be, and the first is rolled back.
    let xml = h.ok(&["vm", "xml", "--name", "big", "--vgpu", "T4-16Q", "--vgpu", "T4-16Q"]);
    let other = h.ok(&["mdev", "create", "--parent", "0000:d8:00.0", "--type", "T4-16Q"]);
    let (rc, err) = h.hook(&["big", "prepare", "begin", "-"], &xml);
    assert_eq!(rc, 1);
    assert!(err.contains("no GPU can take a T4-16Q"), "{err}");
    assert_eq!(h.json(&["mdev", "list", "--json"])["devices"].as_array().unwrap().len(), 1, "rolled back, the other's kept");
    h.ok(&["mdev", "remove", other.trim()]);
    assert_eq!(journals(&h), 0);
    let xml2 = h.ok(&["vm", "xml", "--name", "two", "--vgpu", "T4-16Q", "--vgpu", "T4-16Q"]);
    assert_eq!(h.hook(&["two", "prepare", "begin", "-"], &xml2).0, 0);
    let l = h.json(&["mdev", "list", "--json"]);
    let parents: Vec<_> = l["devices"].as_array().unwrap().iter().map(|d| d["parent"].as_str().unwrap().to_string()).collect();
    assert_eq!(parents.len(), 2);
    assert_ne!(parents[0], parents[1]);
    // The VM's devices disappear behind the hook's back (an admin removed one): release is still fine.
    let first = l["devices"][0]["uuid"].as_str().unwrap().to_string();
    h.ok(&["mdev", "remove", &first]);
    assert_eq!(h.hook(&["two", "release", "end", "-"], &xml2).0, 0);
    assert_eq!(h.json(&["mdev", "list", "--json"])["devices"].as_array().unwrap().len(), 0);
}

/// The hook's prepare with each of its host writes failing in turn (EIO,
/// EBUSY, ENOSPC), journal writes included: it fails the start and leaves
/// the host as `before` (journals too), until the first N past its last
/// write, where it succeeds. Returns how many writes it makes.
fn prepare_fails_at_every_step(h: &SimHost, domain: &str, xml: &str, before: &[(String, String)]) -> u32 {
    let run = |n: u32, errno: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
        c.args(["hook", "qemu", domain, "prepare", "begin", "-"]).env("VGPUCTL_ROOT", &h.root).env("VGPUCTL_FAULT", format!("write:{n}:{errno}"));
        let mut child = c.stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    for n in 1..64 {
        for errno in ["EIO", "EBUSY", "ENOSPC"] {
            let o = run(n, errno);
            if o.status.success() {
                assert_eq!(errno, "EIO", "write {n} fails with EIO but not with {errno}");
                return n - 1;
            }
            assert_eq!(o.status.code(), Some(1), "write {n} {errno}: {}", String::from_utf8_lossy(&o.stderr));
            h.assert_unchanged(before, &format!("failing write {n} with {errno}"));
            assert_eq!(journals(h), 0, "write {n} {errno}: journal left");
        }
    }
    panic!("prepare never succeeded");
}

#[test]
fn test_every_write_failing_in_turn_leaves_nothing_behind() {
    let h = SimHost::new("t4x2-mdev");
    let xml = h.ok(&["vm", "xml", "--name", "f", "--vgpu", "T4-8Q", "--vgpu", "T4-8Q", "--vgpu", "T4-8Q"]);
    let before = h.snapshot();
    // The journal (1), then per vGPU its intent, the mdev, its completion
    // (3 x 3), then the journal's final state: 11 writes, each failing in turn.
    assert_eq!(prepare_fails_at_every_step(&h, "f", &xml, &before), 11);
}

#[test]
fn test_gpu_less_domains_and_bad_xml() {
    let h = SimHost::new("t4x2-mdev");
    let plain = "<domain type='kvm'><name>plain</name><devices><disk type='file'/></devices></domain>";
    assert_eq!(h.hook(&["plain", "prepare", "begin", "-"], plain), (0, String::new()));
    assert_eq!(journals(&h), 0);
    let (rc, err) = h.hook(&["x", "prepare", "begin", "-"], "<domain><name>x</name><metadata><vgpuctl:gpus xmlns:vgpuctl='https://vgpuctl.dev/xmlns/libvirt/domain/1'><vgpuctl:mdev type='../../etc' uuid='11111111-2222-3333-4444-555555555555'/></vgpuctl:gpus></metadata></domain>");
    assert_eq!(rc, 1);
    assert!(err.contains("invalid mdev type"), "{err}");
    let (rc, err) = h.hook(&["x", "prepare", "begin", "-"], "<domain><name>x</name><devices><hostdev mode='subsystem' type='mdev'>");
    assert_eq!(rc, 1);
    assert!(err.contains("does not parse"), "{err}");
    // Not our op: even garbage is ignored.
    assert_eq!(h.hook(&["x", "started", "begin", "-"], "garbage mdev").0, 0);
}

#[test]
fn test_hook_test_dry_run_lists_actions_and_changes_nothing() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "all"]);
    let xml = h.ok(&["vm", "xml", "--name", "vm1", "--vgpu", "H100-10C", "--vgpu", "H100-10C"]);
    let f = h.path("/vm1.xml");
    std::fs::write(&f, &xml).unwrap();
    let before = h.snapshot();
    let out = h.ok(&["hook", "test", f.to_str().unwrap()]);
    assert!(out.contains("vGPU H100-10C written to VF 0000:18:00.4"), "{out}");
    assert!(out.contains("vGPU H100-10C written to VF 0000:18:00.5"), "{out}");
    h.assert_unchanged(&before, "hook test");
}

#[test]
fn test_install_chains_with_an_existing_hook_and_uninstall_keeps_it() {
    let h = SimHost::new("passthrough");
    let hooks = h.path("/etc/libvirt/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("qemu"), "#!/bin/sh\n# the admin's own hook\n").unwrap();
    h.place_vgpuctl("/usr/local/bin/vgpuctl");
    let out = h.ok(&["hook", "install", "--binary", "/usr/local/bin/vgpuctl"]);
    assert!(out.contains("qemu.d/vgpuctl") && out.contains("restart"), "{out}");
    assert_eq!(std::fs::read_link(hooks.join("qemu.d/vgpuctl")).unwrap().to_str(), Some("/usr/local/bin/vgpuctl"));
    assert!(std::fs::read_to_string(hooks.join("qemu")).unwrap().contains("admin's own hook"));
    // Reinstalling as a script replaces our own entry; the script says it is vgpuctl's.
    h.place_vgpuctl("/opt/vgpuctl/bin/vgpuctl");
    h.ok(&["hook", "install", "--binary", "/opt/vgpuctl/bin/vgpuctl", "--script"]);
    let script = std::fs::read_to_string(hooks.join("qemu.d/vgpuctl")).unwrap();
    assert!(script.contains("exec /opt/vgpuctl/bin/vgpuctl hook qemu \"$@\""), "{script}");
    assert!(script.contains("# vgpuctl-hook: "), "{script}");
    // A foreign file of the same name is never replaced.
    std::fs::write(hooks.join("qemu.d/vgpuctl"), "#!/bin/sh\nsomething else\n").unwrap();
    let e = h.fails(&["hook", "install", "--binary", "/usr/local/bin/vgpuctl"], 3);
    assert!(e.contains("is not vgpuctl's"), "{e}");
    h.fails(&["hook", "uninstall"], 3);
    std::fs::remove_file(hooks.join("qemu.d/vgpuctl")).unwrap();
    h.ok(&["hook", "install", "--binary", "/usr/local/bin/vgpuctl"]);
    h.ok(&["hook", "uninstall"]);
    assert!(!hooks.join("qemu.d/vgpuctl").exists());
    assert!(hooks.join("qemu").exists());
    h.fails(&["hook", "install", "--binary", "relative/vgpuctl"], 64);
    // The hook only ever runs a vgpuctl binary: a typo or another program is refused.
    let e = h.fails(&["hook", "install", "--binary", "/usr/local/bin/vgpuctl-typo"], 64);
    assert!(e.contains("/usr/local/bin/vgpuctl-typo is not a vgpuctl binary"), "{e}");
    std::fs::write(h.path("/usr/local/bin/other"), "#!/bin/sh\n").unwrap();
    h.fails(&["hook", "install", "--binary", "/usr/local/bin/other"], 64);
    assert!(hooks.join("qemu.d/vgpuctl").symlink_metadata().is_err(), "nothing installed by a refused install");
}

#[test]
fn test_hook_ownership_does_not_depend_on_the_binary_name() {
    let h = SimHost::new("passthrough");
    let entry = h.path("/etc/libvirt/hooks/qemu.d/vgpuctl");
    // A versioned file name, as a package or an admin's /opt layout has it.
    h.place_vgpuctl("/opt/gpu/bin/gpuctl-1.4.2");
    h.ok(&["hook", "install", "--binary", "/opt/gpu/bin/gpuctl-1.4.2"]);
    assert_eq!(std::fs::read_link(&entry).unwrap().to_str(), Some("/opt/gpu/bin/gpuctl-1.4.2"));
    // Replaced by a re-install pointing elsewhere, and removed by uninstall.
    h.place_vgpuctl("/usr/bin/vgpuctl");
    h.ok(&["hook", "install", "--binary", "/usr/bin/vgpuctl"]);
    assert_eq!(std::fs::read_link(&entry).unwrap().to_str(), Some("/usr/bin/vgpuctl"));
    let out = h.ok(&["hook", "uninstall"]);
    assert!(out.contains("removed vgpuctl's hook"), "{out}");
    assert!(entry.symlink_metadata().is_err());
    // A link named like vgpuctl but to another program is not ours, whatever the target's name.
    std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
    std::fs::write(h.path("/usr/bin/vgpuctl-lookalike"), "#!/bin/sh\nexec something\n").unwrap();
    std::os::unix::fs::symlink("/usr/bin/vgpuctl-lookalike", &entry).unwrap();
    let e = h.fails(&["hook", "uninstall"], 3);
    assert!(e.contains("is not vgpuctl's"), "{e}");
    h.fails(&["hook", "install", "--binary", "/usr/bin/vgpuctl"], 3);
    // A link whose target is gone runs nothing: it is replaced.
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink("/tmp/cargo-build-1234/vgpuctl", &entry).unwrap();
    h.ok(&["hook", "install", "--binary", "/usr/bin/vgpuctl"]);
    assert_eq!(std::fs::read_link(&entry).unwrap().to_str(), Some("/usr/bin/vgpuctl"));
}

#[test]
fn test_install_without_binary_refuses_a_build_tree() {
    // The vgpuctl under test runs from target/: the hook would point into it.
    let h = SimHost::new("passthrough");
    let e = h.fails(&["hook", "install"], 64);
    assert!(e.contains("runs from a build tree") && e.contains("--binary"), "{e}");
    let e = h.fails(&["install-units"], 64);
    assert!(e.contains("runs from a build tree"), "{e}");
    assert!(h.path("/etc/libvirt/hooks/qemu.d/vgpuctl").symlink_metadata().is_err());
    // Started as an installed copy (by PATH), that path is what the hook runs, symlinks kept.
    let d = common::sim::tempdir();
    let real = d.path().join("opt/vgpuctl-0.1.0/vgpuctl");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_vgpuctl"), &real).unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&real, bin.join("vgpuctl")).unwrap();
    let o =
        Command::new("vgpuctl").args(["install-units", "--unit-dir", "/etc/systemd/system"]).env("PATH", &bin).env("VGPUCTL_ROOT", d.path()).output().unwrap();
    // The root is the temp dir, where that path does not exist as a vgpuctl: refused by name.
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{e}");
    assert!(e.contains(&format!("{} is not a vgpuctl binary", bin.join("vgpuctl").display())), "{e}");
}

#[test]
fn test_symlinked_binary_runs_as_hook_from_argv0() {
    let h = SimHost::new("t4x2-mdev");
    let d = common::sim::tempdir();
    let qd = d.path().join("hooks/qemu.d");
    std::fs::create_dir_all(&qd).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vgpuctl"), qd.join("vgpuctl")).unwrap();
    let xml = h.ok(&["vm", "xml", "--name", "s", "--vgpu", "T4-2Q"]);
    let mut c = Command::new(qd.join("vgpuctl"))
        .args(["s", "prepare", "begin", "-"])
        .env("VGPUCTL_ROOT", &h.root)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(h.json(&["mdev", "list", "--json"])["devices"].as_array().unwrap().len(), 1);
}

#[test]
fn test_mig_backed_vgpu_gets_a_gpu_instance_at_prepare_freed_at_release() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    h.ok(&["mig", "enable", "0000:18:00.0"]);
    let xml = h.ok(&["vm", "xml", "--name", "m1", "--vgpu", "H100-3-40C", "--gpu", "0000:18:00.0"]);
    assert!(xml.contains("vf='0000:18:00.4'"), "{xml}");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), 0, "define makes nothing");
    assert_eq!(h.hook(&["m1", "prepare", "begin", "-"], &xml).0, 0);
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    assert_eq!(s[0]["instances"][0]["profile"], "3g.40gb");
    assert_eq!(s[0]["instances"][0]["start"], 4, "placed by the planner");
    assert_eq!(vf_type(&h, "0000:18:00.4"), "1204");
    assert_eq!(h.hook(&["m1", "release", "end", "-"], &xml).0, 0);
    assert_eq!(vf_type(&h, "0000:18:00.4"), "0");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), 0, "the hook's GPU instance is gone");
    // A GPU instance made by the admin is used and kept.
    let gi = h.json(&["mig", "create", "--gpu", "0000:18:00.0", "--profile", "3g.40gb", "--json"]);
    assert_eq!(h.hook(&["m1", "prepare", "begin", "-"], &xml).0, 0);
    assert_eq!(h.hook(&["m1", "release", "end", "-"], &xml).0, 0);
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    assert_eq!(s[0]["instances"].as_array().unwrap().len(), 1);
    assert_eq!(s[0]["instances"][0]["gi"], gi["gi"]);
}

#[test]
fn test_mig_backed_vgpu_in_the_hook_every_step_failing_in_turn_leaves_nothing_behind() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    h.ok(&["mig", "enable", "0000:18:00.0"]);
    let xml = h.ok(&["vm", "xml", "--name", "m", "--vgpu", "H100-3-40C", "--vgpu", "H100-3-40C"]);
    let vfs: Vec<&str> = xml.match_indices("vf='").map(|(i, _)| &xml[i + 4..i + 16]).collect();
    assert_eq!(vfs.len(), 2);
    assert_ne!(vfs[0], vfs[1], "each vGPU gets its own VF, also while its GPU instance does not exist yet");
    // The same VF named twice (a hand edit) is refused, not half-started.
    let twice = xml.replacen(&format!("vf='{}'", vfs[1]), &format!("vf='{}'", vfs[0]), 1);
    let (rc, err) = h.hook(&["m", "prepare", "begin", "-"], &twice);
    assert_eq!(rc, 1);
    assert!(err.contains("twice"), "{err}");
    let before = h.snapshot();
    // A domain that says Windows does not start with a MIG-backed vGPU.
    let win = xml.replacen("</metadata>", "<libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'><libosinfo:os id='http://microsoft.com/win/2k22'/></libosinfo:libosinfo></metadata>", 1);
    let (rc, err) = h.hook(&["m", "prepare", "begin", "-"], &win);
    assert_eq!(rc, 1);
    assert!(err.contains("Linux guests only"), "{err}");
    h.assert_unchanged(&before, "a refused Windows start");
    // The journal; per vGPU the GPU instance (ledger intent, the instance,
    // its id), its journal entry and completion, the VF's type, its journal
    // entry and completion; the journal's final state: 18 writes.
    assert_eq!(prepare_fails_at_every_step(&h, "m", &xml, &before), 18);
    assert_eq!(h.hook(&["m", "prepare", "begin", "-"], &xml).0, 0);
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), 2);
    assert_eq!(h.hook(&["m", "release", "end", "-"], &xml).0, 0);
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"], serde_json::json!([]), "release frees the instances it made");
}

#[test]
fn test_a_relative_hook_link_is_judged_by_what_it_points_to() {
    let h = SimHost::new("passthrough");
    let entry = h.path("/etc/libvirt/hooks/qemu.d/vgpuctl");
    std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
    h.place_vgpuctl("/usr/bin/vgpuctl");
    std::fs::write(h.path("/usr/bin/other"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("../../../../usr/bin/other", &entry).unwrap();
    h.fails(&["hook", "uninstall"], 3);
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink("../../../../usr/bin/vgpuctl", &entry).unwrap();
    h.ok(&["hook", "uninstall"]);
}

/// A live attach makes its device with the hook's own code: a MIG-backed
/// vGPU gets its GPU instance exactly as at a VM start (same profile, same
/// placement), journaled for the domain, so its release frees both; with no
/// room it fails with nothing left behind.
#[test]
fn test_live_attach_makes_a_mig_backed_vgpu_exactly_as_a_start_does() {
    use vgpuctl::hook::{self, Action};
    use vgpuctl::libvirt::generate::DeviceSpec;
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    h.ok(&["mig", "enable", "0000:18:00.0"]);
    let host = vgpuctl::open_host(Some(&h.root)).unwrap();
    let spec = DeviceSpec::VendorVgpu { vf: "0000:18:00.4".parse().unwrap(), type_name: "H100-3-40C".into(), policy: Default::default(), gpu: None };
    let made = hook::make_live(&host, "m1", None, &Action::from(&spec)).unwrap();
    assert_eq!(made.len(), 2, "a GPU instance and the VF's type: {made:?}");
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    assert_eq!((s[0]["instances"][0]["profile"].as_str(), s[0]["instances"][0]["start"].as_u64()), (Some("3g.40gb"), Some(4)), "placed as the hook places it");
    assert_eq!(vf_type(&h, "0000:18:00.4"), "1204");
    assert_eq!(journals(&h), 1);
    // A live detach frees what the attach made: the VF's type and the GPU instance under it.
    assert!(hook::release_one(&host, "m1", None, &hook::made_for(&host, &spec)).unwrap());
    assert_eq!(vf_type(&h, "0000:18:00.4"), "0");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"], serde_json::json!([]));
    assert_eq!(journals(&h), 0);
    assert_eq!(hook::make_live(&host, "m1", None, &Action::from(&spec)).unwrap().len(), 2);
    // The domain's release (its XML no longer matters: the journal does) frees both.
    let xml = "<domain type='qemu'><name>m1</name><memory>1024</memory><os><type>hvm</type></os></domain>";
    assert_eq!(h.hook(&["m1", "release", "end", "-"], xml).0, 0);
    assert_eq!(vf_type(&h, "0000:18:00.4"), "0");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"], serde_json::json!([]));
    assert_eq!(journals(&h), 0);
    // No room: the GPU is full of 7g; refused as no-room, nothing made, no journal.
    h.ok(&["mig", "create", "--gpu", "0000:18:00.0", "--profile", "7g.80gb"]);
    let before = h.snapshot();
    let e = hook::make_live(&host, "m1", None, &Action::from(&spec)).unwrap_err();
    assert!(matches!(e, hook::HookError::NoRoom(_)), "{e}");
    h.assert_unchanged(&before, "a live attach with no room");
}

/// With `repack_moves` in the planner policy, a VM start whose MIG-backed
/// vGPU has no room moves an idle instance within its GPU and starts; the
/// instance the hook made goes again at release, the moved one stays.
#[test]
fn test_vm_start_makes_room_by_moving_an_idle_instance_when_the_policy_allows() {
    let h = SimHost::new("h100x8-vfio");
    let g = "0000:18:00.0";
    h.ok(&["sriov", "enable", g]);
    h.ok(&["mig", "enable", g]);
    // An idle 1g in each half: no 3g fits.
    h.ok(&["mig", "create", "--gpu", g, "--profile", "1g.10gb", "--placement", "1"]);
    h.ok(&["mig", "create", "--gpu", g, "--profile", "1g.10gb", "--placement", "5"]);
    let xml = h.ok(&["vm", "xml", "--name", "m1", "--vgpu", "H100-3-40C", "--gpu", g]);
    let (code, err) = h.hook(&["m1", "prepare", "begin", "-"], &xml);
    assert_ne!(code, 0, "no room without repack: {err}");
    let policy = h.path("/etc/vgpuctl/mig-planner.toml");
    std::fs::create_dir_all(policy.parent().unwrap()).unwrap();
    std::fs::write(&policy, "repack_moves = 1\n").unwrap();
    let (code, err) = h.hook(&["m1", "prepare", "begin", "-"], &xml);
    assert_eq!(code, 0, "{err}");
    let s = h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].clone();
    assert_eq!(s.as_array().unwrap().len(), 3, "{s}");
    assert!(s.as_array().unwrap().iter().any(|i| i["profile"] == "3g.40gb"), "{s}");
    assert_eq!(h.hook(&["m1", "release", "end", "-"], &xml).0, 0);
    let s = h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].clone();
    assert_eq!(s.as_array().unwrap().len(), 2, "the hook's instance is gone, the moved one stays: {s}");
    assert!(s.as_array().unwrap().iter().all(|i| i["profile"] == "1g.10gb"), "{s}");
}
