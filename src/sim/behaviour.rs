//! Kernel and NVIDIA-driver semantics for writes into a simulated host.
//!
//! mdev `create` / `remove` behave as the Linux mdev core does (device
//! directory, `mdev_type` and `iommu_group` links, `/sys/bus/mdev/devices`
//! entry, a new IOMMU group and its /dev/vfio node) and the NVIDIA vGPU
//! manager's rules decide `available_instances` afterwards:
//! - equal-size mode: all time-sliced vGPUs on one physical GPU share one
//!   framebuffer size; types of other sizes drop to 0 ([AIE5]);
//! - SR-IOV legacy mode: one mdev per VF ([AIE5]);
//! - at most `max_instance` vGPUs of a size per GPU ([AIE6/7]);
//! - MIG-backed types need MIG mode (not enabled in the simulated hosts yet).
//!
//! Errnos are the kernel's: malformed UUID → EINVAL, UUID in use → EEXIST,
//! nothing available → EUSERS (the mdev core's answer when a driver reports
//! no available instances), removing a device a VM holds → EBUSY. A device is
//! "held by a VM" in a simulated tree when its directory has a `.sim-in-use`
//! file (tests create it).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::state::{SimGpu, SimInterface, SimState};
use super::tree::{relative, Tree};
use crate::host::{Host, WriteBehaviour};
use crate::ids::{MdevUuid, PciAddress};
use crate::parse;

#[derive(Debug, Default)]
pub struct SimBehaviour;

pub const IN_USE_MARKER: &str = ".sim-in-use";
/// The driver a simulated PCI function binds to when probed without an override.
pub const DEFAULT_DRIVER: &str = ".sim-default-driver";

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl WriteBehaviour for SimBehaviour {
    fn write(&self, host: &Host, path: &str, value: &str) -> Option<io::Result<()>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["sys", "class", "mdev_bus", parent, "mdev_supported_types", ty, "create"] => Some(mdev_create(host, parent, ty, value)),
            ["sys", "bus", "mdev", "devices", uuid, "remove"] => Some(mdev_remove(host, uuid, value)),
            ["sys", "bus", "pci", "devices", dev, "sriov_numvfs"] => Some(sriov_numvfs(host, dev, value)),
            ["sys", "bus", "pci", "devices", dev, "driver", "unbind"] => Some(unbind(host, dev, value)),
            ["sys", "bus", "pci", "devices", dev, "driver_override"] => Some(driver_override(host, dev, value)),
            ["sys", "bus", "pci", "drivers_probe"] => Some(probe(host, value.trim(), None)),
            ["sys", "bus", "pci", "drivers", drv, "bind"] => Some(probe(host, value.trim(), Some(drv))),
            ["sys", "bus", "pci", "devices", dev, "nvidia", "current_vgpu_type"] => Some(current_vgpu_type(host, dev, value)),
            _ => None,
        }
    }
}

fn abs(host: &Host, p: &str) -> io::Result<PathBuf> {
    host.path(p).map_err(|_| errno(nix::errno::Errno::EINVAL))
}

fn link(from_dir_link: &Path, target: &Path) -> io::Result<()> {
    let parent = from_dir_link.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent)?;
    std::os::unix::fs::symlink(relative(parent, target), from_dir_link)
}

