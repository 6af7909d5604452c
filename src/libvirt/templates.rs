//! The XML templates in `xml-templates/`, loaded at run time so admins can
//! edit them: from `--templates DIR` / `VGPUCTL_TEMPLATES`, else
//! /etc/vgpuctl/xml-templates, else /usr/share/vgpuctl/xml-templates, else
//! the copies built into the binary. Every value is XML-escaped (`&<>"'`)
//! unless vgpuctl marks it as already-rendered XML; `/` stays readable.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};

use crate::host::Host;

const BUILT_IN: &[(&str, &str)] = &[
    ("domain.xml", include_str!("../../xml-templates/domain.xml")),
    ("hostdev-mdev.xml", include_str!("../../xml-templates/hostdev-mdev.xml")),
    ("hostdev-vf.xml", include_str!("../../xml-templates/hostdev-vf.xml")),
    ("hostdev-pci.xml", include_str!("../../xml-templates/hostdev-pci.xml")),
    ("metadata.xml", include_str!("../../xml-templates/metadata.xml")),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name} is broken: {detail}")]
    Render { name: String, detail: String },
}

pub struct Templates {
    env: Environment<'static>,
    pub source: String,
}

pub fn escape_xml(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Where templates come from: an explicit folder, the admin's, the package's.
pub fn find_dir(host: &Host, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = explicit {
        return Some(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("VGPUCTL_TEMPLATES").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d));
    }
    ["/etc/vgpuctl/xml-templates", "/usr/share/vgpuctl/xml-templates"].iter().filter_map(|p| host.path(p).ok()).find(|p| p.join("domain.xml").is_file())
}

impl Templates {
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Custom("xml"));
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == minijinja::AutoEscape::None || value.is_safe() {
                return minijinja::escape_formatter(out, state, value);
            }
            let mut s = String::new();
            if value.is_none() || value.is_undefined() {
                return Ok(());
            }
            escape_xml(&value.to_string(), &mut s);
            out.write_str(&s).map_err(minijinja::Error::from)
        });
        let mut source = "built-in".to_string();
        for (name, built_in) in BUILT_IN {
            let text = match dir {
                Some(d) if d.join(name).is_file() => {
                    source = d.display().to_string();
                    std::fs::read_to_string(d.join(name)).map_err(|e| TemplateError::Read { path: d.join(name).display().to_string(), source: e })?
                }
                _ => built_in.to_string(),
            };
            env.add_template_owned(name.to_string(), text).map_err(|e| TemplateError::Render { name: name.to_string(), detail: e.to_string() })?;
        }
        Ok(Self { env, source })
    }

    pub fn render(&self, name: &str, ctx: Value) -> Result<String, TemplateError> {
        let t = self.env.get_template(name).map_err(|e| TemplateError::Render { name: name.into(), detail: e.to_string() })?;
        // Templates start with a comment whose whitespace control eats the
        // first line's indentation; callers place fragments themselves.
        let out = t.render(ctx).map_err(|e| TemplateError::Render { name: name.into(), detail: format!("{e:#}") })?;
        Ok(out.trim().to_string())
    }
}

/// Marks already-rendered XML (a hostdev fragment) so it is not escaped again.
pub fn safe(xml: String) -> Value {
    Value::from_safe_string(xml)
}
