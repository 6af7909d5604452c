//! `vgpuctl metrics` against the real Prometheus tools (Debian's
//! `prometheus` and `prometheus-node-exporter`): promtool accepts the output
//! of every simulated profile and of the replayed real H100/H200, and the
//! example alert rules; a real Prometheus scrapes a real node_exporter whose
//! textfile collector reads the file vgpuctl-metrics.service writes, and
//! `vgpuctl metrics --listen`, while vGPUs, MIG instances and refused VM
//! starts happen on a simulated host; the values are read back through
//! Prometheus' HTTP query API after each step.
//!
//! Everything listens on 127.0.0.1 ports picked free, is bounded in time and
//! is stopped at the end. These tests need the packages, so they are
//! `#[ignore]`d for a plain `cargo test`; scripts/test.sh installs the
//! packages and runs them with `--ignored`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sim::SimHost;

fn promtool_check_metrics(text: &str, what: &str) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
#[ignore = "needs promtool (Debian package prometheus); scripts/test.sh installs it and runs this"]
fn test_promtool_accepts_every_profile_real_captures_and_the_alert_rules() {
    for profile in ["h100x8-vfio", "a100x4-mdev", "t4x2-mdev", "passthrough"] {
        let h = SimHost::new(profile);
        promtool_check_metrics(&h.ok(&["metrics"]), profile);
        if profile != "t4x2-mdev" && profile != "passthrough" {
            h.ok(&["sriov", "enable", "all"]);
        }
        if profile == "h100x8-vfio" {
            h.ok(&["vgpu", "create", "--type", "H100-20C"]);
            h.ok(&["mig", "enable", "0000:2a:00.0"]);
            h.ok(&["mig", "create", "--gpu", "0000:2a:00.0", "--profile", "3g.40gb"]);
            h.ok(&["vgpu", "create", "--type", "H100-1-10C"]);
        }
        promtool_check_metrics(&h.ok(&["metrics"]), &format!("{profile} with devices"));
    }
    for cap in [&common::replay::H100, &common::replay::H200] {
        for backend in ["nvml", "nvidia-smi"] {
            let o = common::replay::run_on(cap, backend, &["metrics"]);
            assert!(o.status.success());
            promtool_check_metrics(&String::from_utf8_lossy(&o.stdout), &format!("{} through {backend}", cap.name));
        }
    }
    // The alert rules docs/metrics.md shows are the file promtool checks.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/vgpuctl-alerts.yml");
    let o = Command::new("promtool").args(["check", "rules"]).arg(&rules).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md")).unwrap();
    assert!(doc.contains(&std::fs::read_to_string(&rules).unwrap()), "docs/metrics.md shows docs/examples/vgpuctl-alerts.yml verbatim");
}

