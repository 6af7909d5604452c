//! Exact placement of a batch of GPU instances onto GPUs that may already
//! hold some: `mig plan --want` answers "does this set fit, and where" with
//! this when the online planner (one request at a time, never looking ahead)
//! strands part of a batch that can be placed.
//!
//! GPUs with the same current layout are one *class*. For each class every
//! way its free room can be filled is enumerated once (few: a GPU has 8
//! memory slices), keeping the maximal ones. The search then branches on
//! which class (and which of its maximal fillings) hosts an instance of the
//! largest profile still wanted — some GPU must — with memory lower bounds
//! and a memo of (demand, GPUs left per class) proven not to fit. So the
//! answer is exact; first-fit-decreasing succeeding ends easy cases at once.
//! Checked against a brute-force placement search (`brute_force_onto`).
//!
//! A [`Packer`] keeps, for one set of current layouts, what it has proven
//! across questions: the placement benchmark's repack oracle (the best any
//! policy that may move every instance can do) is a packer over N empty
//! GPUs asked once per request, so it and `mig plan` run the same search.

use std::collections::{HashMap, HashSet};

use super::layout::Layout;
use super::profiles::Profile;

/// Per GPU, the instances to add: (index into the profile table, start).
pub type Additions = Vec<Vec<(usize, u8)>>;

/// One way of filling a class's free room: instances added per profile, and
/// where they go.
#[derive(Debug, Clone)]
struct Filling {
    counts: Vec<u32>,
    placed: Vec<(usize, u8)>,
}

struct Class {
    gpus: Vec<usize>,
    maximal: Vec<Filling>,
    /// Most memory slices any filling adds (a bound for the search).
    room: u32,
    /// Most instances of each profile any filling adds (per-profile limits,
    /// such as one `+me` instance per GPU, bound the search too).
    most: Vec<u32>,
}

/// Search steps `mig plan` allows (benches/placement.rs --batch times it).
pub const PLAN_BUDGET: u64 = 200_000;

/// The search ran out of its step budget before proving either answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp;

/// Places `demand[k]` more instances of `table[k]` onto GPUs whose current
/// layouts are `current`, or says no placement exists. Exact, unbounded.
pub fn place(table: &[Profile], current: &[Layout], demand: &[u32]) -> Option<Additions> {
    place_within(table, current, demand, u64::MAX).unwrap_or(None)
}

/// [`place`] in at most `budget` search steps: a batch near the capacity of
/// many GPUs that do not hold it can take the exact search long to refute,
/// and a command must answer in bounded time.
pub fn place_within(table: &[Profile], current: &[Layout], demand: &[u32], budget: u64) -> Result<Option<Additions>, GaveUp> {
    Packer::new(table, current).place_within(demand, budget)
}

/// The exact search for one set of current layouts, asked any number of
/// batches: the GPUs' classes and fillings are enumerated once (on the first
/// batch first-fit-decreasing cannot place), and every (demand, GPUs left)
/// proven not to fit stays proven for later questions.
pub struct Packer<'t> {
    table: &'t [Profile],
    current: Vec<Layout>,
    classes: Option<Vec<Class>>,
    /// The subset bounds for each set of wanted profiles.
    bounds: HashMap<Vec<bool>, Vec<Bound>>,
    failed: HashSet<(Vec<u32>, Vec<usize>)>,
}

impl<'t> Packer<'t> {
    pub fn new(table: &'t [Profile], current: &[Layout]) -> Self {
        Self { table, current: current.to_vec(), classes: None, bounds: HashMap::new(), failed: HashSet::new() }
    }

    /// Does the batch fit? Exact, unbounded.
    pub fn fits(&mut self, demand: &[u32]) -> bool {
        matches!(self.place_within(demand, u64::MAX), Ok(Some(_)))
    }

