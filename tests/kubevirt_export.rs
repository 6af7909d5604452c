//! `vgpuctl export --format kubevirt` on every simulated profile, validated
//! against the KubeVirt CRD's own OpenAPI schema (from KubeVirt's published
//! manifests: tests/fixtures/kubevirt/kubevirt-cr-openapi.json, its source in
//! `$comment`), made strict so a field the CRD does not have — which the API
//! server would silently prune — fails here.

mod common;

use common::contract::strict;
use common::sim::SimHost;
use serde_json::Value;

fn crd_schema() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kubevirt/kubevirt-cr-openapi.json")).unwrap();
    strict(serde_json::from_str(&text).unwrap())
}

fn valid(cr: &Value, what: &str) {
    let schema = crd_schema();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(cr).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: not a valid KubeVirt CR:\n  {}\n{cr:#}", errors.join("\n  "));
}

fn export(h: &SimHost, cfg: &str) -> (Option<i32>, Value, String) {
    let f = h.root.parent().unwrap().join("host.toml");
    std::fs::write(&f, cfg).unwrap();
    let o = h.run(&["export", "--format", "kubevirt", "-f", f.to_str().unwrap(), "--node", "gpu-node-1"]);
    let cr = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code(), cr, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn test_kubevirt_export_is_a_valid_cr_on_every_profile() {
    // A100, legacy mdev on VFs: the types by their sysfs names, created on this node.
    let a = SimHost::new("a100x4-mdev");
    let (code, cr, err) = export(
        &a,
        "[[gpu]]\nselect = \"0000:17:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"A100D-4C\", count = 1 }]\n\n[[gpu]]\nselect = \"0000:65:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"A100D-8C\", count = 1 }, { type = \"A100D-4C\", count = 1 }]\n",
    );
    assert_eq!(code, Some(0), "{err}");
    valid(&cr, "a100x4-mdev");
    let c = &cr["spec"]["configuration"];
    assert_eq!(
        c["permittedHostDevices"]["mediatedDevices"],
        serde_json::json!([{ "mdevNameSelector": "GRID A100D-4C", "resourceName": "nvidia.com/GRID_A100D-4C" }])
    );
    let node = &c["mediatedDevicesConfiguration"]["nodeMediatedDeviceTypes"][0];
    assert_eq!(node["nodeSelector"]["kubernetes.io/hostname"], "gpu-node-1");
    assert_eq!(node["mediatedDeviceTypes"], serde_json::json!(["nvidia-709"]));
    assert!(err.contains("not exported: 0000:65:00.0"), "the mixed-size GPU is named: {err}");
    // The selector is what sysfs says the type is called.
    let listed = a.json(&["list", "--json"]);
    let names: Vec<&str> = listed["mdev_parents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["types"].as_array().unwrap())
        .filter(|t| t["id"] == "nvidia-709")
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(!names.is_empty() && names.iter().all(|n| *n == "GRID A100D-4C"), "{names:?}");

    // T4, mdev on the GPU itself: two GPUs, two types.
    let t = SimHost::new("t4x2-mdev");
    let (code, cr, err) = export(&t, "[[gpu]]\nselect = \"0000:3b:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"T4-4Q\", count = 1 }]\n\n[[gpu]]\nselect = \"0000:d8:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"T4-8Q\", count = 1 }]\n");
    assert_eq!(code, Some(0), "{err}");
    valid(&cr, "t4x2-mdev");
    let sel: Vec<&str> = cr["spec"]["configuration"]["permittedHostDevices"]["mediatedDevices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mdevNameSelector"].as_str().unwrap())
        .collect();
    assert_eq!(sel, ["GRID T4-4Q", "GRID T4-8Q"]);

    // Passthrough GPUs: by vendor:device, one entry per model.
    let p = SimHost::new("passthrough");
    let (code, cr, err) = export(&p, "[[gpu]]\nselect = \"model:L40S\"\nmode = \"passthrough\"\n");
    assert_eq!(code, Some(0), "{err}");
    valid(&cr, "passthrough");
    assert_eq!(
        cr["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"],
        serde_json::json!([{ "pciVendorSelector": "10DE:26B9", "resourceName": "nvidia.com/L40S" }])
    );
    assert!(cr["spec"]["configuration"].get("mediatedDevicesConfiguration").is_none());

    // H100, vGPU 17+ vendor-specific VFIO: said, not exported (exit 3, nothing
    // printed); a passthrough H100 beside it is exported.
    let v = SimHost::new("h100x8-vfio");
    v.ok(&["sriov", "enable", "all"]);
    let (code, cr, err) = export(&v, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-20C\", count = 1 }]\n");
    assert_eq!(code, Some(3), "{cr}");
    assert!(cr.is_null() && err.contains("vendor-specific VFIO"), "{err}");
    let (code, cr, err) = export(
        &v,
        "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-20C\", count = 1 }]\n\n[[gpu]]\nselect = \"0000:db:00.0\"\nmode = \"passthrough\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    valid(&cr, "h100x8-vfio");
    assert_eq!(cr["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"][0]["resourceName"], "nvidia.com/H100_80GB_HBM3");
    assert!(err.contains("not exported: 0000:18:00.0"), "{err}");

    // The schema is strict enough to catch a wrong field.
    let mut bad = cr.clone();
    bad["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"][0]["pciVendorSelecter"] = Value::from("10DE:2330");
    let schema = crd_schema();
    assert!(!jsonschema::validator_for(&schema).unwrap().is_valid(&bad), "a misspelt field must fail");
}
