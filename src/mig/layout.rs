//! One GPU's MIG layout: which memory slices its GPU instances occupy, and
//! which placements are still free. Placement rules are exactly NVIDIA's:
//! a profile fits at one of its allowed starts when all its slices are free,
//! and no profile exceeds its per-GPU instance count.

use serde::Serialize;

use super::profiles::Profile;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Placed {
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Layout {
    pub instances: Vec<Placed>,
}

impl Layout {
    pub fn used_mask(&self) -> u8 {
        self.instances.iter().fold(0u8, |m, i| m | mask(i.size, i.start))
    }

    pub fn count(&self, profile_id: u32) -> u32 {
        self.instances.iter().filter(|i| i.profile_id == profile_id).count() as u32
    }

    pub fn fits_at(&self, p: &Profile, start: u8) -> bool {
        p.starts.contains(&start) && self.used_mask() & p.mask(start) == 0 && self.count(p.id) < p.max_instances
    }

    pub fn free_starts(&self, p: &Profile) -> Vec<u8> {
        p.starts.iter().copied().filter(|s| self.fits_at(p, *s)).collect()
    }

    pub fn place(&mut self, p: &Profile, start: u8) -> bool {
        if !self.fits_at(p, start) {
            return false;
        }
        self.instances.push(Placed { profile_id: p.id, start, size: p.size });
        true
    }

    pub fn remove_at(&mut self, start: u8) -> Option<Placed> {
        let i = self.instances.iter().position(|x| x.start == start)?;
        Some(self.instances.remove(i))
    }

    /// How many more instances of `p` could be added, placing greedily from
    /// the lowest free start (optimal here: every profile's starts are
    /// multiples of its size, so lowest-first never blocks a later one).
    pub fn more(&self, p: &Profile) -> u32 {
        let mut l = self.clone();
        let mut n = 0;
        while let Some(s) = l.free_starts(p).first().copied() {
            l.place(p, s);
            n += 1;
        }
        n
    }

    /// An 8-character slice map: a letter per instance, `.` for free.
    pub fn slice_map(&self, table: &[Profile]) -> String {
        let mut m = ['.'; 8];
        for i in &self.instances {
            let c = table.iter().find(|p| p.id == i.profile_id).map(|p| char::from(b'0' + p.compute_slices())).unwrap_or('?');
            for s in i.start..(i.start + i.size).min(8) {
                m[s as usize] = c;
            }
        }
        m.iter().collect()
    }
}

pub use crate::nvidia::profiles::mask;

#[cfg(test)]
mod tests {
    use super::super::profiles::{find, hopper_80gb};
    use super::*;

    fn t() -> Vec<Profile> {
        hopper_80gb()
    }

    #[test]
    fn test_4g_plus_3g_is_valid() {
        let t = t();
        let mut l = Layout::default();
        assert!(l.place(find(&t, "4g.40gb").unwrap(), 0));
        assert!(l.place(find(&t, "3g.40gb").unwrap(), 4));
        assert_eq!(l.used_mask(), 0xff);
    }

    #[test]
    fn test_3g_at_0_leaves_three_1g_but_at_4_leaves_four() {
        let t = t();
        let one = find(&t, "1g.10gb").unwrap();
        let three = find(&t, "3g.40gb").unwrap();
        let mut a = Layout::default();
        a.place(three, 0);
        assert_eq!(a.more(one), 3);
        let mut b = Layout::default();
        b.place(three, 4);
        assert_eq!(b.more(one), 4);
    }

    #[test]
    fn test_4g_plus_two_2g_is_invalid() {
        let t = t();
        let two = find(&t, "2g.20gb").unwrap();
        let mut l = Layout::default();
        l.place(find(&t, "4g.40gb").unwrap(), 0);
        assert_eq!(l.more(two), 1);
        assert!(l.place(two, 4));
        assert!(!l.place(two, 6), "2g.20gb cannot start at 6");
        assert!(l.free_starts(two).is_empty());
    }

    #[test]
    fn test_every_profile_alone_and_its_maximum() {
        let t = t();
        for p in &t {
            let l = Layout::default();
            assert_eq!(l.more(p), p.max_instances, "{}", p.name);
            for s in 0..8 {
                assert_eq!(l.fits_at(p, s), p.starts.contains(&s), "{} at {s}", p.name);
            }
        }
    }

    #[test]
    fn test_7g_excludes_everything() {
        let t = t();
        let mut l = Layout::default();
        l.place(find(&t, "7g.80gb").unwrap(), 0);
        for p in &t {
            assert_eq!(l.more(p), 0, "{}", p.name);
        }
    }

    #[test]
    fn test_every_pair_of_placements_matches_the_slice_rule() {
        let t = t();
        for a in &t {
            for sa in a.starts.clone() {
                for b in &t {
                    for sb in b.starts.clone() {
                        let mut l = Layout::default();
                        assert!(l.place(a, sa));
                        let overlap = a.mask(sa) & b.mask(sb) != 0;
                        let over_count = a.id == b.id && a.max_instances < 2;
                        assert_eq!(l.place(b, sb), !overlap && !over_count, "{}@{sa} + {}@{sb}", a.name, b.name);
                    }
                }
            }
        }
    }
}
