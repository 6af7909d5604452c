//! Every template's output, as snapshots, and every full domain through
//! libvirt's own schema (virt-xml-validate), hostile names included.

mod common;

use common::sim::SimHost;

fn validate(xml: &str) {
    let Ok(which) = std::process::Command::new("sh").args(["-c", "command -v virt-xml-validate"]).output() else { return };
    if !which.status.success() {
        assert!(std::env::var_os("CI").is_none(), "virt-xml-validate is missing (libxml2-utils, libvirt-clients)");
        eprintln!("virt-xml-validate not installed: schema check skipped");
        return;
    }
    let d = common::sim::tempdir();
    let f = d.path().join("d.xml");
    std::fs::write(&f, xml).unwrap();
    let o = std::process::Command::new("virt-xml-validate").arg(&f).arg("domain").output().unwrap();
    assert!(o.status.success(), "{}\n{xml}", String::from_utf8_lossy(&o.stderr));
}

/// UUIDs are random per run; the snapshot shows their place.
fn stable(xml: &str) -> String {
    let mut out = String::new();
    for line in xml.lines() {
        let mut l = line.to_string();
        while let Some(i) = l.find(|c: char| c.is_ascii_hexdigit()).and_then(|_| find_uuid(&l)) {
            l.replace_range(i..i + 36, "[UUID]");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn find_uuid(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(35)).find(|&i| {
        s.get(i..i + 36).is_some_and(|w| w.bytes().enumerate().all(|(k, c)| if matches!(k, 8 | 13 | 18 | 23) { c == b'-' } else { c.is_ascii_hexdigit() }))
    })
}

#[test]
fn test_every_template_snapshot_and_schema() {
    let pt = SimHost::new("passthrough");
    let t4 = SimHost::new("t4x2-mdev");
    let h100 = SimHost::new("h100x8-vfio");
    h100.ok(&["sriov", "enable", "0000:18:00.0"]);
    let hostile = "vm 'one' <&> \"two\"";
    let cases: Vec<(&str, &SimHost, Vec<&str>)> = vec![
        (
            "domain_passthrough_gpu_audio_rom",
            &pt,
            vec![
                "--name",
                hostile,
                "--passthrough",
                "0000:01:00.0",
                "--force",
                "--rom-file",
                "/var/lib/libvirt/rom/a6000 & co.rom",
                "--disk",
                "/var/lib/libvirt/images/it's <here>.qcow2",
            ],
        ),
        ("domain_passthrough_rom_bar_off", &pt, vec!["--name", "pt2", "--passthrough", "0000:41:00.0", "--rom-bar", "off", "--domain-type", "qemu"]),
        ("domain_legacy_vgpu_display", &t4, vec!["--name", "t4", "--vgpu", "T4-4Q", "--display", "on", "--disk", "none"]),
        ("domain_mdev_type_ramfb", &t4, vec!["--name", "mt", "--mdev-type", "nvidia-226", "--display", "on", "--ramfb", "on", "--disk", "none"]),
        ("domain_vendor_vf", &h100, vec!["--name", "h", "--vgpu", "H100-20C", "--vgpu", "H100-20C", "--disk", "none"]),
        ("domain_windows_guest", &t4, vec!["--name", "win", "--os", "windows", "--vgpu", "T4-8Q", "--disk", "none"]),
        ("domain_linux_guest", &h100, vec!["--name", "lin", "--os", "linux", "--vgpu", "H100-10C", "--disk", "none"]),
    ];
    for (name, host, args) in cases {
        let mut full = vec!["vm", "xml", "--uuid", "c7a5fdbd-cdaf-9455-926a-d65c16db1809"];
        full.extend(args);
        let xml = host.ok(&full);
        validate(&xml);
        insta::assert_snapshot!(name, stable(&xml));
    }
    // A Windows guest cannot have a MIG-backed vGPU: refused before anything is chosen.
    h100.ok(&["mig", "enable", "0000:2a:00.0"]);
    let e = h100.fails(&["vm", "xml", "--name", "w", "--os", "windows", "--vgpu", "H100-3-40C"], 64);
    assert!(e.contains("Linux guests only") && e.contains("H100-3-40C"), "{e}");
    // Fragments alone, as `virsh attach-device` takes them.
    let frag = pt.ok(&["vm", "hostdev-xml", "--passthrough", "0000:41:00.0"]);
    insta::assert_snapshot!("hostdev_pci", frag);
    let frag = h100.ok(&["vm", "hostdev-xml", "--vgpu", "H100-10C"]);
    insta::assert_snapshot!("hostdev_vf", frag);
}

#[test]
fn test_names_and_paths_that_cannot_be_escaped_are_refused() {
    let pt = SimHost::new("passthrough");
    for (args, needle) in [
        (vec!["vm", "xml", "--name", "a/b"], "must not contain '/'"),
        (vec!["vm", "xml", "--name", "a\nb"], "control characters"),
        (vec!["vm", "xml", "--name", ""], "1-200 bytes"),
        (vec!["vm", "xml", "--name", "x", "--disk", "relative.qcow2"], "absolute path"),
        (vec!["vm", "xml", "--name", "x", "--disk", "/var/../etc/shadow"], "'..'"),
        (vec!["vm", "xml", "--name", "x", "--passthrough", "0000:e3:00.0"], "is not a GPU"),
        (vec!["vm", "xml", "--name", "x", "--passthrough", "0000:01:00.0"], "boot display"),
        (vec!["vm", "xml", "--name", "x", "--passthrough", "0000:41:00.0", "--rom-file", "../rom"], "absolute path"),
    ] {
        let o = pt.run(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}
