//! Reshaping one GPU's MIG layout around the instances that must stay.
//!
//! A GPU instance that no vGPU, process, VFIO user or VM start refers to can
//! be destroyed and made again at another start of the same GPU without
//! anything a guest could see (`instances::Instances::idleness` decides
//! which). This module is the pure part: given the instances on one GPU,
//! each pinned or movable, and optionally instances to add, it enumerates
//! every valid layout that keeps the pinned ones where they are (NVIDIA's
//! placement rules, as `Layout` checks them) and picks the best by a rank
//! the caller gives: `mig defrag` maximises what the GPU can still take and
//! then moves the fewest; an on-demand repack makes room for one request
//! with the fewest moves; `apply` fits a declared layout with the fewest.
//!
//! Instances of one profile are interchangeable, so a layout is a set of
//! starts per profile; an instance already at one of its profile's target
//! starts stays, the others move to the remaining targets. A GPU has at most
//! 8 slices, so the enumeration is tiny (a few hundred layouts at most).

use serde::Serialize;

use super::layout::{Layout, Placed};
use super::profiles::Profile;

/// An instance on the GPU as the reshape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub profile_id: u32,
    pub start: u8,
    pub movable: bool,
}

/// One instance moved: destroyed at `from`, made again at `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Move {
    /// Index of the instance in the list the reshape was given.
    #[serde(skip)]
    pub index: usize,
    pub profile_id: u32,
    pub from: u8,
    pub to: u8,
}

/// A reshaped GPU: what moves, what is added, and the layout after.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrangement {
    pub moves: Vec<Move>,
    /// New instances (profile id, start), for the ones asked to be added.
    pub added: Vec<(u32, u8)>,
    pub layout: Layout,
}

/// What the enumeration needs per profile: the movable instances' starts,
/// how many new ones, and the starts new ones must take.
struct Want {
    profile: usize,
    current: Vec<u8>,
    new: usize,
    fixed: Vec<u8>,
}

/// Every layout with the pinned instances of `current` in place, the
/// movable ones somewhere, and `add` ((profile id, required start)) added;
/// `visit` gets each, with its moves and additions. `false` when a profile
/// id is not in `table`.
pub fn each(table: &[Profile], current: &[Item], add: &[(u32, Option<u8>)], visit: &mut dyn FnMut(Arrangement)) -> bool {
    let mut base = Layout::default();
    for i in current.iter().filter(|i| !i.movable) {
        let Some(p) = table.iter().find(|p| p.id == i.profile_id) else { return false };
        base.instances.push(Placed { profile_id: p.id, start: i.start, size: p.size });
    }
    let mut wants: Vec<Want> = Vec::new();
    let want_of = |id: u32, wants: &mut Vec<Want>| -> Option<usize> {
        let k = table.iter().position(|p| p.id == id)?;
        Some(match wants.iter().position(|w| w.profile == k) {
            Some(w) => w,
            None => {
                wants.push(Want { profile: k, current: Vec::new(), new: 0, fixed: Vec::new() });
                wants.len() - 1
            }
        })
    };
    for i in current.iter().filter(|i| i.movable) {
        let Some(w) = want_of(i.profile_id, &mut wants) else { return false };
        wants[w].current.push(i.start);
    }
    for (id, start) in add {
        let Some(w) = want_of(*id, &mut wants) else { return false };
        match start {
            Some(s) => wants[w].fixed.push(*s),
            None => wants[w].new += 1,
        }
    }
    // Fixed starts first: they are not choices.
    for w in &wants {
        for s in &w.fixed {
            if !base.place(&table[w.profile], *s) {
                return true;
            }
        }
    }
    // Largest first: they have the fewest places, so the search stays small.
    wants.sort_by_key(|w| std::cmp::Reverse((table[w.profile].size, table[w.profile].id)));
    let mut chosen: Vec<Vec<u8>> = vec![Vec::new(); wants.len()];
    search(table, &wants, 0, 0, &mut base, &mut chosen, current, visit);
    true
}

#[allow(clippy::too_many_arguments)]
fn search(
    table: &[Profile],
    wants: &[Want],
    w: usize,
    from: usize,
    l: &mut Layout,
    chosen: &mut Vec<Vec<u8>>,
    current: &[Item],
    visit: &mut dyn FnMut(Arrangement),
) {
    if w == wants.len() {
        visit(settle(table, wants, chosen, current, l));
        return;
    }
    let want = &wants[w];
    let p = &table[want.profile];
    if chosen[w].len() == want.current.len() + want.new {
        search(table, wants, w + 1, 0, l, chosen, current, visit);
        return;
    }
    for (i, &s) in p.starts.iter().enumerate().skip(from) {
        if l.fits_at(p, s) {
            l.place(p, s);
            chosen[w].push(s);
            search(table, wants, w, i + 1, l, chosen, current, visit);
            chosen[w].pop();
            l.remove_at(s);
        }
    }
}

