//! SR-IOV virtual functions of simulated NVIDIA GPUs, created and removed
//! the way the kernel does when `sriov_numvfs` is written, with the NVIDIA
//! files each interface puts on them, and the vendor interface's
//! `creatable_vgpu_types` lists recomputed after every change.

use std::fs;
use std::io;

use super::state::{SimGpu, SimInterface};
use super::tree::{PciFn, Tree};
use crate::ids::PciAddress;
use crate::nvidia::known::{self, KnownType};
use crate::parse::{self, MigModeState};

/// Routing id of VF `n` (0-based) with NVIDIA's first-VF offset 4 and stride 1.
pub fn vf_address(pf: PciAddress, n: u32) -> PciAddress {
    let rid = (u32::from(pf.device) << 3 | u32::from(pf.function)) + 4 + n;
    PciAddress { domain: pf.domain, bus: pf.bus, device: ((rid >> 3) & 0x1f) as u8, function: (rid & 7) as u8 }
}

fn pf_dir(tree: &Tree, pf: PciAddress) -> io::Result<String> {
    let real = fs::canonicalize(tree.root().join(format!("sys/bus/pci/devices/{pf}")))?;
    let rel = real.strip_prefix(fs::canonicalize(tree.root())?).map_err(|_| io::Error::other("PF outside the root"))?;
    Ok(format!("/{}", rel.display()))
}

fn read_hex(tree: &Tree, path: &str) -> u32 {
    fs::read_to_string(tree.root().join(path.trim_start_matches('/'))).ok().and_then(|s| parse::hex_id(&s)).unwrap_or(0)
}

fn type_files(tree: &Tree, dir: &str, model: &str, t: &KnownType, available: u32) -> io::Result<()> {
    let tdir = format!("{dir}/mdev_supported_types/nvidia-{}", t.id);
    tree.write(&format!("{tdir}/name"), &format!("GRID {model}-{}\n", t.suffix))?;
    tree.write(&format!("{tdir}/description"), &format!("{}\n", t.description()))?;
    tree.write(&format!("{tdir}/device_api"), "vfio-pci\n")?;
    tree.write(&format!("{tdir}/available_instances"), &format!("{available}\n"))?;
    tree.write(&format!("{tdir}/create"), "")?;
    tree.mkdir(&format!("{tdir}/devices"))
}

/// Legacy mdev type directories on a parent (a non-SR-IOV GPU, or one VF).
pub fn legacy_types(tree: &Tree, dir: &str, model: &str, available: impl Fn(&KnownType) -> u32) -> io::Result<()> {
    for t in known::catalog(model).unwrap_or_default() {
        type_files(tree, dir, model, t, available(t))?;
    }
    Ok(())
}

/// Enables `n` VFs on `pf`: what the kernel and the NVIDIA driver do after
/// `echo n > sriov_numvfs` (or `sriov-manage -e`).
pub fn add_vfs(tree: &Tree, pf: PciAddress, gpu: &SimGpu, n: u32) -> io::Result<()> {
    let pf_dir = pf_dir(tree, pf)?;
    let parent_dir = pf_dir.rsplit_once('/').map(|(p, _)| p.to_string()).unwrap_or_default();
    let numa =
        fs::read_to_string(tree.root().join(format!("{}/numa_node", pf_dir.trim_start_matches('/')))).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(-1);
    let device = read_hex(tree, &format!("{pf_dir}/device"));
    let subsystem = read_hex(tree, &format!("{pf_dir}/subsystem_device"));
    for i in 0..n {
        let vf = vf_address(pf, i);
        let dir = tree.pci(&PciFn {
            address: vf,
            devpath: format!("{}/{vf}", parent_dir.trim_start_matches("/sys/devices/")),
            vendor: 0x10de,
            device,
            subsystem: (0x10de, subsystem),
            class: 0x030200,
            driver: Some("nvidia"),
            boot_vga: Some(false),
            numa_node: numa,
            iommu_group: Some(tree.next_group()),
        })?;
        tree.link(&format!("{dir}/physfn"), &pf_dir)?;
        tree.link(&format!("{pf_dir}/virtfn{i}"), &dir)?;
        match gpu.interface {
            SimInterface::VendorVfio => {
                tree.write(&format!("{dir}/nvidia/creatable_vgpu_types"), "ID    : vGPU Name\n")?;
                tree.write(&format!("{dir}/nvidia/current_vgpu_type"), "0\n")?;
                tree.write(&format!("{dir}/nvidia/vgpu_params"), "\n")?;
            }
            SimInterface::LegacyMdev => {
                tree.link(&format!("/sys/class/mdev_bus/{vf}"), &dir)?;
                // One mdev per VF; MIG-backed types need MIG mode.
                let mig_on = gpu.mig_current == MigModeState::Enabled;
                legacy_types(tree, &dir, &gpu.model, |t| u32::from(t.mig_profile.is_some() == mig_on))?;
            }
            SimInterface::None => {}
        }
    }
    tree.write(&format!("{pf_dir}/sriov_numvfs"), &format!("{n}\n"))?;
    if gpu.interface == SimInterface::VendorVfio {
        refresh_vendor(tree, pf, gpu)?;
    }
    Ok(())
}

