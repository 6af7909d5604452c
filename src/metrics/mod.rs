//! `vgpuctl metrics`: what a vGPU host can still take, in Prometheus' text
//! exposition format (version 0.0.4, OpenMetrics-compatible names).
//!
//! Every number comes from one status read ([`crate::status::collect`]):
//! "how many more of a type fit" is the `creatable` of the same per-GPU view
//! `types` and `explain` print, MIG room is the same layout `mig status`
//! shows, the VM of each device is the one `status` names. Utilization is
//! written only where the driver reports it: a missing series means "not
//! reported", never 0. Hook outcomes come from the hook's own counters
//! ([`crate::hook::counters`]). docs/metrics.md lists every family.

pub mod http;
mod text;

use std::time::Instant;

use crate::host::{Host, HostError};
use crate::status::{Collected, Device, DeviceUtilization};
use crate::vgpu::typename::VgpuKind;
pub use text::{Exposition, Kind};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Counters(#[from] crate::hook::counters::CountersError),
    #[error("the textfile {0:?} must be an absolute path ending in .prom without '..' (node_exporter reads only *.prom files)")]
    BadTextfile(String),
}

fn kind_label(k: Option<VgpuKind>) -> &'static str {
    match k {
        Some(VgpuKind::TimeSliced) => "time-sliced",
        Some(VgpuKind::MigBacked) => "mig-backed",
        None => "unknown",
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Reads the host once and renders every metric.
pub fn gather(host: &Host) -> Result<String, MetricsError> {
    let t0 = Instant::now();
    let c = crate::status::collect(host, true)?;
    let hook = crate::hook::counters::load(host)?;
    let mut e = render(&c, &hook);
    e.family("vgpuctl_collect_duration_seconds", "How long reading the host for these metrics took.", Kind::Gauge).sample(&[], t0.elapsed().as_secs_f64());
    Ok(e.to_text())
}

/// The metric families for one status read and the hook's counters.
pub fn render(c: &Collected, hook: &crate::hook::counters::HookCounters) -> Exposition {
    let mut e = Exposition::default();
    e.family("vgpuctl_build_info", "The vgpuctl that wrote these metrics.", Kind::Gauge).sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    gpus(&mut e, c);
    vgpu_types(&mut e, c);
    mig(&mut e, c);
    devices(&mut e, c);
    let f = e.family(
        "vgpuctl_hook_runs_total",
        "libvirt qemu hook runs with GPU work since boot, by operation and outcome (no_room: the VM start was refused because no GPU had room).",
        Kind::Counter,
    );
    for (op, outcome, v) in [
        ("prepare", "ok", hook.prepare_ok),
        ("prepare", "no_room", hook.prepare_no_room),
        ("prepare", "failed", hook.prepare_failed),
        ("release", "ok", hook.release_ok),
        ("release", "failed", hook.release_failed),
    ] {
        f.sample(&[("op", op), ("outcome", outcome)], v as f64);
    }
    e
}

fn gpus(e: &mut Exposition, c: &Collected) {
    let driver = c.nvidia_driver.clone().unwrap_or_default();
    let f = e.family(
        "vgpuctl_gpu_info",
        "One series per GPU: model, UUID, NVIDIA driver version, the kernel driver bound to it, and its mode (passthrough, time-sliced, mig, unmanaged).",
        Kind::Gauge,
    );
    for g in &c.status.gpus {
        let gpu = g.gpu.to_string();
        let uuid = c.uuids.get(&g.gpu).cloned().unwrap_or_default();
        f.sample(
            &[
                ("gpu", &gpu),
                ("model", g.name.as_deref().unwrap_or("")),
                ("uuid", &uuid),
                ("nvidia_driver", &driver),
                ("kernel_driver", g.driver.as_deref().unwrap_or("")),
                ("mode", g.mode),
            ],
            1.0,
        );
    }
    let f = e.family(
        "vgpuctl_gpu_vgpu_slots",
        "Places for a vGPU on a GPU (its SR-IOV VFs, or 1 for a GPU that is its own mdev parent), free or used.",
        Kind::Gauge,
    );
    for v in c.views.iter().filter(|v| v.slots > 0) {
        let gpu = v.gpu.to_string();
        f.sample(&[("gpu", &gpu), ("state", "free")], v.free_slots as f64);
        f.sample(&[("gpu", &gpu), ("state", "used")], v.slots.saturating_sub(v.free_slots) as f64);
    }
    let util: Vec<_> = c.status.gpus.iter().filter_map(|g| Some((g.gpu.to_string(), g.utilization.as_ref()?))).collect();
    let pct = |x: Option<u32>| x.map(|p| f64::from(p) / 100.0);
    let f = e.family("vgpuctl_gpu_utilization_ratio", "GPU busy fraction as the NVIDIA driver reports it (absent where it does not).", Kind::Gauge);
    for (gpu, u) in &util {
        f.sample_opt(&[("gpu", gpu)], pct(u.gpu_percent));
    }
    let f = e.family("vgpuctl_gpu_memory_utilization_ratio", "GPU memory-controller busy fraction as the driver reports it.", Kind::Gauge);
    for (gpu, u) in &util {
        f.sample_opt(&[("gpu", gpu)], pct(u.memory_percent));
    }
    let f = e.family("vgpuctl_gpu_memory_used_bytes", "GPU framebuffer in use, as the driver reports it.", Kind::Gauge);
    for (gpu, u) in &util {
        f.sample_opt(&[("gpu", gpu)], u.memory_used_mib.map(|m| m as f64 * MIB));
    }
    let f = e.family("vgpuctl_gpu_memory_total_bytes", "GPU framebuffer size, as the driver reports it.", Kind::Gauge);
    for (gpu, u) in &util {
        f.sample_opt(&[("gpu", gpu)], u.memory_total_mib.map(|m| m as f64 * MIB));
    }
}

/// One vGPU type on one GPU: how many exist, how many more fit (`None`
/// when the GPU no longer offers the type it holds).
struct TypeRow<'a> {
    gpu: String,
    name: &'a str,
    kind: &'static str,
    held: u32,
    creatable: Option<u32>,
}

