//! Why a vGPU type can or cannot be created on each GPU, and the smallest
//! change that would make room.

use std::collections::BTreeMap;

use serde::Serialize;

use super::typename::{VgpuKind, VgpuTypeName};
use super::view::{GpuView, Interface, Slot, TypeView};
use crate::ids::PciAddress;

fn holdings(view: &GpuView) -> String {
    let mut by_type: BTreeMap<&str, u32> = BTreeMap::new();
    for v in &view.vgpus {
        *by_type.entry(v.type_name.as_deref().unwrap_or("unknown type")).or_default() += 1;
    }
    by_type.iter().map(|(t, n)| format!("{n}×{t}")).collect::<Vec<_>>().join(", ")
}

fn mib(v: u64) -> String {
    if v.is_multiple_of(1024) {
        format!("{} GB", v / 1024)
    } else {
        format!("{v} MiB")
    }
}

/// How a reason names the type: one type (`H100-4C has 4 GB`), or every
/// type of a group in a table that gives one reason per GPU and cause.
struct Words {
    /// `H100-4C has 4 GB` / `these types have another size`
    has_size: String,
    /// `H100-80C needs 80 GB` / `these types need more`
    needs_size: String,
    /// `a 3g.40gb GPU instance` / `a GPU instance of the type's profile`
    instance: String,
    /// `no free 3g.40gb GPU instance` / `no free GPU instance of their profile`
    no_free: String,
    /// `is full for 20 GB` / `is full for their size`
    full_for: String,
    /// `H100-4C` / `these types`
    name: String,
    /// `it` / `them`
    it: &'static str,
}

impl Words {
    fn of(t: &TypeView) -> Self {
        let fb = mib(t.framebuffer_mib.unwrap_or(0));
        let profile = t.mig_profile.clone().unwrap_or_else(|| "its".into());
        Self {
            has_size: format!("{} has {fb}", t.name),
            needs_size: format!("{} needs {fb}", t.name),
            instance: format!("a {profile} GPU instance"),
            no_free: format!("no free {profile} GPU instance"),
            full_for: format!("is full for {fb}"),
            name: t.name.clone(),
            it: "it",
        }
    }

    fn group() -> Self {
        Self {
            has_size: "these types have another size".into(),
            needs_size: "these types need more".into(),
            instance: "a GPU instance of the type's profile".into(),
            no_free: "no free GPU instance of their profile".into(),
            full_for: "is full for their size".into(),
            name: "these types".into(),
            it: "them",
        }
    }
}

/// The reason `t` has no creatable instance on `view`, in the admin's terms.
pub fn why_not(view: &GpuView, t: &TypeView, parsed: Option<&VgpuTypeName>) -> String {
    reason(view, t, parsed, &Words::of(t))
}

/// The same reason worded for every type it applies to, so that a table
/// can group the types of one GPU by cause and say it once.
pub fn why_not_grouped(view: &GpuView, t: &TypeView, parsed: Option<&VgpuTypeName>) -> String {
    reason(view, t, parsed, &Words::group())
}

fn reason(view: &GpuView, t: &TypeView, parsed: Option<&VgpuTypeName>, w: &Words) -> String {
    let gpu = view.gpu;
    if view.interface == Interface::None {
        return no_interface(view);
    }
    match t.kind {
        Some(VgpuKind::MigBacked) => {
            if !view.mig_enabled() {
                return format!("MIG mode is off on {gpu}; enable it (vgpuctl mig enable {gpu}) and create {}", w.instance);
            }
            if view.vgpus.iter().any(|v| v.kind == Some(VgpuKind::TimeSliced)) {
                return format!("{gpu} holds time-sliced vGPUs ({}); time-sliced and MIG-backed vGPUs never share a GPU", holdings(view));
            }
            if view.free_slots == 0 {
                return format!("every VF of {gpu} holds a vGPU; remove one to make room (vgpuctl status lists them)");
            }
            // Counted from the GPU's instances (view::cap_mig_backed): none of
            // this profile is free and none fits beside the others.
            format!(
                "{} on {gpu} and no room to make one beside its other instances; vgpuctl mig status shows them (destroying those no vGPU uses frees room)",
                w.no_free
            )
        }
        Some(VgpuKind::TimeSliced) => {
            if view.mig_enabled() || view.holds_mig_backed() {
                return format!(
                    "{gpu} is in MIG mode{}; time-sliced vGPUs need MIG mode off and never share a GPU with MIG-backed ones: {}destroy its GPU instances (vgpuctl mig status lists them), then vgpuctl mig disable {gpu}",
                    if view.vgpus.is_empty() { String::new() } else { format!(" and holds {}", holdings(view)) },
                    if view.vgpus.is_empty() { "" } else { "remove those vGPUs, " }
                );
            }
            let sizes = view.sizes_in_use();
            let fb = t.framebuffer_mib.unwrap_or(0);
            let het = view.heterogeneous == Some(true);
            if !het && sizes.keys().any(|s| *s != fb) {
                let mixed = match view.heterogeneous {
                    Some(false) => format!(", or remove them all and enable mixed-size mode (vgpuctl vgpu mode --heterogeneous on {gpu})"),
                    _ => String::new(),
                };
                return format!(
                    "{gpu} holds {}; equal-size mode allows one framebuffer size per GPU and {}: remove those vGPUs to use {}{mixed}",
                    holdings(view),
                    w.has_size,
                    w.it
                );
            }
            if het {
                if let Some(total) = parsed.and_then(|p| super::known::total_framebuffer_gb(&p.model)) {
                    let used: u64 = sizes.iter().map(|(s, n)| s * u64::from(*n)).sum();
                    let total = u64::from(total) * 1024;
                    if used + fb > total {
                        return format!(
                            "mixed-size mode: {} of {} framebuffer in use ({}); {}: remove vGPUs to free it",
                            mib(used),
                            mib(total),
                            holdings(view),
                            w.needs_size
                        );
                    }
                }
            }
            let same = sizes.get(&fb).copied().unwrap_or(0);
            if let Some(max) = t.max_instances.filter(|m| same >= *m) {
                return format!("{gpu} {} ({} of at most {max}): remove one ({})", w.full_for, same, holdings(view));
            }
            if view.free_slots == 0 {
                return match view.interface {
                    Interface::LegacyMdev => format!("{gpu} has no room left ({})", holdings(view)),
                    _ => format!("every VF of {gpu} holds a vGPU ({}/{}): remove one, or enable more VFs", view.slots, view.slots),
                };
            }
            format!("the driver offers {} on no free slot of {gpu} right now", w.name)
        }
        None => format!("the driver lists {} without a parsable vGPU name; vgpuctl cannot tell why it is not available", w.name),
    }
}

