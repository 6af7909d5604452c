//! The best any placement policy that never moves an instance can do, for
//! small hosts: the benchmark's arrival model (Poisson arrivals, exponential
//! holding times of mean 1, a fixed mix) as a Markov decision process, solved
//! exactly by relative value iteration. At each arrival the policy may reject,
//! or place the instance at any free (GPU, start); it does not know
//! departure times. Reward: the request's compute slices, so the long-run
//! average reward divided by the offered slices is the slice-weighted
//! acceptance the benchmark reports.
//!
//! The state is the multiset of GPU layouts. Layouts are reduced by the
//! symmetries of the slice structure (permutations of the 8 memory slices
//! that map every allowed placement of every profile to another allowed
//! placement of the same profile: swapping slices 0 and 1, the pairs (0,1)
//! and (2,3), 4 and 5 on an H100), which keeps N = 3 at a few ten thousand
//! states, and changes nothing: symmetric layouts have the same future.

use std::collections::HashMap;

use vgpuctl::mig::layout::Layout;
use vgpuctl::mig::profiles::Profile;

/// A placement set as (kind, slice mask) pairs, sorted.
type Key = Vec<(u8, u8)>;

pub struct Universe {
    kinds: Vec<Profile>,
    /// Canonical layouts: representative placement sets.
    layouts: Vec<Key>,
    /// Successor layouts: per kind, the distinct layouts one more instance gives.
    add: Vec<Vec<Vec<u16>>>,
    /// Per instance of the layout, the layout without it.
    remove: Vec<Vec<u16>>,
    perms: Vec<[u8; 8]>,
}

fn permute(mask: u8, p: &[u8; 8]) -> u8 {
    (0..8).filter(|b| mask & (1 << b) != 0).fold(0u8, |m, b| m | (1 << p[b]))
}

fn all_perms() -> Vec<[u8; 8]> {
    fn go(cur: &mut Vec<u8>, used: u8, out: &mut Vec<[u8; 8]>) {
        if cur.len() == 8 {
            let mut a = [0u8; 8];
            a.copy_from_slice(cur);
            out.push(a);
            return;
        }
        for i in 0..8u8 {
            if used & (1 << i) == 0 {
                cur.push(i);
                go(cur, used | (1 << i), out);
                cur.pop();
            }
        }
    }
    let mut out = Vec::new();
    go(&mut Vec::new(), 0, &mut out);
    out
}

impl Universe {
    pub fn new(kinds: &[&Profile]) -> Self {
        let kinds: Vec<Profile> = kinds.iter().map(|p| (*p).clone()).collect();
        let allowed: Vec<Vec<u8>> = kinds.iter().map(|p| p.starts.iter().map(|s| p.mask(*s)).collect()).collect();
        let perms: Vec<[u8; 8]> =
            all_perms().into_iter().filter(|p| allowed.iter().all(|masks| masks.iter().all(|m| masks.contains(&permute(*m, p))))).collect();
        let mut u = Universe { kinds, layouts: Vec::new(), add: Vec::new(), remove: Vec::new(), perms };
        let mut index: HashMap<Key, u16> = HashMap::new();
        let empty = u.canonical(&Vec::new());
        let mut queue = vec![empty.clone()];
        index.insert(empty.clone(), 0);
        u.layouts.push(empty);
        let mut i = 0;
        while i < queue.len() {
            let key = queue[i].clone();
            let l = u.layout(&key);
            let mut adds = Vec::new();
            for (k, p) in u.kinds.iter().enumerate() {
                let mut next: Vec<u16> = Vec::new();
                for &s in &p.starts {
                    if l.fits_at(p, s) {
                        let mut nk = key.clone();
                        nk.push((k as u8, p.mask(s)));
                        let c = u.canonical(&nk);
                        let id = match index.get(&c) {
                            Some(id) => *id,
                            None => {
                                let id = u.layouts.len() as u16;
                                index.insert(c.clone(), id);
                                u.layouts.push(c.clone());
                                queue.push(c);
                                id
                            }
                        };
                        if !next.contains(&id) {
                            next.push(id);
                        }
                    }
                }
                adds.push(next);
            }
            u.add.push(adds);
            i += 1;
        }
        for key in &u.layouts {
            let rem: Vec<u16> = (0..key.len())
                .map(|j| {
                    let mut nk = key.clone();
                    nk.remove(j);
                    index[&u.canonical(&nk)]
                })
                .collect();
            u.remove.push(rem);
        }
        u
    }

    pub fn len(&self) -> usize {
        self.layouts.len()
    }

    pub fn symmetries(&self) -> usize {
        self.perms.len()
    }

