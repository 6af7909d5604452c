//! vGPU type tables of the simulated GPUs.
//!
//! Names, framebuffer sizes, maximum instances and MIG profiles come from
//! NVIDIA's vGPU type references (NVIDIA AI Enterprise 6/7 "vGPU types" for
//! H100 80GB and A100 80GB; see docs/simulation.md). The numeric type ids are
//! simulated: the real ones differ per GPU model and driver release, which is
//! why vgpuctl always matches types by name.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimType {
    /// Simulated numeric id (`creatable_vgpu_types` id, or N in `nvidia-N`).
    pub id: u32,
    /// The part after the GPU model: `10C`, `1-10CME`.
    pub suffix: &'static str,
    pub framebuffer_mib: u64,
    /// Most instances per GPU in equal-size mode.
    pub max_instances: u32,
    /// The MIG GPU-instance profile a MIG-backed type sits on.
    pub mig_profile: Option<&'static str>,
}

const fn ts(id: u32, suffix: &'static str, gb: u64, max: u32) -> SimType {
    SimType { id, suffix, framebuffer_mib: gb * 1024, max_instances: max, mig_profile: None }
}

const fn mig(id: u32, suffix: &'static str, gb: u64, max: u32, profile: &'static str) -> SimType {
    SimType { id, suffix, framebuffer_mib: gb * 1024, max_instances: max, mig_profile: Some(profile) }
}

/// H100 80GB: C-series only. The 16C maximum is 5 (NVIDIA's table prints 6,
/// which cannot fit 80 GB; see nvidia-host-interfaces notes).
pub const H100_80GB: &[SimType] = &[
    mig(1200, "1-10C", 10, 7, "1g.10gb"),
    mig(1201, "1-10CME", 10, 1, "1g.10gb+me"),
    mig(1202, "1-20C", 20, 4, "1g.20gb"),
    mig(1203, "2-20C", 20, 3, "2g.20gb"),
    mig(1204, "3-40C", 40, 2, "3g.40gb"),
    mig(1205, "4-40C", 40, 1, "4g.40gb"),
    mig(1206, "7-80C", 80, 1, "7g.80gb"),
    ts(1210, "4C", 4, 20),
    ts(1211, "5C", 5, 16),
    ts(1212, "8C", 8, 10),
    ts(1213, "10C", 10, 8),
    ts(1214, "16C", 16, 5),
    ts(1215, "20C", 20, 4),
    ts(1216, "40C", 40, 2),
    ts(1217, "80C", 80, 1),
];

/// A100 80GB (NVIDIA names it `A100D` in vGPU type names).
pub const A100_80GB: &[SimType] = &[
    mig(699, "1-10C", 10, 7, "1g.10gb"),
    mig(700, "2-20C", 20, 3, "2g.20gb"),
    mig(701, "3-40C", 40, 2, "3g.40gb"),
    mig(702, "4-40C", 40, 1, "4g.40gb"),
    mig(703, "7-80C", 80, 1, "7g.80gb"),
    mig(707, "1-10CME", 10, 1, "1g.10gb+me"),
    mig(708, "1-20C", 20, 4, "1g.20gb"),
    ts(709, "4C", 4, 20),
    ts(710, "8C", 8, 10),
    ts(711, "10C", 10, 8),
    ts(712, "16C", 16, 5),
    ts(713, "20C", 20, 4),
    ts(714, "40C", 40, 2),
    ts(715, "80C", 80, 1),
];

/// Tesla T4 16GB (Turing, no SR-IOV): Q, C, B and A series. Sizes and
/// maximums from NVIDIA's vGPU user guide type tables for T4.
pub const T4: &[SimType] = &[
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

/// The catalog of a simulated model, by the model part of its type names.
pub fn catalog(model: &str) -> Option<&'static [SimType]> {
    match model {
        "H100" => Some(H100_80GB),
        "A100D" => Some(A100_80GB),
        "T4" => Some(T4),
        _ => None,
    }
}

impl SimType {
    pub fn description(&self) -> String {
        format!(
            "num_heads=1, frl_config=60, framebuffer={}M, max_resolution=4096x2160, max_instance={}",
            self.framebuffer_mib, self.max_instances
        )
    }
}