    /// [`place_within`] with what earlier questions proved.
    pub fn place_within(&mut self, demand: &[u32], budget: u64) -> Result<Option<Additions>, GaveUp> {
        let table = self.table;
        assert_eq!(demand.len(), table.len(), "one count per profile");
        if demand.iter().all(|n| *n == 0) {
            return Ok(Some(vec![Vec::new(); self.current.len()]));
        }
        if let Some(a) = first_fit_decreasing(table, &self.current, demand) {
            return Ok(Some(a));
        }
        let classes: &[Class] = self.classes.get_or_insert_with(|| classes(table, &self.current));
        let wanted: Vec<bool> = demand.iter().map(|n| *n > 0).collect();
        let bounds = self.bounds.entry(wanted).or_insert_with(|| bounds(table, classes, demand));
        let mut search = Search { table, classes, bounds, failed: &mut self.failed, budget };
        let mut d = demand.to_vec();
        let mut left: Vec<usize> = classes.iter().map(|c| c.gpus.len()).collect();
        let mut chosen: Vec<(usize, usize, Vec<u32>)> = Vec::new();
        if !search.solve(&mut d, &mut left, &mut chosen) {
            return if search.budget == 0 { Err(GaveUp) } else { Ok(None) };
        }
        let mut out = vec![Vec::new(); self.current.len()];
        let mut used = vec![0usize; classes.len()];
        for (c, f, take) in chosen {
            let gpu = classes[c].gpus[used[c]];
            used[c] += 1;
            let mut want = take;
            for &(k, s) in &classes[c].maximal[f].placed {
                if want[k] > 0 {
                    want[k] -= 1;
                    out[gpu].push((k, s));
                }
            }
        }
        Ok(Some(out))
    }
}

/// Largest profiles first, each on the lowest GPU and start that fits.
fn first_fit_decreasing(table: &[Profile], current: &[Layout], demand: &[u32]) -> Option<Additions> {
    let mut order: Vec<usize> = (0..table.len()).collect();
    order.sort_by_key(|k| std::cmp::Reverse((table[*k].size, table[*k].compute_slices())));
    first_fit_in(table, current, demand, &order)
}

fn first_fit_in(table: &[Profile], current: &[Layout], demand: &[u32], order: &[usize]) -> Option<Additions> {
    let mut layouts = current.to_vec();
    let mut out = vec![Vec::new(); current.len()];
    for &k in order {
        let p = &table[k];
        for _ in 0..demand[k] {
            let (g, s) = layouts.iter().enumerate().find_map(|(g, l)| l.free_starts(p).first().map(|s| (g, *s)))?;
            layouts[g].place(p, s);
            out[g].push((k, s));
        }
    }
    Some(out)
}

fn classes(table: &[Profile], current: &[Layout]) -> Vec<Class> {
    // What can be added to a GPU depends only on its used slices and how
    // many instances of each profile it holds (the per-profile limits), so
    // GPUs alike in those are one class.
    let mut by_key: HashMap<(u8, Vec<u32>), Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (g, l) in current.iter().enumerate() {
        let key = (l.used_mask(), table.iter().map(|p| l.count(p.id)).collect::<Vec<u32>>());
        if !by_key.contains_key(&key) {
            order.push(key.clone());
        }
        by_key.entry(key).or_default().push(g);
    }
    order
        .into_iter()
        .map(|key| {
            let gpus = by_key.remove(&key).unwrap_or_default();
            let mut all: HashMap<Vec<u32>, Vec<(usize, u8)>> = HashMap::new();
            let mut l = current[gpus[0]].clone();
            fill(table, 0, &mut l, &mut vec![0; table.len()], &mut Vec::new(), &mut all);
            let fillings: Vec<Filling> = all.into_iter().map(|(counts, placed)| Filling { counts, placed }).collect();
            let contains = |a: &Filling, b: &Filling| a.counts.iter().zip(&b.counts).all(|(x, y)| x >= y);
            let mut maximal: Vec<Filling> = fillings.iter().filter(|f| !fillings.iter().any(|o| o.counts != f.counts && contains(o, f))).cloned().collect();
            maximal.sort_by(|a, b| a.counts.cmp(&b.counts));
            let room = maximal.iter().map(|f| f.counts.iter().zip(table).map(|(n, p)| n * u32::from(p.size)).sum()).max().unwrap_or(0);
            let most = (0..table.len()).map(|k| maximal.iter().map(|f| f.counts[k]).max().unwrap_or(0)).collect();
            Class { gpus, maximal, room, most }
        })
        .collect()
}

/// Every set of placements that can be added to `l`, each visited once
/// (placements in a fixed (profile, start) order).
fn fill(table: &[Profile], from: usize, l: &mut Layout, counts: &mut Vec<u32>, placed: &mut Vec<(usize, u8)>, out: &mut HashMap<Vec<u32>, Vec<(usize, u8)>>) {
    out.entry(counts.clone()).or_insert_with(|| placed.clone());
    for k in from..table.len() {
        let p = &table[k];
        for &s in &p.starts {
            let later = placed.last().is_none_or(|&(lk, ls)| (k, s) > (lk, ls));
            if later && l.fits_at(p, s) {
                l.place(p, s);
                counts[k] += 1;
                placed.push((k, s));
                fill(table, k, l, counts, placed, out);
                placed.pop();
                counts[k] -= 1;
                l.remove_at(s);
            }
        }
    }
}

