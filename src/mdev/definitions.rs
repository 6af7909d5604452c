//! Persistent mdev definitions in mdevctl's format, so `mdevctl list
//! --defined` shows ours and we show theirs:
//! `/etc/mdevctl.d/<parent>/<uuid>` holding
//! `{"mdev_type": "...", "start": "auto"|"manual", "attrs": [{"name": "value"}]}`.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename).
//! A file we cannot parse is reported and left alone: it may be someone
//! else's, and deleting it would lose their device.

use serde::{Deserialize, Serialize};

use super::MdevError;
use crate::host::Host;
use crate::ids::{MdevParent, MdevTypeId, MdevUuid};

pub const DEFINITIONS_DIR: &str = "/etc/mdevctl.d";
/// mdevctl keeps its callout scripts here; it is not a parent.
const MDEVCTL_SCRIPTS: &str = "scripts.d";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartPolicy {
    Auto,
    #[default]
    Manual,
}

impl std::fmt::Display for StartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartPolicy::Auto => "auto",
            StartPolicy::Manual => "manual",
        })
    }
}

/// A device attribute written after creation, e.g. `nvidia/vgpu_params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Attr {
    pub name: String,
    pub value: String,
}

impl Attr {
    /// Attribute paths are relative to the device directory, as mdevctl
    /// takes them (`nvidia/vgpu_params`, names with dots): what stays refused
    /// is what could leave the device directory — an absolute path, a `..`
    /// or `.` component — and NUL.
    pub fn new(name: &str, value: &str) -> Result<Self, MdevError> {
        let bad = |why: &'static str| MdevError::InvalidAttr { name: name.to_string(), why };
        if name.starts_with('/') {
            return Err(bad("an absolute path; attributes are relative to the device"));
        }
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 8 {
            return Err(bad("more than 8 path components"));
        }
        for p in &parts {
            if p.is_empty() || *p == "." || *p == ".." || p.len() > 255 {
                return Err(bad("each component must be non-empty, not '.' or '..', and at most 255 bytes"));
            }
            if p.bytes().any(|b| b == 0 || b.is_ascii_control()) {
                return Err(bad("no NUL or control characters"));
            }
        }
        if value.contains('\0') || value.len() > 4096 {
            return Err(bad("value must be at most 4096 bytes without NUL"));
        }
        Ok(Self { name: name.to_string(), value: value.to_string() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Definition {
    pub uuid: MdevUuid,
    pub parent: MdevParent,
    #[serde(rename = "type")]
    pub mdev_type: MdevTypeId,
    pub start: StartPolicy,
    pub attrs: Vec<Attr>,
}

/// The on-disk shape, mdevctl's keys. Read as mdevctl reads it: other keys
/// are ignored, `"attrs": null` is none, and a `start` other than `auto`
/// (or none) is manual.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct DefinitionFile {
    mdev_type: String,
    #[serde(default, deserialize_with = "start_as_mdevctl")]
    start: StartPolicy,
    #[serde(default, deserialize_with = "null_as_empty")]
    attrs: Vec<serde_json::Map<String, serde_json::Value>>,
}

fn start_as_mdevctl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StartPolicy, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(if v.as_ref().and_then(|v| v.as_str()) == Some("auto") { StartPolicy::Auto } else { StartPolicy::Manual })
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

pub fn path_of(parent: &MdevParent, uuid: &MdevUuid) -> String {
    format!("{DEFINITIONS_DIR}/{parent}/{uuid}")
}

pub fn parse(parent: &MdevParent, uuid: MdevUuid, text: &str) -> Result<Definition, String> {
    // An object, as mdevctl requires (serde would take a JSON array as the
    // fields in order).
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let f: DefinitionFile = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let mdev_type: MdevTypeId = f.mdev_type.parse().map_err(|e: crate::ids::IdError| e.to_string())?;
    let mut attrs = Vec::new();
    for entry in f.attrs {
        if entry.len() != 1 {
            return Err("each attrs entry must hold exactly one name/value pair".into());
        }
        for (k, v) in entry {
            let v = v.as_str().ok_or_else(|| format!("attribute {k:?} must be a string"))?;
            attrs.push(Attr::new(&k, v).map_err(|e| e.to_string())?);
        }
    }
    Ok(Definition { uuid, parent: parent.clone(), mdev_type, start: f.start, attrs })
}

fn render(d: &Definition) -> String {
    let f = DefinitionFile {
        mdev_type: d.mdev_type.to_string(),
        start: d.start,
        attrs: d
            .attrs
            .iter()
            .map(|a| {
                let mut m = serde_json::Map::new();
                m.insert(a.name.clone(), serde_json::Value::String(a.value.clone()));
                m
            })
            .collect(),
    };
    // serde_json cannot fail on this shape (string keys, plain values).
    serde_json::to_string_pretty(&f).unwrap_or_default() + "\n"
}

/// Every definition on the host, and one line for each file that could not
/// be read. A missing /etc/mdevctl.d is simply "none".
pub fn load_all(host: &Host) -> Result<(Vec<Definition>, Vec<String>), MdevError> {
    let mut defs = Vec::new();
    let mut problems = Vec::new();
    for pname in host.list_dir(DEFINITIONS_DIR)? {
        if pname == MDEVCTL_SCRIPTS {
            continue;
        }
        let dir = format!("{DEFINITIONS_DIR}/{pname}");
        let parent: MdevParent = match pname.parse() {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{dir}: {e}; skipped"));
                continue;
            }
        };
        if !host.is_dir(&dir) {
            problems.push(format!("{dir}: not a directory; skipped"));
            continue;
        }
        for uname in host.list_dir(&dir)? {
            let file = format!("{dir}/{uname}");
            let Ok(uuid) = uname.parse::<MdevUuid>() else {
                // mdevctl's own temporary files and editors' leftovers land here too.
                problems.push(format!("{file}: file name is not a UUID; skipped"));
                continue;
            };
            match host.read_attr(&file).map_err(|e| crate::error_chain(&e)).and_then(|t| parse(&parent, uuid, &t)) {
                Ok(d) => defs.push(d),
                Err(e) => problems.push(format!("{file}: {e}; skipped (left untouched)")),
            }
        }
    }
    Ok((defs, problems))
}

/// The folders of /etc/mdevctl.d that name a parent, as they are on disk:
/// mdevctl keeps the case and domain it was given (`0000:2B:00.0`,
/// `00000000:2b:00.0`), so a parent is matched by value, never by spelling.
fn parent_dirs(host: &Host) -> Result<Vec<(String, MdevParent)>, MdevError> {
    Ok(host
        .list_dir(DEFINITIONS_DIR)?
        .into_iter()
        .filter(|n| n != MDEVCTL_SCRIPTS)
        .filter_map(|n| {
            let p = n.parse::<MdevParent>().ok()?;
            Some((format!("{DEFINITIONS_DIR}/{n}"), p))
        })
        .collect())
}

/// Every definition of `uuid`, under whichever folders hold one. A file
/// that cannot be read is an error naming it: such a device is never
/// started, and its file never deleted, as mdevctl refuses it too.
pub fn find_all(host: &Host, uuid: &MdevUuid) -> Result<Vec<Definition>, MdevError> {
    let mut out = Vec::new();
    for (dir, parent) in parent_dirs(host)? {
        let file = format!("{dir}/{uuid}");
        if let Some(text) = host.read_attr_opt(&file)? {
            out.push(parse(&parent, *uuid, &text).map_err(|why| MdevError::BadDefinition { path: file, why })?);
        }
    }
    Ok(out)
}

/// The definition of `uuid` (on `parent`, when given). Defined under two
/// parents and no parent given, it is refused with both named, as mdevctl does.
pub fn find_on(host: &Host, uuid: &MdevUuid, parent: Option<&MdevParent>) -> Result<Option<Definition>, MdevError> {
    let mut all = find_all(host, uuid)?;
    if let Some(p) = parent {
        all.retain(|d| &d.parent == p);
    }
    match all.len() {
        0 | 1 => Ok(all.pop()),
        _ => {
            let mut parents: Vec<String> = all.iter().map(|d| d.parent.to_string()).collect();
            parents.sort();
            Err(MdevError::DefinedTwice { uuid: *uuid, parents: parents.join(" and ") })
        }
    }
}

/// The definition of `uuid` under any parent (refused when under several).
pub fn find(host: &Host, uuid: &MdevUuid) -> Result<Option<Definition>, MdevError> {
    find_on(host, uuid, None)
}

/// The folder a parent's definitions go in: the one already there for it
/// (however mdevctl spelt it), else the canonical name.
fn dir_of(host: &Host, parent: &MdevParent) -> Result<String, MdevError> {
    Ok(parent_dirs(host)?.into_iter().find(|(_, p)| p == parent).map(|(d, _)| d).unwrap_or_else(|| format!("{DEFINITIONS_DIR}/{parent}")))
}

/// Writes the definition atomically, readable by mdevctl (0644), into the
/// parent's existing folder if it has one.
/// Through the host layer: atomic, root-relative, a fault point.
pub fn save(host: &Host, d: &Definition) -> Result<(), MdevError> {
    let file = format!("{}/{}", dir_of(host, &d.parent)?, d.uuid);
    Ok(host.write_state(&file, render(d).as_bytes(), 0o644)?)
}

/// Removes the definition from every folder of its parent; `false` when there was none.
pub fn delete(host: &Host, parent: &MdevParent, uuid: &MdevUuid) -> Result<bool, MdevError> {
    let mut any = false;
    for (dir, p) in parent_dirs(host)? {
        if &p == parent {
            any |= host.remove_state(&format!("{dir}/{uuid}"))?;
        }
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let h = Host::at_root(d.path()).unwrap();
        (d, h)
    }

    #[test]
    fn test_mdevctl_written_file_parses() {
        let text = "{\n  \"mdev_type\": \"mbochs-large\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"foo/bar\": \"baz\"\n    }\n  ]\n}";
        let d = parse(&"mbochs".parse().unwrap(), "11111111-2222-3333-4444-555555555555".parse().unwrap(), text).unwrap();
        assert_eq!(d.mdev_type.as_str(), "mbochs-large");
        assert_eq!(d.start, StartPolicy::Auto);
        assert_eq!(d.attrs, vec![Attr { name: "foo/bar".into(), value: "baz".into() }]);
        // Our rendering is what mdevctl writes.
        assert_eq!(render(&d).trim_end(), text);
    }

    #[test]
    fn test_bad_definitions_are_rejected_with_reason() {
        let p: MdevParent = "mbochs".parse().unwrap();
        let u: MdevUuid = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        for (text, needle) in [
            ("{", "EOF"),
            ("[\"x\", \"auto\"]", "not a JSON object"),
            ("{\"start\": \"auto\"}", "missing field `mdev_type`"),
            ("{\"mdev_type\": \"../x\", \"start\": \"auto\"}", "invalid mdev type"),
            ("{\"mdev_type\": \"x\", \"start\": \"auto\", \"attrs\": [{\"../../x\": \"1\"}]}", "invalid attribute"),
            ("{\"mdev_type\": \"x\", \"start\": \"auto\", \"attrs\": [{\"a\": 1}]}", "must be a string"),
        ] {
            let e = parse(&p, u, text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    /// What mdevctl accepts is accepted the same way: other keys ignored,
    /// `"attrs": null`, any `start` but "auto" (or none) is manual, attribute
    /// names that are relative paths or hold dots.
    #[test]
    fn test_files_mdevctl_accepts_parse_as_mdevctl_reads_them() {
        let p: MdevParent = "mbochs".parse().unwrap();
        let u: MdevUuid = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        let d = parse(&p, u, "{\"mdev_type\": \"x\", \"start\": \"auto\", \"bogus\": 1, \"attrs\": null}").unwrap();
        assert_eq!((d.start, d.attrs.len()), (StartPolicy::Auto, 0));
        for start in ["\"sometimes\"", "\"AUTO\"", "null", "3"] {
            let d = parse(&p, u, &format!("{{\"mdev_type\": \"x\", \"start\": {start}}}")).unwrap();
            assert_eq!(d.start, StartPolicy::Manual, "{start}");
        }
        assert_eq!(parse(&p, u, "{\"mdev_type\": \"x\"}").unwrap().start, StartPolicy::Manual);
        let d =
            parse(&p, u, "{\"mdev_type\": \"x\", \"start\": \"manual\", \"attrs\": [{\"nvidia/vgpu_params\": \"a=1\"}, {\"frl.config\": \"60\"}]}").unwrap();
        assert_eq!(d.attrs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["nvidia/vgpu_params", "frl.config"]);
    }

    #[test]
    fn test_save_load_delete_round_trip_and_corrupt_files_are_kept() {
        let (dir, h) = host();
        assert_eq!(load_all(&h).unwrap().0, vec![], "missing /etc/mdevctl.d is empty");
        let d = Definition {
            uuid: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            parent: "mbochs".parse().unwrap(),
            mdev_type: "mbochs-large".parse().unwrap(),
            start: StartPolicy::Manual,
            attrs: vec![],
        };
        save(&h, &d).unwrap();
        let corrupt = dir.path().join("etc/mdevctl.d/mbochs/22222222-2222-3333-4444-555555555555");
        std::fs::write(&corrupt, "{not json").unwrap();
        std::fs::create_dir_all(dir.path().join("etc/mdevctl.d/scripts.d/callouts")).unwrap();
        let (defs, problems) = load_all(&h).unwrap();
        assert_eq!(defs, vec![d.clone()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("22222222") && problems[0].contains("left untouched"));
        assert!(corrupt.exists());
        assert_eq!(find(&h, &d.uuid).unwrap(), Some(d.clone()));
        assert!(delete(&h, &d.parent, &d.uuid).unwrap());
        assert!(!delete(&h, &d.parent, &d.uuid).unwrap());
        use std::os::unix::fs::PermissionsExt;
        save(&h, &d).unwrap();
        let mode = std::fs::metadata(dir.path().join("etc/mdevctl.d/mbochs/11111111-2222-3333-4444-555555555555")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn test_attr_names_are_strict() {
        assert!(Attr::new("nvidia/vgpu_params", "frame_rate_limiter=0").is_ok());
        for ok in [".hidden", "a.b", "sp ace", "a/b/c/d/e"] {
            assert!(Attr::new(ok, "1").is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a//b", "../x", "a/../b", "./x", "a\nb", "a/b/c/d/e/f/g/h/i"] {
            assert!(Attr::new(bad, "1").is_err(), "{bad}");
        }
        assert!(Attr::new("x", "a\0b").is_err());
    }
}
