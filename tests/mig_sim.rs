//! MIG on simulated hosts: mode, GPU instances at planner-chosen placements,
//! `plan`, MIG-backed vGPUs that appear exactly when a matching free GPU
//! instance exists, and the errors admins meet.

mod common;

use common::sim::SimHost;

const G: &str = "0000:18:00.0";

fn host() -> SimHost {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", G]);
    h
}

#[test]
fn test_enable_create_status_destroy() {
    let h = host();
    let e = h.fails(&["mig", "create", "--profile", "3g.40gb", "--gpu", G], 3);
    assert!(e.contains("MIG mode is off"), "{e}");
    let out = h.ok(&["mig", "enable", G]);
    assert!(out.contains("lose MIG mode on reboot"), "{out}");
    let a = h.json(&["mig", "create", "--profile", "3g.40gb", "--gpu", G, "--json"]);
    assert_eq!(a["start"], 4, "the planner keeps four 1g slots free, not three");
    let b = h.json(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--json"]);
    assert_eq!(b["start"], 0, "small instances go to the half that is already broken");
    let e = h.fails(&["mig", "create", "--profile", "4g.40gb", "--gpu", G, "--placement", "0"], 3);
    assert!(e.contains("does not fit") && e.contains("allowed starts [0]"), "{e}");
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    assert_eq!(s[0]["slice_map"], "1...3333");
    assert_eq!(s[0]["instances"].as_array().unwrap().len(), 2);
    let e = h.fails(&["mig", "disable", G], 3);
    assert!(e.contains("still has GPU instances"), "{e}");
    h.ok(&["mig", "destroy", "--gpu", G, &a["gi"].to_string()]);
    h.ok(&["mig", "destroy", "--gpu", G, &b["gi"].to_string()]);
    h.fails(&["mig", "destroy", "--gpu", G, "7"], 3);
    h.ok(&["mig", "disable", G]);
}

#[test]
fn test_plan_fits_and_does_not_fit() {
    let h = host();
    // MIG is off: the plan says what must happen first, and the batch does
    // not fit as the host stands (exit 3).
    let o = h.run(&["mig", "plan", "--want", "4g.40gb,3g.40gb", "--gpu", G, "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fits"], false);
    assert_eq!(v["fits_after_steps"], true);
    assert_eq!(v["steps"], serde_json::json!([format!("vgpuctl mig enable {G}")]));
    assert_eq!(v["placements"][0]["first"], serde_json::json!([format!("vgpuctl mig enable {G}")]));
    h.ok(&["mig", "enable", G]);
    let ok = h.json(&["mig", "plan", "--want", "4g.40gb,3g.40gb", "--gpu", G, "--json"]);
    assert_eq!(ok["fits"], true);
    assert_eq!(ok["steps"], serde_json::json!([]));
    let o = h.run(&["mig", "plan", "--want", "4g.40gb,2x2g.20gb", "--gpu", G, "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["does_not_fit"], serde_json::json!(["2g.20gb"]));
    assert_eq!(v["fits_after_steps"], false);
    // Across the host: the MIG GPU first, the others after `mig enable`.
    let o = h.run(&["mig", "plan", "--want", "7g.80gb,7g.80gb,4g.40gb,3g.40gb,7x1g.10gb", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((o.status.code(), &all["fits"], &all["fits_after_steps"]), (Some(3), &serde_json::json!(false), &serde_json::json!(true)), "{all}");
    assert!(all["placements"].as_array().unwrap().iter().any(|p| p["gpu"] == G && p["first"] == serde_json::json!([])), "{all}");
    h.fails(&["mig", "plan", "--want", "5g.50gb", "--gpu", G], 64);
    h.fails(&["mig", "plan", "--want", "0x1g.10gb", "--gpu", G], 64);
}

/// The commands a refusal or a plan suggests, taken from its text.
fn suggested(text: &str) -> Vec<Vec<String>> {
    text.split(['(', ')', ';', '\n'])
        .map(str::trim)
        .filter_map(|s| s.strip_prefix("vgpuctl ").or_else(|| s.split_once(" vgpuctl ").map(|(_, c)| c)))
        .map(|c| c.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn test_mig_enable_refuses_a_gpu_used_otherwise_and_its_suggestions_work() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "all"]);
    // A time-sliced vGPU on the GPU: MIG mode stays off, the vGPU is named.
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", G]);
    let before = h.snapshot();
    let e = h.fails(&["mig", "enable", G], 3);
    assert!(e.contains("holds time-sliced vGPUs: H100-20C 0000:18:00.4") && e.contains("never share a GPU"), "{e}");
    h.assert_unchanged(&before, "mig enable refused");
    let steps = suggested(&e);
    assert_eq!(steps, vec![vec!["vgpu".to_string(), "remove".into(), "0000:18:00.4".into()]], "{e}");
    for s in &steps {
        h.ok(&s.iter().map(String::as_str).collect::<Vec<_>>());
    }
    h.ok(&["mig", "enable", G]);
    // A GPU passed through (vfio-pci): give it back first, as the refusal says.
    let p = "0000:2a:00.0";
    h.ok(&["sriov", "disable", p]);
    h.ok(&["passthrough", "prepare", p, "--force"]);
    let e = h.fails(&["mig", "enable", p], 3);
    assert!(e.contains("bound to vfio-pci"), "{e}");
    for s in suggested(&e) {
        h.ok(&s.iter().map(String::as_str).collect::<Vec<_>>());
    }
    h.ok(&["mig", "enable", p]);
    // Already in MIG mode with MIG-backed vGPUs on it: enabling again is a no-op, not a refusal.
    h.ok(&["vgpu", "create", "--type", "H100-3-40C", "--gpu", G]);
    h.ok(&["mig", "enable", G]);
}

#[test]
fn test_mig_plan_never_uses_a_gpu_with_time_sliced_vgpus_and_its_steps_work() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "all"]);
    let busy = "0000:2a:00.0";
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", busy]);
    let o = h.run(&["mig", "plan", "--want", "3g.40gb", "--gpu", busy, "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fits_after_steps"], false, "{v}");
    assert_eq!(v["blocked"][0]["gpu"], busy, "{v}");
    // Across the host it goes elsewhere, after the step it names; running
    // the steps as printed makes the same plan fit now.
    let o = h.run(&["mig", "plan", "--want", "2x7g.80gb", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["placements"].as_array().unwrap().iter().all(|p| p["gpu"] != busy), "{v}");
    for step in v["steps"].as_array().unwrap() {
        let args: Vec<&str> = step.as_str().unwrap().strip_prefix("vgpuctl ").unwrap().split_whitespace().collect();
        h.ok(&args);
    }
    assert_eq!(h.json(&["mig", "plan", "--want", "2x7g.80gb", "--json"])["fits"], true);
}

#[test]
fn test_mig_backed_counts_are_what_can_be_made() {
    let h = host();
    h.ok(&["mig", "enable", G]);
    h.ok(&["mig", "create", "--gpu", G, "--profile", "3g.40gb"]);
    // One free 3g.40gb instance and room for one more: 2, not one per free VF.
    let count = |t: &str| -> u64 {
        let types = h.json(&["types", "--json"]);
        let gpu = types["gpus"].as_array().unwrap().iter().find(|g| g["gpu"] == G).unwrap().clone();
        gpu["types"].as_array().unwrap().iter().find(|x| x["name"] == t).map(|x| x["creatable"].as_u64().unwrap()).unwrap_or(0)
    };
    assert_eq!(count("H100-3-40C"), 2);
    assert_eq!(count("H100-1-10C"), 4, "slices 0-3 are free: four 1g.10gb");
    assert_eq!(count("H100-7-80C"), 0);
    let e = h.ok(&["explain", "--type", "H100-3-40C"]);
    assert!(e.contains(&format!("{G} yes: 2 more can be created")), "{e}");
    let e = h.ok(&["explain", "--type", "H100-7-80C"]);
    assert!(e.contains("no room to make one"), "{e}");
    // Exactly that many can be made.
    h.ok(&["vgpu", "create", "--type", "H100-3-40C", "--gpu", G]);
    h.ok(&["vgpu", "create", "--type", "H100-3-40C", "--gpu", G]);
    assert_eq!(count("H100-3-40C"), 0);
    h.fails(&["vgpu", "create", "--type", "H100-3-40C", "--gpu", G], 3);
    // The metrics say the same.
    let m = h.ok(&["metrics"]);
    assert!(m.lines().any(|l| l.starts_with("vgpuctl_vgpu_creatable{") && l.contains("H100-3-40C") && l.contains(G) && l.ends_with(" 0")), "{m}");
}

#[test]
fn test_time_sliced_refusal_on_a_mig_gpu_suggests_what_works() {
    let h = host();
    h.ok(&["mig", "enable", G]);
    h.ok(&["mig", "create", "--gpu", G, "--profile", "1g.10gb"]);
    let e = h.fails(&["vgpu", "create", "--type", "H100-20C", "--gpu", G], 3);
    assert!(e.contains("vgpuctl mig status lists them") && e.contains(&format!("vgpuctl mig disable {G}")), "{e}");
    let status = h.json(&["mig", "status", "--json"])["gpus"].clone();
    let gi = status.as_array().unwrap().iter().find(|g| g["gpu"] == G).unwrap()["instances"][0]["gi"].as_u64().unwrap();
    h.ok(&["mig", "destroy", "--gpu", G, &gi.to_string()]);
    h.ok(&["mig", "disable", G]);
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", G]);
}

#[test]
fn test_mig_backed_vgpu_makes_and_frees_its_gpu_instance() {
    let h = host();
    let e = h.fails(&["vgpu", "create", "--type", "H100-3-40C"], 3);
    assert!(e.contains("MIG mode is off"), "{e}");
    h.ok(&["mig", "enable", G]);
    let a = h.json(&["vgpu", "create", "--type", "H100-3-40C", "--json"]);
    assert_eq!((a["gi_created"].as_bool(), a["gi"].as_u64()), (Some(true), Some(1)));
    assert_eq!(std::fs::read_to_string(h.path(&format!("/sys/bus/pci/devices/{}/nvidia/gpu_instance_id", a["vf"].as_str().unwrap()))).unwrap().trim(), "1");
    // A free GI made by hand is used as is, and never removed by vgpuctl.
    let gi = h.json(&["mig", "create", "--profile", "3g.40gb", "--gpu", G, "--json"]);
    let b = h.json(&["vgpu", "create", "--type", "H100-3-40C", "--json"]);
    assert_eq!(b["gi"], gi["gi"]);
    assert_eq!(b["gi_created"], false);
    // Time-sliced types cannot join a MIG GPU.
    let e = h.fails(&["vgpu", "create", "--type", "H100-10C", "--gpu", G], 3);
    assert!(e.contains("MIG mode"), "{e}");
    let r = h.json(&["vgpu", "remove", a["vf"].as_str().unwrap(), "--json"]);
    assert_eq!(r["gi_removed"], 1);
    let r = h.json(&["vgpu", "remove", b["vf"].as_str().unwrap(), "--json"]);
    assert_eq!(r["gi_removed"], serde_json::Value::Null, "the admin's GI stays");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"][0]["instances"].as_array().unwrap().len(), 1);
}

#[test]
fn test_mig_errors() {
    let h = host();
    h.ok(&["mig", "enable", G]);
    let e = h.fails(&["mig", "create", "--profile", "5g.50gb", "--gpu", G], 64);
    assert!(e.contains("no MIG profile") && e.contains("3g.40gb"), "{e}");
    // Profiles of other GPU models (A100 40GB, H100 NVL) are not this GPU's.
    for other in ["1g.5gb", "3g.20gb", "1g.12gb", "7g.94gb"] {
        let e = h.fails(&["mig", "create", "--profile", other, "--gpu", G], 64);
        assert!(e.contains(&format!("no MIG profile \"{other}\"")) && e.contains("1g.10gb"), "{e}");
    }
    h.fails(&["mig", "create", "--profile", "3g.40gb", "--gpu", "0000:18:00.0/../x"], 64);
    let t4 = SimHost::new("t4x2-mdev");
    let e = t4.fails(&["mig", "enable", "0000:3b:00.0"], 3);
    assert!(e.contains("does not support MIG"), "{e}");
    let p = h.json(&["mig", "profiles", "--gpu", G, "--json"])["profiles"].clone();
    assert_eq!(p.as_array().unwrap().len(), 7);
}

#[test]
fn test_compute_instances_made_with_the_gpu_instance_and_destroy_rules() {
    let h = host();
    h.ok(&["mig", "enable", "GPU-51001800-5eed-4000-8000-000000000000"]);
    let a = h.json(&["mig", "create", "--profile", "3g.40gb", "--gpu", G, "--compute-instances", "3x1c.3g.40gb", "--json"]);
    assert_eq!(a["compute_instances"].as_array().unwrap().len(), 3);
    let s = h.json(&["mig", "status", "--json"])["gpus"].clone();
    let cis = &s[0]["instances"][0]["compute_instances"];
    assert_eq!(cis.as_array().unwrap().iter().map(|c| c["profile"].as_str().unwrap()).collect::<Vec<_>>(), ["1c.3g.40gb"; 3]);
    assert_eq!(cis.as_array().unwrap().iter().map(|c| c["start"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    // Default: none (what a MIG-backed vGPU wants); all: one full-size CI.
    let b = h.json(&["mig", "create", "--profile", "2g.20gb", "--gpu", G, "--json"]);
    assert_eq!(b["compute_instances"], serde_json::json!([]));
    let c = h.json(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--compute-instances", "all", "--json"]);
    assert_eq!(c["compute_instances"][0]["profile"], "1g.10gb");
    // A request that cannot fit is refused before anything is made.
    let before = h.json(&["mig", "status", "--json"])["gpus"].clone();
    let e = h.fails(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--compute-instances", "2x1c.1g.10gb"], 3);
    assert!(e.contains("no compute-instance profile") || e.contains("no room"), "{e}");
    let e = h.fails(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--compute-instances", "1c.3g.40gb"], 3);
    assert!(e.contains("1c.3g.40gb"), "{e}");
    assert_eq!(h.json(&["mig", "status", "--json"])["gpus"].clone(), before, "nothing half-done");
    h.fails(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--compute-instances", "../x"], 64);
    // Compute instances need --force; then they go first, then the GPU instance.
    let gi = a["gi"].to_string();
    let e = h.fails(&["mig", "destroy", "--gpu", G, &gi], 3);
    assert!(e.contains("has compute instances 0 (1c.3g.40gb), 1 (1c.3g.40gb), 2 (1c.3g.40gb)") && e.contains("--force"), "{e}");
    h.ok(&["mig", "destroy", "--gpu", G, &gi, "--force"]);
    // A compute-instance profile names its GPU instance and one CI of itself.
    let d = h.json(&["mig", "create", "--profile", "1c.2g.20gb", "--gpu", G, "--compute-instances", "1c.2g.20gb", "--json"]);
    assert_eq!((d["profile"].as_str(), d["compute_instances"].as_array().unwrap().len()), (Some("2g.20gb"), 2));
    h.fails(&["mig", "create", "--profile", "1c.2g.20gb", "--gpu", G, "--compute-instances", "all"], 64);
    h.ok(&["mig", "destroy", "--gpu", G, &d["gi"].to_string(), "--force"]);
    // GPUs by index and UUID as well as PCI address; nonsense names are refused.
    h.ok(&["mig", "destroy", "--gpu", "0", &b["gi"].to_string()]);
    h.fails(&["mig", "destroy", "--gpu", "GPU-../../x", "1"], 64);
    h.fails(&["mig", "destroy", "--gpu", "99", "1"], 3);
    assert_eq!(h.json(&["mig", "profiles", "--gpu", "0", "--json"])["profiles"].clone().as_array().unwrap().len(), 7);
    assert_eq!(h.json(&["mig", "plan", "--want", "1g.10gb", "--gpu", "GPU-51001800-5eed-4000-8000-000000000000", "--json"])["placements"][0]["gpu"], G);
}

#[test]
fn test_destroying_a_gpu_instance_under_a_vgpu_names_the_vgpu() {
    let h = host();
    h.ok(&["mig", "enable", G]);
    let v = h.json(&["vgpu", "create", "--type", "H100-3-40C", "--gpu", G, "--json"]);
    let gi = v["gi"].to_string();
    let e = h.fails(&["mig", "destroy", "--gpu", G, &gi, "--force"], 3);
    assert!(e.contains("is in use") && e.contains(&format!("vGPU on VF {}", v["vf"].as_str().unwrap())) && e.contains("vgpuctl vgpu remove"), "{e}");
    h.ok(&["vgpu", "remove", v["vf"].as_str().unwrap()]);
}

#[test]
fn test_planner_policy_file_mix_and_reserve() {
    let h = host();
    h.ok(&["mig", "enable", G]);
    std::fs::create_dir_all(h.path("/etc/vgpuctl")).unwrap();
    std::fs::write(h.path("/etc/vgpuctl/mig-planner.toml"), "mix = { \"1g.10gb\" = 0.5, \"5g.50gb\" = 1 }\n").unwrap();
    let e = h.fails(&["mig", "create", "--profile", "1g.10gb", "--gpu", G], 64);
    assert!(e.contains("mig-planner.toml") && e.contains("5g.50gb"), "{e}");
    // Keep the (only) MIG GPU's last whole-GPU room for a 7g: a 1g is refused, a 7g placed.
    std::fs::write(h.path("/etc/vgpuctl/mig-planner.toml"), "mix = { \"1g.10gb\" = 0.5, \"7g.80gb\" = 0.05 }\nreserve_whole_gpus = 1\n").unwrap();
    let e = h.fails(&["mig", "create", "--profile", "1g.10gb", "--gpu", G], 3);
    assert!(e.contains("does not fit") && e.contains("reserve_whole_gpus = 1"), "{e}");
    let a = h.json(&["mig", "create", "--profile", "7g.80gb", "--gpu", G, "--json"]);
    assert_eq!(a["start"], 0);
    // An explicit placement is the admin's own decision: not subject to the reserve.
    h.ok(&["mig", "destroy", "--gpu", G, &a["gi"].to_string()]);
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "6"]);
}

#[test]
fn test_plan_places_a_batch_the_online_planner_would_strand() {
    // 8 H100s in MIG mode: 8×3g.40gb + 32×1g.10gb fits only as one 3g and
    // four 1g per GPU; placing the 3g first, two to a GPU, strands the 1g.
    let h = SimHost::new("h100x8-vfio");
    let gpus: Vec<String> =
        h.json(&["mig", "status", "--json"])["gpus"].clone().as_array().unwrap().iter().map(|g| g["gpu"].as_str().unwrap().to_string()).collect();
    for g in &gpus {
        h.ok(&["mig", "enable", g]);
    }
    let v = h.json(&["mig", "plan", "--want", "8x3g.40gb,32x1g.10gb", "--json"]);
    assert_eq!(v["fits"], true, "{v}");
    assert_eq!(v["placements"].as_array().unwrap().len(), 40);
    for g in &gpus {
        let on: Vec<&serde_json::Value> = v["placements"].as_array().unwrap().iter().filter(|p| p["gpu"] == g.as_str()).collect();
        assert_eq!(on.len(), 5, "{g}: {v}");
    }
    // One more 1g.10gb has no place: proven, exit 3.
    let o = h.run(&["mig", "plan", "--want", "8x3g.40gb,33x1g.10gb", "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exact_search"], "no placement", "{v}");
}

/// The GPU's instances as (profile, start), sorted: what a layout is.
fn shape(h: &SimHost, gpu: &str) -> Vec<(String, u64)> {
    let s = h.json(&["mig", "status", "--json"]);
    let g = s["gpus"].as_array().unwrap().iter().find(|g| g["gpu"] == gpu).unwrap().clone();
    let mut v: Vec<(String, u64)> =
        g["instances"].as_array().unwrap().iter().map(|i| (i["profile"].as_str().unwrap().to_string(), i["start"].as_u64().unwrap())).collect();
    v.sort();
    v
}

/// A vGPU's instance at slice 6 (busy) and two idle 1g instances at slices 1
/// and 3 that break the left half: moving the idle ones right makes room for
/// a 4g.
fn fragmented(h: &SimHost) {
    h.ok(&["mig", "enable", G]);
    let v = h.json(&["vgpu", "create", "--type", "H100-1-10C", "--gpu", G, "--json"]);
    assert_eq!(v["gi"], 1);
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "1"]);
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "3"]);
}

#[test]
fn test_defrag_moves_only_provably_idle_instances_vgpuctl_made() {
    let h = host();
    fragmented(&h);
    let before = shape(&h, G);
    let snap = h.snapshot();
    // Dry run: the plan, nothing changed.
    let d = h.json(&["mig", "defrag", "--gpu", G, "--dry-run", "--json"]);
    let g = &d["gpus"][0];
    assert_eq!(g["slice_map_before"], ".1.1..1.");
    assert_eq!(g["largest_free_before"], "2g.20gb");
    assert_eq!(g["largest_free_after"], "4g.40gb");
    assert_eq!(g["moves"].as_array().unwrap().len(), 2, "{d}");
    assert!(g["moves"].as_array().unwrap().iter().all(|m| m["gi_after"].is_null()));
    assert_eq!(g["pinned"][0]["gi"], 1);
    assert!(g["pinned"][0]["why"].as_str().unwrap().contains("a vGPU on VF"), "{d}");
    h.assert_unchanged(&snap, "mig defrag --dry-run");

    // A VM start the hook journaled pins the instance it made.
    let journal = h.path("/run/vgpuctl/domains/11111111-2222-3333-4444-555555555555.json");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(&journal, format!(r#"{{"format":1,"domain":"vm1","uuid":"11111111-2222-3333-4444-555555555555","pid":1,"state":"prepared","updated":0,"entries":[{{"kind":"mig_gi","gpu":"{G}","gi":2,"done":true}}]}}"#)).unwrap();
    let d = h.json(&["mig", "defrag", "--gpu", G, "--dry-run", "--json"]);
    let pinned = d["gpus"][0]["pinned"].to_string();
    assert!(pinned.contains("the hook made it for VM vm1"), "{d}");
    assert!(d["gpus"][0]["moves"].as_array().unwrap().iter().all(|m| m["gi"] != 2), "{d}");
    std::fs::remove_file(&journal).unwrap();

    // Instances another tool made (not on the ledger) stay unless asked.
    let ledger = h.path("/run/vgpuctl/mig-gis.json");
    let full = std::fs::read_to_string(&ledger).unwrap();
    let mine: Vec<serde_json::Value> = serde_json::from_str::<Vec<serde_json::Value>>(&full).unwrap().into_iter().filter(|m| m["gi"] == 1).collect();
    std::fs::write(&ledger, serde_json::to_string(&mine).unwrap()).unwrap();
    let d = h.json(&["mig", "defrag", "--gpu", G, "--json"]);
    assert!(d["gpus"][0]["moves"].as_array().unwrap().is_empty(), "{d}");
    assert!(d["gpus"][0]["pinned"].to_string().contains("--include-foreign"), "{d}");
    assert_eq!(shape(&h, G), before);
    let text = h.ok(&["mig", "defrag", "--include-foreign"]);
    assert!(text.contains("moved 2 idle GPU instance(s): .1.1..1. → ....111.; room for 4g.40gb (was 2g.20gb)"), "{text}");
    assert!(text.contains("stays: GPU instance 1 (1g.10gb at slice 6): a vGPU on VF"), "{text}");
    assert_eq!(shape(&h, G), vec![("1g.10gb".into(), 4), ("1g.10gb".into(), 5), ("1g.10gb".into(), 6)]);
    // The moved instances are vgpuctl's now (the admin's): movable again, never swept.
    let l: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&ledger).unwrap()).unwrap();
    assert_eq!(l.iter().filter(|m| m["owner"] == "admin").count(), 2, "{l:?}");
    let gc = h.json(&["gc", "--json"]);
    assert!(!gc.to_string().contains("destroyed"), "{gc}");
    // Room for the 4g is real, and a second defrag has nothing to do.
    let again = h.json(&["mig", "defrag", "--json"]);
    assert!(again["gpus"][0]["moves"].as_array().unwrap().is_empty(), "{again}");
    h.ok(&["mig", "create", "--profile", "4g.40gb", "--gpu", G]);
}

#[test]
fn test_defrag_leaves_instances_with_compute_instances_and_gpus_in_use() {
    let h = host();
    h.ok(&["mig", "enable", G]);
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "1", "--compute-instances", "all"]);
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "5"]);
    let d = h.json(&["mig", "defrag", "--gpu", G, "--json"]);
    let g = &d["gpus"][0];
    assert!(g["pinned"][0]["why"].as_str().unwrap().contains("compute instances"), "{d}");
    // The idle one joins the pinned one's half: the other half is free for a 3g.
    assert_eq!(g["moves"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(g["moves"][0]["from"], 5);
    assert!(g["moves"][0]["to"].as_u64().unwrap() < 4, "{d}");
    assert_eq!(g["largest_free_after"], "3g.40gb");
    // MIG off: a named GPU is refused, the rest skipped.
    h.fails(&["mig", "defrag", "--gpu", "0000:2a:00.0"], 3);
    let none = h.ok(&["mig", "defrag", "--gpu", G]);
    assert!(none.contains("no move lets it take more"), "{none}");
}

/// `repack_moves` in the planner policy: a create that has no place moves
/// idle instances within a GPU to make room, says so, and never moves a
/// busy one; without it the same create is refused.
#[test]
fn test_opt_in_repack_makes_room_by_moving_idle_instances() {
    let h = host();
    fragmented(&h);
    let snap = h.snapshot();
    let e = h.fails(&["mig", "create", "--profile", "4g.40gb", "--gpu", G], 3);
    assert!(e.contains("does not fit"), "{e}");
    h.assert_unchanged(&snap, "refused without repack");
    let policy = h.path("/etc/vgpuctl/mig-planner.toml");
    std::fs::create_dir_all(policy.parent().unwrap()).unwrap();
    // One move is not enough: both idle 1g instances must leave the left half.
    std::fs::write(&policy, "repack_moves = 1\n").unwrap();
    let before = shape(&h, G);
    h.fails(&["mig", "create", "--profile", "4g.40gb", "--gpu", G], 3);
    assert_eq!(shape(&h, G), before, "refused within the bound, nothing moved");
    std::fs::write(&policy, "repack_moves = 2\n").unwrap();
    let c = h.json(&["mig", "create", "--profile", "4g.40gb", "--gpu", G, "--json"]);
    assert_eq!(c["start"], 0);
    assert_eq!(c["moved"].as_array().unwrap().len(), 2, "{c}");
    assert_eq!(shape(&h, G), vec![("1g.10gb".into(), 4), ("1g.10gb".into(), 5), ("1g.10gb".into(), 6), ("4g.40gb".into(), 0)]);
    // The vGPU's instance (slice 6) never moved.
    let s = h.json(&["mig", "status", "--json"]);
    let gi1 = s["gpus"][0]["instances"].as_array().unwrap().iter().find(|i| i["gi"] == 1).unwrap().clone();
    assert_eq!(gi1["start"], 6);
    // The same through a MIG-backed vGPU: an idle 1g in each half of a
    // second layout, a 3g vGPU wanted: one moves, the vGPU says so.
    h.ok(&["mig", "destroy", "--gpu", G, &c["gi"].to_string()]);
    let s = h.json(&["mig", "status", "--json"]);
    let left: Vec<String> = s["gpus"][0]["instances"].as_array().unwrap().iter().filter(|i| i["gi"] != 1).map(|i| i["gi"].to_string()).collect();
    for gi in left {
        h.ok(&["mig", "destroy", "--gpu", G, &gi]);
    }
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "1"]);
    h.ok(&["mig", "create", "--profile", "1g.10gb", "--gpu", G, "--placement", "5"]);
    let v = h.json(&["vgpu", "create", "--type", "H100-3-40C", "--gpu", G, "--json"]);
    assert_eq!(v["gi_created"], true, "{v}");
    assert_eq!(v["gi_moved"].as_array().unwrap().len(), 1, "{v}");
    let text = h.ok(&["vgpu", "remove", v["vf"].as_str().unwrap()]);
    assert!(!text.is_empty());
    std::fs::write(&policy, "repack_moves = 9\n").unwrap();
    let e = h.fails(&["mig", "create", "--profile", "1g.10gb", "--gpu", G], 64);
    assert!(e.contains("repack_moves: at most 8"), "{e}");
}
