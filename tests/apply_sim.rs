//! Declarative config on simulated hosts: plan/apply/check from empty and
//! from messy state, plan-time rejection of bad configs with nothing
//! applied, and convergence after a failure at every step.

mod common;

use common::sim::SimHost;

const H100: &str = r#"
[[gpu]]
select = "0000:18:00.0"
mode = "vgpu"
vgpus = [{ type = "H100-20C", count = 4 }]

[[gpu]]
select = "0000:2a:00.0"
mode = "mig"
layout = [{ profile = "3g.40gb" }, { profile = "3g.40gb" }]
vgpus = [{ type = "H100-3-40C", count = 2 }]

[[gpu]]
select = "0000:3a:00.0"
mode = "vgpu"
heterogeneous = true
vgpus = [{ type = "H100-40C", count = 1 }, { type = "H100-20C", count = 2 }]
"#;

fn cfg(h: &SimHost, text: &str) -> String {
    let p = h.path("/cfg.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn vgpu_count(h: &SimHost) -> usize {
    let l = h.json(&["list", "--json"]);
    l["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["sriov"]["vfs"].as_array().cloned().unwrap_or_default())
        .filter(|vf| !vf["vgpu"]["current_type"].is_null())
        .count()
}

#[test]
fn test_apply_from_empty_then_check_and_export_round_trip() {
    let h = SimHost::new("h100x8-vfio");
    let f = cfg(&h, H100);
    let p = h.json(&["plan", "-f", &f, "--json"]);
    let steps: Vec<&str> = p["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    // The safe order: VFs, MIG mode, GPU instances, mixed-size mode, vGPUs.
    let order = ["enable_vfs", "set_mig", "create_gi", "set_heterogeneous", "create_mdev", "define_mdev", "create_vgpus"];
    let pos = |s: &str| order.iter().position(|o| *o == s).unwrap();
    assert!(steps.windows(2).all(|w| pos(w[0]) <= pos(w[1])), "{steps:?}");
    assert_eq!(h.run(&["apply", "-f", &f, "--check"]).status.code(), Some(2));
    let a = h.json(&["apply", "-f", &f, "--json"]);
    assert_eq!(a["changed"], true);
    assert_eq!(h.run(&["apply", "-f", &f, "--check"]).status.code(), Some(0));
    assert_eq!(h.json(&["apply", "-f", &f, "--json"])["changed"], false);
    assert_eq!(vgpu_count(&h), 9);
    let exported = h.ok(&["export"]);
    let f2 = cfg(&h, &exported);
    assert_eq!(h.run(&["apply", "-f", &f2, "--check"]).status.code(), Some(0), "{exported}");
}

#[test]
fn test_bad_configs_are_rejected_at_plan_time_and_change_nothing() {
    let h = SimHost::new("h100x8-vfio");
    let t4 = SimHost::new("t4x2-mdev");
    let before = h.snapshot();
    let cases: &[(&SimHost, &str, &str)] = &[
        (&h, "[[gpu]]\nselect = \"all\"\nmode = \"vgpu\"\nvgpu = []\n", "did you mean \"vgpus\""),
        (&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\n[[gpu]]\nselect = \"all\"\nmode = \"unmanaged\"\n", "already selected by [[gpu]] #1"),
        (&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"4g.40gb\" }, { profile = \"2g.20gb\" }, { profile = \"2g.20gb\" }]\n", "2g.20gb does not fit"),
        (&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-10C\", count = 1 }, { type = \"H100-20C\", count = 1 }]\n", "equal-size mode allows one size"),
        (&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-3-40C\", count = 1 }]\n", "never share a GPU"),
        (&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-40C\", count = 3 }]\n", "exceeds the 2"),
        (&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"A100D-10C\", count = 1 }]\n", "takes H100 types"),
        (&h, "[[gpu]]\nselect = \"0000:99:00.0\"\nmode = \"vgpu\"\n", "no such NVIDIA GPU"),
        (&h, "[[mdev]]\nuuid = \"11111111-2222-3333-4444-555555555555\"\nparent = \"0000:18:00.4\"\ntype = \"x\"\n[[mdev]]\nuuid = \"11111111-2222-3333-4444-555555555555\"\nparent = \"0000:18:00.5\"\ntype = \"x\"\n", "is used by [[mdev]] #1 too"),
        (&t4, "[[gpu]]\nselect = \"0000:3b:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"1g.10gb\" }]\n", "does not support MIG"),
    ];
    for (host, text, needle) in cases {
        let f = cfg(host, text);
        let o = host.run(&["apply", "-f", &f]);
        // A malformed file is 64; a well-formed config this host cannot take is 3.
        let want = if needle.starts_with("did you mean") { 64 } else { 3 };
        assert_eq!(o.status.code(), Some(want), "{text}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "{text}\n{e}");
    }
    std::fs::remove_file(h.path("/cfg.toml")).unwrap();
    h.assert_unchanged(&before, "rejected configs");
}

#[test]
fn test_messy_state_is_kept_and_completed() {
    let h = SimHost::new("t4x2-mdev");
    // Made by hand before any config: one T4-4Q and an mdevctl-style definition.
    h.ok(&["mdev", "create", "--parent", "0000:3b:00.0", "--type", "T4-4Q"]);
    let f = cfg(&h, "[[gpu]]\nselect = \"0000:3b:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"T4-4Q\", count = 3 }]\n\n[[mdev]]\nuuid = \"22222222-2222-3333-4444-555555555555\"\nparent = \"0000:d8:00.0\"\ntype = \"nvidia-227\"\n");
    let p = h.json(&["plan", "-f", &f, "--json"]);
    let c = p["steps"].as_array().unwrap().iter().find(|s| s["step"] == "create_vgpus").unwrap();
    assert_eq!(c["count"], 2, "only what is missing: {p}");
    h.ok(&["apply", "-f", &f]);
    assert_eq!(h.run(&["apply", "-f", &f, "--check"]).status.code(), Some(0));
    let l = h.json(&["mdev", "list", "--json"]);
    assert_eq!(l["devices"].as_array().unwrap().len(), 4);
    assert!(h.path("/etc/mdevctl.d/0000:d8:00.0/22222222-2222-3333-4444-555555555555").exists(), "fixed-UUID mdevs are defined for boot");
}

#[test]
fn test_failure_at_every_step_then_rerun_converges() {
    let probe = SimHost::new("h100x8-vfio");
    let f = cfg(&probe, H100);
    // Count the host writes of a clean apply.
    let mut writes = 0;
    for n in 1..200 {
        let o = probe.cmd().args(["apply", "-f", &f]).env("VGPUCTL_FAULT", format!("write:{n}:EIO")).output().unwrap();
        if o.status.success() {
            writes = n - 1;
            break;
        }
        // Rerun without fault converges from wherever it stopped.
        let again = probe.run(&["apply", "-f", &f]);
        assert!(again.status.success(), "after a failure at write {n}: {}", String::from_utf8_lossy(&again.stderr));
        assert_eq!(probe.run(&["apply", "-f", &f, "--check"]).status.code(), Some(0), "write {n}");
        assert_eq!(vgpu_count(&probe), 9, "write {n}: exactly the config's vGPUs, nothing leaked");
        // Start over for the next write number.
        let fresh = SimHost::new("h100x8-vfio");
        std::fs::remove_dir_all(&probe.root).unwrap();
        copy_dir(&fresh.root, &probe.root);
        std::fs::write(probe.path("/cfg.toml"), H100).unwrap();
    }
    eprintln!("a clean apply made {writes} host writes; each failed once in turn");
    assert!(writes > 10, "an apply of this config makes many writes ({writes})");
    // A crash (kill) in the middle converges too.
    let h = SimHost::new("h100x8-vfio");
    let f = cfg(&h, H100);
    let o = h.cmd().args(["apply", "-f", &f]).env("VGPUCTL_FAULT", format!("write:{}:die", writes / 2)).output().unwrap();
    assert!(!o.status.success());
    h.ok(&["apply", "-f", &f]);
    assert_eq!(h.run(&["apply", "-f", &f, "--check"]).status.code(), Some(0));
    assert_eq!(vgpu_count(&h), 9);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn test_select_by_gpu_uuid_and_model() {
    let h = SimHost::new("t4x2-mdev");
    let l = h.json(&["list", "--json"]);
    let g = l["gpus"].as_array().unwrap().iter().find(|g| g["address"] == "0000:d8:00.0").unwrap();
    let uuid = g["uuid"].as_str().unwrap().to_string();
    assert!(uuid.starts_with("GPU-"), "{uuid}");
    let f = cfg(&h, &format!("[[gpu]]\nselect = \"{uuid}\"\nmode = \"vgpu\"\nvgpus = [{{ type = \"T4-2B\", count = 1 }}]\n"));
    let p = h.json(&["plan", "-f", &f, "--json"]);
    assert_eq!(p["steps"][0]["gpu"], "0000:d8:00.0");
    let f = cfg(&h, "[[gpu]]\nselect = \"model:Tesla T4\"\nmode = \"vgpu\"\nvgpus = [{ type = \"T4-2B\", count = 1 }]\n");
    assert_eq!(h.json(&["plan", "-f", &f, "--json"])["steps"].as_array().unwrap().len(), 2);
    let f = cfg(&h, "[[gpu]]\nselect = \"GPU-00000000-0000-0000-0000-000000000000\"\nmode = \"vgpu\"\n");
    let e = h.fails(&["plan", "-f", &f], 3);
    assert!(e.contains("no GPU with that UUID"), "{e}");
}

#[test]
fn test_apply_on_the_a100_and_passthrough_profiles() {
    let a = SimHost::new("a100x4-mdev");
    let f = cfg(&a, "[[gpu]]\nselect = \"model:A100 80GB PCIe\"\nmode = \"vgpu\"\nvgpus = [{ type = \"A100D-20C\", count = 4 }]\n\n[[mdev]]\nuuid = \"33333333-2222-3333-4444-555555555555\"\nparent = \"0000:17:00.4\"\ntype = \"nvidia-713\"\n");
    // The fixed-UUID legacy vGPU counts towards the GPU's four.
    a.ok(&["apply", "-f", &f]);
    assert_eq!(a.run(&["apply", "-f", &f, "--check"]).status.code(), Some(0));
    let l = a.json(&["mdev", "list", "--json"]);
    assert_eq!(l["devices"].as_array().unwrap().len(), 4 * 4, "4 per GPU, the fixed one among them on 0000:17:00.0: {l}");
    assert!(l["devices"].as_array().unwrap().iter().any(|d| d["uuid"] == "33333333-2222-3333-4444-555555555555"));
    let p = SimHost::new("passthrough");
    let f = cfg(&p, "[[gpu]]\nselect = \"0000:01:00.0\"\nmode = \"unmanaged\"\n\n[[gpu]]\nselect = \"model:L40S\"\nmode = \"passthrough\"\n");
    assert_eq!(p.run(&["apply", "-f", &f, "--check"]).status.code(), Some(0), "the L40S are on vfio-pci already");
    let bad = cfg(&p, "[[gpu]]\nselect = \"0000:01:00.0\"\nmode = \"passthrough\"\n");
    let e = p.fails(&["apply", "-f", &bad], 3);
    assert!(e.contains("boot display"), "{e}");
}

#[test]
fn test_mode_change_over_existing_vgpus_is_refused_and_names_them() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "0000:18:00.0"]);
    h.ok(&["vgpu", "create", "--type", "H100-10C", "--gpu", "0000:18:00.0"]);
    let before = h.snapshot();
    let f = cfg(&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"7g.80gb\" }]\n");
    let e = h.fails(&["apply", "-f", &f], 3);
    assert!(e.contains("holds 1 vGPU(s) of the other kind (H100-10C (0000:18:00.4))"), "{e}");
    std::fs::remove_file(h.path("/cfg.toml")).unwrap();
    h.assert_unchanged(&before, "a refused mode change");
}

/// apply plans a MIG layout with the GPU's own profile table or not at all:
/// a MIG GPU whose driver reports no profiles stops the plan with a message
/// naming the GPU, instead of planning with the H100's slices.
#[test]
fn test_mig_layout_without_the_gpus_own_profile_table_is_refused() {
    let h = SimHost::new("h100x8-vfio");
    // The simulated driver knows no profile table for a model it has never seen.
    let state = h.path("/.vgpuctl-sim.json");
    let text = std::fs::read_to_string(&state).unwrap().replacen("\"model\": \"H100\"", "\"model\": \"X900\"", 1);
    assert!(text.contains("X900"), "the state file names the model");
    std::fs::write(&state, text).unwrap();
    let before = h.snapshot();
    let f = cfg(&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"3g.40gb\" }]\n");
    let e = h.fails(&["plan", "-f", &f], 3);
    assert!(e.contains("0000:18:00.0") && e.contains("no MIG profiles"), "{e}");
    std::fs::remove_file(h.path("/cfg.toml")).unwrap();
    h.assert_unchanged(&before, "a refused plan");
}

/// A selector that matches no GPU is an error naming it and the GPUs there
/// are, in plan and apply --check alike, never "the host matches"; a model
/// is matched by the name `list` prints, with or without the vendor prefix,
/// or by the model of its vGPU types.
#[test]
fn test_selectors_that_match_nothing_are_errors_and_models_match_as_listed() {
    let h = SimHost::new("t4x2-mdev");
    for sel in ["model:T4", "model:Tesla T4", "model:tesla t4"] {
        let f = cfg(&h, &format!("[[gpu]]\nselect = \"{sel}\"\nmode = \"vgpu\"\nvgpus = [{{ type = \"T4-2B\", count = 1 }}]\n"));
        assert_eq!(h.json(&["plan", "-f", &f, "--json"])["steps"].as_array().unwrap().len(), 2, "{sel}");
    }
    let f = cfg(&h, "[[gpu]]\nselect = \"model:V100\"\nmode = \"vgpu\"\n");
    for args in [&["plan", "-f", &f][..], &["apply", "--check", "-f", &f][..]] {
        let e = h.fails(args, 3);
        assert!(e.contains("select \"model:V100\" matches no GPU") && e.contains("0000:3b:00.0 (Tesla T4)"), "{args:?}: {e}");
    }
    let f = cfg(&h, "[[gpu]]\nselect = \"0000:99:00.0\"\nmode = \"vgpu\"\n");
    let e = h.fails(&["plan", "-f", &f], 3);
    assert!(e.contains("no such NVIDIA GPU") && e.contains("Tesla T4"), "{e}");
}

/// What apply would fail at is refused when planned: passthrough of a GPU
/// whose IOMMU group holds a host device (the NVMe beside the L4) names it,
/// and vGPUs on a GPU bound to vfio-pci say to release it first.
#[test]
fn test_passthrough_groups_and_vfio_bound_gpus_are_judged_at_plan_time() {
    let p = SimHost::new("passthrough");
    let before = p.snapshot();
    let f = cfg(&p, "[[gpu]]\nselect = \"0000:e2:00.0\"\nmode = \"passthrough\"\n");
    let e = p.fails(&["plan", "-f", &f], 3);
    assert!(e.contains("0000:e2:00.0 cannot be passed through") && e.contains("0000:e3:00.0 (0x010802) is bound to nvme"), "{e}");
    let e = p.fails(&["apply", "--check", "-f", &f], 3);
    assert!(e.contains("is bound to nvme"), "{e}");
    let f = cfg(&p, "[[gpu]]\nselect = \"0000:41:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"L40S-4Q\", count = 2 }]\n");
    let e = p.fails(&["plan", "-f", &f], 3);
    assert!(e.contains("0000:41:00.0 is bound to vfio-pci") && e.contains("vgpuctl passthrough release 0000:41:00.0"), "{e}");
    std::fs::remove_file(p.path("/cfg.toml")).unwrap();
    p.assert_unchanged(&before, "refused plans");
}

/// A MIG layout that fits one GPU is placed whatever order the config lists
/// it in (the exact search `mig plan` uses), and apply makes it as planned.
#[test]
fn test_mig_layout_is_placed_exactly_in_any_order() {
    let h = SimHost::new("h100x8-vfio");
    let f = cfg(
        &h,
        "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"1g.10gb\" }, { profile = \"2g.20gb\" }, { profile = \"1g.10gb\" }, { profile = \"3g.40gb\" }]\n",
    );
    let p = h.json(&["plan", "-f", &f, "--json"]);
    let gis: Vec<&serde_json::Value> = p["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "create_gi").collect();
    assert_eq!(gis.len(), 4, "{p}");
    h.ok(&["apply", "-f", &f]);
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    let map = s[0]["slice_map"].as_str().unwrap().to_string();
    let mut sorted: Vec<char> = map.chars().collect();
    sorted.sort();
    assert_eq!(sorted.into_iter().collect::<String>(), "11223333", "the whole GPU, as planned: {map}");
    // Re-applying changes nothing.
    assert_eq!(h.run(&["apply", "--check", "-f", &f]).status.code(), Some(0));
}

/// A changed layout is reshaped in place: the busy instance (a vGPU on it)
/// stays where it is, idle instances vgpuctl made move or go, the rest is
/// made; `plan` says which instances stay, move, are made and destroyed.
#[test]
fn test_a_changed_mig_layout_is_reshaped_around_busy_instances() {
    let h = SimHost::new("h100x8-vfio");
    let g = "0000:18:00.0";
    h.ok(&["sriov", "enable", g]);
    let old = cfg(
        &h,
        "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"1g.10gb\", placement = 6 }, { profile = \"1g.10gb\", placement = 1 }, { profile = \"1g.10gb\", placement = 3 }, { profile = \"2g.20gb\", placement = 4 }]\n",
    );
    h.ok(&["apply", "-f", &old]);
    // A VM's vGPU lands on one of the 1g instances: that one is busy now.
    let v = h.json(&["vgpu", "create", "--type", "H100-1-10C", "--gpu", g, "--json"]);
    let busy = v["gi"].as_u64().unwrap();
    let s = h.json(&["mig", "status", "--json"]);
    let busy_start = s["gpus"][0]["instances"].as_array().unwrap().iter().find(|i| i["gi"] == busy).unwrap()["start"].as_u64().unwrap();
    // The new layout: a 4g and three 1g. The old 2g goes, idle 1g instances
    // move out of the left half unless busy.
    let new = cfg(
        &h,
        "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"1g.10gb\" }, { profile = \"1g.10gb\" }, { profile = \"1g.10gb\" }, { profile = \"3g.40gb\" }]\nvgpus = [{ type = \"H100-1-10C\", count = 1 }]\n",
    );
    let before = h.snapshot();
    let p = h.json(&["plan", "-f", &new, "--json"]);
    h.assert_unchanged(&before, "plan");
    let l = &p["layouts"][0];
    assert_eq!(l["destroy"].as_array().unwrap().len(), 1, "{p}");
    assert!(l["destroy"][0].as_str().unwrap().starts_with("2g.20gb at 4"), "{p}");
    assert_eq!(l["make"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(l["move"].as_array().unwrap().len(), 1, "one idle 1g leaves the 3g's half: {p}");
    assert!(l["stay"].to_string().contains(&format!("(GPU instance {busy})")), "the busy one stays: {p}");
    assert!(!l["move"].to_string().contains(&format!("(GPU instance {busy})")), "{p}");
    let text = h.ok(&["plan", "-f", &new]);
    assert!(text.contains("layout: stay") && text.contains("destroy 2g.20gb at 4"), "{text}");
    h.ok(&["apply", "-f", &new]);
    let s = h.json(&["mig", "status", "--json"]);
    let inst = s["gpus"][0]["instances"].as_array().unwrap().clone();
    assert_eq!(inst.len(), 4, "{s}");
    let b = inst.iter().find(|i| i["gi"] == busy).expect("the busy instance is still there");
    assert_eq!(b["start"].as_u64().unwrap(), busy_start, "and where it was");
    assert_eq!(inst.iter().filter(|i| i["profile"] == "3g.40gb").count(), 1);
    assert_eq!(h.run(&["apply", "--check", "-f", &new]).status.code(), Some(0), "converged");
    // A layout that cannot fit beside the busy instance is refused, naming it.
    let bad =
        cfg(&h, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"7g.80gb\" }]\nvgpus = [{ type = \"H100-1-10C\", count = 1 }]\n");
    let e = h.fails(&["plan", "-f", &bad], 3);
    assert!(e.contains("7g.80gb does not fit beside the instances that stay") && e.contains("a vGPU on VF"), "{e}");
}
