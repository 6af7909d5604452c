//! vgpuctl-nvml: reads what NVML reports about every NVIDIA GPU (identity,
//! MIG mode, GPU-instance profiles and placements, GPU and compute
//! instances, utilization of the GPU, of each GPU instance and of each
//! vGPU, the processes on it) and prints one JSON snapshot
//! (`vgpuctl::nvml::NvmlSnapshot`). It only reads: instances are created
//! and destroyed by vgpuctl through nvidia-smi.
//!
//! A separate binary because NVML is a shared library loaded at run time
//! and vgpuctl is static. Exit status 3: NVML cannot be loaded or
//! initialised here (vgpuctl then falls back to nvidia-smi).

use std::os::raw::c_uint;
use std::process::ExitCode;
use std::time::Duration;

use nvml_wrapper::enum_wrappers::device::GpuVirtualizationMode;
use nvml_wrapper::enum_wrappers::vgpu::VmId;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::{nvml_sym, nvml_try, NvmlError};
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::vgpu::VgpuInstance;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::*;
use vgpuctl::nvidia::Wants;
use vgpuctl::nvml::{
    NvmlComputeInstance, NvmlGiProfile, NvmlGpu, NvmlGpuInstance, NvmlMemory, NvmlMigMode, NvmlPlacement, NvmlProcess, NvmlSnapshot, NvmlUtilization, NvmlVgpu,
    EXIT_NO_NVML, SCHEMA_VERSION,
};