/// Why a GPU lists no vGPU types at all.
pub fn why_no_types(view: &GpuView) -> String {
    no_interface(view)
}

fn no_interface(view: &GpuView) -> String {
    let gpu = view.gpu;
    match (view.sriov_total_vfs, view.sriov_num_vfs, view.driver.as_deref()) {
        (Some(t), Some(0), Some("nvidia")) if t > 0 => format!("SR-IOV VFs are not enabled on {gpu}: vgpuctl sriov enable {gpu}"),
        (_, _, Some("nvidia")) => format!("the NVIDIA driver offers no vGPU types on {gpu} (a passthrough/compute driver, not the vGPU manager?)"),
        (_, _, Some(d)) => format!("{gpu} is bound to {d}, not to the NVIDIA vGPU host driver"),
        (_, _, None) => format!("{gpu} is bound to no driver"),
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Verdict {
    pub gpu: PciAddress,
    pub name: Option<String>,
    pub can_create: bool,
    pub creatable: u32,
    /// The first slot a create would use.
    pub next_slot: Option<Slot>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Explanation {
    pub schema_version: u32,
    #[serde(rename = "type")]
    pub type_name: String,
    pub kind: VgpuKind,
    pub framebuffer_mib: u64,
    pub mig_profile: Option<String>,
    /// What the guest needs: driver, licence, and OS limits.
    pub guest_requirements: String,
    pub gpus: Vec<Verdict>,
}

/// What a guest of this type needs, as NVIDIA states it.
pub fn guest_requirements(t: &VgpuTypeName) -> String {
    let base = format!("the NVIDIA vGPU guest driver and a {} licence", t.series.licence());
    match t.kind() {
        VgpuKind::MigBacked => format!("Linux only (MIG-backed vGPUs are not supported in Windows guests); {base}"),
        VgpuKind::TimeSliced => base,
    }
}

pub fn explain(views: &[GpuView], wanted: &VgpuTypeName) -> Explanation {
    let gpus = views
        .iter()
        .map(|v| {
            let base = Verdict { gpu: v.gpu, name: v.name.clone(), can_create: false, creatable: 0, next_slot: None, reason: String::new() };
            if let Some(m) = v.model.as_deref().filter(|m| *m != wanted.model) {
                return Verdict {
                    reason: format!("{} ({}) takes {m} vGPU types; {wanted} is for {} GPUs", v.gpu, v.name.as_deref().unwrap_or("GPU"), wanted.model),
                    ..base
                };
            }
            match v.find_type(wanted) {
                Some(t) if t.creatable > 0 => Verdict {
                    can_create: true,
                    creatable: t.creatable,
                    next_slot: t.slots.first().map(|(s, _)| s.clone()),
                    reason: format!("{} more can be created", t.creatable),
                    ..base
                },
                Some(t) => Verdict { reason: t.why_not.clone().unwrap_or_default(), ..base },
                None if v.interface == Interface::None => Verdict { reason: no_interface(v), ..base },
                None => Verdict { reason: format!("the driver does not offer {wanted} on {}", v.gpu), ..base },
            }
        })
        .collect();
    Explanation {
        schema_version: crate::inventory::SCHEMA_VERSION,
        type_name: wanted.to_string(),
        kind: wanted.kind(),
        framebuffer_mib: wanted.framebuffer_mib(),
        mig_profile: wanted.mig_profile().map(|p| p.to_string()),
        guest_requirements: guest_requirements(wanted),
        gpus,
    }
}

pub fn render(e: &Explanation) -> String {
    let mut out = format!(
        "{} ({}, {} framebuffer{})\n",
        e.type_name,
        match e.kind {
            VgpuKind::TimeSliced => "time-sliced",
            VgpuKind::MigBacked => "MIG-backed",
        },
        mib(e.framebuffer_mib),
        e.mig_profile.as_ref().map(|p| format!(", MIG profile {p}")).unwrap_or_default()
    );
    out.push_str(&format!("  guests: {}\n", e.guest_requirements));
    if e.gpus.is_empty() {
        out.push_str("  no NVIDIA GPUs on this host\n");
    }
    for g in &e.gpus {
        out.push_str(&format!("  {} {}: {}\n", g.gpu, if g.can_create { "yes" } else { "no " }, g.reason));
    }
    out
}
