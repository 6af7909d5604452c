//! The host-wide lock. Every operation that allocates or frees a device
//! (mdev create/remove, vGPU type writes, MIG instances, the hook) holds it,
//! so concurrent callers see each other's results instead of racing on
//! `available_instances`. Read-only commands never take it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use crate::host::{Host, HostError};

pub const LOCK_DIR: &str = "/run/vgpuctl";
pub const LOCK_FILE: &str = "/run/vgpuctl/lock";

/// Held until dropped; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot prepare the lock file {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("another vgpuctl held the host lock ({path}) for more than {seconds} s; retry, or find it with: fuser -v {path}")]
    Timeout { path: String, seconds: u64 },
    #[error(transparent)]
    Host(#[from] HostError),
}

impl HostLock {
    /// Waits up to `timeout` for the lock. The wait backs off from 1 ms to
    /// 50 ms between attempts: short for the common uncontended case, never a
    /// busy loop when a long apply holds it.
    pub fn acquire(host: &Host, timeout: Duration) -> Result<Self, LockError> {
        let dir = host.path(LOCK_DIR)?;
        let path = host.path(LOCK_FILE)?;
        let shown = path.display().to_string();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|source| LockError::Open { path: dir.display().to_string(), source })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_CLOEXEC.bits() | nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(|source| LockError::Open { path: shown.clone(), source })?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(source)) => return Err(LockError::Open { path: shown, source }),
            }
            if start.elapsed() >= timeout {
                return Err(LockError::Timeout { path: shown, seconds: timeout.as_secs() });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// How long commands wait for the lock unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lock_excludes_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::at_root(dir.path()).unwrap();
        let first = HostLock::acquire(&host, Duration::from_secs(1)).unwrap();
        let err = HostLock::acquire(&host, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        drop(first);
        HostLock::acquire(&host, Duration::from_millis(50)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("run/vgpuctl")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn test_lock_refuses_symlinked_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("run/vgpuctl")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("run/vgpuctl/lock")).unwrap();
        let host = Host::at_root(dir.path()).unwrap();
        assert!(matches!(HostLock::acquire(&host, Duration::from_millis(50)), Err(LockError::Open { .. })));
    }
}
