//! The planner's policy, from `/etc/vgpuctl/mig-planner.toml` (optional):
//!
//! ```toml
//! # Expected request mix: relative weights per profile (others count 0).
//! mix = { "1g.10gb" = 0.50, "2g.20gb" = 0.25, "3g.40gb" = 0.15, "4g.40gb" = 0.05, "7g.80gb" = 0.05 }
//! # Opt-in admission control: refuse smaller instances rather than take the
//! # last N empty GPUs / the last N GPUs with an empty first half (4g room).
//! reserve_whole_gpus = 0
//! reserve_half_gpus = 0
//! # How a placement is scored: "capacity" (future capacity lost, the
//! # default), "fragmentation" (free slices made unusable, mix-weighted) or
//! # "value" (capacity, corrected by what one GPU's layout is worth under
//! # the mix at the expected load).
//! score = "capacity"
//! # With score = "value": turn away requests worth less than the room they
//! # take (admission control), and the load the value is computed for.
//! admission = false
//! load = 1.0
//! ```
//!
//! Without the file every profile of the GPU weighs the same and nothing is
//! reserved. `mig create`, `mig plan`, `vgpu create`, `apply` and the hook
//! all place GPU instances with this policy.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::planner::{Mix, Planner, Reserve, Score};
use super::profiles::{self, Profile};
use crate::host::Host;

pub const FILE: &str = "/etc/vgpuctl/mig-planner.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerConfig {
    #[serde(default)]
    pub mix: BTreeMap<String, f64>,
    #[serde(default)]
    pub reserve_whole_gpus: u32,
    #[serde(default)]
    pub reserve_half_gpus: u32,
    /// How placements are scored: `capacity` (default), `fragmentation` or `value`.
    #[serde(default)]
    pub score: Score,
    /// With `score = "value"`: turn away a request whose placement is worth
    /// less than the room it takes (admission control; off by default).
    #[serde(default)]
    pub admission: bool,
    /// With `score = "value"`: the expected offered load (1.0 = arrivals
    /// that would keep every compute slice busy).
    #[serde(default = "default_load")]
    pub load: f64,
    /// On-demand repack: when a new GPU instance has no place, move up to
    /// this many idle instances within one GPU to make room (0: never).
    #[serde(default)]
    pub repack_moves: u32,
}

