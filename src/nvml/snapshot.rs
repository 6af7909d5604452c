//! What the `vgpuctl-nvml` helper reports: one JSON document with the NVML
//! facts a command reads (`--want`), taken in one run: one NVML session per
//! vgpuctl command, not one per question. Fields the driver does not
//! support, and parts not asked for, are absent, not errors.

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 2;
/// The oldest schema still read (version 1 had no `type_id` on vGPUs).
pub const OLDEST_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlSnapshot {
    pub schema_version: u32,
    #[serde(default)]
    pub driver_version: Option<String>,
    #[serde(default)]
    pub nvml_version: Option<String>,
    #[serde(default)]
    pub gpus: Vec<NvmlGpu>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlGpu {
    pub index: u32,
    /// NVML's form, `00000000:1B:00.0`.
    pub pci_bus_id: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Absent when the GPU does not support MIG.
    #[serde(default)]
    pub mig: Option<NvmlMigMode>,
    #[serde(default)]
    pub gi_profiles: Vec<NvmlGiProfile>,
    #[serde(default)]
    pub gpu_instances: Vec<NvmlGpuInstance>,
    #[serde(default)]
    pub memory: Option<NvmlMemory>,
    #[serde(default)]
    pub utilization: Option<NvmlUtilization>,
    /// vGPU mixed-size (heterogeneous) mode; absent without a vGPU manager.
    #[serde(default)]
    pub heterogeneous: Option<bool>,
    #[serde(default)]
    pub processes: Vec<NvmlProcess>,
    #[serde(default)]
    pub vgpus: Vec<NvmlVgpu>,
    /// Queries that failed for another reason than "not supported".
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlMigMode {
    pub current: bool,
    pub pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlPlacement {
    pub start: u8,
    pub size: u8,
}

/// `nvmlDeviceGetGpuInstanceProfileInfo` for one profile index
/// (`NVML_GPU_INSTANCE_PROFILE_*`), with its possible placements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlGiProfile {
    /// The `NVML_GPU_INSTANCE_PROFILE_*` index (tells `+me` apart).
    pub index: u32,
    /// The profile id nvidia-smi prints and `-cgi` takes.
    pub id: u32,
    /// The driver's own name (`MIG 1g.10gb`), where its NVML reports one.
    #[serde(default)]
    pub name: Option<String>,
    pub slices: u32,
    pub memory_mib: u64,
    pub sms: u32,
    pub max_instances: u32,
    pub placements: Vec<NvmlPlacement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlGpuInstance {
    pub gi: u32,
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
    #[serde(default)]
    pub compute_instances: Vec<NvmlComputeInstance>,
    /// GPM SM utilization of this GPU instance over the sampling window.
    #[serde(default)]
    pub sm_percent: Option<f64>,
    #[serde(default)]
    pub memory: Option<NvmlMemory>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlComputeInstance {
    pub ci: u32,
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlMemory {
    pub total_mib: u64,
    pub used_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlUtilization {
    pub gpu_percent: u32,
    pub memory_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlProcess {
    pub pid: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub used_mib: Option<u64>,
    #[serde(default)]
    pub gi: Option<u32>,
    #[serde(default)]
    pub ci: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NvmlVgpu {
    pub instance: u32,
    #[serde(default)]
    pub mdev_uuid: Option<String>,
    #[serde(default)]
    pub vm_id: Option<String>,
    /// The vGPU type id (what a VF's `current_vgpu_type` holds); schema 2 on.
    #[serde(default)]
    pub type_id: Option<u32>,
    #[serde(default)]
    pub type_name: Option<String>,
    #[serde(default)]
    pub fb_used_mib: Option<u64>,
    #[serde(default)]
    pub gi: Option<u32>,
    #[serde(default)]
    pub sm_percent: Option<u32>,
    #[serde(default)]
    pub memory_percent: Option<u32>,
    #[serde(default)]
    pub encoder_percent: Option<u32>,
    #[serde(default)]
    pub decoder_percent: Option<u32>,
}
