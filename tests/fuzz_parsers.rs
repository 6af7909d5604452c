//! Property-based fuzzing of every parser that reads outside input: random
//! text, and random byte-level mutations of real-format seeds from
//! tests/fuzz/corpus/. The properties: no panic, no hang, and for
//! identifiers, that whatever parses is safe to put in a path and prints back
//! to itself.
//!
//! CI runs the default 256 cases per target. The documented long run:
//!   PROPTEST_CASES=1000000 cargo test --release --test fuzz_parsers
//! (results in docs/testing.md).

use proptest::prelude::*;

fn seeds(dir: &str) -> Vec<String> {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(dir);
    let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    v.sort();
    v
}

/// A seed with some bytes replaced, inserted or deleted, or plain random text.
fn input(dir: &'static str) -> impl Strategy<Value = String> {
    let s = seeds(dir);
    let mutated = (prop::sample::select(s), prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..12)).prop_map(|(seed, edits)| {
        let mut b = seed.into_bytes();
        for (pos, byte, op) in edits {
            if b.is_empty() {
                b.push(byte);
                continue;
            }
            let i = pos % b.len();
            match op {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                _ => {
                    b.remove(i);
                }
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    });
    prop_oneof![3 => mutated, 1 => any::<String>()]
}

fn ident() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F:./x+-]{0,40}",
        "(\\.\\./)?[0-9a-f]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\\.[0-9a-f](/..)?",
        "[0-9a-f-]{30,40}",
        "(NVIDIA |GRID )?[A-Z0-9]{1,6}(-[0-9]{1,2})?-[0-9]{1,3}[CQBA](ME)?",
        "[0-9]c?\\.?[0-9]g\\.[0-9]{1,3}gb(\\+me)?",
    ]
}

fn path_safe(s: &str) {
    assert!(!s.contains('/') && !s.contains("..") && !s.contains('\0') && !s.is_empty(), "{s:?}");
}