fn mdev_create(host: &Host, parent: &str, ty: &str, value: &str) -> io::Result<()> {
    // The kernel's uuid_parse: 36 characters, case-insensitive, trailing newline allowed.
    let uuid: MdevUuid = value.trim_end_matches('\n').parse().map_err(|_| errno(nix::errno::Errno::EINVAL))?;
    let type_dir = fs::canonicalize(abs(host, &format!("/sys/class/mdev_bus/{parent}/mdev_supported_types/{ty}"))?)?;
    let parent_dir = fs::canonicalize(abs(host, &format!("/sys/class/mdev_bus/{parent}"))?)?;
    let bus_link = abs(host, &format!("/sys/bus/mdev/devices/{uuid}"))?;
    if bus_link.symlink_metadata().is_ok() {
        return Err(errno(nix::errno::Errno::EEXIST));
    }
    let available = fs::read_to_string(type_dir.join("available_instances")).ok().and_then(|s| parse::count(&s)).unwrap_or(0);
    if available == 0 {
        return Err(errno(nix::errno::Errno::EUSERS));
    }
    let dev = parent_dir.join(uuid.to_string());
    fs::create_dir(&dev)?;
    fs::write(dev.join("remove"), "")?;
    // NVIDIA vGPUs carry nvidia/vgpu_params and nvidia/vm_name ([AIE5]).
    if fs::read_to_string(type_dir.join("name")).is_ok_and(|n| n.starts_with("GRID ") || n.starts_with("NVIDIA ")) {
        fs::create_dir(dev.join("nvidia"))?;
        fs::write(dev.join("nvidia/vgpu_params"), "\n")?;
        fs::write(dev.join("nvidia/vm_name"), "\n")?;
    }
    link(&dev.join("mdev_type"), &type_dir)?;
    let groups = abs(host, "/sys/kernel/iommu_groups")?;
    fs::create_dir_all(&groups)?;
    let next = fs::read_dir(&groups)?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).max().map_or(0, |m| m + 1);
    let gdir = groups.join(next.to_string());
    link(&gdir.join("devices").join(uuid.to_string()), &dev)?;
    link(&dev.join("iommu_group"), &gdir)?;
    let vfio = abs(host, &format!("/dev/vfio/{next}"))?;
    fs::create_dir_all(vfio.parent().unwrap_or(Path::new("/")))?;
    fs::write(vfio, "")?;
    link(&type_dir.join("devices").join(uuid.to_string()), &dev)?;
    link(&bus_link, &dev)?;
    recompute(host, parent)
}

fn mdev_remove(host: &Host, uuid: &str, value: &str) -> io::Result<()> {
    if value.trim() != "1" {
        return Err(errno(nix::errno::Errno::EINVAL));
    }
    let bus_link = abs(host, &format!("/sys/bus/mdev/devices/{uuid}"))?;
    let dev = fs::canonicalize(&bus_link)?;
    if dev.join(IN_USE_MARKER).exists() {
        return Err(errno(nix::errno::Errno::EBUSY));
    }
    let parent = dev.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if let Ok(type_dir) = fs::canonicalize(dev.join("mdev_type")) {
        let _ = fs::remove_file(type_dir.join("devices").join(uuid));
    }
    if let Ok(gdir) = fs::canonicalize(dev.join("iommu_group")) {
        if let Some(g) = gdir.file_name().and_then(|n| n.to_str()) {
            let _ = fs::remove_file(abs(host, &format!("/dev/vfio/{g}"))?);
        }
        let _ = fs::remove_dir_all(&gdir);
    }
    fs::remove_file(&bus_link)?;
    fs::remove_dir_all(&dev)?;
    recompute(host, &parent)
}

fn state_of(host: &Host, pf: PciAddress) -> io::Result<(SimState, SimGpu)> {
    let state = SimState::load(host)?;
    let gpu = state.gpus.get(&pf).cloned().ok_or_else(|| errno(nix::errno::Errno::ENODEV))?;
    Ok((state, gpu))
}

fn pci_dir(host: &Host, dev: &str) -> io::Result<PathBuf> {
    let a: PciAddress = dev.parse().map_err(|_| errno(nix::errno::Errno::ENODEV))?;
    fs::canonicalize(abs(host, &format!("/sys/bus/pci/devices/{a}"))?)
}

