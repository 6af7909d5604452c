//! vgpuctl: NVIDIA GPUs for KVM guests.
//!
//! Layers, one way: `host` (root-relocatable sysfs/procfs access and external
//! commands) → `inventory` (typed view of the host) → actuators → `cli`.
//! See docs/architecture.md.

pub mod cli;
pub mod host;
pub mod ids;
pub mod inventory;
pub mod parse;
pub mod sim;
pub mod types;
