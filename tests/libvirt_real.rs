//! `vgpuctl vm define|attach|detach|show` against the real libvirtd of this
//! machine (TCG domains; the host has no GPU, so devices come from
//! definitions in a relocated root and are attached persistently).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("libvirt-helper/target/x86_64-unknown-linux-gnu/debug/vgpuctl-libvirt")
}

/// Panics when libvirtd or the helper is missing: an ignored test that is
/// asked for must run, never pass by skipping.
fn ready() {
    assert!(helper().is_file(), "{} is missing: scripts/test.sh builds it", helper().display());
    let v = Command::new("virsh").args(["-c", "qemu:///system", "version"]).output().expect("virsh");
    assert!(v.status.success(), "libvirtd is not running: {}", String::from_utf8_lossy(&v.stderr));
}

fn vgpuctl(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("VGPUCTL_LIBVIRT_HELPER", helper())
        .env("LIBVIRT_DEFAULT_URI", "qemu:///system")
        .output()
        .unwrap()
}

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh").args(["-c", "qemu:///system"]).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Destroys and undefines the domain however the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
        let _ = virsh(&["undefine", &self.0]);
    }
}

#[test]
#[ignore = "needs this machine's libvirtd and the vgpuctl-libvirt helper; scripts/test.sh starts them and runs it"]
fn test_define_start_attach_detach_config_round_trip() {
    ready();
    let dir = common::sim::tempdir();
    let root = dir.path();
    let u = "5c1e0b52-5a0e-4d3b-8f2e-7f9d6a1b2c3d";
    std::fs::create_dir_all(root.join("etc/mdevctl.d/mbochs")).unwrap();
    std::fs::write(root.join(format!("etc/mdevctl.d/mbochs/{u}")), "{\"mdev_type\": \"mbochs-small\", \"start\": \"manual\", \"attrs\": []}").unwrap();
    // A hostile but legal name: quotes, '<' and '&' are escaped, not refused.
    let name = format!("vgpuctl-test-{}-it's<&", std::process::id());
    let _c = Cleanup(name.clone());
    let o = vgpuctl(root, &["vm", "define", "--name", &name, "--domain-type", "qemu", "--memory", "64", "--vcpus", "1", "--disk", "none", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let defined: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    common::contract::validate("vm-define", &defined, "vm define --json");
    assert_eq!(defined["name"], name.as_str());
    let o = virsh(&["start", &name]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&virsh(&["domstate", &name])).trim(), "running");

    let o = vgpuctl(root, &["vm", "attach", &name, "--mdev", u, "--config", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let attached: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    common::contract::validate("vm-attach", &attached, "vm attach --json");
    assert_eq!((attached["live"].as_bool(), attached["persistent"].as_bool()), (Some(false), Some(true)), "{attached}");
    let inactive = text(&virsh(&["dumpxml", "--inactive", &name]));
    assert!(inactive.contains(&format!("<address uuid='{u}'/>")), "{inactive}");
    assert!(inactive.contains("<vgpuctl:gpus xmlns:vgpuctl=\"https://vgpuctl.dev/xmlns/libvirt/domain/1\">"), "{inactive}");
    assert!(inactive.contains(&format!("<vgpuctl:mdev type=\"mbochs-small\" parent=\"mbochs\" uuid=\"{u}\"/>")), "{inactive}");
    // The running domain is untouched by a persistent-only attach.
    assert!(!text(&virsh(&["dumpxml", &name])).contains(u));
    // The metadata round-trips: vgpuctl reads back what it wrote.
    let o = vgpuctl(root, &["vm", "show", &name, "--inactive", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    common::contract::validate("vm-explain", &r, "vm show --json");
    assert_eq!(r["devices"][0]["request"]["kind"], "mdev");
    assert_eq!(r["devices"][0]["request"]["uuid"], u);
    assert!(r["devices"][0]["state"].as_str().unwrap().contains("created by the hook at start"));
    // The dumped XML still validates against libvirt's schema.
    let f = root.join("dump.xml");
    std::fs::write(&f, &inactive).unwrap();
    let v = Command::new("virt-xml-validate").arg(&f).arg("domain").output().unwrap();
    assert!(v.status.success(), "{}", text(&v));
    // A second identical attach: libvirt's refusal is passed on, not swallowed.
    let o = vgpuctl(root, &["vm", "attach", &name, "--mdev", u, "--config"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("libvirt refused to attach"), "{}", text(&o));

    let o = vgpuctl(root, &["vm", "detach", &name, "--mdev", u, "--config", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let detached: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    common::contract::validate("vm-detach", &detached, "vm detach --json");
    let inactive = text(&virsh(&["dumpxml", "--inactive", &name]));
    assert!(!inactive.contains(u), "{inactive}");
}

#[test]
#[ignore = "needs this machine's libvirtd and the vgpuctl-libvirt helper; scripts/test.sh starts them and runs it"]
fn test_unknown_domain_and_bad_input_are_clear_errors() {
    ready();
    let dir = common::sim::tempdir();
    let o = vgpuctl(dir.path(), &["vm", "show", "no-such-domain-vgpuctl"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no domain \"no-such-domain-vgpuctl\""), "{}", text(&o));
    let o = vgpuctl(dir.path(), &["vm", "define", "--name", "bad\nname", "--disk", "none"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("control characters"), "{}", text(&o));
    let o = vgpuctl(dir.path(), &["vm", "define", "--name", "x", "--disk", "../etc/passwd"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("absolute path"), "{}", text(&o));
    assert!(!text(&virsh(&["list", "--all", "--name"])).contains("\nx\n"));
    // A Windows domain (its libosinfo id says so) is refused a MIG-backed
    // vGPU at attach, before anything is made.
    let sim = common::sim::SimHost::new("h100x8-vfio");
    sim.ok(&["sriov", "enable", "0000:18:00.0"]);
    sim.ok(&["mig", "enable", "0000:18:00.0"]);
    let name = format!("vgpuctl-win-{}", std::process::id());
    let _c = Cleanup(name.clone());
    let o = vgpuctl(&sim.root, &["vm", "define", "--name", &name, "--os", "windows", "--domain-type", "qemu", "--disk", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&virsh(&["dumpxml", &name])).contains("http://microsoft.com/win/11"));
    let before = sim.snapshot();
    let o = vgpuctl(&sim.root, &["vm", "attach", &name, "--vgpu", "H100-3-40C", "--config"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("Linux guests only"), "{}", text(&o));
    sim.assert_unchanged(&before, "a refused attach");
}

/// `vm attach --live` of a MIG-backed vGPU to a running domain makes its GPU
/// instance and the VF's type exactly as the domain's start would (the hook's
/// own code), and when libvirt then refuses the device (this machine has no
/// such VF) rolls both back: no instance, no type, no journal, no ledger entry.
#[test]
#[ignore = "needs this machine's libvirtd and the vgpuctl-libvirt helper; scripts/test.sh starts them and runs it"]
fn test_live_attach_of_a_mig_backed_vgpu_makes_its_instance_and_rolls_back_on_refusal() {
    ready();
    let sim = common::sim::SimHost::new("h100x8-vfio");
    sim.ok(&["sriov", "enable", "0000:18:00.0"]);
    sim.ok(&["mig", "enable", "0000:18:00.0"]);
    let name = format!("vgpuctl-live-{}", std::process::id());
    let _c = Cleanup(name.clone());
    let o = vgpuctl(&sim.root, &["vm", "define", "--name", &name, "--domain-type", "qemu", "--memory", "64", "--vcpus", "1", "--disk", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(virsh(&["start", &name]).status.success());
    let before = sim.snapshot();
    let o = vgpuctl(&sim.root, &["vm", "attach", &name, "--vgpu", "H100-3-40C", "--live"]);
    assert!(!o.status.success());
    // Made (else the helper would have failed before libvirt: no GPU instance
    // of the profile existed), then refused by libvirt, then rolled back.
    assert!(text(&o).contains("libvirt refused to attach"), "{}", text(&o));
    sim.assert_unchanged(&before, "a live attach libvirt refused");
    assert_eq!(sim.json(&["mig", "status", "--json"])["gpus"][0]["instances"], serde_json::json!([]));
}
