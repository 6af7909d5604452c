//! The mdev lifecycle: create, remove, persist (mdevctl-compatible), start
//! and stop definitions, restore at boot. Every allocating or freeing step
//! runs under the host-wide lock and undoes what it made when a later step
//! fails.

pub mod definitions;
mod ops;
mod restore;

pub use definitions::{Attr, Definition, StartPolicy};
pub use ops::{create, create_locked, define, list, remove, remove_locked, start, stop, undefine, CreateRequest, Created, ListReport, ListRow, Removed};
pub use restore::{restore, RestoreOutcome, RestoreReport};

use crate::host::HostError;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid};
use crate::lock::LockError;

#[derive(Debug, thiserror::Error)]
pub enum MdevError {
    #[error("no mdev parent {parent} on this host (parents here: {known}); check the PCI address with `vgpuctl list`, or load the driver that provides it")]
    UnknownParent { parent: MdevParent, known: String },
    #[error("parent {parent} has no mdev type {wanted:?} (types there: {known})")]
    UnknownType { parent: MdevParent, wanted: String, known: String },
    #[error("UUID {uuid} is already in use by an mdev of type {type_id} on {parent}; pick another UUID or leave --uuid out")]
    UuidInUse { uuid: MdevUuid, parent: String, type_id: String },
    #[error("no room for {type_id} on {parent}: {occupants}")]
    NoRoom { parent: MdevParent, type_id: MdevTypeId, occupants: String },
    #[error("mdev {uuid} is in use{by}; stop the VM first")]
    Busy { uuid: MdevUuid, by: String },
    #[error("no mdev {uuid} exists{defined}")]
    NotFound { uuid: MdevUuid, defined: String },
    #[error("no definition for mdev {uuid} in /etc/mdevctl.d; define it first with `vgpuctl mdev define`")]
    NotDefined { uuid: MdevUuid },
    #[error("mdev {uuid} is defined under {parents}; name one with --parent")]
    DefinedTwice { uuid: MdevUuid, parents: String },
    #[error("the kernel refused to create {type_id} on {parent} (EINVAL): {hint}")]
    Rejected { parent: MdevParent, type_id: MdevTypeId, hint: &'static str },
    #[error("mdev {uuid} was reported created but {why}; it was removed again")]
    VerifyFailed { uuid: MdevUuid, why: String },
    #[error("mdev {uuid} is active as {active_parent}/{active_type}, but its definition says {parent}/{type_id}; stop it or fix the definition")]
    Conflict { uuid: MdevUuid, active_parent: String, active_type: String, parent: MdevParent, type_id: MdevTypeId },
    #[error("a definition for {uuid} already exists at {path}; undefine it first or use another UUID")]
    DefinitionExists { uuid: MdevUuid, path: String },
    #[error("definition {path} is unusable: {why}")]
    BadDefinition { path: String, why: String },
    #[error("invalid attribute {name:?}: {why}")]
    InvalidAttr { name: String, why: &'static str },
    #[error("cannot set attribute {name} on mdev {uuid}; the device was removed again")]
    AttrWrite {
        uuid: MdevUuid,
        name: String,
        #[source]
        source: HostError,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Host(#[from] HostError),
}