const USAGE: &str = "usage: vgpuctl-nvml snapshot [--want LIST] [--sample-ms N]\n\
    Prints one JSON snapshot of what NVML reports (read-only). --version: which build.\n\
    --want LIST    what to read besides each GPU's identity and MIG mode, comma-separated:\n\
                   profiles, instances, processes, utilization, vgpu, sampled, mig, all\n\
                   (default all; a command asks only for what it reads)\n\
    --sample-ms N  window for GPU-instance utilization (GPM) when sampled, default 100, 0 skips it\n\
    --timing       print how long each NVML call took to stderr (for benchmarks)\n\
    exit 0: snapshot printed; 3: NVML not usable here; 2: bad arguments; 1: other failure";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sample_ms: u64 = 100;
    let mut want = Wants::ALL;
    match args.first().map(String::as_str) {
        Some("snapshot") => {}
        // What `vgpuctl --version` compares with its own line.
        Some("-V" | "--version") => {
            println!("{}", vgpuctl::version::line("vgpuctl-nvml"));
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        if a == "--timing" {
            TIMING.store(true, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        let value = rest.next();
        match (a.as_str(), value) {
            ("--sample-ms", Some(v)) if v.parse::<u64>().is_ok_and(|v| v <= 10_000) => sample_ms = v.parse().unwrap_or(100),
            ("--want", Some(v)) => match Wants::parse(v) {
                Ok(w) => want = w,
                Err(word) => {
                    eprintln!("vgpuctl-nvml: --want: unknown part {word:?}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("vgpuctl-nvml: bad argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // No sampling window unless the caller asked for sampled utilization.
    if !want.contains(Wants::SAMPLED) {
        sample_ms = 0;
    }
    let nvml = match timed("nvmlInit", Nvml::init) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("NVML is not usable here: {e}");
            return ExitCode::from(EXIT_NO_NVML as u8);
        }
    };
    let snap = snapshot(&nvml, want, Duration::from_millis(sample_ms));
    match serde_json::to_string_pretty(&snap) {
        Ok(text) => {
            println!("{text}");
            end_output();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vgpuctl-nvml: cannot print the snapshot: {e}");
            ExitCode::from(1)
        }
    }
}

/// Ends stdout and stderr once the snapshot is out: vgpuctl takes the
/// answer then, and NVML's shutdown and the kernel's teardown of the
/// session (4–6 ms on an H200) go on without it waiting. Both are pointed
/// at /dev/null rather than closed, so a late write cannot fail.
fn end_output() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else { return };
    // Stdout first: if stderr cannot follow, the caller waits for the exit as before.
    let _ = nix::unistd::dup2_stdout(&null).and_then(|()| nix::unistd::dup2_stderr(&null));
}

static TIMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs one NVML call, printing how long it took with --timing.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    if !TIMING.load(std::sync::atomic::Ordering::Relaxed) {
        return f();
    }
    let t = std::time::Instant::now();
    let v = f();
    eprintln!("timing {what}: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    v
}

/// Collects "not supported" as absent and anything else as a reported error.
struct Errors(Vec<String>);

impl Errors {
    fn opt<T>(&mut self, what: &str, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported | NvmlError::NotFound | NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound) => None,
            Err(e) => {
                self.0.push(format!("{what}: {e}"));
                None
            }
        }
    }
}

fn snapshot(nvml: &Nvml, want: Wants, window: Duration) -> NvmlSnapshot {
    let mut snap = NvmlSnapshot {
        schema_version: SCHEMA_VERSION,
        driver_version: nvml.sys_driver_version().ok(),
        nvml_version: nvml.sys_nvml_version().ok(),
        gpus: Vec::new(),
    };
    let count = timed("device count", || nvml.device_count()).unwrap_or(0);
    let mut devices = Vec::new();
    for index in 0..count {
        match timed("device by index", || nvml.device_by_index(index)) {
            Ok(d) => devices.push((index, d)),
            Err(e) => snap.gpus.push(NvmlGpu { index, errors: vec![format!("device {index}: {e}")], ..Default::default() }),
        }
    }
    let mut gpus: Vec<(NvmlGpu, &Device)> = devices.iter().map(|(i, d)| (gpu(nvml, want, *i, d), d)).collect();
    if !window.is_zero() {
        gi_utilization(nvml, &mut gpus, window);
    }
    snap.gpus.extend(gpus.into_iter().map(|(g, _)| g));
    snap.gpus.sort_by_key(|g| g.index);
    snap
}

/// One GPU: its identity and MIG mode always, the rest as `want` says
/// (each part is NVML calls per profile, instance or process, which a
/// command that does not read them must not pay for).
fn gpu(nvml: &Nvml, want: Wants, index: u32, d: &Device) -> NvmlGpu {
    let mut e = Errors(Vec::new());
    let pci_bus_id = e.opt("pci info", timed("pci info", || d.pci_info())).map(|p| p.bus_id).unwrap_or_default();
    let uuid = e.opt("uuid", timed("uuid", || d.uuid()));
    let name = e.opt("name", timed("name", || d.name()));
    let mut g = NvmlGpu { index, pci_bus_id, uuid, name, ..Default::default() };
    g.mig = e.opt("MIG mode", timed("MIG mode", || d.mig_mode())).map(|m| NvmlMigMode { current: m.current == 1, pending: m.pending == 1 });
    if want.contains(Wants::UTILIZATION) {
        g.memory = e.opt("memory", timed("memory", || d.memory_info())).map(|m| NvmlMemory { total_mib: m.total >> 20, used_mib: m.used >> 20 });
        g.utilization =
            e.opt("utilization", timed("utilization", || d.utilization_rates())).map(|u| NvmlUtilization { gpu_percent: u.gpu, memory_percent: u.memory });
    }
    // Instances are listed per profile, so a GPU in MIG mode needs its
    // profile table for them too; one with MIG off has no instances.
    let mig_on = g.mig.is_some_and(|m| m.current);
    if g.mig.is_some() && (want.contains(Wants::MIG_PROFILES) || want.contains(Wants::MIG_INSTANCES) && mig_on) {
        g.gi_profiles = timed("GI profiles", || gi_profiles(nvml, d, &mut e));
    }
    if want.contains(Wants::MIG_INSTANCES) && mig_on {
        g.gpu_instances = gpu_instances(nvml, d, &g.gi_profiles, &mut e);
        gi_memory(nvml, d, &mut g.gpu_instances, &mut e);
    }
    if want.contains(Wants::PROCESSES) {
        g.processes = e
            .opt("compute processes", timed("compute processes", || d.running_compute_processes()))
            .unwrap_or_default()
            .into_iter()
            .map(|p| NvmlProcess {
                pid: p.pid,
                name: nvml.sys_process_name(p.pid, 96).ok(),
                used_mib: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b >> 20),
                    UsedGpuMemory::Unavailable => None,
                },
                gi: p.gpu_instance_id,
                ci: p.compute_instance_id,
            })
            .collect();
    }
    // Only a GPU the vGPU manager runs has vGPUs and a mixed-size mode; the
    // others are not asked (a failed mode query asks anyway).
    let host_vgpu = || {
        !matches!(
            timed("virtualization mode", || d.virtualization_mode()),
            Ok(GpuVirtualizationMode::Bare | GpuVirtualizationMode::PassThrough | GpuVirtualizationMode::Vgpu)
        )
    };
    if want.contains(Wants::VGPU) && host_vgpu() {
        g.heterogeneous = e.opt("vGPU heterogeneous mode", timed("heterogeneous mode", || heterogeneous(nvml, d)));
        g.vgpus = timed("vGPUs", || vgpus(nvml, d, &mut e));
    }
    g.errors = e.0;
    g
}

