//! Marketing names for NVIDIA device ids, so `list` says "H100 80GB HBM3"
//! instead of 0x2330. Ids come from the PCI ID repository; unknown ids simply
//! have no name (nvidia-smi, when present, is the authority).

const NVIDIA_MODELS: &[(u32, &str)] = &[
    (0x1db4, "Tesla V100-PCIE-16GB"),
    (0x1db6, "Tesla V100-PCIE-32GB"),
    (0x1eb8, "Tesla T4"),
    (0x20b0, "A100-SXM4-40GB"),
    (0x20b2, "A100-SXM4-80GB"),
    (0x20b5, "A100 80GB PCIe"),
    (0x20b7, "A30"),
    (0x20f1, "A100-PCIE-40GB"),
    (0x2236, "A10"),
    (0x2237, "A10G"),
    (0x25b6, "A16"),
    (0x2230, "RTX A6000"),
    (0x2321, "H100 NVL"),
    (0x2322, "H800 PCIe"),
    (0x2324, "H800"),
    (0x2330, "H100 80GB HBM3"),
    (0x2331, "H100 PCIe"),
    (0x2335, "H200"),
    (0x233b, "H200 NVL"),
    (0x26b5, "L40"),
    (0x26b9, "L40S"),
    (0x27b8, "L4"),
];

pub fn nvidia_model_name(device_id: u32) -> Option<&'static str> {
    NVIDIA_MODELS.iter().find(|(id, _)| *id == device_id).map(|(_, n)| *n)
}

const VENDORS: &[(u32, &str)] =
    &[(0x10de, "NVIDIA"), (0x1002, "AMD"), (0x102b, "Matrox"), (0x1234, "QEMU"), (0x1a03, "ASPEED"), (0x1af4, "Red Hat"), (0x8086, "Intel")];

pub fn vendor_name(vendor_id: u32) -> Option<&'static str> {
    VENDORS.iter().find(|(id, _)| *id == vendor_id).map(|(_, n)| *n)
}

/// The GPU part of vGPU type names for a device id (`H100-10C` on 0x2330),
/// for GPUs whose VFs list no type at the moment (all full, or MIG mode on
/// without GPU instances).
pub fn vgpu_model(device_id: u32) -> Option<&'static str> {
    match device_id {
        0x2330 | 0x2331 => Some("H100"),
        0x20b5 | 0x20b2 => Some("A100D"),
        0x1eb8 => Some("T4"),
        0x26b9 => Some("L40S"),
        _ => None,
    }
}
