//! `--idle`: the planner with on-demand repack of idle GPU instances
//! (`repack_moves` in the policy file; `mig::reshape::repack`, the code the
//! CLI, vGPU create and the hook run). A fraction f of instances is
//! allocated but idle for its whole life (an instance made for a VM that
//! has not started, kept with --keep-gi, declared by `apply`): those may be
//! moved within their GPU; busy ones never. When the planner finds no
//! place for a request, the repack looks for the GPU where the fewest moves
//! (at most K) make room. First fit and the exact repack oracle (which may
//! move every instance, to any GPU) are the ends of the gap. "repack-across"
//! is a reference vgpuctl does not implement: idle instances may also go to
//! another GPU (a VM's vGPU is bound to a VF of one GPU, so that move is not
//! invisible to the VM's next start; docs/mig.md).
//!
//! IDLE_GPUS=N runs one host size, IDLE_F=0,0.25 the idle fractions (0 is
//! needed for the gap's ends), IDLE_K the across-GPU reference's move bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use vgpuctl::mig::layout::Layout;
use vgpuctl::mig::planner::{first_fit, Mix, Planner};
use vgpuctl::mig::profiles::{hopper_80gb, Profile};
use vgpuctl::mig::reshape::{self, Item};

use super::{bench_kinds, kinds_table, stream, Rng, MIXES};

#[derive(Default, Clone, Copy)]
struct IdleStats {
    offered: u64,
    offered_slices: u64,
    accepted_slices: u64,
    offered_big: u64,
    accepted_big: u64,
    frag_rejections: u64,
    moves: u64,
    repacks: u64,
    decision_ns: u128,
    decisions: u64,
    /// The slowest single decision (with its repack).
    worst_ns: u128,
}

impl IdleStats {
    fn add(&mut self, s: &IdleStats) {
        self.offered += s.offered;
        self.offered_slices += s.offered_slices;
        self.accepted_slices += s.accepted_slices;
        self.offered_big += s.offered_big;
        self.accepted_big += s.accepted_big;
        self.frag_rejections += s.frag_rejections;
        self.moves += s.moves;
        self.repacks += s.repacks;
        self.decision_ns += s.decision_ns;
        self.decisions += s.decisions;
        self.worst_ns = self.worst_ns.max(s.worst_ns);
    }
    fn slices(&self) -> f64 {
        self.accepted_slices as f64 / self.offered_slices.max(1) as f64
    }
    fn big(&self) -> f64 {
        self.accepted_big as f64 / self.offered_big.max(1) as f64
    }
}

#[derive(Clone, Copy)]
struct Inst {
    gpu: usize,
    start: u8,
    kind: usize,
    idle: bool,
}

enum Pol<'a> {
    FirstFit,
    Planner { planner: &'a Planner, max_moves: usize, across: bool },
    Oracle,
}

