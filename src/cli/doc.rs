//! The `--json` contract. Every document a command prints is a
//! [`Document`]: an object with `schema_version`, whose JSON Schema is
//! generated from the Rust type (schemars) and published under docs/schema/
//! (tests/json_contract.rs regenerates and compares them, and validates
//! every command's output against its schema). A document type that is not
//! listed in [`documents!`] cannot be printed, so no output goes unschema'd.

use schemars::JsonSchema;
use serde::Serialize;

pub use crate::inventory::SCHEMA_VERSION;

/// A `--json` document; `NAME` is its schema's file name under docs/schema/.
pub trait Document: Serialize {
    const NAME: &'static str;
}

/// The text `--json` prints: the document, pretty, one trailing newline.
/// The libvirt helper prints its documents with this too.
pub fn render<D: Document>(d: &D) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(d)?;
    text.push('\n');
    Ok(text)
}

/// `vm define --json` (printed by vgpuctl-libvirt).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VmDefined {
    pub name: String,
    /// libvirt's UUID of the domain.
    pub uuid: String,
    pub defined: bool,
}

/// `vm attach --json` (printed by vgpuctl-libvirt).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VmAttached {
    pub domain: String,
    /// The devices attached, as the domain's metadata records them.
    pub devices: Vec<crate::libvirt::generate::DeviceSpec>,
    /// To the running domain (its devices made now, as a start would).
    pub live: bool,
    /// To the persistent definition.
    pub persistent: bool,
}

/// `vm detach --json` (printed by vgpuctl-libvirt).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VmDetached {
    pub domain: String,
    pub live: bool,
    pub persistent: bool,
    /// The device vgpuctl had made for the domain was freed with it.
    pub freed: bool,
}

/// A body that has no `schema_version` of its own, given one.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Versioned<T> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub body: T,
}

impl<T> Versioned<T> {
    pub fn new(body: T) -> Self {
        Self { schema_version: SCHEMA_VERSION, body }
    }
}

/// With `--json`, a failure: the last line of stderr.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDoc {
    pub schema_version: u32,
    /// The message with its cause chain, as the plain line says it.
    pub error: String,
    /// `usage` (64), `refused` (3), `unavailable` (4) or `failed` (1).
    pub kind: ErrorKind,
    pub exit_code: i32,
    /// The identifiers the message names (PCI addresses, mdev and GPU UUIDs),
    /// in the kernel's form, for a script to act on without parsing prose.
    pub items: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Usage,
    Refused,
    Unavailable,
    Failed,
}

/// The identifiers a message names, in the kernel's form: PCI addresses
/// (any accepted spelling), mdev UUIDs and GPU UUIDs, each once.
pub fn named_items(message: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let tokens = message.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '\'' | '`' | '[' | ']' | '{' | '}' | '='));
    for t in tokens {
        let t = t.trim_end_matches([':', '.']);
        let item = if let Some(u) = crate::parse::gpu_uuid(t) {
            Some(u)
        } else if let Ok(a) = t.parse::<crate::ids::PciAddress>() {
            // Only the full forms: "3.2" or "18:00" in prose are not addresses.
            t.contains(':').then(|| a.to_string())
        } else {
            t.parse::<crate::ids::MdevUuid>().ok().map(|u| u.to_string())
        };
        if let Some(i) = item.filter(|i| !out.contains(i)) {
            out.push(i);
        }
    }
    out
}

macro_rules! documents {
    ($($ty:ty => $name:literal,)*) => {
        $(impl Document for $ty { const NAME: &'static str = $name; })*

        /// Every document's name and schema, in a fixed order.
        pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
            vec![$(($name, schemars::schema_for!($ty))),*]
        }
    };
}

use super::{mig, vgpu};
use crate::vfio::passthrough as pt;

documents! {
    ErrorDoc => "error",
    VersionDoc => "version",
    crate::inventory::Inventory => "list",
    crate::types::TypesReport => "types",
    crate::status::Status => "status",
    crate::vgpu::explain::Explanation => "explain",
    crate::apply::Plan => "plan",
    crate::apply::Applied => "apply",
    Versioned<super::Cleaned> => "gc",
    Versioned<super::HookTest> => "hook-test",
    Versioned<crate::hook::install::Installed> => "hook-install",
    Versioned<super::HookRemoved> => "hook-uninstall",
    Versioned<super::UnitsInstalled> => "install-units",
    Versioned<super::PassthroughCheck> => "passthrough-check",
    Versioned<pt::Prepared> => "passthrough-prepare",
    Versioned<pt::Released> => "passthrough-release",
    Versioned<mig::MigStatusDoc> => "mig-status",
    Versioned<mig::MigProfilesDoc> => "mig-profiles",
    Versioned<mig::MigModeDoc> => "mig-mode",
    Versioned<mig::MigCreatedDoc> => "mig-create",
    Versioned<mig::MigDestroyedDoc> => "mig-destroy",
    Versioned<mig::MigPlanDoc> => "mig-plan",
    Versioned<mig::MigDefragDoc> => "mig-defrag",
    Versioned<crate::vgpu::VgpuCreated> => "vgpu-create",
    Versioned<crate::vgpu::VgpuRemoved> => "vgpu-remove",
    Versioned<crate::vgpu::ModeChange> => "vgpu-mode",
    Versioned<vgpu::SriovChanges> => "sriov-change",
    Versioned<vgpu::SriovStatusDoc> => "sriov-status",
    Versioned<crate::mdev::Created> => "mdev-create",
    Versioned<crate::mdev::Removed> => "mdev-remove",
    crate::mdev::ListReport => "mdev-list",
    Versioned<crate::mdev::Definition> => "mdev-definition",
    crate::mdev::RestoreReport => "mdev-restore",
    super::vm::VmReport => "vm-explain",
    Versioned<VmDefined> => "vm-define",
    Versioned<VmAttached> => "vm-attach",
    Versioned<VmDetached> => "vm-detach",
}

/// `vgpuctl --version --json`: this build and the helpers it would run.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionDoc {
    pub schema_version: u32,
    pub version: crate::version::VersionReport,
}
