//! `vgpuctl export --format nova`: the `nova.conf` fragment that hands the
//! host's vGPU types to OpenStack Nova's libvirt driver.
//!
//! Nova gives each physical GPU one mdev type: `[devices] enabled_mdev_types`
//! lists the types, and a `[mdev_<type>]` group per type says which parent
//! addresses (the GPU, or its VFs on SR-IOV GPUs) carry it. Which forms a
//! release accepts (from nova/conf/devices.py and the libvirt driver):
//! - before 24.0.0 (Xena): `enabled_vgpu_types` and `[vgpu_<type>]`;
//! - 24.0.0 (Xena) on: `enabled_mdev_types`, `[mdev_<type>]`, `mdev_class`;
//! - 29.0.0 (2024.1 Caracal) on: `max_instances`, a cap on how many mdevs of
//!   the type the host offers, which SR-IOV GPUs need (each VF reports one).
//!
//! What Nova cannot use is said, never written as config that would not
//! work: GPUs in NVIDIA's vendor-specific VFIO mode (vGPU 17+: the vGPU is a
//! VF driven by nvidia's vfio-pci variant driver, not an mdev), GPUs with
//! more than one type, and MIG-backed types.

use std::collections::BTreeMap;

use crate::apply::config::{HostConfig, Mode};
use crate::host::Host;
use crate::ids::{MdevTypeId, PciAddress};
use crate::inventory::{Inventory, ScanOptions};
use crate::vgpu::view::{self, HostFacts};

/// Which option names a Nova release reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Release {
    /// Stein (19.0.0) to Wallaby (23.x): `enabled_vgpu_types`, `[vgpu_<type>]`.
    BeforeXena,
    /// Xena (24.0.0) to 2023.2 Bobcat (28.x): `enabled_mdev_types`, `mdev_class`.
    Xena,
    /// 2024.1 Caracal (29.0.0) and later: adds `max_instances`.
    Caracal,
}

impl std::str::FromStr for Release {
    type Err = String;

    /// A release name (`wallaby`, `xena`, `2024.1`, `caracal`, `epoxy`…) or
    /// a nova version (`23.2.0`, `29.0.0`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        let old = ["stein", "train", "ussuri", "victoria", "wallaby"];
        let xena = ["xena", "yoga", "zed", "2023.1", "antelope", "2023.2", "bobcat"];
        if old.contains(&l.as_str()) {
            return Ok(Release::BeforeXena);
        }
        if xena.contains(&l.as_str()) {
            return Ok(Release::Xena);
        }
        if let Some((year, _)) = l.split_once('.').filter(|(y, _)| y.len() == 4) {
            if year.parse::<u32>().is_ok_and(|y| y >= 2024) {
                return Ok(Release::Caracal);
            }
        }
        if ["caracal", "dalmatian", "epoxy", "flamingo", "gazpacho"].contains(&l.as_str()) {
            return Ok(Release::Caracal);
        }
        let major = l.split('.').next().and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(m) if (19..24).contains(&m) => Ok(Release::BeforeXena),
            Some(m) if (24..29).contains(&m) => Ok(Release::Xena),
            Some(m) if m >= 29 => Ok(Release::Caracal),
            _ => Err(format!(
                "unknown Nova release {s:?}: give a name (wallaby, xena, 2024.1, epoxy…) or a nova version (23.2.0, 29.0.0); vGPU support in this form starts with Stein (19.0.0)"
            )),
        }
    }
}

/// One type group: the type, where it is, and how many the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeGroup {
    pub mdev_type: MdevTypeId,
    /// The vGPU name the admin configured (`A100D-4C`).
    pub name: String,
    /// Parent addresses: the GPU, or its VFs on SR-IOV GPUs.
    pub addresses: Vec<PciAddress>,
    /// Σ over its GPUs of the type's documented maximum per GPU, when the
    /// parents are VFs (each VF reports one instance, so Nova needs the cap).
    pub max_instances: Option<u32>,
}

