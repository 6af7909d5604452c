//! Real vfio-pci passthrough in a guest with an emulated IOMMU and spare
//! display devices (tests/real-kernel/passthrough/).

mod common;

use common::guest::passthrough_guest;

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_passthrough_prepare_release_probe_and_refusals() {
    let g = passthrough_guest();
    g.assert_ran("40-passthrough");
    let f = g.facts("40-passthrough");
    let devices = g.read("40-passthrough", "devices.txt");
    assert_eq!(f["modprobe_rc"], "0");
    assert_eq!(f["bochs_before"], "bochs-drm", "{devices}");
    assert_eq!(f["check_bochs_rc"], "0");
    assert_eq!(g.json("40-passthrough", "check-bochs.json")["group"]["viable"], true);
    assert_eq!(f["prepare_rc"], "0", "{}", g.read("40-passthrough", "prepare.err"));
    assert_eq!(f["bochs_prepared"], "vfio-pci");
    let prep = g.json("40-passthrough", "prepare.json");
    assert_eq!(prep["changed"], true, "{prep}");
    assert!(prep["moved"].as_array().unwrap().iter().any(|m| m["from"] == "bochs-drm" && m["to"] == "vfio-pci"), "what moved: {prep}");
    assert_eq!(f["vfio_node"], "0", "/dev/vfio/<group> appears");
    assert_eq!(f["probe_rc"], "0", "{}", g.read("40-passthrough", "probe.err"));
    let probe = g.json("40-passthrough", "probe.json");
    assert!(!probe["probe"]["regions"].as_array().unwrap().is_empty(), "{probe}");
    assert_eq!(f["release_rc"], "0", "{}", g.read("40-passthrough", "release.txt"));
    assert_eq!(f["bochs_released"], "bochs-drm", "given back to its driver");
    // The std VGA is the boot display: refused, left alone.
    assert_eq!(f["vga_rc"], "3");
    assert!(g.read("40-passthrough", "vga.txt").contains("boot display"));
    assert_eq!(f["vga_driver"], "bochs-drm");
    // lpc/ahci/smbus share one group: reported non-viable with its members.
    assert_eq!(f["lpc_rc"], "1");
    let lpc = g.json("40-passthrough", "lpc.json");
    assert_eq!(lpc["group"]["viable"], false);
    assert!(lpc["group"]["members"].as_array().unwrap().len() >= 3, "{lpc}");
    assert!(lpc["group"]["blockers"].as_array().unwrap().iter().any(|b| b.as_str().unwrap().contains("ahci")), "{lpc}");
}

#[test]
#[ignore = "boots the Debian kernel under QEMU TCG (virtme-ng, linux-source, root); scripts/test.sh installs the stack and runs it"]
fn test_real_passthrough_vm_defined_by_vgpuctl_runs_and_gives_the_device_back() {
    let g = passthrough_guest();
    g.assert_ran("40-passthrough");
    let f = g.facts("40-passthrough");
    assert_eq!(f["define_rc"], "0", "{}", g.read("40-passthrough", "define.txt"));
    let xml = g.read("40-passthrough", "pt.xml");
    assert!(xml.contains("managed='yes'") && xml.contains("slot='0x0b'"), "{xml}");
    assert_eq!(f["start_rc"], "0", "{}", g.read("40-passthrough", "start.txt"));
    assert_eq!(f["bochs_running"], "vfio-pci", "libvirt moved it while the VM runs");
    assert!(g.read("40-passthrough", "show.txt").contains("passthrough 0000:00:0b.0"));
    assert_eq!(f["bochs_after_vm"], "bochs-drm", "and gave it back after destroy");
    assert_eq!(f["badvm_rc"], "3", "the boot VGA cannot be put in a VM definition");
    assert!(g.read("40-passthrough", "badvm.txt").contains("boot display"));
}