proptest! {
    #[test]
    fn fuzz_domain_xml(x in input("domain_xml")) {
        let _ = vgpuctl::libvirt::domain_xml::parse(&x);
    }

    #[test]
    fn fuzz_sysfs_attributes(x in any::<String>()) {
        let _ = vgpuctl::parse::hex_id(&x);
        let _ = vgpuctl::parse::count(&x);
        let _ = vgpuctl::parse::numa_node(&x);
        let _ = vgpuctl::parse::flag(&x);
        let _ = vgpuctl::parse::driver_override(&x);
        let _ = vgpuctl::parse::size_mib(&x);
        let _ = vgpuctl::parse::vgpu_description(&x);
        let _ = vgpuctl::parse::nvidia_driver_version(&x);
    }

    #[test]
    fn fuzz_creatable_vgpu_types(x in input("creatable")) {
        let (types, _) = vgpuctl::parse::creatable_vgpu_types(&x);
        for t in types {
            prop_assert!(!t.name.is_empty() && t.name.chars().all(|c| !c.is_control()));
        }
    }

    #[test]
    fn fuzz_nvidia_smi_outputs(x in input("smi")) {
        let _ = vgpuctl::mig::smi::lgip(&x);
        for (_, starts, size) in vgpuctl::mig::smi::lgipp(&x) {
            prop_assert!(size <= 8 && starts.iter().all(|s| *s < 8));
        }
        let rows = vgpuctl::mig::smi::lgi(&x);
        let _ = vgpuctl::mig::smi::layout_of(&rows).used_mask();
        let _ = vgpuctl::mig::smi::lci(&x);
        let _ = vgpuctl::mig::smi::lcip(&x);
        let _ = vgpuctl::mig::smi::created_gi(&x);
        let _ = vgpuctl::mig::smi::created_ci(&x);
        let _ = vgpuctl::mig::smi::pids_by_gi(&x);
        let _ = vgpuctl::mig::smi::compute_apps(&x);
        let _ = vgpuctl::mig::smi::table(&x, &x);
        let _ = vgpuctl::parse::mig_mode_csv(&x);
        let _ = vgpuctl::parse::smi_q_field(&x, "vGPU Heterogeneous Mode");
    }

    #[test]
    fn fuzz_nvml_snapshot(x in input("nvml")) {
        if let Ok(s) = vgpuctl::nvml::parse(&x) {
            for g in &s.gpus {
                let _ = g.address();
                let _ = g.mig_mode();
                for p in g.profile_table() {
                    prop_assert!(p.size >= 1 && p.size <= 8 && p.starts.iter().all(|st| st + p.size <= 8), "{:?}", p);
                    for st in &p.starts {
                        let _ = p.mask(*st);
                    }
                }
                let l = vgpuctl::mig::layout::Layout {
                    instances: vgpuctl::nvml::NvmlSnapshot::sane_instances(g).map(|i| vgpuctl::mig::layout::Placed { profile_id: i.profile_id, start: i.start, size: i.size }).collect(),
                };
                let _ = l.used_mask();
            }
        }
    }

    #[test]
    fn fuzz_planner_policy_and_ci_requests(x in input("policy")) {
        let table = vgpuctl::mig::profiles::hopper_80gb();
        if let Ok(c) = vgpuctl::mig::policy::PlannerConfig::parse(&x) {
            if let Ok(p) = c.planner(&table) {
                let _ = p.choose(&[vgpuctl::mig::layout::Layout::default()], &table[0]);
            }
        }
        if let Ok(r) = x.parse::<vgpuctl::mig::compute::CiRequest>() {
            let ci = vgpuctl::mig::compute::modeled(&table[4]);
            let _ = vgpuctl::mig::compute::resolve(&ci, &r, 3, &[]);
        }
    }

    #[test]
    fn fuzz_mdevctl_json(x in input("mdevctl")) {
        let p: vgpuctl::ids::MdevParent = "mbochs".parse().unwrap();
        let u: vgpuctl::ids::MdevUuid = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        if let Ok(d) = vgpuctl::mdev::definitions::parse(&p, u, &x) {
            path_safe(d.mdev_type.as_str());
            for a in d.attrs {
                prop_assert!(!a.name.split('/').any(|c| c == ".." || c.is_empty()));
            }
        }
    }

    #[test]
    fn fuzz_host_config(x in input("config")) {
        if let Ok(c) = vgpuctl::apply::config::parse(&x, "fuzz.toml") {
            for m in c.mdev {
                path_safe(m.mdev_type.as_str());
                path_safe(m.parent.as_str());
            }
        }
    }

    #[test]
    fn fuzz_cli_identifiers(x in ident()) {
        if let Ok(a) = x.parse::<vgpuctl::ids::PciAddress>() {
            let s = a.to_string();
            path_safe(&s);
            prop_assert_eq!(s.parse::<vgpuctl::ids::PciAddress>().unwrap(), a);
        }
        if let Ok(u) = x.parse::<vgpuctl::ids::MdevUuid>() {
            let s = u.to_string();
            path_safe(&s);
            prop_assert_eq!(s.parse::<vgpuctl::ids::MdevUuid>().unwrap(), u);
        }
        if let Ok(t) = x.parse::<vgpuctl::ids::MdevTypeId>() {
            path_safe(t.as_str());
        }
        if let Ok(p) = x.parse::<vgpuctl::ids::MdevParent>() {
            path_safe(p.as_str());
            prop_assert_eq!(p.as_str().parse::<vgpuctl::ids::MdevParent>().unwrap(), p.clone());
        }
        if let Ok(m) = x.parse::<vgpuctl::ids::MigProfile>() {
            prop_assert_eq!(m.to_string().parse::<vgpuctl::ids::MigProfile>().unwrap(), m);
        }
        if let Ok(t) = x.parse::<vgpuctl::vgpu::typename::VgpuTypeName>() {
            path_safe(&t.to_string());
            prop_assert_eq!(t.to_string().parse::<vgpuctl::vgpu::typename::VgpuTypeName>().unwrap(), t);
        }
        let _ = x.parse::<vgpuctl::libvirt::generate::DomainName>();
    }
}
