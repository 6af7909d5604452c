//! The JSON contract: one schema per `--json` document, generated from the
//! Rust types and published under docs/schema/; every command that has
//! `--json` runs on every simulated profile and its output (and, on failure,
//! its error document) is validated against the published schema.

mod common;

use std::collections::BTreeSet;

use common::contract::{published, schema_dir, validate};
use common::sim::SimHost;
use serde_json::Value;

/// Set VGPUCTL_UPDATE_SCHEMAS=1 to rewrite docs/schema/ from the types.
#[test]
fn test_published_schemas_are_the_generated_ones() {
    let update = std::env::var_os("VGPUCTL_UPDATE_SCHEMAS").is_some();
    let dir = schema_dir();
    let generated = vgpuctl::cli::doc::schemas();
    let mut stale = Vec::new();
    for (name, schema) in &generated {
        let text = format!("{}\n", serde_json::to_string_pretty(schema).unwrap());
        let path = dir.join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.to_string());
        }
    }
    let names: BTreeSet<String> = generated.iter().map(|(n, _)| n.to_string()).collect();
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_string)).collect();
    let orphans: Vec<&String> = on_disk.difference(&names).collect();
    assert!(stale.is_empty(), "docs/schema/ differs from the types for {stale:?}: VGPUCTL_UPDATE_SCHEMAS=1 cargo test --test json_contract");
    assert!(orphans.is_empty(), "docs/schema/ has schemas no command prints: {orphans:?}");
}

/// Every document is an object with an integer `schema_version`, and no
/// array is positional (`prefixItems`): a script reads fields by name.
#[test]
fn test_every_document_is_an_object_with_schema_version_and_no_tuples() {
    fn no_tuples(name: &str, v: &Value) {
        match v {
            Value::Object(m) => {
                assert!(!m.contains_key("prefixItems"), "{name}: a positional tuple: {v}");
                assert!(!matches!(m.get("items"), Some(Value::Array(_))), "{name}: a positional tuple: {v}");
                m.values().for_each(|x| no_tuples(name, x));
            }
            Value::Array(a) => a.iter().for_each(|x| no_tuples(name, x)),
            _ => {}
        }
    }
    for (name, schema) in vgpuctl::cli::doc::schemas() {
        let s = serde_json::to_value(&schema).unwrap();
        assert_eq!(s["type"], "object", "{name}");
        assert_eq!(s["properties"]["schema_version"]["type"], "integer", "{name}");
        assert!(s["required"].as_array().unwrap().iter().any(|r| r == "schema_version"), "{name}");
        no_tuples(name, &s);
    }
}

/// docs/json-schema.md links every published schema, and only those.
#[test]
fn test_the_docs_page_links_every_schema() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json-schema.md")).unwrap();
    // Links of the form (schema/<name>.json); a name is one word.
    let linked: BTreeSet<&str> = page
        .match_indices("(schema/")
        .filter_map(|(i, _)| page[i + 8..].split_once(".json)").map(|(n, _)| n))
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .collect();
    let names: BTreeSet<&str> = vgpuctl::cli::doc::schemas().iter().map(|(n, _)| *n).collect();
    assert_eq!(linked, names, "docs/json-schema.md must link docs/schema/<name>.json for every document");
}

