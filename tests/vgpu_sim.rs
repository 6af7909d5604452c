//! vGPUs by type name on simulated H100 (vendor-specific VFIO), A100 (legacy
//! mdev on VFs) and T4 (legacy mdev on the GPU) hosts: SR-IOV, create,
//! remove, the equal-size and no-mixing rules, mixed-size mode, explain, and
//! property tests that allocation never over-commits.

mod common;

use common::sim::SimHost;
use proptest::prelude::*;

const H0: &str = "0000:18:00.0";

fn h100() -> SimHost {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "all"]);
    h
}

fn vf_type(h: &SimHost, vf: &str) -> String {
    std::fs::read_to_string(h.path(&format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"))).unwrap().trim().to_string()
}

#[test]
fn test_sriov_enable_disable_and_status() {
    let h = SimHost::new("h100x8-vfio");
    let s = h.json(&["sriov", "status", "--json"])["gpus"].clone();
    assert_eq!(s.as_array().unwrap().len(), 8);
    assert_eq!(s[0]["num_vfs"], 0);
    let r = h.json(&["sriov", "enable", H0, "--json"])["gpus"].clone();
    assert_eq!(r[0]["after"], 32);
    assert_eq!(r[0]["vfs"].as_array().unwrap().len(), 32);
    assert_eq!(r[0]["vfs"][0], "0000:18:00.4");
    assert_eq!(r[0]["vfs"][31], "0000:18:04.3");
    // Again: nothing to do.
    let r = h.json(&["sriov", "enable", H0, "--json"])["gpus"].clone();
    assert_eq!(r[0]["changed"], false);
    // A smaller count goes through 0, as the kernel demands.
    let r = h.json(&["sriov", "enable", H0, "--num", "4", "--json"])["gpus"].clone();
    assert_eq!((r[0]["before"].as_u64(), r[0]["after"].as_u64()), (Some(32), Some(4)));
    assert!(!h.path("/sys/bus/pci/devices/0000:18:00.0/virtfn4").exists());
    let e = h.fails(&["sriov", "enable", H0, "--num", "33"], 3);
    assert!(e.contains("at most 32 VFs"), "{e}");
    // A VF holding a vGPU blocks disabling, naming it.
    h.ok(&["vgpu", "create", "--type", "H100-10C", "--gpu", H0]);
    let e = h.fails(&["sriov", "disable", H0], 3);
    assert!(e.contains("VF 0000:18:00.4 holds vGPU H100-10C (type "), "{e}");
    h.ok(&["vgpu", "remove", "0000:18:00.4"]);
    h.ok(&["sriov", "disable", H0]);
    assert!(!h.path("/sys/bus/pci/devices/0000:18:00.4").exists());
    let e = h.fails(&["sriov", "enable", "0000:03:00.0"], 3);
    assert!(e.contains("not an SR-IOV capable GPU"), "{e}");
    h.fails(&["sriov", "enable", "../18:00.0"], 64);
}

#[test]
fn test_vendor_vfio_create_by_name_and_remove_by_vf() {
    let h = h100();
    let c = h.json(&["vgpu", "create", "--type", "NVIDIA H100-10C", "--json"]);
    assert_eq!(c["interface"], "vendor_vfio");
    assert_eq!(c["gpu"], H0, "pack starts at the lowest GPU");
    assert_eq!(c["vf"], "0000:18:00.4");
    assert_eq!(c["type"], "H100-10C");
    assert_eq!(vf_type(&h, "0000:18:00.4"), c["type_id"].as_str().unwrap());
    // The VF stops listing types; siblings list only the same size.
    let listed = std::fs::read_to_string(h.path("/sys/bus/pci/devices/0000:18:00.5/nvidia/creatable_vgpu_types")).unwrap();
    assert!(listed.contains("NVIDIA H100-10C") && !listed.contains("H100-20C"), "{listed}");
    // list shows the vGPU and its name.
    let l = h.json(&["list", "--json"]);
    let vf0 = &l["gpus"].as_array().unwrap().iter().find(|g| g["address"] == H0).unwrap()["sriov"]["vfs"][0];
    assert_eq!(vf0["vgpu"]["current_type_name"], "NVIDIA H100-10C");
    h.ok(&["vgpu", "remove", "0000:18:00.4"]);
    assert_eq!(vf_type(&h, "0000:18:00.4"), "0");
    // Removing again is a clear message (the driver would say EPERM).
    let e = h.fails(&["vgpu", "remove", "0000:18:00.4"], 3);
    assert!(e.contains("VF 0000:18:00.4 holds no vGPU"), "{e}");
    h.ok(&["vgpu", "remove", "0000:18:00.4", "--if-exists"]);
    let e = h.fails(&["vgpu", "remove", H0], 3);
    assert!(e.contains("is a physical GPU"), "{e}");
    let e = h.fails(&["vgpu", "create", "--type", "H100-10C", "--uuid", "11111111-2222-3333-4444-555555555555"], 3);
    assert!(e.contains("vendor-specific VFIO"), "{e}");
}

#[test]
fn test_equal_size_rule_and_full_gpu_are_explained() {
    let h = h100();
    for _ in 0..4 {
        h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", H0]);
    }
    let e = h.fails(&["vgpu", "create", "--type", "H100-20C", "--gpu", H0], 3);
    assert!(e.contains("full for 20 GB (4 of at most 4)"), "{e}");
    let e = h.fails(&["vgpu", "create", "--type", "H100-10C", "--gpu", H0], 3);
    assert!(e.contains("holds 4×H100-20C") && e.contains("equal-size mode"), "{e}");
    let x = h.json(&["explain", "--type", "H100-10C", "--json"]);
    assert_eq!(x["gpus"][0]["can_create"], false);
    assert!(x["gpus"][0]["reason"].as_str().unwrap().contains("mixed-size mode"));
    assert_eq!(x["gpus"][1]["can_create"], true);
    assert_eq!(x["gpus"][1]["creatable"], 8);
    // Without --gpu, pack moves on to the next GPU.
    let c = h.json(&["vgpu", "create", "--type", "H100-10C", "--json"]);
    assert_eq!(c["gpu"], "0000:2a:00.0");
    // MIG-backed types need MIG mode; other models' types are named as such.
    let x = h.ok(&["explain", "--type", "H100-3-40C"]);
    assert!(x.contains("MIG mode is off") && x.contains("3g.40gb"), "{x}");
    let x = h.ok(&["explain", "--type", "A100D-10C"]);
    assert!(x.contains("takes H100 vGPU types"), "{x}");
}

#[test]
fn test_pack_and_spread_policies() {
    let h = h100();
    let a = h.json(&["vgpu", "create", "--type", "H100-10C", "--json"]);
    let b = h.json(&["vgpu", "create", "--type", "H100-10C", "--json"]);
    assert_eq!(a["gpu"], b["gpu"], "pack fills one GPU");
    let c = h.json(&["vgpu", "create", "--type", "H100-10C", "--policy", "spread", "--json"]);
    assert_ne!(c["gpu"], a["gpu"], "spread goes to an empty GPU");
}

#[test]
fn test_mixed_size_mode_rules() {
    let h = h100();
    h.ok(&["vgpu", "create", "--type", "H100-40C", "--gpu", H0]);
    let e = h.fails(&["vgpu", "mode", "--heterogeneous", "on", H0], 3);
    assert!(e.contains("while it holds vGPUs"), "{e}");
    h.ok(&["vgpu", "remove", "0000:18:00.4"]);
    h.ok(&["vgpu", "mode", "--heterogeneous", "on", H0]);
    // Now sizes mix, within 80 GB.
    h.ok(&["vgpu", "create", "--type", "H100-40C", "--gpu", H0]);
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", H0]);
    h.ok(&["vgpu", "create", "--type", "H100-10C", "--gpu", H0]);
    h.ok(&["vgpu", "create", "--type", "H100-10C", "--gpu", H0]);
    let e = h.fails(&["vgpu", "create", "--type", "H100-4C", "--gpu", H0], 3);
    assert!(e.contains("80 GB of 80 GB framebuffer in use"), "{e}");
    let t = h.json(&["types", "--json"]);
    assert_eq!(t["gpus"][0]["heterogeneous"], true);
    // The T4 has no mixed-size mode.
    let t4 = SimHost::new("t4x2-mdev");
    let e = t4.fails(&["vgpu", "mode", "--heterogeneous", "on", "0000:3b:00.0"], 3);
    assert!(e.contains("no mixed-size"), "{e}");
}

#[test]
fn test_legacy_interfaces_create_mdevs_by_type_name() {
    let a = SimHost::new("a100x4-mdev");
    let c = a.json(&["vgpu", "create", "--type", "A100D-20C", "--json"]);
    assert_eq!(c["interface"], "legacy_mdev_vfs");
    assert_eq!(c["parent"], "0000:17:00.4");
    assert_eq!(c["vf"], "0000:17:00.4");
    let uuid = c["uuid"].as_str().unwrap().to_string();
    assert!(a.path(&format!("/sys/bus/mdev/devices/{uuid}")).exists());
    // The next one goes to the next VF: one mdev per VF.
    let d = a.json(&["vgpu", "create", "--type", "A100D-20C", "--json"]);
    assert_eq!(d["parent"], "0000:17:00.5");
    a.ok(&["vgpu", "remove", &uuid]);
    assert!(!a.path(&format!("/sys/bus/mdev/devices/{uuid}")).exists());
    let t = SimHost::new("t4x2-mdev");
    let c = t.json(&["vgpu", "create", "--type", "T4-4Q", "--uuid", "11111111-2222-3333-4444-555555555555", "--json"]);
    assert_eq!(c["interface"], "legacy_mdev");
    assert_eq!(c["uuid"], "11111111-2222-3333-4444-555555555555");
    let types = t.json(&["types", "--json"]);
    let g = &types["gpus"][0];
    let q4 = g["types"].as_array().unwrap().iter().find(|x| x["name"] == "T4-4Q").unwrap();
    assert_eq!(q4["creatable"], 3);
    let q8 = g["types"].as_array().unwrap().iter().find(|x| x["name"] == "T4-8Q").unwrap();
    assert_eq!(q8["creatable"], 0);
    assert!(q8["why_not"].as_str().unwrap().contains("equal-size"));
}

#[test]
fn test_busy_vf_is_not_cleared() {
    let h = h100();
    h.ok(&["vgpu", "create", "--type", "H100-80C", "--gpu", H0]);
    std::fs::write(h.path("/sys/bus/pci/devices/0000:18:00.4/.sim-in-use"), "").unwrap();
    let e = h.fails(&["vgpu", "remove", "0000:18:00.4"], 3);
    assert!(e.contains("is in use"), "{e}");
    assert_ne!(vf_type(&h, "0000:18:00.4"), "0");
}

#[test]
fn test_bad_type_names_and_targets() {
    let h = h100();
    let before = h.snapshot();
    for (args, code, needle) in [
        (vec!["vgpu", "create", "--type", "H100"], 64, "invalid vGPU type name"),
        (vec!["vgpu", "create", "--type", "../H100-10C"], 64, "invalid vGPU type name"),
        (vec!["vgpu", "create", "--type", "H100-3-40Q"], 64, "C-series only"),
        (vec!["vgpu", "create", "--type", "L40S-2Q"], 3, "takes H100 vGPU types"),
        (vec!["vgpu", "create", "--type", "H100-10C", "--gpu", "0000:03:00.0"], 3, "not a GPU with vGPU support"),
        (vec!["vgpu", "create", "--type", "H100-10C", "--gpu", "3x"], 64, "invalid PCI address"),
        (vec!["vgpu", "create", "--type", "H100-10C", "--gpu", "42"], 3, "no NVIDIA GPU with index 42"),
        (vec!["vgpu", "remove", "not-a-thing"], 3, "neither an mdev UUID nor"),
        (vec!["vgpu", "remove", "0000:99:00.0"], 3, "neither an mdev UUID nor"),
        (vec!["explain", "--type", "H100-10X"], 64, "series must be"),
    ] {
        let e = h.fails(&args, code);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    h.assert_unchanged(&before, "refused vGPU commands");
}

#[derive(Debug, Clone)]
enum Op {
    Create(&'static str, Option<usize>),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let types = prop::sample::select(vec!["H100-4C", "H100-10C", "H100-20C", "H100-40C", "H100-80C"]);
    prop_oneof![
        3 => (types, prop::option::of(0usize..2)).prop_map(|(t, g)| Op::Create(t, g)),
        1 => (0usize..64).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random create/remove sequences through the library on a simulated H100
    /// host: every GPU always holds one framebuffer size, never more than the
    /// documented maximum of it, and a create fails only when no GPU could
    /// take the type.
    #[test]
    fn prop_allocation_never_overcommits(ops in prop::collection::vec(op(), 1..24)) {
        let dir = common::sim::tempdir();
        let root = dir.path().join("host");
        vgpuctl::sim::create(&root, "h100x8-vfio").unwrap();
        let host = vgpuctl::open_host(Some(&root)).unwrap();
        let gpus: Vec<vgpuctl::ids::PciAddress> = ["0000:18:00.0", "0000:2a:00.0"].iter().map(|a| a.parse().unwrap()).collect();
        vgpuctl::sriov::set(&host, Some(&gpus), Some(8), std::time::Duration::from_secs(5), std::time::Duration::from_secs(5)).unwrap();
        // Only the two GPUs with VFs can take vGPUs.
        let mut made: Vec<String> = Vec::new();
        for op in ops {
            match op {
                Op::Create(t, g) => {
                    let t: vgpuctl::vgpu::typename::VgpuTypeName = t.parse().unwrap();
                    let (_, before) = vgpuctl::vgpu::views(&host).unwrap();
                    let possible = before.iter().filter(|v| g.is_none_or(|i| v.gpu == gpus[i])).any(|v| v.find_type(&t).is_some_and(|x| x.creatable > 0));
                    let req = vgpuctl::vgpu::VgpuCreateRequest { type_name: t.clone(), gpu: g.map(|i| gpus[i]), uuid: None, policy: Default::default() };
                    match vgpuctl::vgpu::create_locked(&host, &req) {
                        Ok(c) => { prop_assert!(possible); made.push(c.vf.unwrap().to_string()); }
                        Err(e) => prop_assert!(!possible, "create failed though a GPU had room: {}", vgpuctl::error_chain(&e)),
                    }
                }
                Op::Remove(i) if !made.is_empty() => {
                    let vf = made.remove(i % made.len());
                    vgpuctl::vgpu::remove_locked(&host, &vf, false).unwrap();
                }
                Op::Remove(_) => {}
            }
            let (_, views) = vgpuctl::vgpu::views(&host).unwrap();
            for v in &views {
                let sizes = v.sizes_in_use();
                prop_assert!(sizes.len() <= 1, "{} holds several sizes: {:?}", v.gpu, sizes);
                for (fb, n) in &sizes {
                    let max = vgpuctl::vgpu::known::H100_80GB.iter().find(|k| k.mig_profile.is_none() && k.framebuffer_mib == *fb).unwrap().max_instances;
                    prop_assert!(*n <= max, "{} holds {} of {} MiB (max {})", v.gpu, n, fb, max);
                }
                prop_assert!(!v.holds_mig_backed());
            }
            let total: usize = views.iter().map(|v| v.vgpus.len()).sum();
            prop_assert_eq!(total, made.len());
        }
    }
}