fn default_load() -> f64 {
    1.0
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            mix: BTreeMap::new(),
            reserve_whole_gpus: 0,
            reserve_half_gpus: 0,
            score: Score::default(),
            admission: false,
            load: default_load(),
            repack_moves: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{FILE}: {0}")]
    Invalid(String),
    #[error("cannot read {FILE}")]
    Read(#[source] crate::host::HostError),
}

impl PlannerConfig {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let c: PlannerConfig = toml::from_str(text).map_err(|e| PolicyError::Invalid(e.message().to_string()))?;
        for (name, w) in &c.mix {
            if !w.is_finite() || *w < 0.0 {
                return Err(PolicyError::Invalid(format!("mix weight of {name:?} must be a number >= 0, not {w}")));
            }
        }
        if !c.load.is_finite() || c.load <= 0.0 || c.load > 10.0 {
            return Err(PolicyError::Invalid(format!(
                "load must be a number above 0 and at most 10 (1.0: enough requests to keep every compute slice busy), not {}",
                c.load
            )));
        }
        if c.admission && c.score != Score::Value {
            return Err(PolicyError::Invalid("admission = true needs score = \"value\" (it compares a request with the room it takes on its GPU)".into()));
        }
        if c.repack_moves > 8 {
            return Err(PolicyError::Invalid(format!("repack_moves: at most 8 (a GPU holds at most 7 instances), not {}", c.repack_moves)));
        }
        if c.reserve_whole_gpus > 64 || c.reserve_half_gpus > 64 {
            return Err(PolicyError::Invalid("reserve_whole_gpus / reserve_half_gpus: at most 64".into()));
        }
        Ok(c)
    }

    /// The planner for one GPU's profile table. A mix naming a profile the
    /// GPU does not have is an error (a typo would silently weigh nothing).
    pub fn planner(&self, table: &[Profile]) -> Result<Planner, PolicyError> {
        let mix = if self.mix.is_empty() {
            Mix::uniform(table)
        } else {
            let mut weights = Vec::new();
            for (name, w) in &self.mix {
                let p = profiles::find(table, name).ok_or_else(|| {
                    PolicyError::Invalid(format!(
                        "mix names {name:?}, which this GPU does not offer (profiles: {})",
                        table.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                weights.push((p.id, *w));
            }
            Mix { weights }
        };
        Ok(Planner::new(table, &mix)
            .with_reserve(Reserve { whole: self.reserve_whole_gpus, half: self.reserve_half_gpus })
            .with_load(self.load)
            .with_score(self.score)
            .with_admission(self.admission))
    }
}

/// The host's planner policy; the default when the file is absent.
pub fn load(host: &Host) -> Result<PlannerConfig, PolicyError> {
    match host.read_attr_opt(FILE).map_err(PolicyError::Read)? {
        Some(text) => PlannerConfig::parse(&text),
        None => Ok(PlannerConfig::default()),
    }
}

/// The planner for `table` under the host's policy.
pub fn planner(host: &Host, table: &[Profile]) -> Result<Planner, PolicyError> {
    load(host)?.planner(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mig::layout::Layout;
    use crate::mig::profiles::hopper_80gb;

    #[test]
    fn test_policy_parse_errors_name_the_item() {
        let t = hopper_80gb();
        let c = PlannerConfig::parse("mix = { \"1g.10gb\" = 0.5, \"7g.80gb\" = 0.1 }\nreserve_whole_gpus = 1\n").unwrap();
        assert!(c.planner(&t).is_ok());
        let e = PlannerConfig::parse("mix = { \"1g.10gb\" = -1 }").unwrap_err();
        assert!(e.to_string().contains("\"1g.10gb\""), "{e}");
        let e = PlannerConfig::parse("mix = { \"5g.50gb\" = 1 }").unwrap().planner(&t).err().unwrap();
        assert!(e.to_string().contains("5g.50gb") && e.to_string().contains("3g.40gb"), "{e}");
        assert!(PlannerConfig::parse("reserve = 1").unwrap_err().to_string().contains("reserve"));
        assert_eq!(PlannerConfig::parse("score = \"fragmentation\"").unwrap().score, Score::Fragmentation);
        let e = PlannerConfig::parse("score = \"frag\"").unwrap_err().to_string();
        assert!(e.contains("capacity") && e.contains("fragmentation") && e.contains("value"), "{e}");
        assert!(PlannerConfig::parse("admission = true").unwrap_err().to_string().contains("score = \"value\""));
        assert!(PlannerConfig::parse("score = \"value\"\nload = 0").unwrap_err().to_string().contains("load"));
        let c = PlannerConfig::parse("score = \"value\"\nadmission = true\nload = 0.8").unwrap();
        assert!(c.planner(&t).is_ok());
    }

    /// The defect this replaced: once no GPU was empty, every 1g-3g request
    /// was refused (each candidate counted as "taking" the reserve), and 4g
    /// requests were held back too (memory size was tested, not compute).
    #[test]
    fn test_reserve_holds_back_only_placements_that_take_reserved_room() {
        let t = hopper_80gb();
        let one = profiles::find(&t, "1g.10gb").unwrap();
        let three = profiles::find(&t, "3g.40gb").unwrap();
        let four = profiles::find(&t, "4g.40gb").unwrap();
        // Every GPU partly used: nothing left to reserve, a 1g goes in.
        let mut part = Layout::default();
        part.place(three, 4);
        let gpus = vec![part.clone(); 4];
        let whole = PlannerConfig { reserve_whole_gpus: 1, ..Default::default() }.planner(&t).unwrap();
        assert!(whole.choose(&gpus, one).is_some(), "no empty GPU to keep: a 1g is placed");
        assert!(whole.choose(&gpus, four).is_some());
        // One empty GPU kept: a small request goes to a used GPU, never the empty one.
        let mut with_empty = gpus.clone();
        with_empty.push(Layout::default());
        let (g, _) = whole.choose(&with_empty, one).unwrap();
        assert_ne!(g, 4, "the last empty GPU stays empty");
        // A 4g may take the last empty GPU: it is what the room is for.
        let mut full = Layout::default();
        full.place(profiles::find(&t, "7g.80gb").unwrap(), 0);
        assert_eq!(whole.choose(&[full.clone(), Layout::default()], four), Some((1, 0)));
        // Half reserve: a 1g may use a right half, never the last free left half.
        let half = PlannerConfig { reserve_half_gpus: 1, ..Default::default() }.planner(&t).unwrap();
        let mut left_free = Layout::default();
        left_free.place(three, 4);
        assert_eq!(half.choose(&[full.clone(), left_free.clone()], one), None, "the only free left half is the reserved one, and the right half is full");
        let mut right_room = Layout::default();
        right_room.place(one, 4);
        let (g, s) = half.choose(&[full, right_room], one).unwrap();
        assert_eq!(g, 1);
        assert!(s >= 4, "placed in the right half, at {s}");
        assert!(half.choose(&[left_free], four).is_some(), "a 4g takes the reserved half");
    }

    #[test]
    fn test_reserving_a_whole_gpu_refuses_a_small_instance_on_the_last_empty_one() {
        let t = hopper_80gb();
        let one = profiles::find(&t, "1g.10gb").unwrap();
        let seven = profiles::find(&t, "7g.80gb").unwrap();
        let mut full = Layout::default();
        full.place(seven, 0);
        let gpus = [full, Layout::default()];
        let p = PlannerConfig { reserve_whole_gpus: 1, ..Default::default() }.planner(&t).unwrap();
        assert_eq!(p.choose(&gpus, one), None, "the last empty GPU is kept for a 7g");
        assert_eq!(p.choose(&gpus, seven), Some((1, 0)), "the 7g itself may take it");
        assert_eq!(PlannerConfig::default().planner(&t).unwrap().choose(&gpus, one).map(|(g, _)| g), Some(1), "without a reserve it goes there");
    }
}
