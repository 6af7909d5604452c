//! One view of every GPU's vGPU state across both NVIDIA kernel interfaces:
//! which interface it uses, the vGPUs it holds, and for every type how many
//! more can be created now, or why not.

use std::collections::BTreeMap;

use serde::Serialize;

use super::known;
use super::typename::{VgpuKind, VgpuTypeName};
use crate::ids::{MdevParent, MdevTypeId, MdevUuid, PciAddress};
use crate::inventory::{Gpu, Inventory, MigMode};
use crate::parse::MigModeState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interface {
    /// No vGPU interface (passthrough GPU, or VFs not enabled yet).
    None,
    /// Legacy mdev types on the GPU itself (no SR-IOV).
    LegacyMdev,
    /// Legacy mdev types on each SR-IOV VF; one mdev per VF.
    LegacyMdevVfs,
    /// vGPU 17+: a type id written to each VF's `nvidia/current_vgpu_type`.
    VendorVfio,
}

/// Where a vGPU lives or can be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Slot {
    Vf { vf: PciAddress },
    Mdev { parent: MdevParent },
}

/// A type's id as the kernel names it. In JSON always a string (one type
/// per field): `"1210"` for vendor VFIO, `"nvidia-709"` for mdev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRef {
    /// The id written to `current_vgpu_type`.
    VendorId(u32),
    /// The mdev type directory.
    Mdev(MdevTypeId),
}

impl std::fmt::Display for TypeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeRef::VendorId(id) => write!(f, "{id}"),
            TypeRef::Mdev(t) => write!(f, "{t}"),
        }
    }
}

impl Serialize for TypeRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