fn group_of(dir: &Path) -> Option<String> {
    fs::read_link(dir.join("iommu_group")).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// `echo <bdf> > …/driver/unbind`: the function loses its driver.
fn unbind(host: &Host, dev: &str, value: &str) -> io::Result<()> {
    if value.trim() != dev {
        return Err(errno(nix::errno::Errno::ENODEV));
    }
    let dir = pci_dir(host, dev)?;
    let drv = fs::read_link(dir.join("driver")).map_err(|_| errno(nix::errno::Errno::ENODEV))?;
    let name = drv.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if dir.join(IN_USE_MARKER).exists() {
        return Err(errno(nix::errno::Errno::EBUSY));
    }
    fs::remove_file(dir.join("driver"))?;
    let _ = fs::remove_file(abs(host, &format!("/sys/bus/pci/drivers/{name}/{dev}"))?);
    if name == "vfio-pci" {
        if let Some(g) = group_of(&dir) {
            let _ = fs::remove_file(abs(host, &format!("/dev/vfio/{g}"))?);
        }
    }
    Ok(())
}

/// `driver_override`: an empty write clears it (reads back `(null)`).
fn driver_override(host: &Host, dev: &str, value: &str) -> io::Result<()> {
    let dir = pci_dir(host, dev)?;
    let v = value.trim();
    fs::write(dir.join("driver_override"), if v.is_empty() { "(null)\n".to_string() } else { format!("{v}\n") })
}

/// `drivers_probe` (or a driver's `bind`): binds an unbound function to its
/// override, or to its own driver.
fn probe(host: &Host, dev: &str, explicit: Option<&str>) -> io::Result<()> {
    let dir = pci_dir(host, dev)?;
    if dir.join("driver").symlink_metadata().is_ok() {
        return if explicit.is_some() { Err(errno(nix::errno::Errno::EBUSY)) } else { Ok(()) };
    }
    let over = fs::read_to_string(dir.join("driver_override")).unwrap_or_default();
    let target = match (explicit, parse::driver_override(&over)) {
        (Some(d), _) => d.to_string(),
        (None, Some(o)) => o,
        (None, None) => match fs::read_to_string(dir.join(DEFAULT_DRIVER)) {
            Ok(d) => d.trim().to_string(),
            Err(_) => return Ok(()), // no driver claims it
        },
    };
    let ddir = abs(host, &format!("/sys/bus/pci/drivers/{target}"))?;
    if !ddir.is_dir() {
        return Err(errno(nix::errno::Errno::ENODEV));
    }
    link(&dir.join("driver"), &ddir)?;
    link(&ddir.join(dev), &dir)?;
    if target == "vfio-pci" {
        if let Some(g) = group_of(&dir) {
            fs::write(abs(host, &format!("/dev/vfio/{g}"))?, "")?;
        }
    }
    Ok(())
}

/// The kernel's `sriov_numvfs_store`: more than total → ERANGE; changing a
/// non-zero count to another non-zero count → EBUSY; the same count → no-op.
fn sriov_numvfs(host: &Host, dev: &str, value: &str) -> io::Result<()> {
    let pf: PciAddress = dev.parse().map_err(|_| errno(nix::errno::Errno::ENODEV))?;
    let n = parse::count(value.trim()).ok_or_else(|| errno(nix::errno::Errno::EINVAL))?;
    let read = |name: &str| -> io::Result<u32> {
        let p = abs(host, &format!("/sys/bus/pci/devices/{pf}/{name}"))?;
        fs::read_to_string(p).ok().and_then(|s| parse::count(&s)).ok_or_else(|| errno(nix::errno::Errno::ENOENT))
    };
    let total = read("sriov_totalvfs")?;
    let current = read("sriov_numvfs")?;
    if n > total {
        return Err(errno(nix::errno::Errno::ERANGE));
    }
    if n == current {
        return Ok(());
    }
    if current != 0 && n != 0 {
        return Err(errno(nix::errno::Errno::EBUSY));
    }
    let (_, gpu) = state_of(host, pf)?;
    let tree = Tree::open(host.root())?;
    if n == 0 {
        super::vfs::remove_vfs(&tree, pf)
    } else {
        super::vfs::add_vfs(&tree, pf, &gpu, n)
    }
}

/// NVIDIA's vendor-specific VFIO: a type id when empty, `0` to clear. A type
/// when one is set, or 0 when none is, is EPERM; a type the VF does not list
/// as creatable is EINVAL; clearing a VF a VM holds is EBUSY.
fn current_vgpu_type(host: &Host, dev: &str, value: &str) -> io::Result<()> {
    let vf: PciAddress = dev.parse().map_err(|_| errno(nix::errno::Errno::ENODEV))?;
    let vf_dir = fs::canonicalize(abs(host, &format!("/sys/bus/pci/devices/{vf}"))?)?;
    let file = vf_dir.join("nvidia/current_vgpu_type");
    let current = fs::read_to_string(&file).ok().and_then(|s| parse::count(&s)).unwrap_or(0);
    let wanted = parse::count(value.trim()).ok_or_else(|| errno(nix::errno::Errno::EINVAL))?;
    let pf_name = fs::canonicalize(vf_dir.join("physfn"))?
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<PciAddress>().ok())
        .ok_or_else(|| errno(nix::errno::Errno::ENODEV))?;
    if wanted == 0 {
        if current == 0 {
            return Err(errno(nix::errno::Errno::EPERM));
        }
        if vf_dir.join(IN_USE_MARKER).exists() {
            return Err(errno(nix::errno::Errno::EBUSY));
        }
    } else {
        if current != 0 {
            return Err(errno(nix::errno::Errno::EPERM));
        }
        let listed = fs::read_to_string(vf_dir.join("nvidia/creatable_vgpu_types")).unwrap_or_default();
        let (types, _) = parse::creatable_vgpu_types(&listed);
        if !types.iter().any(|t| t.id == wanted) {
            return Err(errno(nix::errno::Errno::EINVAL));
        }
    }
    let (_, gpu) = state_of(host, pf_name)?;
    // A MIG-backed type lands on a free GPU instance of its profile, which the
    // VF then names in gpu_instance_id / placement_id.
    let gi_file = vf_dir.join("nvidia/gpu_instance_id");
    if wanted == 0 {
        let _ = fs::remove_file(&gi_file);
        let _ = fs::remove_file(vf_dir.join("nvidia/placement_id"));
    } else if let Some(t) = crate::nvidia::known::catalog(&gpu.model).unwrap_or_default().iter().find(|t| t.id == wanted && t.mig_profile.is_some()) {
        let pf_dir = fs::canonicalize(vf_dir.join("physfn"))?;
        let mut busy = Vec::new();
        for e in fs::read_dir(&pf_dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("virtfn") {
                if let Ok(g) = fs::read_to_string(e.path().join("nvidia/gpu_instance_id")) {
                    busy.extend(g.trim().parse::<u32>().ok());
                }
            }
        }
        let gi = super::vfs::free_gi_for(&gpu, t, &busy).ok_or_else(|| errno(nix::errno::Errno::EINVAL))?;
        let start = gpu.gis.iter().find(|(g, _, _)| *g == gi).map(|(_, _, s)| *s).unwrap_or(0);
        fs::write(&gi_file, format!("{gi}\n"))?;
        fs::write(vf_dir.join("nvidia/placement_id"), format!("{start}\n"))?;
    }
    fs::write(&file, format!("{wanted}\n"))?;
    super::vfs::refresh_vendor(&Tree::open(host.root())?, pf_name, &gpu)
}