/// A valid inequality for the search: whatever is placed, the instances'
/// total `weights` cannot exceed, per GPU of class `c`, `most[c]`. Memory
/// and per-profile limits alone miss what a GPU cannot combine (two 3g and a
/// 4g need three halves of a GPU that has two), which is what makes a batch
/// just beyond the GPUs' capacity slow to refute; weights over every subset
/// of the wanted profiles catch those at once.
struct Bound {
    weights: Vec<u32>,
    most: Vec<u32>,
}

/// Most profiles a table may have for every subset to be tried (2^n).
const SUBSET_PROFILES: usize = 10;

fn bounds(table: &[Profile], classes: &[Class], demand: &[u32]) -> Vec<Bound> {
    let wanted: Vec<usize> = (0..table.len()).filter(|k| demand[*k] > 0).collect();
    if wanted.len() > SUBSET_PROFILES {
        return Vec::new();
    }
    let mut out: Vec<Bound> = Vec::new();
    for subset in 1u32..(1 << wanted.len()) {
        let members: Vec<usize> = wanted.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, k)| *k).collect();
        if members.len() < 2 {
            continue; // one profile: the per-profile limit already says it
        }
        for scale in [|_: &Profile| 1u32, |p: &Profile| u32::from(p.size), |p: &Profile| u32::from(p.compute_slices())] {
            let mut weights = vec![0u32; table.len()];
            for &k in &members {
                weights[k] = scale(&table[k]);
            }
            let most = classes.iter().map(|c| c.maximal.iter().map(|f| dot(&f.counts, &weights)).max().unwrap_or(0)).collect();
            out.push(Bound { weights, most });
        }
    }
    out
}

fn dot(a: &[u32], b: &[u32]) -> u32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Search<'a> {
    table: &'a [Profile],
    classes: &'a [Class],
    bounds: &'a [Bound],
    /// Shared with the packer: a failure found with budget left is proven.
    failed: &'a mut HashSet<(Vec<u32>, Vec<usize>)>,
    /// Steps left; at 0 every branch fails (and the caller is told).
    budget: u64,
}

impl Search<'_> {
    /// `chosen`: (class, filling, what it takes of the demand) per GPU used.
    fn solve(&mut self, d: &mut [u32], left: &mut [usize], chosen: &mut Vec<(usize, usize, Vec<u32>)>) -> bool {
        let table = self.table;
        let Some(big) = (0..d.len()).filter(|k| d[*k] > 0).max_by_key(|k| (table[*k].size, table[*k].compute_slices(), std::cmp::Reverse(*k))) else {
            return true;
        };
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        let memory: u32 = d.iter().zip(table).map(|(n, p)| n * u32::from(p.size)).sum();
        let room: u32 = self.classes.iter().zip(left.iter()).map(|(c, n)| c.room * *n as u32).sum();
        if memory > room {
            return false;
        }
        let over_limit = |k: usize| d[k] > self.classes.iter().zip(left.iter()).map(|(c, n)| c.most[k] * *n as u32).sum::<u32>();
        if (0..d.len()).any(over_limit) {
            return false;
        }
        let beyond = |b: &Bound| dot(d, &b.weights) > b.most.iter().zip(left.iter()).map(|(m, n)| m * *n as u32).sum::<u32>();
        if self.bounds.iter().any(beyond) {
            return false;
        }
        let key = (d.to_vec(), left.to_vec());
        if self.failed.contains(&key) {
            return false;
        }
        // Some GPU hosts an instance of `big`: which class, and how filled.
        let mut takes: Vec<(usize, usize, Vec<u32>, u32)> = Vec::new();
        for (c, class) in self.classes.iter().enumerate() {
            if left[c] == 0 {
                continue;
            }
            let mut mine: Vec<(usize, Vec<u32>)> = Vec::new();
            for (f, filling) in class.maximal.iter().enumerate() {
                if filling.counts[big] == 0 {
                    continue;
                }
                let t: Vec<u32> = filling.counts.iter().zip(d.iter()).map(|(c, d)| (*c).min(*d)).collect();
                // Within a class, a take contained in another is never better.
                if mine.iter().any(|(_, o)| o.iter().zip(&t).all(|(a, b)| a >= b)) {
                    continue;
                }
                mine.retain(|(_, o)| !t.iter().zip(o).all(|(a, b)| a >= b));
                mine.push((f, t));
            }
            for (f, t) in mine {
                let size = t.iter().zip(table).map(|(n, p)| n * u32::from(p.size)).sum();
                takes.push((c, f, t, size));
            }
        }
        // Fullest takes first: a solution is usually on the first path.
        takes.sort_by_key(|(c, _, _, size)| (std::cmp::Reverse(*size), *c));
        for (c, f, t, _) in takes {
            for (x, y) in d.iter_mut().zip(&t) {
                *x -= y;
            }
            left[c] -= 1;
            chosen.push((c, f, t.clone()));
            let ok = self.solve(d, left, chosen);
            left[c] += 1;
            for (x, y) in d.iter_mut().zip(&t) {
                *x += y;
            }
            if ok {
                return true;
            }
            chosen.pop();
        }
        if self.budget > 0 {
            self.failed.insert(key);
        }
        false
    }
}

