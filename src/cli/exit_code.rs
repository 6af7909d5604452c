//! Which exit code a failure gets: one table (docs/admin-guide.md), the same
//! in every command. The class comes from the typed error, never from its
//! text: 64 the command line itself is wrong, 3 the host as it is now does
//! not allow it (no room, in use, MIG off, no such device here; nothing was
//! changed), 4 a tool, helper or driver it needs is missing, 1 anything else
//! (an I/O or driver failure).

use std::error::Error;

use super::{exit, CliError};
use crate::host::HostError;
use crate::mig::backend::MigError;
use crate::vfio::passthrough::PassthroughError;

impl CliError {
    pub fn exit_code(&self) -> i32 {
        let inner: &(dyn Error + 'static) = match self {
            CliError::Usage(_) => return exit::USAGE,
            CliError::Refused(_) => return exit::REFUSED,
            CliError::Unavailable(_) => return exit::UNAVAILABLE,
            CliError::Failed(_) | CliError::Json(_) => return exit::FAILED,
            CliError::Host(e) => e,
            CliError::Sim(e) => e,
            CliError::Mdev(e) => e,
            CliError::Units(e) => e,
            CliError::Vgpu(e) => e,
            CliError::Sriov(e) => e,
            CliError::Nvctl(e) => e,
            CliError::Template(e) => e,
            CliError::Generate(e) => e,
            CliError::DomainXml(_) => return exit::USAGE,
            CliError::Hook(e) => e,
            CliError::Mig(e) => e,
            CliError::Apply(e) => e,
            CliError::Lock(e) => e,
            CliError::Passthrough(e) => e,
            CliError::HookInstall(e) => e,
            CliError::Metrics(e) => e,
            CliError::Serve(e) => e,
        };
        chain(inner)
    }
}

/// The exit code for any error of the library (the helpers use it too, so
/// `vgpuctl vm define` answers with the same table as every other command).
pub fn of(e: &(dyn Error + 'static)) -> i32 {
    match e.downcast_ref::<CliError>() {
        Some(c) => c.exit_code(),
        None => chain(e),
    }
}

/// The first classified error along the source chain; 1 when none is.
fn chain(e: &(dyn Error + 'static)) -> i32 {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(code) = class(x) {
            return code;
        }
        cur = x.source();
    }
    exit::FAILED
}

/// A binary the hook or the units cannot run: the command line named it wrong.
fn binary_class(b: &crate::binary::BinaryError) -> Option<i32> {
    match b {
        crate::binary::BinaryError::Host(h) => class(h),
        _ => Some(exit::USAGE),
    }
}