/// Recomputes what a GPU offers after a change of driver state (mixed-size
/// mode, MIG mode).
pub fn refresh_gpu(host: &Host, gpu: PciAddress) -> io::Result<()> {
    let (_, g) = state_of(host, gpu)?;
    match g.interface {
        SimInterface::VendorVfio => super::vfs::refresh_vendor(&Tree::open(host.root())?, gpu, &g),
        SimInterface::LegacyMdev => {
            let parent = gpu.to_string();
            if host.exists(&format!("/sys/class/mdev_bus/{parent}")) {
                return recompute(host, &parent);
            }
            // SR-IOV legacy: recompute through the first VF parent.
            let first = fs::read_link(abs(host, &format!("/sys/bus/pci/devices/{gpu}/virtfn0"))?)
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            match first {
                Some(vf) => recompute(host, &vf),
                None => Ok(()),
            }
        }
        SimInterface::None => Ok(()),
    }
}

/// One vGPU type as its sysfs files describe it.
struct TypeFacts {
    dir: PathBuf,
    framebuffer_mib: u64,
    max_instance: u32,
    mig_backed: bool,
    devices: u32,
}

/// NVIDIA MIG-backed type names carry the slice count: `A100D-1-10C`.
fn is_mig_backed(name: &str) -> bool {
    name.rsplit(' ').next().is_some_and(|n| n.split('-').count() >= 3)
}

