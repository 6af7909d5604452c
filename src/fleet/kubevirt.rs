//! `vgpuctl export --format kubevirt`: the part of a KubeVirt CR
//! (`kubevirt.io/v1`, kind `KubeVirt`) that hands this host's GPUs to
//! KubeVirt, from the host config checked against the host:
//! - `permittedHostDevices.mediatedDevices`: each time-sliced vGPU type, by
//!   the name its mdev type gives in sysfs (`mdevNameSelector`, what
//!   KubeVirt's device plugin matches), with the resource name in NVIDIA's
//!   convention (`nvidia.com/` + the name, spaces as `_`: `nvidia.com/GRID_T4-4Q`);
//! - `permittedHostDevices.pciHostDevices`: each passthrough GPU model, by
//!   `VENDOR:DEVICE` (`10DE:26B9`) and `nvidia.com/<model>`;
//! - `mediatedDevicesConfiguration.nodeMediatedDeviceTypes`: the mdev types
//!   virt-handler should create on this node (by `kubernetes.io/hostname`).
//!
//! As for Nova, what KubeVirt cannot be given this way is said and left out:
//! vendor-specific VFIO (vGPU 17+) GPUs, GPUs with more than one type, and
//! MIG-backed types.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::apply::config::{HostConfig, Mode};
use crate::host::Host;
use crate::ids::PciAddress;
use crate::inventory::{Inventory, ScanOptions};
use crate::vgpu::view::{self, HostFacts};

/// The export: the CR, and each GPU left out with why.
#[derive(Debug, Clone)]
pub struct KubevirtExport {
    pub cr: Value,
    pub not_exported: Vec<(PciAddress, String)>,
    /// Nothing to hand over at all.
    pub empty: bool,
}

/// NVIDIA's resource-name convention: `nvidia.com/` + the name, spaces as
/// underscores, only the characters a Kubernetes resource name may hold.
pub fn resource_name(name: &str) -> String {
    let tail: String = name.trim().chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '_' }).collect();
    format!("nvidia.com/{tail}")
}

pub fn export(host: &Host, cfg: &HostConfig, node: &str) -> Result<KubevirtExport, super::nova::NovaError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let views = view::build(&inv, &HostFacts { host });
    let gpus = crate::apply::selectable_gpus(&inv);
    let mut not_exported = Vec::new();
    // mdev name selector → (resource name, mdev type ids)
    let mut mediated: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    // VENDOR:DEVICE → resource name
    let mut pci: BTreeMap<String, String> = BTreeMap::new();
    for spec in &cfg.gpu {
        let chosen = crate::apply::config::select(&spec.select, &gpus).map_err(super::nova::NovaError::Config)?;
        for gpu in chosen {
            let Some(g) = inv.gpus.iter().find(|g| g.address == gpu) else { continue };
            match spec.mode {
                Mode::Passthrough => {
                    let selector = format!("{}:{}", hex4(&g.vendor_id), hex4(&g.device_id));
                    let model = g.name.clone().unwrap_or_else(|| selector.replace(':', "_"));
                    pci.insert(selector, resource_name(&model));
                }
                Mode::Vgpu => {
                    let Some(v) = views.iter().find(|v| v.gpu == gpu) else {
                        not_exported.push((gpu, "not a vGPU-capable GPU on this host".into()));
                        continue;
                    };
                    let c = match super::mdev_choice(&inv, v, spec, super::Engine::Kubevirt) {
                        Ok(Some(c)) => c,
                        Ok(None) => continue,
                        Err(why) => {
                            not_exported.push((gpu, why));
                            continue;
                        }
                    };
                    // The selector is the type's sysfs name, as the device plugin reads it.
                    let sysfs_name = inv
                        .mdev_parents
                        .iter()
                        .filter(|p| p.name.pci_address().is_some_and(|a| c.parents.contains(&a)))
                        .flat_map(|p| p.types.iter())
                        .find(|t| t.id == c.mdev_type)
                        .and_then(|t| t.name.clone())
                        .unwrap_or_else(|| c.name.clone());
                    let e = mediated.entry(sysfs_name.clone()).or_insert_with(|| (resource_name(&sysfs_name), Vec::new()));
                    if !e.1.contains(&c.mdev_type.to_string()) {
                        e.1.push(c.mdev_type.to_string());
                    }
                }
                Mode::Mig | Mode::Unmanaged => {}
            }
        }
    }
    let mut permitted = serde_json::Map::new();
    if !mediated.is_empty() {
        permitted.insert(
            "mediatedDevices".into(),
            Value::Array(mediated.iter().map(|(sel, (res, _))| json!({ "mdevNameSelector": sel, "resourceName": res })).collect()),
        );
    }
    if !pci.is_empty() {
        permitted
            .insert("pciHostDevices".into(), Value::Array(pci.iter().map(|(sel, res)| json!({ "pciVendorSelector": sel, "resourceName": res })).collect()));
    }
    let types: Vec<String> = mediated.values().flat_map(|(_, t)| t.iter().cloned()).collect();
    let mut configuration = json!({ "permittedHostDevices": Value::Object(permitted) });
    if !types.is_empty() {
        configuration["mediatedDevicesConfiguration"] =
            json!({ "nodeMediatedDeviceTypes": [ { "nodeSelector": { "kubernetes.io/hostname": node }, "mediatedDeviceTypes": types } ] });
    }
    let cr = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": { "name": "kubevirt", "namespace": "kubevirt" },
        "spec": { "configuration": configuration },
    });
    Ok(KubevirtExport { cr, not_exported, empty: mediated.is_empty() && pci.is_empty() })
}

/// `0x10de` → `10DE`.
fn hex4(id: &str) -> String {
    id.trim_start_matches("0x").to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_resource_names_follow_nvidias_convention() {
        assert_eq!(resource_name("GRID T4-4Q"), "nvidia.com/GRID_T4-4Q");
        assert_eq!(resource_name("RTX A6000"), "nvidia.com/RTX_A6000");
        assert_eq!(resource_name("H100 80GB HBM3"), "nvidia.com/H100_80GB_HBM3");
        assert_eq!(resource_name("a/b"), "nvidia.com/a_b");
    }
}