/// Turns chosen starts into moves: an instance at a chosen start of its
/// profile stays, the others take the chosen starts left, in order; what is
/// left after that is new.
fn settle(table: &[Profile], wants: &[Want], chosen: &[Vec<u8>], current: &[Item], l: &Layout) -> Arrangement {
    let mut moves = Vec::new();
    let mut added = Vec::new();
    for (w, starts) in wants.iter().zip(chosen) {
        let id = table[w.profile].id;
        let mut free: Vec<u8> = starts.iter().copied().filter(|s| !w.current.contains(s)).collect();
        free.reverse();
        for (index, item) in current.iter().enumerate().filter(|(_, i)| i.movable && i.profile_id == id) {
            if !starts.contains(&item.start) {
                if let Some(to) = free.pop() {
                    moves.push(Move { index, profile_id: id, from: item.start, to });
                }
            }
        }
        free.reverse();
        added.extend(free.into_iter().map(|s| (id, s)));
        added.extend(w.fixed.iter().map(|s| (id, *s)));
    }
    moves.sort_by_key(|m| m.index);
    added.sort();
    Arrangement { moves, added, layout: l.clone() }
}

/// The arrangement with the highest `rank` (compared lexicographically;
/// ties keep the first found), or `None` when there is none.
pub fn best(table: &[Profile], current: &[Item], add: &[(u32, Option<u8>)], rank: &dyn Fn(&Arrangement) -> [f64; 3]) -> Option<Arrangement> {
    let mut top: Option<([f64; 3], Arrangement)> = None;
    each(table, current, add, &mut |a| {
        let r = rank(&a);
        let better = match &top {
            None => true,
            Some((t, _)) => r.iter().zip(t).find(|(x, y)| (**x - **y).abs() > 1e-9).is_some_and(|(x, y)| x > y),
        };
        if better {
            top = Some((r, a));
        }
    });
    top.map(|(_, a)| a)
}

/// The largest profile that still fits on the layout, as a number that
/// orders profiles by compute slices, then memory slices (0: none fits).
pub fn largest_free(table: &[Profile], l: &Layout) -> u32 {
    table.iter().filter(|p| !l.free_starts(p).is_empty()).map(|p| u32::from(p.compute_slices()) * 16 + u32::from(p.size)).max().unwrap_or(0)
}

/// `mig defrag` for one GPU: the layout that leaves room for the largest
/// profile, then the most weighted capacity (`capacity`: the planner's, by
/// the policy's mix), reached with the fewest moves. `None` when no move
/// makes the GPU able to take more than it can now.
pub fn defrag(table: &[Profile], current: &[Item], capacity: &dyn Fn(&Layout) -> f64) -> Option<Arrangement> {
    let now = best(table, current, &[], &|a| [0.0, 0.0, -(a.moves.len() as f64)])?;
    let key = |l: &Layout| [f64::from(largest_free(table, l)), (capacity(l) * 1e6).round() / 1e6];
    let here = key(&now.layout);
    let top = best(table, current, &[], &|a| {
        let k = key(&a.layout);
        [k[0], k[1], -(a.moves.len() as f64)]
    })?;
    let there = key(&top.layout);
    let gain = there[0] > here[0] || there[0] == here[0] && there[1] > here[1] + 1e-9;
    (gain && !top.moves.is_empty()).then_some(top)
}

/// Room for one more instance of `profile_id` with at most `max_moves`
/// moves of movable instances: the fewest moves, then the most capacity
/// left. `None` when even that does not make room.
pub fn make_room(table: &[Profile], current: &[Item], profile_id: u32, max_moves: usize, capacity: &dyn Fn(&Layout) -> f64) -> Option<Arrangement> {
    let a = best(table, current, &[(profile_id, None)], &|a| [-(a.moves.len() as f64), capacity(&a.layout), 0.0])?;
    (a.moves.len() <= max_moves).then_some(a)
}

