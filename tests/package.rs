//! The Debian package and the RPM, tested by building and installing them:
//! scripts/package.sh builds both; lintian finds no error in the .deb; the
//! RPM holds the same files and its scripts; `dpkg -i` on this machine
//! installs what an admin needs (man pages that render, completions that
//! load, units systemd accepts, helpers of the same build); the real-kernel
//! guest runs the libvirt flow from the installed files only; an upgrade
//! keeps the hook, the units and the admin's host.toml; remove and purge
//! leave nothing of vgpuctl's behind but that host.toml.
//!
//! It installs into this machine's /usr and /etc (as root, like the rest of
//! scripts/test.sh) and purges the package again, also when a check fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::guest::package_guest;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let o = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Out { code: o.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
}

fn ok(program: &str, args: &[&str]) -> String {
    let o = run(program, args, &[]);
    assert_eq!(o.code, 0, "{program} {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
    o.stdout
}

const ADMIN_CONFIG: &str = "/etc/vgpuctl/host.toml";
/// Held for the whole test: two runs at once (two checkouts' test scripts)
/// would install and purge the one system package under each other, and
/// each would fail somewhere far from the cause.
const RUN_LOCK: &str = "/run/lock/vgpuctl-package-test.lock";
const ADMIN_TEXT: &str = "# the admin's own host config: no package may touch it\n";

/// Purges the package and puts back what the test changed, however it ends.
struct Installed {
    saved_config: Option<Vec<u8>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "vgpuctl"], &[]);
        match &self.saved_config {
            Some(bytes) => {
                let _ = std::fs::write(ADMIN_CONFIG, bytes);
            }
            None => {
                let _ = std::fs::remove_file(ADMIN_CONFIG);
                let _ = std::fs::remove_dir("/etc/vgpuctl");
            }
        }
    }
}

/// Every path of vgpuctl's under the folders a package writes.
fn vgpuctl_paths() -> Vec<String> {
    let o = run("find", &["/etc", "/lib/systemd", "/usr", "/var/lib/systemd", "/var/lib/prometheus", "-xdev", "-name", "*vgpuctl*"], &[]);
    let mut v: Vec<String> = o.stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn package_files(deb: &Path) -> Vec<String> {
    // dpkg-deb's data archive, listed by tar: no shell between them.
    let mut unpack = Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).stdout(std::process::Stdio::piped()).spawn().expect("dpkg-deb");
    let listed = Command::new("tar").arg("-t").stdin(unpack.stdout.take().expect("piped")).output().expect("tar");
    assert!(unpack.wait().expect("dpkg-deb").success() && listed.status.success(), "cannot list {}", deb.display());
    let list = String::from_utf8_lossy(&listed.stdout);
    let mut v: Vec<String> = list.lines().filter(|l| !l.ends_with('/')).map(|l| l.trim_start_matches('.').to_string()).collect();
    v.sort();
    v
}

/// The path an RPM-based distribution uses where Debian's differs.
fn as_on_rpm(p: &str) -> String {
    p.replace("/lib/systemd/system/", "/usr/lib/systemd/system/").replace("/usr/share/zsh/vendor-completions/", "/usr/share/zsh/site-functions/")
}