    fn canonical(&self, key: &Key) -> Key {
        self.perms
            .iter()
            .map(|p| {
                let mut k: Key = key.iter().map(|(kind, m)| (*kind, permute(*m, p))).collect();
                k.sort();
                k
            })
            .min()
            .unwrap_or_default()
    }

    fn layout(&self, key: &Key) -> Layout {
        let mut l = Layout::default();
        for (k, m) in key {
            let p = &self.kinds[*k as usize];
            l.place(p, m.trailing_zeros() as u8);
        }
        l
    }

    /// The canonical id of a concrete layout.
    pub fn id_of(&self, l: &Layout, index: &HashMap<Key, u16>) -> u16 {
        let key: Key = l
            .instances
            .iter()
            .map(|i| (self.kinds.iter().position(|p| p.id == i.profile_id).unwrap_or(0) as u8, vgpuctl::mig::layout::mask(i.size, i.start)))
            .collect();
        index[&self.canonical(&key)]
    }

    /// A concrete layout of a canonical id.
    pub fn layout_of(&self, id: u16) -> Layout {
        self.layout(&self.layouts[id as usize])
    }

    /// A slice map of a canonical layout: a compute-slice digit per instance, `.` free.
    pub fn describe(&self, id: u16) -> String {
        self.layout(&self.layouts[id as usize]).slice_map(&self.kinds)
    }

    pub fn index(&self) -> HashMap<Key, u16> {
        self.layouts.iter().enumerate().map(|(i, k)| (k.clone(), i as u16)).collect()
    }
}

/// The MDP over multisets of `n` layouts.
pub struct Mdp<'a> {
    u: &'a Universe,
    pub states: Vec<Vec<u16>>,
    index: HashMap<Vec<u16>, u32>,
    /// Per state: successor per departing instance.
    departures: Vec<Vec<u32>>,
    /// Per state and kind: distinct successors of placing one.
    arrivals: Vec<Vec<Vec<u32>>>,
}

impl<'a> Mdp<'a> {
    pub fn new(u: &'a Universe, n: usize) -> Self {
        let mut states: Vec<Vec<u16>> = Vec::new();
        fn multisets(l: u16, n: usize, from: u16, cur: &mut Vec<u16>, out: &mut Vec<Vec<u16>>) {
            if cur.len() == n {
                out.push(cur.clone());
                return;
            }
            for i in from..l {
                cur.push(i);
                multisets(l, n, i, cur, out);
                cur.pop();
            }
        }
        multisets(u.len() as u16, n, 0, &mut Vec::new(), &mut states);
        let index: HashMap<Vec<u16>, u32> = states.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        let with = |s: &[u16], g: usize, l: u16| -> u32 {
            let mut t = s.to_vec();
            t[g] = l;
            t.sort_unstable();
            index[&t]
        };
        let mut departures = Vec::with_capacity(states.len());
        let mut arrivals = Vec::with_capacity(states.len());
        for s in &states {
            let mut dep = Vec::new();
            for (g, &l) in s.iter().enumerate() {
                for &r in &u.remove[l as usize] {
                    dep.push(with(s, g, r));
                }
            }
            departures.push(dep);
            let mut arr = Vec::new();
            for k in 0..u.kinds.len() {
                let mut next: Vec<u32> = Vec::new();
                for (g, &l) in s.iter().enumerate() {
                    for &a in &u.add[l as usize][k] {
                        let t = with(s, g, a);
                        if !next.contains(&t) {
                            next.push(t);
                        }
                    }
                }
                arr.push(next);
            }
            arrivals.push(arr);
        }
        Mdp { u, states, index, departures, arrivals }
    }

    pub fn state_of(&self, gpus: &[Layout], layout_index: &HashMap<Key, u16>) -> u32 {
        let mut t: Vec<u16> = gpus.iter().map(|l| self.u.id_of(l, layout_index)).collect();
        t.sort_unstable();
        self.index[&t]
    }

    /// Relative value iteration. `rate`: arrivals per unit time; `mix`:
    /// probability per kind; `reward`: per kind. Returns (average reward per
    /// unit time, relative values h).
    /// With `must_place`, a request that fits somewhere must be placed (no
    /// admission control): the best a placement rule alone can do.
    pub fn solve(&self, rate: f64, mix: &[f64], reward: &[f64], tolerance: f64, must_place: bool) -> (f64, Vec<f64>) {
        self.iterate(rate, tolerance, |s, h| {
            self.arrivals[s]
                .iter()
                .enumerate()
                .map(|(k, succ)| {
                    let floor = if must_place && !succ.is_empty() { f64::NEG_INFINITY } else { h[s] };
                    rate * mix[k] * succ.iter().map(|t| reward[k] + h[*t as usize]).fold(floor, f64::max)
                })
                .sum()
        })
    }

