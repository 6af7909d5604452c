//! NVIDIA vGPU type names, parsed: `NVIDIA H100-1-10C`, `GRID A100D-4C`,
//! `L40S-2Q`, `A100D-1-10CME`.
//!
//! Time-sliced: `<GPU>-<GB><series>`; MIG-backed: `<GPU>-<slices>-<GB>C[ME]`
//! where the MIG profile is `<slices>g.<GB>gb[+me]`. Series: C (compute),
//! Q (workstation), B (business), A (apps). Newer drivers print `NVIDIA `
//! before the name, older ones `GRID ` (NVIDIA vgpu-device-manager pkg/types).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::ids::MigProfile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub enum Series {
    /// Compute (AI/HPC): the only series on H100/A100 and the only one MIG-backed.
    C,
    /// Virtual workstation.
    Q,
    /// Virtual PC / business.
    B,
    /// Virtual applications.
    A,
}

impl Series {
    fn from_char(c: char) -> Option<Self> {
        match c {
            'C' => Some(Self::C),
            'Q' => Some(Self::Q),
            'B' => Some(Self::B),
            'A' => Some(Self::A),
            _ => None,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Self::C => 'C',
            Self::Q => 'Q',
            Self::B => 'B',
            Self::A => 'A',
        }
    }

    /// The guest driver and licence an admin must provide.
    pub fn licence(self) -> &'static str {
        match self {
            Self::C => "NVIDIA AI Enterprise (vCS)",
            Self::Q => "NVIDIA RTX Virtual Workstation",
            Self::B => "NVIDIA Virtual PC",
            Self::A => "NVIDIA Virtual Applications",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VgpuKind {
    TimeSliced,
    MigBacked,
}

/// A parsed vGPU type name, without the `NVIDIA `/`GRID ` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VgpuTypeName {
    /// The GPU part: `H100`, `A100D`, `L40S`.
    pub model: String,
    /// GPU slices for MIG-backed types (`H100-3-40C` → 3).
    pub mig_slices: Option<u8>,
    pub framebuffer_gb: u32,
    pub series: Series,
    /// `ME`: the MIG profile with media extensions (`1g.10gb+me`).
    pub media_extensions: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid vGPU type name {value:?}: {why} (expected e.g. H100-10C, A100D-3-40C, NVIDIA L40S-2Q)")]
pub struct TypeNameError {
    pub value: String,
    pub why: &'static str,
}

impl VgpuTypeName {
    pub fn kind(&self) -> VgpuKind {
        if self.mig_slices.is_some() {
            VgpuKind::MigBacked
        } else {
            VgpuKind::TimeSliced
        }
    }

    pub fn framebuffer_mib(&self) -> u64 {
        u64::from(self.framebuffer_gb) * 1024
    }

    /// The MIG GPU-instance profile a MIG-backed type sits on.
    pub fn mig_profile(&self) -> Option<MigProfile> {
        let slices = self.mig_slices?;
        Some(MigProfile {
            compute_slices: None,
            gpu_slices: slices,
            memory_gb: u16::try_from(self.framebuffer_gb).ok()?,
            attributes: if self.media_extensions { vec!["me".into()] } else { vec![] },
        })
    }

    /// Same type, ignoring the prefix and letter case.
    pub fn matches(&self, other: &str) -> bool {
        other.parse::<VgpuTypeName>().is_ok_and(|o| o == *self)
    }
}

/// A type name as an admin writes it (`A100D-4C`), from the name the driver
/// gives (`GRID A100D-4C`, `NVIDIA H100-20C`); other names as they are.
pub fn short_name(driver_name: &str) -> String {
    driver_name.parse::<VgpuTypeName>().map(|t| t.to_string()).unwrap_or_else(|_| driver_name.trim().to_string())
}

impl FromStr for VgpuTypeName {
    type Err = TypeNameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |why| TypeNameError { value: value.to_string(), why };
        if value.len() > 64 || value.chars().any(|c| c.is_control()) {
            return Err(err("too long or contains control characters"));
        }
        let s = value.trim();
        let s = s.strip_prefix("NVIDIA ").or_else(|| s.strip_prefix("GRID ")).unwrap_or(s);
        let upper = s.to_ascii_uppercase();
        if upper.contains(' ') || upper.contains('/') {
            return Err(err("spaces and '/' are not part of a type name"));
        }
        let (rest, last) = upper.rsplit_once('-').ok_or_else(|| err("missing '-<size><series>'"))?;
        let (last, media_extensions) = match last.strip_suffix("ME") {
            Some(l) => (l, true),
            None => (last, false),
        };
        let series_char = last.chars().last().ok_or_else(|| err("empty size"))?;
        let series = Series::from_char(series_char).ok_or_else(|| err("series must be C, Q, B or A"))?;
        let gb = &last[..last.len() - 1];
        if gb.is_empty() || gb.len() > 3 || !gb.bytes().all(|b| b.is_ascii_digit()) || gb.starts_with('0') {
            return Err(err("framebuffer size must be a whole number of GB"));
        }
        let framebuffer_gb: u32 = gb.parse().map_err(|_| err("framebuffer size out of range"))?;
        // A numeric segment before the size is the MIG slice count.
        let (model, mig_slices) = match rest.rsplit_once('-') {
            Some((m, n)) if !n.is_empty() && n.len() == 1 && n.bytes().all(|b| b.is_ascii_digit()) => {
                let slices: u8 = n.parse().map_err(|_| err("bad slice count"))?;
                if !(1..=8).contains(&slices) {
                    return Err(err("MIG slice count must be 1-8"));
                }
                (m, Some(slices))
            }
            _ => (rest, None),
        };
        if media_extensions && mig_slices.is_none() {
            return Err(err("ME (media extensions) exists only for MIG-backed types"));
        }
        if mig_slices.is_some() && series != Series::C {
            return Err(err("MIG-backed types are C-series only"));
        }
        if model.is_empty() || model.len() > 24 || !model.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("GPU model must be letters and digits"));
        }
        Ok(Self { model: model.to_string(), mig_slices, framebuffer_gb, series, media_extensions })
    }
}

