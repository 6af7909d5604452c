//! Every way one GPU can be filled with MIG GPU instances, and exact packing
//! of a batch of instances onto N GPUs.
//!
//! A *shape* is how many instances of each profile one GPU holds at once in
//! some valid layout (NVIDIA's placement rules: allowed starts, no shared
//! slice, per-profile instance limits). A GPU has 8 memory slices, so there
//! are few shapes (the H100's 5 common profiles give 38, of which 12 are
//! maximal): they are enumerated once per profile table. Whether a batch of
//! instances fits N GPUs is then a covering problem over shapes, solved
//! exactly by a search that branches on which maximal shape hosts an
//! instance of the largest profile still wanted (some GPU must), with memory
//! and compute lower bounds and a memo of demands proven not to fit. Easy
//! cases end at once: first-fit-decreasing succeeding is proof enough.
//!
//! Used by the placement benchmark's repack oracle (the best any policy that
//! may move every instance can do), and checked against a brute-force
//! placement search on random batches.

use std::collections::HashMap;

use super::layout::Layout;
use super::profiles::Profile;

/// One GPU's possible contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Instances per profile, in the order of the table `Shapes` was made for.
    pub counts: Vec<u8>,
    /// A layout (with starts) that holds exactly these instances.
    pub layout: Layout,
}

#[derive(Debug, Clone)]
pub struct Shapes {
    kinds: Vec<Profile>,
    /// Every shape, the empty one included.
    all: Vec<Shape>,
    /// Indexes into `all` of the shapes no other shape contains.
    maximal: Vec<usize>,
}

fn enumerate(kinds: &[Profile], from: usize, l: &mut Layout, counts: &mut Vec<u8>, out: &mut HashMap<Vec<u8>, Layout>) {
    out.entry(counts.clone()).or_insert_with(|| l.clone());
    // Placements in a fixed (profile, start) order, each used at most once,
    // so every set of placements is visited once.
    for k in from..kinds.len() {
        let p = &kinds[k];
        for &s in &p.starts {
            if l.fits_at(p, s) && !l.instances.iter().any(|i| i.profile_id == p.id && i.start >= s) {
                l.place(p, s);
                counts[k] += 1;
                enumerate(kinds, k, l, counts, out);
                counts[k] -= 1;
                l.remove_at(s);
            }
        }
    }
}

impl Shapes {
    /// The shapes of one GPU with these profiles (at most 16).
    pub fn new(kinds: &[Profile]) -> Self {
        let kinds: Vec<Profile> = kinds.iter().take(16).cloned().collect();
        let mut found = HashMap::new();
        enumerate(&kinds, 0, &mut Layout::default(), &mut vec![0; kinds.len()], &mut found);
        let mut all: Vec<Shape> = found.into_iter().map(|(counts, layout)| Shape { counts, layout }).collect();
        all.sort_by(|a, b| {
            b.counts.iter().map(|c| u32::from(*c)).sum::<u32>().cmp(&a.counts.iter().map(|c| u32::from(*c)).sum::<u32>()).then(a.counts.cmp(&b.counts))
        });
        let covers = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| x >= y);
        let maximal = (0..all.len())
            .filter(|&i| !all.iter().enumerate().any(|(j, o)| j != i && o.counts != all[i].counts && covers(&o.counts, &all[i].counts)))
            .collect();
        Self { kinds, all, maximal }
    }

    pub fn kinds(&self) -> &[Profile] {
        &self.kinds
    }

    pub fn all(&self) -> &[Shape] {
        &self.all
    }

    pub fn maximal(&self) -> impl Iterator<Item = &Shape> {
        self.maximal.iter().map(|i| &self.all[*i])
    }

    /// Does the batch (`demand[k]` instances of profile k) fit on `gpus`
    /// empty GPUs? Exact.
    pub fn fits(&self, demand: &[u32], gpus: usize) -> bool {
        self.pack(demand, gpus).is_some()
    }

    /// A layout per GPU that holds the batch, or `None` when none exists.
    pub fn pack(&self, demand: &[u32], gpus: usize) -> Option<Vec<Layout>> {
        assert_eq!(demand.len(), self.kinds.len(), "one count per profile");
        if let Some(l) = self.first_fit_decreasing(demand, gpus) {
            return Some(l);
        }
        let mut search = Search { shapes: self, failed: HashMap::new() };
        let mut d = demand.to_vec();
        let mut chosen = Vec::new();
        if !search.solve(&mut d, gpus, &mut chosen) {
            return None;
        }
        let mut out: Vec<Layout> = chosen.iter().map(|(shape, take)| self.trim(&self.all[*shape].layout, take)).collect();
        out.resize(gpus, Layout::default());
        Some(out)
    }

    /// The fewest GPUs that hold the batch (exact).
    pub fn min_gpus(&self, demand: &[u32]) -> usize {
        let mut n = 0;
        while !self.fits(demand, n) {
            n += 1;
        }
        n
    }

    /// `layout` with only `take[k]` instances of each profile kept.
    fn trim(&self, layout: &Layout, take: &[u32]) -> Layout {
        let mut left = take.to_vec();
        let mut out = Layout::default();
        for i in &layout.instances {
            if let Some(k) = self.kinds.iter().position(|p| p.id == i.profile_id) {
                if left[k] > 0 {
                    left[k] -= 1;
                    out.instances.push(i.clone());
                }
            }
        }
        out
    }

    /// Largest profiles first, each to the lowest GPU and start that fits.
    fn first_fit_decreasing(&self, demand: &[u32], gpus: usize) -> Option<Vec<Layout>> {
        let mut order: Vec<usize> = (0..self.kinds.len()).collect();
        order.sort_by_key(|k| std::cmp::Reverse((self.kinds[*k].size, self.kinds[*k].compute_slices())));
        let mut out = vec![Layout::default(); gpus];
        for k in order {
            let p = &self.kinds[k];
            for _ in 0..demand[k] {
                let (g, s) = out.iter().enumerate().find_map(|(g, l)| l.free_starts(p).first().map(|s| (g, *s)))?;
                out[g].place(p, s);
            }
        }
        Some(out)
    }
}