    /// The long-run reward per unit time of a fixed policy, exactly (no
    /// sampling): relative value iteration with the decisions fixed.
    /// `decisions[s][kind]` is the successor state the policy picks for an
    /// arrival of `kind` in state `s`, or `None` to reject.
    pub fn evaluate(&self, rate: f64, mix: &[f64], reward: &[f64], tolerance: f64, decisions: &[Vec<Option<u32>>]) -> f64 {
        self.iterate(rate, tolerance, |s, h| decisions[s].iter().enumerate().map(|(k, d)| rate * mix[k] * d.map_or(h[s], |t| reward[k] + h[t as usize])).sum())
            .0
    }

    /// The uniformised relative value iteration both of the above run:
    /// `arrivals(s, h)` is the arrival term of state `s` (rate times the
    /// value of what happens to each kind), departures and the self-loop
    /// are the same for every policy.
    fn iterate(&self, rate: f64, tolerance: f64, arrivals: impl Fn(usize, &[f64]) -> f64) -> (f64, Vec<f64>) {
        let max_inst = self.departures.iter().map(Vec::len).max().unwrap_or(0) as f64;
        let big = rate + max_inst;
        let mut h = vec![0.0f64; self.states.len()];
        let mut next = vec![0.0f64; self.states.len()];
        let mut gain = 0.0;
        for _ in 0..200_000 {
            for (s, out) in next.iter_mut().enumerate() {
                let mut v = arrivals(s, &h);
                for t in &self.departures[s] {
                    v += h[*t as usize];
                }
                v += (big - rate - self.departures[s].len() as f64) * h[s];
                *out = v / big;
            }
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for (a, b) in next.iter().zip(&h) {
                lo = lo.min(a - b);
                hi = hi.max(a - b);
            }
            gain = (lo + hi) / 2.0 * big;
            let base = next[0];
            for (a, b) in h.iter_mut().zip(&next) {
                *a = b - base;
            }
            if (hi - lo) * big < tolerance {
                break;
            }
        }
        (gain, h)
    }

    /// A placement rule's decision in every state, per kind, applied to the
    /// state's canonical layouts (GPUs in the state's order).
    pub fn decisions(
        &self,
        kinds: &[&Profile],
        layout_index: &HashMap<Key, u16>,
        choose: impl Fn(&[Layout], usize) -> Option<(usize, u8)>,
    ) -> Vec<Vec<Option<u32>>> {
        self.states
            .iter()
            .map(|st| {
                let gpus: Vec<Layout> = st.iter().map(|id| self.u.layout_of(*id)).collect();
                (0..kinds.len())
                    .map(|k| {
                        let (g, s) = choose(&gpus, k)?;
                        let mut after = gpus.clone();
                        after[g].place(kinds[k], s);
                        Some(self.state_of(&after, layout_index))
                    })
                    .collect()
            })
            .collect()
    }

    /// The optimal decision for an arrival of `kind` in state `s`: the
    /// successor state, or `None` to reject.
    pub fn best(&self, h: &[f64], s: u32, kind: usize, reward: f64) -> Option<u32> {
        let mut best = (h[s as usize], None);
        for &t in &self.arrivals[s as usize][kind] {
            let v = reward + h[t as usize];
            if v > best.0 + 1e-12 {
                best = (v, Some(t));
            }
        }
        best.1
    }

    pub fn successors(&self, s: u32, kind: usize) -> &[u32] {
        &self.arrivals[s as usize][kind]
    }

    pub fn fits(&self, s: u32, kind: usize) -> bool {
        !self.arrivals[s as usize][kind].is_empty()
    }

    pub fn states_len(&self) -> usize {
        self.states.len()
    }
}

/// The optimal policy, applied to concrete GPU layouts in the simulator.
pub struct OptimalPolicy<'a> {
    pub mdp: &'a Mdp<'a>,
    pub h: Vec<f64>,
    pub layout_index: HashMap<Key, u16>,
    pub rewards: Vec<f64>,
}

impl OptimalPolicy<'_> {
    pub fn choose(&self, gpus: &[Layout], p: &Profile, kind: usize) -> Option<(usize, u8)> {
        let s = self.mdp.state_of(gpus, &self.layout_index);
        let t = self.mdp.best(&self.h, s, kind, self.rewards[kind])?;
        // A concrete placement that leads to the chosen (canonical) state.
        for (g, l) in gpus.iter().enumerate() {
            for st in l.free_starts(p) {
                let mut after = gpus.to_vec();
                after[g].place(p, st);
                if self.mdp.state_of(&after, &self.layout_index) == t {
                    return Some((g, st));
                }
            }
        }
        None
    }
}
