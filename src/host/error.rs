use std::io;
use std::path::PathBuf;

pub type HostResult<T> = Result<T, HostError>;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot use {root:?} as the host root (pass an existing, readable directory to --root)")]
    Root {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("refusing unsafe host path {path:?}")]
    UnsafePath { path: String },
    #[error("unexpected contents in {path}: {why}")]
    Garbage { path: String, why: String },
    #[error("{tool} is not installed (looked for {looked_for}); set {env} to its path")]
    ToolMissing { tool: &'static str, looked_for: String, env: &'static str },
    #[error("{tool} failed to start")]
    ToolSpawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{tool} did not finish within {seconds} s and was stopped")]
    ToolTimeout { tool: &'static str, seconds: u64 },
}

impl HostError {
    pub fn io(op: &'static str, path: &str, source: io::Error) -> Self {
        Self::Io { op, path: path.to_string(), source }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The kernel's errno for a failed write, so callers can explain EEXIST,
    /// ENOSPC, EPERM and friends in the admin's terms.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