fn simulate(reqs: &[super::Req], idle: &[bool], n: usize, kinds: &[&Profile], table: &[Profile], pol: &Pol, warmup: usize) -> IdleStats {
    let mut st = IdleStats::default();
    let mut gpus = vec![Layout::default(); n];
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut insts: Vec<Option<Inst>> = vec![None; reqs.len()];
    let mut counts = vec![0u32; kinds.len()];
    // The repack oracle: `table` is `kinds` as a table, in the same order.
    let mut oracle = vgpuctl::mig::batch::Packer::new(table, &vec![Layout::default(); n]);
    let mut ends: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for (i, r) in reqs.iter().enumerate() {
        while let Some(Reverse((t, id))) = ends.peek().copied() {
            if f64::from_bits(t) > r.at {
                break;
            }
            ends.pop();
            if let Some(x) = insts[id].take() {
                if matches!(pol, Pol::Oracle) {
                    counts[x.kind] -= 1;
                } else {
                    gpus[x.gpu].remove_at(x.start);
                    on[x.gpu].retain(|o| *o != id);
                }
            }
        }
        let p = kinds[r.kind];
        let t0 = Instant::now();
        let mut moved = 0usize;
        let spot = match pol {
            Pol::FirstFit => first_fit(&gpus, p),
            Pol::Oracle => {
                counts[r.kind] += 1;
                let ok = oracle.fits(&counts);
                if !ok {
                    counts[r.kind] -= 1;
                }
                ok.then_some((0, 0))
            }
            Pol::Planner { planner, max_moves, across: true } => match planner.choose(&gpus, p) {
                Some(s) => Some(s),
                None => {
                    let items = items_of(&on, &insts, kinds);
                    match evict(table, kinds, &gpus, &items, p, *max_moves, planner) {
                        Some((g, a, out)) => {
                            for (idx, g2, s2) in &out {
                                let id = on[g][*idx];
                                let x = insts[id].as_mut().expect("placed");
                                gpus[g].remove_at(x.start);
                                gpus[*g2].place(kinds[x.kind], *s2);
                                x.gpu = *g2;
                                x.start = *s2;
                                on[*g2].push(id);
                            }
                            let evicted: Vec<usize> = out.iter().map(|(idx, _, _)| on[g][*idx]).collect();
                            let staying: Vec<usize> = on[g].iter().copied().filter(|id| !evicted.contains(id)).collect();
                            for m in &a.moves {
                                gpus[g].remove_at(m.from);
                            }
                            for m in &a.moves {
                                let id = staying[m.index];
                                let x = insts[id].as_mut().expect("placed");
                                gpus[g].place(kinds[x.kind], m.to);
                                x.start = m.to;
                            }
                            on[g] = staying;
                            moved = a.moves.len() + out.len();
                            a.added.first().map(|(_, s)| (g, *s))
                        }
                        None => None,
                    }
                }
            },
            Pol::Planner { planner, max_moves, across: false } => match planner.choose(&gpus, p) {
                Some(s) => Some(s),
                None if *max_moves > 0 => {
                    let items = items_of(&on, &insts, kinds);
                    match reshape::repack(table, &items, p.id, *max_moves, &|l| planner.capacity(l)) {
                        Some((g, a)) => {
                            for m in &a.moves {
                                gpus[g].remove_at(m.from);
                            }
                            for m in &a.moves {
                                let id = on[g][m.index];
                                let x = insts[id].as_mut().expect("placed");
                                gpus[g].place(kinds[x.kind], m.to);
                                x.start = m.to;
                            }
                            moved = a.moves.len();
                            a.added.first().map(|(_, s)| (g, *s))
                        }
                        None => None,
                    }
                }
                None => None,
            },
        };
        let dt = t0.elapsed().as_nanos();
        if let Some((g, s)) = spot {
            if !matches!(pol, Pol::Oracle) {
                gpus[g].place(p, s);
                on[g].push(i);
            }
            insts[i] = Some(Inst { gpu: g, start: s, kind: r.kind, idle: idle[i] });
            ends.push(Reverse(((r.at + r.hold).to_bits(), i)));
        }
        if i < warmup {
            continue;
        }
        let slices = u64::from(p.compute_slices());
        let big = p.compute_slices() >= 4;
        st.decisions += 1;
        st.decision_ns += dt;
        st.worst_ns = st.worst_ns.max(dt);
        st.offered += 1;
        st.offered_slices += slices;
        st.offered_big += u64::from(big);
        st.moves += moved as u64;
        st.repacks += u64::from(moved > 0);
        if spot.is_some() {
            st.accepted_slices += slices;
            st.accepted_big += u64::from(big);
        } else if !matches!(pol, Pol::Oracle) {
            let free: u32 = gpus.iter().map(|l| 8 - l.used_mask().count_ones()).sum();
            if first_fit(&gpus, p).is_none() && free >= u32::from(p.size) {
                st.frag_rejections += 1;
            }
        }
    }
    st
}

