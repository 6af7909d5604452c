//! `vgpuctl mdev …`

use std::time::Duration;

use clap::{Args, Subcommand};

use super::table::{opt, Table};
use super::{note, print_json, print_out, CliError};
use crate::host::Host;
use crate::ids::{MdevParent, MdevUuid};
use crate::mdev::{self, Attr, CreateRequest, StartPolicy};

#[derive(Debug, Subcommand)]
pub enum MdevCommand {
    /// Create an mdev (optionally also defining it persistently).
    Create {
        /// The parent device: a GPU or VF by PCI address, or a virtual parent like mbochs.
        #[arg(long, value_parser = parse_parent)]
        parent: MdevParent,
        /// Type directory name (nvidia-699, mbochs-large) or its name (GRID A100D-1-10C, A100D-1-10C).
        #[arg(long = "type")]
        mdev_type: String,
        /// The mdev's UUID (default: a new random one).
        #[arg(long, value_parser = parse_uuid)]
        uuid: Option<MdevUuid>,
        /// Also write an mdevctl-compatible definition (manual start unless --auto).
        #[arg(long)]
        persist: bool,
        /// With --persist: start it at boot (`vgpuctl mdev restore`, mdevctl's udev rule).
        #[arg(long, requires = "persist")]
        auto: bool,
        /// Device attribute to set after creation, NAME=VALUE (repeatable).
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<Attr>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove an mdev.
    Remove {
        /// The mdev's UUID.
        #[arg(value_parser = parse_uuid)]
        uuid: MdevUuid,
        /// Also delete its definition.
        #[arg(long)]
        undefine: bool,
        /// Succeed when the device does not exist (for scripts).
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List active mdevs, or with --defined the persistent definitions.
    List {
        /// The persistent definitions (as mdevctl list --defined) instead of active devices.
        #[arg(long, short = 'd')]
        defined: bool,
        /// Print the result as JSON (schema in docs/json-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Write a persistent definition without creating the device.
    Define {
        /// The parent device: a GPU or VF by PCI address, or a virtual parent like mbochs.
        #[arg(long, value_parser = parse_parent)]
        parent: MdevParent,
        /// Type directory name (nvidia-699, mbochs-large) or its name (A100D-1-10C).
        #[arg(long = "type")]
        mdev_type: String,
        /// The mdev's UUID (default: a new random one).
        #[arg(long, value_parser = parse_uuid)]
        uuid: Option<MdevUuid>,
        /// Start it at boot (`vgpuctl mdev restore`, mdevctl's udev rule).
        #[arg(long)]
        auto: bool,
        /// Device attribute to set after creation, NAME=VALUE (repeatable).
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<Attr>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a persistent definition (the device, if active, stays).
    Undefine {
        /// The defined mdev's UUID.
        #[arg(value_parser = parse_uuid)]
        uuid: MdevUuid,
        /// The parent whose definition goes, when the UUID is defined under several.
        #[arg(long, value_parser = parse_parent)]
        parent: Option<MdevParent>,
        #[command(flatten)]
        common: Common,
    },
    /// Create a defined device (a no-op when it is already active as defined).
    Start {
        /// The defined mdev's UUID.
        #[arg(value_parser = parse_uuid)]
        uuid: MdevUuid,
        /// The parent whose definition starts, when the UUID is defined under several.
        #[arg(long, value_parser = parse_parent)]
        parent: Option<MdevParent>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove a device, keeping its definition.
    Stop {
        /// The mdev's UUID.
        #[arg(value_parser = parse_uuid)]
        uuid: MdevUuid,
        #[command(flatten)]
        common: Common,
    },
    /// Start every `auto` definition; waits for parents that appear late.
    Restore {
        /// Longest wait for missing parents, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    /// Print the result as JSON (schema in docs/json-schema.md).
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the host-wide lock.
    #[arg(long, default_value_t = 60)]
    pub lock_timeout: u64,
}

impl Common {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.lock_timeout)
    }
}

fn parse_parent(s: &str) -> Result<MdevParent, String> {
    s.parse().map_err(|e: crate::ids::IdError| e.to_string())
}

fn parse_uuid(s: &str) -> Result<MdevUuid, String> {
    s.parse().map_err(|e: crate::ids::IdError| e.to_string())
}

fn parse_attr(s: &str) -> Result<Attr, String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("attribute {s:?} must be NAME=VALUE"))?;
    Attr::new(k, v).map_err(|e| e.to_string())
}

pub fn run(host: &Host, cmd: &MdevCommand) -> Result<i32, CliError> {
    match cmd {
        MdevCommand::Create { parent, mdev_type, uuid, persist, auto, attrs, common } => {
            let req = CreateRequest {
                parent: parent.clone(),
                mdev_type: mdev_type.clone(),
                uuid: *uuid,
                persist: persist.then_some(if *auto { StartPolicy::Auto } else { StartPolicy::Manual }),
                attrs: attrs.clone(),
            };
            let c = mdev::create(host, &req, common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(c))?;
            } else {
                print_out(&format!("{}\n", c.uuid));
            }
        }
        MdevCommand::Remove { uuid, undefine, if_exists, common } => {
            let r = mdev::remove(host, *uuid, *undefine, *if_exists, common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(r))?;
            } else if !r.removed && !r.undefined {
                note(&format!("mdev {uuid} does not exist; nothing to do"));
            } else {
                let undefined = if r.undefined { ", definition deleted" } else { "" };
                print_out(&format!("removed mdev {uuid}{undefined}\n"));
            }
        }
        MdevCommand::List { defined, json } => {
            let r = mdev::list(host, *defined)?;
            if *json {
                print_json(&r)?;
            } else {
                // The IOMMU group is in --json and `vgpuctl list`; without it
                // a row with a whole UUID fits 80 columns.
                let mut t = Table::new(&["UUID", "PARENT", "TYPE", "STATE", "IN USE"]);
                for d in &r.devices {
                    t.row(vec![
                        d.uuid.to_string(),
                        opt(&d.parent),
                        crate::table::type_cell(d.type_id.as_ref().map(|t| t.as_str()), d.type_name.as_deref()),
                        {
                            let state = match (d.active, d.defined, &d.mismatch) {
                                (_, _, Some(m)) => format!("{}, but {m}", if d.active { "active" } else { "defined" }),
                                (true, true, None) => "active, defined".into(),
                                (true, false, None) => "active".into(),
                                (false, _, None) => "defined".into(),
                            };
                            // How a definition starts, beside it: `defined (auto)`.
                            match &d.start {
                                Some(s) if d.mismatch.is_none() && d.defined => format!("{state} ({s})"),
                                _ => state,
                            }
                        },
                        // A definition that is not active has no user to ask about.
                        if d.active { crate::table::in_use(d.in_use).to_string() } else { "-".into() },
                    ]);
                }
                if !t.is_empty() {
                    print_out(&t.render());
                }
            }
            for w in &r.warnings {
                note(&format!("warning: {w}"));
            }
        }
        MdevCommand::Define { parent, mdev_type, uuid, auto, attrs, common } => {
            let start = if *auto { StartPolicy::Auto } else { StartPolicy::Manual };
            let d = mdev::define(host, parent, mdev_type, *uuid, start, attrs.clone(), common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(d))?;
            } else {
                print_out(&format!("{}\n", d.uuid));
            }
        }
        MdevCommand::Undefine { uuid, parent, common } => {
            let d = mdev::undefine(host, *uuid, parent.as_ref(), common.timeout())?;
            let line = format!("undefined mdev {uuid} ({} on {})\n", d.mdev_type, d.parent);
            if common.json {
                print_json(&super::doc::Versioned::new(d))?;
            } else {
                print_out(&line);
            }
        }
        MdevCommand::Start { uuid, parent, common } => {
            let c = mdev::start(host, *uuid, parent.as_ref(), common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(c))?;
            } else if !c.created {
                note(&format!("mdev {uuid} is already active; nothing to do"));
            } else {
                print_out(&format!("started mdev {uuid} ({} on {})\n", c.type_name.as_deref().unwrap_or(c.type_id.as_str()), c.parent));
            }
        }
        MdevCommand::Stop { uuid, common } => {
            let r = mdev::stop(host, *uuid, common.timeout())?;
            if common.json {
                print_json(&super::doc::Versioned::new(r))?;
            } else if r.removed {
                print_out(&format!("stopped mdev {uuid} (its definition stays)\n"));
            } else {
                note(&format!("mdev {uuid} is not active; nothing to do"));
            }
        }
        MdevCommand::Restore { wait, common } => {
            let r = mdev::restore(host, Duration::from_secs(*wait), common.timeout())?;
            if common.json {
                print_json(&r)?;
            } else {
                let mut text = String::new();
                for d in &r.devices {
                    let what = match &d.outcome {
                        mdev::RestoreOutcome::Started => "started".to_string(),
                        mdev::RestoreOutcome::AlreadyActive => "already active".to_string(),
                        mdev::RestoreOutcome::Failed { error } => format!("FAILED: {error}"),
                        mdev::RestoreOutcome::ParentMissing { waited_seconds } => {
                            format!("FAILED: parent {} did not appear within {waited_seconds} s", d.parent)
                        }
                    };
                    text.push_str(&format!("{} {} {}: {what}\n", d.uuid, d.parent, d.type_id));
                }
                if r.devices.is_empty() {
                    text.push_str("no auto-start definitions\n");
                }
                print_out(&text);
            }
            for w in &r.warnings {
                note(&format!("warning: {w}"));
            }
            if !r.all_ok() {
                return Ok(super::exit::FAILED);
            }
        }
    }
    Ok(super::exit::OK)
}
