//! `vgpuctl list` speed on the largest simulated host (8 GPUs × 32 VFs),
//! against baselines measured in the same run:
//! - a raw reader that reads the same attributes with no parsing, model or
//!   checks (the file-system floor for this inventory), and
//! - for the whole command, a bare process start (`/bin/true`), and
//! - for `vgpuctl metrics`, `vgpuctl list --json` on the same host with VFs.
//!
//! Run: `cargo bench --bench inventory`. Prints medians and ratios.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vgpuctl::host::Host;
use vgpuctl::inventory::{Inventory, ScanOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(iters: usize, mut f: F) -> Duration {
    for _ in 0..3 {
        f();
    }
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn read_into(p: &Path, buf: &mut [u8]) -> usize {
    use std::io::Read;
    fs::File::open(p).and_then(|mut f| f.read(buf)).unwrap_or(0)
}

/// Reads the same files the inventory reads, with the same minimal syscall
/// pattern (open, one read, close) and nothing else: no parsing, no model,
/// no checks, no warnings. The floor for this inventory on this machine.
fn raw_walk(root: &Path) -> usize {
    let mut buf = [0u8; 4096];
    let mut bytes = 0;
    let devs = root.join("sys/bus/pci/devices");
    let mut names: Vec<_> = fs::read_dir(&devs).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for n in names {
        let d = devs.join(n);
        let len = read_into(&d.join("class"), &mut buf);
        if !buf[..len].starts_with(b"0x03") {
            continue;
        }
        bytes += len;
        let is_vf = fs::read_link(d.join("physfn")).is_ok();
        for l in ["driver", "iommu_group"] {
            bytes += fs::read_link(d.join(l)).map(|p| p.as_os_str().len()).unwrap_or(0);
        }
        let attrs: &[&str] = if is_vf {
            &["nvidia/creatable_vgpu_types", "nvidia/current_vgpu_type"]
        } else {
            &["vendor", "device", "subsystem_vendor", "subsystem_device", "numa_node", "driver_override", "boot_vga", "sriov_totalvfs", "sriov_numvfs"]
        };
        for a in attrs {
            bytes += read_into(&d.join(a), &mut buf);
        }
    }
    bytes
}

fn main() {
    let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm").to_path_buf() } else { std::env::temp_dir() };
    let dir = base.join(format!("vgpuctl-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    vgpuctl::sim::create(&dir, "h100x8-vfio").expect("create simulated host");
    let host = Host::at_root(&dir).unwrap();
    let opts = ScanOptions { usage: true, mig: true };
    let inv = Inventory::scan_with(&host, &opts).unwrap();
    let vfs: usize = inv.gpus.iter().filter_map(|g| g.sriov.as_ref()).map(|s| s.vfs.len()).sum();
    println!("host: {} GPUs, {vfs} VFs (simulated h100x8-vfio on {})", inv.gpus.len(), base.display());

    let scan = time(50, || {
        black_box(Inventory::scan_with(&host, &opts).unwrap());
    });
    let raw = time(50, || {
        black_box(raw_walk(&dir));
    });
    let json = time(50, || {
        let inv = Inventory::scan_with(&host, &opts).unwrap();
        black_box(serde_json::to_string(&inv).unwrap());
    });
    println!("inventory scan          {:>8.2} ms", scan.as_secs_f64() * 1e3);
    println!("raw attribute walk      {:>8.2} ms   (baseline)", raw.as_secs_f64() * 1e3);
    println!("scan + JSON encode      {:>8.2} ms", json.as_secs_f64() * 1e3);
    println!("ratio scan / raw walk   {:>8.2}x", scan.as_secs_f64() / raw.as_secs_f64());

    // Whole command, as an admin or a hook runs it.
    let exe = Path::new(env!("CARGO_BIN_EXE_vgpuctl"));
    {
        let cmd = time(30, || {
            let o = Command::new(exe).arg("--root").arg(&dir).args(["list", "--json"]).output().unwrap();
            assert!(o.status.success());
        });
        let truth = time(30, || {
            Command::new("/bin/true").status().unwrap();
        });
        println!("vgpuctl list --json     {:>8.2} ms", cmd.as_secs_f64() * 1e3);
        println!("/bin/true               {:>8.2} ms   (baseline)", truth.as_secs_f64() * 1e3);
        println!("ratio list / true       {:>8.2}x", cmd.as_secs_f64() / truth.as_secs_f64());
    }

    // `vgpuctl metrics` against `vgpuctl list --json` on the same host with
    // every GPU's 32 VFs enabled and vGPUs on two GPUs (issue goal: <= 1.5x).
    {
        let run = |args: &[&str]| {
            let o = Command::new(exe).arg("--root").arg(&dir).args(args).output().unwrap();
            assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        run(&["sriov", "enable", "all"]);
        for gpu in ["0000:18:00.0", "0000:2a:00.0"] {
            for _ in 0..4 {
                run(&["vgpu", "create", "--type", "H100-20C", "--gpu", gpu]);
            }
        }
        let list = time(30, || run(&["list", "--json"]));
        let metrics = time(30, || run(&["metrics"]));
        println!("with 8 x 32 VFs, 8 vGPUs:");
        println!("vgpuctl list --json     {:>8.2} ms   (baseline)", list.as_secs_f64() * 1e3);
        println!("vgpuctl metrics         {:>8.2} ms", metrics.as_secs_f64() * 1e3);
        println!("ratio metrics / list    {:>8.2}x", metrics.as_secs_f64() / list.as_secs_f64());
    }
    let _ = fs::remove_dir_all(&dir);
}
