//! The opt-in deep check: open the device through VFIO (a type1 container,
//! no KVM) and report its regions and interrupts. Needs root, a viable group
//! bound to vfio-pci, and the real /dev/vfio (not relocatable).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::ids::PciAddress;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Region {
    pub index: u32,
    pub size: u64,
    pub flags: u32,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Irq {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Probe {
    pub address: PciAddress,
    pub regions: Vec<Region>,
    pub irqs: Vec<Irq>,
    pub max_interrupts: u32,
}

/// VFIO_PCI_NUM_REGIONS and VFIO_PCI_NUM_IRQS.
const REGIONS: u32 = 9;
const IRQS: u32 = 5;

pub fn probe(addr: PciAddress) -> Result<Probe, String> {
    let path = format!("/sys/bus/pci/devices/{addr}");
    // vfio-ioctls may panic in Drop if the device vanishes underneath it.
    std::panic::catch_unwind(|| -> Result<Probe, String> {
        let container = vfio_ioctls::VfioContainer::new(None).map_err(|e| format!("cannot open /dev/vfio/vfio: {e}"))?;
        let device = vfio_ioctls::VfioDevice::new(Path::new(&path), Arc::new(container), false)
            .map_err(|e| format!("cannot open {addr} through VFIO: {e} (is it bound to vfio-pci and its group viable?)"))?;
        let regions =
            (0..REGIONS).map(|i| Region { index: i, size: device.get_region_size(i), flags: device.get_region_flags(i) }).filter(|r| r.size > 0).collect();
        let irqs = (0..IRQS).filter_map(|i| device.get_irq_info(i).map(|q| Irq { index: i, count: q.count })).filter(|q| q.count > 0).collect();
        Ok(Probe { address: addr, regions, irqs, max_interrupts: device.max_interrupts() })
    })
    .unwrap_or_else(|_| Err(format!("the VFIO probe of {addr} failed unexpectedly")))
}
