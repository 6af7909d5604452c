//! Parsers for `nvidia-smi mig` output. The profile (`-lgip`) and placement
//! (`-lgipp`) formats are tested against captures from a real H100; the
//! instance listings (`-lgi`, `-lci`) and the create messages follow NVIDIA's
//! MIG user guide (MIG cannot be enabled on the card available for tests).

use super::layout::{Layout, Placed};
use super::profiles::Profile;

/// `… Placements: {0,2,4}:2` → (profile id, starts, size).
pub fn lgipp(text: &str) -> Vec<(u32, Vec<u8>, u8)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("GPU")?;
            let (_, rest) = rest.split_once("Profile ID")?;
            let (id, rest) = rest.split_once("Placement")?;
            let id: u32 = id.trim().parse().ok()?;
            let set = rest.split_once('{')?.1;
            let (starts, size) = set.split_once("}:")?;
            let starts: Vec<u8> = starts.split(',').map(|s| s.trim().parse().ok()).collect::<Option<_>>()?;
            let size: u8 = size.trim().parse().ok()?;
            (size <= 8 && starts.iter().all(|s| *s < 8)).then_some((id, starts, size))
        })
        .collect()
}

/// One row of `-lgip`: (name, id, free, total, memory GiB, SMs).
#[derive(Debug, Clone, PartialEq)]
pub struct LgipRow {
    pub name: String,
    pub id: u32,
    pub free: u32,
    pub total: u32,
    pub memory_gib: f64,
    pub sms: u32,
}

pub fn lgip(text: &str) -> Vec<LgipRow> {
    text.lines()
        .filter_map(|l| {
            let inner = l.trim().strip_prefix('|')?.strip_suffix('|')?;
            let cols: Vec<&str> = inner.split_whitespace().collect();
            // GPU MIG <name> <id> <free/total> <mem> <p2p> <sm> <dec> <enc>
            if cols.len() < 9 || cols[1] != "MIG" {
                return None;
            }
            let (free, total) = cols[4].split_once('/')?;
            Some(LgipRow {
                name: cols[2].to_string(),
                id: cols[3].parse().ok()?,
                free: free.parse().ok()?,
                total: total.parse().ok()?,
                memory_gib: cols[5].parse().ok()?,
                sms: cols[7].parse().ok()?,
            })
        })
        .collect()
}

/// A profile table from `-lgip` and `-lgipp` of one GPU.
pub fn table(lgip_text: &str, lgipp_text: &str) -> Vec<Profile> {
    let placements = lgipp(lgipp_text);
    lgip(lgip_text)
        .into_iter()
        .filter_map(|r| {
            let (_, starts, size) = placements.iter().find(|(id, _, _)| *id == r.id)?.clone();
            Some(Profile { id: r.id, name: r.name.parse().ok()?, size, starts, max_instances: r.total, memory_mib: (r.memory_gib * 1024.0) as u64, sms: r.sms })
        })
        .collect()
}

/// A GPU instance from `-lgi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiRow {
    pub gpu: u32,
    pub profile_id: u32,
    pub gi: u32,
    pub start: u8,
    pub size: u8,
}

/// `|   0  MIG 1g.10gb         19        9          2:1     |`
pub fn lgi(text: &str) -> Vec<GiRow> {
    text.lines()
        .filter_map(|l| {
            let inner = l.trim().strip_prefix('|')?.strip_suffix('|')?;
            let cols: Vec<&str> = inner.split_whitespace().collect();
            if cols.len() != 6 || cols[1] != "MIG" {
                return None;
            }
            let (start, size) = cols[5].split_once(':')?;
            Some(GiRow {
                gpu: cols[0].parse().ok()?,
                profile_id: cols[3].parse().ok()?,
                gi: cols[4].parse().ok()?,
                start: start.parse().ok()?,
                size: size.parse().ok()?,
            })
        })
        .collect()
}

/// A compute instance from `-lci`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiRow {
    pub gpu: u32,
    pub gi: u32,
    pub profile: String,
    pub profile_id: u32,
    pub ci: u32,
    pub start: u8,
    pub size: u8,
}

