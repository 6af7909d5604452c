//! The CLI on simulated hosts and on hostile trees: snapshots of `list` and
//! `types` for every profile, and garbage that must be reported, not fatal.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

fn vgpuctl(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("VGPUCTL_ROOT")
        // Tables fit COLUMNS when it is set; snapshots are of the unwrapped form.
        .env_remove("COLUMNS")
        .env("VGPUCTL_NVIDIA_SMI", "/nonexistent/nvidia-smi")
        .output()
        .expect("run vgpuctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Temporary folders on tmpfs when there is one: a simulated host is
/// thousands of small files, and a disk-backed /tmp makes that 50x slower.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Keeps the first two VFs per GPU and the first two mdev parents, so the
/// snapshot shows every field without 300 identical VF entries.
fn trimmed(mut v: serde_json::Value) -> serde_json::Value {
    for g in v["gpus"].as_array_mut().unwrap() {
        if let Some(vfs) = g["sriov"]["vfs"].as_array_mut() {
            vfs.truncate(2);
        }
    }
    v["mdev_parents"].as_array_mut().unwrap().truncate(2);
    v
}

fn sim(profile: &str) -> tempfile::TempDir {
    let dir = tempdir();
    let root = dir.path().join("host");
    let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl")).args(["sim", "create"]).arg(&root).args(["--profile", profile]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}

fn redact(text: &str, root: &Path) -> String {
    text.replace(&root.display().to_string(), "[ROOT]")
}

#[test]
fn test_list_snapshots_every_profile() {
    for profile in ["h100x8-vfio", "a100x4-mdev", "t4x2-mdev", "passthrough"] {
        let dir = sim(profile);
        let root = dir.path().join("host");
        let table = vgpuctl(&root, &["list"]);
        assert!(table.status.success(), "{profile}: {}", stderr(&table));
        assert_eq!(stderr(&table), "", "{profile}: no warnings on a clean simulated host");
        insta::assert_snapshot!(format!("list_table_{profile}"), stdout(&table));
        let json = vgpuctl(&root, &["list", "--json"]);
        assert!(json.status.success());
        let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["simulated_profile"], profile);
        let shown = serde_json::to_string_pretty(&trimmed(v)).unwrap();
        insta::assert_snapshot!(format!("list_json_{profile}"), redact(&shown, &root));
    }
}

#[test]
fn test_types_snapshots_every_profile() {
    for profile in ["h100x8-vfio", "a100x4-mdev", "t4x2-mdev", "passthrough"] {
        let dir = sim(profile);
        let root = dir.path().join("host");
        let o = vgpuctl(&root, &["types"]);
        assert!(o.status.success(), "{}", stderr(&o));
        insta::assert_snapshot!(format!("types_table_{profile}"), stdout(&o));
    }
}

#[test]
fn test_list_json_h100_structure() {
    let dir = sim("h100x8-vfio");
    let o = vgpuctl(&dir.path().join("host"), &["sriov", "enable", "all"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&vgpuctl(&dir.path().join("host"), &["list", "--json"]))).unwrap();
    let gpus = v["gpus"].as_array().unwrap();
    let h100: Vec<_> = gpus.iter().filter(|g| g["name"] == "H100 80GB HBM3").collect();
    assert_eq!(h100.len(), 8);
    for g in &h100 {
        let vfs = g["sriov"]["vfs"].as_array().unwrap();
        assert_eq!(vfs.len(), 32);
        assert_eq!(g["sriov"]["total_vfs"], 32);
        assert_eq!(g["mig"]["current"], "disabled");
        for vf in vfs {
            assert_eq!(vf["vgpu"]["current_type"], serde_json::Value::Null);
            assert_eq!(vf["vgpu"]["creatable"].as_array().unwrap().len(), 8);
        }
    }
    let boot: Vec<_> = gpus.iter().filter(|g| g["boot_vga"] == true).collect();
    assert_eq!(boot.len(), 1);
    assert_eq!(boot[0]["vendor"], "ASPEED");
    assert_eq!(v["nvidia_driver"]["vgpu_host"], true);
}

#[test]
fn test_types_parent_filter_and_bad_parent() {
    let dir = sim("a100x4-mdev");
    let root = dir.path().join("host");
    let o = vgpuctl(&root, &["types", "--json", "--parent", "00000000:17:00.4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["mdev"].as_array().unwrap().len(), 1);
    assert_eq!(v["mdev"][0]["parent"], "0000:17:00.4");
    let o = vgpuctl(&root, &["types", "--json", "--parent", "0000:17:00.0"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["gpus"].as_array().unwrap().len(), 1);
    assert_eq!(v["gpus"][0]["interface"], "legacy_mdev_vfs");
    assert_eq!(v["gpus"][0]["slots"], 20);
    for bad in ["../17:00.4", "0000:17:00.9", "a/b"] {
        let o = vgpuctl(&root, &["types", "--parent", bad]);
        assert_eq!(o.status.code(), Some(64), "{bad}");
        assert!(stderr(&o).contains("invalid mdev parent"), "{}", stderr(&o));
    }
}

#[test]
fn test_missing_root_is_a_clear_error() {
    let o = vgpuctl(Path::new("/nonexistent/vgpuctl"), &["list"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("/nonexistent/vgpuctl") && e.contains("--root"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn test_root_that_is_a_file_is_a_clear_error() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let o = vgpuctl(f.path(), &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
}

#[test]
fn test_empty_root_is_an_empty_host() {
    let dir = tempdir();
    let o = vgpuctl(dir.path(), &["list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["gpus"].as_array().unwrap().is_empty());
    assert!(v["warnings"][0].as_str().unwrap().contains("no sys/"));
}

#[test]
fn test_pci_devices_that_is_a_file_is_a_clear_error() {
    let dir = tempdir();
    fs::create_dir_all(dir.path().join("sys/bus/pci")).unwrap();
    fs::write(dir.path().join("sys/bus/pci/devices"), "not a dir").unwrap();
    let o = vgpuctl(dir.path(), &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot list /sys/bus/pci/devices"), "{}", stderr(&o));
}

/// Breaks a simulated host in every way a broken kernel, a dying device or a
/// hostile admin could, then checks each is reported and the rest still listed.
#[test]
fn test_garbage_sysfs_is_reported_and_skipped() {
    let dir = sim("h100x8-vfio");
    let root = dir.path().join("host");
    assert!(vgpuctl(&root, &["sriov", "enable", "all"]).status.success());
    let devs = root.join("sys/bus/pci/devices");
    let dev = |a: &str| fs::canonicalize(devs.join(a)).unwrap();
    // A dangling device link.
    symlink("../../../devices/pci0000:99/0000:99:00.0", devs.join("0000:99:00.0")).unwrap();
    // A name that is not a PCI address.
    symlink("../../../devices/x", devs.join("..evil")).unwrap();
    // Garbage attributes on real GPUs.
    fs::write(dev("0000:2a:00.0").join("class"), "zzz\n").unwrap();
    fs::write(dev("0000:3a:00.0").join("numa_node"), "many\n").unwrap();
    fs::write(dev("0000:5d:00.0").join("sriov_numvfs"), "-3\n").unwrap();
    fs::write(dev("0000:9a:00.0").join("vendor"), [0xff, 0xfe, 0xfd]).unwrap();
    fs::remove_file(dev("0000:ab:00.0").join("iommu_group")).unwrap();
    symlink("../../../kernel/iommu_groups/notanumber", dev("0000:ab:00.0").join("iommu_group")).unwrap();
    let vf = dev("0000:18:00.4");
    fs::write(vf.join("nvidia/creatable_vgpu_types"), "ID : vGPU Name\nxx : NVIDIA H100-4C\n1213 : NVIDIA H100-10C\n").unwrap();
    fs::write(vf.join("nvidia/current_vgpu_type"), "../../etc\n").unwrap();
    // mdev bits: a bad parent name and a bad device name.
    fs::create_dir_all(root.join("sys/class/mdev_bus")).unwrap();
    symlink("/nowhere", root.join("sys/class/mdev_bus/bad:name:x")).unwrap();
    fs::create_dir_all(root.join("sys/bus/mdev/devices/not-a-uuid")).unwrap();

    let o = vgpuctl(&root, &["list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let warnings: Vec<String> = v["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(has("0000:99:00.0: no class attribute"), "{warnings:#?}");
    assert!(has("..evil: not a PCI address"), "{warnings:#?}");
    assert!(has("0000:2a:00.0: class holds \"zzz\""), "{warnings:#?}");
    assert!(has("0000:3a:00.0: numa_node holds \"many\""), "{warnings:#?}");
    assert!(has("0000:5d:00.0: sriov_totalvfs/sriov_numvfs hold garbage"), "{warnings:#?}");
    assert!(has("0000:9a:00.0/vendor: not UTF-8"), "{warnings:#?}");
    assert!(has("0000:ab:00.0: iommu_group link points at \"notanumber\""), "{warnings:#?}");
    assert!(has("cannot parse line \"xx : NVIDIA H100-4C\""), "{warnings:#?}");
    assert!(has("current_vgpu_type holds \"../../etc\""), "{warnings:#?}");
    assert!(has("bad:name:x"), "{warnings:#?}");
    assert!(has("not-a-uuid"), "{warnings:#?}");
    // Everything else is still there.
    let gpus = v["gpus"].as_array().unwrap();
    let addrs: Vec<&str> = gpus.iter().map(|g| g["address"].as_str().unwrap()).collect();
    assert!(!addrs.contains(&"0000:2a:00.0") && !addrs.contains(&"0000:9a:00.0"));
    assert!(addrs.contains(&"0000:3a:00.0") && addrs.contains(&"0000:ab:00.0") && addrs.contains(&"0000:db:00.0"));
    let g18 = gpus.iter().find(|g| g["address"] == "0000:18:00.0").unwrap();
    let vf0 = &g18["sriov"]["vfs"][0];
    assert_eq!(vf0["vgpu"]["creatable"].as_array().unwrap().len(), 1);
    // The table view prints the same warnings on stderr and still lists.
    let t = vgpuctl(&root, &["list"]);
    assert!(t.status.success());
    assert!(stderr(&t).contains("warning: "), "{}", stderr(&t));
    assert!(stdout(&t).contains("0000:db:00.0"));
}

#[test]
fn test_sim_create_refuses_non_empty_dir_and_unknown_profile() {
    let dir = sim("passthrough");
    let root = dir.path().join("host");
    let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl")).args(["sim", "create"]).arg(&root).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl")).args(["sim", "create"]).arg(dir.path().join("other")).args(["--profile", "nope"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown simulated profile \"nope\" (known: h100x8-vfio"), "{}", stderr(&o));
}

#[test]
fn test_list_survives_closed_stdout_pipe() {
    let dir = sim("h100x8-vfio");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(dir.path().join("host"))
        .args(["list", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Help never needs the helpers: `vm define|attach|detach|show --help` come
/// from vgpuctl's own parser, `vm --help` lists them, and `hook qemu --help`
/// prints help instead of running the hook for a domain named "--help".
#[test]
fn test_help_works_for_every_vm_command_without_the_helper() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
            .args(args)
            .env("VGPUCTL_LIBVIRT_HELPER", "/nonexistent/vgpuctl-libvirt")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, vm, _) = run(&["vm", "--help"]);
    assert_eq!(code, Some(0));
    for sub in ["xml", "hostdev-xml", "explain", "define", "attach", "detach", "show"] {
        assert!(vm.lines().any(|l| l.trim_start().starts_with(sub)), "vm --help lists {sub}:\n{vm}");
    }
    for (sub, option) in [("define", "--mdev-type"), ("attach", "--live"), ("detach", "--mdev"), ("show", "--inactive")] {
        let (code, out, err) = run(&["vm", sub, "--help"]);
        assert_eq!(code, Some(0), "vm {sub} --help: {err}");
        assert!(out.contains(option) && out.contains("--connect"), "vm {sub} --help:\n{out}");
    }
    // Bad arguments are refused by vgpuctl itself (64), before the helper is looked for.
    let (code, _, err) = run(&["vm", "attach", "dom", "--no-such-flag"]);
    assert_eq!(code, Some(64), "{err}");
    let (code, _, err) = run(&["vm", "detach", "dom", "--mdev", "not-a-uuid"]);
    assert_eq!(code, Some(64), "{err}");
    // Good ones then need the helper (4).
    let (code, _, err) = run(&["vm", "attach", "dom", "--mdev", "11111111-2222-3333-4444-555555555555"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("vgpuctl-libvirt is not installed"), "{err}");
    let (code, out, _) = run(&["hook", "qemu", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Usage: vgpuctl hook qemu") && out.contains("What libvirt passes"), "{out}");
}

/// Every subcommand's `--help` works, and every option and argument of every
/// subcommand has a sentence of help (found from the clap definitions, so a
/// new option without one fails here).
#[test]
fn test_every_option_of_every_subcommand_has_help() {
    use clap::CommandFactory;
    fn walk(c: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, Vec<String>)>) {
        let missing: Vec<String> = c
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|a| a.get_help().is_none_or(|h| h.to_string().trim().len() < 8))
            .map(|a| a.get_id().to_string())
            .collect();
        out.push((path.clone(), missing));
        for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(s.get_name().to_string());
            walk(s, p, out);
        }
    }
    let mut all = Vec::new();
    walk(&vgpuctl::cli::Cli::command(), Vec::new(), &mut all);
    let undocumented: Vec<String> = all.iter().filter(|(_, m)| !m.is_empty()).map(|(p, m)| format!("vgpuctl {}: {m:?}", p.join(" "))).collect();
    assert!(undocumented.is_empty(), "options without help: {undocumented:#?}");
    assert!(all.len() > 40, "{} subcommands", all.len());
    for (path, _) in &all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl")).args(&args).env("VGPUCTL_LIBVIRT_HELPER", "/nonexistent").output().unwrap();
        assert_eq!(o.status.code(), Some(0), "vgpuctl {}: {}", args.join(" "), stderr(&o));
        assert!(stdout(&o).contains("Usage: vgpuctl"), "vgpuctl {}: {}", args.join(" "), stdout(&o));
    }
}