/// Brute force for tests: every (GPU, start) for every instance, largest
/// first, without the fillings or the search above. Prunes only what cannot
/// change the answer: identical GPUs, the order of identical instances, free
/// memory slices, and states already proven dead.
pub fn brute_force_onto(table: &[Profile], current: &[Layout], demand: &[u32]) -> bool {
    /// Next item, where the previous identical one went, every GPU's instances.
    type State = (usize, Option<(usize, u8)>, Vec<Vec<(u32, u8)>>);
    struct Brute<'a> {
        table: &'a [Profile],
        items: Vec<usize>,
        /// Memory slices the items from each index on need.
        need: Vec<u32>,
        dead: HashSet<State>,
    }
    fn key(l: &Layout) -> Vec<(u32, u8)> {
        let mut k: Vec<(u32, u8)> = l.instances.iter().map(|i| (i.profile_id, i.start)).collect();
        k.sort_unstable();
        k
    }
    impl Brute<'_> {
        fn go(&mut self, next: usize, after: Option<(usize, u8)>, gpus: &mut [Layout]) -> bool {
            let Some(&k) = self.items.get(next) else { return true };
            let free: u32 = gpus.iter().map(|l| 8 - l.used_mask().count_ones()).sum();
            if self.need[next] > free {
                return false;
            }
            // No more instances of a profile than its per-GPU limit allows.
            let left_of_k = self.items[next..].iter().filter(|&&i| i == k).count() as u32;
            let p = &self.table[k];
            if left_of_k > gpus.iter().map(|l| p.max_instances.saturating_sub(l.count(p.id))).sum::<u32>() {
                return false;
            }
            let state = (next, after, gpus.iter().map(key).collect::<Vec<_>>());
            if self.dead.contains(&state) {
                return false;
            }
            for g in 0..gpus.len() {
                // GPUs holding the same instances are interchangeable (unless
                // the order of identical instances already tells them apart).
                if after.is_none() && gpus[..g].iter().any(|o| key(o) == key(&gpus[g])) {
                    continue;
                }
                for &s in &p.starts {
                    // Two instances of one profile are interchangeable: the next goes later.
                    if after.is_some_and(|a| (g, s) <= a) {
                        continue;
                    }
                    if gpus[g].place(p, s) {
                        let same_next = self.items.get(next + 1) == Some(&k);
                        let ok = self.go(next + 1, same_next.then_some((g, s)), gpus);
                        gpus[g].remove_at(s);
                        if ok {
                            return true;
                        }
                    }
                }
            }
            self.dead.insert(state);
            false
        }
    }
    let mut items: Vec<usize> = demand.iter().enumerate().flat_map(|(k, n)| std::iter::repeat_n(k, *n as usize)).collect();
    items.sort_by_key(|k| (std::cmp::Reverse(table[*k].size), *k));
    let mut need = vec![0u32; items.len() + 1];
    for i in (0..items.len()).rev() {
        need[i] = need[i + 1] + u32::from(table[items[i]].size);
    }
    Brute { table, items, need, dead: HashSet::new() }.go(0, None, &mut current.to_vec())
}

#[cfg(test)]
mod tests {
    use super::super::profiles::{find, hopper_80gb, reference_tables, Profile};
    use super::*;

    /// The placement benchmark's five profiles.
    fn bench_kinds() -> Vec<Profile> {
        let t = hopper_80gb();
        ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"].iter().map(|n| find(&t, n).unwrap().clone()).collect()
    }

