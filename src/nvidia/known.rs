//! vGPU type tables of the simulated GPUs.
//!
//! Names, framebuffer sizes, maximum instances and MIG profiles come from
//! NVIDIA's vGPU type references (NVIDIA AI Enterprise 6/7 "vGPU types" for
//! H100 80GB and A100 80GB; see docs/simulation.md). The numeric type ids are
//! simulated: the real ones differ per GPU model and driver release, which is
//! why vgpuctl always matches types by name.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownType {
    /// Simulated numeric id (`creatable_vgpu_types` id, or N in `nvidia-N`).
    pub id: u32,
    /// The part after the GPU model: `10C`, `1-10CME`.
    pub suffix: &'static str,
    pub framebuffer_mib: u64,
    /// Most instances per GPU in equal-size mode.
    pub max_instances: u32,
    /// Most instances per GPU in mixed-size (heterogeneous) mode; `None` when
    /// the GPU has no such mode or the type is MIG-backed.
    pub max_mixed: Option<u32>,
    /// The MIG GPU-instance profile a MIG-backed type sits on.
    pub mig_profile: Option<&'static str>,
}

const fn ts(id: u32, suffix: &'static str, gb: u64, max: u32) -> KnownType {
    KnownType { id, suffix, framebuffer_mib: gb * 1024, max_instances: max, max_mixed: None, mig_profile: None }
}

const fn tsm(id: u32, suffix: &'static str, gb: u64, max: u32, mixed: u32) -> KnownType {
    KnownType { id, suffix, framebuffer_mib: gb * 1024, max_instances: max, max_mixed: Some(mixed), mig_profile: None }
}

const fn mig(id: u32, suffix: &'static str, gb: u64, max: u32, profile: &'static str) -> KnownType {
    KnownType { id, suffix, framebuffer_mib: gb * 1024, max_instances: max, max_mixed: None, mig_profile: Some(profile) }
}

/// H100 80GB: C-series only. The 16C maximum is 5 (NVIDIA's table prints 6,
/// which cannot fit 80 GB; see nvidia-host-interfaces notes).
pub const H100_80GB: &[KnownType] = &[
    mig(1200, "1-10C", 10, 7, "1g.10gb"),
    mig(1201, "1-10CME", 10, 1, "1g.10gb+me"),
    mig(1202, "1-20C", 20, 4, "1g.20gb"),
    mig(1203, "2-20C", 20, 3, "2g.20gb"),
    mig(1204, "3-40C", 40, 2, "3g.40gb"),
    mig(1205, "4-40C", 40, 1, "4g.40gb"),
    mig(1206, "7-80C", 80, 1, "7g.80gb"),
    tsm(1210, "4C", 4, 20, 16),
    tsm(1211, "5C", 5, 16, 16),
    tsm(1212, "8C", 8, 10, 8),
    tsm(1213, "10C", 10, 8, 8),
    tsm(1214, "16C", 16, 5, 4),
    tsm(1215, "20C", 20, 4, 4),
    tsm(1216, "40C", 40, 2, 2),
    tsm(1217, "80C", 80, 1, 1),
];

/// A100 80GB (NVIDIA names it `A100D` in vGPU type names).
pub const A100_80GB: &[KnownType] = &[
    mig(699, "1-10C", 10, 7, "1g.10gb"),
    mig(700, "2-20C", 20, 3, "2g.20gb"),
    mig(701, "3-40C", 40, 2, "3g.40gb"),
    mig(702, "4-40C", 40, 1, "4g.40gb"),
    mig(703, "7-80C", 80, 1, "7g.80gb"),
    mig(707, "1-10CME", 10, 1, "1g.10gb+me"),
    mig(708, "1-20C", 20, 4, "1g.20gb"),
    tsm(709, "4C", 4, 20, 16),
    tsm(710, "8C", 8, 10, 8),
    tsm(711, "10C", 10, 8, 8),
    tsm(712, "16C", 16, 5, 4),
    tsm(713, "20C", 20, 4, 4),
    tsm(714, "40C", 40, 2, 2),
    tsm(715, "80C", 80, 1, 1),
];

/// Tesla T4 16GB (Turing, no SR-IOV): Q, C, B and A series. Sizes and
/// maximums from NVIDIA's vGPU user guide type tables for T4.
pub const T4: &[KnownType] = &[
    ts(222, "1B", 1, 16),
    ts(223, "2B", 2, 8),
    ts(224, "1Q", 1, 16),
    ts(225, "2Q", 2, 8),
    ts(226, "4Q", 4, 4),
    ts(227, "8Q", 8, 2),
    ts(228, "16Q", 16, 1),
    ts(229, "1A", 1, 16),
    ts(230, "2A", 2, 8),
    ts(231, "4A", 4, 4),
    ts(232, "8A", 8, 2),
    ts(233, "16A", 16, 1),
    ts(319, "4C", 4, 4),
    ts(320, "8C", 8, 2),
    ts(321, "16C", 16, 1),
];

/// The models vgpuctl has NVIDIA's type table for.
pub const MODELS: &[&str] = &["H100", "A100D", "T4"];

/// The catalog of a simulated model, by the model part of its type names.
pub fn catalog(model: &str) -> Option<&'static [KnownType]> {
    match model {
        "H100" => Some(H100_80GB),
        "A100D" => Some(A100_80GB),
        "T4" => Some(T4),
        _ => None,
    }
}

/// Mixed-size (heterogeneous) time-sliced mode exists on vGPU 17+ for these.
pub fn supports_mixed_size(model: &str) -> bool {
    matches!(model, "H100" | "A100D")
}

/// Physical framebuffer a model's vGPUs share, in GB.
pub fn total_framebuffer_gb(model: &str) -> Option<u32> {
    match model {
        "H100" | "A100D" => Some(80),
        "T4" => Some(16),
        _ => None,
    }
}

/// The name behind a simulated numeric id (real ids are not known ahead).
pub fn name_for_id(id: u32) -> Option<String> {
    [("H100", H100_80GB), ("A100D", A100_80GB), ("T4", T4)].iter().find_map(|(m, cat)| cat.iter().find(|t| t.id == id).map(|t| format!("{m}-{}", t.suffix)))
}

/// The known entry for a parsed type name.
pub fn lookup(name: &super::typename::VgpuTypeName) -> Option<&'static KnownType> {
    let suffix = name.to_string();
    let suffix = suffix.strip_prefix(&format!("{}-", name.model))?.to_string();
    catalog(&name.model)?.iter().find(|t| t.suffix == suffix)
}

impl KnownType {
    pub fn description(&self) -> String {
        format!("num_heads=1, frl_config=60, framebuffer={}M, max_resolution=4096x2160, max_instance={}", self.framebuffer_mib, self.max_instances)
    }
}