crate::ids::string_schema!(
    TypeRef,
    "TypeRef",
    "A vGPU type's id: the number written to current_vgpu_type (\"1210\", vendor-specific VFIO) or the mdev type (\"nvidia-709\")"
);

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ActiveVgpu {
    /// The VF (vendor VFIO) or the mdev UUID.
    pub vf: Option<PciAddress>,
    pub uuid: Option<MdevUuid>,
    pub parent: Option<MdevParent>,
    pub type_name: Option<String>,
    pub kind: Option<VgpuKind>,
    pub framebuffer_mib: Option<u64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeView {
    pub name: String,
    pub id: Option<TypeRef>,
    pub kind: Option<VgpuKind>,
    pub framebuffer_mib: Option<u64>,
    pub mig_profile: Option<String>,
    /// How many more can be created now.
    pub creatable: u32,
    /// Most per GPU in the current mode, when NVIDIA documents it for this GPU.
    pub max_instances: Option<u32>,
    /// Free slots offering it now, in order.
    #[serde(skip)]
    pub slots: Vec<(Slot, TypeRef)>,
    /// Why `creatable` is 0, and what would change that.
    pub why_not: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GpuView {
    pub gpu: PciAddress,
    pub name: Option<String>,
    pub interface: Interface,
    /// The GPU part of its vGPU type names (`H100`, `A100D`).
    pub model: Option<String>,
    pub driver: Option<String>,
    pub mig: Option<MigMode>,
    pub heterogeneous: Option<bool>,
    pub sriov_total_vfs: Option<u32>,
    pub sriov_num_vfs: Option<u32>,
    /// VFs (or 1 for a GPU that is its own mdev parent).
    pub slots: usize,
    pub free_slots: usize,
    pub vgpus: Vec<ActiveVgpu>,
    pub types: Vec<TypeView>,
    /// Free VFs (vendor-specific VFIO), lowest first.
    #[serde(skip)]
    pub free_vf_list: Vec<PciAddress>,
}

impl GpuView {
    pub fn mig_enabled(&self) -> bool {
        self.mig.is_some_and(|m| m.current == MigModeState::Enabled)
    }

    pub fn find_type(&self, t: &VgpuTypeName) -> Option<&TypeView> {
        self.types.iter().find(|v| t.matches(&v.name))
    }

    /// Framebuffer sizes of the time-sliced vGPUs it holds, with counts.
    pub fn sizes_in_use(&self) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for v in &self.vgpus {
            if v.kind == Some(VgpuKind::TimeSliced) {
                if let Some(fb) = v.framebuffer_mib {
                    *m.entry(fb).or_default() += 1;
                }
            }
        }
        m
    }

    /// How many vGPUs of type `t` the GPU holds.
    pub fn count_of(&self, t: &VgpuTypeName) -> u32 {
        self.vgpus.iter().filter(|x| x.type_name.as_deref().is_some_and(|y| t.matches(y))).count() as u32
    }

    pub fn holds_mig_backed(&self) -> bool {
        self.vgpus.iter().any(|v| v.kind == Some(VgpuKind::MigBacked))
    }
}

fn canonical(raw: &str) -> (String, Option<VgpuTypeName>) {
    match raw.parse::<VgpuTypeName>() {
        Ok(t) => (t.to_string(), Some(t)),
        Err(_) => (raw.trim().to_string(), None),
    }
}

fn add_offer(types: &mut Vec<TypeView>, raw_name: &str, id: TypeRef, slot: Slot, count: u32, fb_hint: Option<u64>) {
    let (name, parsed) = canonical(raw_name);
    let tv = match types.iter_mut().position(|t| t.name == name) {
        Some(i) => &mut types[i],
        None => {
            types.push(TypeView {
                kind: parsed.as_ref().map(|p| p.kind()),
                framebuffer_mib: parsed.as_ref().map(|p| p.framebuffer_mib()).or(fb_hint),
                mig_profile: parsed.as_ref().and_then(|p| p.mig_profile()).map(|p| p.to_string()),
                id: Some(id.clone()),
                name,
                creatable: 0,
                max_instances: None,
                slots: Vec::new(),
                why_not: None,
            });
            types.last_mut().expect("just pushed")
        }
    };
    if count > 0 {
        tv.creatable += count;
        tv.slots.push((slot, id));
    }
}

/// What the NVIDIA driver knows beyond sysfs: asked only for GPUs that
/// have a vGPU interface.
pub trait DriverFacts {
    /// Mixed-size mode: `Some(on)`, or `None` when not supported or unknown.
    fn heterogeneous(&self, gpu: PciAddress) -> Option<bool>;
    /// The name of a vendor type id that no VF lists any more.
    fn type_name(&self, gpu: PciAddress, id: u32) -> Option<String>;
    /// On a GPU in MIG mode: per GPU-instance profile name, how many
    /// MIG-backed vGPUs of it can still be made (its GPU instances holding
    /// no vGPU, plus those that would still fit). `None` when unknown.
    fn mig_room(&self, _gpu: PciAddress) -> Option<BTreeMap<String, u32>> {
        None
    }
}

/// Facts from the host's NVIDIA driver (real or simulated: the view reads
/// both the same way).
pub struct HostFacts<'a> {
    pub host: &'a crate::host::Host,
}

impl DriverFacts for HostFacts<'_> {
    fn heterogeneous(&self, gpu: PciAddress) -> Option<bool> {
        self.host.nvidia().heterogeneous(self.host, gpu).ok().flatten()
    }

    fn type_name(&self, gpu: PciAddress, id: u32) -> Option<String> {
        self.host.nvidia().type_name(self.host, gpu, id)
    }

    fn mig_room(&self, gpu: PciAddress) -> Option<BTreeMap<String, u32>> {
        use crate::mig::backend;
        // One backend, one profile table and one instance list per GPU.
        let b = backend::backend(self.host).ok()?;
        let table = b.profiles(gpu).ok()?;
        let instances = b.instances(gpu).ok()?;
        let layout = backend::layout(&instances);
        let free_gis = |name: &str| instances.iter().filter(|i| i.profile == name && backend::vgpu_holders(self.host, gpu, i.gi).is_empty()).count() as u32;
        Some(table.iter().map(|p| (p.name.to_string(), free_gis(&p.name.to_string()) + layout.more(p))).collect())
    }
}

/// Builds the view of every NVIDIA GPU (and every other mdev-capable GPU).
pub fn build(inv: &Inventory, facts: &dyn DriverFacts) -> Vec<GpuView> {
    inv.gpus.iter().filter(|g| g.is_nvidia() || g.mdev_parent).map(|g| build_one(inv, g, facts)).collect()
}

