//! Full passthrough on the simulated passthrough host: group viability,
//! boot-VGA refusal, prepare/release round trip with the HDMI audio function,
//! and a failed prepare that puts everything back.

mod common;

use common::sim::SimHost;

fn driver(h: &SimHost, a: &str) -> String {
    std::fs::read_link(h.path(&format!("/sys/bus/pci/devices/{a}/driver")))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "none".into())
}

#[test]
fn test_non_viable_group_lists_its_blockers() {
    let h = SimHost::new("passthrough");
    let o = h.run(&["passthrough", "check", "0000:e2:00.0", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["group"]["viable"], false);
    assert_eq!(v["group"]["blockers"][0], "0000:e3:00.0 (0x010802) is bound to nvme");
    let e = h.fails(&["passthrough", "prepare", "0000:e2:00.0"], 3);
    assert!(e.contains("is not viable") && e.contains("nvme"), "{e}");
    assert_eq!(driver(&h, "0000:e3:00.0"), "nvme", "nothing moved");
}

#[test]
fn test_boot_vga_refused_and_forced_round_trip_with_audio() {
    let h = SimHost::new("passthrough");
    let before = h.snapshot();
    let e = h.fails(&["passthrough", "prepare", "0000:01:00.0"], 3);
    assert!(e.contains("boot display"), "{e}");
    h.assert_unchanged(&before, "a refused prepare");
    let r = h.json(&["passthrough", "prepare", "0000:01:00.0", "--force", "--json"]);
    assert_eq!(r["group"]["viable"], true);
    assert_eq!(r["group"]["functions"].as_array().unwrap().len(), 2, "GPU and its HDMI audio move together");
    assert_eq!(r["changed"], true);
    let moved: Vec<(&str, &str)> = r["moved"].as_array().unwrap().iter().map(|m| (m["address"].as_str().unwrap(), m["to"].as_str().unwrap())).collect();
    assert_eq!(moved, [("0000:01:00.0", "vfio-pci"), ("0000:01:00.1", "vfio-pci")], "what moved, each once: {r}");
    assert_eq!(driver(&h, "0000:01:00.0"), "vfio-pci");
    assert_eq!(driver(&h, "0000:01:00.1"), "vfio-pci");
    assert!(h.path("/dev/vfio/1").exists());
    // Prepare again: already there, nothing moved.
    let again = h.json(&["passthrough", "prepare", "0000:01:00.0", "--force", "--json"]);
    assert_eq!((again["changed"].as_bool(), again["moved"].as_array().map(Vec::len)), (Some(false), Some(0)), "{again}");
    assert!(h.ok(&["passthrough", "prepare", "0000:01:00.0", "--force"]).contains("already on vfio-pci; nothing to do"));
    let released = h.ok(&["passthrough", "release", "0000:01:00.0"]);
    assert!(released.contains("0000:01:00.0: vfio-pci -> nvidia") && released.contains("0000:01:00.1: vfio-pci -> snd_hda_intel"), "{released}");
    assert_eq!(driver(&h, "0000:01:00.0"), "nvidia");
    assert_eq!(driver(&h, "0000:01:00.1"), "snd_hda_intel");
    assert!(!h.path("/dev/vfio/1").exists());
    let e = h.fails(&["passthrough", "release", "0000:01:00.0"], 3);
    assert!(e.contains("not prepared by vgpuctl"), "{e}");
}

#[test]
fn test_failed_prepare_puts_every_function_back() {
    let h = SimHost::new("passthrough");
    // Writes: the record of each function's driver (1), unbind, override,
    // probe for the GPU (2-4), then the audio's unbind (5) fails.
    let o = h.cmd().args(["passthrough", "prepare", "0000:01:00.0", "--force"]).env("VGPUCTL_FAULT", "write:5:EIO").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(driver(&h, "0000:01:00.0"), "nvidia", "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(driver(&h, "0000:01:00.1"), "snd_hda_intel");
    assert!(!h.path("/run/vgpuctl/passthrough/0000:01:00.0.json").exists());
    let o = std::fs::read_to_string(h.path("/sys/bus/pci/devices/0000:01:00.0/driver_override")).unwrap();
    assert_eq!(o.trim(), "(null)");
}

/// Every host write of `passthrough prepare`, the state record included,
/// fails in turn: each time both functions are back on their drivers and
/// the host is exactly as before.
#[test]
fn test_prepare_each_write_fails_in_turn() {
    let h = SimHost::new("passthrough");
    let mut n = 1;
    loop {
        let before = h.snapshot();
        let o = h.cmd().args(["passthrough", "prepare", "0000:01:00.0", "--force"]).env("VGPUCTL_FAULT", format!("write:{n}:EIO")).output().unwrap();
        if o.status.success() {
            break;
        }
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
        assert_eq!((driver(&h, "0000:01:00.0"), driver(&h, "0000:01:00.1")), ("nvidia".to_string(), "snd_hda_intel".to_string()), "write {n}");
        h.assert_unchanged(&before, &format!("prepare failing at write {n}"));
        n += 1;
        assert!(n < 40, "prepare never succeeded");
    }
    assert!(n > 5, "the record and at least two functions' moves were failed in turn ({n})");
    assert_eq!(driver(&h, "0000:01:00.0"), "vfio-pci");
}

#[test]
fn test_not_a_gpu_and_unknown_devices() {
    let h = SimHost::new("passthrough");
    let e = h.fails(&["passthrough", "prepare", "0000:e3:00.0"], 3);
    assert!(e.contains("is not a GPU (class 0x010802)"), "{e}");
    // An address that is not there names the closest GPU there is.
    let e = h.fails(&["passthrough", "check", "0000:81:00.1"], 3);
    assert!(e.contains("no PCI device 0000:81:00.1 here; the closest GPU is 0000:81:00.0 (L40S)"), "{e}");
    h.fails(&["passthrough", "check", "0000:99:00.0/.."], 64);
    // An L40S alone in its group on vfio-pci: viable as is.
    let v = h.json(&["passthrough", "check", "0000:41:00.0", "--json"]);
    assert_eq!(v["group"]["viable"], true);
}