#[test]
#[ignore = "builds the .deb and .rpm, installs the .deb on this machine (root, dpkg-dev, lintian, rpm, man-db, systemd) and boots the real-kernel guest; scripts/test.sh installs the tools and runs it"]
fn test_packages_build_lint_install_upgrade_and_purge_clean() {
    assert_eq!(run("id", &["-u"], &[]).stdout.trim(), "0", "the package test installs with dpkg: run it as root (scripts/test.sh)");
    std::fs::create_dir_all("/run/lock").unwrap();
    let run_lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(RUN_LOCK).unwrap_or_else(|e| panic!("{RUN_LOCK}: {e}"));
    if let Err(e) = run_lock.try_lock() {
        panic!("another run of the package test holds {RUN_LOCK} ({e}): it installs and purges this machine's vgpuctl package, so wait for it to end and run this one again");
    }
    let pre = run("dpkg-query", &["-W", "-f=${Status}", "vgpuctl"], &[]);
    assert!(!pre.stdout.contains("installed"), "a vgpuctl package is already installed here; this test installs and purges its own and will not replace it");

    // --- build ---------------------------------------------------------------
    let built = ok("bash", &["scripts/package.sh"]);
    let paths: Vec<PathBuf> = built.lines().map(PathBuf::from).collect();
    let deb = paths.iter().find(|p| p.extension().is_some_and(|e| e == "deb")).expect("package.sh names the .deb").clone();
    let rpm = paths.iter().find(|p| p.extension().is_some_and(|e| e == "rpm")).expect("package.sh names the .rpm").clone();

    // --- lintian: no errors (warnings and infos are printed for the log) ---
    // (--show-overrides would make lintian exit 2 on the overridden tag.)
    let lint = run("lintian", &["--fail-on", "error", deb.to_str().unwrap()], &[]);
    println!("lintian:\n{}{}", lint.stdout, lint.stderr);
    assert_eq!(lint.code, 0, "lintian reports errors:\n{}", lint.stdout);
    assert!(!lint.stdout.lines().any(|l| l.starts_with("E:")), "{}", lint.stdout);

    // --- the .deb's fields and files ----------------------------------------
    let control = ok("dpkg-deb", &["-f", deb.to_str().unwrap(), "Depends", "Recommends"]);
    assert!(control.contains("libvirt0"), "the libvirt helper needs libvirt0: {control}");
    assert!(control.contains("libc6"), "{control}");
    assert!(!control.to_lowercase().contains("nvidia"), "the NVIDIA driver is not a dependency: {control}");
    let files = package_files(&deb);
    for want in [
        "/usr/bin/vgpuctl",
        "/usr/libexec/vgpuctl/vgpuctl-libvirt",
        "/usr/libexec/vgpuctl/vgpuctl-nvml",
        "/etc/libvirt/hooks/qemu.d/vgpuctl",
        "/lib/systemd/system/vgpuctl-apply.service",
        "/lib/systemd/system/vgpuctl-mdev-restore.service",
        "/lib/systemd/system/vgpuctl-gc.timer",
        "/lib/systemd/system/vgpuctl-gc.service",
        "/lib/systemd/system/vgpuctl-metrics.timer",
        "/usr/share/vgpuctl/xml-templates/domain.xml",
        "/usr/share/doc/vgpuctl/hook.md",
        "/usr/share/doc/vgpuctl/copyright",
        "/usr/share/man/man1/vgpuctl.1.gz",
        "/usr/share/man/man1/vgpuctl-mdev.1.gz",
        "/usr/share/man/man1/vgpuctl-vm-define.1.gz",
        "/usr/share/bash-completion/completions/vgpuctl",
        "/usr/share/zsh/vendor-completions/_vgpuctl",
        "/usr/share/fish/vendor_completions.d/vgpuctl.fish",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} is not in the .deb: {files:#?}");
    }
    assert!(!files.iter().any(|f| f == ADMIN_CONFIG), "the package must not ship {ADMIN_CONFIG}");

    // --- the RPM: the same files (at RHEL's paths) and its scripts ---------
    let rpm_files: Vec<String> = {
        let mut v: Vec<String> = ok("rpm", &["-qlp", rpm.to_str().unwrap()]).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let own_dirs =
        ["/usr/libexec/vgpuctl", "/usr/share/vgpuctl", "/usr/share/vgpuctl/xml-templates", "/usr/share/doc/vgpuctl", "/usr/share/doc/vgpuctl/examples"];
    let rpm_only_files: Vec<&String> = rpm_files.iter().filter(|f| !own_dirs.contains(&f.as_str())).collect();
    let mut deb_as_rpm: Vec<String> = files
        .iter()
        // Debian's own metadata files have no RPM counterpart.
        .filter(|f| !f.starts_with("/usr/share/lintian/") && !f.ends_with("/copyright") && !f.ends_with("/changelog.Debian.gz"))
        .map(|f| as_on_rpm(f))
        .collect();
    deb_as_rpm.sort();
    assert_eq!(
        rpm_only_files.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        deb_as_rpm.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "the RPM and the .deb differ"
    );
    let scripts = ok("rpm", &["-qp", "--scripts", rpm.to_str().unwrap()]);
    for want in [
        "systemctl --no-reload preset vgpuctl-apply.service",
        "systemctl --no-reload disable --now vgpuctl-apply.service",
        "rm -f /var/lib/prometheus/node-exporter/vgpuctl.prom",
    ] {
        assert!(scripts.contains(want), "the RPM's scripts lack {want:?}:\n{scripts}");
    }
    let requires = ok("rpm", &["-qpR", rpm.to_str().unwrap()]);
    assert!(requires.contains("libvirt.so.0"), "{requires}");

    // --- install --------------------------------------------------------------
    let saved_config = std::fs::read(ADMIN_CONFIG).ok();
    std::fs::create_dir_all("/etc/vgpuctl").unwrap();
    std::fs::write(ADMIN_CONFIG, ADMIN_TEXT).unwrap();
    let guard = Installed { saved_config };
    // Minimal images exclude man pages and docs from dpkg: ours must land.
    let include = ["--path-include=/usr/share/man/man1/vgpuctl*", "--path-include=/usr/share/doc/vgpuctl/*"];
    let install = ok("dpkg", &[include[0], include[1], "-i", deb.to_str().unwrap()]);
    assert!(install.contains("restart libvirtd"), "postinst says how to activate the hook: {install}");
    assert_eq!(std::fs::read_link("/etc/libvirt/hooks/qemu.d/vgpuctl").unwrap(), PathBuf::from("/usr/bin/vgpuctl"));
    for unit in ["vgpuctl-apply.service", "vgpuctl-mdev-restore.service"] {
        assert!(Path::new(&format!("/etc/systemd/system/multi-user.target.wants/{unit}")).exists(), "{unit} is enabled on a new install");
    }
    for timer in ["vgpuctl-gc.timer", "vgpuctl-metrics.timer"] {
        assert!(Path::new(&format!("/etc/systemd/system/timers.target.wants/{timer}")).exists(), "{timer} is enabled on a new install");
    }

    // The installed binary, its version and both helpers of the same build.
    let version = ok("/usr/bin/vgpuctl", &["--version"]);
    let commit = ok("git", &["rev-parse", "--short=12", "HEAD"]);
    assert!(version.starts_with(&format!("vgpuctl {} (commit {})", env!("CARGO_PKG_VERSION"), commit.trim())), "{version}");
    assert!(version.contains("vgpuctl-libvirt: /usr/libexec/vgpuctl/vgpuctl-libvirt, same build"), "{version}");
    assert!(version.contains("vgpuctl-nvml: /usr/libexec/vgpuctl/vgpuctl-nvml, same build"), "{version}");
    // Templates come from /usr/share (no /etc copies here).
    let xml = ok("/usr/bin/vgpuctl", &["vm", "xml", "--name", "t", "--templates", "/usr/share/vgpuctl/xml-templates"]);
    assert!(xml.contains("<domain"), "{xml}");
    // man pages render, completions load, systemd accepts the units.
    let man = run("man", &["-P", "cat", "vgpuctl-mdev"], &[("MANWIDTH", "80")]);
    assert_eq!(man.code, 0, "man vgpuctl-mdev: {}", man.stderr);
    assert!(man.stdout.contains("vgpuctl-mdev") && man.stdout.contains("mediated devices"), "{}", man.stdout);
    let man = run("man", &["-P", "cat", "vgpuctl-vm-define"], &[("MANWIDTH", "80")]);
    assert!(man.code == 0 && man.stdout.contains("--mdev-type"), "man vgpuctl-vm-define: {}{}", man.stdout, man.stderr);
    let complete = ok("bash", &["-c", ". /usr/share/bash-completion/completions/vgpuctl && complete -p vgpuctl"]);
    assert!(complete.contains("-F _vgpuctl vgpuctl"), "{complete}");
    let words = ok("bash", &["-c", ". /usr/share/bash-completion/completions/vgpuctl && COMP_WORDS=(vgpuctl mdev cr) COMP_CWORD=2 && _vgpuctl vgpuctl cr mdev && echo \"${COMPREPLY[@]}\""]);
    assert!(words.contains("create"), "bash completes `vgpuctl mdev cr` to create: {words}");
    let units: Vec<String> = std::fs::read_dir("/lib/systemd/system")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains("/vgpuctl-"))
        .collect();
    assert_eq!(units.len(), 6, "{units:?}");
    let mut verify = vec!["verify"];
    verify.extend(units.iter().map(String::as_str));
    let v = run("systemd-analyze", &verify, &[]);
    assert!(v.code == 0 && v.stderr.trim().is_empty() && v.stdout.trim().is_empty(), "systemd-analyze verify: {}{}", v.stdout, v.stderr);

    // --- the libvirt flow in the real-kernel guest, from the installed files --
    let g = package_guest();
    g.assert_ran("50-installed");
    let f = g.facts("50-installed");
    let fact = |k: &str| f.get(k).cloned().unwrap_or_else(|| panic!("no fact {k}: {f:?}"));
    assert_eq!(fact("vgpuctl_path"), "/usr/bin/vgpuctl");
    assert_eq!(fact("hook_target"), "/usr/bin/vgpuctl");
    assert_eq!(fact("version_rc"), "0");
    assert_eq!(fact("libvirtd_rc"), "0");
    assert_eq!(fact("define_rc"), "0", "{}", g.read("50-installed", "define.err"));
    for tag in ["first", "second"] {
        assert_eq!(fact(&format!("{tag}_before")), "1", "{tag}: the mdev does not exist before the start");
        assert_eq!(fact(&format!("{tag}_start_rc")), "0", "{tag}: {}", g.read("50-installed", &format!("{tag}-start.txt")));
        assert_eq!(fact(&format!("{tag}_made")), "0", "{tag}: the packaged hook made the mdev");
        assert_eq!(fact(&format!("{tag}_show_rc")), "0", "{tag}: {}", g.read("50-installed", &format!("{tag}-show.json")));
        assert_eq!(fact(&format!("{tag}_freed")), "0", "{tag}: destroy freed the mdev");
    }
    assert_eq!(fact("uninstall_rc"), "0", "{}", g.read("50-installed", "uninstall.txt"));
    assert_eq!(fact("hook_left_after_uninstall"), "1", "hook uninstall removed the packaged entry");
    assert_eq!(fact("install_rc"), "0", "{}", g.read("50-installed", "install.txt"));
    assert_eq!(fact("hook_target_reinstalled"), "/usr/bin/vgpuctl", "re-installed by the installed binary's stable path");
    let show: serde_json::Value = serde_json::from_str(&g.read("50-installed", "first-show.json")).unwrap();
    assert!(show.to_string().contains(&fact("first_uuid")), "vm show names the mdev: {show}");

    // --- upgrade: hook, units and the admin's config stay ------------------
    let rebuilt = run("bash", &["scripts/package.sh", "--no-build", "deb"], &[("VGPUCTL_PACKAGE_REVISION", "2")]);
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.stderr);
    let deb2 = PathBuf::from(rebuilt.stdout.trim());
    ok("dpkg", &[include[0], include[1], "-i", deb2.to_str().unwrap()]);
    assert_eq!(ok("dpkg-query", &["-W", "-f=${Version}", "vgpuctl"]), "0.1.0-2");
    assert_eq!(std::fs::read_link("/etc/libvirt/hooks/qemu.d/vgpuctl").unwrap(), PathBuf::from("/usr/bin/vgpuctl"));
    assert!(Path::new("/etc/systemd/system/timers.target.wants/vgpuctl-gc.timer").exists());
    assert_eq!(std::fs::read_to_string(ADMIN_CONFIG).unwrap(), ADMIN_TEXT);
    // The metrics file vgpuctl would have written for node_exporter.
    std::fs::create_dir_all("/var/lib/prometheus/node-exporter").unwrap();
    ok("/usr/bin/vgpuctl", &["metrics", "--textfile", "/var/lib/prometheus/node-exporter/vgpuctl.prom"]);

    // --- remove, then purge: nothing of vgpuctl's left but the admin's file --
    ok("dpkg", &["-r", "vgpuctl"]);
    // Removed but not purged, Debian keeps the admin's enable choices (and
    // masks the units whose files are gone, so nothing starts them): only
    // those, under /etc/systemd/system and deb-systemd-helper's state.
    let left = vgpuctl_paths();
    for p in &left {
        let kept = p == "/etc/vgpuctl" || p.starts_with("/var/lib/systemd/deb-systemd-helper-") || p.starts_with("/etc/systemd/system/");
        assert!(kept, "after remove, {p} is left: {left:#?}");
        if let Some(unit) = p.strip_prefix("/etc/systemd/system/").filter(|u| !u.contains('/')) {
            assert_eq!(std::fs::read_link(p).ok(), Some(PathBuf::from("/dev/null")), "{unit} is masked after remove");
        }
    }
    assert!(!Path::new("/var/lib/prometheus/node-exporter/vgpuctl.prom").exists(), "no stale metrics after remove");
    assert!(std::fs::read_link("/etc/libvirt/hooks/qemu.d/vgpuctl").is_err(), "no orphaned hook after remove");
    ok("dpkg", &["--purge", "vgpuctl"]);
    let left = vgpuctl_paths();
    assert_eq!(left, vec!["/etc/vgpuctl".to_string()], "after purge only the admin's config folder is left");
    assert_eq!(std::fs::read_to_string(ADMIN_CONFIG).unwrap(), ADMIN_TEXT);
    drop(guard);
}