fn gi_profiles(nvml: &Nvml, d: &Device, e: &mut Errors) -> Vec<NvmlGiProfile> {
    let mut out = Vec::new();
    for index in 0..NVML_GPU_INSTANCE_PROFILE_COUNT {
        // NotSupported / InvalidArg: this GPU has no profile at that index.
        let Ok(info) = d.profile_info(index) else { continue };
        let placements = e.opt(&format!("placements of profile {}", info.id), placements(nvml, d, info.id)).unwrap_or_default();
        out.push(NvmlGiProfile {
            index,
            id: info.id,
            name: profile_name_v2(nvml, d, index),
            slices: info.slice_count,
            memory_mib: info.memory_size_mb,
            sms: info.multiprocessor_count,
            max_instances: info.instance_count,
            placements,
        });
    }
    out
}

/// The driver's profile name (`MIG 1g.10gb`), from the versioned query.
fn profile_name_v2(nvml: &Nvml, d: &Device, index: u32) -> Option<String> {
    let sym = nvml_sym(nvml.lib().nvmlDeviceGetGpuInstanceProfileInfoV.as_ref()).ok()?;
    // SAFETY: a zeroed plain-data struct with its version set, as NVML asks;
    // the device handle lives as long as `d`.
    unsafe {
        let mut info: nvmlGpuInstanceProfileInfo_v2_t = std::mem::zeroed();
        info.version = std::mem::size_of::<nvmlGpuInstanceProfileInfo_v2_t>() as c_uint | (2 << 24);
        nvml_try(sym(d.handle(), index, &mut info)).ok()?;
        let bytes: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
        let name = String::from_utf8(bytes).ok()?;
        (!name.trim().is_empty()).then(|| name.trim().to_string())
    }
}

/// `nvmlDeviceGetGpuInstancePossiblePlacements_v2` (nvml-wrapper 0.13's own
/// wrapper never sets the vector's length, so it always returns nothing).
fn placements(nvml: &Nvml, d: &Device, profile_id: u32) -> Result<Vec<NvmlPlacement>, NvmlError> {
    let sym = nvml_sym(nvml.lib().nvmlDeviceGetGpuInstancePossiblePlacements_v2.as_ref())?;
    let mut buf = [nvmlGpuInstancePlacement_t { start: 0, size: 0 }; 32];
    let mut count = buf.len() as c_uint;
    // SAFETY: NVML writes at most `count` entries into `buf`.
    unsafe { nvml_try(sym(d.handle(), profile_id, buf.as_mut_ptr(), &mut count))? };
    Ok(buf[..(count as usize).min(buf.len())]
        .iter()
        .filter_map(|p| Some(NvmlPlacement { start: u8::try_from(p.start).ok()?, size: u8::try_from(p.size).ok()? }))
        .collect())
}

fn gpu_instances(nvml: &Nvml, d: &Device, profiles: &[NvmlGiProfile], e: &mut Errors) -> Vec<NvmlGpuInstance> {
    let lib = nvml.lib();
    let mut out = Vec::new();
    for p in profiles {
        let handles = match gi_handles(nvml, d, p.id) {
            Ok(h) => h,
            Err(err) => {
                e.opt::<()>(&format!("GPU instances of profile {}", p.id), Err(err));
                continue;
            }
        };
        for h in handles {
            let Ok(info_sym) = nvml_sym(lib.nvmlGpuInstanceGetInfo.as_ref()) else { continue };
            // SAFETY: `h` came from NVML for this device, `info` is plain data.
            let info = unsafe {
                let mut info: nvmlGpuInstanceInfo_t = std::mem::zeroed();
                if nvml_try(info_sym(h, &mut info)).is_err() {
                    continue;
                }
                info
            };
            out.push(NvmlGpuInstance {
                gi: info.id,
                profile_id: info.profileId,
                start: info.placement.start as u8,
                size: info.placement.size as u8,
                compute_instances: e.opt(&format!("compute instances of GI {}", info.id), compute_instances(nvml, h)).unwrap_or_default(),
                sm_percent: None,
                memory: None,
            });
        }
    }
    out.sort_by_key(|g| g.gi);
    out
}