/// Every GPU's instances as the reshape sees them.
fn items_of(on: &[Vec<usize>], insts: &[Option<Inst>], kinds: &[&Profile]) -> Vec<Vec<Item>> {
    on.iter()
        .map(|ids| ids.iter().filter_map(|id| insts[*id]).map(|x| Item { profile_id: kinds[x.kind].id, start: x.start, movable: x.idle }).collect())
        .collect()
}

/// Room for `p` on some GPU g by moving idle instances of g to other GPUs
/// (where the planner puts them) and rearranging the rest of g: the fewest
/// moves in all, at most `max_moves`. (GPU, the arrangement of what stays
/// on g, and (index on g, new GPU, start) per evicted instance.)
#[allow(clippy::type_complexity)]
fn evict(
    table: &[Profile],
    kinds: &[&Profile],
    gpus: &[Layout],
    items: &[Vec<Item>],
    p: &Profile,
    max_moves: usize,
    planner: &Planner,
) -> Option<(usize, reshape::Arrangement, Vec<(usize, usize, u8)>)> {
    let mut best: Option<(usize, usize, reshape::Arrangement, Vec<(usize, usize, u8)>)> = None;
    for (g, its) in items.iter().enumerate() {
        let idle: Vec<usize> = (0..its.len()).filter(|i| its[*i].movable).collect();
        if idle.is_empty() {
            continue;
        }
        for mask in 0u32..(1 << idle.len()) {
            let k = mask.count_ones() as usize;
            if k > max_moves || best.as_ref().is_some_and(|b| k >= b.0) {
                continue;
            }
            let out: Vec<usize> = idle.iter().enumerate().filter(|(b, _)| mask & (1 << b) != 0).map(|(_, i)| *i).collect();
            let rest: Vec<Item> = (0..its.len()).filter(|i| !out.contains(i)).map(|i| its[i].clone()).collect();
            let Some(a) = reshape::make_room(table, &rest, p.id, max_moves - k, &|l| planner.capacity(l)) else { continue };
            if best.as_ref().is_some_and(|b| k + a.moves.len() >= b.0) {
                continue;
            }
            // The evicted go where the planner puts them, never back on g.
            let mut view = gpus.to_vec();
            view[g] = a.layout.clone();
            let full = kinds.iter().find(|q| q.size == 8).map(|q| {
                let mut l = Layout::default();
                l.place(q, 0);
                l
            });
            let keep = std::mem::replace(&mut view[g], full.unwrap_or_default());
            let mut placed = Vec::new();
            let mut order = out.clone();
            order.sort_by_key(|i| Reverse(table.iter().find(|t| t.id == its[*i].profile_id).map(|t| t.size).unwrap_or(0)));
            for i in order {
                let q = table.iter().find(|t| t.id == its[i].profile_id).expect("profile");
                match planner.choose(&view, q) {
                    Some((g2, s2)) => {
                        view[g2].place(q, s2);
                        placed.push((i, g2, s2));
                    }
                    None => break,
                }
            }
            let _ = keep;
            if placed.len() == out.len() {
                best = Some((k + a.moves.len(), g, a, placed));
            }
        }
    }
    best.map(|(_, g, a, out)| (g, a, out))
}

/// The bound on moves per repack the benchmark (and the docs' table) use.
pub const MOVES: usize = 3;

