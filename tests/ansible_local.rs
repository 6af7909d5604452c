//! The Ansible playbook of docs/ansible.md (the vgpuctl.kvm collection),
//! run against this machine (`ansible-playbook -c local`) on a simulated
//! host: check mode reports the pending change and changes nothing, apply
//! changes, a second apply is unchanged. (tests/ansible_collection.rs drives
//! the same modules over ssh.)

mod common;

use std::process::Command;

use common::sim::SimHost;

fn playbook(h: &SimHost, gpus: &str, check: bool) -> (bool, String) {
    // The controller's own python runs the modules (interpreter discovery
    // can pick a version that pyenv-style shims do not provide).
    let py = Command::new("sh").args(["-c", "command -v python3"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let mut c = Command::new("ansible-playbook");
    c.args(["-c", "local", "-i", "localhost,"])
        .arg("-e")
        .arg(format!("ansible_python_interpreter={py}"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ansible/playbook.yml"))
        .arg("-e")
        .arg(format!("{{\"vgpuctl\": \"{}\", \"vgpuctl_root\": \"{}\", \"vgpuctl_gpus\": {gpus}}}", env!("CARGO_BIN_EXE_vgpuctl"), h.root.display()))
        .env("ANSIBLE_COLLECTIONS_PATH", concat!(env!("CARGO_MANIFEST_DIR"), "/ansible"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCALHOST_WARNING", "false")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false");
    if check {
        c.arg("--check");
    }
    let o = c.output().expect("ansible-playbook");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn recap_changed(out: &str) -> u32 {
    out.lines()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .and_then(|l| l.split("changed=").nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(u32::MAX)
}

#[test]
#[ignore = "needs ansible-core (PyPI); scripts/test.sh installs it and runs it"]
fn test_playbook_check_apply_idempotent() {
    assert!(
        Command::new("ansible-playbook").arg("--version").output().is_ok(),
        "ansible-playbook is missing: scripts/install-test-deps.sh installs ansible-core"
    );
    let h = SimHost::new("t4x2-mdev");
    let gpus = r#"[{"select": "0000:3b:00.0", "mode": "vgpu", "vgpus": [{"type": "T4-8Q", "count": 2}]}]"#;
    let before = h.snapshot();
    let (ok, out) = playbook(&h, gpus, true);
    assert!(ok, "{out}");
    assert!(out.contains("1 step(s); vGPU types with room now: ") && out.contains("T4-8Q"), "{out}");
    assert_eq!(recap_changed(&out), 1, "check mode reports the pending change: {out}");
    assert_eq!(h.snapshot(), before, "check mode changed nothing");
    let (ok, out) = playbook(&h, gpus, false);
    assert!(ok, "{out}");
    assert_eq!(recap_changed(&out), 1, "{out}");
    assert_eq!(h.json(&["mdev", "list", "--json"])["devices"].as_array().unwrap().len(), 2);
    let (ok, out) = playbook(&h, gpus, false);
    assert!(ok, "{out}");
    assert_eq!(recap_changed(&out), 0, "a second run changes nothing: {out}");
}