/// Disables every VF of `pf`.
pub fn remove_vfs(tree: &Tree, pf: PciAddress) -> io::Result<()> {
    let pf_dir = pf_dir(tree, pf)?;
    let pf_abs = tree.root().join(pf_dir.trim_start_matches('/'));
    for e in fs::read_dir(&pf_abs)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("virtfn") {
            continue;
        }
        let vf_abs = fs::canonicalize(e.path())?;
        let vf = vf_abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Ok(g) = fs::canonicalize(vf_abs.join("iommu_group")) {
            if let Some(n) = g.file_name() {
                let _ = fs::remove_file(tree.root().join("dev/vfio").join(n));
            }
            let _ = fs::remove_dir_all(g);
        }
        for link in [format!("sys/bus/pci/devices/{vf}"), format!("sys/bus/pci/drivers/nvidia/{vf}"), format!("sys/class/mdev_bus/{vf}")] {
            let _ = fs::remove_file(tree.root().join(link));
        }
        fs::remove_dir_all(&vf_abs)?;
        fs::remove_file(e.path())?;
    }
    fs::write(pf_abs.join("sriov_numvfs"), "0\n")
}

/// The vendor interface's lists: each free VF lists every type that fits
/// beside the GPU's current vGPUs; a VF holding a type lists none.
pub fn refresh_vendor(tree: &Tree, pf: PciAddress, gpu: &SimGpu) -> io::Result<()> {
    let pf_abs = tree.root().join(pf_dir(tree, pf)?.trim_start_matches('/'));
    let cat = known::catalog(&gpu.model).unwrap_or_default();
    let mut vfs = Vec::new();
    for e in fs::read_dir(&pf_abs)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("virtfn") {
            vfs.push(fs::canonicalize(e.path())?);
        }
    }
    let current: Vec<u32> =
        vfs.iter().map(|v| fs::read_to_string(v.join("nvidia/current_vgpu_type")).ok().and_then(|s| parse::count(&s)).unwrap_or(0)).collect();
    let held: Vec<&KnownType> = current.iter().filter(|id| **id != 0).filter_map(|id| cat.iter().find(|t| t.id == *id)).collect();
    let mut list = creatable(cat, &held, gpu);
    if gpu.mig_current == MigModeState::Enabled {
        // MIG-backed types are creatable while a GPU instance of their profile holds no vGPU.
        let busy: Vec<u32> = vfs.iter().filter_map(|v| fs::read_to_string(v.join("nvidia/gpu_instance_id")).ok()?.trim().parse().ok()).collect();
        list = cat.iter().filter(|t| free_gi_for(gpu, t, &busy).is_some()).collect();
    }
    let mut text = String::from("ID    : vGPU Name\n");
    for t in &list {
        text.push_str(&format!("{:<5} : NVIDIA {}-{}\n", t.id, gpu.model, t.suffix));
    }
    for (vf, cur) in vfs.iter().zip(&current) {
        let body = if *cur == 0 { text.as_str() } else { "ID    : vGPU Name\n" };
        fs::write(vf.join("nvidia/creatable_vgpu_types"), body)?;
    }
    Ok(())
}

/// What still fits on a GPU holding `held`, by NVIDIA's rules: time-sliced
/// and MIG-backed never mix; equal-size mode allows one framebuffer size and
/// `max_instances` of it; mixed-size mode allows `max_mixed` per type within
/// the physical framebuffer. MIG-backed types need MIG mode (and a free GPU
/// instance, which the simulated hosts do not have yet).
pub fn creatable<'a>(cat: &'a [KnownType], held: &[&KnownType], gpu: &SimGpu) -> Vec<&'a KnownType> {
    let mig_on = gpu.mig_current == MigModeState::Enabled;
    if mig_on || held.iter().any(|h| h.mig_profile.is_some()) {
        return Vec::new();
    }
    let total_mib = known::total_framebuffer_gb(&gpu.model).map(|g| u64::from(g) * 1024).unwrap_or(u64::MAX);
    let used_mib: u64 = held.iter().map(|h| h.framebuffer_mib).sum();
    cat.iter()
        .filter(|t| t.mig_profile.is_none())
        .filter(|t| {
            let same = held.iter().filter(|h| h.framebuffer_mib == t.framebuffer_mib).count() as u32;
            if gpu.heterogeneous {
                same < t.max_mixed.unwrap_or(t.max_instances) && used_mib + t.framebuffer_mib <= total_mib
            } else {
                held.iter().all(|h| h.framebuffer_mib == t.framebuffer_mib) && same < t.max_instances
            }
        })
        .collect()
}

/// A GPU instance of the type's MIG profile that holds no vGPU (the driver
/// picks one; vgpuctl reads `gpu_instance_id` afterwards).
pub fn free_gi_for(gpu: &SimGpu, t: &KnownType, busy: &[u32]) -> Option<u32> {
    let profile = t.mig_profile?;
    let table = crate::mig::profiles::for_model(if gpu.model == "A100D" { "A100 80GB" } else { &gpu.model })?;
    let pid = crate::mig::profiles::find(&table, profile)?.id;
    gpu.gis.iter().find(|(gi, p, _)| *p == pid && !busy.contains(gi)).map(|(gi, _, _)| *gi)
}
