//! The one door to the host.
//!
//! Every read, write, readlink and directory listing of /sys, /dev, /proc and
//! /etc goes through [`Host`], whose root can be relocated (`--root DIR`,
//! `VGPUCTL_ROOT`). Tests and simulated hosts point it at a tree on disk; the
//! real binary points it at `/`. Writes can be intercepted by a
//! [`WriteBehaviour`] so a simulated tree can answer like the kernel would
//! (devices appear, counters drop, the same errnos come back).

pub mod atomic;
mod command;
mod error;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use command::{CommandOutput, CommandRunner, Running, Tool, HELPER_HINT, LIBEXEC_FROM_PREFIX};
pub use error::{HostError, HostResult};

/// Kernel semantics for writes into a simulated tree. The real host has none:
/// the kernel itself answers.
pub trait WriteBehaviour: Send + Sync + std::fmt::Debug {
    /// Handle a write to `path` (absolute, inside the host's root). Return
    /// `None` to let the plain file write happen, or `Some(result)` when the
    /// write was handled (the result is what the kernel would return).
    fn write(&self, host: &Host, path: &str, value: &str) -> Option<io::Result<()>>;
}

/// Name of the file that marks a directory as a simulated host.
pub const SIM_MARKER: &str = ".vgpuctl-sim.json";

#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    runner: CommandRunner,
    behaviour: Option<Arc<dyn WriteBehaviour>>,
    fault: Option<Arc<Fault>>,
    /// The NVIDIA driver that answers for this host, chosen when it is
    /// opened (the real one unless `sim::attach` put the simulated one on).
    nvidia: Arc<dyn crate::nvidia::NvidiaDriver>,
}

/// Test-only fault injection, from `VGPUCTL_FAULT=write:N:ERRNO` (the Nth
/// host write fails with EIO, EBUSY, ENOSPC, …) or `write:N:die` (the process
/// is killed just before the Nth write, as a crash would). Counting starts at
/// 1 per process. Documented in docs/testing.md; unset in production.
#[derive(Debug)]
pub struct Fault {
    nth: u32,
    action: FaultAction,
    seen: std::sync::atomic::AtomicU32,
}

#[derive(Debug, Clone, Copy)]
enum FaultAction {
    Fail(nix::errno::Errno),
    Die,
}

impl Fault {
    fn from_env() -> Option<Arc<Self>> {
        let spec = std::env::var("VGPUCTL_FAULT").ok()?;
        let mut it = spec.splitn(3, ':');
        let (Some("write"), Some(n), Some(what)) = (it.next(), it.next(), it.next()) else {
            tracing::warn!("ignoring malformed VGPUCTL_FAULT={spec:?} (expected write:N:ERRNO or write:N:die)");
            return None;
        };
        let nth = n.parse().ok().filter(|n| *n > 0)?;
        use nix::errno::Errno;
        let action = match what {
            "die" => FaultAction::Die,
            "EIO" => FaultAction::Fail(Errno::EIO),
            "EBUSY" => FaultAction::Fail(Errno::EBUSY),
            "ENOSPC" => FaultAction::Fail(Errno::ENOSPC),
            "EPERM" => FaultAction::Fail(Errno::EPERM),
            "EINVAL" => FaultAction::Fail(Errno::EINVAL),
            _ => return None,
        };
        Some(Arc::new(Self { nth, action, seen: std::sync::atomic::AtomicU32::new(0) }))
    }

    fn check(&self, path: &str) -> io::Result<()> {
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n != self.nth {
            return Ok(());
        }
        match self.action {
            FaultAction::Fail(e) => {
                tracing::warn!("injected fault: write {n} to {path} fails with {e}");
                Err(io::Error::from_raw_os_error(e as i32))
            }
            FaultAction::Die => {
                eprintln!("vgpuctl: injected fault: killed before write {n} ({path})");
                // SIGKILL, like an OOM kill: no destructors, no cleanup.
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                std::process::abort()
            }
        }
    }
}

impl Host {
    /// The real host: root `/`, tools from `PATH` or their `VGPUCTL_*` overrides.
    pub fn real() -> Self {
        Self { root: PathBuf::from("/"), runner: CommandRunner::from_env(), behaviour: None, fault: Fault::from_env(), nvidia: Self::real_driver() }
    }

