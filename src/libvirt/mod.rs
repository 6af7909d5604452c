//! libvirt: domain XML from `xml-templates/`, vgpuctl's metadata, and reading
//! domain XML back (for the hook and `vm show`). Talking to libvirtd itself
//! lives in the separate `vgpuctl-libvirt` helper (libvirt-helper/), so this
//! binary never links libvirt.

pub mod domain_xml;
pub mod generate;
pub mod guest;
pub mod templates;
