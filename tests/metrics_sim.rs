//! `vgpuctl metrics` on simulated hosts and replayed real cards: the numbers
//! equal what `types`, `mig status` and `status` say, hook outcomes are
//! counted by kind, the HTTP endpoint answers garbage with a status line and
//! stays up, and the textfile is written where node_exporter reads it.
//! (promtool and a real Prometheus scrape: tests/metrics_prometheus.rs.)

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use common::sim::SimHost;

/// `name{labels}` → value, labels in the order written.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
        assert!(m.insert(k.to_string(), v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {l:?}"))).is_none(), "duplicate series {k}");
    }
    m
}

fn series(m: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let hits: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && want.iter().all(|w| k.contains(&format!("{{{w}")) || k.contains(&format!(",{w}"))))
        .map(|(_, v)| *v)
        .collect();
    assert!(hits.len() <= 1, "{name} {labels:?} matches {} series", hits.len());
    hits.first().copied()
}

/// Every vGPU type's creatable count and instance count equal `types --json`,
/// and MIG room equals `mig status --json`, on every simulated profile.
#[test]
fn test_capacity_is_what_types_and_mig_status_say_on_every_profile() {
    for profile in ["h100x8-vfio", "a100x4-mdev", "t4x2-mdev", "passthrough"] {
        let h = SimHost::new(profile);
        if profile != "t4x2-mdev" && profile != "passthrough" {
            h.ok(&["sriov", "enable", "all"]);
        }
        let types = h.json(&["types", "--json"]);
        // One vGPU of a time-sliced type, where the host has one.
        let first = types["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["types"].as_array().unwrap().iter())
            .find(|t| t["kind"] == "time-sliced" && t["creatable"].as_u64().unwrap_or(0) > 1);
        if let Some(t) = first {
            h.ok(&["vgpu", "create", "--type", t["name"].as_str().unwrap()]);
        }
        if profile == "h100x8-vfio" {
            h.ok(&["mig", "enable", "0000:2a:00.0"]);
            h.ok(&["mig", "create", "--gpu", "0000:2a:00.0", "--profile", "3g.40gb"]);
            h.ok(&["vgpu", "create", "--type", "H100-1-10C", "--gpu", "0000:2a:00.0"]);
        }
        let m = parse(&h.ok(&["metrics"]));
        let types = h.json(&["types", "--json"]);
        let mut checked = 0;
        for g in types["gpus"].as_array().unwrap() {
            let gpu = g["gpu"].as_str().unwrap();
            for t in g["types"].as_array().unwrap() {
                let name = t["name"].as_str().unwrap();
                assert_eq!(series(&m, "vgpuctl_vgpu_creatable", &[("gpu", gpu), ("type", name)]), t["creatable"].as_f64(), "{profile} {gpu} {name}");
                checked += 1;
            }
        }
        let status = h.json(&["status", "--json"]);
        for g in status["gpus"].as_array().unwrap() {
            let gpu = g["gpu"].as_str().unwrap();
            assert_eq!(series(&m, "vgpuctl_gpu_info", &[("gpu", gpu), ("mode", g["mode"].as_str().unwrap())]), Some(1.0), "{profile} {gpu}");
            for d in g["devices"].as_array().unwrap() {
                let id = d["id"].as_str().unwrap();
                assert_eq!(series(&m, "vgpuctl_device_info", &[("gpu", gpu), ("kind", d["kind"].as_str().unwrap()), ("id", id)]), Some(1.0), "{profile} {id}");
                if d["kind"] != "mig-instance" && d["kind"] != "passthrough" {
                    let t = d["type"].as_str().unwrap();
                    assert!(series(&m, "vgpuctl_vgpu_instances", &[("gpu", gpu), ("type", t)]).unwrap() >= 1.0, "{profile} {t}");
                }
            }
        }
        match profile {
            "passthrough" => assert_eq!(checked, 0),
            _ => assert!(checked > 0, "{profile}: no vGPU types"),
        }
        if profile == "h100x8-vfio" {
            let mig = h.json(&["mig", "status", "--json"])["gpus"].clone();
            let g = mig.as_array().unwrap().iter().find(|g| g["gpu"] == "0000:2a:00.0").unwrap();
            for room in g["free"].as_array().unwrap() {
                let (p, n) = (room["profile"].as_str().unwrap(), room["more"].as_f64().unwrap());
                assert_eq!(series(&m, "vgpuctl_mig_creatable", &[("gpu", "0000:2a:00.0"), ("profile", p)]), Some(n), "{p}");
            }
            // 3g.40gb at slice 4 and the 1g the vGPU needed: a second 3g still fits at 0.
            assert_eq!(series(&m, "vgpuctl_mig_memory_slices", &[("gpu", "0000:2a:00.0"), ("state", "used")]), Some(5.0));
            assert_eq!(series(&m, "vgpuctl_mig_largest_free_compute_slices", &[("gpu", "0000:2a:00.0")]), Some(2.0));
            assert_eq!(series(&m, "vgpuctl_vgpu_instances", &[("gpu", "0000:2a:00.0"), ("type", "H100-1-10C"), ("kind", "mig-backed")]), Some(1.0));
            // GPUs not in MIG mode have no MIG series at all.
            assert_eq!(series(&m, "vgpuctl_mig_memory_slices", &[("gpu", "0000:18:00.0"), ("state", "used")]), None);
        }
        // The simulated driver reports no utilization: absent, never 0.
        assert!(!m.keys().any(|k| k.contains("utilization_ratio")), "{profile}");
    }
}

/// The hook counts prepares, refusals for lack of room, failures and releases.
#[test]
fn test_hook_outcomes_are_counted_by_kind() {
    let h = SimHost::new("t4x2-mdev");
    let xml = |name: &str| h.ok(&["vm", "xml", "--name", name, "--vgpu", "T4-16Q", "--domain-type", "qemu"]);
    let (a, b, c) = (xml("vm1"), xml("vm2"), xml("vm3"));
    assert_eq!(h.hook(&["vm1", "prepare", "begin", "-"], &a).0, 0);
    assert_eq!(h.hook(&["vm2", "prepare", "begin", "-"], &b).0, 0);
    // Two T4s, one T4-16Q each: the third start is refused for room.
    let (rc, err) = h.hook(&["vm3", "prepare", "begin", "-"], &c);
    assert_eq!(rc, 1, "{err}");
    // A broken domain is a failure, not a refusal for room.
    assert_eq!(
        h.hook(
            &["vm4", "prepare", "begin", "-"],
            "<domain><name>vm4</name><devices><hostdev mode='subsystem' type='mdev'><source><address uuid='not-a-uuid'/></source></hostdev></devices></domain>"
        )
        .0,
        1
    );
    assert_eq!(h.hook(&["vm1", "release", "end", "-"], &a).0, 0);
    // Events with nothing to do are not counted.
    assert_eq!(h.hook(&["vm1", "started", "begin", "-"], &a).0, 0);
    assert_eq!(h.hook(&["plain", "prepare", "begin", "-"], "<domain><name>plain</name></domain>").0, 0);
    let m = parse(&h.ok(&["metrics"]));
    let runs = |op: &str, outcome: &str| series(&m, "vgpuctl_hook_runs_total", &[("op", op), ("outcome", outcome)]);
    assert_eq!((runs("prepare", "ok"), runs("prepare", "no_room"), runs("prepare", "failed")), (Some(2.0), Some(1.0), Some(1.0)));
    assert_eq!((runs("release", "ok"), runs("release", "failed")), (Some(1.0), Some(0.0)));
    // The VM holding each vGPU, from the hook's journal.
    let vm2: Vec<_> = m.keys().filter(|k| k.starts_with("vgpuctl_device_info{") && k.contains("vm=\"vm2\"")).collect();
    assert_eq!(vm2.len(), 1, "{m:?}");
    assert!(!m.keys().any(|k| k.contains("vm=\"vm1\"")), "vm1 was released");
}

fn request(addr: &str, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    // A peer that stops reading early (a rejected, oversized request) may reset the connection.
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn test_listen_serves_metrics_refuses_garbage_and_stays_up() {
    let h = SimHost::new("h100x8-vfio");
    let mut child = h.cmd().args(["metrics", "--listen", "127.0.0.1:0", "--max-requests", "8"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().trim_end_matches("/metrics").to_string();
    let ok = request(&addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.contains("text/plain; version=0.0.4") && ok.contains("vgpuctl_gpu_info{"), "{ok}");
    assert!(request(&addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(request(&addr, b"GET /../../etc/shadow HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(request(&addr, b"\x00\xff\xfe garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(request(&addr, big.as_bytes()).starts_with("HTTP/1.1 431"));
    let head = request(&addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    // A client that connects and hangs up: the next one is served.
    drop(TcpStream::connect(&addr).unwrap());
    assert!(request(&addr, b"GET /metrics HTTP/1.1\r\n\r\n").contains("vgpuctl_hook_runs_total"));
    let status = child.wait().unwrap();
    assert!(status.success(), "stops after --max-requests");
    // Not on the network unless asked.
    let err = h.fails(&["metrics", "--listen", "0.0.0.0:0"], 64);
    assert!(err.contains("--allow-remote"), "{err}");
}

#[test]
fn test_textfile_lands_where_node_exporter_reads_and_bad_paths_are_refused() {
    let h = SimHost::new("a100x4-mdev");
    h.ok(&["metrics", "--textfile", "/var/lib/prometheus/node-exporter/vgpuctl.prom"]);
    let text = std::fs::read_to_string(h.path("/var/lib/prometheus/node-exporter/vgpuctl.prom")).unwrap();
    assert!(text.contains("vgpuctl_gpu_info{gpu=\"0000:"), "{text}");
    let dir = std::fs::read_dir(h.path("/var/lib/prometheus/node-exporter")).unwrap().count();
    assert_eq!(dir, 1, "no temporary file left beside it");
    for bad in ["vgpuctl.prom", "/var/lib/prometheus/node-exporter/vgpuctl.txt", "/var/lib/../../etc/x.prom"] {
        let err = h.fails(&["metrics", "--textfile", bad], 64);
        assert!(err.contains(".prom"), "{err}");
    }
    h.fails(&["metrics", "--textfile", "/x.prom", "--listen", "127.0.0.1:0"], 64);
}

/// The real H100 and H200 captures, through NVML and through nvidia-smi.
#[test]
fn test_metrics_of_replayed_real_cards() {
    for cap in [&common::replay::H100, &common::replay::H200] {
        for backend in ["nvml", "nvidia-smi"] {
            let o = common::replay::run_on(cap, backend, &["metrics"]);
            assert!(o.status.success(), "{} {backend}: {}", cap.name, String::from_utf8_lossy(&o.stderr));
            let m = parse(&String::from_utf8_lossy(&o.stdout));
            let snap: serde_json::Value = serde_json::from_str(cap.snapshot).unwrap();
            let uuid = snap["gpus"][0]["uuid"].as_str().unwrap();
            // The H100's nvidia-smi query was captured without the UUID column.
            let uuid = if backend == "nvidia-smi" && cap.name.starts_with("H100") { "" } else { uuid };
            let mut info = vec![("gpu", "0000:00:06.0"), ("nvidia_driver", "580.159.04"), ("mode", "unmanaged")];
            if !uuid.is_empty() {
                info.push(("uuid", uuid));
            }
            assert_eq!(series(&m, "vgpuctl_gpu_info", &info), Some(1.0), "{} {backend}: {m:?}", cap.name);
            let total = snap["gpus"][0]["memory"]["total_mib"].as_f64().unwrap() * 1024.0 * 1024.0;
            let got = series(&m, "vgpuctl_gpu_memory_total_bytes", &[("gpu", "0000:00:06.0")]);
            match (backend, cap.name.starts_with("H100")) {
                // nvidia-smi's utilization query was captured on the H200 only: absent on the H100.
                ("nvidia-smi", true) => assert_eq!(got, None),
                _ => assert_eq!(got, Some(total), "{} {backend}", cap.name),
            }
            // No vGPU manager on these cards: no vGPU types, no MIG series (MIG off).
            assert!(!m.keys().any(|k| k.starts_with("vgpuctl_vgpu_") || k.starts_with("vgpuctl_mig_")), "{m:?}");
        }
    }
}
