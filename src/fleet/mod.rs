//! What the host's GPUs look like to the engines fleets schedule VMs with:
//! the configuration they need, generated from vgpuctl's host config and
//! the host as it is, so the two never disagree.

pub mod kubevirt;
pub mod nova;
