//! The declarative host config, `/etc/vgpuctl/host.toml` by default:
//! what each GPU should be, written once, converged to at every boot.
//!
//! ```toml
//! [[gpu]]
//! select = "0000:18:00.0"        # a PCI address, a GPU UUID, "all", or "model:H100 80GB HBM3"
//! mode = "vgpu"                  # passthrough | vgpu | mig | unmanaged
//! heterogeneous = false          # vgpu: mixed-size mode
//! vgpus = [{ type = "H100-10C", count = 4 }]
//!
//! [[gpu]]
//! select = "0000:2a:00.0"
//! mode = "mig"
//! layout = [{ profile = "3g.40gb", placement = 4 }, { profile = "2g.20gb" }]
//! vgpus = [{ type = "H100-3-40C", count = 1 }]
//!
//! [[mdev]]                       # fixed-UUID mdevs on any parent
//! uuid = "…"
//! parent = "mbochs"
//! type = "mbochs-medium"
//! ```

use serde::{Deserialize, Serialize};

use crate::ids::{MdevParent, MdevTypeId, MdevUuid, PciAddress};

pub const DEFAULT_PATH: &str = "/etc/vgpuctl/host.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Passthrough,
    Vgpu,
    Mig,
    Unmanaged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VgpuCount {
    #[serde(rename = "type")]
    pub type_name: String,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GiSpec {
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub select: String,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heterogeneous: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vgpus: Vec<VgpuCount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layout: Vec<GiSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MdevSpec {
    pub uuid: MdevUuid,
    pub parent: MdevParent,
    #[serde(rename = "type")]
    pub mdev_type: MdevTypeId,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu: Vec<GpuSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mdev: Vec<MdevSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
}

const TOP: &[&str] = &["gpu", "mdev"];
const GPU: &[&str] = &["select", "mode", "heterogeneous", "vgpus", "layout"];
const MDEV: &[&str] = &["uuid", "parent", "type"];
const VGPU: &[&str] = &["type", "count"];
const GI: &[&str] = &["profile", "placement"];

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn check_keys(v: &toml::Value, known: &[&str], at: &str) -> Result<(), String> {
    let Some(t) = v.as_table() else { return Ok(()) };
    for k in t.keys() {
        if !known.contains(&k.as_str()) {
            let nearest = known.iter().min_by_key(|x| distance(k, x)).copied().unwrap_or_default();
            return Err(format!("unknown key {k:?} in {at} (did you mean {nearest:?}? valid keys: {})", known.join(", ")));
        }
    }
    Ok(())
}

/// Parses and checks every key, naming the nearest valid one for typos.
pub fn parse(text: &str, path: &str) -> Result<HostConfig, ConfigError> {
    let err = |msg: String| ConfigError::Invalid { path: path.to_string(), msg };
    let v: toml::Value = text.parse().map_err(|e: toml::de::Error| err(e.to_string()))?;
    check_keys(&v, TOP, "the top level").map_err(err)?;
    for (i, g) in v.get("gpu").and_then(|g| g.as_array()).into_iter().flatten().enumerate() {
        let at = format!("[[gpu]] #{}", i + 1);
        check_keys(g, GPU, &at).map_err(err)?;
        for x in g.get("vgpus").and_then(|x| x.as_array()).into_iter().flatten() {
            check_keys(x, VGPU, &format!("{at} vgpus")).map_err(err)?;
        }
        for x in g.get("layout").and_then(|x| x.as_array()).into_iter().flatten() {
            check_keys(x, GI, &format!("{at} layout")).map_err(err)?;
        }
    }
    for (i, m) in v.get("mdev").and_then(|g| g.as_array()).into_iter().flatten().enumerate() {
        check_keys(m, MDEV, &format!("[[mdev]] #{}", i + 1)).map_err(err)?;
    }
    let c: HostConfig = toml::from_str(text).map_err(|e: toml::de::Error| err(e.message().to_string()))?;
    Ok(c)
}

pub fn load(host: &crate::host::Host, path: &str) -> Result<HostConfig, ConfigError> {
    // The default lives in the host's /etc (relocated with --root); a file
    // given on the command line is taken as is.
    let p = if path == DEFAULT_PATH {
        host.path(path).map_err(|e| ConfigError::Invalid { path: path.into(), msg: e.to_string() })?
    } else {
        std::path::PathBuf::from(path)
    };
    let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
    parse(&text, path)
}

/// One NVIDIA GPU as `select` sees it.
#[derive(Debug, Clone)]
pub struct Selectable {
    pub address: PciAddress,
    /// The name `list` prints (`NVIDIA H100 80GB HBM3`, `Tesla T4`).
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// The model in vGPU type names (`H100`, `A100D`, `T4`).
    pub vgpu_model: Option<String>,
}

/// A model name as admins write it: any case, without the vendor's
/// `NVIDIA `/`Tesla ` prefix.
fn model_key(name: &str) -> String {
    let l = name.trim().to_ascii_lowercase();
    let l = l.strip_prefix("nvidia ").unwrap_or(&l);
    l.strip_prefix("tesla ").unwrap_or(l).trim().to_string()
}

/// Which GPU addresses a `select` names. A selector that names no GPU is an
/// error naming what there is: a config that does not match the host must
/// never read as "nothing to do".
pub fn select(sel: &str, gpus: &[Selectable]) -> Result<Vec<PciAddress>, String> {
    let present = || {
        let names: Vec<String> = gpus.iter().map(|g| format!("{} ({})", g.address, g.name.as_deref().unwrap_or("unknown model"))).collect();
        if names.is_empty() {
            "this host has no NVIDIA GPU".to_string()
        } else {
            format!("this host has {}", names.join(", "))
        }
    };
    if sel == "all" {
        if gpus.is_empty() {
            return Err(format!("select \"all\": {}", present()));
        }
        return Ok(gpus.iter().map(|g| g.address).collect());
    }
    if let Some(model) = sel.strip_prefix("model:") {
        // The name `list` prints, with or without the vendor prefix, or the
        // model of the GPU's vGPU types (`model:T4` for a Tesla T4).
        let m = model_key(model);
        let hits: Vec<PciAddress> = gpus
            .iter()
            .filter(|g| g.name.as_deref().is_some_and(|n| model_key(n) == m) || g.vgpu_model.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(&m)))
            .map(|g| g.address)
            .collect();
        if hits.is_empty() {
            return Err(format!("select {sel:?} matches no GPU: {}", present()));
        }
        return Ok(hits);
    }
    if sel.starts_with("GPU-") {
        let u = crate::parse::gpu_uuid(sel).ok_or_else(|| format!("select {sel:?}: not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"))?;
        return match gpus.iter().find(|g| g.uuid.as_deref() == Some(u.as_str())) {
            Some(g) => Ok(vec![g.address]),
            None => Err(format!("select {sel:?}: no GPU with that UUID here (`vgpuctl list --json` shows each GPU's uuid)")),
        };
    }
    let a: PciAddress =
        sel.parse().map_err(|e: crate::ids::IdError| format!("select {sel:?}: {e}; use a PCI address, a GPU UUID, \"all\" or \"model:<name>\""))?;
    if !gpus.iter().any(|g| g.address == a) {
        return Err(format!("select {sel:?}: no such NVIDIA GPU: {}", present()));
    }
    Ok(vec![a])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unknown_keys_name_the_nearest_valid_one() {
        let e = parse("[[gpu]]\nselect = \"all\"\nmode = \"vgpu\"\nvgpu = []\n", "h.toml").unwrap_err().to_string();
        assert!(e.contains("unknown key \"vgpu\"") && e.contains("did you mean \"vgpus\""), "{e}");
        let e = parse("[[mdev]]\nuuid = \"11111111-2222-3333-4444-555555555555\"\nparnet = \"mbochs\"\ntype = \"x\"\n", "h.toml").unwrap_err().to_string();
        assert!(e.contains("did you mean \"parent\""), "{e}");
        let e = parse("[[gpu]]\nselect = \"all\"\nmode = \"vgpu\"\nvgpus = [{ typ = \"H100-10C\", count = 1 }]\n", "h.toml").unwrap_err().to_string();
        assert!(e.contains("did you mean \"type\""), "{e}");
        let e = parse("[[gpu]]\nselect = \"all\"\nmode = \"fast\"\n", "h.toml").unwrap_err().to_string();
        assert!(e.contains("unknown variant"), "{e}");
        let e = parse("[[mdev]]\nuuid = \"../x\"\nparent = \"mbochs\"\ntype = \"x\"\n", "h.toml").unwrap_err().to_string();
        assert!(e.contains("invalid mdev UUID"), "{e}");
    }

    #[test]
    fn test_round_trip() {
        let text = "[[gpu]]\nselect = \"0000:18:00.0\"\nmode = \"mig\"\nlayout = [{ profile = \"3g.40gb\", placement = 4 }]\nvgpus = [{ type = \"H100-3-40C\", count = 1 }]\n\n[[mdev]]\nuuid = \"11111111-2222-3333-4444-555555555555\"\nparent = \"mbochs\"\ntype = \"mbochs-large\"\n";
        let c = parse(text, "x").unwrap();
        let back = toml::to_string(&c).unwrap();
        assert_eq!(parse(&back, "x").unwrap(), c);
    }
}