/// The class of one error value, looking through the transparent wrappers
/// (whose `source()` skips the wrapped value).
fn class(e: &(dyn Error + 'static)) -> Option<i32> {
    use crate::mdev::MdevError as M;
    use crate::vgpu::VgpuError as V;
    const R: Option<i32> = Some(exit::REFUSED);
    const U: Option<i32> = Some(exit::UNAVAILABLE);
    if let Some(h) = e.downcast_ref::<HostError>() {
        return match h {
            HostError::ToolMissing { .. } => U,
            HostError::UnsafePath { .. } => Some(exit::USAGE),
            _ => None,
        };
    }
    if let Some(l) = e.downcast_ref::<crate::lock::LockError>() {
        return match l {
            crate::lock::LockError::Timeout { .. } => R,
            crate::lock::LockError::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(m) = e.downcast_ref::<M>() {
        return match m {
            M::UnknownParent { .. }
            | M::UnknownType { .. }
            | M::UuidInUse { .. }
            | M::NoRoom { .. }
            | M::Busy { .. }
            | M::NotFound { .. }
            | M::NotDefined { .. }
            | M::Conflict { .. }
            | M::DefinitionExists { .. } => R,
            M::DefinedTwice { .. } => Some(exit::USAGE),
            M::InvalidAttr { .. } => Some(exit::USAGE),
            M::Lock(l) => class(l),
            M::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(v) = e.downcast_ref::<V>() {
        return match v {
            V::NoRoom { .. }
            | V::NotAVgpuGpu { .. }
            | V::UuidOnVendorVfio { .. }
            | V::UnknownTarget { .. }
            | V::IsPhysicalGpu { .. }
            | V::VfEmpty { .. }
            | V::VfBusy { .. }
            | V::VfChanged { .. }
            | V::Mode(_) => R,
            V::UnknownType(_) => Some(exit::USAGE),
            V::Mdev(m) => class(m),
            V::Lock(l) => class(l),
            V::Ledger(_) => None,
            V::Nvctl(n) => class(n),
            V::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(m) = e.downcast_ref::<MigError>() {
        return match m {
            MigError::NoDriver => U,
            MigError::Unsupported { .. }
            | MigError::Off { .. }
            | MigError::NoRoom { .. }
            | MigError::NoInstance { .. }
            | MigError::InUse { .. }
            | MigError::CiNoRoom { .. }
            | MigError::HasComputeInstances { .. }
            | MigError::Pinned { .. }
            | MigError::MoveUnfinished { .. } => R,
            MigError::MoveJournalCorrupt { .. } => Some(exit::FAILED),
            MigError::UnknownProfile { .. } | MigError::UnknownCiProfile { .. } => Some(exit::USAGE),
            MigError::Nvml(n) => class(n),
            MigError::Policy(_) => Some(exit::USAGE),
            MigError::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(n) = e.downcast_ref::<crate::nvml::NvmlError>() {
        return match n {
            crate::nvml::NvmlError::Required(_) => U,
            crate::nvml::NvmlError::BadChoice(_) => Some(exit::USAGE),
            crate::nvml::NvmlError::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(n) = e.downcast_ref::<crate::nvidia::ControlError>() {
        return match n {
            crate::nvidia::ControlError::UnknownGpu { .. } => R,
            crate::nvidia::ControlError::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(s) = e.downcast_ref::<crate::sriov::SriovError>() {
        use crate::sriov::SriovError as S;
        return match s {
            S::NotSriov { .. } | S::TooMany { .. } | S::InUse { .. } | S::NoGpus => R,
            S::Lock(l) => class(l),
            _ => None,
        };
    }
    if let Some(p) = e.downcast_ref::<PassthroughError>() {
        use PassthroughError as P;
        return match p {
            P::NoDevice { .. } | P::NotAGpu { .. } | P::BootVga { .. } | P::NoIommu { .. } | P::NotViable { .. } | P::InUse { .. } | P::NotPrepared { .. } => R,
            P::NoVfioDriver => U,
            P::Lock(l) => class(l),
            P::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(g) = e.downcast_ref::<crate::libvirt::generate::GenerateError>() {
        use crate::libvirt::generate::GenerateError as G;
        return match g {
            G::NoRoom { .. } | G::UnknownMdev { .. } | G::NoSuchDevice { .. } | G::NotAGpu { .. } | G::BootVga { .. } | G::NoMdevType { .. } => R,
            G::BadPath { .. } | G::UnknownType(_) => Some(exit::USAGE),
            G::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(h) = e.downcast_ref::<crate::hook::HookError>() {
        use crate::hook::HookError as H;
        return match h {
            H::NoRoom(_) => R,
            H::Xml(_) => Some(exit::USAGE),
            H::Lock(l) => class(l),
            H::Host(x) => class(x),
            _ => None,
        };
    }
    if let Some(a) = e.downcast_ref::<crate::apply::ApplyError>() {
        use crate::apply::ApplyError as A;
        return match a {
            A::Rejected(_) => R,
            A::Config(_) => Some(exit::USAGE),
            A::Host(h) => class(h),
            _ => None,
        };
    }
    if let Some(i) = e.downcast_ref::<crate::hook::install::InstallError>() {
        use crate::hook::install::InstallError as I;
        return match i {
            I::Foreign { .. } => R,
            I::Binary(b) => binary_class(b),
            I::Host(h) => class(h),
        };
    }
    if let Some(u) = e.downcast_ref::<crate::units::UnitError>() {
        use crate::units::UnitError as N;
        return match u {
            N::Binary(b) => binary_class(b),
            N::BadDir(_) => Some(exit::USAGE),
            N::Host(h) => class(h),
        };
    }
    if let Some(m) = e.downcast_ref::<crate::metrics::MetricsError>() {
        use crate::metrics::MetricsError as X;
        return match m {
            X::BadTextfile(_) => Some(exit::USAGE),
            X::Host(h) => class(h),
            X::Counters(_) => None,
        };
    }
    if let Some(s) = e.downcast_ref::<crate::metrics::http::ServeError>() {
        return match s {
            crate::metrics::http::ServeError::NotLoopback(_) => Some(exit::USAGE),
            crate::metrics::http::ServeError::Bind { .. } => R,
        };
    }
    None
}
