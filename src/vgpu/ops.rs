//! Create and remove vGPUs by type name, on either NVIDIA interface.

use std::time::Duration;

use serde::Serialize;

use super::alloc::{self, Policy};
use super::explain;
use super::typename::VgpuTypeName;
use super::view::{self, GpuView, HostFacts, Interface, Slot, TypeRef};
use crate::host::{Host, HostError};
use crate::ids::{MdevParent, MdevUuid, PciAddress};
use crate::inventory::{Inventory, ScanOptions, VfioUsers};
use crate::lock::{HostLock, LockError};
use crate::mdev::{self, CreateRequest, MdevError};
use crate::mig::backend::MigError;
use crate::mig::instances::{Instances, Owner};

#[derive(Debug, thiserror::Error)]
pub enum VgpuError {
    #[error("no GPU can take a {wanted} now:\n{reasons}")]
    NoRoom { wanted: String, reasons: String },
    #[error(transparent)]
    UnknownType(#[from] super::exists::UnknownType),
    #[error("{gpu} is not a GPU with vGPU support here (see `vgpuctl explain --type {wanted}`)")]
    NotAVgpuGpu { gpu: PciAddress, wanted: String },
    #[error("--uuid applies to mdev-based vGPUs only; {gpu} uses NVIDIA's vendor-specific VFIO interface, where the VM's own UUID identifies the vGPU")]
    UuidOnVendorVfio { gpu: PciAddress },
    #[error("{target} is neither an mdev UUID nor the PCI address of a VF holding a vGPU")]
    UnknownTarget { target: String },
    #[error("{addr} is a physical GPU; remove a vGPU by its VF address or mdev UUID (vgpuctl list --json shows them)")]
    IsPhysicalGpu { addr: PciAddress },
    #[error("VF {vf} holds no vGPU")]
    VfEmpty { vf: PciAddress },
    #[error("VF {vf} is in use{by}; stop the VM first")]
    VfBusy { vf: PciAddress, by: String },
    #[error("VF {vf} changed behind vgpuctl's back: {why}")]
    VfChanged { vf: PciAddress, why: String },
    #[error("the driver refused type {type_id} on VF {vf}")]
    VfRejected {
        vf: PciAddress,
        type_id: u32,
        #[source]
        source: HostError,
    },
    #[error(transparent)]
    Mode(ModeError),
    #[error(transparent)]
    Nvctl(#[from] crate::nvidia::ControlError),
    #[error(transparent)]
    Mdev(#[from] MdevError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Ledger(#[from] crate::mig::backend::ledger::LedgerError),
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct VgpuCreated {
    pub interface: Interface,
    pub gpu: PciAddress,
    #[serde(rename = "type")]
    pub type_name: String,
    pub type_id: TypeRef,
    /// Vendor-specific VFIO: the VF now carrying the vGPU (give it to the VM, unmanaged).
    pub vf: Option<PciAddress>,
    /// Legacy mdev: the mdev and its parent.
    pub uuid: Option<MdevUuid>,
    pub parent: Option<MdevParent>,
    /// MIG-backed: the GPU instance it sits on, and whether vgpuctl made it for this vGPU.
    pub gi: Option<u32>,
    pub gi_created: bool,
    /// Idle GPU instances moved to make room for the one made for this vGPU
    /// (only with `repack_moves` in the planner policy).
    pub gi_moved: Vec<crate::mig::moves::Moved>,
}

#[derive(Debug, Clone)]
pub struct VgpuCreateRequest {
    pub type_name: VgpuTypeName,
    pub gpu: Option<PciAddress>,
    pub uuid: Option<MdevUuid>,
    pub policy: Policy,
}

/// The current vGPU view of the host (no usage scan: callers under the lock
/// need allocation facts, not who holds what).
pub fn views(host: &Host) -> Result<(Inventory, Vec<GpuView>), HostError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let v = view::build(&inv, &HostFacts { host });
    Ok((inv, v))
}

pub fn create(host: &Host, req: &VgpuCreateRequest, lock_timeout: Duration) -> Result<VgpuCreated, VgpuError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    create_locked(host, req)
}

pub fn create_locked(host: &Host, req: &VgpuCreateRequest) -> Result<VgpuCreated, VgpuError> {
    let (_, mut views) = views(host)?;
    super::exists::check(&views, &req.type_name)?;
    let mut gi_created = None;
    let mut gi_moved = Vec::new();
    if req.type_name.kind() == super::typename::VgpuKind::MigBacked && alloc::choose(&views, &req.type_name, req.gpu, req.policy).is_none() {
        // No free GPU instance of the profile: make one where the planner says.
        // Recorded in the ledger before and after the driver call: if this
        // process dies before the vGPU lands on it, `vgpuctl gc` frees it.
        if let Some((gpu, gi, moved)) = make_gi_for(host, &views, &req.type_name, req.gpu)? {
            gi_created = Some((gpu, gi));
            gi_moved = moved;
            views = match self::views(host) {
                Ok(v) => v.1,
                Err(e) => {
                    drop_made_gi(host, gpu, gi);
                    return Err(e.into());
                }
            };
        }
    }
    let mut c = match create_on(host, req, &views) {
        Ok(c) => c,
        Err(e) => {
            // Nothing half-done: the GPU instance made for it goes again.
            if let Some((gpu, gi)) = gi_created {
                drop_made_gi(host, gpu, gi);
            }
            return Err(e);
        }
    };
    if let (Some(vf), true) = (c.vf, c.interface == Interface::VendorVfio) {
        c.gi = host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/gpu_instance_id")).ok().flatten().and_then(|g| g.trim().parse().ok());
    }
    if let Some((_, gi)) = gi_created {
        c.gi_created = c.gi == Some(gi);
    }
    c.gi_moved = gi_moved;
    Ok(c)
}

/// Rolls back a GPU instance made for a vGPU whose creation then failed.
fn drop_made_gi(host: &Host, gpu: PciAddress, gi: u32) {
    match Instances::open(host).and_then(|m| m.roll_back(gpu, gi)) {
        Ok(()) => {}
        Err(e) => tracing::error!(%gpu, gi, "could not destroy the GPU instance made for the vGPU (vgpuctl gc retries): {e}"),
    }
}

/// Makes a GPU instance for a MIG-backed type where the planner says, as
/// vgpuctl's own (ledgered); `Ok(None)` when no GPU can take one or the
/// driver would not make it.
pub fn make_gi_for(
    host: &Host,
    views: &[GpuView],
    t: &VgpuTypeName,
    only: Option<PciAddress>,
) -> Result<Option<(PciAddress, u32, Vec<crate::mig::moves::Moved>)>, VgpuError> {
    // One manager for the placement and the create: it reads the driver once.
    let Ok(m) = Instances::open(host) else { return Ok(None) };
    let Some((gpu, p, start, moved)) = gi_placement(&m, views, t, only) else { return Ok(None) };
    match m.create(gpu, &p, start, Owner::Vgpuctl) {
        Ok(gi) => Ok(Some((gpu, gi, moved))),
        Err(MigError::Ledger(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(%gpu, "could not create a {} GPU instance at slice {start}: {e}", p.name);
            Ok(None)
        }
    }
}

/// Where the planner would put a GPU instance for a MIG-backed type: among
/// the GPUs in MIG mode of the type's model that hold no time-sliced vGPU.
/// With `repack_moves` in the planner policy, idle instances may be moved
/// to make room (and are, before this returns).
fn gi_placement(
    m: &Instances,
    views: &[GpuView],
    t: &VgpuTypeName,
    only: Option<PciAddress>,
) -> Option<(PciAddress, crate::mig::profiles::Profile, u8, Vec<crate::mig::moves::Moved>)> {
    let profile = t.mig_profile()?;
    let gpus: Vec<PciAddress> = views
        .iter()
        .filter(|v| only.is_none_or(|g| g == v.gpu) && v.mig_enabled() && v.model.as_deref() == Some(t.model.as_str()))
        .filter(|v| !v.vgpus.iter().any(|x| x.kind == Some(super::typename::VgpuKind::TimeSliced)))
        .map(|v| v.gpu)
        .collect();
    let table = m.backend().profiles(*gpus.first()?).ok()?;
    let p = crate::mig::profiles::find(&table, &profile.to_string())?;
    match m.place_or_repack(&gpus, &table, p) {
        Ok(at) => Some((at.gpu, p.clone(), at.start, at.moved)),
        Err(MigError::NoRoom { .. }) => None,
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    }
}

fn create_on(host: &Host, req: &VgpuCreateRequest, views: &[GpuView]) -> Result<VgpuCreated, VgpuError> {
    if let Some(g) = req.gpu {
        if !views.iter().any(|v| v.gpu == g && v.interface != Interface::None) {
            return Err(VgpuError::NotAVgpuGpu { gpu: g, wanted: req.type_name.to_string() });
        }
    }
    let Some(choice) = alloc::choose(views, &req.type_name, req.gpu, req.policy) else {
        let e = explain::explain(views, &req.type_name);
        let reasons = e.gpus.iter().filter(|v| req.gpu.is_none_or(|g| g == v.gpu)).map(|v| format!("  {}: {}", v.gpu, v.reason)).collect::<Vec<_>>().join("\n");
        return Err(VgpuError::NoRoom { wanted: req.type_name.to_string(), reasons: if reasons.is_empty() { "  no NVIDIA GPUs".into() } else { reasons } });
    };
    let gpu = choice.view.gpu;
    let type_name = choice.ty.name.clone();
    match (&choice.slot, &choice.id) {
        (Slot::Vf { vf }, TypeRef::VendorId(id)) => {
            if req.uuid.is_some() {
                return Err(VgpuError::UuidOnVendorVfio { gpu });
            }
            set_vf_type(host, *vf, *id)?;
            Ok(VgpuCreated {
                interface: Interface::VendorVfio,
                gpu,
                type_name,
                type_id: choice.id.clone(),
                vf: Some(*vf),
                uuid: None,
                parent: None,
                gi: None,
                gi_created: false,
                gi_moved: Vec::new(),
            })
        }
        (Slot::Mdev { parent }, TypeRef::Mdev(t)) => {
            let c =
                mdev::create_locked(host, &CreateRequest { parent: parent.clone(), mdev_type: t.to_string(), uuid: req.uuid, persist: None, attrs: vec![] })?;
            Ok(VgpuCreated {
                interface: choice.view.interface,
                gpu,
                type_name,
                type_id: choice.id.clone(),
                vf: parent.pci_address().filter(|_| choice.view.interface == Interface::LegacyMdevVfs),
                uuid: Some(c.uuid),
                parent: Some(parent.clone()),
                gi: None,
                gi_created: false,
                gi_moved: Vec::new(),
            })
        }
        // A vendor slot always carries a vendor id and an mdev slot an mdev type.
        _ => Err(VgpuError::NoRoom { wanted: type_name, reasons: "inconsistent slot".into() }),
    }
}

fn vf_file(vf: PciAddress) -> String {
    format!("/sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type")
}

fn read_vf_type(host: &Host, vf: PciAddress) -> Result<u32, VgpuError> {
    let raw = host.read_attr(&vf_file(vf))?;
    crate::parse::count(&raw).ok_or_else(|| VgpuError::VfChanged { vf, why: format!("current_vgpu_type holds {raw:?}") })
}

/// Writes a type to an empty VF and checks it took. The driver answers EPERM
/// when the VF already has a type; we read first so the admin never sees that.
fn set_vf_type(host: &Host, vf: PciAddress, id: u32) -> Result<(), VgpuError> {
    let current = read_vf_type(host, vf)?;
    if current != 0 {
        return Err(VgpuError::VfChanged { vf, why: format!("it already holds type {current}") });
    }
    tracing::info!(%vf, id, "setting vGPU type");
    host.write_attr(&vf_file(vf), &id.to_string()).map_err(|source| VgpuError::VfRejected { vf, type_id: id, source })?;
    let now = read_vf_type(host, vf)?;
    if now != id {
        let _ = host.write_attr(&vf_file(vf), "0");
        return Err(VgpuError::VfChanged { vf, why: format!("wrote {id} but it reads {now}; set back to 0") });
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct VgpuRemoved {
    pub vf: Option<PciAddress>,
    pub uuid: Option<MdevUuid>,
    pub removed: bool,
    /// The GPU instance vgpuctl had made for this vGPU, removed with it.
    pub gi_removed: Option<u32>,
}

pub fn remove(host: &Host, target: &str, if_exists: bool, keep_gi: bool, lock_timeout: Duration) -> Result<VgpuRemoved, VgpuError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    remove_locked_keep(host, target, if_exists, keep_gi)
}

pub fn remove_locked(host: &Host, target: &str, if_exists: bool) -> Result<VgpuRemoved, VgpuError> {
    remove_locked_keep(host, target, if_exists, false)
}

pub fn remove_locked_keep(host: &Host, target: &str, if_exists: bool, keep_gi: bool) -> Result<VgpuRemoved, VgpuError> {
    if let Ok(uuid) = target.parse::<MdevUuid>() {
        let r = mdev::remove_locked(host, uuid, false, if_exists)?;
        return Ok(VgpuRemoved { vf: None, uuid: Some(uuid), removed: r.removed, gi_removed: None });
    }
    let Ok(vf) = target.parse::<PciAddress>() else {
        return Err(VgpuError::UnknownTarget { target: target.to_string() });
    };
    if !host.exists(&vf_file(vf)) {
        if host.exists(&format!("/sys/bus/pci/devices/{vf}/sriov_totalvfs")) {
            return Err(VgpuError::IsPhysicalGpu { addr: vf });
        }
        return Err(VgpuError::UnknownTarget { target: target.to_string() });
    }
    if read_vf_type(host, vf)? == 0 {
        // Writing 0 to an empty VF is EPERM on real hosts: say what it means.
        return if if_exists { Ok(VgpuRemoved { vf: Some(vf), uuid: None, removed: false, gi_removed: None }) } else { Err(VgpuError::VfEmpty { vf }) };
    }
    if let Some(by) = vf_user(host, vf) {
        return Err(VgpuError::VfBusy { vf, by });
    }
    let gi: Option<u32> = host.read_attr_opt(&format!("/sys/bus/pci/devices/{vf}/nvidia/gpu_instance_id")).ok().flatten().and_then(|g| g.trim().parse().ok());
    tracing::info!(%vf, "clearing vGPU type");
    host.write_attr(&vf_file(vf), "0").map_err(|e| match e.errno().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::EBUSY | nix::errno::Errno::EPERM) => VgpuError::VfBusy { vf, by: String::new() },
        _ => VgpuError::Host(e),
    })?;
    let mut gi_removed = None;
    if let (Some(gi), Some(pf)) = (gi, host.link_name(&format!("/sys/bus/pci/devices/{vf}/physfn")).ok().flatten().and_then(|p| p.parse::<PciAddress>().ok())) {
        // Only an instance the ledger proves vgpuctl made goes with the vGPU,
        // after the checks every destroy makes; --keep-gi hands it to the admin.
        match Instances::open(host) {
            Ok(m) if keep_gi => {
                if let Err(e) = m.hand_over(pf, gi) {
                    tracing::warn!("{e}");
                }
            }
            Ok(m) => match m.destroy_if_made(pf, gi) {
                Ok(true) => gi_removed = Some(gi),
                Ok(false) => {}
                Err(e) => tracing::warn!("the vGPU is removed, but its GPU instance {gi} on {pf} stays: {e}"),
            },
            Err(e) => tracing::warn!("the vGPU is removed, but its GPU instance {gi} on {pf} was not looked at: {e}"),
        }
    }
    Ok(VgpuRemoved { vf: Some(vf), uuid: None, removed: true, gi_removed })
}

/// Who holds the VF's VFIO group, if anyone (and if we can tell).
fn vf_user(host: &Host, vf: PciAddress) -> Option<String> {
    let group = host.link_name(&format!("/sys/bus/pci/devices/{vf}/iommu_group")).ok()??.parse::<u32>().ok()?;
    let u = VfioUsers::scan(host).user_of(group)?;
    Some(format!(" by {u}"))
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ModeChange {
    pub gpu: PciAddress,
    pub heterogeneous: bool,
    pub changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error(
        "{gpu} has no mixed-size (heterogeneous) vGPU mode (it needs vGPU 17+ on a GPU that supports it; `nvidia-smi -q` shows 'vGPU Heterogeneous Mode')"
    )]
    Unsupported { gpu: PciAddress },
    #[error("cannot change the mixed-size mode of {gpu} while it holds vGPUs ({what}); the driver refuses (IN_USE): remove them first")]
    VgpusExist { gpu: PciAddress, what: String },
    #[error("cannot enable mixed-size mode on {gpu} while MIG mode is on (the driver answers NOT_SUPPORTED)")]
    MigOn { gpu: PciAddress },
}

/// Turns mixed-size mode on or off, after the checks the driver would fail
/// with less helpful messages.
pub fn set_heterogeneous(host: &Host, gpu: PciAddress, on: bool, lock_timeout: Duration) -> Result<ModeChange, VgpuError> {
    let _lock = HostLock::acquire(host, lock_timeout)?;
    let (_, views) = views(host)?;
    let v = views.iter().find(|v| v.gpu == gpu).ok_or(VgpuError::NotAVgpuGpu { gpu, wanted: "a vGPU".into() })?;
    let current = v.heterogeneous.ok_or(VgpuError::Mode(ModeError::Unsupported { gpu }))?;
    if current == on {
        return Ok(ModeChange { gpu, heterogeneous: on, changed: false });
    }
    if !v.vgpus.is_empty() {
        let what = v.vgpus.iter().map(|x| x.type_name.clone().unwrap_or_default()).collect::<Vec<_>>().join(", ");
        return Err(VgpuError::Mode(ModeError::VgpusExist { gpu, what }));
    }
    if on && v.mig_enabled() {
        return Err(VgpuError::Mode(ModeError::MigOn { gpu }));
    }
    host.nvidia().set_heterogeneous(host, gpu, on)?;
    Ok(ModeChange { gpu, heterogeneous: on, changed: true })
}

/// For the hook: makes the VF a domain names carry `wanted`. `Ok(Some(id))`
/// when it wrote the type, `Ok(None)` when the VF already had it.
pub fn ensure_vf_type(host: &Host, vf: PciAddress, wanted: &VgpuTypeName) -> Result<Option<u32>, VgpuError> {
    let (_, views) = views(host)?;
    let view = views.iter().find(|v| v.slots > 0 && v.interface == Interface::VendorVfio && host_vf_of(host, v.gpu, vf));
    let current = read_vf_type(host, vf)?;
    if current != 0 {
        let name = view.and_then(|v| v.vgpus.iter().find(|x| x.vf == Some(vf))).and_then(|x| x.type_name.clone());
        return match name {
            Some(n) if wanted.matches(&n) => Ok(None),
            other => {
                Err(VgpuError::VfChanged { vf, why: format!("it holds {} while this VM wants {wanted}", other.unwrap_or_else(|| format!("type {current}"))) })
            }
        };
    }
    let listed = host.read_attr(&format!("/sys/bus/pci/devices/{vf}/nvidia/creatable_vgpu_types"))?;
    let (types, _) = crate::parse::creatable_vgpu_types(&listed);
    let Some(t) = types.iter().find(|t| wanted.matches(&t.name)) else {
        let reason = view
            .map(|v| explain::explain(std::slice::from_ref(v), wanted))
            .and_then(|e| e.gpus.first().map(|g| g.reason.clone()))
            .unwrap_or_else(|| format!("VF {vf} does not list {wanted} as creatable"));
        return Err(VgpuError::NoRoom { wanted: wanted.to_string(), reasons: format!("  VF {vf}: {reason}") });
    };
    set_vf_type(host, vf, t.id)?;
    Ok(Some(t.id))
}

/// Clears a VF the hook set, if it still holds `type_id` (never touching a
/// type someone else wrote since).
pub fn clear_vf_type(host: &Host, vf: PciAddress, type_id: u32) -> Result<bool, VgpuError> {
    match read_vf_type(host, vf) {
        Ok(t) if t == type_id => {
            host.write_attr(&vf_file(vf), "0")?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(VgpuError::Host(e)) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

fn host_vf_of(host: &Host, pf: PciAddress, vf: PciAddress) -> bool {
    host.link_name(&format!("/sys/bus/pci/devices/{vf}/physfn")).ok().flatten().and_then(|n| n.parse::<PciAddress>().ok()) == Some(pf)
}