fn gi_handles(nvml: &Nvml, d: &Device, profile_id: u32) -> Result<Vec<nvmlGpuInstance_t>, NvmlError> {
    let sym = nvml_sym(nvml.lib().nvmlDeviceGetGpuInstances.as_ref())?;
    let mut buf: [nvmlGpuInstance_t; 16] = [std::ptr::null_mut(); 16];
    let mut count: c_uint = 0;
    // SAFETY: the buffer holds more than the 8 instances a GPU can have.
    unsafe { nvml_try(sym(d.handle(), profile_id, buf.as_mut_ptr(), &mut count))? };
    Ok(buf[..(count as usize).min(buf.len())].to_vec())
}

fn compute_instances(nvml: &Nvml, gi: nvmlGpuInstance_t) -> Result<Vec<NvmlComputeInstance>, NvmlError> {
    let lib = nvml.lib();
    let prof_sym = nvml_sym(lib.nvmlGpuInstanceGetComputeInstanceProfileInfo.as_ref())?;
    let list_sym = nvml_sym(lib.nvmlGpuInstanceGetComputeInstances.as_ref())?;
    let info_sym = nvml_sym(lib.nvmlComputeInstanceGetInfo_v2.as_ref())?;
    let mut out = Vec::new();
    for index in 0..NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
        // SAFETY: plain-data out-parameters; handles from NVML.
        unsafe {
            let mut p: nvmlComputeInstanceProfileInfo_t = std::mem::zeroed();
            if nvml_try(prof_sym(gi, index, NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, &mut p)).is_err() {
                continue;
            }
            let mut buf: [nvmlComputeInstance_t; 16] = [std::ptr::null_mut(); 16];
            let mut count: c_uint = 0;
            nvml_try(list_sym(gi, p.id, buf.as_mut_ptr(), &mut count))?;
            for ci in &buf[..(count as usize).min(buf.len())] {
                let mut info: nvmlComputeInstanceInfo_t = std::mem::zeroed();
                nvml_try(info_sym(*ci, &mut info))?;
                out.push(NvmlComputeInstance { ci: info.id, profile_id: info.profileId, start: info.placement.start as u8, size: info.placement.size as u8 });
            }
        }
    }
    out.sort_by_key(|c| c.ci);
    Ok(out)
}

/// Memory per GPU instance, from the MIG device handles.
fn gi_memory(nvml: &Nvml, d: &Device, gis: &mut [NvmlGpuInstance], e: &mut Errors) {
    let Some(n) = e.opt("MIG device count", d.mig_device_count()) else { return };
    let Ok(gi_sym) = nvml_sym(nvml.lib().nvmlDeviceGetGpuInstanceId.as_ref()) else { return };
    for i in 0..n {
        let Ok(m) = d.mig_device_by_index(i) else { continue };
        let mut gi: c_uint = 0;
        // SAFETY: `m` is a MIG device handle NVML just returned.
        if unsafe { nvml_try(gi_sym(m.handle(), &mut gi)) }.is_err() {
            continue;
        }
        if let (Some(g), Ok(mem)) = (gis.iter_mut().find(|g| g.gi == gi), m.memory_info()) {
            g.memory = Some(NvmlMemory { total_mib: mem.total >> 20, used_mib: mem.used >> 20 });
        }
    }
}

/// SM utilization per GPU instance over `window`, from two GPM samples.
fn gi_utilization(nvml: &Nvml, gpus: &mut [(NvmlGpu, &Device)], window: Duration) {
    let mut first = Vec::new();
    for (gi_index, (g, d)) in gpus.iter().enumerate() {
        if g.gpu_instances.is_empty() || !d.gpm_support().unwrap_or(false) {
            continue;
        }
        for (k, inst) in g.gpu_instances.iter().enumerate() {
            if let Ok(s) = d.gpm_mig_sample(inst.gi) {
                first.push((gi_index, k, s));
            }
        }
    }
    if first.is_empty() {
        return;
    }
    std::thread::sleep(window);
    for (gi_index, k, s1) in first {
        let (g, d) = &mut gpus[gi_index];
        let gi = g.gpu_instances[k].gi;
        let Ok(s2) = d.gpm_mig_sample(gi) else { continue };
        match gpm_metrics_get(nvml, &s1, &s2, &[GpmMetricId::SmUtil]) {
            Ok(r) => g.gpu_instances[k].sm_percent = r.into_iter().next().and_then(Result::ok).map(|m| m.value),
            Err(err) => g.errors.push(format!("GPM of GI {gi}: {err}")),
        }
    }
}

