//! What one GPU's layout is worth: the relative value of every layout of one
//! GPU under an expected request mix and load, from the exact decision
//! process of a single GPU (Poisson arrivals of the mix, holding times of
//! mean 1, reward = the compute slices of each accepted instance), solved by
//! relative value iteration when the planner is built (about a thousand
//! layouts for an H100's whole table: milliseconds).
//!
//! The planner's `score = "value"` takes, on each GPU, the start after which
//! the GPU is worth most, and chooses among the GPUs by the host-wide
//! capacity loss, the value lost and how many instances each holds; with
//! `admission = true` it also turns a request away when placing it is worth
//! less than the room it takes (the optimal rule on one GPU). On one GPU
//! this is the optimal policy; on more, the one-GPU view decides where on a
//! GPU and the host view which GPU.

use std::collections::HashMap;

use super::layout::Layout;
use super::profiles::Profile;

/// A layout as a number: its (profile index, start) pairs, sorted, 7 bits each.
pub type LayoutKey = u64;

#[derive(Debug, Clone)]
pub struct GpuValue {
    ids: Vec<u32>,
    h: HashMap<LayoutKey, f64>,
    reward: Vec<f64>,
}

fn key_of(parts: &mut [(u8, u8)]) -> LayoutKey {
    parts.sort_unstable();
    parts.iter().fold(0u64, |k, (p, s)| (k << 7) | (u64::from(*p) << 3) | u64::from(*s)) | (parts.len() as u64) << 60
}

impl GpuValue {
    /// Solves the one-GPU process for `table` (at most 16 profiles, at most 8
    /// instances per GPU as MIG allows), mix weights per profile, and the
    /// offered load (1.0: arrivals that would fill the GPU's compute slices).
    pub fn new(table: &[Profile], weights: &[f64], load: f64) -> Self {
        let table = &table[..table.len().min(16)];
        let ids: Vec<u32> = table.iter().map(|p| p.id).collect();
        let reward: Vec<f64> = table.iter().map(|p| f64::from(p.compute_slices())).collect();
        // Every layout, by search from the empty one.
        let mut layouts: Vec<Vec<(u8, u8)>> = vec![Vec::new()];
        let mut index: HashMap<LayoutKey, usize> = HashMap::from([(key_of(&mut []), 0)]);
        let mut i = 0;
        while i < layouts.len() {
            let l = to_layout(table, &layouts[i]);
            for (k, p) in table.iter().enumerate() {
                for &s in &p.starts {
                    if l.fits_at(p, s) && layouts[i].len() < 8 {
                        let mut next = layouts[i].clone();
                        next.push((k as u8, s));
                        let key = key_of(&mut next);
                        if let std::collections::hash_map::Entry::Vacant(e) = index.entry(key) {
                            e.insert(layouts.len());
                            layouts.push(next);
                        }
                    }
                }
            }
            i += 1;
        }
        // Transitions.
        let n = layouts.len();
        let mut departures: Vec<Vec<usize>> = Vec::with_capacity(n);
        let mut arrivals: Vec<Vec<Vec<usize>>> = Vec::with_capacity(n);
        for parts in &layouts {
            let l = to_layout(table, parts);
            departures.push(
                (0..parts.len())
                    .map(|j| {
                        let mut rest = parts.clone();
                        rest.remove(j);
                        index[&key_of(&mut rest)]
                    })
                    .collect(),
            );
            arrivals.push(
                table
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        p.starts
                            .iter()
                            .filter(|s| l.fits_at(p, **s) && parts.len() < 8)
                            .map(|s| {
                                let mut next = parts.clone();
                                next.push((k as u8, *s));
                                index[&key_of(&mut next)]
                            })
                            .collect()
                    })
                    .collect(),
            );
        }
        let total: f64 = weights.iter().sum();
        let mix: Vec<f64> = if total > 0.0 { weights.iter().map(|w| w / total).collect() } else { vec![1.0 / table.len().max(1) as f64; table.len()] };
        let mean: f64 = mix.iter().zip(&reward).map(|(m, r)| m * r).sum();
        let rate = if mean > 0.0 { load.max(0.0) * 7.0 / mean } else { 0.0 };
        let big = rate + 8.0;
        let mut h = vec![0.0f64; n];
        let mut next = vec![0.0f64; n];
        for _ in 0..100_000 {
            for (s, out) in next.iter_mut().enumerate() {
                let mut v = 0.0;
                for (k, succ) in arrivals[s].iter().enumerate() {
                    let best = succ.iter().map(|t| reward[k] + h[*t]).fold(h[s], f64::max);
                    v += rate * mix[k] * best;
                }
                v += departures[s].iter().map(|t| h[*t]).sum::<f64>();
                v += (big - rate - departures[s].len() as f64) * h[s];
                *out = v / big;
            }
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for (a, b) in next.iter().zip(&h) {
                lo = lo.min(a - b);
                hi = hi.max(a - b);
            }
            let base = next[0];
            for (a, b) in h.iter_mut().zip(&next) {
                *a = b - base;
            }
            if (hi - lo) * big < 1e-9 {
                break;
            }
        }
        let values = index.into_iter().map(|(k, i)| (k, h[i])).collect();
        Self { ids, h: values, reward }
    }

    /// The key of a layout of this table (instances of unknown profiles are
    /// left out: they do not come from this GPU's table).
    pub fn key(&self, l: &Layout) -> LayoutKey {
        let mut parts: Vec<(u8, u8)> = l.instances.iter().filter_map(|i| Some((self.ids.iter().position(|p| *p == i.profile_id)? as u8, i.start))).collect();
        key_of(&mut parts)
    }

    /// The relative value of a layout (0 for a layout outside the table).
    pub fn value(&self, key: LayoutKey) -> f64 {
        self.h.get(&key).copied().unwrap_or(0.0)
    }

    /// The reward of one instance of the profile (its compute slices).
    pub fn reward(&self, profile_id: u32) -> f64 {
        self.ids.iter().position(|p| *p == profile_id).map(|i| self.reward[i]).unwrap_or(0.0)
    }

    pub fn layouts(&self) -> usize {
        self.h.len()
    }
}

fn to_layout(table: &[Profile], parts: &[(u8, u8)]) -> Layout {
    let mut l = Layout::default();
    for (k, s) in parts {
        l.place(&table[*k as usize], *s);
    }
    l
}

#[cfg(test)]
mod tests {
    use super::super::profiles::{find, hopper_80gb};
    use super::*;

    #[test]
    fn test_values_rank_layouts_as_a_person_would() {
        let t = hopper_80gb();
        let v = GpuValue::new(&t, &[1.0; 7], 1.0);
        assert!(v.layouts() > 100);
        let one = find(&t, "1g.10gb").unwrap();
        let at = |s: u8| {
            let mut l = Layout::default();
            l.place(one, s);
            v.value(v.key(&l))
        };
        // A 1g on slice 6 (no 2g can use it) leaves more than one on slice 0 (which blocks a 4g).
        assert!(at(6) > at(0), "{} vs {}", at(6), at(0));
        assert!(v.value(v.key(&Layout::default())).abs() < 1e-12);
    }
}
