//! Where a new GPU instance should go: the GPU and start slice that keep the
//! most future requests feasible.
//!
//! The driver's own default placement is undocumented (and observed not to
//! be lowest-first), so vgpuctl always passes an explicit start. For every
//! free (GPU, start) the planner computes how much weighted future capacity
//! the placement destroys on that GPU: the sum over profiles of
//! `weight × compute slices × how many more of it would still fit`, before
//! minus after, plus a small term that favours GPUs already holding more
//! instances (so nearly-empty GPUs drain and become whole again for 7g). It
//! takes the placement that loses the least; ties go to the fuller GPU
//! (keeping empty GPUs whole for 7g/4g requests), then the lowest address and
//! start. The weights are the expected request mix (configurable,
//! /etc/vgpuctl/mig-planner.toml); by default every profile counts the same.

use super::layout::Layout;
use super::profiles::Profile;

#[derive(Debug, Clone)]
pub struct Mix {
    /// (profile id, relative weight).
    pub weights: Vec<(u32, f64)>,
}

impl Mix {
    pub fn uniform(table: &[Profile]) -> Self {
        Self { weights: table.iter().map(|p| (p.id, 1.0)).collect() }
    }

    fn weight(&self, id: u32) -> f64 {
        self.weights.iter().find(|(i, _)| *i == id).map(|(_, w)| *w).unwrap_or(0.0)
    }
}

/// How many more of `p` fit in the free slices of `used` (lowest start
/// first, which is optimal because starts are multiples of sizes).
fn more_in_mask(mut used: u8, p: &Profile) -> u32 {
    let mut n = 0;
    for s in &p.starts {
        let m = p.mask(*s);
        if used & m == 0 && n < p.max_instances {
            used |= m;
            n += 1;
        }
    }
    n
}

/// The planner for one profile table and request mix.
///
/// What a placement costs is measured on the whole host: for every profile,
/// how many more instances of it the host could still take (summed over
/// GPUs), valued with diminishing returns, `1 − 2^−n`: the first free slot
/// for a 7g matters a lot, the twentieth free slot for a 1g hardly at all.
/// So small requests go where they remove only capacity the host has plenty
/// of, and the last places for large profiles stay free. Per-GPU counts come
/// from a table over all 256 slice masks (every profile's instance limit
/// equals its number of disjoint placements, except +me's, capped at its
/// maximum).
pub struct Planner {
    /// more[mask][i]: further instances of profile i that fit in `mask`.
    more: Vec<[u8; 16]>,
    /// frag[mask]: free slices no placement of a profile can use, weighted
    /// by the mix (for `Score::Fragmentation`).
    frag: Vec<f64>,
    score: Score,
    ids: Vec<u32>,
    /// weight × compute slices per profile.
    value: Vec<f64>,
    /// The drain term's size: a tenth of the mean profile value (measured
    /// best of 0, 0.1, 0.3 across both benchmark mixes at 8 and 64 GPUs).
    drain: f64,
    reserve: Reserve,
    /// The table and mix weights, for the one-GPU value function.
    table: Vec<Profile>,
    weights: Vec<f64>,
    load: f64,
    /// The one-GPU value function (`Score::Value` only).
    gpu_value: Option<std::sync::Arc<super::value::GpuValue>>,
    /// Turn a request away when placing it is worth less than the room it
    /// takes on its GPU (`Score::Value` only).
    admission: bool,
}

/// With `Score::Value`, the weight of the one-GPU value lost next to the
/// capacity loss, when choosing the GPU (the start on it is the one-GPU
/// value's). Measured with `VALUE_DRAIN` by the exact long-run value on 2
/// and 3 GPUs and by `cargo bench --bench placement -- --sweep` (both mixes,
/// 1-64 GPUs), pairs (weight, drain): (0.02, 16), (0.08, 16), (0.32, 16),
/// (1.0, 16), (0.32, 32), (0.64, 32), (0.64, 64). (0.32, 16) is the one no
/// cell loses more than 0.1 point of slices with against the earlier
/// (0.02, 1) and per-GPU starts, while small-heavy on 3 GPUs rises from
/// 0.6663 to 0.6675 exact; larger pairs gain 0.0003 more there and lose
/// up to 2 points of >=4g on 8 GPUs; a weight of 1.0 lets the one-GPU
/// view, which does not know the other GPUs, decide across them, and loses.
const VALUE_WEIGHT: f64 = 0.32;

