//! The Prometheus text exposition format (0.0.4): `# HELP` and `# TYPE` for
//! every family, label values escaped, families without samples left out
//! (so a metric the host cannot report is absent, not 0).

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Exposition {
    /// The family `name`, added on first use.
    pub fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family { name, help, kind, samples: Vec::new() });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// Every sample as (family name, labels, value), for tests and checks.
    pub fn samples(&self) -> impl Iterator<Item = (&str, &[(&'static str, String)], f64)> {
        self.families.iter().flat_map(|f| f.samples.iter().map(move |(l, v)| (f.name, l.as_slice(), *v)))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, if f.kind == Kind::Counter { "counter" } else { "gauge" });
            for (labels, v) in &f.samples {
                out.push_str(f.name);
                // Empty label values are the same as absent ones to Prometheus: leave them out.
                let shown: Vec<_> = labels.iter().filter(|(_, v)| !v.is_empty()).collect();
                if !shown.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in shown.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", number(*v));
            }
        }
        out
    }
}

impl Family {
    pub fn sample(&mut self, labels: &[(&'static str, &str)], value: f64) {
        self.samples.push((labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(), value));
    }

    /// A sample only when the value is known.
    pub fn sample_opt(&mut self, labels: &[(&'static str, &str)], value: Option<f64>) {
        if let Some(v) = value {
            self.sample(labels, v);
        }
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_format_escapes_labels_and_leaves_out_empty_families_and_labels() {
        let mut e = Exposition::default();
        e.family("a_total", "Help with \\ and\nnewline.", Kind::Counter).sample(&[("vm", "we\"ird\\name\nx"), ("gpu", "")], 3.0);
        e.family("b_ratio", "Nothing known.", Kind::Gauge).sample_opt(&[("gpu", "x")], None);
        e.family("c_bytes", "Bytes.", Kind::Gauge).sample(&[], 0.25);
        assert_eq!(
            e.to_text(),
            "# HELP a_total Help with \\\\ and\\nnewline.\n# TYPE a_total counter\na_total{vm=\"we\\\"ird\\\\name\\nx\"} 3\n# HELP c_bytes Bytes.\n# TYPE c_bytes gauge\nc_bytes 0.25\n"
        );
        assert_eq!(e.samples().count(), 2);
    }
}
