//! `vgpuctl export --format nova` on the simulated hosts: what Nova can be
//! given is exported (one mdev type per GPU, its VFs on SR-IOV GPUs, the
//! cap Nova 2024.1+ needs there), what it cannot is said, and the output is
//! read back with Nova's own option definitions (the `nova` package from
//! PyPI through oslo.config) for every release form.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::sim::SimHost;
use serde_json::Value;

const A100: &str = r#"
[[gpu]]
select = "0000:17:00.0"
mode = "vgpu"
vgpus = [{ type = "A100D-4C", count = 2 }]

[[gpu]]
select = "0000:65:00.0"
mode = "vgpu"
vgpus = [{ type = "A100D-20C", count = 1 }]

[[gpu]]
select = "0000:ca:00.0"
mode = "vgpu"
vgpus = [{ type = "A100D-20C", count = 1 }]

[[gpu]]
select = "0000:e3:00.0"
mode = "vgpu"
heterogeneous = true
vgpus = [{ type = "A100D-4C", count = 1 }, { type = "A100D-8C", count = 1 }]
"#;

const T4: &str = r#"
[[gpu]]
select = "0000:3b:00.0"
mode = "vgpu"
vgpus = [{ type = "T4-4Q", count = 4 }]

[[gpu]]
select = "0000:d8:00.0"
mode = "vgpu"
vgpus = [{ type = "T4-8Q", count = 2 }]
"#;

