//! What the host's GPUs look like to the engines fleets schedule VMs with:
//! the configuration they need, generated from vgpuctl's host config and
//! the host as it is, so the two never disagree.

pub mod kubevirt;
pub mod nova;

use crate::apply::config::GpuSpec;
use crate::ids::{MdevTypeId, PciAddress};
use crate::inventory::Inventory;
use crate::vgpu::typename::{VgpuKind, VgpuTypeName};
use crate::vgpu::view::{GpuView, Interface, TypeRef};

/// The scheduler an export is for: how it is named in a refusal, and what it
/// offers instead for vendor-specific VFIO GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Nova,
    Kubevirt,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Nova => "Nova",
            Engine::Kubevirt => "KubeVirt",
        }
    }

    fn without_vendor_vfio(self) -> &'static str {
        match self {
            Engine::Nova => "Nova's [devices] enabled_mdev_types cannot use them. Nova 2025.1 (31.0.0) documents such VFs as PCI passthrough devices ([pci] device_spec and alias) instead; vgpuctl does not generate that",
            Engine::Kubevirt => "KubeVirt's mediated-device support does not see them",
        }
    }
}

/// The one mdev type a host config gives a GPU, as a scheduler takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevChoice {
    /// The vGPU name the admin configured (`A100D-4C`).
    pub name: String,
    pub mdev_type: MdevTypeId,
    /// Parent addresses: the GPU, or its VFs on SR-IOV GPUs.
    pub parents: Vec<PciAddress>,
    /// The type's documented maximum on this GPU when the parents are VFs
    /// (each VF reports one instance, so a scheduler needs the cap).
    pub max_instances: Option<u32>,
}

/// The mdev type `spec` gives the GPU of `v`, or why no scheduler's mdev
/// support can be given it; `Ok(None)` when the config gives it no type.
/// The one answer both exports use.
pub fn mdev_choice(inv: &Inventory, v: &GpuView, spec: &GpuSpec, engine: Engine) -> Result<Option<MdevChoice>, String> {
    let names: Vec<&str> = spec.vgpus.iter().filter(|c| c.count > 0).map(|c| c.type_name.as_str()).collect();
    let name = match names.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            return Err(format!(
                "the config gives it {} types ({}); {} gives each physical GPU one mdev type, so a mixed-size GPU cannot be handed to it",
                many.len(),
                many.join(", "),
                engine.name()
            ))
        }
    };
    let parsed: VgpuTypeName = name.parse().map_err(|e: crate::vgpu::typename::TypeNameError| e.to_string())?;
    if parsed.kind() == VgpuKind::MigBacked {
        return Err(format!("{name} is MIG-backed; {} hands out time-sliced mdev types only", engine.name()));
    }
    match v.interface {
        Interface::VendorVfio => {
            return Err(format!(
                "it uses NVIDIA's vendor-specific VFIO (vGPU 17+): its vGPUs are SR-IOV VFs driven by nvidia's vfio-pci variant driver, not mdevs, and {}",
                engine.without_vendor_vfio()
            ))
        }
        Interface::None if v.sriov_total_vfs.unwrap_or(0) > 0 && v.sriov_num_vfs == Some(0) => {
            return Err("its SR-IOV VFs are not enabled, so whether they will be mdev parents (legacy vGPU) or vendor-specific VFIO devices (vGPU 17+) cannot be told yet: enable them (vgpuctl apply, or vgpuctl sriov enable) and export again".into())
        }
        Interface::None => return Err("the NVIDIA vGPU manager offers no vGPU types on it".into()),
        Interface::LegacyMdev | Interface::LegacyMdevVfs => {}
    }
    let t = v.find_type(&parsed).ok_or_else(|| format!("it does not offer {name}"))?;
    let Some(TypeRef::Mdev(ty)) = &t.id else {
        return Err(format!("the driver lists {name} on it without an mdev type"));
    };
    let choice = |parents, max_instances| Ok(Some(MdevChoice { name: name.to_string(), mdev_type: ty.clone(), parents, max_instances }));
    if v.interface == Interface::LegacyMdev {
        return choice(vec![v.gpu], None);
    }
    let vfs: Vec<PciAddress> = inv
        .gpus
        .iter()
        .find(|g| g.address == v.gpu)
        .and_then(|g| g.sriov.as_ref())
        .map(|s| s.vfs.iter().filter(|vf| vf.mdev_parent).map(|vf| vf.address).collect())
        .unwrap_or_default();
    if vfs.is_empty() {
        return Err("its SR-IOV VFs are not enabled (vgpuctl sriov enable, or vgpuctl apply)".into());
    }
    choice(vfs, t.max_instances)
}
