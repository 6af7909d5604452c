//! MIG placement benchmark: request streams with Poisson arrivals and
//! exponential holding times over N = 8, 64, 512 GPUs, offered load 0.5-1.5
//! of capacity, 10 fixed seeds, two mixes. Policies: first fit, best fit,
//! vgpuctl's planner; reference: a repack oracle (accept when the active set
//! plus the request fits the N GPUs in some valid layout: exact, by
//! `mig::batch::Packer`, the search `mig plan` runs, checked against brute
//! force; run for N <= 64).
//!
//!   cargo bench --bench placement [-- --quick|--headline|--no-oracle|--gpus N|--out FILE.jsonl]
//!   cargo bench --bench placement -- --idle [--quick]   (moving idle instances: placement/idle.rs)
//!
//! Streams come from a SplitMix64 generator seeded per run, so a run is
//! reproduced by its seed; every run's result is one JSONL line.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::time::Instant;

use vgpuctl::mig::batch::Packer;
use vgpuctl::mig::layout::Layout;
use vgpuctl::mig::planner::{best_fit, first_fit, Mix, Planner};
use vgpuctl::mig::profiles::{find, hopper_80gb, Profile};

#[path = "placement/idle.rs"]
mod idle;
#[path = "placement/optimum.rs"]
mod optimum;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The profiles requests ask for, and the two request mixes (weights in that order).
const KINDS: [&str; 5] = ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"];
const MIXES: [(&str, [f64; 5]); 2] = [("uniform", [0.2; 5]), ("small-heavy", [0.50, 0.25, 0.15, 0.05, 0.05])];

fn bench_kinds(table: &[Profile]) -> Vec<&Profile> {
    KINDS.iter().map(|n| find(table, n).expect("profile")).collect()
}

/// The benchmark's profiles as a table of their own, in `kinds` order (the
/// repack oracle's packer counts instances per entry of it; idle.rs plans
/// moves against it).
fn kinds_table(kinds: &[&Profile]) -> Vec<Profile> {
    kinds.iter().map(|p| (*p).clone()).collect()
}

#[derive(Clone, Copy)]
struct Req {
    at: f64,
    hold: f64,
    kind: usize,
}

