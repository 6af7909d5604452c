//! The built-in simulated hosts.

use std::collections::BTreeMap;
use std::io;

use super::state::{SimGpu, SimInterface, SimState};
use super::tree::{PciFn, Tree};
use super::vfs;
use crate::ids::PciAddress;
use crate::parse::MigModeState;

pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    build: fn(&Tree) -> io::Result<SimState>,
}

pub const PROFILES: &[Profile] = &[
    Profile {
        name: "h100x8-vfio",
        summary: "8x H100 80GB HBM3, vGPU 17+ vendor-specific VFIO, as after boot: 32 VFs each once enabled (vgpuctl sriov enable all)",
        build: h100x8_vfio,
    },
    Profile {
        name: "a100x4-mdev",
        summary: "4x A100 80GB PCIe, legacy mdev on SR-IOV VFs: 20 VFs each an mdev parent with nvidia-NNN types",
        build: a100x4_mdev,
    },
    Profile { name: "t4x2-mdev", summary: "2x Tesla T4 16GB, legacy mdev on the GPU itself (no SR-IOV): equal-size time-sliced vGPUs", build: t4x2_mdev },
    Profile {
        name: "passthrough",
        summary: "4 GPUs for full passthrough: 3x L40S on vfio-pci, an RTX A6000 + HDMI audio as the host's boot VGA",
        build: passthrough,
    },
];

pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

impl Profile {
    pub fn build(&self, tree: &Tree) -> io::Result<SimState> {
        // What a host with the vfio and mdev modules loaded always has.
        tree.mkdir("/sys/bus/mdev/devices")?;
        tree.mkdir("/sys/bus/pci/drivers/vfio-pci")?;
        tree.write("/dev/vfio/vfio", "")?;
        let mut state = (self.build)(tree)?;
        state.profile = self.name.to_string();
        Ok(state)
    }
}

const DRIVER_VGPU: &str =
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module for vGPU  580.95.02  Release Build  (sim@vgpuctl)\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";

fn addr(bus: u8, dev: u8, func: u8) -> PciAddress {
    PciAddress { domain: 0, bus, device: dev, function: func }
}

/// A PCIe root port at `<bus-1>:01.0` with the GPU behind it, each in its own group.
fn root_port_and_fn<'a>(tree: &Tree, gpu: &PciFn<'a>) -> io::Result<String> {
    let port = addr(gpu.address.bus.wrapping_sub(1), 1, 0);
    let port_path = format!("pci0000:{:02x}/{port}", port.bus);
    tree.pci(&PciFn {
        address: port,
        devpath: port_path.clone(),
        vendor: 0x8086,
        device: 0x352a,
        subsystem: (0x8086, 0x0000),
        class: 0x060400,
        driver: Some("pcieport"),
        boot_vga: None,
        numa_node: gpu.numa_node,
        iommu_group: Some(tree.next_group()),
    })?;
    let group = tree.next_group();
    tree.pci(&PciFn { devpath: format!("{port_path}/{}", gpu.address), iommu_group: Some(group), ..*gpu })
}

/// The server's BMC display (ASPEED AST2600): the boot VGA of almost every
/// GPU server, and the device vgpuctl must never give away.
fn bmc_vga(tree: &Tree) -> io::Result<()> {
    let bridge = addr(0x02, 0, 0);
    let vga = addr(0x03, 0, 0);
    let g = tree.next_group();
    tree.pci(&PciFn {
        address: bridge,
        devpath: format!("pci0000:00/0000:00:1c.0/{bridge}"),
        vendor: 0x1a03,
        device: 0x1150,
        subsystem: (0x1a03, 0x1150),
        class: 0x060400,
        driver: None,
        boot_vga: None,
        numa_node: 0,
        iommu_group: Some(g),
    })?;
    tree.pci(&PciFn {
        address: vga,
        devpath: format!("pci0000:00/0000:00:1c.0/{bridge}/{vga}"),
        vendor: 0x1a03,
        device: 0x2000,
        subsystem: (0x1a03, 0x2000),
        class: 0x030000,
        driver: Some("ast"),
        boot_vga: Some(true),
        numa_node: 0,
        iommu_group: Some(g),
    })?;
    Ok(())
}

struct NvidiaGpuSpec {
    device: u32,
    subsystem: u32,
    total_vfs: u32,
    model: &'static str,
}

fn nvidia_pf(tree: &Tree, pf: PciAddress, numa: i32, spec: &NvidiaGpuSpec) -> io::Result<String> {
    let dir = root_port_and_fn(
        tree,
        &PciFn {
            address: pf,
            devpath: String::new(),
            vendor: 0x10de,
            device: spec.device,
            subsystem: (0x10de, spec.subsystem),
            class: 0x030200,
            driver: Some("nvidia"),
            boot_vga: Some(false),
            numa_node: numa,
            iommu_group: None,
        },
    )?;
    tree.write(&format!("{dir}/sriov_totalvfs"), &format!("{}\n", spec.total_vfs))?;
    tree.write(&format!("{dir}/sriov_numvfs"), "0\n")?;
    tree.write(&format!("{dir}/sriov_offset"), "4\n")?;
    tree.write(&format!("{dir}/sriov_stride"), "1\n")?;
    Ok(dir)
}

/// The H100 host as it is after boot: vGPU manager loaded, VFs not enabled
/// yet (`vgpuctl sriov enable all` does that).
fn h100x8_vfio(tree: &Tree) -> io::Result<SimState> {
    let spec = NvidiaGpuSpec { device: 0x2330, subsystem: 0x16c1, total_vfs: 32, model: "H100" };
    bmc_vga(tree)?;
    tree.write("/proc/driver/nvidia/version", DRIVER_VGPU)?;
    let mut gpus = BTreeMap::new();
    for (i, bus) in [0x18u8, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb].into_iter().enumerate() {
        let pf = addr(bus, 0, 0);
        nvidia_pf(tree, pf, if i < 4 { 0 } else { 1 }, &spec)?;
        gpus.insert(pf, SimGpu::nvidia(spec.model, SimInterface::VendorVfio, MigModeState::Disabled));
    }
    Ok(SimState::new(gpus))
}