fn build_one(inv: &Inventory, g: &Gpu, facts: &dyn DriverFacts) -> GpuView {
    let vfs = g.sriov.as_ref().map(|s| s.vfs.as_slice()).unwrap_or_default();
    let vendor = vfs.iter().any(|v| v.vgpu.is_some());
    let legacy_vfs = vfs.iter().any(|v| v.mdev_parent);
    let interface = if vendor {
        Interface::VendorVfio
    } else if legacy_vfs {
        Interface::LegacyMdevVfs
    } else if g.mdev_parent {
        Interface::LegacyMdev
    } else {
        Interface::None
    };
    let mut types: Vec<TypeView> = Vec::new();
    let mut vgpus = Vec::new();
    let (slots, free_slots) = match interface {
        Interface::VendorVfio => {
            let mut names: BTreeMap<u32, String> = BTreeMap::new();
            for vf in vfs {
                let Some(v) = &vf.vgpu else { continue };
                for t in &v.creatable {
                    names.entry(t.id).or_insert_with(|| t.name.clone());
                    if v.current_type.is_none() {
                        add_offer(&mut types, &t.name, TypeRef::VendorId(t.id), Slot::Vf { vf: vf.address }, 1, None);
                    }
                }
            }
            for vf in vfs {
                let Some(v) = &vf.vgpu else { continue };
                if let Some(id) = v.current_type {
                    let raw = v.current_type_name.clone().or_else(|| names.get(&id).cloned()).or_else(|| facts.type_name(g.address, id));
                    let parsed = raw.as_deref().and_then(|r| r.parse::<VgpuTypeName>().ok());
                    vgpus.push(ActiveVgpu {
                        vf: Some(vf.address),
                        uuid: None,
                        parent: None,
                        kind: parsed.as_ref().map(|p| p.kind()),
                        framebuffer_mib: parsed.as_ref().map(|p| p.framebuffer_mib()),
                        type_name: raw.map(|r| canonical(&r).0).or_else(|| Some(format!("type id {id}"))),
                    });
                }
            }
            let n = vfs.iter().filter(|v| v.vgpu.is_some()).count();
            (n, vfs.iter().filter(|v| v.vgpu.as_ref().is_some_and(|x| x.current_type.is_none())).count())
        }
        Interface::LegacyMdev | Interface::LegacyMdevVfs => {
            let parents: Vec<MdevParent> = if interface == Interface::LegacyMdev {
                vec![g.address.to_string().parse().expect("a PCI address is a valid parent")]
            } else {
                vfs.iter().filter(|v| v.mdev_parent).filter_map(|v| v.address.to_string().parse().ok()).collect()
            };
            let mut free = 0;
            for pname in &parents {
                let Some(p) = inv.parent(pname) else { continue };
                let busy = p.types.iter().any(|t| !t.devices.is_empty());
                if !busy || interface == Interface::LegacyMdev {
                    free += usize::from(p.types.iter().any(|t| t.available_instances.unwrap_or(0) > 0));
                }
                for t in &p.types {
                    let raw = t.name.clone().unwrap_or_else(|| t.id.to_string());
                    let fb = t.vgpu.as_ref().and_then(|v| v.framebuffer_mib);
                    add_offer(&mut types, &raw, TypeRef::Mdev(t.id.clone()), Slot::Mdev { parent: pname.clone() }, t.available_instances.unwrap_or(0), fb);
                    for u in &t.devices {
                        let parsed = raw.parse::<VgpuTypeName>().ok();
                        vgpus.push(ActiveVgpu {
                            vf: pname.pci_address().filter(|_| interface == Interface::LegacyMdevVfs),
                            uuid: Some(*u),
                            parent: Some(pname.clone()),
                            kind: parsed.as_ref().map(|p| p.kind()),
                            framebuffer_mib: parsed.as_ref().map(|p| p.framebuffer_mib()).or(fb),
                            type_name: Some(canonical(&raw).0),
                        });
                    }
                }
            }
            (parents.len(), free)
        }
        Interface::None => (0, 0),
    };
    let model = types
        .iter()
        .find_map(|t| t.name.parse::<VgpuTypeName>().ok())
        .map(|t| t.model)
        .or_else(|| vgpus.iter().find_map(|v| v.type_name.as_deref()?.parse::<VgpuTypeName>().ok()).map(|t| t.model))
        .or_else(|| {
            let id = crate::parse::hex_id(&g.device_id)?;
            (g.is_nvidia() && interface != Interface::None).then(|| crate::inventory::vgpu_model(id)).flatten().map(str::to_string)
        });
    // Types the driver no longer lists (the vendor interface drops what is not
    // creatable) are still worth showing for GPUs whose table NVIDIA documents.
    if let Some(cat) = model.as_deref().and_then(known::catalog) {
        if interface != Interface::None {
            for k in cat {
                let name = format!("{}-{}", model.as_deref().unwrap_or_default(), k.suffix);
                if !types.iter().any(|t| t.name == name) {
                    let parsed = name.parse::<VgpuTypeName>().ok();
                    types.push(TypeView {
                        kind: parsed.as_ref().map(|p| p.kind()),
                        framebuffer_mib: Some(k.framebuffer_mib),
                        mig_profile: k.mig_profile.map(str::to_string),
                        id: None,
                        name,
                        creatable: 0,
                        max_instances: None,
                        slots: Vec::new(),
                        why_not: None,
                    });
                }
            }
        }
    }
    let het = if interface == Interface::None { None } else { facts.heterogeneous(g.address) };
    let free_vf_list = vfs.iter().filter(|v| v.vgpu.as_ref().is_some_and(|x| x.current_type.is_none())).map(|v| v.address).collect();
    let mut view = GpuView {
        free_vf_list,
        gpu: g.address,
        name: g.name.clone(),
        interface,
        model,
        driver: g.driver.clone(),
        mig: g.mig,
        heterogeneous: het,
        sriov_total_vfs: g.sriov.as_ref().map(|s| s.total_vfs),
        sriov_num_vfs: g.sriov.as_ref().map(|s| s.num_vfs),
        slots,
        free_slots,
        vgpus,
        types,
    };
    cap_mig_backed(&mut view, facts);
    finish_types(&mut view);
    view
}

