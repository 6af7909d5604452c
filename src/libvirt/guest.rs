//! The guest OS a domain runs, and what that allows: NVIDIA supports
//! MIG-backed vGPUs in Linux guests only, and every vGPU needs the vGPU
//! guest driver and a licence of its series. Used where an admin decides:
//! `vm xml`/`vm define` (`--os`), `vm attach` (the domain's libosinfo id),
//! `vm explain`/`vm show`.

use serde::Serialize;

use crate::vgpu::explain::guest_requirements;
use crate::vgpu::typename::{VgpuKind, VgpuTypeName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestOs {
    Linux,
    Windows,
}

impl GuestOs {
    /// The libosinfo id virt-install and virt-manager write into
    /// `<metadata><libosinfo:os id='…'/>`.
    pub fn from_libosinfo(id: &str) -> Option<Self> {
        let id = id.to_ascii_lowercase();
        if id.contains("microsoft.com/win") {
            Some(GuestOs::Windows)
        } else if [
            "ubuntu.com",
            "debian.org",
            "redhat.com",
            "fedoraproject.org",
            "centos.org",
            "suse.com",
            "opensuse.org",
            "rockylinux.org",
            "almalinux.org",
            "archlinux.org",
            "oracle.com/ol",
            "kernel.org",
        ]
        .iter()
        .any(|d| id.contains(d))
        {
            Some(GuestOs::Linux)
        } else {
            None
        }
    }

    /// The id written into generated domains, so libvirt tools (and a
    /// later `vm attach`) know the guest.
    pub fn libosinfo_id(self) -> &'static str {
        match self {
            GuestOs::Linux => "http://libosinfo.org/linux/2022",
            GuestOs::Windows => "http://microsoft.com/win/11",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{type_name} is a MIG-backed vGPU: NVIDIA supports those in Linux guests only, and this domain runs Windows. Use a time-sliced type (e.g. a Q- or B-series one) for Windows, or a Linux guest")]
pub struct GuestError {
    pub type_name: String,
}

/// Refuses what the guest OS cannot use; returns what the admin should
/// know (driver and licence per type).
pub fn check(os: Option<GuestOs>, types: &[VgpuTypeName]) -> Result<Vec<String>, GuestError> {
    let mut notes = Vec::new();
    for t in types {
        if os == Some(GuestOs::Windows) && t.kind() == VgpuKind::MigBacked {
            return Err(GuestError { type_name: t.to_string() });
        }
        let note = format!("{t}: the guest needs {}", guest_requirements(t));
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_windows_refuses_mig_backed_and_every_type_names_its_licence() {
        let mig: VgpuTypeName = "H100-3-40C".parse().unwrap();
        let q: VgpuTypeName = "L40S-4Q".parse().unwrap();
        let e = check(Some(GuestOs::Windows), &[q.clone(), mig.clone()]).unwrap_err();
        assert!(e.to_string().contains("H100-3-40C") && e.to_string().contains("Linux guests only"), "{e}");
        let notes = check(Some(GuestOs::Linux), &[mig.clone(), q.clone(), q]).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("Linux only"));
        assert!(check(None, &[mig]).is_ok(), "unknown OS: warn, do not refuse");
        assert_eq!(GuestOs::from_libosinfo("http://microsoft.com/win/2k22"), Some(GuestOs::Windows));
        assert_eq!(GuestOs::from_libosinfo("http://ubuntu.com/ubuntu/24.04"), Some(GuestOs::Linux));
        assert_eq!(GuestOs::from_libosinfo("http://example.org/x"), None);
    }
}
