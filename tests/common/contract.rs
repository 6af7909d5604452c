//! The `--json` contract in tests: every document is validated against its
//! published schema (docs/schema/<name>.json) with a real JSON-Schema
//! validator, made strict so that a field the schema does not describe fails.

use std::path::PathBuf;

use serde_json::Value;

pub fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/schema")
}

/// The published schema of document `name`.
pub fn published(name: &str) -> Value {
    let path = schema_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The schema with `additionalProperties: false` on every object that lists
/// its properties and says nothing else: the output may not carry a field
/// its schema does not describe.
pub fn strict(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                    m.insert("additionalProperties".into(), Value::Bool(false));
                }
                for x in m.values_mut() {
                    walk(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Validates `doc` against the published schema `name` (strictly).
pub fn validate(name: &str, doc: &Value, what: &str) {
    let schema = strict(published(name));
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema {name}: {e}"));
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: output does not match docs/schema/{name}.json:\n  {}\n{doc:#}", errors.join("\n  "));
}
