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
fn test_real_kernel_list_reports_the_three_sample_parents() {
    let Some(g) = guest() else { return };
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
fn test_real_kernel_host_without_nvidia_is_not_an_error() {
    let Some(g) = guest() else { return };
    g.assert_ran("10-inventory");
    let list = g.json("10-inventory", "list-fresh.json");
    assert!(list["nvidia_driver"].is_null());
    assert!(list["warnings"].as_array().unwrap().is_empty(), "warnings: {}", list["warnings"]);
    let text = g.read("10-inventory", "list-fresh.txt");
    assert!(text.contains("NVIDIA driver: not loaded"), "{text}");
}

#[test]
fn test_real_kernel_created_mdevs_are_listed_with_iommu_groups() {
    let Some(g) = guest() else { return };
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
    assert_eq!(
        seen_types,
        vec![("mbochs".into(), "mbochs-large".into()), ("mdpy".into(), "mdpy-vga".into()), ("mtty".into(), "mtty-2".into())]
    );
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
fn test_real_kernel_missing_root_is_a_clear_error() {
    let Some(g) = guest() else { return };
    g.assert_ran("10-inventory");
    assert_eq!(g.read("10-inventory", "missing-root.rc").trim(), "1");
    let err = g.read("10-inventory", "missing-root.err");
    assert!(err.contains("/nonexistent") && err.contains("--root"), "{err}");
}