/// `|   0      9       MIG 1g.10gb          0         0          0:1     |`
pub fn lci(text: &str) -> Vec<CiRow> {
    text.lines()
        .filter_map(|l| {
            let inner = l.trim().strip_prefix('|')?.strip_suffix('|')?;
            let cols: Vec<&str> = inner.split_whitespace().collect();
            // GPU GI MIG <name> <profile id> <ci id> <start:size>
            if cols.len() != 7 || cols[2] != "MIG" {
                return None;
            }
            let (start, size) = cols[6].split_once(':')?;
            Some(CiRow {
                gpu: cols[0].parse().ok()?,
                gi: cols[1].parse().ok()?,
                profile: cols[3].to_string(),
                profile_id: cols[4].parse().ok()?,
                ci: cols[5].parse().ok()?,
                start: start.parse().ok()?,
                size: size.parse().ok()?,
            })
        })
        .collect()
}

/// `-lcip -gi N`: (gi, profile name, profile id); the default is marked `*`.
pub fn lcip(text: &str) -> Vec<(u32, String, u32)> {
    text.lines()
        .filter_map(|l| {
            let inner = l.trim().strip_prefix('|')?.strip_suffix('|')?;
            let cols: Vec<&str> = inner.split_whitespace().collect();
            // GPU GI MIG <name> <id>[*] <free/total> …
            if cols.len() < 6 || cols[2] != "MIG" || !cols[5].contains('/') {
                return None;
            }
            Some((cols[1].parse().ok()?, cols[3].to_string(), cols[4].trim_end_matches('*').parse().ok()?))
        })
        .collect()
}

/// `Successfully created compute instance ID  0 on GPU  0 GPU instance ID  1 using profile …` → 0.
pub fn created_ci(text: &str) -> Option<u32> {
    let l = text.lines().find(|l| l.contains("Successfully created compute instance ID"))?;
    l.split("compute instance ID").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Processes per GPU instance from `nvidia-smi -q -d PIDS`:
/// (GI, pid, process name). Processes outside MIG have no GI and are left out.
pub fn pids_by_gi(text: &str) -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let (mut gi, mut pid, mut name): (Option<u32>, Option<u32>, Option<String>) = (None, None, None);
    let mut flush = |gi: &mut Option<u32>, pid: &mut Option<u32>, name: &mut Option<String>| {
        if let (Some(g), Some(p)) = (gi.take(), pid.take()) {
            out.push((g, p, name.take().unwrap_or_default()));
        }
        *name = None;
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        match k.trim() {
            "GPU instance ID" => {
                flush(&mut gi, &mut pid, &mut name);
                gi = v.trim().parse().ok();
            }
            "Process ID" => pid = v.trim().parse().ok(),
            "Name" | "Process Name" => name = Some(v.trim().to_string()),
            _ => {}
        }
    }
    flush(&mut gi, &mut pid, &mut name);
    out
}

/// `Successfully created GPU instance ID  9 on GPU  0 using profile MIG 1g.10gb (ID 19)` → 9.
pub fn created_gi(text: &str) -> Option<u32> {
    let l = text.lines().find(|l| l.contains("Successfully created GPU instance ID"))?;
    l.split("GPU instance ID").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// `--query-compute-apps=pid,process_name --format=csv,noheader`: `4242, python3`.
pub fn compute_apps(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let (pid, name) = l.split_once(',')?;
            Some((pid.trim().parse().ok()?, name.trim().to_string()))
        })
        .collect()
}