/// With `Score::Value`, how many times the drain term weighs: the one-GPU
/// value picks the start on each GPU, so what is left to the host view is
/// which GPU, and packing onto the GPUs that hold the most instances is what
/// the exact optimum does there (`--planner-regret`). With a weight of 0.02
/// the exact long-run value on 3 GPUs, small-heavy mix, for multipliers 0,
/// 1, 2, 4, 8, 16, 32 was 0.6637, 0.6670, 0.6671, 0.6673, 0.6675, 0.6675,
/// 0.6674 (the optimum: 0.6693); see `VALUE_WEIGHT` for the pair chosen.
const VALUE_DRAIN: f64 = 16.0;

/// How a placement is scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Weighted future capacity lost on the host, with diminishing returns
    /// (the default).
    #[default]
    Capacity,
    /// Fragmentation added on the GPU: the increase of the free slices that
    /// no placement of a profile could use, weighted by the mix (after the
    /// fragmentation-gradient-descent scores of GPU-sharing schedulers).
    Fragmentation,
    /// The start on each GPU from the exact one-GPU decision process for
    /// the mix and the expected load (`mig::value`: the start after which
    /// the GPU is worth most), and the GPU by the capacity loss, the value
    /// lost and a strong preference for GPUs holding more instances.
    /// Allows `admission`.
    Value,
}

/// Opt-in admission control: a request of fewer than 4 compute slices may
/// not take the last `whole` empty GPUs (room for a full-GPU profile) or
/// the last `half` free left halves (slices 0-3: room for a 4g). Only the
/// placements that take that room are skipped: a small request still goes
/// anywhere else, so once no GPU is empty the whole-GPU reserve holds back
/// nothing. 4g and larger requests are what the room is kept for and are
/// never held back. Off by default: it turns away requests that would fit,
/// in exchange for room for large ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserve {
    pub whole: u32,
    pub half: u32,
}

impl Planner {
    pub fn new(table: &[Profile], mix: &Mix) -> Self {
        let ids: Vec<u32> = table.iter().take(16).map(|p| p.id).collect();
        let value = table.iter().take(16).map(|p| mix.weight(p.id) * f64::from(p.compute_slices())).collect();
        let more = (0..256u32)
            .map(|m| {
                let mut row = [0u8; 16];
                for (i, p) in table.iter().take(16).enumerate() {
                    row[i] = more_in_mask(m as u8, p) as u8;
                }
                row
            })
            .collect();
        let value: Vec<f64> = value;
        let drain = 0.1 * value.iter().sum::<f64>() / value.len().max(1) as f64;
        let weights: Vec<f64> = table.iter().take(16).map(|p| mix.weight(p.id)).collect();
        let frag = (0..256u32).map(|m| fragmentation(m as u8, &table[..table.len().min(16)], &weights)).collect();
        let table: Vec<Profile> = table.iter().take(16).cloned().collect();
        Self {
            more,
            frag,
            score: Score::Capacity,
            ids,
            value,
            drain,
            reserve: Reserve::default(),
            table,
            weights,
            load: 1.0,
            gpu_value: None,
            admission: false,
        }
    }

    fn build_value(&mut self) {
        self.gpu_value = (self.score == Score::Value).then(|| std::sync::Arc::new(super::value::GpuValue::new(&self.table, &self.weights, self.load)));
    }

    pub fn with_score(mut self, score: Score) -> Self {
        self.score = score;
        self.build_value();
        self
    }

    /// The expected offered load the value score is computed for (1.0:
    /// arrivals that would keep every compute slice busy).
    pub fn with_load(mut self, load: f64) -> Self {
        self.load = load;
        self.build_value();
        self
    }

    /// With `Score::Value`: turn away a request whose placement is worth
    /// less than the room it takes on its GPU.
    pub fn with_admission(mut self, on: bool) -> Self {
        self.admission = on;
        self
    }

    pub fn with_reserve(mut self, r: Reserve) -> Self {
        self.reserve = r;
        self
    }

    /// Weighted future capacity of one GPU layout on its own.
    pub fn capacity(&self, l: &Layout) -> f64 {
        let row = &self.more[l.used_mask() as usize];
        self.value.iter().enumerate().map(|(i, v)| v * f64::from(row[i])).sum()
    }