    /// The real H200's table, as its NVML snapshot reported it.
    fn h200() -> Vec<Profile> {
        let snap = crate::nvml::parse(include_str!("../../tests/fixtures/h200-device-run/nvml-snapshot.json")).unwrap();
        snap.gpus[0].profile_table()
    }

    /// A small deterministic generator (no dependency for a test).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn check(table: &[Profile], current: &[Layout], demand: &[u32]) -> bool {
        let got = place(table, current, demand);
        if let Some(adds) = &got {
            // What it says is a real placement: every instance fits, the demand is met.
            let mut met = vec![0u32; table.len()];
            for (g, add) in adds.iter().enumerate() {
                let mut l = current[g].clone();
                for &(k, s) in add {
                    assert!(l.place(&table[k], s), "{} at {s} does not fit GPU {g}: {:?}", table[k].name, current[g]);
                    met[k] += 1;
                }
            }
            assert_eq!(met, demand);
        }
        got.is_some()
    }

    #[test]
    fn test_a_batch_the_online_planner_strands_is_placed() {
        // 8 empty H100s, 8×3g.40gb + 32×1g.10gb: one 3g and four 1g per GPU
        // fits every GPU, while 3g-first packing strands the small ones.
        let t = hopper_80gb();
        let k = |n: &str| t.iter().position(|p| p.name.to_string() == n).unwrap();
        let mut d = vec![0; t.len()];
        d[k("3g.40gb")] = 8;
        d[k("1g.10gb")] = 32;
        assert!(check(&t, &vec![Layout::default(); 8], &d));
        d[k("1g.10gb")] = 33;
        assert!(!check(&t, &vec![Layout::default(); 8], &d));
    }

    #[test]
    fn test_what_a_gpu_cannot_combine_is_refuted_at_once() {
        // 64 H100s, each holding one 1g.10gb at one of seven starts (seven
        // classes): six more one-compute-slice instances fit each, 384 in
        // all. 355 1g.10gb and 30 1g.20gb pass the memory and per-profile
        // limits (415 of 448 free slices) but not the compute slices the two
        // share; the subset bound says so before any branching, where the
        // search alone runs out of its budget choosing GPUs for the 1g.20gb.
        let t = hopper_80gb();
        let k = |n: &str| t.iter().position(|p| p.name.to_string() == n).unwrap();
        let one = &t[k("1g.10gb")];
        let current: Vec<Layout> = (0..64)
            .map(|g| {
                let mut l = Layout::default();
                assert!(l.place(one, (g % 7) as u8));
                l
            })
            .collect();
        let mut d = vec![0; t.len()];
        d[k("1g.10gb")] = 6 * 64 - 29;
        d[k("1g.20gb")] = 30;
        assert_eq!(place_within(&t, &current, &d, 10).map(|a| a.is_some()), Ok(false));
        // One fewer 1g.10gb fits.
        d[k("1g.10gb")] -= 1;
        assert_eq!(place_within(&t, &current, &d, PLAN_BUDGET).map(|a| a.is_some()), Ok(true));
    }

    #[test]
    fn test_exact_answer_equals_brute_force_on_random_batches_and_layouts() {
        let mut tables = vec![("H100 80GB", hopper_80gb()), ("H200", h200())];
        tables.extend(reference_tables());
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut disagreements = Vec::new();
        let mut fits = 0;
        // (benches/placement.rs --batch runs 3,000 larger ones in release.)
        let runs = 800;
        for run in 0..runs {
            let (model, table) = &tables[run % tables.len()];
            let gpus = 1 + rng.next(8) as usize;
            // Current layouts: up to six random instances each.
            let mut current = vec![Layout::default(); gpus];
            for l in &mut current {
                for _ in 0..rng.next(7) {
                    let p = &table[rng.next(table.len() as u64) as usize];
                    let starts = l.free_starts(p);
                    if !starts.is_empty() {
                        l.place(p, starts[rng.next(starts.len() as u64) as usize]);
                    }
                }
            }
            // A batch of up to 6 instances, small profiles more likely.
            let mut demand = vec![0u32; table.len()];
            for _ in 0..1 + rng.next(6) {
                let k = (rng.next(table.len() as u64) * rng.next(table.len() as u64) / table.len() as u64) as usize;
                demand[k] += 1;
            }
            let exact = check(table, &current, &demand);
            let brute = brute_force_onto(table, &current, &demand);
            fits += usize::from(brute);
            if exact != brute {
                disagreements.push(format!("{model}: {gpus} GPUs {current:?} demand {demand:?}: exact {exact}, brute force {brute}"));
            }
        }
        assert!(disagreements.is_empty(), "{} of {runs} disagree:\n{}", disagreements.len(), disagreements.join("\n"));
        // Both answers occur often enough for the comparison to mean something.
        assert!(fits > runs / 5 && fits < runs * 4 / 5, "{fits} of {runs} fit");
    }

    /// What the enumeration finds an empty H100 can hold, with the
    /// benchmark's profiles, is the closed form of issue #22: one 7g, or a
    /// left half (one 4g, one 3g, or one-slice units with at most two 2g)
    /// and a right half (one 3g, or three units with at most one 2g).
    #[test]
    fn test_an_empty_h100_holds_what_the_two_halves_rule_says() {
        let k = bench_kinds();
        let mut all = HashMap::new();
        fill(&k, 0, &mut Layout::default(), &mut vec![0; k.len()], &mut Vec::new(), &mut all);
        let mut expect = std::collections::BTreeSet::new();
        let mut left: Vec<[u32; 4]> = vec![[0, 0, 0, 1], [0, 0, 1, 0]];
        for b in 0..=2u32 {
            for a in 0..=(4 - 2 * b) {
                left.push([a, b, 0, 0]);
            }
        }
        let mut right: Vec<[u32; 3]> = vec![[0, 0, 1]];
        for b in 0..=1u32 {
            for a in 0..=(3 - 2 * b) {
                right.push([a, b, 0]);
            }
        }
        for l in &left {
            for r in &right {
                expect.insert(vec![l[0] + r[0], l[1] + r[1], l[2] + r[2], l[3], 0]);
            }
        }
        expect.insert(vec![0, 0, 0, 0, 1]);
        let got: std::collections::BTreeSet<Vec<u32>> = all.keys().cloned().collect();
        assert_eq!(got, expect);
        // Every filling found is a real layout.
        for placed in all.values() {
            let mut l = Layout::default();
            for &(i, s) in placed {
                assert!(l.place(&k[i], s), "{placed:?}");
            }
        }
        let classes = classes(&k, &[Layout::default()]);
        assert_eq!((all.len(), classes[0].maximal.len()), (38, 12));
    }

    /// The fewest empty GPUs some batches need, from one packer per size.
    #[test]
    fn test_fewest_empty_gpus_for_a_batch() {
        let k = bench_kinds();
        let fewest = |demand: &[u32]| (0..=8).find(|n| Packer::new(&k, &vec![Layout::default(); *n]).fits(demand)).unwrap();
        assert_eq!(fewest(&[7, 0, 0, 0, 0]), 1);
        assert_eq!(fewest(&[0, 0, 0, 0, 3]), 3);
        assert_eq!(fewest(&[0, 0, 3, 0, 0]), 2);
        assert_eq!(fewest(&[32, 0, 8, 0, 0]), 8);
    }

    /// One packer asked thousands of batches in a row (as the benchmark's
    /// oracle asks it) answers each as brute force does: what it keeps
    /// proven from earlier questions never turns a later answer wrong.
    #[test]
    fn test_a_packer_asked_many_batches_agrees_with_brute_force() {
        let mut rng = Rng(0x1234_5678_9abc_def0);
        for table in [bench_kinds(), hopper_80gb()] {
            for gpus in 1..=3 {
                let mut packer = Packer::new(&table, &vec![Layout::default(); gpus]);
                let (mut fit, mut not) = (0, 0);
                for _ in 0..700 {
                    // Up to about one GPU's worth of each profile per two GPUs.
                    let most = |p: &Profile| u64::from(8 / p.size.max(1)) * (gpus as u64 + 1) / 2;
                    let demand: Vec<u32> = table.iter().map(|p| rng.next(most(p) + 1) as u32 * (rng.next(3) as u32).min(1)).collect();
                    if demand.iter().sum::<u32>() > 12 {
                        continue;
                    }
                    let exact = packer.fits(&demand);
                    assert_eq!(exact, brute_force_onto(&table, &vec![Layout::default(); gpus], &demand), "{gpus} GPUs, demand {demand:?}");
                    if exact {
                        fit += 1;
                    } else {
                        not += 1;
                    }
                }
                assert!(fit > 50 && not > 50, "both answers tested on {gpus} GPUs: {fit} fit, {not} do not");
            }
        }
    }
}