fn type_facts(parent_dir: &Path) -> io::Result<Vec<TypeFacts>> {
    let mut out = Vec::new();
    let types = parent_dir.join("mdev_supported_types");
    for e in fs::read_dir(&types)? {
        let dir = e?.path();
        let desc = parse::vgpu_description(&fs::read_to_string(dir.join("description")).unwrap_or_default());
        let name = fs::read_to_string(dir.join("name")).unwrap_or_default();
        let devices = fs::read_dir(dir.join("devices")).map(|d| d.count() as u32).unwrap_or(0);
        out.push(TypeFacts {
            framebuffer_mib: desc.framebuffer_mib.unwrap_or(0),
            max_instance: desc.max_instance.unwrap_or(1),
            mig_backed: is_mig_backed(name.trim()),
            devices,
            dir,
        });
    }
    Ok(out)
}

/// Recomputes `available_instances` for every mdev parent of the physical
/// GPU that `parent` belongs to (the GPU itself, or all VFs of its PF).
fn recompute(host: &Host, parent: &str) -> io::Result<()> {
    let parent_dir = fs::canonicalize(abs(host, &format!("/sys/class/mdev_bus/{parent}"))?)?;
    let Ok(pf_dir) = fs::canonicalize(parent_dir.join("physfn")) else {
        // Not a VF: a non-SR-IOV GPU (NVIDIA) or a virtual parent. Only GPUs
        // with NVIDIA-style descriptions get vGPU rules.
        return recompute_parents(&[parent_dir], false);
    };
    let mut vfs = Vec::new();
    for e in fs::read_dir(&pf_dir)? {
        let e = e?;
        if e.file_name().to_str().is_some_and(|n| n.starts_with("virtfn")) {
            let vf = fs::canonicalize(e.path())?;
            if vf.join("mdev_supported_types").is_dir() {
                vfs.push(vf);
            }
        }
    }
    recompute_parents(&vfs, true)
}

fn recompute_parents(parents: &[PathBuf], one_per_parent: bool) -> io::Result<()> {
    let facts: Vec<(PathBuf, Vec<TypeFacts>)> = parents.iter().map(|p| type_facts(p).map(|f| (p.clone(), f))).collect::<io::Result<_>>()?;
    if facts.iter().all(|(_, f)| f.iter().all(|t| t.framebuffer_mib == 0)) {
        return Ok(()); // not an NVIDIA-style parent: nothing to model
    }
    // Framebuffer sizes in use on the physical GPU, with their counts.
    let mut sizes: HashMap<u64, u32> = HashMap::new();
    for (_, types) in &facts {
        for t in types.iter().filter(|t| t.devices > 0) {
            *sizes.entry(t.framebuffer_mib).or_default() += t.devices;
        }
    }
    for (_, types) in &facts {
        let parent_busy = types.iter().any(|t| t.devices > 0);
        for t in types {
            let used_same = sizes.get(&t.framebuffer_mib).copied().unwrap_or(0);
            let other_size = sizes.keys().any(|s| *s != t.framebuffer_mib);
            let avail = if t.mig_backed || other_size || used_same >= t.max_instance {
                0
            } else if one_per_parent {
                u32::from(!parent_busy)
            } else {
                t.max_instance - used_same
            };
            fs::write(t.dir.join("available_instances"), format!("{avail}\n"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mig_backed_names() {
        assert!(is_mig_backed("GRID A100D-1-10C"));
        assert!(is_mig_backed("GRID A100D-1-10CME"));
        assert!(!is_mig_backed("GRID A100D-10C"));
        assert!(!is_mig_backed("GRID T4-4Q"));
    }
}
