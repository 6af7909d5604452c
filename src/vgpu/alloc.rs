//! Which GPU and which slot a new vGPU goes to.
//!
//! - `pack` (default): the GPU that already holds the most vGPUs of the same
//!   framebuffer size, then the most vGPUs at all, then the lowest address.
//!   Fills GPUs one by one and keeps whole GPUs free for large types, which
//!   the equal-size rule would otherwise lock out everywhere.
//! - `spread`: the GPU with the fewest vGPUs, then the lowest address, for
//!   the least sharing of each GPU's time slices.
//!
//! Within a GPU the lowest free VF (or the parent itself) is used. Only
//! slots the driver offers the type on are candidates, capped by the
//! documented maximum, so a choice never over-commits a GPU.

use serde::Serialize;

use super::typename::VgpuTypeName;
use super::view::{GpuView, Slot, TypeRef, TypeView};
use crate::ids::PciAddress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Pack,
    Spread,
}

#[derive(Debug, Clone)]
pub struct Choice<'a> {
    pub view: &'a GpuView,
    pub ty: &'a TypeView,
    pub slot: Slot,
    pub id: TypeRef,
}

/// Picks a GPU and slot for `wanted`, or `None` when no GPU can take it.
pub fn choose<'a>(views: &'a [GpuView], wanted: &VgpuTypeName, only: Option<PciAddress>, policy: Policy) -> Option<Choice<'a>> {
    let mut candidates: Vec<(&GpuView, &TypeView)> = views
        .iter()
        .filter(|v| only.is_none_or(|g| g == v.gpu))
        .filter_map(|v| v.find_type(wanted).filter(|t| t.creatable > 0 && !t.slots.is_empty()).map(|t| (v, t)))
        .collect();
    let fb = wanted.framebuffer_mib();
    let same_size = |v: &GpuView| v.sizes_in_use().get(&fb).copied().unwrap_or(0);
    match policy {
        Policy::Pack => candidates.sort_by_key(|(v, _)| (std::cmp::Reverse(same_size(v)), std::cmp::Reverse(v.vgpus.len()), v.gpu)),
        Policy::Spread => candidates.sort_by_key(|(v, _)| (v.vgpus.len(), v.gpu)),
    }
    let (view, ty) = candidates.into_iter().next()?;
    let (slot, id) = ty.slots.first()?.clone();
    Some(Choice { view, ty, slot, id })
}

/// Records a choice in `views` as if the vGPU existed, so the next choice
/// in the same request (a domain asking for several vGPUs) sees it: the slot
/// is gone, one fewer of that size fits, and in equal-size mode other sizes
/// no longer fit on that GPU.
pub fn reserve(views: &mut [GpuView], gpu: PciAddress, slot: &Slot, wanted: &VgpuTypeName) {
    let Some(v) = views.iter_mut().find(|v| v.gpu == gpu) else { return };
    let fb = wanted.framebuffer_mib();
    let het = v.heterogeneous == Some(true);
    if let Slot::Vf { vf } = slot {
        // Taken by this request: never offered twice (a MIG-backed VF waiting
        // for its GPU instance is in no type's slots yet, only in this list).
        v.free_vf_list.retain(|f| f != vf);
    }
    for t in &mut v.types {
        // A VF holds one vGPU; an mdev parent (non-SR-IOV GPU) holds many.
        if matches!(slot, Slot::Vf { .. }) {
            t.slots.retain(|(s, _)| s != slot);
        }
        let same = t.framebuffer_mib == Some(fb);
        let before = t.creatable;
        t.creatable = if same || het { t.creatable.saturating_sub(1) } else { 0 };
        if t.slots.is_empty() {
            t.creatable = 0;
        }
        if before > 0 && t.creatable == 0 {
            t.why_not = Some(format!("{} is taken by the other vGPUs of this request", v.gpu));
        }
    }
    v.free_slots = v.free_slots.saturating_sub(1);
    v.vgpus.push(super::view::ActiveVgpu {
        vf: match slot {
            Slot::Vf { vf } => Some(*vf),
            Slot::Mdev { .. } => None,
        },
        uuid: None,
        parent: None,
        type_name: Some(wanted.to_string()),
        kind: Some(wanted.kind()),
        framebuffer_mib: Some(fb),
    });
}