/// The subcommand paths that take `--json` (from the clap definitions).
fn json_commands() -> BTreeSet<String> {
    use clap::CommandFactory;
    fn walk(c: &clap::Command, path: &str, out: &mut BTreeSet<String>) {
        if c.get_arguments().any(|a| a.get_id() == "json") {
            out.insert(path.trim().to_string());
        }
        for s in c.get_subcommands() {
            walk(s, &format!("{path} {}", s.get_name()), out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&vgpuctl::cli::Cli::command(), "", &mut out);
    out
}

/// Runs commands with `--json` and validates what they print.
struct Runner<'a> {
    h: &'a SimHost,
    profile: &'a str,
    covered: &'a mut BTreeSet<String>,
}

impl Runner<'_> {
    /// Runs `args` (which include --json); on success validates stdout
    /// against `schema`, on failure the last stderr line against `error`.
    /// Returns the document and the exit code.
    fn run(&mut self, args: &[&str], schema: &str) -> (Value, i32) {
        let o = self.h.run(args);
        let code = o.status.code().unwrap_or(-1);
        // The subcommand path: the longest prefix of the words that names one.
        let commands = json_commands();
        let path = (1..=args.len().min(3)).rev().map(|n| args[..n].join(" ")).find(|p| commands.contains(p)).unwrap_or_default();
        let what = format!("{}: vgpuctl {}", self.profile, args.join(" "));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        let out = String::from_utf8_lossy(&o.stdout);
        // A document on stdout whatever the code (`mig plan` exits 3 with
        // its plan when the batch does not fit as the host stands).
        if matches!(code, 0 | 2) || !out.trim().is_empty() {
            let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}): {out}"));
            validate(schema, &doc, &what);
            self.covered.insert(path);
            (doc, code)
        } else {
            let last = stderr.lines().last().unwrap_or_default();
            let doc: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: exit {code} without an error document ({e}): {stderr}"));
            validate("error", &doc, &what);
            assert_eq!(doc["exit_code"], code, "{what}");
            (doc, code)
        }
    }

    fn ok(&mut self, args: &[&str], schema: &str) -> Value {
        let (doc, code) = self.run(args, schema);
        assert!(matches!(code, 0 | 2), "{}: vgpuctl {args:?} exit {code}: {doc}", self.profile);
        doc
    }
}

/// What every profile answers to: the read-only commands.
fn read_only(r: &mut Runner, explain: &str) {
    r.ok(&["list", "--json"], "list");
    r.ok(&["types", "--json"], "types");
    r.ok(&["status", "--json"], "status");
    r.ok(&["mig", "status", "--json"], "mig-status");
    r.ok(&["sriov", "status", "--json"], "sriov-status");
    r.ok(&["mdev", "list", "--json"], "mdev-list");
    r.ok(&["mdev", "list", "--defined", "--json"], "mdev-list");
    r.ok(&["gc", "--json"], "gc");
    r.ok(&["mdev", "restore", "--wait", "0", "--json"], "mdev-restore");
    r.ok(&["explain", "--type", explain, "--json"], "explain");
}