/// On-demand repack across a host: the GPU where room for one more
/// `profile_id` takes the fewest moves of movable instances (at most
/// `max_moves`), ties to the most capacity left, then the lowest index.
/// `gpus[i]` is GPU i's instances. GPUs with nothing movable, or without
/// the free slices the profile needs, are skipped without a search, and
/// GPUs holding the same instances are searched once.
pub fn repack(table: &[Profile], gpus: &[Vec<Item>], profile_id: u32, max_moves: usize, capacity: &dyn Fn(&Layout) -> f64) -> Option<(usize, Arrangement)> {
    let p = table.iter().find(|p| p.id == profile_id)?;
    let mut seen: std::collections::HashMap<Vec<(u32, u8, bool)>, Option<Arrangement>> = std::collections::HashMap::new();
    let mut top: Option<(usize, f64, usize, Arrangement)> = None;
    for (g, items) in gpus.iter().enumerate() {
        if !items.iter().any(|i| i.movable) {
            continue;
        }
        let used: u32 = items.iter().filter_map(|i| table.iter().find(|t| t.id == i.profile_id)).map(|t| u32::from(t.size)).sum();
        if used + u32::from(p.size) > 8 {
            continue;
        }
        let mut key: Vec<(u32, u8, bool)> = items.iter().map(|i| (i.profile_id, i.start, i.movable)).collect();
        key.sort_unstable();
        let found = seen.entry(key).or_insert_with(|| make_room(table, items, profile_id, max_moves, capacity)).clone();
        let Some(a) = found else { continue };
        let c = capacity(&a.layout);
        let better = match &top {
            None => true,
            Some((m, bc, _, _)) => a.moves.len() < *m || a.moves.len() == *m && c > bc + 1e-9,
        };
        if better {
            top = Some((a.moves.len(), c, g, a));
        }
    }
    top.map(|(_, _, g, a)| (g, a))
}

#[cfg(test)]
mod tests {
    use super::super::profiles::{find, hopper_80gb};
    use super::*;

    fn id(t: &[Profile], name: &str) -> u32 {
        find(t, name).unwrap().id
    }

    fn item(t: &[Profile], name: &str, start: u8, movable: bool) -> Item {
        Item { profile_id: id(t, name), start, movable }
    }

    fn count(l: &Layout) -> usize {
        l.instances.len()
    }