/// The export: the groups, and each GPU Nova cannot be given, with why.
#[derive(Debug, Clone, Default)]
pub struct NovaExport {
    pub groups: Vec<TypeGroup>,
    pub not_exported: Vec<(PciAddress, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum NovaError {
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("{0}")]
    Config(String),
}

/// The export for `cfg` on `host`: every GPU the config puts in `vgpu` mode.
pub fn export(host: &Host, cfg: &HostConfig) -> Result<NovaExport, NovaError> {
    let inv = Inventory::scan_with(host, &ScanOptions { usage: false, mig: true })?;
    let views = view::build(&inv, &HostFacts { host });
    let gpus = crate::apply::selectable_gpus(&inv);
    let mut out = NovaExport::default();
    let mut groups: BTreeMap<MdevTypeId, TypeGroup> = BTreeMap::new();
    for spec in &cfg.gpu {
        if spec.mode != Mode::Vgpu {
            continue;
        }
        let chosen = crate::apply::config::select(&spec.select, &gpus).map_err(NovaError::Config)?;
        for gpu in chosen {
            let Some(v) = views.iter().find(|v| v.gpu == gpu) else {
                out.not_exported.push((gpu, "not a vGPU-capable GPU on this host".into()));
                continue;
            };
            match super::mdev_choice(&inv, v, spec, super::Engine::Nova) {
                Ok(None) => out.not_exported.push((gpu, "the config gives it no vGPU type".into())),
                Ok(Some(c)) => {
                    let g = groups.entry(c.mdev_type.clone()).or_insert_with(|| TypeGroup {
                        mdev_type: c.mdev_type,
                        name: c.name,
                        addresses: Vec::new(),
                        max_instances: None,
                    });
                    g.addresses.extend(c.parents);
                    if let Some(m) = c.max_instances {
                        g.max_instances = Some(g.max_instances.unwrap_or(0) + m);
                    }
                }
                Err(why) => out.not_exported.push((gpu, why)),
            }
        }
    }
    out.groups = groups.into_values().collect();
    for g in &mut out.groups {
        g.addresses.sort();
        g.addresses.dedup();
    }
    Ok(out)
}

/// The `nova.conf` text for `release`.
pub fn render(e: &NovaExport, release: Release) -> String {
    let mut out = String::from("# nova.conf fragment generated by vgpuctl export --format nova\n");
    out.push_str(&format!(
        "# for Nova {}\n",
        match release {
            Release::BeforeXena => "Stein (19.0.0) to Wallaby (23.x)",
            Release::Xena => "Xena (24.0.0) to 2023.2 Bobcat (28.x)",
            Release::Caracal => "2024.1 Caracal (29.0.0) or later",
        }
    ));
    for (gpu, why) in &e.not_exported {
        out.push_str(&format!("# not exported: {gpu}: {why}\n"));
    }
    let (list_opt, prefix) = match release {
        Release::BeforeXena => ("enabled_vgpu_types", "vgpu_"),
        _ => ("enabled_mdev_types", "mdev_"),
    };
    let types: Vec<String> = e.groups.iter().map(|g| g.mdev_type.to_string()).collect();
    out.push_str(&format!("\n[devices]\n{list_opt} = {}\n", types.join(", ")));
    for g in &e.groups {
        out.push_str(&format!("\n# {}\n[{prefix}{}]\n", g.name, g.mdev_type));
        let addrs: Vec<String> = g.addresses.iter().map(ToString::to_string).collect();
        out.push_str(&format!("device_addresses = {}\n", addrs.join(", ")));
        if release >= Release::Xena {
            out.push_str("mdev_class = VGPU\n");
        }
        if release >= Release::Caracal {
            if let Some(m) = g.max_instances {
                out.push_str(&format!("max_instances = {m}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_releases_by_name_and_version() {
        for (s, r) in [
            ("wallaby", Release::BeforeXena),
            ("23.2.1", Release::BeforeXena),
            ("Xena", Release::Xena),
            ("2023.2", Release::Xena),
            ("28.0.0", Release::Xena),
            ("2024.1", Release::Caracal),
            ("epoxy", Release::Caracal),
            ("31.0.0", Release::Caracal),
        ] {
            assert_eq!(s.parse::<Release>(), Ok(r), "{s}");
        }
        assert!("queens".parse::<Release>().is_err());
        assert!("17.0.0".parse::<Release>().is_err());
    }
}
