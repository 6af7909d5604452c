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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPolicy {
    Auto,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attr {
    pub name: String,
    pub value: String,
}

impl Attr {
    /// Attribute paths are relative to the device directory: one to four
    /// strict components, never `..` or an absolute path.
    pub fn new(name: &str, value: &str) -> Result<Self, MdevError> {
        let bad = |why: &'static str| MdevError::InvalidAttr { name: name.to_string(), why };
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 4 {
            return Err(bad("more than 4 path components"));
        }
        for p in &parts {
            if p.is_empty() || p.starts_with('.') || p.len() > 64 {
                return Err(bad("each component must be non-empty, not start with '.', and be at most 64 characters"));
            }
            if !p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) {
                return Err(bad("only letters, digits, '_' and '-' are allowed in components"));
            }
        }
        if value.contains('\0') || value.len() > 4096 {
            return Err(bad("value must be at most 4096 bytes without NUL"));
        }
        Ok(Self { name: name.to_string(), value: value.to_string() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Definition {
    pub uuid: MdevUuid,
    pub parent: MdevParent,
    #[serde(rename = "type")]
    pub mdev_type: MdevTypeId,
    pub start: StartPolicy,
    pub attrs: Vec<Attr>,
}

/// The on-disk shape, exactly mdevctl's keys.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    mdev_type: String,
    start: StartPolicy,
    #[serde(default)]
    attrs: Vec<serde_json::Map<String, serde_json::Value>>,
}

pub fn path_of(parent: &MdevParent, uuid: &MdevUuid) -> String {
    format!("{DEFINITIONS_DIR}/{parent}/{uuid}")
}

pub fn parse(parent: &MdevParent, uuid: MdevUuid, text: &str) -> Result<Definition, String> {
    let f: DefinitionFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
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

/// The definition of `uuid` under any parent.
pub fn find(host: &Host, uuid: &MdevUuid) -> Result<Option<Definition>, MdevError> {
    for pname in host.list_dir(DEFINITIONS_DIR)? {
        let Ok(parent) = pname.parse::<MdevParent>() else { continue };
        let file = path_of(&parent, uuid);
        if let Some(text) = host.read_attr_opt(&file)? {
            return parse(&parent, *uuid, &text).map(Some).map_err(|why| MdevError::BadDefinition { path: file, why });
        }
    }
    Ok(None)
}

/// Writes the definition atomically, readable by mdevctl (0644).
/// Through the host layer: atomic, root-relative, a fault point.
pub fn save(host: &Host, d: &Definition) -> Result<(), MdevError> {
    Ok(host.write_state(&path_of(&d.parent, &d.uuid), render(d).as_bytes(), 0o644)?)
}

/// Removes the definition; `false` when there was none.
pub fn delete(host: &Host, parent: &MdevParent, uuid: &MdevUuid) -> Result<bool, MdevError> {
    Ok(host.remove_state(&path_of(parent, uuid))?)
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
            ("{\"mdev_type\": \"x\", \"start\": \"auto\", \"bogus\": 1}", "unknown field `bogus`"),
            ("{\"mdev_type\": \"../x\", \"start\": \"auto\"}", "invalid mdev type"),
            ("{\"mdev_type\": \"x\", \"start\": \"sometimes\"}", "unknown variant"),
            ("{\"mdev_type\": \"x\", \"start\": \"auto\", \"attrs\": [{\"../../x\": \"1\"}]}", "invalid attribute"),
            ("{\"mdev_type\": \"x\", \"start\": \"auto\", \"attrs\": [{\"a\": 1}]}", "must be a string"),
        ] {
            let e = parse(&p, u, text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
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
        for bad in ["", "/abs", "a//b", "../x", "a/../b", ".hidden", "a/b/c/d/e", "sp ace"] {
            assert!(Attr::new(bad, "1").is_err(), "{bad}");
        }
        assert!(Attr::new("x", "a\0b").is_err());
    }
}
