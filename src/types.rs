//! `vgpuctl types`: what can be created where. NVIDIA GPUs are shown per
//! GPU across both kernel interfaces (kind, framebuffer, how many more fit,
//! and why not); other mdev parents (e.g. the kernel's sample drivers) per
//! parent, as sysfs lists them.

use serde::Serialize;

use crate::ids::{MdevParent, MdevTypeId};
use crate::inventory::Inventory;
use crate::parse::VgpuDescription;
use crate::table::{opt, Table};
use crate::vgpu::typename::VgpuKind;
use crate::vgpu::view::{GpuView, Interface};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypesReport {
    pub schema_version: u32,
    /// Every NVIDIA GPU (and every GPU that is an mdev parent).
    pub gpus: Vec<GpuView>,
    /// mdev parents that belong to no GPU above (virtual parents such as mbochs).
    pub mdev: Vec<MdevParentTypes>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MdevParentTypes {
    pub parent: MdevParent,
    pub types: Vec<MdevTypeRow>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MdevTypeRow {
    pub id: MdevTypeId,
    pub name: Option<String>,
    pub available_instances: Option<u32>,
    pub device_api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgpu: Option<VgpuDescription>,
    pub devices: usize,
}

/// What `types` reports: every GPU, or only `only_gpu` / `only_parent`.
pub fn report(inv: &Inventory, views: Vec<GpuView>, only_parent: Option<&MdevParent>, only_gpu: Option<crate::ids::PciAddress>) -> TypesReport {
    let gpu_parent = |p: &MdevParent| -> bool {
        p.pci_address().is_some_and(|a| inv.gpus.iter().any(|g| g.address == a || g.sriov.as_ref().is_some_and(|s| s.vfs.iter().any(|v| v.address == a))))
    };
    let mdev = inv
        .mdev_parents
        .iter()
        .filter(|_| only_gpu.is_none())
        .filter(|p| only_parent.is_none_or(|o| o == &p.name))
        .filter(|p| only_parent.is_some() || !gpu_parent(&p.name))
        .map(|p| MdevParentTypes {
            parent: p.name.clone(),
            types: p
                .types
                .iter()
                .map(|t| MdevTypeRow {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    available_instances: t.available_instances,
                    device_api: t.device_api.clone(),
                    vgpu: t.vgpu.clone(),
                    devices: t.devices.len(),
                })
                .collect(),
        })
        .collect();
    let gpus = match (only_parent, only_gpu) {
        (Some(p), _) => views.into_iter().filter(|v| Some(v.gpu) == p.pci_address()).collect(),
        (None, Some(g)) => views.into_iter().filter(|v| v.gpu == g).collect(),
        (None, None) => views,
    };
    TypesReport { schema_version: crate::inventory::SCHEMA_VERSION, gpus, mdev }
}

fn interface_text(v: &GpuView) -> String {
    let i = match v.interface {
        Interface::None => "no vGPU interface",
        Interface::LegacyMdev => "legacy mdev",
        Interface::LegacyMdevVfs => "legacy mdev on VFs",
        Interface::VendorVfio => "vendor-specific VFIO",
    };
    let mut parts = vec![i.to_string()];
    if v.interface != Interface::None {
        parts.push(format!("{}/{} {} free", v.free_slots, v.slots, if v.interface == Interface::LegacyMdev { "parent" } else { "VFs" }));
    }
    if let Some(h) = v.heterogeneous {
        parts.push(format!("mixed-size {}", if h { "on" } else { "off" }));
    }
    if v.mig_enabled() {
        parts.push("MIG on".into());
    }
    if !v.vgpus.is_empty() {
        parts.push(format!("{} vGPU(s)", v.vgpus.len()));
    }
    parts.join(", ")
}

pub fn render(r: &TypesReport) -> String {
    render_to(r, crate::table::width())
}

/// Per GPU: a header line, one row per type (name, id, kind, size, how many
/// more fit) and, for the types that cannot be made now, one note per
/// cause: the reason is said once for all the types it applies to, not on
/// every row.
pub fn render_to(r: &TypesReport, width: Option<usize>) -> String {
    let mut out = String::new();
    for v in &r.gpus {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&crate::table::wrap(&format!("{} {} ({})", v.gpu, v.name.as_deref().unwrap_or(""), interface_text(v)), width, 0, 2));
        if v.types.is_empty() {
            out.push_str(&crate::table::wrap(&crate::vgpu::explain::why_no_types(v), width, 2, 2));
            continue;
        }
        // Causes in order of first appearance, each with a note number.
        let mut causes: Vec<String> = Vec::new();
        let mut t = Table::new(&["TYPE", "ID", "KIND", "FRAMEBUFFER", "CREATABLE"]).indented(2);
        for ty in &v.types {
            let creatable = match ty.creatable {
                0 => {
                    let parsed = ty.name.parse::<crate::vgpu::typename::VgpuTypeName>().ok();
                    let cause = crate::vgpu::explain::why_not_grouped(v, ty, parsed.as_ref());
                    let n = match causes.iter().position(|c| *c == cause) {
                        Some(i) => i + 1,
                        None => {
                            causes.push(cause);
                            causes.len()
                        }
                    };
                    format!("0 [{n}]")
                }
                n => n.to_string(),
            };
            t.row(vec![
                ty.name.clone(),
                opt(&ty.id),
                match ty.kind {
                    Some(VgpuKind::TimeSliced) => "time-sliced".into(),
                    Some(VgpuKind::MigBacked) => format!("MIG {}", ty.mig_profile.as_deref().unwrap_or("")),
                    None => "-".into(),
                },
                ty.framebuffer_mib.map(|m| format!("{} GB", m / 1024)).unwrap_or_else(|| "-".into()),
                creatable,
            ]);
        }
        out.push_str(&t.render_to(width));
        for (i, c) in causes.iter().enumerate() {
            let marker = format!("[{}] ", i + 1);
            let note = crate::table::wrap(&format!("{marker}{c}"), width, 2, 2 + marker.len());
            out.push_str(&note);
        }
    }
    if !r.mdev.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut t = Table::new(&["PARENT", "TYPE", "NAME", "AVAILABLE", "DEVICES"]);
        for p in &r.mdev {
            for ty in &p.types {
                t.row(vec![p.parent.to_string(), ty.id.to_string(), opt(&ty.name), opt(&ty.available_instances), ty.devices.to_string()]);
            }
        }
        out.push_str(&t.render_to(width));
    }
    if out.is_empty() {
        out.push_str("No vGPU-capable GPUs and no mdev parents on this host.\n");
    }
    out
}