/// A child process killed (and reaped) when dropped, even if the test fails.
struct Daemon(Child, &'static str);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            eprintln!("{} had already exited: {status}", self.1);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string()).or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The value of an instant query with one result, or `None` (no series yet).
fn query(port: u16, promql: &str) -> Option<f64> {
    let body = http_get(port, &format!("/api/v1/query?query={}", url_encode(promql)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Waits (bounded) until Prometheus answers `promql` with `want`.
fn wait_for(port: u16, promql: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(port, promql);
        if last == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus never answered {promql} with {want}; last answer {last:?}");
}

fn wait_ready(port: u16, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_get(port, path).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not answer on 127.0.0.1:{port}{path} within 60 s");
}

/// The textfile service's own command line (from systemd/vgpuctl-metrics.service).
fn textfile_service_args() -> Vec<String> {
    let unit = include_str!("../systemd/vgpuctl-metrics.service");
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("@VGPUCTL@"));
    words.map(str::to_string).collect()
}

fn hook(h: &SimHost, name: &str, op: &str, sub: &str, xml: &str) -> i32 {
    h.hook(&[name, op, sub, "-"], xml).0
}

#[test]
#[ignore = "needs prometheus, promtool and prometheus-node-exporter (Debian packages); scripts/test.sh installs them and runs this"]
fn test_real_prometheus_sees_capacity_instances_and_refusals_through_node_exporter_and_listen() {
    let h = SimHost::new("h100x8-vfio");
    h.ok(&["sriov", "enable", "all"]);
    let service = textfile_service_args();
    let textfile_dir = h.path("/var/lib/prometheus/node-exporter");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    let write_textfile = || {
        let o = h.cmd().args(&service).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    write_textfile();

    let (node_port, vgpuctl_port, prom_port) = (free_port(), free_port(), free_port());
    let work = common::sim::tempdir();
    let _node = Daemon(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", textfile_dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter"),
        "node_exporter",
    );
    let mut listen = h.cmd().args(["metrics", "--listen", &format!("127.0.0.1:{vgpuctl_port}")]).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(listen.stderr.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains(&format!("127.0.0.1:{vgpuctl_port}")), "{line}");
    let _listen = Daemon(listen, "vgpuctl metrics --listen");
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n  - job_name: vgpuctl\n    static_configs:\n      - targets: ['127.0.0.1:{vgpuctl_port}']\n",
            rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/vgpuctl-alerts.yml").display()
        ),
    )
    .unwrap();
    let _prom = Daemon(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
        "prometheus",
    );
    wait_ready(prom_port, "/-/ready", "prometheus");

    // Both ways in: an empty GPU takes four H100-20C.
    for job in ["node", "vgpuctl"] {
        wait_for(prom_port, &format!("vgpuctl_vgpu_creatable{{job=\"{job}\",gpu=\"0000:18:00.0\",type=\"H100-20C\"}}"), 4.0);
        wait_for(prom_port, &format!("sum(vgpuctl_vgpu_creatable{{job=\"{job}\",type=\"H100-20C\"}})"), 32.0);
    }

    // Two vGPUs on the first GPU.
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", "0000:18:00.0"]);
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", "0000:18:00.0"]);
    write_textfile();
    for job in ["node", "vgpuctl"] {
        wait_for(prom_port, &format!("vgpuctl_vgpu_creatable{{job=\"{job}\",gpu=\"0000:18:00.0\",type=\"H100-20C\"}}"), 2.0);
        wait_for(prom_port, &format!("sum(vgpuctl_vgpu_instances{{job=\"{job}\",type=\"H100-20C\"}})"), 2.0);
        // One framebuffer size per GPU: no 40C fits beside the 20Cs.
        wait_for(prom_port, &format!("vgpuctl_vgpu_creatable{{job=\"{job}\",gpu=\"0000:18:00.0\",type=\"H100-40C\"}}"), 0.0);
    }

    // MIG on the second GPU: the planner puts a 3g.40gb at slice 4, so the
    // largest profile that still fits is a 4g.40gb (at slice 0).
    h.ok(&["mig", "enable", "0000:2a:00.0"]);
    h.ok(&["mig", "create", "--gpu", "0000:2a:00.0", "--profile", "3g.40gb"]);
    write_textfile();
    for job in ["node", "vgpuctl"] {
        wait_for(prom_port, &format!("vgpuctl_mig_memory_slices{{job=\"{job}\",gpu=\"0000:2a:00.0\",state=\"used\"}}"), 4.0);
        wait_for(prom_port, &format!("vgpuctl_mig_largest_free_compute_slices{{job=\"{job}\",gpu=\"0000:2a:00.0\"}}"), 4.0);
        wait_for(prom_port, &format!("vgpuctl_mig_gpu_instances{{job=\"{job}\",gpu=\"0000:2a:00.0\",profile=\"3g.40gb\"}}"), 1.0);
        wait_for(prom_port, &format!("count(vgpuctl_gpu_info{{job=\"{job}\",mode=\"mig\"}})"), 1.0);
    }

    // A VM start that finds no room: its domain was made for the third GPU
    // while it was empty (VF .4); since then the GPU holds a 20C on another
    // VF, and one framebuffer size per GPU leaves no room for an 80C.
    let xml = h.ok(&["vm", "xml", "--name", "big", "--vgpu", "H100-80C", "--gpu", "0000:3a:00.0", "--domain-type", "qemu"]);
    assert!(xml.contains("vf='0000:3a:00.4'"), "{xml}");
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", "0000:3a:00.0"]);
    h.ok(&["vgpu", "create", "--type", "H100-20C", "--gpu", "0000:3a:00.0"]);
    h.ok(&["vgpu", "remove", "0000:3a:00.4"]);
    assert_eq!(hook(&h, "big", "prepare", "begin", &xml), 1);
    let small = h.ok(&["vm", "xml", "--name", "small", "--vgpu", "H100-20C", "--gpu", "0000:3a:00.0", "--domain-type", "qemu"]);
    assert_eq!(hook(&h, "small", "prepare", "begin", &small), 0);
    write_textfile();
    for job in ["node", "vgpuctl"] {
        wait_for(prom_port, &format!("vgpuctl_hook_runs_total{{job=\"{job}\",op=\"prepare\",outcome=\"no_room\"}}"), 1.0);
        wait_for(prom_port, &format!("vgpuctl_hook_runs_total{{job=\"{job}\",op=\"prepare\",outcome=\"ok\"}}"), 1.0);
        wait_for(prom_port, &format!("count(vgpuctl_device_info{{job=\"{job}\",vm=\"small\"}})"), 1.0);
    }
    // Every query docs/metrics.md shows runs, and the ones about this host answer.
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md")).unwrap();
    let queries = doc.split("## Queries").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut n = 0;
    for block in queries.split("\n\n").filter(|b| b.starts_with("    ")) {
        let q: String = block.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        let body = http_get(prom_port, &format!("/api/v1/query?query={}", url_encode(&q))).unwrap_or_else(|| panic!("query failed: {q}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        n += 1;
    }
    assert_eq!(n, 5, "the five documented queries");
    // GPUs that can still take an H100-10C: not the two holding 20Cs (one size per GPU), not the one in MIG mode.
    wait_for(prom_port, "sum(vgpuctl_vgpu_creatable{job=\"vgpuctl\",type=\"H100-10C\"} > bool 0)", 5.0);
    // The example alert for refused starts fires (once per scrape job here).
    wait_for(prom_port, "count(ALERTS{alertname=\"VgpuctlVmStartsRefusedForRoom\",alertstate=\"firing\"}) >= bool 1", 1.0);
}