fn write(h: &SimHost, name: &str, text: &str) -> String {
    let p = h.root.parent().unwrap().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn test_every_json_command_validates_against_its_schema_on_every_profile() {
    let mut covered = BTreeSet::new();
    // 8×H100, vendor-specific VFIO: SR-IOV, vGPUs, MIG, the hook, plan/apply.
    {
        let h = SimHost::new("h100x8-vfio");
        let r = &mut Runner { h: &h, profile: "h100x8-vfio", covered: &mut covered };
        read_only(r, "H100-20C");
        let gpus: Vec<String> = r.ok(&["list", "--json"], "list")["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["vendor_id"] == "0x10de")
            .map(|g| g["address"].as_str().unwrap().to_string())
            .collect();
        let (g0, g1, g2) = (gpus[0].as_str(), gpus[1].as_str(), gpus[2].as_str());
        let e = r.ok(&["sriov", "enable", g0, "--json"], "sriov-change");
        assert_eq!(e["gpus"][0]["changed"], true, "{e}");
        r.ok(&["sriov", "enable", g1, "--json"], "sriov-change");
        r.ok(&["vgpu", "mode", "--heterogeneous", "on", g1, "--json"], "vgpu-mode");
        let c = r.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", g0, "--json"], "vgpu-create");
        read_only(r, "H100-20C");
        r.ok(&["vgpu", "remove", c["vf"].as_str().unwrap(), "--json"], "vgpu-remove");
        r.ok(&["sriov", "disable", g1, "--json"], "sriov-change");
        // MIG: enable, profiles, create with compute instances, plan, destroy, disable.
        r.ok(&["mig", "enable", g2, "--json"], "mig-mode");
        r.ok(&["mig", "profiles", "--gpu", g2, "--json"], "mig-profiles");
        let gi = r.ok(&["mig", "create", "--profile", "3g.40gb", "--gpu", g2, "--compute-instances", "all", "--json"], "mig-create");
        r.ok(&["mig", "status", "--json"], "mig-status");
        r.ok(&["status", "--json"], "status");
        r.ok(&["explain", "--type", "H100-3-40C", "--json"], "explain");
        let (plan, _) = r.run(&["mig", "plan", "--want", "3g.40gb,2x1g.10gb", "--json"], "mig-plan");
        assert!(plan.get("placements").is_some() || plan.get("error").is_some(), "{plan}");
        r.ok(&["mig", "plan", "--want", "1g.10gb", "--gpu", g2, "--json"], "mig-plan");
        r.ok(&["mig", "defrag", "--dry-run", "--json"], "mig-defrag");
        r.ok(&["mig", "defrag", "--gpu", g2, "--json"], "mig-defrag");
        let gi = gi["gi"].as_u64().unwrap().to_string();
        r.ok(&["mig", "destroy", "--gpu", g2, &gi, "--force", "--json"], "mig-destroy");
        r.ok(&["mig", "disable", g2, "--json"], "mig-mode");
        // The hook: install, test a domain, uninstall.
        h.place_vgpuctl("/usr/bin/vgpuctl");
        r.ok(&["hook", "install", "--binary", "/usr/bin/vgpuctl", "--json"], "hook-install");
        let xml = h.ok(&["vm", "xml", "--name", "contract", "--vgpu", "H100-20C", "--gpu", g0]);
        let xml = write(&h, "contract.xml", &xml);
        r.ok(&["hook", "test", &xml, "--json"], "hook-test");
        r.ok(&["vm", "explain", &xml, "--json"], "vm-explain");
        r.ok(&["hook", "uninstall", "--json"], "hook-uninstall");
        r.ok(&["install-units", "--binary", "/usr/bin/vgpuctl", "--json"], "install-units");
        // plan / apply --check / apply from a host config.
        let cfg = write(&h, "host.toml", &format!("[[gpu]]\nselect = \"{g2}\"\nmode = \"mig\"\nlayout = [{{ profile = \"2g.20gb\" }}]\n"));
        r.ok(&["plan", "-f", &cfg, "--json"], "plan");
        r.ok(&["apply", "--check", "-f", &cfg, "--json"], "apply");
        let a = r.ok(&["apply", "-f", &cfg, "--json"], "apply");
        assert_eq!(a["changed"], true, "{a}");
        read_only(r, "H100-20C");
    }
    // 4×A100, legacy mdev on VFs: mdev lifecycle by hand and by definition.
    {
        let h = SimHost::new("a100x4-mdev");
        let r = &mut Runner { h: &h, profile: "a100x4-mdev", covered: &mut covered };
        read_only(r, "A100D-4C");
        r.ok(&["vgpu", "create", "--type", "A100D-4C", "--json"], "vgpu-create");
        read_only(r, "A100D-4C");
    }
    // 2×T4, mdev on the GPU itself.
    {
        let h = SimHost::new("t4x2-mdev");
        let r = &mut Runner { h: &h, profile: "t4x2-mdev", covered: &mut covered };
        read_only(r, "T4-4Q");
        let t4 = "0000:3b:00.0";
        let c = r.ok(&["mdev", "create", "--parent", t4, "--type", "nvidia-222", "--json"], "mdev-create");
        let u = c["uuid"].as_str().unwrap().to_string();
        r.ok(&["mdev", "remove", &u, "--json"], "mdev-remove");
        let d = r.ok(&["mdev", "define", "--parent", t4, "--type", "nvidia-222", "--json"], "mdev-definition");
        let u = d["uuid"].as_str().unwrap().to_string();
        r.ok(&["mdev", "start", &u, "--json"], "mdev-create");
        read_only(r, "T4-4Q");
        r.ok(&["mdev", "stop", &u, "--json"], "mdev-remove");
        r.ok(&["mdev", "undefine", &u, "--json"], "mdev-definition");
    }
    // Whole GPUs: check, prepare, release.
    {
        let h = SimHost::new("passthrough");
        let r = &mut Runner { h: &h, profile: "passthrough", covered: &mut covered };
        read_only(r, "L40S-4Q");
        r.ok(&["passthrough", "check", "0000:41:00.0", "--json"], "passthrough-check");
        r.ok(&["passthrough", "prepare", "0000:01:00.0", "--force", "--json"], "passthrough-prepare");
        r.ok(&["passthrough", "release", "0000:01:00.0", "--json"], "passthrough-release");
        read_only(r, "L40S-4Q");
    }
    // vm define/attach/detach/show are answered by vgpuctl-libvirt, which
    // needs a libvirtd: tests/libvirt_real.rs validates those documents.
    covered.extend(["vm define", "vm attach", "vm detach", "vm show"].map(String::from));
    let missing: Vec<String> = json_commands().difference(&covered).cloned().collect();
    assert!(missing.is_empty(), "commands with --json that no test validated: {missing:?}");
}

/// With --json a failure is one error document on stderr, naming what it is
/// about, with the exit code it exits with.
#[test]
fn test_errors_with_json_are_error_documents_naming_the_items() {
    let h = SimHost::new("h100x8-vfio");
    let mut covered = BTreeSet::new();
    let r = &mut Runner { h: &h, profile: "h100x8-vfio", covered: &mut covered };
    for (args, code, item) in [
        (vec!["mig", "enable", "0000:19:00.0", "--json"], 3, "0000:19:00.0"),
        (vec!["passthrough", "check", "2a:00.x", "--json"], 64, "0000:2a:00.0"),
        (vec!["explain", "--type", "T4-5Q", "--json"], 64, ""),
        (vec!["mig", "create", "--profile", "3g.40gb", "--gpu", "0000:18:00.0", "--json"], 3, "0000:18:00.0"),
    ] {
        let (doc, got) = r.run(&args, "never-printed");
        assert_eq!(got, code, "{args:?}: {doc}");
        if !item.is_empty() {
            assert!(doc["items"].as_array().unwrap().iter().any(|i| i == item), "{args:?}: {doc}");
        }
    }
    // The published error schema is the one these were checked against.
    assert_eq!(published("error")["$defs"]["ErrorKind"]["enum"], serde_json::json!(["usage", "refused", "unavailable", "failed"]));
}

/// The real H100 and H200, replayed from their read-only captures through
/// NVML and through nvidia-smi: the read commands' documents validate too.
#[test]
fn test_replayed_real_cards_print_valid_documents() {
    for (cap, small) in [(&common::replay::H100, "1g.10gb"), (&common::replay::H200, "1g.18gb")] {
        for backend in ["nvml", "nvidia-smi"] {
            for (args, schema) in [
                (&["list", "--json"][..], "list"),
                (&["types", "--json"], "types"),
                (&["status", "--json"], "status"),
                (&["mig", "status", "--json"], "mig-status"),
                (&["mig", "profiles", "--json"], "mig-profiles"),
                (&["mig", "plan", "--want", small, "--json"], "mig-plan"),
                (&["sriov", "status", "--json"], "sriov-status"),
                (&["gc", "--json"], "gc"),
            ] {
                let o = common::replay::run_on(cap, backend, args);
                let what = format!("{} via {backend}: vgpuctl {}", cap.name, args.join(" "));
                let out = String::from_utf8_lossy(&o.stdout);
                let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out} {}", String::from_utf8_lossy(&o.stderr)));
                validate(schema, &doc, &what);
            }
        }
    }
}