    /// Slice-weighted capacity with every profile weighing the same.
    fn cap(t: &[Profile]) -> impl Fn(&Layout) -> f64 + '_ {
        move |l: &Layout| t.iter().map(|p| f64::from(p.compute_slices()) * f64::from(l.more(p))).sum()
    }

    #[test]
    fn test_an_idle_1g_is_moved_into_the_other_half_to_free_room_for_a_3g() {
        let t = hopper_80gb();
        // 1g at 1 (busy) and 1g at 5 (idle): no 3g fits (each half holds a
        // 1g). Moving the idle one into the left half frees the right half
        // for a 3g; nothing can free slice 1 for a 4g.
        let cur = vec![item(&t, "1g.10gb", 1, false), item(&t, "1g.10gb", 5, true)];
        let a = defrag(&t, &cur, &cap(&t)).expect("a move helps");
        assert_eq!(a.moves.len(), 1);
        assert_eq!(a.moves[0].from, 5);
        assert!(a.moves[0].to < 4, "gathered in the left half: {:?}", a.moves);
        assert_eq!(largest_free(&t, &a.layout), 3 * 16 + 4, "a 3g fits afterwards");
    }

    #[test]
    fn test_pinned_instances_never_move_and_a_packed_gpu_needs_no_moves() {
        let t = hopper_80gb();
        let cur = vec![item(&t, "1g.10gb", 1, false), item(&t, "1g.10gb", 5, false)];
        assert_eq!(defrag(&t, &cur, &cap(&t)), None, "nothing movable");
        let packed = vec![item(&t, "3g.40gb", 4, true), item(&t, "1g.10gb", 0, true)];
        assert_eq!(defrag(&t, &packed, &cap(&t)), None, "already the best shape: {:?}", defrag(&t, &packed, &cap(&t)));
    }

    #[test]
    fn test_make_room_uses_the_fewest_moves_and_respects_the_bound() {
        let t = hopper_80gb();
        // Two idle 1g at 0 and 4 block both 3g starts.
        let cur = vec![item(&t, "1g.10gb", 0, true), item(&t, "1g.10gb", 4, true)];
        let a = make_room(&t, &cur, id(&t, "3g.40gb"), 3, &cap(&t)).expect("room by one move");
        assert_eq!(a.moves.len(), 1);
        assert_eq!(a.added.len(), 1);
        assert_eq!(count(&a.layout), 3);
        assert_eq!(make_room(&t, &cur, id(&t, "3g.40gb"), 0, &cap(&t)), None, "no moves allowed");
        // The same, pinned: no room at all.
        let pinned = vec![item(&t, "1g.10gb", 0, false), item(&t, "1g.10gb", 4, false)];
        assert_eq!(make_room(&t, &pinned, id(&t, "3g.40gb"), 7, &cap(&t)), None);
    }

    #[test]
    fn test_fixed_starts_are_kept_and_impossible_ones_yield_nothing() {
        let t = hopper_80gb();
        let cur = vec![item(&t, "2g.20gb", 0, true)];
        let a = best(&t, &cur, &[(id(&t, "4g.40gb"), Some(0))], &|a| [-(a.moves.len() as f64), 0.0, 0.0]).unwrap();
        assert_eq!(a.added, vec![(id(&t, "4g.40gb"), 0)]);
        assert_eq!(a.moves, vec![Move { index: 0, profile_id: id(&t, "2g.20gb"), from: 0, to: 4 }]);
        let pinned = vec![item(&t, "2g.20gb", 0, false)];
        assert!(best(&t, &pinned, &[(id(&t, "4g.40gb"), Some(0))], &|_| [0.0; 3]).is_none());
    }

    #[test]
    fn test_repack_picks_the_gpu_needing_the_fewest_moves() {
        let t = hopper_80gb();
        let gpus = vec![
            // One move makes room for a 3g (the 1g at 0 to slice 6), but it
            // leaves only slice 7, which no profile can use.
            vec![item(&t, "1g.10gb", 0, true), item(&t, "1g.10gb", 4, true), item(&t, "1g.10gb", 5, true)],
            // Pinned everywhere: skipped.
            vec![item(&t, "1g.10gb", 0, false), item(&t, "1g.10gb", 4, false)],
            // One move too (the idle 1g at 4 joins the pinned one's half),
            // leaving two 1g slots: this one wins.
            vec![item(&t, "1g.10gb", 0, false), item(&t, "1g.10gb", 4, true)],
        ];
        let (g, a) = repack(&t, &gpus, id(&t, "3g.40gb"), 3, &cap(&t)).unwrap();
        assert_eq!((g, a.moves.len()), (2, 1));
        assert_eq!(repack(&t, &gpus[1..2], id(&t, "3g.40gb"), 3, &cap(&t)), None);
    }

    /// Against brute force: on random GPUs, the fewest moves that make room
    /// for a profile equals the fewest found by trying every subset of
    /// movable instances to take away and every way to put them back.
    #[test]
    fn test_make_room_is_minimal_against_brute_force() {
        let t = hopper_80gb();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut checked = 0;
        for _ in 0..400 {
            let mut l = Layout::default();
            let mut cur = Vec::new();
            for _ in 0..next(6) + 1 {
                let p = &t[next(t.len() as u64) as usize];
                let starts = l.free_starts(p);
                if starts.is_empty() {
                    continue;
                }
                let s = starts[next(starts.len() as u64) as usize];
                l.place(p, s);
                cur.push(Item { profile_id: p.id, start: s, movable: next(3) != 0 });
            }
            for want in &t {
                let got = make_room(&t, &cur, want.id, 8, &cap(&t)).map(|a| a.moves.len());
                assert_eq!(got, brute(&t, &cur, want), "{cur:?} + {}", want.name);
                if let Some(a) = make_room(&t, &cur, want.id, 8, &cap(&t)) {
                    // The layout after holds every instance exactly once, pinned ones in place.
                    assert_eq!(a.layout.instances.len(), cur.len() + 1);
                    for i in cur.iter().filter(|i| !i.movable) {
                        assert!(a.layout.instances.iter().any(|x| x.profile_id == i.profile_id && x.start == i.start));
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 200, "enough cases with room: {checked}");
    }

    /// The fewest instances to take off and put back so `want` fits.
    fn brute(t: &[Profile], cur: &[Item], want: &Profile) -> Option<usize> {
        let movable: Vec<usize> = (0..cur.len()).filter(|i| cur[*i].movable).collect();
        let mut best: Option<usize> = None;
        for mask in 0u32..(1 << movable.len()) {
            let off: Vec<usize> = movable.iter().enumerate().filter(|(b, _)| mask & (1 << b) != 0).map(|(_, i)| *i).collect();
            let mut l = Layout::default();
            for (i, it) in cur.iter().enumerate() {
                if !off.contains(&i) {
                    l.place(find_id(t, it.profile_id), it.start);
                }
            }
            let mut back: Vec<&Profile> = off.iter().map(|i| find_id(t, cur[*i].profile_id)).collect();
            back.push(want);
            if place_all(&mut l, &back) && best.is_none_or(|b| off.len() < b) {
                best = Some(off.len());
            }
        }
        best
    }

    fn find_id(t: &[Profile], id: u32) -> &Profile {
        t.iter().find(|p| p.id == id).unwrap()
    }

    fn place_all(l: &mut Layout, items: &[&Profile]) -> bool {
        let Some((p, rest)) = items.split_first() else { return true };
        for s in l.free_starts(p) {
            l.place(p, s);
            if place_all(l, rest) {
                return true;
            }
            l.remove_at(s);
        }
        false
    }
}
