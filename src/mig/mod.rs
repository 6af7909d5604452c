//! MIG: profiles and placements, per-GPU layouts, the fragmentation-aware
//! placement planner, nvidia-smi output parsers, and the backends that
//! create and destroy GPU/compute instances (nvidia-smi, simulated).

pub mod backend;
pub mod layout;
pub mod planner;
pub mod profiles;
pub mod smi;