    /// A host whose files live under `root`. The root must be a readable
    /// directory; anything else is a clear error rather than an empty inventory.
    pub fn at_root(root: impl Into<PathBuf>) -> HostResult<Self> {
        let root = root.into();
        let meta = fs::metadata(&root).map_err(|source| HostError::Root { root: root.clone(), source })?;
        if !meta.is_dir() {
            return Err(HostError::Root { root: root.clone(), source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory") });
        }
        fs::read_dir(&root).map_err(|source| HostError::Root { root: root.clone(), source })?;
        Ok(Self { root, runner: CommandRunner::from_env(), behaviour: None, fault: Fault::from_env(), nvidia: Self::real_driver() })
    }

    fn real_driver() -> Arc<dyn crate::nvidia::NvidiaDriver> {
        Arc::new(crate::nvidia::real::RealDriver::default())
    }

    /// Puts another NVIDIA driver on the host (the simulated one).
    pub fn with_nvidia(mut self, driver: Arc<dyn crate::nvidia::NvidiaDriver>) -> Self {
        self.nvidia = driver;
        self
    }

    /// The host's NVIDIA driver: ask it, never whether the host is simulated.
    pub fn nvidia(&self) -> &dyn crate::nvidia::NvidiaDriver {
        self.nvidia.as_ref()
    }

    pub fn with_runner(mut self, runner: CommandRunner) -> Self {
        self.runner = runner;
        self
    }

    pub fn with_behaviour(mut self, behaviour: Arc<dyn WriteBehaviour>) -> Self {
        self.behaviour = Some(behaviour);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runner(&self) -> &CommandRunner {
        &self.runner
    }

    pub fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// True when the root holds a simulated host written by `vgpuctl sim create`.
    pub fn is_simulated(&self) -> bool {
        self.root.join(SIM_MARKER).is_file()
    }

    /// Maps an absolute host path (`/sys/...`) into the root. Paths are built
    /// from parsed identifiers and kernel-provided names only; a `..` here is
    /// a bug, so it is refused rather than followed.
    pub fn path(&self, host_path: &str) -> HostResult<PathBuf> {
        let rel = Path::new(host_path.trim_start_matches('/'));
        for c in rel.components() {
            match c {
                Component::Normal(_) => {}
                _ => return Err(HostError::UnsafePath { path: host_path.to_string() }),
            }
        }
        if host_path.contains('\0') {
            return Err(HostError::UnsafePath { path: host_path.to_string() });
        }
        Ok(self.root.join(rel))
    }

    pub fn exists(&self, host_path: &str) -> bool {
        self.path(host_path).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn is_dir(&self, host_path: &str) -> bool {
        self.path(host_path).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// Reads a sysfs-style attribute, without its trailing newline.
    pub fn read_attr(&self, host_path: &str) -> HostResult<String> {
        let p = self.path(host_path)?;
        let bytes = read_small(&p).map_err(|source| HostError::io("read", host_path, source))?;
        let text = String::from_utf8(bytes).map_err(|_| HostError::Garbage { path: host_path.to_string(), why: "not UTF-8 text".into() })?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Like [`read_attr`](Self::read_attr) but a missing file is `None`.
    pub fn read_attr_opt(&self, host_path: &str) -> HostResult<Option<String>> {
        match self.read_attr(host_path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The target of a symlink, or `None` when there is no link.
    pub fn read_link(&self, host_path: &str) -> HostResult<Option<PathBuf>> {
        let p = self.path(host_path)?;
        match fs::read_link(&p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // EINVAL: it exists but is not a symlink; the kernel never does that
            // for the links we read, so treat it as garbage.
            Err(e) if e.raw_os_error() == Some(libc_einval()) => Err(HostError::Garbage { path: host_path.to_string(), why: "expected a symlink".into() }),
            Err(source) => Err(HostError::io("readlink", host_path, source)),
        }
    }

    /// Whether the file holds `needle` anywhere (a missing file does not):
    /// how a binary or script is told to be vgpuctl's. Reads the whole file.
    pub fn file_contains(&self, host_path: &str, needle: &[u8]) -> HostResult<bool> {
        let p = self.path(host_path)?;
        match fs::read(&p) {
            Ok(bytes) => Ok(memchr::memmem::find(&bytes, needle).is_some()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(HostError::io("read", host_path, source)),
        }
    }

    /// The last component of a symlink's target: the driver name of
    /// `.../driver`, the group number of `.../iommu_group`.
    pub fn link_name(&self, host_path: &str) -> HostResult<Option<String>> {
        Ok(self.read_link(host_path)?.and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned())))
    }

    /// Entry names of a directory, sorted. A missing directory is empty: a
    /// host without /sys/class/mdev_bus simply has no mdev parents.
    pub fn list_dir(&self, host_path: &str) -> HostResult<Vec<String>> {
        let p = self.path(host_path)?;
        let rd = match fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(HostError::io("list", host_path, source)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| HostError::io("list", host_path, source))?;
            // Non-UTF-8 names cannot be any identifier we parse; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// A driver change that is not a file write (a MIG instance made or
    /// destroyed through nvidia-smi or the simulated driver): it counts as a
    /// host write for fault injection, so those steps fail and crash in turn
    /// like sysfs writes do.
    pub fn fault_point(&self, what: &str) -> io::Result<()> {
        match &self.fault {
            Some(f) => f.check(what),
            None => Ok(()),
        }
    }

    /// Replaces a state file vgpuctl owns (under /run or /var/lib) atomically,
    /// creating its missing directories first (0755 for a file others may
    /// read, such as node_exporter's textfile; else 0700). It is a fault
    /// point like every host write, so fault-injection tests reach it too.
    pub fn write_state(&self, host_path: &str, bytes: &[u8], mode: u32) -> HostResult<()> {
        use std::os::unix::fs::DirBuilderExt;
        let p = self.path(host_path)?;
        if let Some(f) = &self.fault {
            f.check(host_path).map_err(|source| HostError::io("write", host_path, source))?;
        }
        if let Some(dir) = p.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(if mode & 0o044 != 0 { 0o755 } else { 0o700 })
                .create(dir)
                .map_err(|source| HostError::io("create the directory of", host_path, source))?;
        }
        atomic::write_atomic(&p, bytes, mode).map_err(|source| HostError::io("write", host_path, source))
    }

    /// Removes a state file vgpuctl owns; `false` when it was not there. A
    /// fault point like every host write.
    pub fn remove_state(&self, host_path: &str) -> HostResult<bool> {
        let p = self.path(host_path)?;
        if let Some(f) = &self.fault {
            f.check(host_path).map_err(|source| HostError::io("remove", host_path, source))?;
        }
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(HostError::io("remove", host_path, source)),
        }
    }

    /// Creates a symlink at `host_path` pointing to `target` (taken as is,
    /// not mapped into the root: it is what the link will say), making the
    /// directory first. A fault point like every host write.
    pub fn symlink_state(&self, target: &str, host_path: &str) -> HostResult<()> {
        let p = self.path(host_path)?;
        if let Some(f) = &self.fault {
            f.check(host_path).map_err(|source| HostError::io("link", host_path, source))?;
        }
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(|source| HostError::io("create the directory of", host_path, source))?;
        }
        std::os::unix::fs::symlink(target, &p).map_err(|source| HostError::io("link", host_path, source))
    }

    /// Writes an attribute the way `echo value > file` does on sysfs: no
    /// create, no truncate semantics beyond what the file has. Simulated
    /// trees get their kernel behaviour first.
    pub fn write_attr(&self, host_path: &str, value: &str) -> HostResult<()> {
        let p = self.path(host_path)?;
        if let Some(f) = &self.fault {
            f.check(host_path).map_err(|source| HostError::io("write", host_path, source))?;
        }
        if let Some(b) = &self.behaviour {
            if let Some(result) = b.write(self, host_path, value) {
                return result.map_err(|source| HostError::io("write", host_path, source));
            }
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(nix::fcntl::OFlag::O_CLOEXEC.bits())
            .open(&p)
            .map_err(|source| HostError::io("write", host_path, source))?;
        f.write_all(value.as_bytes()).map_err(|source| HostError::io("write", host_path, source))
    }
}

/// Attributes are at most a page on sysfs; anything past 1 MiB is garbage.
const MAX_ATTR_BYTES: usize = 1 << 20;

/// open + read + close, without the size probe `fs::read` makes: an 8×32-VF
/// inventory reads ~900 attributes and the extra syscall was a fifth of its time.
/// A short read ends the loop: sysfs returns an attribute in one read, and
/// for regular files a short read means end of file.
fn read_small(p: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(p)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        if buf.len() >= MAX_ATTR_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than 1 MiB"));
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    Ok(buf)
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_path_refuses_parent_components() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::at_root(dir.path()).unwrap();
        assert!(host.path("/sys/bus/../../etc/passwd").is_err());
        assert!(host.path("../etc").is_err());
        assert!(host.path("/sys/bus\0x").is_err());
        assert_eq!(host.path("/sys/bus").unwrap(), dir.path().join("sys/bus"));
    }

    #[test]
    fn test_at_root_missing_directory_is_a_clear_error() {
        let err = Host::at_root("/nonexistent/vgpuctl-root").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vgpuctl-root"), "{err}");
    }

    #[test]
    fn test_at_root_file_is_not_a_root() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(Host::at_root(f.path()).is_err());
    }

    #[test]
    fn test_read_attr_strips_newline_and_rejects_binary() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys")).unwrap();
        fs::write(dir.path().join("sys/a"), "0x10de\n").unwrap();
        fs::write(dir.path().join("sys/b"), [0xff, 0xfe, 0x00]).unwrap();
        let host = Host::at_root(dir.path()).unwrap();
        assert_eq!(host.read_attr("/sys/a").unwrap(), "0x10de");
        assert!(matches!(host.read_attr("/sys/b"), Err(HostError::Garbage { .. })));
        assert_eq!(host.read_attr_opt("/sys/missing").unwrap(), None);
    }

    #[test]
    fn test_list_dir_missing_is_empty_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("d/b")).unwrap();
        fs::create_dir_all(dir.path().join("d/a")).unwrap();
        let host = Host::at_root(dir.path()).unwrap();
        assert_eq!(host.list_dir("/d").unwrap(), vec!["a", "b"]);
        assert!(host.list_dir("/nope").unwrap().is_empty());
    }

    #[test]
    fn test_link_name_of_broken_symlink_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("../../bus/pci/drivers/nvidia", dir.path().join("driver")).unwrap();
        let host = Host::at_root(dir.path()).unwrap();
        assert_eq!(host.link_name("/driver").unwrap().as_deref(), Some("nvidia"));
        assert_eq!(host.link_name("/nolink").unwrap(), None);
    }
}