    /// The best (GPU index, start) for `p`, or `None` when no GPU has room.
    pub fn choose(&self, gpus: &[Layout], p: &Profile) -> Option<(usize, u8)> {
        let n = self.ids.len();
        let masks: Vec<u8> = gpus.iter().map(Layout::used_mask).collect();
        let mut totals = [0u32; 16];
        for m in &masks {
            for (i, t) in totals.iter_mut().enumerate().take(n) {
                *t += u32::from(self.more[*m as usize][i]);
            }
        }
        let worth = |i: usize, t: i64| -> f64 { self.value[i] * (1.0 - 0.5f64.powi(t.clamp(0, 1000) as i32)) };
        let empty = masks.iter().filter(|m| **m == 0).count() as u32;
        let half_free = masks.iter().filter(|m| **m & 0x0f == 0).count() as u32;
        // Compute slices, not memory size: a 4g.40gb is half a GPU's memory
        // but what the half reserve exists for.
        let held_back = self.reserve != Reserve::default() && p.compute_slices() < 4;
        let mut best: Option<(f64, u32, usize, u8)> = None; // (loss, free slices, gpu, start)
                                                            // GPUs with the same slice mask and instance count score the same,
                                                            // and a tie goes to the lower index: score each kind once. On a big,
                                                            // lightly used host most GPUs are alike (all empty), so this is what
                                                            // keeps a decision cheap there. The value score tells layouts apart
                                                            // by their instances, not only their slices.
        let gv = self.gpu_value.as_deref();
        let drain = if gv.is_some() { VALUE_DRAIN * self.drain } else { self.drain };
        let mut seen_layouts = std::collections::HashSet::new();
        let mut seen = vec![false; 256 * 9];
        for (gi, l) in gpus.iter().enumerate() {
            let used = masks[gi];
            if l.count(p.id) >= p.max_instances {
                continue;
            }
            let before = gv.map(|v| (v, v.key(l)));
            let alike_seen = match before {
                Some((_, k)) => !seen_layouts.insert(k),
                None => std::mem::replace(&mut seen[usize::from(used) * 9 + l.instances.len().min(8)], true),
            };
            if alike_seen {
                continue;
            }
            let free = 8 - used.count_ones();
            // The starts this request may take here.
            let allowed = p.starts.iter().copied().filter(|s| {
                let m = p.mask(*s);
                if used & m != 0 {
                    return false;
                }
                // With a reserve, only a placement that itself takes
                // reserved room is skipped.
                let takes_empty = used == 0;
                let takes_left_half = used & 0x0f == 0 && (used | m) & 0x0f != 0;
                !(held_back && (takes_empty && empty <= self.reserve.whole || takes_left_half && half_free <= self.reserve.half))
            });
            // With the value score the start on a GPU is the one-GPU
            // optimum's (the exact value of the GPU after it, ties to the
            // lowest start), with that value; the host-wide terms below only
            // choose the GPU. They cannot see that a 1g at slice 0 rather
            // than 6 keeps the 3g room of the right half, and chose worse
            // starts on their own.
            let candidates: Vec<(u8, Option<f64>)> = match before {
                Some((v, _)) => allowed
                    .map(|s| (s, v.value(v.key(&with_placed(l, p, s)))))
                    .fold(None, |best: Option<(u8, f64)>, c| match best {
                        // Equal values (within rounding) go to the lower start,
                        // whatever order the driver listed the starts in.
                        Some(b) if b.1 > c.1 + 1e-12 || (b.1 - c.1).abs() <= 1e-12 && b.0 < c.0 => Some(b),
                        _ => Some(c),
                    })
                    .map(|(s, after)| (s, Some(after)))
                    .into_iter()
                    .collect(),
                None => allowed.map(|s| (s, None)).collect(),
            };
            for (s, value_after) in candidates {
                let m = p.mask(s);
                let mut loss = match self.score {
                    Score::Fragmentation => self.frag[(used | m) as usize] - self.frag[used as usize],
                    Score::Capacity | Score::Value => {
                        let (before_c, after_c) = (&self.more[used as usize], &self.more[(used | m) as usize]);
                        (0..n)
                            .filter(|i| before_c[*i] != after_c[*i])
                            .map(|i| {
                                let t = i64::from(totals[i]);
                                worth(i, t) - worth(i, t - i64::from(before_c[i]) + i64::from(after_c[i]))
                            })
                            .sum()
                    }
                };
                if let (Some((v, k)), Some(after)) = (before, value_after) {
                    loss += VALUE_WEIGHT * (v.value(k) - after);
                }
                // Prefer GPUs with more instances: the ones with few drain.
                loss += drain / (1.0 + l.instances.len() as f64);
                let better = match &best {
                    None => true,
                    Some(b) => loss < b.0 - 1e-12 || (loss - b.0).abs() <= 1e-12 && (free, gi, s) < (b.1, b.2, b.3),
                };
                if better {
                    best = Some((loss, free, gi, s));
                }
            }
        }
        if let (true, Some(v), Some((_, _, g, s))) = (self.admission, gv, best) {
            // Worth less than the room it takes on its GPU: turned away.
            if v.reward(p.id) + v.value(v.key(&with_placed(&gpus[g], p, s))) - v.value(v.key(&gpus[g])) < -1e-9 {
                return None;
            }
        }
        best.map(|(_, _, g, s)| (g, s))
    }
}

