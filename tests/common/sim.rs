//! Helpers for tests that drive the vgpuctl binary against simulated hosts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Temporary folders on tmpfs when there is one: a simulated host is
/// thousands of small files, and a disk-backed /tmp makes that 50x slower.
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

pub struct SimHost {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl SimHost {
    pub fn new(profile: &str) -> Self {
        let dir = tempdir();
        let root = dir.path().join("host");
        let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl")).args(["sim", "create"]).arg(&root).args(["--profile", profile]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Self { _dir: dir, root }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
        c.arg("--root").arg(&self.root).env_remove("VGPUCTL_ROOT").env_remove("COLUMNS").env("VGPUCTL_NVIDIA_SMI", "/nonexistent/nvidia-smi");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "vgpuctl {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs and expects exit code `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "vgpuctl {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!e.contains("panicked"), "{e}");
        e
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Runs the qemu hook as libvirt does: `args` (domain, op, subop, extra),
    /// the domain XML on stdin. Returns the exit code and stderr.
    pub fn hook(&self, args: &[&str], xml: &str) -> (i32, String) {
        use std::io::Write;
        let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
            .args(["hook", "qemu"])
            .args(args)
            .env("VGPUCTL_ROOT", &self.root)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// A copy of the vgpuctl under test at `host_path`, for `hook install` and
    /// `install-units`, which only point at a real vgpuctl binary.
    #[allow(dead_code)]
    pub fn place_vgpuctl(&self, host_path: &str) {
        let p = self.path(host_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_vgpuctl"), &p).unwrap();
    }

    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    /// Every file and link under the root, for "nothing changed" checks.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }

    /// Asserts the tree equals `before`, printing only the entries that differ.
    pub fn assert_unchanged(&self, before: &[(String, String)], what: &str) {
        let now = self.snapshot();
        let gone: Vec<_> = before.iter().filter(|e| !now.contains(e)).collect();
        let added: Vec<_> = now.iter().filter(|e| !before.contains(e)).collect();
        assert!(gone.is_empty() && added.is_empty(), "{what} changed the host:\n gone: {gone:?}\n added: {added:?}");
    }

    pub fn available(&self, parent: &str, type_id: &str) -> u32 {
        std::fs::read_to_string(self.path(&format!("/sys/class/mdev_bus/{parent}/mdev_supported_types/{type_id}/available_instances")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type().unwrap();
        // The lock file appears on first use, and the hook's outcome counters
        // count failures too: neither is device state. Everything else under
        // /run (journals, the MIG ledger, passthrough records) is, and a
        // failed operation must leave it as it was.
        if rel == "run" || rel == "run/vgpuctl" || rel == "run/vgpuctl/lock" || rel == "run/vgpuctl/hook-counters.json" {
            continue;
        }
        if ft.is_symlink() {
            out.push((rel, format!("-> {}", std::fs::read_link(&p).unwrap().display())));
        } else if ft.is_dir() {
            out.push((rel.clone(), "dir".into()));
            walk(root, &p, out);
        } else {
            out.push((rel, std::fs::read_to_string(&p).unwrap_or_else(|_| "<binary>".into())));
        }
    }
}