/// A MIG-backed vGPU needs a free VF (or mdev slot) and a GPU instance of its
/// profile: one holding no vGPU, or one that can still be made. The driver's
/// lists say neither how many instances there are (every free VF lists the
/// type while one free instance exists) nor that one could be made (no VF
/// lists it then), so the count comes from the GPU's instances and layout.
fn cap_mig_backed(view: &mut GpuView, facts: &dyn DriverFacts) {
    if !view.mig_enabled() || !view.types.iter().any(|t| t.kind == Some(VgpuKind::MigBacked)) {
        return;
    }
    let Some(room) = facts.mig_room(view.gpu) else { return };
    let free_slots = view.free_slots as u32;
    let vendor = view.interface == Interface::VendorVfio;
    for t in view.types.iter_mut().filter(|t| t.kind == Some(VgpuKind::MigBacked)) {
        let Some(gis) = t.mig_profile.as_deref().and_then(|p| room.get(p)) else { continue };
        t.creatable = if vendor { free_slots.min(*gis) } else { t.creatable.min(*gis) };
    }
}

/// Caps counts with the documented maxima and fills `why_not`.
fn finish_types(view: &mut GpuView) {
    let sizes = view.sizes_in_use();
    let het = view.heterogeneous == Some(true);
    let mut types = std::mem::take(&mut view.types);
    for t in &mut types {
        let parsed = t.name.parse::<VgpuTypeName>().ok();
        let k = parsed.as_ref().and_then(known::lookup);
        t.max_instances = k.map(|k| if het { k.max_mixed.unwrap_or(k.max_instances) } else { k.max_instances });
        if let (Some(max), Some(fb), Some(VgpuKind::TimeSliced)) = (t.max_instances, t.framebuffer_mib, t.kind) {
            // The vendor interface lists a type on every free VF while at least
            // one more fits; the documented maximum tells how many.
            let used = sizes.get(&fb).copied().unwrap_or(0);
            t.creatable = t.creatable.min(max.saturating_sub(used));
        }
        if t.creatable == 0 {
            t.why_not = Some(super::explain::why_not(view, t, parsed.as_ref()));
        }
    }
    types.sort_by(|a, b| (a.kind, a.framebuffer_mib, &a.name).cmp(&(b.kind, b.framebuffer_mib, &b.name)));
    view.types = types;
}