struct Search<'a> {
    shapes: &'a Shapes,
    /// Demand → the most GPUs known not to be enough for it.
    failed: HashMap<Vec<u32>, usize>,
}

impl Search<'_> {
    fn solve(&mut self, d: &mut [u32], gpus: usize, chosen: &mut Vec<(usize, Vec<u32>)>) -> bool {
        let kinds = &self.shapes.kinds;
        let Some(big) = (0..d.len()).filter(|k| d[*k] > 0).max_by_key(|k| (kinds[*k].size, kinds[*k].compute_slices(), std::cmp::Reverse(*k))) else {
            return true;
        };
        if gpus == 0 {
            return false;
        }
        // Lower bounds: memory slices (8 per GPU) and compute slices (7 per GPU).
        let memory: u32 = d.iter().zip(kinds).map(|(n, p)| n * u32::from(p.size.min(8))).sum();
        let compute: u32 = d.iter().zip(kinds).map(|(n, p)| n * u32::from(p.compute_slices())).sum();
        let cap = gpus as u32;
        if memory > 8 * cap || compute > 7 * cap {
            return false;
        }
        if self.failed.get(d).is_some_and(|n| *n >= gpus) {
            return false;
        }
        // What each maximal shape holding the big profile can take of the
        // demand; a take contained in another is never better.
        let mut takes: Vec<(usize, Vec<u32>)> = Vec::new();
        for &i in &self.shapes.maximal {
            let c = &self.shapes.all[i].counts;
            if c[big] == 0 {
                continue;
            }
            let t: Vec<u32> = c.iter().zip(d.iter()).map(|(c, d)| u32::from(*c).min(*d)).collect();
            if takes.iter().any(|(_, o)| o.iter().zip(&t).all(|(a, b)| a >= b)) {
                continue;
            }
            takes.retain(|(_, o)| !t.iter().zip(o).all(|(a, b)| a >= b));
            takes.push((i, t));
        }
        // Fullest takes first: a solution is usually found on the first path.
        takes.sort_by_key(|(_, t)| std::cmp::Reverse(t.iter().zip(kinds).map(|(n, p)| n * u32::from(p.size)).sum::<u32>()));
        for (i, t) in takes {
            for (x, y) in d.iter_mut().zip(&t) {
                *x -= y;
            }
            chosen.push((i, t.clone()));
            let ok = self.solve(d, gpus - 1, chosen);
            for (x, y) in d.iter_mut().zip(&t) {
                *x += y;
            }
            if ok {
                return true;
            }
            chosen.pop();
        }
        let e = self.failed.entry(d.to_vec()).or_insert(0);
        *e = (*e).max(gpus);
        false
    }
}

/// Brute force for tests: tries every (GPU, start) for every instance.
pub fn brute_force_fits(kinds: &[Profile], demand: &[u32], gpus: usize) -> bool {
    // `after`: where the previous instance of the same profile went; two
    // instances of one profile are interchangeable, so the next goes later.
    fn go(kinds: &[Profile], items: &[usize], next: usize, after: Option<(usize, u8)>, gpus: &mut [Layout]) -> bool {
        let Some(&k) = items.get(next) else { return true };
        let p = &kinds[k];
        for g in 0..gpus.len() {
            // Identical empty GPUs are interchangeable: try only the first.
            if gpus[g].instances.is_empty() && gpus[..g].iter().any(|l| l.instances.is_empty()) {
                continue;
            }
            for &s in &p.starts {
                if after.is_some_and(|a| (g, s) <= a) {
                    continue;
                }
                if gpus[g].place(p, s) {
                    let same_next = items.get(next + 1) == Some(&k);
                    let ok = go(kinds, items, next + 1, same_next.then_some((g, s)), gpus);
                    gpus[g].remove_at(s);
                    if ok {
                        return true;
                    }
                }
            }
        }
        false
    }
    let mut items: Vec<usize> = demand.iter().enumerate().flat_map(|(k, n)| std::iter::repeat_n(k, *n as usize)).collect();
    items.sort_by_key(|k| (std::cmp::Reverse(kinds[*k].size), *k));
    go(kinds, &items, 0, None, &mut vec![Layout::default(); gpus])
}