fn heterogeneous(nvml: &Nvml, d: &Device) -> Result<bool, NvmlError> {
    let sym = nvml_sym(nvml.lib().nvmlDeviceGetVgpuHeterogeneousMode.as_ref())?;
    // SAFETY: versioned plain-data struct.
    unsafe {
        let mut m: nvmlVgpuHeterogeneousMode_t = std::mem::zeroed();
        m.version = std::mem::size_of::<nvmlVgpuHeterogeneousMode_t>() as c_uint | (1 << 24);
        nvml_try(sym(d.handle(), &mut m))?;
        Ok(m.mode != 0)
    }
}

fn vgpus(nvml: &Nvml, d: &Device, e: &mut Errors) -> Vec<NvmlVgpu> {
    let Some(ids) = e.opt("active vGPUs", active_vgpu_ids(nvml, d)) else { return Vec::new() };
    let util = e.opt("vGPU utilization", vgpu_utilization(nvml, d)).unwrap_or_default();
    ids.into_iter()
        .map(|id| {
            let v = VgpuInstance::new(id, d);
            let u = util.iter().find(|(i, _)| *i == id).map(|(_, u)| *u);
            NvmlVgpu {
                instance: id,
                mdev_uuid: v.mdev_uuid().ok(),
                vm_id: v.vm_id().ok().map(|vm| match vm {
                    VmId::Domain(s) | VmId::Uuid(s) => s,
                }),
                type_id: v.instance_type().ok().map(|t| t.id()),
                type_name: v.instance_type().ok().and_then(|t| t.name().ok()),
                fb_used_mib: v.fb_usage().ok().map(|b| b >> 20),
                gi: v.gpu_instance_id().ok().filter(|g| *g != u32::MAX),
                sm_percent: u.map(|u| u[0]),
                memory_percent: u.map(|u| u[1]),
                encoder_percent: u.map(|u| u[2]),
                decoder_percent: u.map(|u| u[3]),
            }
        })
        .collect()
}

fn active_vgpu_ids(nvml: &Nvml, d: &Device) -> Result<Vec<u32>, NvmlError> {
    let sym = nvml_sym(nvml.lib().nvmlDeviceGetActiveVgpus.as_ref())?;
    let mut buf = [0 as nvmlVgpuInstance_t; 64];
    let mut count = buf.len() as c_uint;
    // SAFETY: NVML writes at most `count` ids.
    unsafe { nvml_try(sym(d.handle(), &mut count, buf.as_mut_ptr()))? };
    Ok(buf[..(count as usize).min(buf.len())].to_vec())
}

/// Latest (sm, memory, encoder, decoder) percent per vGPU instance.
#[allow(non_upper_case_globals)]
fn vgpu_utilization(nvml: &Nvml, d: &Device) -> Result<Vec<(u32, [u32; 4])>, NvmlError> {
    let sym = nvml_sym(nvml.lib().nvmlDeviceGetVgpuUtilization.as_ref())?;
    // SAFETY: the samples buffer holds `count` plain-data entries; the union
    // member read is the one `kind` names.
    unsafe {
        let mut kind: nvmlValueType_t = 0;
        let mut buf: Vec<nvmlVgpuInstanceUtilizationSample_t> = vec![std::mem::zeroed(); 64];
        let mut count = buf.len() as c_uint;
        nvml_try(sym(d.handle(), 0, &mut kind, &mut count, buf.as_mut_ptr()))?;
        let read = |v: nvmlValue_t| -> u32 {
            match kind {
                nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT => v.uiVal,
                nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG => v.ulVal as u32,
                nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => v.ullVal as u32,
                nvmlValueType_enum_NVML_VALUE_TYPE_DOUBLE => v.dVal as u32,
                _ => 0,
            }
        };
        let mut latest: Vec<(u32, u64, [u32; 4])> = Vec::new();
        for s in &buf[..(count as usize).min(buf.len())] {
            let vals = [read(s.smUtil), read(s.memUtil), read(s.encUtil), read(s.decUtil)];
            match latest.iter_mut().find(|(id, _, _)| *id == s.vgpuInstance) {
                Some(l) if l.1 < s.timeStamp => *l = (s.vgpuInstance, s.timeStamp, vals),
                Some(_) => {}
                None => latest.push((s.vgpuInstance, s.timeStamp, vals)),
            }
        }
        Ok(latest.into_iter().map(|(id, _, v)| (id, v)).collect())
    }
}