fn config(h: &SimHost, text: &str) -> String {
    let p = h.root.parent().unwrap().join("host.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// The A100 host: its VFs are the parents; the mixed-size GPU is named, not exported.
fn a100() -> (SimHost, String) {
    let h = SimHost::new("a100x4-mdev");
    let f = config(&h, A100);
    (h, f)
}

/// What the export should say, from the host's own listing: per mdev type,
/// the parent addresses and the sum of the documented per-GPU maxima.
fn expected_a100(h: &SimHost) -> BTreeMap<String, (Vec<String>, u64)> {
    let list = h.json(&["list", "--json"]);
    let types = h.json(&["types", "--json"]);
    let vfs = |gpu: &str| -> Vec<String> {
        let g = list["gpus"].as_array().unwrap().iter().find(|g| g["address"] == gpu).unwrap();
        g["sriov"]["vfs"].as_array().unwrap().iter().filter(|v| v["mdev_parent"] == true).map(|v| v["address"].as_str().unwrap().to_string()).collect()
    };
    let max = |gpu: &str, name: &str| -> u64 {
        let g = types["gpus"].as_array().unwrap().iter().find(|g| g["gpu"] == gpu).unwrap();
        g["types"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["max_instances"].as_u64().unwrap()
    };
    let mut want = BTreeMap::new();
    want.insert("nvidia-709".to_string(), (vfs("0000:17:00.0"), max("0000:17:00.0", "A100D-4C")));
    let mut both = vfs("0000:65:00.0");
    both.extend(vfs("0000:ca:00.0"));
    want.insert("nvidia-713".to_string(), (both, max("0000:65:00.0", "A100D-20C") + max("0000:ca:00.0", "A100D-20C")));
    want
}

#[test]
fn test_export_gives_nova_one_type_per_gpu_and_says_what_it_cannot() {
    let (h, f) = a100();
    let o = h.run(&["export", "--format", "nova", "-f", &f]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("[devices]\nenabled_mdev_types = nvidia-709, nvidia-713\n"), "{text}");
    assert!(text.contains("[mdev_nvidia-713]") && text.contains("mdev_class = VGPU") && text.contains("max_instances = 8"), "{text}");
    // The mixed-size GPU is named with the reason, in the file and on stderr.
    assert!(text.contains("# not exported: 0000:e3:00.0: the config gives it 2 types"), "{text}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not exported: 0000:e3:00.0"));
    assert!(!text.contains("0000:e3:00.4"), "no address of the mixed-size GPU: {text}");
    // Older releases: the names they read; max_instances only from 2024.1.
    let old = h.ok(&["export", "--format", "nova", "-f", &f, "--nova-release", "wallaby"]);
    assert!(
        old.contains("enabled_vgpu_types = ") && old.contains("[vgpu_nvidia-709]") && !old.contains("mdev_class") && !old.contains("max_instances"),
        "{old}"
    );
    let xena = h.ok(&["export", "--format", "nova", "-f", &f, "--nova-release", "26.1.0"]);
    assert!(xena.contains("[mdev_nvidia-709]") && xena.contains("mdev_class = VGPU") && !xena.contains("max_instances"), "{xena}");
    // A GPU with no SR-IOV: the GPU itself is the parent, no cap needed.
    let t4 = SimHost::new("t4x2-mdev");
    let t = t4.ok(&["export", "--format", "nova", "-f", &config(&t4, T4)]);
    assert!(t.contains("enabled_mdev_types = nvidia-226, nvidia-227") && t.contains("[mdev_nvidia-226]\ndevice_addresses = 0000:3b:00.0\n"), "{t}");
    assert!(!t.contains("max_instances"), "{t}");
    // vGPU 17+ vendor-specific VFIO: said plainly, nothing printed, exit 3.
    let v = SimHost::new("h100x8-vfio");
    let cfg = config(&v, "[[gpu]]\nselect = \"all\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-20C\", count = 1 }]\n");
    // Before the VFs exist the interface cannot be told: said so.
    assert!(v.fails(&["export", "--format", "nova", "-f", &cfg], 3).contains("VFs are not enabled"));
    v.ok(&["sriov", "enable", "all"]);
    let o = v.run(&["export", "--format", "nova", "-f", &cfg]);
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("vendor-specific VFIO") && e.contains("PCI passthrough"), "{e}");
    // MIG-backed types and passthrough-only hosts: nothing Nova's mdev support can take.
    let mig = config(&v, "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"vgpu\"\nvgpus = [{ type = \"H100-3-40C\", count = 1 }]\n");
    assert!(v.fails(&["export", "--format", "nova", "-f", &mig], 3).contains("MIG-backed"));
    let p = SimHost::new("passthrough");
    let pt = config(&p, "[[gpu]]\nselect = \"model:L40S\"\nmode = \"passthrough\"\n");
    assert!(p.fails(&["export", "--format", "nova", "-f", &pt], 3).contains("puts no GPU in vgpu mode"));
    // Bad input: a release Nova never had, and the TOML export takes no Nova options.
    assert!(h.fails(&["export", "--format", "nova", "--nova-release", "queens"], 64).contains("unknown Nova release"));
    h.fails(&["export", "--nova-release", "2024.1"], 64);
}

/// The python with the nova package: VGPUCTL_NOVA_PYTHON, else the venv
/// scripts/install-test-deps.sh makes, else python3.
fn nova_python() -> String {
    if let Ok(p) = std::env::var("VGPUCTL_NOVA_PYTHON") {
        return p;
    }
    let venv = "/opt/vgpuctl-test/nova/bin/python";
    if std::path::Path::new(venv).exists() {
        return venv.into();
    }
    "python3".into()
}

fn read_with_nova(conf: &str) -> Result<Value, String> {
    let dir = common::sim::tempdir();
    let path = dir.path().join("nova.conf");
    std::fs::write(&path, conf).unwrap();
    let o =
        Command::new(nova_python()).arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nova/read_nova_conf.py")).arg(&path).output().expect("python with nova");
    if o.status.success() {
        Ok(serde_json::from_slice(&o.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
#[ignore = "needs the nova package from PyPI (scripts/install-test-deps.sh installs it in /opt/vgpuctl-test/nova)"]
fn test_nova_reads_the_export_with_its_own_options_in_every_release_form() {
    let (h, f) = a100();
    let want = expected_a100(&h);
    for release in ["wallaby", "xena", "2024.1"] {
        let conf = h.ok(&["export", "--format", "nova", "-f", &f, "--nova-release", release]);
        let got = read_with_nova(&conf).unwrap_or_else(|e| panic!("{release}: {e}\n{conf}"));
        let types: Vec<&str> = got["enabled_mdev_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(types, want.keys().map(String::as_str).collect::<Vec<_>>(), "{release}: {got}");
        for (t, (addresses, max)) in &want {
            let g = &got["groups"][t];
            let mut a: Vec<String> = g["device_addresses"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
            a.sort();
            let mut w = addresses.clone();
            w.sort();
            assert_eq!(a, w, "{release} {t}: the addresses round-trip");
            assert_eq!(g["mdev_class"], "VGPU", "{release} {t}");
            let cap = if release == "2024.1" { Value::from(*max) } else { Value::Null };
            assert_eq!(g["max_instances"], cap, "{release} {t}");
        }
    }
    // The T4 host, whose GPUs are their own parents.
    let t4 = SimHost::new("t4x2-mdev");
    let conf = t4.ok(&["export", "--format", "nova", "-f", &config(&t4, T4)]);
    let got = read_with_nova(&conf).unwrap();
    assert_eq!(got["groups"]["nvidia-226"]["device_addresses"], serde_json::json!(["0000:3b:00.0"]), "{got}");
    assert_eq!(got["groups"]["nvidia-227"]["device_addresses"], serde_json::json!(["0000:d8:00.0"]), "{got}");
}
