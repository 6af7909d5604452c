//! MIG GPU-instance profiles and their placements.
//!
//! A GPU has 8 memory slices; a profile occupies `size` consecutive slices
//! starting at one of its allowed `starts` (what `nvidia-smi mig -lgipp`
//! prints as `{0,2,4}:2`). The built-in table is the one a real H100 80GB
//! HBM3 reported (driver 580.159.04, tests/fixtures/h100-passthrough/
//! probe.txt); NVIDIA documents the same layout for A100 80GB.

use serde::Serialize;

use crate::ids::MigProfile;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Profile {
    /// The GPU-instance profile id (`-cgi 9`).
    pub id: u32,
    pub name: MigProfile,
    /// Memory slices occupied (placement size).
    pub size: u8,
    /// Allowed start slices.
    pub starts: Vec<u8>,
    /// Most instances per GPU.
    pub max_instances: u32,
    pub memory_mib: u64,
    pub sms: u32,
}

impl Profile {
    pub fn compute_slices(&self) -> u8 {
        self.name.gpu_slices
    }

    /// Slice mask of this profile placed at `start`.
    pub fn mask(&self, start: u8) -> u8 {
        mask(self.size, start)
    }
}

fn p(id: u32, name: &str, size: u8, starts: &[u8], max: u32, memory_mib: u64, sms: u32) -> Profile {
    Profile { id, name: name.parse().expect("built-in profile names are valid"), size, starts: starts.to_vec(), max_instances: max, memory_mib, sms }
}

/// H100 80GB (and A100 80GB): ids, placements and counts from the real capture.
pub fn hopper_80gb() -> Vec<Profile> {
    vec![
        p(19, "1g.10gb", 1, &[0, 1, 2, 3, 4, 5, 6], 7, 9984, 16),
        p(20, "1g.10gb+me", 1, &[0, 1, 2, 3, 4, 5, 6], 1, 9984, 16),
        p(15, "1g.20gb", 2, &[0, 2, 4, 6], 4, 20096, 26),
        p(14, "2g.20gb", 2, &[0, 2, 4], 3, 20096, 32),
        p(9, "3g.40gb", 4, &[0, 4], 2, 40448, 60),
        p(5, "4g.40gb", 4, &[0], 1, 40448, 64),
        p(0, "7g.80gb", 8, &[0], 1, 81152, 132),
    ]
}

/// NVIDIA's documented tables of two other MIG GPUs (MIG user guide,
/// "Supported MIG Profiles"), for tests and benchmarks of placement across
/// GPU models only: vgpuctl reads a real GPU's table from its driver.
/// Placement needs ids, sizes, starts and counts; memory and SMs are left 0.
pub fn reference_tables() -> Vec<(&'static str, Vec<Profile>)> {
    vec![
        (
            "A100 40GB",
            vec![
                p(19, "1g.5gb", 1, &[0, 1, 2, 3, 4, 5, 6], 7, 0, 0),
                p(20, "1g.5gb+me", 1, &[0, 1, 2, 3, 4, 5, 6], 1, 0, 0),
                p(15, "1g.10gb", 2, &[0, 2, 4, 6], 4, 0, 0),
                p(14, "2g.10gb", 2, &[0, 2, 4], 3, 0, 0),
                p(9, "3g.20gb", 4, &[0, 4], 2, 0, 0),
                p(5, "4g.20gb", 4, &[0], 1, 0, 0),
                p(0, "7g.40gb", 8, &[0], 1, 0, 0),
            ],
        ),
        (
            // Four memory slices.
            "A30",
            vec![
                p(14, "1g.6gb", 1, &[0, 1, 2, 3], 4, 0, 0),
                p(21, "1g.6gb+me", 1, &[0, 1, 2, 3], 1, 0, 0),
                p(5, "2g.12gb", 2, &[0, 2], 2, 0, 0),
                p(6, "2g.12gb+me", 2, &[0, 2], 1, 0, 0),
                p(0, "4g.24gb", 4, &[0], 1, 0, 0),
            ],
        ),
    ]
}

/// The profile table for a GPU model name, when MIG-capable and known.
pub fn for_model(name: &str) -> Option<Vec<Profile>> {
    // Other MIG GPUs (A30, H200, …) have other tables: read them from the
    // driver (`nvidia-smi mig -lgip`/`-lgipp`) instead of guessing.
    let n = name.to_ascii_uppercase();
    (n.contains("H100") && !n.contains("NVL") || n.contains("A100") && n.contains("80")).then(hopper_80gb)
}

/// Finds a profile by name (`3g.40gb`, `1g.10gb+me`) or id (`9`).
pub fn find<'a>(table: &'a [Profile], wanted: &str) -> Option<&'a Profile> {
    if let Ok(id) = wanted.parse::<u32>() {
        return table.iter().find(|p| p.id == id);
    }
    // Profile names are lower case as nvidia-smi prints them; `3G.40GB` is the same.
    let w: MigProfile = wanted.trim().to_ascii_lowercase().parse().ok()?;
    table.iter().find(|p| p.name == w)
}

/// The slice bits a profile of `size` slices at `start` takes.
pub fn mask(size: u8, start: u8) -> u8 {
    let bits = if size >= 8 { 0xffu16 } else { (1u16 << size) - 1 };
    // A start past the last slice (only from a driver answer that is
    // garbage) selects nothing rather than overflowing.
    (bits.checked_shl(u32::from(start)).unwrap_or(0) & 0xff) as u8
}