fn with_placed(l: &Layout, p: &Profile, start: u8) -> Layout {
    let mut after = l.clone();
    after.instances.push(super::layout::Placed { profile_id: p.id, start, size: p.size });
    after
}

/// Free slices of `used` that no free placement of a profile covers,
/// weighted by the profile's share of the mix.
fn fragmentation(used: u8, table: &[Profile], weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let free = !used;
    table
        .iter()
        .zip(weights)
        .map(|(p, w)| {
            let usable = p.starts.iter().map(|s| p.mask(*s)).filter(|m| *m != 0 && used & m == 0).fold(0u8, |a, m| a | m);
            w / total * f64::from((free & !usable).count_ones())
        })
        .sum()
}

/// One-off choice (builds the table; keep a `Planner` for many decisions).
pub fn choose(gpus: &[Layout], table: &[Profile], p: &Profile, mix: &Mix) -> Option<(usize, u8)> {
    Planner::new(table, mix).choose(gpus, p)
}

/// First fit: lowest GPU, lowest start (what most scripts do).
pub fn first_fit(gpus: &[Layout], p: &Profile) -> Option<(usize, u8)> {
    gpus.iter().enumerate().find_map(|(i, l)| l.free_starts(p).first().map(|s| (i, *s)))
}

/// Best fit: the GPU with the fewest free slices that still fits, lowest start.
pub fn best_fit(gpus: &[Layout], p: &Profile) -> Option<(usize, u8)> {
    gpus.iter().enumerate().filter_map(|(i, l)| l.free_starts(p).first().map(|s| (8 - l.used_mask().count_ones(), i, *s))).min().map(|(_, i, s)| (i, s))
}

#[cfg(test)]
mod tests {
    use super::super::profiles::{find, hopper_80gb};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_planner_puts_3g_where_it_keeps_four_1g() {
        let t = hopper_80gb();
        let mix = Mix::uniform(&t);
        let three = find(&t, "3g.40gb").unwrap();
        let (g, s) = choose(&[Layout::default()], &t, three, &mix).unwrap();
        assert_eq!((g, s), (0, 4), "3g@4 leaves 4 1g slots, 3g@0 only 3");
    }

    #[test]
    fn test_planner_prefers_the_fuller_gpu_for_small_requests() {
        let t = hopper_80gb();
        let mix = Mix::uniform(&t);
        let one = find(&t, "1g.10gb").unwrap();
        let mut used = Layout::default();
        used.place(find(&t, "3g.40gb").unwrap(), 4);
        let (g, _) = choose(&[Layout::default(), used], &t, one, &mix).unwrap();
        assert_eq!(g, 1, "keep the empty GPU whole for a 7g");
    }

    #[test]
    fn test_alike_gpus_are_scored_once_but_a_full_profile_count_is_not_alike() {
        let t = hopper_80gb();
        let mix = Mix::uniform(&t);
        let me = find(&t, "1g.10gb+me").unwrap();
        let one = find(&t, "1g.10gb").unwrap();
        // Same slice mask and instance count; only the first already holds the one +me allowed.
        let mut a = Layout::default();
        a.place(me, 0);
        let mut b = Layout::default();
        b.place(one, 0);
        let (g, _) = choose(&[a, b.clone()], &t, me, &mix).unwrap();
        assert_eq!(g, 1);
        // Many empty GPUs: the lowest one, as before.
        let gpus = vec![b, Layout::default(), Layout::default(), Layout::default()];
        let seven = find(&t, "7g.80gb").unwrap();
        assert_eq!(choose(&gpus, &t, seven, &mix), Some((1, 0)));
    }