pub fn run(quick: bool) {
    let table = hopper_80gb();
    let kinds = bench_kinds(&table);
    let own = kinds_table(&kinds);
    let slices: Vec<f64> = kinds.iter().map(|p| f64::from(p.compute_slices())).collect();
    let seeds: u64 = if quick { 3 } else { 10 };
    println!("load 1.0, {seeds} seeds, repack of at most {MOVES} moves of idle instances per request; gap = (policy - first fit) / (exact repack oracle - first fit)");
    println!(
        "{:<12} {:>4} {:>5} {:<16} {:>8} {:>7} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10}",
        "mix", "N", "idle", "policy", "slices%", ">=4g%", "frag-rej%", "moves/100", "gap-slice", "gap-4g", "ns/decide", "worst-ns"
    );
    for (mix_name, mix) in MIXES {
        let weights = Mix { weights: kinds.iter().zip(mix.iter()).map(|(p, w)| (p.id, *w)).collect() };
        let planner = Planner::new(&table, &weights);
        let only: Option<usize> = std::env::var("IDLE_GPUS").ok().and_then(|v| v.parse().ok());
        for (n, count) in [(8usize, 4000usize), (64, 8000), (512, 12000)].into_iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
            let count = if quick { count / 3 } else { count };
            let oracle_ok = n <= 64;
            let mut ends: [IdleStats; 2] = Default::default();
            let mut rows: Vec<(f64, &str, IdleStats)> = Vec::new();
            let fs: Vec<f64> = std::env::var("IDLE_F").ok().map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or(vec![0.0, 0.25, 0.5]);
            for f in fs {
                let mut per = [IdleStats::default(); 3];
                for seed in 0..seeds {
                    let mut rng = Rng(0x5eed_0000 + seed * 7919 + n as u64 * 31 + 100);
                    let reqs = stream(&mut rng, n, 1.0, &mix, &slices, count);
                    let mut flip = Rng(0x1d1e_0000 + seed * 104_729 + n as u64);
                    let idle: Vec<bool> = reqs.iter().map(|_| flip.unit() < f).collect();
                    if f == 0.0 {
                        ends[0].add(&simulate(&reqs, &idle, n, &kinds, &own, &Pol::FirstFit, count / 10));
                        if oracle_ok {
                            ends[1].add(&simulate(&reqs, &idle, n, &kinds, &own, &Pol::Oracle, count / 10));
                        }
                    }
                    per[0].add(&simulate(&reqs, &idle, n, &kinds, &own, &Pol::Planner { planner: &planner, max_moves: 0, across: false }, count / 10));
                    per[1].add(&simulate(&reqs, &idle, n, &kinds, &own, &Pol::Planner { planner: &planner, max_moves: MOVES, across: false }, count / 10));
                    per[2].add(&simulate(
                        &reqs,
                        &idle,
                        n,
                        &kinds,
                        &own,
                        &Pol::Planner {
                            planner: &planner,
                            max_moves: std::env::var("IDLE_K").ok().and_then(|v| v.parse().ok()).unwrap_or(MOVES),
                            across: true,
                        },
                        count / 10,
                    ));
                }
                if f == 0.0 {
                    rows.push((f, "first-fit", ends[0]));
                    if oracle_ok {
                        rows.push((f, "repack-oracle", ends[1]));
                    }
                    rows.push((f, "planner", per[0]));
                }
                rows.push((f, "planner+repack", per[1]));
                rows.push((f, "repack-across", per[2]));
            }
            for (f, name, s) in &rows {
                let gap =
                    |a: f64, lo: f64, hi: f64| if oracle_ok && (hi - lo).abs() > 1e-12 { format!("{:.1}%", 100.0 * (a - lo) / (hi - lo)) } else { "-".into() };
                println!(
                    "{:<12} {:>4} {:>5.2} {:<16} {:>8.1} {:>7.1} {:>9.1} {:>11.2} {:>10} {:>10} {:>10} {:>10}",
                    mix_name,
                    n,
                    f,
                    name,
                    100.0 * s.slices(),
                    100.0 * s.big(),
                    100.0 * s.frag_rejections as f64 / s.offered.max(1) as f64,
                    100.0 * s.moves as f64 / s.offered.max(1) as f64,
                    gap(s.slices(), ends[0].slices(), ends[1].slices()),
                    gap(s.big(), ends[0].big(), ends[1].big()),
                    s.decision_ns / u128::from(s.decisions.max(1)),
                    s.worst_ns
                );
            }
        }
    }
}