impl fmt::Display for VgpuTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.model)?;
        if let Some(s) = self.mig_slices {
            write!(f, "{s}-")?;
        }
        write!(f, "{}{}", self.framebuffer_gb, self.series.letter())?;
        if self.media_extensions {
            f.write_str("ME")?;
        }
        Ok(())
    }
}

crate::ids::string_schema!(VgpuTypeName, "VgpuTypeName", "A vGPU type name as NVIDIA writes it: H100-20C, A100D-4C");

impl Serialize for VgpuTypeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VgpuTypeName {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn test_time_sliced_names_from_both_prefixes() {
        let t = p("NVIDIA H100-10C");
        assert_eq!((t.model.as_str(), t.framebuffer_gb, t.series, t.kind()), ("H100", 10, Series::C, VgpuKind::TimeSliced));
        assert_eq!(t.framebuffer_mib(), 10240);
        assert_eq!(p("GRID A100D-4C").model, "A100D");
        assert_eq!(p("NVIDIA L40S-2Q").series, Series::Q);
        assert_eq!(p("GRID T4-1B").series, Series::B);
        assert_eq!(p("GRID V100-8C").to_string(), "V100-8C");
        assert!(p("h100-10c").matches("NVIDIA H100-10C"));
    }

    #[test]
    fn test_mig_backed_names_map_to_profiles() {
        for (name, profile) in [
            ("NVIDIA H100-1-10C", "1g.10gb"),
            ("NVIDIA H100-1-10CME", "1g.10gb+me"),
            ("H100-1-20C", "1g.20gb"),
            ("H100-2-20C", "2g.20gb"),
            ("H100-3-40C", "3g.40gb"),
            ("H100-4-40C", "4g.40gb"),
            ("H100-7-80C", "7g.80gb"),
            ("GRID A100D-3-40C", "3g.40gb"),
            ("NVIDIA H200X-1-18C", "1g.18gb"),
        ] {
            let t = p(name);
            assert_eq!(t.kind(), VgpuKind::MigBacked, "{name}");
            assert_eq!(t.mig_profile().unwrap().to_string(), profile, "{name}");
        }
        assert_eq!(p("A100D-1-10CME").to_string(), "A100D-1-10CME");
    }

    #[test]
    fn test_hostile_and_malformed_names_are_rejected() {
        for bad in [
            "",
            "H100",
            "H100-",
            "H100-10",
            "H100-10X",
            "H100-010C",
            "-10C",
            "H100-3-40Q",
            "H100-10CME",
            "H100-9-10C",
            "../H100-10C",
            "H100/x-10C",
            "H100 -10C",
            "NVIDIA  H100-10C",
            "H100-10C\n",
            "H100-1000C",
        ] {
            assert!(bad.parse::<VgpuTypeName>().is_err(), "accepted {bad:?}");
        }
    }
}
