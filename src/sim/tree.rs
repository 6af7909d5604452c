//! Writes a sysfs-shaped tree: real directories under /sys/devices, the
//! /sys/bus and /sys/class views as relative symlinks, exactly as the kernel
//! lays them out, so the reader cannot tell it from the real thing.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::ids::PciAddress;

pub struct Tree {
    root: PathBuf,
    /// The last IOMMU group number handed out; the kernel numbers groups in
    /// discovery order, and VFs enabled later get the next free numbers.
    last_group: std::cell::Cell<u32>,
}

/// One PCI function to put into the tree.
pub struct PciFn<'a> {
    pub address: PciAddress,
    /// The device's directory under /sys/devices, e.g. `pci0000:17/0000:17:01.0/0000:18:00.0`.
    pub devpath: String,
    pub vendor: u32,
    pub device: u32,
    pub subsystem: (u32, u32),
    pub class: u32,
    pub driver: Option<&'a str>,
    pub boot_vga: Option<bool>,
    pub numa_node: i32,
    pub iommu_group: Option<u32>,
}

impl Tree {
    pub fn create(root: &Path) -> io::Result<Self> {
        if root.exists() && fs::read_dir(root)?.next().is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not empty", root.display())));
        }
        fs::create_dir_all(root)?;
        Ok(Self { root: root.to_path_buf(), last_group: std::cell::Cell::new(0) })
    }

    /// An existing simulated tree, to change it the way the kernel would.
    pub fn open(root: &Path) -> io::Result<Self> {
        let last = fs::read_dir(root.join("sys/kernel/iommu_groups"))
            .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).max().unwrap_or(0))
            .unwrap_or(0);
        Ok(Self { root: root.to_path_buf(), last_group: std::cell::Cell::new(last) })
    }

    pub fn next_group(&self) -> u32 {
        self.last_group.set(self.last_group.get() + 1);
        self.last_group.get()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn abs(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    pub fn write(&self, host_path: &str, contents: &str) -> io::Result<()> {
        let p = self.abs(host_path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(p, contents)
    }

    pub fn mkdir(&self, host_path: &str) -> io::Result<()> {
        fs::create_dir_all(self.abs(host_path))
    }

    /// A symlink at `link` pointing at `target`, both host paths, written as
    /// a relative link the way sysfs does it.
    pub fn link(&self, link: &str, target: &str) -> io::Result<()> {
        let lp = self.abs(link);
        if let Some(parent) = lp.parent() {
            fs::create_dir_all(parent)?;
        }
        let rel = relative(Path::new(link).parent().unwrap_or(Path::new("/")), Path::new(target));
        std::os::unix::fs::symlink(rel, lp)
    }

    pub fn pci(&self, f: &PciFn<'_>) -> io::Result<String> {
        let dir = format!("/sys/devices/{}", f.devpath);
        self.write(&format!("{dir}/vendor"), &format!("0x{:04x}\n", f.vendor))?;
        self.write(&format!("{dir}/device"), &format!("0x{:04x}\n", f.device))?;
        self.write(&format!("{dir}/subsystem_vendor"), &format!("0x{:04x}\n", f.subsystem.0))?;
        self.write(&format!("{dir}/subsystem_device"), &format!("0x{:04x}\n", f.subsystem.1))?;
        self.write(&format!("{dir}/class"), &format!("0x{:06x}\n", f.class))?;
        self.write(&format!("{dir}/numa_node"), &format!("{}\n", f.numa_node))?;
        self.write(&format!("{dir}/driver_override"), "(null)\n")?;
        if let Some(b) = f.boot_vga {
            self.write(&format!("{dir}/boot_vga"), if b { "1\n" } else { "0\n" })?;
        }
        // The driver the kernel would bind on drivers_probe without an override.
        let natural = match f.driver {
            Some("vfio-pci") if f.vendor == 0x10de => Some("nvidia"),
            other => other,
        };
        if let Some(n) = natural {
            self.write(&format!("{dir}/{}", super::behaviour::DEFAULT_DRIVER), n)?;
        }
        if let Some(d) = f.driver {
            self.mkdir(&format!("/sys/bus/pci/drivers/{d}"))?;
            self.link(&format!("{dir}/driver"), &format!("/sys/bus/pci/drivers/{d}"))?;
            self.link(&format!("/sys/bus/pci/drivers/{d}/{}", f.address), &dir)?;
        }
        if let Some(g) = f.iommu_group {
            self.link(&format!("{dir}/iommu_group"), &format!("/sys/kernel/iommu_groups/{g}"))?;
            self.link(&format!("/sys/kernel/iommu_groups/{g}/devices/{}", f.address), &dir)?;
            if f.driver == Some("vfio-pci") {
                self.write(&format!("/dev/vfio/{g}"), "")?;
                self.write("/dev/vfio/vfio", "")?;
            }
        }
        self.link(&format!("/sys/bus/pci/devices/{}", f.address), &dir)?;
        Ok(dir)
    }
}

/// The relative path from directory `from` to `to` (both absolute).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_relative_matches_sysfs_links() {
        assert_eq!(
            relative(Path::new("/sys/bus/pci/devices"), Path::new("/sys/devices/pci0000:00/0000:00:06.0")),
            PathBuf::from("../../../devices/pci0000:00/0000:00:06.0")
        );
        assert_eq!(
            relative(Path::new("/sys/devices/pci0000:00/0000:00:06.0"), Path::new("/sys/bus/pci/drivers/nvidia")),
            PathBuf::from("../../../bus/pci/drivers/nvidia")
        );
    }
}
