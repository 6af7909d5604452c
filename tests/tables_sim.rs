//! Tables for people: every table has a header, fits 80 and 200 columns
//! (COLUMNS, as a terminal would give), groups `types`' reasons per GPU, and
//! says "in use" one way. Snapshots at both widths; docs/admin-guide.md
//! shows the 80-column ones verbatim (checked here, so it cannot drift:
//! VGPUCTL_UPDATE_DOCS=1 rewrites its blocks).

mod common;

use common::sim::SimHost;

/// (snapshot name, output at 80 columns, output at 200 columns)
fn tables() -> Vec<(String, String, String)> {
    let h = SimHost::new("h100x8-vfio");
    let (g0, g2) = ("0000:18:00.0", "0000:3a:00.0");
    h.ok(&["sriov", "enable", g0]);
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", g0]);
    h.ok(&["sriov", "enable", g2]);
    h.ok(&["mig", "enable", g2]);
    h.ok(&["mig", "create", "--profile", "3g.40gb", "--gpu", g2]);
    let a100 = SimHost::new("a100x4-mdev");
    a100.ok(&["vgpu", "create", "--type", "A100D-4C"]);
    let at = |host: &SimHost, args: &[&str], cols: &str| {
        let o = host.cmd().args(args).env("COLUMNS", cols).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        // The simulated host's UUIDs are random: name them by position.
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        mask_uuids(&text)
    };
    let cases: Vec<(&str, &SimHost, Vec<&str>)> = vec![
        ("types_time_sliced", &h, vec!["types", "--gpu", g0]),
        ("types_mig", &h, vec!["types", "--gpu", g2]),
        ("status", &h, vec!["status"]),
        ("status_mdev", &a100, vec!["status"]),
        ("mdev_list", &a100, vec!["mdev", "list"]),
        ("mig_profiles", &h, vec!["mig", "profiles", "--gpu", g2]),
        ("sriov_status", &h, vec!["sriov", "status"]),
    ];
    cases.into_iter().map(|(name, host, args)| (name.to_string(), at(host, &args, "80"), at(host, &args, "200"))).collect()
}

fn mask_uuids(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    text.split_inclusive(|c: char| c.is_whitespace())
        .map(|w| {
            let word = w.trim_end();
            if word.len() == 36 && word.parse::<uuid::Uuid>().is_ok() {
                let i = seen.iter().position(|s| s == word).unwrap_or_else(|| {
                    seen.push(word.to_string());
                    seen.len() - 1
                });
                format!("{:08}-0000-4000-8000-000000000000{}", i + 1, &w[word.len()..])
            } else {
                w.to_string()
            }
        })
        .collect()
}

#[test]
fn test_tables_fit_80_and_200_columns_with_headers() {
    let all = tables();
    for (name, narrow, wide) in &all {
        for (cols, text) in [(80, narrow), (200, wide)] {
            for line in text.lines() {
                assert!(line.chars().count() <= cols, "{name} at {cols} columns: {line:?} is {} wide\n{text}", line.chars().count());
            }
            insta::assert_snapshot!(format!("tables_{cols}_{name}"), text);
        }
        // Every table starts with a header row in capitals.
        assert!(
            wide.lines().any(|l| {
                let w = l.trim_start();
                w.split_whitespace().count() >= 3 && w.chars().all(|c| !c.is_lowercase())
            }),
            "{name}: no header row\n{wide}"
        );
    }
    let get = |n: &str| all.iter().find(|(x, _, _)| x == n).unwrap().2.clone();
    // types: the reason once per cause, not on every row.
    let types = get("types_time_sliced");
    assert_eq!(types.matches("equal-size mode").count(), 1, "{types}");
    assert_eq!(types.matches("MIG mode is off").count(), 1, "{types}");
    // One vocabulary for "in use"; type names beside mdev type ids.
    let mdevs = get("mdev_list");
    assert!(mdevs.contains("IN USE") && mdevs.contains("A100D-4C (nvidia-709)"), "{mdevs}");
    for table in [get("status"), get("status_mdev"), mdevs] {
        // The old words, as a column value (two spaces apart from the next).
        assert!(!table.contains("  yes") && !table.contains("  no "), "{table}");
    }
}

/// docs/admin-guide.md shows the 80-column tables as the tests produce them.
#[test]
fn test_admin_guide_shows_the_real_tables() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-guide.md");
    let mut page = std::fs::read_to_string(path).unwrap();
    let update = std::env::var_os("VGPUCTL_UPDATE_DOCS").is_some();
    let mut shown = 0;
    for (name, narrow, _) in tables() {
        let open = format!("<!-- output: {name} -->\n```\n");
        let Some(start) = page.find(&open).map(|i| i + open.len()) else { continue };
        let end = start + page[start..].find("```\n<!-- /output -->").unwrap_or_else(|| panic!("{name}: block not closed"));
        if update {
            page.replace_range(start..end, &narrow);
        } else {
            assert_eq!(
                &page[start..end],
                narrow,
                "docs/admin-guide.md's {name} block differs from the real output: VGPUCTL_UPDATE_DOCS=1 cargo test --test tables_sim"
            );
        }
        shown += 1;
    }
    if update {
        std::fs::write(path, &page).unwrap();
    }
    assert!(shown >= 3, "docs/admin-guide.md shows {shown} of the tables");
}
