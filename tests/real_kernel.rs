//! Checks against the real Linux mdev core, inside a QEMU guest running the
//! Debian kernel with the mtty/mdpy/mbochs sample drivers. One boot serves
//! every test here; each reads what its scenario recorded.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::guest::guest;
use serde_json::Value;

/// `parent type available` lines as the scenario read them straight from sysfs.
fn sysfs_counts(text: &str) -> BTreeMap<(String, String), u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(((it.next()?.to_string(), it.next()?.to_string()), it.next()?.parse().ok()?))
        })
        .collect()
}

fn listed_counts(list: &Value) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for p in list["mdev_parents"].as_array().expect("mdev_parents array") {
        for t in p["types"].as_array().expect("types array") {
            out.insert(
                (p["name"].as_str().unwrap().to_string(), t["id"].as_str().unwrap().to_string()),
                t["available_instances"].as_u64().expect("available_instances"),
            );
        }
    }
    out
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_list_reports_the_three_sample_parents() {
    let g = guest();
    assert_eq!(g.read("", "modprobe.rc").trim(), "0", "modprobe failed: {}", g.read("", "modprobe.log"));
    g.assert_ran("10-inventory");
    let list = g.json("10-inventory", "list-fresh.json");
    let parents: Vec<&str> = list["mdev_parents"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(parents, vec!["mbochs", "mdpy", "mtty"]);
    let counts = listed_counts(&list);
    // The sample drivers' fixed pools, fresh.
    assert_eq!(counts[&("mbochs".into(), "mbochs-small".into())], 64);
    assert_eq!(counts[&("mbochs".into(), "mbochs-medium".into())], 16);
    assert_eq!(counts[&("mbochs".into(), "mbochs-large".into())], 4);
    // And every type exactly as sysfs showed it at the same moment.
    assert_eq!(counts, sysfs_counts(&g.read("10-inventory", "sysfs-fresh.txt")));
    let mtty1 = &list["mdev_parents"][2]["types"][0];
    assert_eq!(mtty1["name"], "Single port serial");
    assert_eq!(mtty1["device_api"], "vfio-pci");
    assert!(mtty1["description"].is_null(), "mtty has no description file");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_host_without_nvidia_is_not_an_error() {
    let g = guest();
    g.assert_ran("10-inventory");
    let list = g.json("10-inventory", "list-fresh.json");
    assert!(list["nvidia_driver"].is_null());
    assert!(list["warnings"].as_array().unwrap().is_empty(), "warnings: {}", list["warnings"]);
    let text = g.read("10-inventory", "list-fresh.txt");
    assert!(text.contains("NVIDIA driver: not loaded"), "{text}");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_created_mdevs_are_listed_with_iommu_groups() {
    let g = guest();
    g.assert_ran("10-inventory");
    let list = g.json("10-inventory", "list-with-mdevs.json");
    let groups: HashMap<String, u64> = g
        .read("10-inventory", "mdev-groups.txt")
        .lines()
        .map(|l| {
            let (u, grp) = l.split_once(' ').unwrap();
            (u.to_string(), grp.parse().unwrap())
        })
        .collect();
    let mdevs = list["mdevs"].as_array().unwrap();
    assert_eq!(mdevs.len(), 3, "{mdevs:?}");
    let mut seen_types = Vec::new();
    for m in mdevs {
        let uuid = m["uuid"].as_str().unwrap();
        assert_eq!(m["iommu_group"].as_u64(), Some(groups[uuid]), "group of {uuid}");
        // Nothing has the group open: known free, not unknown.
        assert_eq!(m["in_use"], Value::Bool(false), "{m}");
        seen_types.push((m["parent"].as_str().unwrap().to_string(), m["type"].as_str().unwrap().to_string()));
    }
    seen_types.sort();
    assert_eq!(seen_types, vec![("mbochs".into(), "mbochs-large".into()), ("mdpy".into(), "mdpy-vga".into()), ("mtty".into(), "mtty-2".into())]);
    // The shared mbochs pool: one large (64 MB) lowers medium and small too.
    let counts = listed_counts(&list);
    assert_eq!(counts, sysfs_counts(&g.read("10-inventory", "sysfs-with-mdevs.txt")));
    assert_eq!(counts[&("mbochs".into(), "mbochs-large".into())], 3);
    assert_eq!(counts[&("mbochs".into(), "mbochs-small".into())], 48);
    // The type lists each device under its parent too.
    let large = list["mdev_parents"][0]["types"].as_array().unwrap().iter().find(|t| t["id"] == "mbochs-large").unwrap();
    assert_eq!(large["devices"].as_array().unwrap().len(), 1);
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_missing_root_is_a_clear_error() {
    let g = guest();
    g.assert_ran("10-inventory");
    assert_eq!(g.read("10-inventory", "missing-root.rc").trim(), "1");
    let err = g.read("10-inventory", "missing-root.err");
    assert!(err.contains("/nonexistent") && err.contains("--root"), "{err}");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_mdev_create_list_remove_on_each_parent() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    for (p, t) in [("mbochs", "mbochs-small"), ("mdpy", "mdpy-hd"), ("mtty", "mtty-1")] {
        assert_eq!(f[&format!("create_{p}")], "0", "{p}");
        assert_eq!(f[&format!("exists_{p}")], "0", "{p}: device present after create");
        assert_eq!(f[&format!("type_{p}")], t);
        assert_eq!(f[&format!("remove_{p}")], "0");
        assert_eq!(f[&format!("gone_{p}")], "1", "{p}: device gone after remove");
        let list = g.json("20-mdev", &format!("list_{p}.json"));
        let devs = list["devices"].as_array().unwrap();
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0]["parent"], p);
        assert_eq!(devs[0]["type"], t);
        assert_eq!(devs[0]["in_use"], Value::Bool(false));
    }
    assert_eq!(f["create_by_name"], "0");
    assert_eq!(f["by_name_type"], "mtty-2", "type given by its name attribute");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_mdev_shared_pool_and_kernel_errors() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    assert_eq!(f["pool_before"], "64/16/4");
    assert_eq!(f["pool_create"], "0");
    assert_eq!(f["pool_after"], "48/12/3", "one large (64 MB) takes from the shared pool");
    let created = g.json("20-mdev", "pool-create.json");
    assert_eq!(created["type"], "mbochs-large");
    assert!(created["iommu_group"].is_u64());
    assert_eq!(f["dup_rc"], "3");
    let dup = g.read("20-mdev", "dup.err");
    assert!(dup.contains("already in use by an mdev of type mbochs-large on mbochs"), "{dup}");
    assert_eq!(f["full_rc"], "3");
    let full = g.read("20-mdev", "full.err");
    assert!(full.contains("no room for mbochs-large on mbochs") && full.contains("holds 4 mdev(s)"), "{full}");
    // What the kernel itself says when full, as our ENOSPC/EUSERS mapping expects.
    assert!(g.read("20-mdev", "kernel-full.err").contains("No space left on device"));
    assert_eq!(f["missing_rc"], "3");
    assert!(g.read("20-mdev", "missing.err").contains("no mdev 0badc0de-0000-4000-8000-000000000000 exists"));
    assert_eq!(f["missing_ok_rc"], "0");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_mdev_bad_input_changes_nothing() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    assert_eq!(f["bad_parent_rc"], "64");
    assert_eq!(f["bad_type_rc"], "3");
    assert_eq!(f["bad_uuid_rc"], "64");
    assert_eq!(f["bad_unknown_rc"], "3");
    assert!(g.read("20-mdev", "bad1.err").contains("invalid mdev parent \"../mbochs\""));
    assert!(g.read("20-mdev", "bad2.err").contains("has no mdev type"));
    assert!(g.read("20-mdev", "bad3.err").contains("invalid mdev UUID \"1234\""));
    assert!(g.read("20-mdev", "bad4.err").contains("parents here: mbochs, mdpy, mtty"));
    assert_eq!(g.read("20-mdev", "before-bad.txt"), g.read("20-mdev", "after-bad.txt"));
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_mdev_32_racing_creates_get_exactly_the_free_slots() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    assert_eq!(f["race_free"], "4");
    assert_eq!(f["race_ok"], "4", "exactly as many creates succeed as slots were free");
    assert_eq!(f["race_devices"], "4", "no extra device leaked");
    assert_eq!(f["race_left"], "0");
    let errs = g.read("20-mdev", "race-errors.txt");
    assert_eq!(errs.lines().filter(|l| l.contains("no room for mbochs-large")).count(), 28, "{errs}");
    assert!(!errs.contains("panicked"));
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_mdevctl_interop_both_ways() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    let ours = &f["ours_uuid"];
    let theirs = &f["theirs_uuid"];
    assert_eq!(f["ours_rc"], "0");
    assert_eq!(f["mdevctl_list_rc"], "0");
    // mdevctl sees our persistent device, active and auto.
    let defined = g.read("20-mdev", "mdevctl-defined.txt");
    assert!(defined.contains(&format!("{ours} mbochs mbochs-medium auto (active)")), "{defined}");
    // We see mdevctl's definition and start it.
    assert_eq!(f["mdevctl_define_rc"], "0");
    let listed = g.json("20-mdev", "ours-defined.json");
    let t = listed["devices"].as_array().unwrap().iter().find(|d| d["uuid"] == theirs.as_str()).expect("mdevctl's definition listed");
    assert_eq!(t["parent"], "mdpy");
    assert_eq!(t["type"], "mdpy-xga");
    assert_eq!(t["start"], "auto");
    assert_eq!(t["active"], false);
    assert_eq!(f["start_theirs_rc"], "0");
    assert_eq!(g.json("20-mdev", "start-theirs.json")["created"], true);
    let after = g.read("20-mdev", "mdevctl-after-start.txt");
    assert!(after.contains(&format!("{theirs} mdpy mdpy-xga auto")), "{after}");
}

/// mdevctl 1.2 and vgpuctl read the same definition files the same way,
/// one file at a time: one mdevctl lists and starts (other keys, `attrs:
/// null`, an unknown `start`) vgpuctl lists as manual and starts too; one
/// mdevctl refuses (a JSON array: it then lists nothing at all) vgpuctl
/// neither lists nor starts, reports it, and `undefine` leaves it.
#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_definitions_read_as_mdevctl_reads_them() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    let (lenient, refused) = (&f["parity_lenient"], &f["parity_refused"]);
    let listed = |file: &str, u: &str| g.json("20-mdev", file)["devices"].as_array().unwrap().iter().find(|d| d["uuid"] == u).cloned();
    // The lenient file: listed and started by both, or by neither.
    let theirs = g.read("20-mdev", "parity-mdevctl-lenient.txt");
    let mdevctl_lists = f["parity_mdevctl_list_lenient"] == "0" && theirs.contains(lenient.as_str());
    assert_eq!(mdevctl_lists, listed("parity-ours-lenient.json", lenient).is_some(), "mdevctl: {theirs}");
    assert_eq!(
        f["parity_mdevctl_start_lenient"] == "0",
        f["parity_start_lenient"] == "0",
        "mdevctl: {}\nvgpuctl: {}",
        g.read("20-mdev", "parity-mdevctl-start-lenient.txt"),
        g.read("20-mdev", "parity-start-lenient.json")
    );
    if mdevctl_lists {
        assert_eq!(listed("parity-ours-lenient.json", lenient).unwrap()["start"], "manual", "an unknown start is manual, as in mdevctl ({theirs})");
        assert_eq!(f["parity_lenient_exists"], "0");
    }
    // The refused file: mdevctl refuses it, so vgpuctl does not list or start it.
    let theirs = g.read("20-mdev", "parity-mdevctl-refused.txt");
    let mdevctl_lists = f["parity_mdevctl_list_refused"] == "0" && theirs.contains(refused.as_str());
    assert!(!mdevctl_lists, "mdevctl 1.2 refuses a JSON array: {theirs}");
    let ours = g.json("20-mdev", "parity-ours-refused.json");
    assert!(listed("parity-ours-refused.json", refused).is_none(), "{ours}");
    assert!(ours["warnings"].to_string().contains(refused.as_str()), "the refused file is reported: {ours}");
    assert_ne!(f["parity_mdevctl_start_refused"], "0", "{}", g.read("20-mdev", "parity-mdevctl-start-refused.txt"));
    assert_ne!(f["parity_start_refused"], "0", "{}", g.read("20-mdev", "parity-start-refused.txt"));
    assert_ne!(f["parity_undefine_refused"], "0");
    assert_eq!(f["parity_refused_kept"], "0", "a file vgpuctl cannot read is never deleted");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_mdev_restore_after_module_reload_waits_for_late_parent() {
    let g = guest();
    g.assert_ran("20-mdev");
    let f = g.facts("20-mdev");
    assert_eq!(f["rmmod_rc"], "0");
    assert_eq!(f["restore_rc"], "0");
    let r = g.json("20-mdev", "restore.json");
    let devs = r["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    for d in devs {
        // mdevctl's udev rule may win the race for a parent; either way it is there.
        let res = d["result"].as_str().unwrap();
        assert!(res == "started" || res == "already_active", "{d}");
    }
    // mdpy came back ~2 s late: restore waited for it instead of failing.
    let ms: u64 = f["restore_ms"].parse().unwrap();
    assert!(ms >= 1500, "restore returned before the late parent appeared ({ms} ms)");
    let present = g.read("20-mdev", "after-restore.txt");
    assert!(present.contains(&f["ours_uuid"]) && present.contains(&f["theirs_uuid"]), "{present}");
    assert_eq!(f["restore_again_rc"], "0");
    let again = g.json("20-mdev", "restore-again.json");
    assert!(again["devices"].as_array().unwrap().iter().all(|d| d["result"] == "already_active"));
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_hook_creates_metadata_mdev_at_start_and_frees_it() {
    let g = guest();
    g.assert_ran("30-hook");
    let f = g.facts("30-hook");
    assert_eq!(f["install_rc"], "0", "{}", g.read("30-hook", "install.txt"));
    assert!(g.read("30-hook", "install.txt").contains("restart it once"));
    assert_eq!(f["libvirtd_rc"], "0");
    assert_eq!(f["validateA_rc"], "0", "generated XML must pass virt-xml-validate: {}", g.read("30-hook", "validate.txt"));
    assert_eq!(f["existsA_before"], "1", "the mdev does not exist before the start");
    assert_eq!(f["startA_rc"], "0", "{}", g.read("30-hook", "startA.txt"));
    assert_eq!(f["existsA_running"], "0", "the hook created the mdev");
    assert_eq!(f["stateA"], "running");
    assert_eq!(f["destroyA_rc"], "0");
    assert_eq!(f["goneA"], "0", "release removed the mdev");
    assert_eq!(g.read("30-hook", "journals-after-A.txt").trim(), "", "no journal left after release");
    // The running VM holds its mdev: list says so and names the VM.
    let list = g.json("30-hook", "listA.json");
    let m = &list["mdevs"][0];
    assert_eq!(m["in_use"], Value::Bool(true), "{m}");
    assert_eq!(m["used_by"]["vm"], "vmA", "{m}");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_hook_starts_plain_mdev_hostdev_from_definition() {
    let g = guest();
    g.assert_ran("30-hook");
    let f = g.facts("30-hook");
    assert_eq!(g.read("30-hook", "vmB-vgpuctl-count.txt").trim(), "0", "vmB has no vgpuctl metadata");
    assert_eq!(f["startB_rc"], "0", "{}", g.read("30-hook", "startB.txt"));
    assert_eq!(f["existsB_running"], "0");
    assert_eq!(f["goneB"], "0", "the hook frees what it created");
    assert_eq!(f["definitionB_kept"], "0", "the definition stays");
    assert_eq!(f["hook_test_rc"], "0");
    assert!(g.read("30-hook", "hook-test-B.txt").contains("mbochs-small on mbochs"));
    // An mdev that cannot be made aborts the start with a clear line.
    assert_eq!(f["startX_rc"], "1");
    let x = g.read("30-hook", "startX.txt");
    assert!(x.contains("does not exist and has no definition"), "{x}");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_hook_16_parallel_starts_for_4_slots_with_churn() {
    let g = guest();
    g.assert_ran("30-hook");
    let f = g.facts("30-hook");
    for round in 1..=3 {
        assert_eq!(f[&format!("running_{round}")], "4", "round {round}");
        assert_eq!(f[&format!("mdevs_{round}")], "4", "round {round}");
        assert_eq!(f[&format!("failed_{round}")], "12", "round {round}");
        assert_eq!(f[&format!("left_{round}")], "0", "round {round}: no mdev leaked after destroy");
    }
    let errs = g.read("30-hook", "start-errors.txt");
    assert_eq!(errs.matches("no room for an mdev of type mbochs-large").count(), 36, "{errs}");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_hook_crash_is_cleaned_by_gc_and_next_start() {
    let g = guest();
    g.assert_ran("30-hook");
    let f = g.facts("30-hook");
    assert_eq!(f["crash_rc"], "137", "the injected fault killed the hook");
    assert_eq!(f["crash_leaked"], "1", "one mdev was made before the crash");
    let j = g.json("30-hook", "crash-journal.json");
    assert_eq!(j["state"], "preparing");
    assert_eq!(f["gc_rc"], "0");
    assert_eq!(g.json("30-hook", "gc.json")["cleaned"][0]["action"], "freed 2 device(s)");
    assert_eq!(f["after_gc"], "0");
    assert_eq!(f["startC_rc"], "0", "{}", g.read("30-hook", "startC.txt"));
    assert_eq!(f["runningC_mdevs"], "2");
    assert_eq!(f["final_mdevs"], "0");
    assert_eq!(g.read("30-hook", "final-journals.txt").trim(), "");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_vm_define_attach_start_destroy_detach_through_libvirt() {
    let g = guest();
    g.assert_ran("30-hook");
    let f = g.facts("30-hook");
    assert_eq!(f["defineD_rc"], "0", "{}", g.read("30-hook", "defineD.txt"));
    assert_eq!(f["attachD_rc"], "0", "{}", g.read("30-hook", "attachD.txt"));
    assert_eq!(f["startD_rc"], "0", "{}", g.read("30-hook", "startD.txt"));
    assert_eq!(f["existsD_running"], "0", "the attached mdev exists while the VM runs");
    let show = g.read("30-hook", "showD.txt");
    assert!(show.contains("mbochs-medium") && show.contains("mdev exists"), "{show}");
    // Live attach: hot-plugged (2 mdevs) or refused with the mdev removed again (1).
    match f["liveD_rc"].as_str() {
        "0" => assert_eq!(f["liveD_mdevs"], "2"),
        _ => {
            assert_eq!(f["liveD_mdevs"], "1", "a refused live attach leaves no mdev behind");
            let live = g.read("30-hook", "liveD.txt");
            assert!(live.contains("libvirt refused to attach"), "{live}");
        }
    }
    assert_eq!(f["afterD_mdevs"], "0", "destroy frees the hook's and the live attach's mdevs");
    assert_eq!(f["detachD_rc"], "0", "{}", g.read("30-hook", "detachD.txt"));
    assert_eq!(g.read("30-hook", "afterD-refs.txt").trim(), "0");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_kernel_apply_reload_apply_gives_the_same_uuids_back() {
    let g = guest();
    g.assert_ran("25-apply");
    let f = g.facts("25-apply");
    assert_eq!(f["bad_type_rc"], "64", "a type given by a name is refused in the config: {}", g.read("25-apply", "plan-bad-type.txt"));
    assert_eq!(f["check1_rc"], "2", "changes pending");
    assert_eq!(f["apply1_rc"], "0", "{}", g.read("25-apply", "apply1.txt"));
    assert_eq!(f["check2_rc"], "0", "converged");
    let u1 = g.read("25-apply", "uuids1.txt");
    assert_eq!(u1.trim(), "aaaaaaaa-0000-4000-8000-000000000001\naaaaaaaa-0000-4000-8000-000000000002");
    assert_eq!(f["check3_rc"], "2", "after the reload the host differs: {}", g.read("25-apply", "check3.txt"));
    assert_eq!(f["apply2_rc"], "0", "{}", g.read("25-apply", "apply2.txt"));
    assert_eq!(g.read("25-apply", "uuids2.txt"), u1, "the same UUIDs come back");
    assert_eq!(f["check4_rc"], "0");
}
