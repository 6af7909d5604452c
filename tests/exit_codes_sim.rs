//! Exit codes keep their table (docs/admin-guide.md) in every command
//! family: one representative failure per class. 64 the command line is
//! wrong; 3 the host as it is now does not allow it (nothing changed); 4 a
//! tool, helper or driver it needs is missing; 1 an I/O or driver failure.

mod common;

use common::sim::SimHost;

fn code(h: &SimHost, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = h.cmd();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (o.status.code().unwrap_or(-1), err)
}

/// (host, arguments, environment, expected exit code)
type Case<'a> = (&'a SimHost, Vec<&'a str>, &'a [(&'a str, &'a str)], i32);

#[test]
fn test_each_failure_class_has_its_code_in_every_command_family() {
    let h = SimHost::new("h100x8-vfio");
    let t = SimHost::new("t4x2-mdev");
    let p = SimHost::new("passthrough");
    let no_helper = [("VGPUCTL_LIBVIRT_HELPER", "/nonexistent/vgpuctl-libvirt")];
    let eio = [("VGPUCTL_FAULT", "write:1:EIO")];
    h.place_vgpuctl("/usr/bin/vgpuctl");
    let cases: Vec<Case> = vec![
        // 64: the command line is wrong.
        (&h, vec!["vgpu", "create", "--type", "H100-20X"], &[], 64),
        (&t, vec!["mdev", "create", "--parent", "0000:3b:00.0", "--type", "T4-4Q", "--uuid", "not-a-uuid"], &[], 64),
        (&h, vec!["mig", "plan", "--want", "99x3g.40gb"], &[], 64),
        (&p, vec!["passthrough", "check", "not-an-address"], &[], 64),
        (&h, vec!["metrics", "--listen", "0.0.0.0:0"], &[], 64),
        (&h, vec!["hook", "install", "--binary", "relative/vgpuctl"], &[], 64),
        (&h, vec!["hook", "install", "--binary", "/usr/bin/not-vgpuctl"], &[], 64),
        // 3: the host as it is now does not allow it.
        (&h, vec!["vgpu", "create", "--type", "H100-20C"], &[], 3), // no VFs enabled yet
        (&t, vec!["mdev", "create", "--parent", "0000:99:00.0", "--type", "T4-4Q"], &[], 3),
        (&h, vec!["mig", "create", "--gpu", "0000:18:00.0", "--profile", "3g.40gb"], &[], 3), // MIG is off
        (&h, vec!["mig", "destroy", "--gpu", "GPU-00000000-0000-0000-0000-000000000000", "1"], &[], 3),
        (&p, vec!["passthrough", "release", "0000:01:00.0"], &[], 3), // not prepared
        (&t, vec!["sriov", "enable", "0000:3b:00.0"], &[], 3),        // no SR-IOV on a T4
        (&h, vec!["vm", "xml", "--name", "x", "--vgpu", "H100-20C"], &[], 3),
        // 4: a tool, helper or driver it needs is missing.
        (&h, vec!["vm", "define", "--name", "x"], &no_helper, 4),
        (&h, vec!["vm", "show", "x"], &no_helper, 4),
        // 1: an I/O or driver failure.
        (&t, vec!["mdev", "create", "--parent", "0000:3b:00.0", "--type", "T4-4Q"], &eio, 1),
        (&p, vec!["passthrough", "prepare", "0000:01:00.0", "--force"], &eio, 1),
        (&h, vec!["sriov", "enable", "0000:18:00.0"], &eio, 1),
        (&h, vec!["install-units", "--binary", "/usr/bin/vgpuctl"], &eio, 1),
    ];
    let mut wrong = Vec::new();
    for (host, args, env, want) in &cases {
        let (got, err) = code(host, args, env);
        if got != *want {
            wrong.push(format!("{args:?}: exit {got}, want {want}: {}", err.trim()));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // A MIG-backed vGPU on a GPU in MIG mode with no room is a refusal too,
    // and the same after the VFs are there (vgpu family, both ways in).
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    h.ok(&["mig", "enable", "0000:18:00.0"]);
    h.ok(&["mig", "create", "--gpu", "0000:18:00.0", "--profile", "7g.80gb"]);
    assert_eq!(code(&h, &["mig", "create", "--gpu", "0000:18:00.0", "--profile", "1g.10gb"], &[]).0, 3);
    assert_eq!(code(&h, &["mig", "disable", "0000:18:00.0"], &[]).0, 3, "instances still there");
    // A type the GPU does not list is a refusal (the name never reaches a path).
    assert_eq!(code(&t, &["mdev", "create", "--parent", "0000:3b:00.0", "--type", "../x"], &[]).0, 3);
}

/// Identifiers as admins type them: a PCI address as lspci prints it, and
/// messages that never show a Rust debug value.
#[test]
fn test_lspci_addresses_and_messages_without_debug_values() {
    let p = SimHost::new("passthrough");
    let short = p.json(&["passthrough", "check", "01:00.0", "--json"]);
    let long = p.json(&["passthrough", "check", "0000:01:00.0", "--json"]);
    assert_eq!(short, long, "18:00.0 as lspci prints it is domain 0000");
    let h = SimHost::new("h100x8-vfio");
    let (rc, err) = code(&h, &["mig", "destroy", "--gpu", "9", "1"], &[]);
    assert_eq!(rc, 3);
    assert!(err.contains("no NVIDIA GPU with index 9") && !err.contains("Index("), "{err}");
    let (rc, err) = code(&p, &["passthrough", "check", "01:00"], &[]);
    assert_eq!(rc, 64);
    assert!(err.contains("0000:3b:00.0") && err.contains("BB:SS.F as lspci prints it") && err.contains("closest GPU here is 0000:01:00.0"), "{err}");
}

/// With --json an error is one JSON object on stderr with its class and
/// exit code; nothing written into a pipe carries terminal escapes.
#[test]
fn test_json_errors_and_no_escapes_into_pipes() {
    let h = SimHost::new("h100x8-vfio");
    for (args, kind, exit) in [
        (vec!["vgpu", "create", "--type", "H100-20C", "--json"], "refused", 3),
        (vec!["mig", "plan", "--want", "99x3g.40gb", "--json"], "usage", 64),
        (vec!["sriov", "enable", "0000:18:00.0", "--json"], "failed", 1),
    ] {
        let env: &[(&str, &str)] = if exit == 1 { &[("VGPUCTL_FAULT", "write:1:EIO")] } else { &[] };
        let (rc, err) = code(&h, &args, env);
        assert_eq!(rc, exit, "{args:?}: {err}");
        let line = err.lines().last().unwrap_or_default();
        let j: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {err}"));
        assert_eq!((j["kind"].as_str(), j["exit_code"].as_i64()), (Some(kind), Some(i64::from(exit))), "{j}");
        assert!(j["error"].as_str().is_some_and(|m| !m.is_empty()) && j["schema_version"] == 1, "{j}");
    }
    // Without --json: the plain line.
    let (_, err) = code(&h, &["vgpu", "create", "--type", "H100-20C"], &[]);
    assert!(err.starts_with("vgpuctl: "), "{err}");
    // status --watch and -v logs into a pipe: no clear-screen, no colour.
    let o = h.cmd().args(["status", "--watch", "1", "--count", "2"]).output().unwrap();
    assert!(o.status.success());
    assert!(!o.stdout.contains(&0x1b), "clear-screen written into a pipe");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    let o = h.cmd().args(["-v", "vgpu", "create", "--type", "H100-20C"]).output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && log.contains("INFO"), "{log}");
    assert!(!o.stderr.contains(&0x1b), "colour codes written into a pipe: {log}");
}

/// A GPU is named the same way in every command that takes one: PCI address
/// (also as lspci prints it), GPU UUID or nvidia-smi index, not only in `mig`.
#[test]
fn test_every_command_takes_a_gpu_by_address_uuid_or_index() {
    let h = SimHost::new("h100x8-vfio");
    let list = h.json(&["list", "--json"]);
    let gpus: Vec<(&str, &str)> = list["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["driver"] == "nvidia")
        .map(|g| (g["address"].as_str().unwrap(), g["uuid"].as_str().unwrap()))
        .collect();
    let (first, first_uuid) = gpus[0];
    let (second, second_uuid) = gpus[1];
    // sriov by UUID, vgpu create by index, vgpu mode by lspci form.
    h.ok(&["sriov", "enable", first_uuid]);
    h.ok(&["sriov", "enable", "1"]);
    let c = h.json(&["vgpu", "create", "--type", "H100-20C", "--gpu", "1", "--json"]);
    assert_eq!(c["gpu"], second, "index 1 is the second NVIDIA GPU in PCI order");
    let c = h.json(&["vgpu", "create", "--type", "H100-20C", "--gpu", first_uuid, "--json"]);
    assert_eq!(c["gpu"], first);
    let m = h.json(&["vgpu", "mode", "--heterogeneous", "off", &first[5..], "--json"]);
    assert_eq!(m["gpu"], first);
    // vm xml and passthrough check name the same GPUs.
    let xml = h.ok(&["vm", "xml", "--name", "v", "--vgpu", "H100-20C", "--gpu", second_uuid]);
    assert!(xml.contains(&format!("gpu=\"{second}\"")) || xml.contains(&format!("gpu='{second}'")), "{xml}");
    let by_index = h.json(&["passthrough", "check", "0", "--json"]);
    let by_address = h.json(&["passthrough", "check", first, "--json"]);
    assert_eq!(by_index, by_address);
    // A malformed UUID is named as one (exit 64).
    let (rc, err) = code(&h, &["vgpu", "create", "--type", "H100-20C", "--gpu", "GPU-1234"], &[]);
    assert_eq!(rc, 64);
    assert!(err.contains("\"GPU-1234\" is not a GPU UUID"), "{err}");
    // A UUID one character short names the GPU it nearly is.
    let (rc, err) = code(&h, &["passthrough", "check", &second_uuid[..second_uuid.len() - 1]], &[]);
    assert_eq!(rc, 64);
    assert!(err.contains(&format!("the closest GPU here is {second}")), "{err}");
    // A malformed address: one line with the expected form and the closest
    // GPU, whichever command takes it; nothing changed.
    let before = h.snapshot();
    for args in [vec!["passthrough", "check", "2A:00.x"], vec!["mig", "enable", "0000:2a:0.0"], vec!["vgpu", "create", "--type", "H100-20C", "--gpu", "2a:00"]]
    {
        let (rc, err) = code(&h, &args, &[]);
        assert_eq!(rc, 64, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("expected DDDD:BB:SS.F such as 0000:3b:00.0, or BB:SS.F as lspci prints it"), "{err}");
        assert!(err.contains("the closest GPU here is 0000:2a:00.0 (H100 80GB HBM3)"), "{args:?}: {err}");
    }
    // Nothing near: the admin is sent to the list rather than given a guess.
    let (rc, err) = code(&h, &["passthrough", "check", "zz"], &[]);
    assert_eq!(rc, 64);
    assert!(err.contains("vgpuctl list shows the GPUs here") && !err.contains("closest"), "{err}");
    assert_eq!(h.snapshot(), before);
    // A GPU that is not there: exit 3, named, no debug value.
    let (rc, err) = code(&h, &["vgpu", "create", "--type", "H100-20C", "--gpu", "GPU-00000000-0000-0000-0000-000000000000"], &[]);
    assert_eq!(rc, 3);
    assert!(err.contains("no NVIDIA GPU GPU-00000000-0000-0000-0000-000000000000 here"), "{err}");
}

/// Type names and MIG profiles as admins type them: any case, lists split by
/// commas or spaces, a near miss answered with the name meant, and a type
/// that does not exist said so (exit 64) instead of explained, planned or
/// created as if it did.
#[test]
fn test_type_and_profile_names_did_you_mean_and_types_that_do_not_exist() {
    let h = SimHost::new("h100x8-vfio");
    let before = h.snapshot();
    for (args, needle) in [
        (&["explain", "--type", "H100-21C"][..], "no vGPU type H100-21C: did you mean H100-20C?"),
        (&["explain", "--type", "H10O-20C"][..], "did you mean H100-20C?"),
        (&["vgpu", "create", "--type", "H100-21C"][..], "no vGPU type H100-21C: did you mean H100-20C?"),
        (&["vm", "xml", "--name", "v", "--vgpu", "H100-21C"][..], "did you mean H100-20C?"),
    ] {
        let (rc, err) = code(&h, args, &[]);
        assert_eq!(rc, 64, "{args:?}: {err}");
        assert!(err.contains(needle) && err.contains("H100-10C"), "{args:?}: {err}");
    }
    h.assert_unchanged(&before, "refused names");
    let t4 = SimHost::new("t4x2-mdev");
    let (rc, err) = code(&t4, &["explain", "--type", "T4-5Q"], &[]);
    assert_eq!(rc, 64);
    assert!(err.contains("no vGPU type T4-5Q") && err.contains("T4-4Q"), "{err}");
    // Lower case is the same type; a real one is explained as before.
    assert!(h.ok(&["explain", "--type", "h100-20c"]).starts_with("H100-20C"));
    // MIG profiles: any case, space-separated lists, near misses named.
    h.ok(&["mig", "enable", "0000:18:00.0"]);
    let plan = h.json(&["mig", "plan", "--gpu", "0000:18:00.0", "--want", "3G.40GB 2x1g.10gb", "--json"]);
    assert_eq!(plan["fits"], true, "{plan}");
    assert_eq!(plan["placements"].as_array().unwrap().len(), 3, "{plan}");
    let (rc, err) = code(&h, &["mig", "create", "--gpu", "0000:18:00.0", "--profile", "3g.4gb"], &[]);
    assert_eq!(rc, 64);
    assert!(err.contains("did you mean 3g.40gb?"), "{err}");
}

/// Terminal manners: every command that changes something says what, in one
/// line (and nothing changed is a note on stderr); -q prints only errors,
/// while a document asked for with --json still comes.
#[test]
fn test_one_line_per_change_and_quiet_prints_only_errors() {
    let h = SimHost::new("h100x8-vfio");
    let g = "0000:18:00.0";
    h.ok(&["sriov", "enable", g]);
    assert_eq!(h.ok(&["vgpu", "mode", "--heterogeneous", "on", g]), format!("{g}: mixed-size mode on\n"));
    let o = h.run(&["vgpu", "mode", "--heterogeneous", "on", g]);
    assert!(o.stdout.is_empty() && String::from_utf8_lossy(&o.stderr).contains("nothing to do"));
    let c = h.json(&["vgpu", "create", "--type", "H100-20C", "--gpu", g, "--json"]);
    let vf = c["vf"].as_str().unwrap();
    assert_eq!(h.ok(&["vgpu", "remove", vf]), format!("removed the vGPU on VF {vf}\n"));
    // -q: nothing on stdout or stderr, the exit code says it.
    for args in [&["-q", "list"][..], &["-q", "vgpu", "remove", vf, "--if-exists"], &["-q", "sriov", "enable", g], &["status", "-q"]] {
        let o = h.run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{args:?}: {} {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    let doc = h.json(&["-q", "list", "--json"]);
    assert_eq!(doc["schema_version"], 1);
    // Errors still come, with their code.
    let o = h.run(&["-q", "vgpu", "remove", "0000:18:00.7"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("vgpuctl: "), "{}", String::from_utf8_lossy(&o.stderr));
    // mdev start/stop/undefine say what they did.
    let t = SimHost::new("t4x2-mdev");
    let u = t.ok(&["mdev", "define", "--parent", "0000:3b:00.0", "--type", "nvidia-222"]);
    let u = u.trim();
    assert!(t.ok(&["mdev", "start", u]).starts_with(&format!("started mdev {u} (")));
    assert_eq!(t.ok(&["mdev", "stop", u]), format!("stopped mdev {u} (its definition stays)\n"));
    assert_eq!(t.ok(&["mdev", "undefine", u]), format!("undefined mdev {u} (nvidia-222 on 0000:3b:00.0)\n"));
}