#[cfg(test)]
mod tests {
    use super::super::profiles::{find, hopper_80gb};
    use super::*;

    fn bench_kinds() -> Vec<Profile> {
        let t = hopper_80gb();
        ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"].iter().map(|n| find(&t, n).unwrap().clone()).collect()
    }

    #[test]
    fn test_h100_shapes_match_the_two_halves_rule() {
        let s = Shapes::new(&bench_kinds());
        // Left half {4g | 3g | units ≤ 4 slices, ≤ 2 2g} × right half {3g | units ≤ 3 slices, ≤ 1 2g}, or a 7g.
        let mut expect = std::collections::BTreeSet::new();
        let left: Vec<[u8; 4]> = {
            let mut v = vec![[0, 0, 0, 1], [0, 0, 1, 0]];
            for b in 0..=2u8 {
                for a in 0..=(4 - 2 * b) {
                    v.push([a, b, 0, 0]);
                }
            }
            v
        };
        let right: Vec<[u8; 3]> = {
            let mut v = vec![[0, 0, 1]];
            for b in 0..=1u8 {
                for a in 0..=(3 - 2 * b) {
                    v.push([a, b, 0]);
                }
            }
            v
        };
        for l in &left {
            for r in &right {
                expect.insert(vec![l[0] + r[0], l[1] + r[1], l[2] + r[2], l[3], 0]);
            }
        }
        expect.insert(vec![0, 0, 0, 0, 1]);
        let got: std::collections::BTreeSet<Vec<u8>> = s.all().iter().map(|x| x.counts.clone()).collect();
        assert_eq!(got, expect);
        for sh in s.all() {
            let mut l = Layout::default();
            for i in &sh.layout.instances {
                assert!(l.place(s.kinds().iter().find(|p| p.id == i.profile_id).unwrap(), i.start), "{sh:?}");
            }
        }
        assert_eq!((s.all().len(), s.maximal().count()), (38, 12));
    }

    #[test]
    fn test_a_batch_first_fit_decreasing_strands_is_packed_exactly() {
        let k = bench_kinds();
        let s = Shapes::new(&k);
        // 8 × (3g + four 1g) fills 8 GPUs; largest-first packs two 3g per GPU
        // on 4 GPUs and then has room for only 16 of the 32 1g.
        let demand = [32, 0, 8, 0, 0];
        assert!(s.fits(&demand, 8));
        assert!(!s.fits(&[33, 0, 8, 0, 0], 8));
        let layouts = s.pack(&demand, 8).unwrap();
        let placed: u32 = layouts.iter().map(|l| l.instances.len() as u32).sum();
        assert_eq!(placed, 40);
        for l in &layouts {
            let mut check = Layout::default();
            for i in &l.instances {
                assert!(check.place(k.iter().find(|p| p.id == i.profile_id).unwrap(), i.start));
            }
        }
        assert_eq!(s.min_gpus(&[7, 0, 0, 0, 0]), 1);
        assert_eq!(s.min_gpus(&[0, 0, 0, 0, 3]), 3);
        assert_eq!(s.min_gpus(&[0, 0, 3, 0, 0]), 2);
    }

    /// Thousands of random batches on 1-3 GPUs against brute force, for the
    /// benchmark's profiles and the whole H100 table (+me, 1g.20gb).
    #[test]
    fn test_exact_packing_agrees_with_brute_force() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        for kinds in [bench_kinds(), hopper_80gb()] {
            let s = Shapes::new(&kinds);
            let (mut disagreements, mut fit, mut not) = (0, 0, 0);
            for _ in 0..2000 {
                let gpus = 1 + next(3) as usize;
                let demand: Vec<u32> = kinds.iter().map(|p| next(u64::from(8 / p.size.max(1)) + 1) as u32 * (next(3) as u32).min(1)).collect();
                let items: u32 = demand.iter().sum();
                if items > 10 {
                    continue;
                }
                let exact = s.fits(&demand, gpus);
                if exact != brute_force_fits(&kinds, &demand, gpus) {
                    disagreements += 1;
                }
                if exact {
                    fit += 1;
                } else {
                    not += 1;
                }
            }
            assert_eq!(disagreements, 0);
            assert!(fit > 200 && not > 200, "both answers tested: {fit} fit, {not} do not");
        }
    }
}
