//! Compute instances: the SM partitions inside a GPU instance. A GPU
//! instance without one cannot run CUDA work on the host; a MIG-backed vGPU
//! needs none (the guest makes its own), so `mig create` asks which.

use serde::Serialize;

use super::backend::ComputeInstance;
use super::layout::mask;
use super::profiles::Profile;
use crate::ids::MigProfile;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CiProfile {
    /// The compute-instance profile id `-cci` takes.
    pub id: u32,
    pub name: MigProfile,
    /// Compute slices.
    pub slices: u8,
    pub starts: Vec<u8>,
}

/// The `NVML_COMPUTE_INSTANCE_PROFILE_*` id of an N-slice profile.
fn nvml_ci_id(slices: u8) -> Option<u32> {
    Some(match slices {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        7 => 4,
        8 => 5,
        6 => 6,
        _ => return None,
    })
}

/// The compute-instance profiles of a GPU instance, as NVIDIA's MIG user
/// guide lists them (`nvidia-smi mig -lcip`): every standard size up to the
/// instance's slices; the full-size one carries the GPU instance's name.
/// Starts are aligned to the size (3 slices to 4), which is how `-lcipp`
/// shows them. Used for simulated hosts and where the driver's list is not
/// at hand.
pub fn modeled(gi: &Profile) -> Vec<CiProfile> {
    let g = gi.compute_slices();
    [1u8, 2, 3, 4, 6, 7, 8]
        .into_iter()
        .filter(|c| *c <= g)
        .filter_map(|c| {
            let name = if c == g { gi.name.clone() } else { MigProfile { compute_slices: Some(c), ..gi.name.clone() } };
            let align = if c == 3 { 4 } else { c.next_power_of_two() };
            let starts: Vec<u8> = (0..g).step_by(align as usize).filter(|s| s + c <= g).collect();
            Some(CiProfile { id: nvml_ci_id(c)?, name, slices: c, starts })
        })
        .collect()
}

/// Finds a compute-instance profile by name (`1c.3g.40gb`, or the GPU
/// instance's name for the full one) or id.
pub fn find<'a>(table: &'a [CiProfile], wanted: &str) -> Option<&'a CiProfile> {
    if let Ok(id) = wanted.parse::<u32>() {
        return table.iter().find(|p| p.id == id);
    }
    let w: MigProfile = wanted.parse().ok()?;
    table.iter().find(|p| p.name == w || p.name.compute_slices.is_none() && w.compute_slices == Some(p.slices) && w.gpu_instance_profile() == p.name)
}

/// What `mig create --compute-instances` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiRequest {
    /// No compute instance (what a MIG-backed vGPU wants).
    None,
    /// One compute instance over the whole GPU instance (`nvidia-smi -C`).
    All,
    /// These profiles, with counts: `2x1c.3g.40gb,1c.3g.40gb`.
    Profiles(Vec<(String, u32)>),
}

impl std::str::FromStr for CiRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "none" => Ok(CiRequest::None),
            "all" => Ok(CiRequest::All),
            "" => Err("--compute-instances: all, none, or profiles like 1c.3g.40gb or 2x1c.3g.40gb".into()),
            list => {
                let mut out = Vec::new();
                for part in list.split(',').map(str::trim) {
                    let (n, name) = match part.split_once(['x', '×']) {
                        Some((n, name)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (n.parse::<u32>().map_err(|e| e.to_string())?, name),
                        _ => (1, part),
                    };
                    if n == 0 || n > 8 {
                        return Err(format!("--compute-instances {part:?}: a count must be 1-8"));
                    }
                    if name.parse::<MigProfile>().is_err() && name.parse::<u32>().is_err() {
                        return Err(format!("--compute-instances {part:?}: not a compute-instance profile (like 1c.3g.40gb) or id"));
                    }
                    out.push((name.to_string(), n));
                }
                Ok(CiRequest::Profiles(out))
            }
        }
    }
}