pub fn layout_of(rows: &[GiRow]) -> Layout {
    Layout { instances: rows.iter().map(|r| Placed { profile_id: r.profile_id, start: r.start, size: r.size }).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LGIP: &str = include_str!("../../tests/fixtures/h100-passthrough/mig-lgip.txt");
    const LGIPP: &str = include_str!("../../tests/fixtures/h100-passthrough/mig-lgipp.txt");

    #[test]
    fn test_real_h100_tables_match_the_built_in_one() {
        let t = table(LGIP, LGIPP);
        assert_eq!(t.len(), 7);
        let built_in = super::super::profiles::hopper_80gb();
        for p in &built_in {
            let r = t.iter().find(|x| x.id == p.id).unwrap_or_else(|| panic!("{} missing", p.name));
            assert_eq!((&r.name, r.size, &r.starts, r.max_instances, r.sms), (&p.name, p.size, &p.starts, p.max_instances, p.sms), "{}", p.name);
        }
    }

    #[test]
    fn test_lgipp_lines_and_garbage() {
        assert_eq!(lgipp("GPU  0 Profile ID  5 Placement : {0}:4"), vec![(5, vec![0], 4)]);
        assert!(lgipp("GPU 0 Profile ID x Placements: {0}:1\nGPU 0 Profile ID 1 Placements: {9}:1\nNo MIG-enabled devices found.").is_empty());
    }

    #[test]
    fn test_lgi_and_lci_from_the_documented_format() {
        let gi = "+-------------------------------------------------------+\n| GPU instances:                                        |\n| GPU   Name             Profile  Instance   Placement  |\n|                          ID       ID       Start:Size |\n|=======================================================|\n|   0  MIG 1g.10gb         19        9          2:1     |\n+-------------------------------------------------------+\n|   0  MIG 3g.40gb          9        2          4:4     |\n+-------------------------------------------------------+\n";
        let rows = lgi(gi);
        assert_eq!(rows, vec![GiRow { gpu: 0, profile_id: 19, gi: 9, start: 2, size: 1 }, GiRow { gpu: 0, profile_id: 9, gi: 2, start: 4, size: 4 }]);
        assert_eq!(layout_of(&rows).used_mask(), 0b1111_0100);
        let ci =
            "| GPU     GPU       Name             Profile   Instance   Placement  |\n|   0      9       MIG 1g.10gb          0         0          0:1     |\n";
        assert_eq!(lci(ci), vec![CiRow { gpu: 0, gi: 9, profile: "1g.10gb".into(), profile_id: 0, ci: 0, start: 0, size: 1 }]);
        assert_eq!(created_gi("Successfully created GPU instance ID  9 on GPU  0 using profile MIG 1g.10gb (ID 19)"), Some(9));
        assert!(lgi("No MIG-enabled devices found.").is_empty());
    }

    #[test]
    fn test_lcip_created_ci_and_pids_from_the_documented_formats() {
        let lcip_text = "| GPU     GPU       Name             Profile  Instances   Exclusive       Shared       |\n|       Instance                       ID     Free/Total     SM       DEC   ENC   OFA  |\n|=====|\n|   0      1       MIG 1c.3g.40gb       0      3/3           14        2     0     0   |\n|                                                                      3     0         |\n|   0      1       MIG 3g.40gb          2*     1/1           42        2     0     0   |\n";
        assert_eq!(lcip(lcip_text), vec![(1, "1c.3g.40gb".into(), 0), (1, "3g.40gb".into(), 2)]);
        assert_eq!(created_ci("Successfully created compute instance ID  0 on GPU  0 GPU instance ID  1 using profile MIG 1c.3g.40gb (ID  0)"), Some(0));
        assert_eq!(created_ci("Unable to create a compute instance on GPU  0 GPU instance ID  1 using profile 0: Insufficient Resources"), None);
        let pids = "    Processes\n        GPU instance ID                   : 1\n        Compute instance ID               : 0\n        Process ID                        : 4242\n            Type                          : C\n            Name                          : python3\n            Used GPU Memory               : 500 MiB\n        GPU instance ID                   : 2\n        Compute instance ID               : 0\n        Process ID                        : 77\n            Type                          : C\n            Name                          : dcgm\n";
        assert_eq!(pids_by_gi(pids), vec![(1, 4242, "python3".into()), (2, 77, "dcgm".into())]);
        assert!(pids_by_gi("    Processes                             : None\n").is_empty());
        assert_eq!(compute_apps("4242, python3\nNo running processes found\n"), vec![(4242, "python3".into())]);
    }
}
