//! `vgpuctl types`: what can be created where, across both kernel interfaces.

use serde::Serialize;

use crate::ids::{MdevParent, MdevTypeId, PciAddress};
use crate::inventory::Inventory;
use crate::parse::VgpuDescription;

#[derive(Debug, Clone, Serialize)]
pub struct TypesReport {
    pub schema_version: u32,
    /// mdev parents (legacy NVIDIA GPUs/VFs, and any other mdev driver).
    pub mdev: Vec<MdevParentTypes>,
    /// GPUs whose VFs use NVIDIA's vendor-specific VFIO (vGPU 17+).
    pub vendor_vfio: Vec<VfGpuTypes>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MdevParentTypes {
    pub parent: MdevParent,
    /// The physical GPU when the parent is one of its VFs.
    pub gpu: Option<PciAddress>,
    pub types: Vec<MdevTypeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MdevTypeRow {
    pub id: MdevTypeId,
    pub name: Option<String>,
    pub available_instances: Option<u32>,
    pub device_api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgpu: Option<VgpuDescription>,
    pub devices: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct VfGpuTypes {
    pub gpu: PciAddress,
    pub vfs: usize,
    /// VFs that hold no vGPU yet.
    pub free_vfs: usize,
    pub types: Vec<VfTypeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VfTypeRow {
    pub id: u32,
    pub name: String,
    /// How many free VFs list this type as creatable right now.
    pub creatable_on_vfs: usize,
}

pub fn report(inv: &Inventory, only_parent: Option<&MdevParent>) -> TypesReport {
    let vf_owner = |p: &MdevParent| -> Option<PciAddress> {
        let a = p.pci_address()?;
        inv.gpus.iter().find(|g| g.sriov.as_ref().is_some_and(|s| s.vfs.iter().any(|v| v.address == a))).map(|g| g.address)
    };
    let mdev = inv
        .mdev_parents
        .iter()
        .filter(|p| only_parent.is_none_or(|o| o == &p.name))
        .map(|p| MdevParentTypes {
            parent: p.name.clone(),
            gpu: vf_owner(&p.name),
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
    let mut vendor_vfio = Vec::new();
    for g in &inv.gpus {
        if only_parent.is_some_and(|o| o.pci_address() != Some(g.address)) {
            continue;
        }
        let Some(s) = &g.sriov else { continue };
        let vfs: Vec<_> = s.vfs.iter().filter_map(|v| v.vgpu.as_ref()).collect();
        if vfs.is_empty() {
            continue;
        }
        let mut types: Vec<VfTypeRow> = Vec::new();
        let free: Vec<_> = vfs.iter().filter(|v| v.current_type.is_none()).collect();
        for v in &free {
            for t in &v.creatable {
                match types.iter_mut().find(|r| r.id == t.id) {
                    Some(r) => r.creatable_on_vfs += 1,
                    None => types.push(VfTypeRow { id: t.id, name: t.name.clone(), creatable_on_vfs: 1 }),
                }
            }
        }
        vendor_vfio.push(VfGpuTypes { gpu: g.address, vfs: vfs.len(), free_vfs: free.len(), types });
    }
    TypesReport { schema_version: crate::inventory::SCHEMA_VERSION, mdev, vendor_vfio }
}

pub fn render(r: &TypesReport) -> String {
    use crate::cli::table::{opt, Table};
    let mut out = String::new();
    if r.mdev.is_empty() && r.vendor_vfio.is_empty() {
        return "No mdev parents and no vGPU-capable VFs on this host.\n".into();
    }
    // Parents that are VFs of one GPU are shown once per GPU and type: an
    // A100 with 20 VFs would otherwise print 20 identical blocks.
    let (vf_parents, own): (Vec<&MdevParentTypes>, Vec<&MdevParentTypes>) = r.mdev.iter().partition(|p| p.gpu.is_some());
    if !own.is_empty() {
        let mut t = Table::new(&["PARENT", "TYPE", "NAME", "AVAILABLE", "FRAMEBUFFER", "DEVICES"]);
        for p in own {
            for ty in &p.types {
                t.row(vec![
                    p.parent.to_string(),
                    ty.id.to_string(),
                    opt(&ty.name),
                    opt(&ty.available_instances),
                    framebuffer(ty),
                    ty.devices.to_string(),
                ]);
            }
        }
        out.push_str(&t.render());
    }
    if !vf_parents.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut rows: std::collections::BTreeMap<(PciAddress, &MdevTypeId), FoldedType> = Default::default();
        for p in vf_parents {
            let Some(gpu) = p.gpu else { continue };
            for ty in &p.types {
                let e = rows.entry((gpu, &ty.id)).or_insert_with(|| FoldedType {
                    name: opt(&ty.name),
                    framebuffer: framebuffer(ty),
                    ..Default::default()
                });
                e.available_on += u32::from(ty.available_instances.unwrap_or(0) > 0);
                e.vfs += 1;
                e.devices += ty.devices;
            }
        }
        let mut t = Table::new(&["GPU", "TYPE", "NAME", "AVAILABLE_ON", "FRAMEBUFFER", "DEVICES"]);
        for ((gpu, id), f) in rows {
            t.row(vec![gpu.to_string(), id.to_string(), f.name, format!("{}/{} VFs", f.available_on, f.vfs), f.framebuffer, f.devices.to_string()]);
        }
        out.push_str(&t.render());
    }
    if !r.vendor_vfio.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut t = Table::new(&["GPU", "TYPE_ID", "NAME", "CREATABLE_ON", "FREE_VFS"]);
        for g in &r.vendor_vfio {
            if g.types.is_empty() {
                t.row(vec![g.address_string(), "-".into(), "(none creatable)".into(), "0".into(), format!("{}/{}", g.free_vfs, g.vfs)]);
            }
            for ty in &g.types {
                t.row(vec![
                    g.address_string(),
                    ty.id.to_string(),
                    ty.name.clone(),
                    format!("{} VFs", ty.creatable_on_vfs),
                    format!("{}/{}", g.free_vfs, g.vfs),
                ]);
            }
        }
        out.push_str(&t.render());
    }
    out
}

/// One type folded over all VFs of a GPU, for the text view.
#[derive(Default)]
struct FoldedType {
    name: String,
    framebuffer: String,
    available_on: u32,
    vfs: u32,
    devices: usize,
}

fn framebuffer(ty: &MdevTypeRow) -> String {
    ty.vgpu.as_ref().and_then(|v| v.framebuffer_mib).map(|m| format!("{m} MiB")).unwrap_or_else(|| "-".into())
}

impl VfGpuTypes {
    fn address_string(&self) -> String {
        self.gpu.to_string()
    }
}