fn vgpu_types(e: &mut Exposition, c: &Collected) {
    use crate::vgpu::typename::VgpuTypeName;
    // Every type a GPU offers gets both series (0 when none exist), so
    // `sum by (type)` over hosts is the fleet's capacity and usage.
    let mut rows: Vec<TypeRow> = Vec::new();
    for v in &c.views {
        let gpu = v.gpu.to_string();
        for t in &v.types {
            let held = match t.name.parse::<VgpuTypeName>() {
                Ok(parsed) => v.count_of(&parsed),
                Err(_) => v.vgpus.iter().filter(|x| x.type_name.as_deref() == Some(t.name.as_str())).count() as u32,
            };
            rows.push(TypeRow { gpu: gpu.clone(), name: &t.name, kind: kind_label(t.kind), held, creatable: Some(t.creatable) });
        }
        // Types in use that the GPU no longer offers (it is full, or in another mode).
        let offered = |name: &str| v.types.iter().any(|t| t.name == name || t.name.parse::<VgpuTypeName>().is_ok_and(|p| p.matches(name)));
        let mut listed: Vec<Option<&str>> = Vec::new();
        for x in &v.vgpus {
            let name = x.type_name.as_deref();
            if offered(name.unwrap_or("unknown")) || listed.contains(&name) {
                continue;
            }
            listed.push(name);
            let held = v.vgpus.iter().filter(|y| y.type_name.as_deref() == name).count() as u32;
            rows.push(TypeRow { gpu: gpu.clone(), name: name.unwrap_or("unknown"), kind: kind_label(x.kind), held, creatable: None });
        }
    }
    let f = e.family("vgpuctl_vgpu_instances", "vGPUs that exist, per GPU, vGPU type and kind (time-sliced or mig-backed).", Kind::Gauge);
    for r in &rows {
        f.sample(&[("gpu", &r.gpu), ("type", r.name), ("kind", r.kind)], f64::from(r.held));
    }
    let f = e.family(
        "vgpuctl_vgpu_creatable",
        "How many more vGPUs of this type can be created on this GPU now: the number `vgpuctl types` and `explain` give.",
        Kind::Gauge,
    );
    for r in &rows {
        f.sample_opt(&[("gpu", &r.gpu), ("type", r.name), ("kind", r.kind)], r.creatable.map(f64::from));
    }
}

fn mig(e: &mut Exposition, c: &Collected) {
    let f = e.family("vgpuctl_mig_memory_slices", "MIG memory slices of a GPU in MIG mode, used by GPU instances or free.", Kind::Gauge);
    for r in &c.mig {
        let gpu = r.gpu.to_string();
        let used = r.layout.used_mask().count_ones();
        f.sample(&[("gpu", &gpu), ("state", "used")], f64::from(used));
        f.sample(&[("gpu", &gpu), ("state", "free")], f64::from(8 - used));
    }
    let f = e.family("vgpuctl_mig_gpu_instances", "MIG GPU instances per GPU and profile.", Kind::Gauge);
    for r in &c.mig {
        let gpu = r.gpu.to_string();
        for p in &r.table {
            f.sample(&[("gpu", &gpu), ("profile", &p.name.to_string())], f64::from(r.layout.count(p.id)));
        }
    }
    let f = e.family(
        "vgpuctl_mig_creatable",
        "How many more GPU instances of a profile fit on this GPU as its instances are placed now (what `vgpuctl mig status` calls room).",
        Kind::Gauge,
    );
    for r in &c.mig {
        let gpu = r.gpu.to_string();
        for p in &r.table {
            f.sample(&[("gpu", &gpu), ("profile", &p.name.to_string())], f64::from(r.layout.more(p)));
        }
    }
    // The largest profile that still fits: a GPU with 4 free slices that
    // cannot take a 3g is fragmented.
    let largest: Vec<_> = c
        .mig
        .iter()
        .map(|r| (r.gpu.to_string(), r.table.iter().filter(|p| r.layout.more(p) > 0).max_by_key(|p| (p.compute_slices(), p.size, std::cmp::Reverse(p.id)))))
        .collect();
    let f =
        e.family("vgpuctl_mig_largest_free_compute_slices", "Compute slices of the largest MIG profile that still fits on this GPU (0: none).", Kind::Gauge);
    for (gpu, p) in &largest {
        f.sample(&[("gpu", gpu)], p.map(|p| f64::from(p.compute_slices())).unwrap_or(0.0));
    }
    let f = e.family("vgpuctl_mig_largest_free_profile_info", "The largest MIG profile that still fits on this GPU (absent when none does).", Kind::Gauge);
    for (gpu, p) in &largest {
        if let Some(p) = p {
            f.sample(&[("gpu", gpu), ("profile", &p.name.to_string())], 1.0);
        }
    }
}