/// The A100 host after `sriov-manage -e ALL`: every VF an mdev parent.
fn a100x4_mdev(tree: &Tree) -> io::Result<SimState> {
    let spec = NvidiaGpuSpec { device: 0x20b5, subsystem: 0x1533, total_vfs: 20, model: "A100D" };
    bmc_vga(tree)?;
    tree.write("/proc/driver/nvidia/version", DRIVER_VGPU)?;
    let mut gpus = BTreeMap::new();
    for (i, bus) in [0x17u8, 0x65, 0xca, 0xe3].into_iter().enumerate() {
        let pf = addr(bus, 0, 0);
        nvidia_pf(tree, pf, if i < 2 { 0 } else { 1 }, &spec)?;
        let gpu = SimGpu::nvidia(spec.model, SimInterface::LegacyMdev, MigModeState::Disabled);
        vfs::add_vfs(tree, pf, &gpu, spec.total_vfs)?;
        gpus.insert(pf, gpu);
    }
    Ok(SimState::new(gpus))
}

fn t4x2_mdev(tree: &Tree) -> io::Result<SimState> {
    bmc_vga(tree)?;
    tree.write("/proc/driver/nvidia/version", DRIVER_VGPU)?;
    let mut gpus = BTreeMap::new();
    for (i, bus) in [0x3bu8, 0xd8].into_iter().enumerate() {
        let gpu = addr(bus, 0, 0);
        let dir = root_port_and_fn(
            tree,
            &PciFn {
                address: gpu,
                devpath: String::new(),
                vendor: 0x10de,
                device: 0x1eb8,
                subsystem: (0x10de, 0x12a2),
                class: 0x030200,
                driver: Some("nvidia"),
                boot_vga: Some(false),
                numa_node: i as i32,
                iommu_group: None,
            },
        )?;
        tree.link(&format!("/sys/class/mdev_bus/{gpu}"), &dir)?;
        vfs::legacy_types(tree, &dir, "T4", |t| t.max_instances)?;
        gpus.insert(gpu, SimGpu::nvidia("T4", SimInterface::LegacyMdev, MigModeState::NotSupported));
    }
    Ok(SimState::new(gpus))
}

fn passthrough(tree: &Tree) -> io::Result<SimState> {
    let mut gpus = BTreeMap::new();
    // The host's own display: an RTX A6000 with its HDMI audio function, boot VGA.
    let a6000 = addr(0x01, 0, 0);
    let g = tree.next_group();
    let gfx = PciFn {
        address: a6000,
        devpath: format!("pci0000:00/0000:00:01.0/{a6000}"),
        vendor: 0x10de,
        device: 0x2230,
        subsystem: (0x10de, 0x1459),
        class: 0x030000,
        driver: Some("nvidia"),
        boot_vga: Some(true),
        numa_node: 0,
        iommu_group: Some(g),
    };
    tree.pci(&gfx)?;
    let audio = addr(0x01, 0, 1);
    tree.pci(&PciFn {
        address: audio,
        devpath: format!("pci0000:00/0000:00:01.0/{audio}"),
        device: 0x1aef,
        class: 0x040300,
        driver: Some("snd_hda_intel"),
        boot_vga: None,
        ..gfx
    })?;
    tree.write("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (sim@vgpuctl)\n")?;
    gpus.insert(a6000, SimGpu::nvidia("RTX A6000", SimInterface::None, MigModeState::NotSupported));
    for (i, bus) in [0x41u8, 0x81, 0xc1].into_iter().enumerate() {
        let a = addr(bus, 0, 0);
        let numa = if i == 0 { 0 } else { 1 };
        root_port_and_fn(
            tree,
            &PciFn {
                address: a,
                devpath: String::new(),
                vendor: 0x10de,
                device: 0x26b9,
                subsystem: (0x10de, 0x1851),
                class: 0x030200,
                driver: Some("vfio-pci"),
                boot_vga: Some(false),
                numa_node: numa,
                iommu_group: None,
            },
        )?;
        gpus.insert(a, SimGpu::nvidia("L40S", SimInterface::None, MigModeState::NotSupported));
    }
    // A GPU behind a switch without ACS, sharing its group with an NVMe drive
    // on the host's own driver: the non-viable group an admin must be told about.
    let shared = tree.next_group();
    let l4 = addr(0xe2, 0, 0);
    let nvme = addr(0xe3, 0, 0);
    let base = PciFn {
        address: l4,
        devpath: format!("pci0000:e0/0000:e0:01.0/0000:e1:00.0/{l4}"),
        vendor: 0x10de,
        device: 0x27b8,
        subsystem: (0x10de, 0x16ca),
        class: 0x030200,
        driver: Some("vfio-pci"),
        boot_vga: Some(false),
        numa_node: 1,
        iommu_group: Some(shared),
    };
    tree.pci(&base)?;
    tree.pci(&PciFn {
        address: nvme,
        devpath: format!("pci0000:e0/0000:e0:01.0/0000:e1:01.0/{nvme}"),
        vendor: 0x144d,
        device: 0xa80a,
        subsystem: (0x144d, 0xa801),
        class: 0x010802,
        driver: Some("nvme"),
        boot_vga: None,
        ..base
    })?;
    gpus.insert(l4, SimGpu::nvidia("L4", SimInterface::None, MigModeState::NotSupported));
    Ok(SimState::new(gpus))
}