/// The profiles to create, in order, or why the request cannot be met in
/// a GPU instance of `slices` compute slices that already has `existing`.
pub fn resolve<'a>(table: &'a [CiProfile], req: &CiRequest, gi_slices: u8, existing: &[ComputeInstance]) -> Result<Vec<&'a CiProfile>, String> {
    let wanted: Vec<&CiProfile> = match req {
        CiRequest::None => return Ok(Vec::new()),
        CiRequest::All => vec![table.iter().max_by_key(|p| p.slices).ok_or("the GPU instance offers no compute-instance profile")?],
        CiRequest::Profiles(list) => {
            let mut v = Vec::new();
            for (name, n) in list {
                let p = find(table, name).ok_or_else(|| format!("no compute-instance profile {name:?} (profiles: {})", names(table)))?;
                v.extend(std::iter::repeat_n(p, *n as usize));
            }
            v
        }
    };
    // Place them as the driver would, to refuse up front what cannot fit.
    let mut used: u8 = existing.iter().map(|c| mask(c.size, c.start)).fold(0, |a, m| a | m);
    let mut sorted = wanted.clone();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.slices));
    for p in &sorted {
        let start = p.starts.iter().copied().find(|s| used & mask(p.slices, *s) == 0 && s + p.slices <= gi_slices);
        match start {
            Some(s) => used |= mask(p.slices, s),
            None => return Err(format!("no room for {} (GPU instance has {gi_slices} compute slices, {} in use)", p.name, used.count_ones())),
        }
    }
    Ok(sorted)
}

pub fn names(table: &[CiProfile]) -> String {
    table.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mig::profiles::hopper_80gb;

    fn gi(name: &str) -> Profile {
        hopper_80gb().into_iter().find(|p| p.name.to_string() == name).unwrap()
    }

    #[test]
    fn test_modeled_profiles_of_a_3g_and_a_7g() {
        let t = modeled(&gi("3g.40gb"));
        let got: Vec<(String, u32, Vec<u8>)> = t.iter().map(|p| (p.name.to_string(), p.id, p.starts.clone())).collect();
        assert_eq!(got, vec![("1c.3g.40gb".into(), 0, vec![0, 1, 2]), ("2c.3g.40gb".into(), 1, vec![0]), ("3g.40gb".into(), 2, vec![0])]);
        let t7 = modeled(&gi("7g.80gb"));
        assert_eq!(t7.iter().map(|p| p.slices).collect::<Vec<_>>(), vec![1, 2, 3, 4, 6, 7]);
        assert_eq!(find(&t7, "3c.7g.80gb").map(|p| p.starts.clone()), Some(vec![0, 4]));
        assert_eq!(find(&t7, "7c.7g.80gb").map(|p| p.id), Some(4), "7c.7g.80gb is the full-size one");
        assert_eq!(find(&t7, "4").map(|p| p.slices), Some(7));
        assert!(find(&t7, "1c.3g.40gb").is_none(), "a profile of another GPU instance");
    }

    #[test]
    fn test_requests_parse_and_resolve_or_refuse() {
        let t = modeled(&gi("3g.40gb"));
        assert_eq!("none".parse::<CiRequest>(), Ok(CiRequest::None));
        let r: CiRequest = "3x1c.3g.40gb".parse().unwrap();
        assert_eq!(resolve(&t, &r, 3, &[]).unwrap().len(), 3);
        let over: CiRequest = "2x2c.3g.40gb".parse().unwrap();
        assert!(resolve(&t, &over, 3, &[]).unwrap_err().contains("no room"));
        let all = resolve(&t, &CiRequest::All, 3, &[]).unwrap();
        assert_eq!(all[0].name.to_string(), "3g.40gb");
        let busy = [ComputeInstance { ci: 0, profile_id: 0, profile: "1c.3g.40gb".into(), start: 0, size: 1 }];
        assert!(resolve(&t, &CiRequest::All, 3, &busy).is_err());
        assert!(resolve(&t, &"2c.3g.40gb".parse().unwrap(), 3, &busy).is_err(), "2c only starts at 0");
        assert!(resolve(&t, &"1c.7g.80gb".parse().unwrap(), 3, &[]).unwrap_err().contains("profiles: 1c.3g.40gb"));
        for bad in ["", "0x1c.3g.40gb", "9x1c.3g.40gb", "../x", "1c.3g"] {
            assert!(bad.parse::<CiRequest>().is_err(), "{bad:?}");
        }
    }
}
