//! Full passthrough: a whole GPU (and the other functions of its slot) moved
//! to vfio-pci and back, with the IOMMU group checks that decide whether a
//! guest may have it.

pub mod passthrough;
pub mod probe;
