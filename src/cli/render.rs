//! Human views of the inventory.

use std::fmt::Write;

use super::table::{opt, Table};
use crate::inventory::{Gpu, Inventory};
use crate::parse::MigModeState;

fn mig_text(g: &Gpu) -> String {
    match g.mig {
        None => "-".into(),
        Some(m) if m.current == m.pending => state(m.current).into(),
        Some(m) => format!("{}->{} (pending)", state(m.current), state(m.pending)),
    }
}

fn state(s: MigModeState) -> &'static str {
    match s {
        MigModeState::Enabled => "enabled",
        MigModeState::Disabled => "disabled",
        MigModeState::NotSupported => "n/a",
    }
}

fn model(g: &Gpu) -> String {
    let ids = format!("{}:{}", g.vendor_id.trim_start_matches("0x"), g.device_id.trim_start_matches("0x"));
    match (&g.vendor, &g.name) {
        (Some(v), Some(n)) => format!("{v} {n}"),
        (Some(v), None) => format!("{v} [{ids}]"),
        _ => ids,
    }
}

fn sriov_text(g: &Gpu) -> String {
    let Some(s) = &g.sriov else { return "-".into() };
    let busy = s.vfs.iter().filter(|vf| vf.vgpu.as_ref().is_some_and(|v| v.current_type.is_some())).count();
    if s.vfs.iter().any(|vf| vf.vgpu.is_some()) {
        format!("{}/{} VFs, {busy} with vGPU", s.num_vfs, s.total_vfs)
    } else {
        format!("{}/{} VFs", s.num_vfs, s.total_vfs)
    }
}

pub fn list(inv: &Inventory) -> String {
    let mut out = String::new();
    let mut t = Table::new(&["GPU", "MODEL", "DRIVER", "NUMA", "IOMMU", "BOOT_VGA", "SR-IOV", "MIG", "MDEV"]);
    for g in &inv.gpus {
        let vf_parents = g.sriov.as_ref().map(|s| s.vfs.iter().filter(|v| v.mdev_parent).count()).unwrap_or(0);
        let mdev = match (g.mdev_parent, vf_parents) {
            (true, _) => "parent".to_string(),
            (false, 0) => "-".to_string(),
            (false, n) => format!("{n} VF parents"),
        };
        t.row(vec![
            g.address.to_string(),
            model(g),
            opt(&g.driver),
            opt(&g.numa_node),
            g.iommu_group
                .as_ref()
                .map(|grp| if grp.members.len() > 1 { format!("{} ({} devices)", grp.id, grp.members.len()) } else { grp.id.to_string() })
                .unwrap_or_else(|| "-".into()),
            match g.boot_vga {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "-".into(),
            },
            sriov_text(g),
            mig_text(g),
            mdev,
        ]);
    }
    if t.is_empty() {
        out.push_str("No GPU-class PCI devices.\n");
    } else {
        out.push_str(&t.render());
    }
    match &inv.nvidia_driver {
        Some(d) => {
            let _ = writeln!(
                out,
                "\nNVIDIA driver {}{}{}",
                d.version,
                if d.open_kernel_module { ", open kernel module" } else { "" },
                if d.vgpu_host { ", vGPU host" } else { "" }
            );
        }
        None => out.push_str("\nNVIDIA driver: not loaded\n"),
    }
    let pci_parent_count = inv.mdev_parents.iter().filter(|p| p.name.pci_address().is_some()).count();
    let other: Vec<_> = inv.mdev_parents.iter().filter(|p| p.name.pci_address().is_none()).collect();
    if !inv.mdev_parents.is_empty() {
        let _ = writeln!(out, "\nmdev parents: {} ({} PCI)", inv.mdev_parents.len(), pci_parent_count);
        for p in other {
            let types: Vec<String> = p
                .types
                .iter()
                .map(|t| {
                    let name = t.name.as_deref().map(crate::vgpu::typename::short_name);
                    format!("{}: {} free", crate::table::type_cell(Some(t.id.as_str()), name.as_deref()), opt(&t.available_instances))
                })
                .collect();
            let _ = writeln!(out, "  {}: {}", p.name, types.join(", "));
        }
    }
    if !inv.mdevs.is_empty() {
        let mut t = Table::new(&["MDEV", "PARENT", "TYPE", "IOMMU", "IN USE"]);
        for m in &inv.mdevs {
            // The type's name from its parent's listing (nvidia-709 is A100D-4C).
            let name = inv
                .mdev_parents
                .iter()
                .filter(|p| Some(&p.name) == m.parent.as_ref())
                .flat_map(|p| p.types.iter())
                .find(|t| Some(&t.id) == m.type_id.as_ref())
                .and_then(|t| t.name.as_deref())
                .map(crate::vgpu::typename::short_name);
            t.row(vec![
                m.uuid.to_string(),
                opt(&m.parent),
                crate::table::type_cell(m.type_id.as_ref().map(|t| t.as_str()), name.as_deref()),
                opt(&m.iommu_group),
                match &m.used_by {
                    Some(u) => format!("in use (pid {}{})", u.pid, u.vm.as_ref().map(|v| format!(", VM {v}")).unwrap_or_default()),
                    None => crate::table::in_use(m.in_use).to_string(),
                },
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}
