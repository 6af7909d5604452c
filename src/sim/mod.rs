//! Simulated hosts: sysfs trees that the same code reads with `--root DIR`.
//!
//! `vgpuctl sim create DIR --profile NAME` writes one. What each file models,
//! and from which source, is listed in docs/simulation.md. Write behaviour
//! (what the kernel does when `create` or `current_vgpu_type` is written)
//! plugs into the host layer through [`crate::host::WriteBehaviour`].

mod behaviour;
pub mod driver;
pub mod mig;
mod profiles;
mod state;
mod tree;
pub mod vfs;

use std::path::Path;

pub use behaviour::{refresh_gpu, SimBehaviour, IN_USE_MARKER};
pub use profiles::{find as find_profile, Profile, PROFILES};
pub use state::{SimGpu, SimInterface, SimState};
pub use tree::{relative, Tree};

use crate::host::Host;
use crate::ids::PciAddress;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown simulated profile {0:?} (known: {known})", known = PROFILES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "))]
    UnknownProfile(String),
    #[error("cannot write the simulated host at {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the profile's tree into `dir`, which must be missing or empty.
pub fn create(dir: &Path, profile: &str) -> Result<SimState, SimError> {
    let p = find_profile(profile).ok_or_else(|| SimError::UnknownProfile(profile.to_string()))?;
    let werr = |source| SimError::Write { path: dir.display().to_string(), source };
    let tree = Tree::create(dir).map_err(werr)?;
    let state = p.build(&tree).map_err(werr)?;
    state.save(dir).map_err(werr)?;
    Ok(state)
}

/// Attaches simulated kernel behaviour when the host's root is a simulated host.
pub fn attach(host: Host) -> Host {
    if host.is_simulated() {
        host.with_behaviour(std::sync::Arc::new(SimBehaviour)).with_nvidia(std::sync::Arc::new(driver::SimDriver))
    } else {
        host
    }
}

/// A simulated GPU's UUID, stable for its address.
pub fn gpu_uuid(a: PciAddress) -> String {
    format!("GPU-{:08x}-5eed-4000-8000-{:012x}", 0x51u32 << 24 | u32::from(a.bus) << 8 | u32::from(a.device), u64::from(a.domain) << 16 | u64::from(a.function))
}
