//! vGPU types across both NVIDIA kernel interfaces (legacy mdev, and the
//! vendor-specific VFIO of vGPU 17+): names, the per-GPU view, allocation,
//! create/remove and `explain`.

pub mod alloc;
pub mod exists;
pub mod explain;
/// NVIDIA's documented vGPU type tables and type names: shared NVIDIA domain
/// types, in the leaf `nvidia` module.
pub use crate::nvidia::known;
mod ops;
pub use crate::nvidia::typename;
pub mod view;

pub use ops::{
    clear_vf_type, create, create_locked, ensure_vf_type, make_gi_for, remove, remove_locked, set_heterogeneous, views, ModeChange, ModeError,
    VgpuCreateRequest, VgpuCreated, VgpuError, VgpuRemoved,
};