fn devices(e: &mut Exposition, c: &Collected) {
    let all: Vec<(String, &Device)> = c
        .status
        .gpus
        .iter()
        .flat_map(|g| g.devices.iter().map(move |d| (g.gpu.to_string(), d)))
        .chain(c.status.other_mdevs.iter().map(|d| (String::new(), d)))
        .collect();
    let f = e.family(
        "vgpuctl_device_info",
        "One series per vGPU, mdev, MIG GPU instance or passed-through GPU, with its type and the VM that holds it (empty: none).",
        Kind::Gauge,
    );
    for (gpu, d) in &all {
        f.sample(&[("gpu", gpu), ("kind", d.kind), ("id", &d.id), ("type", d.type_name.as_deref().unwrap_or("")), ("vm", d.vm.as_deref().unwrap_or(""))], 1.0);
    }
    let f = e.family(
        "vgpuctl_device_in_use",
        "1 while a process (QEMU) holds the device's VFIO group, 0 when none does; absent when that cannot be known.",
        Kind::Gauge,
    );
    for (gpu, d) in &all {
        f.sample_opt(&[("gpu", gpu), ("kind", d.kind), ("id", &d.id)], d.in_use.map(|u| if u { 1.0 } else { 0.0 }));
    }
    type Pick = fn(&DeviceUtilization) -> Option<f64>;
    let util: [(&'static str, &'static str, Pick); 6] = [
        ("vgpuctl_device_sm_utilization_ratio", "SM busy fraction of a vGPU or MIG GPU instance, as the driver reports it.", |u| {
            u.sm_percent.map(|p| p / 100.0)
        }),
        ("vgpuctl_device_memory_utilization_ratio", "Memory-controller busy fraction of a vGPU, as the driver reports it.", |u| {
            u.memory_percent.map(|p| f64::from(p) / 100.0)
        }),
        ("vgpuctl_device_encoder_utilization_ratio", "Video encoder busy fraction of a vGPU, as the driver reports it.", |u| {
            u.encoder_percent.map(|p| f64::from(p) / 100.0)
        }),
        ("vgpuctl_device_decoder_utilization_ratio", "Video decoder busy fraction of a vGPU, as the driver reports it.", |u| {
            u.decoder_percent.map(|p| f64::from(p) / 100.0)
        }),
        ("vgpuctl_device_memory_used_bytes", "Framebuffer a vGPU or MIG GPU instance uses, as the driver reports it.", |u| {
            u.memory_used_mib.map(|m| m as f64 * MIB)
        }),
        ("vgpuctl_device_memory_total_bytes", "Framebuffer of a MIG GPU instance, as the driver reports it.", |u| u.memory_total_mib.map(|m| m as f64 * MIB)),
    ];
    for (name, help, pick) in util {
        let f = e.family(name, help, Kind::Gauge);
        for (gpu, d) in &all {
            f.sample_opt(&[("gpu", gpu), ("kind", d.kind), ("id", &d.id)], d.utilization.as_ref().and_then(pick));
        }
    }
}

/// Checks a textfile path for node_exporter's collector.
pub fn check_textfile(path: &str) -> Result<(), MetricsError> {
    let ok = path.starts_with('/') && path.ends_with(".prom") && !path.split('/').any(|c| c == ".." || c == ".") && !path.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(MetricsError::BadTextfile(path.to_string()))
    }
}

/// Writes the metrics to node_exporter's textfile directory, atomically (a
/// scrape never reads half a file).
pub fn write_textfile(host: &Host, path: &str) -> Result<(), MetricsError> {
    check_textfile(path)?;
    let text = gather(host)?;
    host.write_state(path, text.as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_textfile_paths_node_exporter_would_read() {
        assert!(check_textfile("/var/lib/prometheus/node-exporter/vgpuctl.prom").is_ok());
        for bad in ["vgpuctl.prom", "/var/lib/x/vgpuctl.txt", "/var/lib/../etc/x.prom", "/a/./b.prom"] {
            assert!(check_textfile(bad).is_err(), "{bad}");
        }
    }
}
