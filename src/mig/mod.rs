//! MIG: profiles and placements, per-GPU layouts, the fragmentation-aware
//! placement planner, compute instances, nvidia-smi output parsers, and the
//! backends that read and change GPU/compute instances (NVML through the
//! helper, nvidia-smi; the simulated one lives in `sim::mig`).

pub mod backend;
pub mod batch;
pub mod compute;
pub mod instances;
pub mod layout;
pub mod moves;
pub mod nvml_backend;
pub mod planner;
pub mod policy;
pub mod reshape;
/// GPU-instance profile tables: shared NVIDIA domain types, in the leaf `nvidia` module.
pub use crate::nvidia::profiles;
pub mod smi;
pub mod smi_backend;
pub mod value;