    #[test]
    fn test_fragmentation_score_counts_free_slices_no_profile_can_use() {
        let t = hopper_80gb();
        let five: Vec<Profile> = ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"].iter().map(|n| find(&t, n).unwrap().clone()).collect();
        let w = [1.0; 5];
        // Empty GPU: slice 7 is no 1g's, slices 6-7 no 2g's, 4-7 no 4g's.
        assert!((fragmentation(0, &five, &w) - (1.0 + 2.0 + 4.0) / 5.0).abs() < 1e-12);
        // Slices 0-6 used: the free slice 7 is unusable by all five.
        assert!((fragmentation(0x7f, &five, &w) - 1.0).abs() < 1e-12);
        // A 1g on an empty GPU goes where it adds least: slice 6 or 7 cannot
        // be used by 2g anyway (6), so the planner scoring fragmentation puts it there.
        let mix = Mix { weights: five.iter().map(|p| (p.id, 1.0)).collect() };
        let p = Planner::new(&five, &mix).with_score(Score::Fragmentation);
        assert_eq!(p.choose(&[Layout::default()], &five[0]), Some((0, 6)));
    }

    proptest! {
        /// The value score takes, on the GPU it picks, the free start the
        /// one-GPU value rates highest (the lowest of equals).
        #[test]
        fn prop_value_score_takes_the_one_gpu_best_start(ops in prop::collection::vec((0usize..7, any::<bool>(), 0usize..64), 1..60), ask in 0usize..7) {
            // Solving the one-GPU process is the slow part: once for all cases.
            static PLANNER: std::sync::OnceLock<Planner> = std::sync::OnceLock::new();
            let t = hopper_80gb();
            let planner = PLANNER.get_or_init(|| {
                let mix = Mix { weights: [("1g.10gb", 0.5), ("2g.20gb", 0.25), ("3g.40gb", 0.15), ("4g.40gb", 0.05), ("7g.80gb", 0.05)].iter().map(|(n, w)| (find(&t, n).unwrap().id, *w)).collect() };
                Planner::new(&t, &mix).with_score(Score::Value)
            });
            let v = planner.gpu_value.clone().unwrap();
            let mut gpus = vec![Layout::default(); 3];
            for (pi, add, pick) in ops {
                if add {
                    if let Some((g, s)) = planner.choose(&gpus, &t[pi]) {
                        prop_assert!(gpus[g].place(&t[pi], s));
                    }
                } else {
                    let all: Vec<(usize, u8)> = gpus.iter().enumerate().flat_map(|(g, l)| l.instances.iter().map(move |i| (g, i.start))).collect();
                    if !all.is_empty() {
                        let (g, s) = all[pick % all.len()];
                        gpus[g].remove_at(s);
                    }
                }
            }
            let p = &t[ask];
            if let Some((g, s)) = planner.choose(&gpus, p) {
                let value_at = |start: u8| v.value(v.key(&with_placed(&gpus[g], p, start)));
                for other in gpus[g].free_starts(p) {
                    prop_assert!(value_at(other) <= value_at(s) + 1e-12 && (value_at(other) < value_at(s) - 1e-12 || other >= s), "start {} on GPU {} over {}", s, g, other);
                }
            }
        }

        /// Any sequence of planner placements and removals keeps every GPU's
        /// instances non-overlapping and within their allowed starts and counts.
        #[test]
        fn prop_planner_never_overlaps(ops in prop::collection::vec((0usize..7, any::<bool>(), 0usize..64), 1..80), frag in any::<bool>()) {
            let t = hopper_80gb();
            let mix = Mix::uniform(&t);
            let planner = Planner::new(&t, &mix).with_score(if frag { Score::Fragmentation } else { Score::Capacity });
            let mut gpus = vec![Layout::default(); 3];
            for (pi, add, pick) in ops {
                if add {
                    let p = &t[pi];
                    if let Some((g, s)) = planner.choose(&gpus, p) {
                        prop_assert!(gpus[g].place(p, s));
                    }
                } else {
                    let all: Vec<(usize, u8)> = gpus.iter().enumerate().flat_map(|(g, l)| l.instances.iter().map(move |i| (g, i.start))).collect();
                    if !all.is_empty() {
                        let (g, s) = all[pick % all.len()];
                        gpus[g].remove_at(s);
                    }
                }
                for l in &gpus {
                    let mut seen = 0u8;
                    for i in &l.instances {
                        let m = super::super::layout::mask(i.size, i.start);
                        prop_assert_eq!(seen & m, 0, "overlap in {:?}", l);
                        seen |= m;
                        let p = t.iter().find(|p| p.id == i.profile_id).unwrap();
                        prop_assert!(p.starts.contains(&i.start));
                        prop_assert!(l.count(p.id) <= p.max_instances);
                    }
                }
            }
        }
    }
}