fn stream(rng: &mut Rng, n: usize, load: f64, mix: &[f64], slices: &[f64], count: usize) -> Vec<Req> {
    let mean_slices: f64 = mix.iter().zip(slices).map(|(w, s)| w * s).sum();
    let rate = load * 7.0 * n as f64 / mean_slices; // mean holding time 1
    let mut t = 0.0;
    (0..count)
        .map(|_| {
            t += rng.exp(1.0 / rate);
            let u = rng.unit();
            let mut acc = 0.0;
            let kind = mix
                .iter()
                .position(|w| {
                    acc += w;
                    u < acc
                })
                .unwrap_or(mix.len() - 1);
            Req { at: t, hold: rng.exp(1.0), kind }
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Stats {
    offered: u64,
    accepted: u64,
    offered_slices: u64,
    accepted_slices: u64,
    offered_big: u64,
    accepted_big: u64,
    frag_rejections: u64,
    /// Turned away although a placement existed (the reserve).
    policy_rejections: u64,
    decision_ns: u128,
    decisions: u64,
    /// Per request kind: (offered, accepted, fragmentation rejections).
    per_kind: [(u64, u64, u64); 5],
}

#[derive(Clone, Copy, PartialEq)]
enum Policy {
    FirstFit,
    BestFit,
    Planner,
    /// The planner with the opt-in reserve of one empty GPU.
    Reserving,
    /// The planner scoring by fragmentation (`score = "fragmentation"`).
    Fragmentation,
    /// The planner scoring by the one-GPU value function (`score = "value"`).
    Value,
    /// The same, turning away requests worth less than their room (`admission = true`).
    ValueAdmission,
    Oracle,
    /// The optimal non-moving policy of the exact MDP (small hosts only).
    Optimal,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::FirstFit => "first-fit",
            Policy::BestFit => "best-fit",
            Policy::Planner => "planner",
            Policy::Reserving => "planner+reserve",
            Policy::Fragmentation => "planner-frag",
            Policy::Value => "planner-value",
            Policy::ValueAdmission => "value+admission",
            Policy::Oracle => "repack-oracle",
            Policy::Optimal => "mdp-optimum",
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    reqs: &[Req],
    n: usize,
    kinds: &[&Profile],
    policy: Policy,
    planners: &[&Planner; 5],
    oracle_table: &[Profile],
    optimal: Option<&optimum::OptimalPolicy>,
    warmup: usize,
) -> Stats {
    let mut st = Stats::default();
    let mut gpus = vec![Layout::default(); n];
    let mut counts = vec![0u32; kinds.len()];
    // One packer per run: what it proves about these N GPUs stays proven.
    let mut oracle = Packer::new(oracle_table, &vec![Layout::default(); n]);
    // (end time bits, gpu, start, kind)
    let mut ends: BinaryHeap<Reverse<(u64, usize, u8, usize)>> = BinaryHeap::new();
    for (i, r) in reqs.iter().enumerate() {
        while let Some(Reverse((t, g, s, k))) = ends.peek().copied() {
            if f64::from_bits(t) > r.at {
                break;
            }
            ends.pop();
            if policy == Policy::Oracle {
                counts[k] -= 1;
            } else {
                gpus[g].remove_at(s);
            }
        }
        let p = kinds[r.kind];
        let slices = u64::from(p.compute_slices());
        let t0 = Instant::now();
        let spot = match policy {
            Policy::FirstFit => first_fit(&gpus, p),
            Policy::BestFit => best_fit(&gpus, p),
            Policy::Planner => planners[0].choose(&gpus, p),
            Policy::Reserving => planners[1].choose(&gpus, p),
            Policy::Fragmentation => planners[2].choose(&gpus, p),
            Policy::Value => planners[3].choose(&gpus, p),
            Policy::ValueAdmission => planners[4].choose(&gpus, p),
            Policy::Optimal => optimal.and_then(|o| o.choose(&gpus, p, r.kind)),
            Policy::Oracle => {
                counts[r.kind] += 1;
                let ok = oracle.fits(&counts);
                if !ok {
                    counts[r.kind] -= 1;
                }
                ok.then_some((0, 0))
            }
        };
        let dt = t0.elapsed().as_nanos();
        let end = (r.at + r.hold).to_bits();
        if let Some((g, s)) = spot {
            if policy != Policy::Oracle {
                gpus[g].place(p, s);
            }
            ends.push(Reverse((end, g, s, r.kind)));
        }
        if i < warmup {
            continue;
        }
        st.decisions += 1;
        st.decision_ns += dt;
        st.offered += 1;
        st.offered_slices += slices;
        let big = p.compute_slices() >= 4;
        st.offered_big += u64::from(big);
        st.per_kind[r.kind].0 += 1;
        if spot.is_some() {
            st.per_kind[r.kind].1 += 1;
            st.accepted += 1;
            st.accepted_slices += slices;
            st.accepted_big += u64::from(big);
        } else if policy != Policy::Oracle {
            let free: u32 = gpus.iter().map(|l| 8 - l.used_mask().count_ones()).sum();
            if first_fit(&gpus, p).is_some() {
                // It would have fitted: turned away by the reserve, not by fragmentation.
                st.policy_rejections += 1;
            } else if free >= u32::from(p.size) {
                st.frag_rejections += 1;
                st.per_kind[r.kind].2 += 1;
            }
        }
    }
    st
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let no_oracle = args.iter().any(|a| a == "--no-oracle");
    let headline_only = args.iter().any(|a| a == "--headline");
    if args.iter().any(|a| a == "--idle") {
        idle::run(quick);
        return;
    }
    if args.iter().any(|a| a == "--sweep") {
        sweep();
        return;
    }
    if args.iter().any(|a| a == "--batch") {
        batch_bench();
        return;
    }
    if args.iter().any(|a| a == "--planner-regret") {
        planner_regret();
        return;
    }
    if args.iter().any(|a| a == "--explain-optimum") {
        explain_optimum();
        return;
    }
    if args.iter().any(|a| a == "--optimum") {
        optimum_table();
        return;
    }
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| format!("{}/placement-bench.jsonl", env!("CARGO_TARGET_TMPDIR")));
    let table = hopper_80gb();
    let kinds = bench_kinds(&table);
    let slices: Vec<f64> = kinds.iter().map(|p| f64::from(p.compute_slices())).collect();
    let oracle_kinds = kinds_table(&kinds);
    let mixes = MIXES;
    let all_sizes: &[(usize, usize)] = if headline_only {
        &[(8, 4000)]
    } else if quick {
        &[(8, 1500), (64, 2000)]
    } else {
        &[(8, 4000), (64, 8000), (512, 12000)]
    };
    // --gpus N: only that host size (e.g. 512, to time decisions).
    let only_gpus: Option<usize> = args.iter().position(|a| a == "--gpus").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
    let sizes: Vec<(usize, usize)> = all_sizes.iter().copied().filter(|(n, _)| only_gpus.is_none_or(|g| g == *n)).collect();
    let loads: &[f64] = if quick || headline_only { &[1.0] } else { &[0.5, 0.75, 1.0, 1.25, 1.5] };
    let seeds: u64 = if quick { 3 } else { 10 };
    let mut f = std::fs::File::create(&out).expect("output file");
    println!(
        "{:<12} {:>4} {:>5} {:<15} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10}",
        "mix", "N", "load", "policy", "accept%", "slices%", ">=4g%", "frag-rej%", "policy-rej%", "ns/decide"
    );
    // Aggregate for the headline comparison: 8 GPUs, load 1.0, small-heavy.
    let mut headline: Vec<(Policy, Stats)> = Vec::new();
    for (mix_name, mix) in mixes.iter().filter(|(m, _)| !headline_only || *m == "small-heavy") {
        let weights = Mix { weights: kinds.iter().zip(mix.iter()).map(|(p, w)| (p.id, *w)).collect() };
        let planner = Planner::new(&table, &weights);
        let reserving = Planner::new(&table, &weights).with_reserve(vgpuctl::mig::planner::Reserve { whole: 1, half: 0 });
        let fragmenting = Planner::new(&table, &weights).with_score(vgpuctl::mig::planner::Score::Fragmentation);
        let valuing = Planner::new(&table, &weights).with_score(vgpuctl::mig::planner::Score::Value);
        let admitting = Planner::new(&table, &weights).with_score(vgpuctl::mig::planner::Score::Value).with_admission(true);
        for &(n, count) in &sizes {
            for &load in loads {
                let mut total: Vec<(Policy, Stats)> = Vec::new();
                for seed in 0..seeds {
                    let mut rng = Rng(0x5eed_0000 + seed * 7919 + n as u64 * 31 + (load * 100.0) as u64);
                    let reqs = stream(&mut rng, n, load, mix, &slices, count);
                    let mut policies = vec![
                        Policy::FirstFit,
                        Policy::BestFit,
                        Policy::Planner,
                        Policy::Reserving,
                        Policy::Fragmentation,
                        Policy::Value,
                        Policy::ValueAdmission,
                    ];
                    if n <= 64 && !no_oracle {
                        policies.push(Policy::Oracle);
                    }
                    for pol in policies {
                        let s = simulate(&reqs, n, &kinds, pol, &[&planner, &reserving, &fragmenting, &valuing, &admitting], &oracle_kinds, None, count / 10);
                        writeln!(
                            f,
                            "{{\"mix\":\"{mix_name}\",\"gpus\":{n},\"load\":{load},\"seed\":{seed},\"requests\":{count},\"policy\":\"{}\",\"offered\":{},\"accepted\":{},\"offered_slices\":{},\"accepted_slices\":{},\"offered_big\":{},\"accepted_big\":{},\"frag_rejections\":{},\"policy_rejections\":{},\"ns_per_decision\":{}}}",
                            pol.name(), s.offered, s.accepted, s.offered_slices, s.accepted_slices, s.offered_big, s.accepted_big, s.frag_rejections, s.policy_rejections, s.decision_ns / u128::from(s.decisions.max(1))
                        ).expect("write");
                        match total.iter_mut().find(|(p, _)| *p == pol) {
                            Some((_, t)) => {
                                t.offered += s.offered;
                                t.accepted += s.accepted;
                                t.offered_slices += s.offered_slices;
                                t.accepted_slices += s.accepted_slices;
                                t.offered_big += s.offered_big;
                                t.accepted_big += s.accepted_big;
                                t.frag_rejections += s.frag_rejections;
                                t.policy_rejections += s.policy_rejections;
                                t.decision_ns += s.decision_ns;
                                t.decisions += s.decisions;
                                for (a, b) in t.per_kind.iter_mut().zip(s.per_kind) {
                                    a.0 += b.0;
                                    a.1 += b.1;
                                    a.2 += b.2;
                                }
                            }
                            None => total.push((pol, s)),
                        }
                    }
                }
                for (pol, t) in &total {
                    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
                    println!(
                        "{:<12} {:>4} {:>5.2} {:<15} {:>9.1} {:>9.1} {:>8.1} {:>10} {:>10.1} {:>10}",
                        mix_name,
                        n,
                        load,
                        pol.name(),
                        pct(t.accepted, t.offered),
                        pct(t.accepted_slices, t.offered_slices),
                        pct(t.accepted_big, t.offered_big),
                        if *pol == Policy::Oracle { "-".to_string() } else { format!("{:.1}", pct(t.frag_rejections, t.offered)) },
                        pct(t.policy_rejections, t.offered),
                        t.decision_ns / u128::from(t.decisions.max(1))
                    );
                }
                if *mix_name == "small-heavy" && n == 8 && (load - 1.0).abs() < 1e-9 {
                    headline = total.clone();
                }
            }
        }
    }
    if headline.is_empty() {
        println!("results: {out}");
        return;
    }
    let get = |p: Policy| headline.iter().find(|(x, _)| *x == p).map(|(_, s)| *s).unwrap_or_default();
    let (ff, pl, or, rs) = (get(Policy::FirstFit), get(Policy::Planner), get(Policy::Oracle), get(Policy::Reserving));
    let r = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let gap = |f: f64, p: f64, o: f64| if (o - f).abs() < 1e-12 { 1.0 } else { (p - f) / (o - f) };
    println!("\nheadline: 8 GPUs, load 1.0, small-heavy mix, {seeds} seeds");
    println!(
        "  slice-weighted acceptance: first-fit {:.3}, planner {:.3}, oracle {:.3}: planner closes {:.0}% of the gap (goal >= 50%)",
        r(ff.accepted_slices, ff.offered_slices),
        r(pl.accepted_slices, pl.offered_slices),
        r(or.accepted_slices, or.offered_slices),
        100.0 * gap(r(ff.accepted_slices, ff.offered_slices), r(pl.accepted_slices, pl.offered_slices), r(or.accepted_slices, or.offered_slices))
    );
    println!(
        "  >=4g acceptance:           first-fit {:.3}, planner {:.3}, oracle {:.3}: planner closes {:.0}% of the gap (goal >= 50%)",
        r(ff.accepted_big, ff.offered_big),
        r(pl.accepted_big, pl.offered_big),
        r(or.accepted_big, or.offered_big),
        100.0 * gap(r(ff.accepted_big, ff.offered_big), r(pl.accepted_big, pl.offered_big), r(or.accepted_big, or.offered_big))
    );
    println!(
        "  fragmentation rejections:  first-fit {:.3}, planner {:.3} of requests: ratio {:.2} (goal <= 0.5)",
        r(ff.frag_rejections, ff.offered),
        r(pl.frag_rejections, pl.offered),
        r(pl.frag_rejections, pl.offered) / r(ff.frag_rejections, ff.offered).max(1e-12)
    );
    println!(
        "  opt-in reserve of one empty GPU: slices {:.3}, >=4g {:.3}, fragmentation rejections {:.3}, turned away by the reserve {:.3}",
        r(rs.accepted_slices, rs.offered_slices),
        r(rs.accepted_big, rs.offered_big),
        r(rs.frag_rejections, rs.offered),
        r(rs.policy_rejections, rs.offered)
    );
    println!("  per profile (accepted% / fragmentation rejections% of offered):");
    for (pol, t) in &headline {
        let cells: Vec<String> = kinds
            .iter()
            .zip(t.per_kind)
            .map(|(p, (o, a, fr))| format!("{} {:.0}/{:.0}", p.name, 100.0 * a as f64 / o.max(1) as f64, 100.0 * fr as f64 / o.max(1) as f64))
            .collect();
        println!("    {:<15} {}", pol.name(), cells.join("  "));
    }
    println!("results: {out}");
}

/// `--optimum`: for 1-3 GPUs, both mixes, load 1.0, the exact optimum of
/// any non-moving policy (MDP) against first fit, the planner, the reserve
/// and the exact repack oracle (simulated on long streams), and the optimal
/// policy itself simulated as a check that the MDP and the simulator agree.
fn optimum_table() {
    let table = hopper_80gb();
    let kinds = bench_kinds(&table);
    let slices: Vec<f64> = kinds.iter().map(|p| f64::from(p.compute_slices())).collect();
    let oracle_kinds = kinds_table(&kinds);
    let universe = optimum::Universe::new(&kinds);
    println!("one GPU: {} layouts up to symmetry ({} slice symmetries)", universe.len(), universe.symmetries());
    let mixes = MIXES;
    println!(
        "{:<12} {:>2} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "mix",
        "N",
        "states",
        "first-fit",
        "planner",
        "reserve",
        "opt-place",
        "optimum",
        "opt(sim)",
        "oracle",
        "opt gap%",
        "plan gap%",
        "plan/opt",
        "plan/opt-place"
    );
    for (mix_name, mix) in &mixes {
        let weights = Mix { weights: kinds.iter().zip(mix.iter()).map(|(p, w)| (p.id, *w)).collect() };
        let planner = Planner::new(&table, &weights);
        let reserving = Planner::new(&table, &weights).with_reserve(vgpuctl::mig::planner::Reserve { whole: 1, half: 0 });
        let fragmenting = Planner::new(&table, &weights).with_score(vgpuctl::mig::planner::Score::Fragmentation);
        let valuing = Planner::new(&table, &weights).with_score(vgpuctl::mig::planner::Score::Value);
        let admitting = Planner::new(&table, &weights).with_score(vgpuctl::mig::planner::Score::Value).with_admission(true);
        for n in 1..=3usize {
            let mean: f64 = mix.iter().zip(&slices).map(|(w, s)| w * s).sum();
            let rate = 7.0 * n as f64 / mean;
            let t0 = Instant::now();
            let mdp = optimum::Mdp::new(&universe, n);
            let (gain, h) = mdp.solve(rate, mix, &slices, 1e-7, false);
            let placing_only = mdp.solve(rate, mix, &slices, 1e-7, true).0 / (7.0 * n as f64);
            let exact = gain / (7.0 * n as f64);
            let solve_s = t0.elapsed().as_secs_f64();
            let opt = optimum::OptimalPolicy { mdp: &mdp, h, layout_index: universe.index(), rewards: slices.clone() };
            let acc = |pol: Policy| {
                let (mut a, mut o) = (0u64, 0u64);
                for seed in 0..10u64 {
                    let mut rng = Rng(0x0971_0000 + seed * 104_729 + n as u64);
                    let reqs = stream(&mut rng, n, 1.0, mix, &slices, 60_000);
                    let s = simulate(&reqs, n, &kinds, pol, &[&planner, &reserving, &fragmenting, &valuing, &admitting], &oracle_kinds, Some(&opt), 6_000);
                    a += s.accepted_slices;
                    o += s.offered_slices;
                }
                a as f64 / o as f64
            };
            let (ff, pl, rs, sim_opt, or) = (acc(Policy::FirstFit), acc(Policy::Planner), acc(Policy::Reserving), acc(Policy::Optimal), acc(Policy::Oracle));
            let fr = acc(Policy::Fragmentation);
            let (va, vad) = (acc(Policy::Value), acc(Policy::ValueAdmission));
            let gap = |x: f64| 100.0 * (x - ff) / (or - ff);
            println!(
                "{:<12} {:>2} {:>8} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.1} {:>9.1} {:>7.0}% {:>7.0}%   (solved in {:.1} s)",
                mix_name,
                n,
                mdp.states_len(),
                ff,
                pl,
                rs,
                placing_only,
                exact,
                sim_opt,
                or,
                gap(exact),
                gap(pl),
                100.0 * gap(pl) / gap(exact),
                100.0 * gap(pl) / gap(placing_only),
                solve_s
            );
            // Against the optimum simulated on the same streams too: the
            // streams' luck (the optimum simulates 0.0003-0.0010 above its
            // exact value here) then cancels instead of flattering the ratio.
            let same = |x: f64| 100.0 * (x - ff) / (sim_opt - ff);
            // Each rule's exact long-run value on the MDP (no sampling), applied
            // to canonical layouts: a check on the simulated figure. First fit
            // has no such value: it depends on the GPUs' order, which the
            // MDP's state (a multiset of layouts) does not keep.
            let index = universe.index();
            let exact_of = |pl: &Planner| {
                mdp.evaluate(rate, mix, &slices, 1e-7, &mdp.decisions(&kinds, &index, |g: &[Layout], k: usize| pl.choose(g, kinds[k]))) / (7.0 * n as f64)
            };
            for (name, x, pl) in
                [("planner", pl, &planner), ("planner-frag", fr, &fragmenting), ("planner-value", va, &valuing), ("value+admission", vad, &admitting)]
            {
                // Both exact (no sampling but first fit's, which has no exact value).
                let e = exact_of(pl);
                println!(
                    "{:<12} {:>2}   {name:<16} {x:.4}: {:.1}% of the gap, {:.0}% of the optimum's, {:.0}% of the optimum's on the same streams; exact {e:.5}, {:.0}% of the optimum's exact",
                    "",
                    n,
                    gap(x),
                    100.0 * gap(x) / gap(exact),
                    same(x),
                    100.0 * gap(e) / gap(exact)
                );
            }
        }
    }
}

/// `--explain-optimum`: on one GPU, where the optimal policy turns away a
/// request that fits (admission control), per mix.
fn explain_optimum() {
    let table = hopper_80gb();
    let kinds = bench_kinds(&table);
    let slices: Vec<f64> = kinds.iter().map(|p| f64::from(p.compute_slices())).collect();
    let universe = optimum::Universe::new(&kinds);
    let mixes = MIXES;
    for (mix_name, mix) in &mixes {
        let mean: f64 = mix.iter().zip(&slices).map(|(w, s)| w * s).sum();
        for n in 1..=2usize {
            let mdp = optimum::Mdp::new(&universe, n);
            let (_, h) = mdp.solve(7.0 * n as f64 / mean, mix, &slices, 1e-9, false);
            let (mut fits, mut rejected) = ([0u32; 5], [0u32; 5]);
            for (s, st) in mdp.states.iter().enumerate() {
                for (k, p) in kinds.iter().enumerate() {
                    if mdp.fits(s as u32, k) {
                        fits[k] += 1;
                        if mdp.best(&h, s as u32, k, slices[k]).is_none() {
                            rejected[k] += 1;
                            if n == 2 {
                                let maps: Vec<String> = st.iter().map(|l| universe.describe(*l)).collect();
                                println!("{mix_name} N=2: {} rejects {}", maps.join(" "), p.name);
                            }
                        }
                    }
                }
            }
            println!("{mix_name} N={n}: states where it fits / is turned away per kind: {:?} / {:?}", fits, rejected);
        }
    }
}

/// `--planner-regret`: where the planner's placement loses most against the
/// optimal one (relative values of the exact MDP), on 1 and 2 GPUs.
fn planner_regret() {
    let table = hopper_80gb();
    let kinds = bench_kinds(&table);
    let slices: Vec<f64> = kinds.iter().map(|p| f64::from(p.compute_slices())).collect();
    let universe = optimum::Universe::new(&kinds);
    let index = universe.index();
    let mixes = MIXES;
    for (mix_name, mix) in &mixes {
        let weights = Mix { weights: kinds.iter().zip(mix.iter()).map(|(p, w)| (p.id, *w)).collect() };
        let planner = Planner::new(&table, &weights);
        let mean: f64 = mix.iter().zip(&slices).map(|(w, s)| w * s).sum();
        for n in 1..=2usize {
            let mdp = optimum::Mdp::new(&universe, n);
            let (_, h) = mdp.solve(7.0 * n as f64 / mean, mix, &slices, 1e-9, true);
            let mut regrets: Vec<(f64, String)> = Vec::new();
            for (si, st) in mdp.states.iter().enumerate() {
                let gpus: Vec<Layout> = st.iter().map(|l| universe.layout_of(*l)).collect();
                for (k, p) in kinds.iter().enumerate() {
                    let Some((g, s)) = planner.choose(&gpus, p) else { continue };
                    let mut after = gpus.clone();
                    after[g].place(p, s);
                    let chosen = h[mdp.state_of(&after, &index) as usize];
                    let best = mdp.successors(si as u32, k).iter().map(|t| h[*t as usize]).fold(f64::NEG_INFINITY, f64::max);
                    if best - chosen > 1e-6 {
                        let maps: Vec<String> = gpus.iter().map(|l| l.slice_map(&table)).collect();
                        // The best concrete placement, for comparison.
                        let mut alt = String::new();
                        for (bg, l) in gpus.iter().enumerate() {
                            for bs in l.free_starts(p) {
                                let mut a = gpus.clone();
                                a[bg].place(p, bs);
                                if (h[mdp.state_of(&a, &index) as usize] - best).abs() < 1e-9 && alt.is_empty() {
                                    alt = format!("GPU {bg} start {bs}");
                                }
                            }
                        }
                        regrets.push((best - chosen, format!("{} + {} -> GPU {g} start {s}, best {alt}", maps.join(" "), p.name)));
                    }
                }
            }
            regrets.sort_by(|a, b| b.0.total_cmp(&a.0));
            println!("{mix_name} N={n}: {} decisions differ from the best placement; largest regrets:", regrets.len());
            for (r, what) in regrets.iter().take(12) {
                println!("  {r:.4}  {what}");
            }
        }
    }
}

/// `--sweep`: the planner's scores (capacity, fragmentation, value, value
/// with admission) on the optimum table's streams (1-3 GPUs) and on 8 and 64
/// GPUs, both mixes, load 1.0: slice-weighted / >=4g acceptance.
fn sweep() {
    let table = hopper_80gb();
    let kinds = bench_kinds(&table);
    let slices: Vec<f64> = kinds.iter().map(|p| f64::from(p.compute_slices())).collect();
    let oracle_kinds = kinds_table(&kinds);
    let mixes = MIXES;
    use vgpuctl::mig::planner::Score;
    for (name, score, admission) in [
        ("capacity", Score::Capacity, false),
        ("fragmentation", Score::Fragmentation, false),
        ("value", Score::Value, false),
        ("value+admission", Score::Value, true),
    ] {
        let mut line = format!("{name:<16}");
        for (mix_name, mix) in &mixes {
            let mw = Mix { weights: kinds.iter().zip(mix.iter()).map(|(p, w)| (p.id, *w)).collect() };
            let planner = Planner::new(&table, &mw).with_score(score).with_admission(admission);
            for (n, count, base) in [(1usize, 60_000usize, 0x0971_0000u64), (2, 60_000, 0x0971_0000), (3, 60_000, 0x0971_0000), (8, 4000, 0), (64, 8000, 0)] {
                let (mut a, mut o, mut ab, mut ob) = (0u64, 0u64, 0u64, 0u64);
                for seed in 0..10u64 {
                    let mut rng = if base != 0 { Rng(base + seed * 104_729 + n as u64) } else { Rng(0x5eed_0000 + seed * 7919 + n as u64 * 31 + 100) };
                    let reqs = stream(&mut rng, n, 1.0, mix, &slices, count);
                    let s = simulate(&reqs, n, &kinds, Policy::Planner, &[&planner, &planner, &planner, &planner, &planner], &oracle_kinds, None, count / 10);
                    a += s.accepted_slices;
                    o += s.offered_slices;
                    ab += s.accepted_big;
                    ob += s.offered_big;
                }
                line.push_str(&format!("  {}{n}: {:.4}/{:.3}", &mix_name[..1], a as f64 / o as f64, ab as f64 / ob.max(1) as f64));
            }
        }
        println!("{line}");
    }
}

/// `--batch`: `mig plan`'s exact batch placement (vgpuctl::mig::batch).
/// 1. Its answer against a brute-force placement search on 3,000 random
///    batches over 1–8 GPUs that already hold instances, for four profile
///    tables (H100 80GB, the real H200's, A100 40GB, A30): disagreements.
/// 2. Its time for 8 and 64 GPUs with `mig plan`'s step budget: random
///    current layouts, random batches near the free room, median and
///    slowest, and how often it gave up.
fn batch_bench() {
    use vgpuctl::mig::batch;
    let h200 = vgpuctl::nvml::parse(include_str!("../tests/fixtures/h200-device-run/nvml-snapshot.json")).expect("H200 capture").gpus[0].profile_table();
    let mut tables = vec![("H100 80GB", hopper_80gb()), ("H200", h200)];
    tables.extend(vgpuctl::mig::profiles::reference_tables());
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let random_layouts = |rng: &mut Rng, table: &[Profile], gpus: usize, most: u64| -> Vec<Layout> {
        let mut current = vec![Layout::default(); gpus];
        for l in &mut current {
            for _ in 0..rng.below(most + 1) {
                let p = &table[rng.below(table.len() as u64) as usize];
                let starts = l.free_starts(p);
                if !starts.is_empty() {
                    l.place(p, starts[rng.below(starts.len() as u64) as usize]);
                }
            }
        }
        current
    };
    let random_demand = |rng: &mut Rng, table: &[Profile], items: u64| -> Vec<u32> {
        let mut d = vec![0u32; table.len()];
        for _ in 0..items {
            // Small profiles more likely, as requests come.
            let n = table.len() as u64;
            d[(rng.below(n) * rng.below(n) / n) as usize] += 1;
        }
        d
    };
    let (mut runs, mut fit, mut wrong) = (0, 0, 0);
    let start = Instant::now();
    let per_table = if std::env::args().any(|a| a == "--quick") { 0 } else { 750 };
    for (model, table) in &tables {
        for _ in 0..per_table {
            let gpus = 1 + rng.below(8) as usize;
            let current = random_layouts(&mut rng, table, gpus, 6);
            let items = 1 + rng.below(2 + gpus as u64);
            let d = random_demand(&mut rng, table, items);
            let exact = batch::place(table, &current, &d).is_some();
            let brute = batch::brute_force_onto(table, &current, &d);
            runs += 1;
            fit += usize::from(brute);
            if exact != brute {
                wrong += 1;
                println!("DISAGREE {model}: {gpus} GPUs, demand {d:?}: exact {exact}, brute force {brute}");
            }
        }
    }
    println!(
        "exact vs brute force: {runs} random batches over 1-8 GPUs and 4 tables, {fit} fit, {wrong} disagreements ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    let table = hopper_80gb();
    for gpus in [8usize, 64] {
        let mut times = Vec::new();
        let mut fits = 0;
        let mut gave_up = 0;
        let batches = if std::env::args().any(|a| a == "--quick") { 20 } else { 200 };
        for _ in 0..batches {
            let current = random_layouts(&mut rng, &table, gpus, 3);
            let free: u64 = current.iter().map(|l| u64::from(8 - l.used_mask().count_ones())).sum();
            // Slices of the batch near the free room: some fit, some do not.
            let items = free * 2 / 3 + rng.below(free / 3 + 1);
            let d = random_demand(&mut rng, &table, items);
            let t = Instant::now();
            match batch::place_within(&table, &current, &d, batch::PLAN_BUDGET) {
                Ok(Some(_)) => fits += 1,
                Ok(None) => {}
                Err(batch::GaveUp) => gave_up += 1,
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "{gpus} GPUs (H100 80GB, {batches} batches, {fits} fit, {gave_up} gave up after {} steps): median {:.2} ms, p90 {:.2} ms, slowest {:.2} ms",
            batch::PLAN_BUDGET,
            at(0.5),
            at(0.9),
            at(1.0)
        );
    }
}
