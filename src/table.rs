//! Text tables for people; JSON is the machine interface. One engine
//! (comfy-table, which measures Unicode widths and wraps cells) behind one
//! small type, so every table looks alike: a header row, columns two spaces
//! apart, no borders, and, for a person at a terminal, cells wrapped to fit
//! its width instead of running past it.

use comfy_table::{presets::NOTHING, ColumnConstraint, ContentArrangement, Table as Engine};

pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    indent: usize,
}

/// The width to fit: `COLUMNS` when set (scripts and tests pick one), else
/// the terminal stdout is; `None` into a pipe or file, where a line stays
/// whole for grep and awk.
pub fn width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|c| *c >= 20) {
        return Some(c);
    }
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new(), indent: 0 }
    }

    /// Every line starts with this many spaces (a table under a heading).
    pub fn indented(mut self, indent: usize) -> Self {
        self.indent = indent;
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        self.render_to(width())
    }

    /// Renders to `width` columns (`None`: as wide as the cells are).
    pub fn render_to(&self, width: Option<usize>) -> String {
        let mut t = Engine::new();
        t.load_style(NOTHING);
        t.set_header(self.headers.clone());
        for r in &self.rows {
            t.add_row(r.clone());
        }
        match width {
            Some(w) => {
                t.set_content_arrangement(ContentArrangement::Dynamic);
                t.set_width(u16::try_from(w.saturating_sub(self.indent)).unwrap_or(u16::MAX));
            }
            None => {
                t.set_content_arrangement(ContentArrangement::Disabled);
            }
        }
        // A column of single words (addresses, UUIDs, ids) is not split
        // while the columns left of it leave room: half a UUID is no use to
        // anyone, so prose columns take the wrapping. When even the words
        // do not fit, the rightmost such columns give way first.
        let cells = |i: usize| self.rows.iter().filter_map(move |r| r.get(i));
        let content = |i: usize| cells(i).map(|c| c.chars().count()).chain([self.headers[i].chars().count()]).max().unwrap_or(0);
        let mut budget = width.map(|w| w.saturating_sub(self.indent)).unwrap_or(usize::MAX);
        let mut whole = vec![false; self.headers.len()];
        for (i, keep) in whole.iter_mut().enumerate() {
            let need = content(i) + if i == 0 { 0 } else { 2 };
            if cells(i).all(|c| !c.contains(char::is_whitespace)) && need <= budget {
                *keep = true;
                budget -= need;
            }
        }
        for (i, c) in t.column_iter_mut().enumerate() {
            // Two spaces between columns, none before the first.
            c.set_padding((if i == 0 { 0 } else { 2 }, 0));
            if whole.get(i).copied().unwrap_or(false) {
                c.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
        let pad = " ".repeat(self.indent);
        let mut out = String::new();
        for line in t.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue; // the style's (blank) header separator
            }
            out.push_str(&pad);
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

/// A type as an admin reads it: its name with the kernel's id beside it
/// (`A100D-4C (nvidia-709)`), or the id alone when there is no other name.
pub fn type_cell(id: Option<&str>, name: Option<&str>) -> String {
    match (id, name) {
        (Some(id), Some(n)) if n != id => format!("{n} ({id})"),
        (Some(id), _) => id.to_string(),
        (None, Some(n)) => n.to_string(),
        (None, None) => "-".into(),
    }
}

/// One vocabulary for "is a process using it" in every table: `in use`,
/// `free`, or `unknown` (not root: other users' /proc cannot be read).
pub fn in_use(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "in use",
        Some(false) => "free",
        None => "unknown",
    }
}

/// Words of `text` in lines of at most `width` characters: the first line
/// starts with `indent` spaces, the others with `hang` (a note under a
/// table: `[1] …` with its continuation lines under the text).
pub fn wrap(text: &str, width: Option<usize>, indent: usize, hang: usize) -> String {
    let Some(width) = width else {
        return format!("{}{text}\n", " ".repeat(indent));
    };
    let mut out = String::new();
    let mut line = String::new();
    let mut pad = indent;
    for word in text.split_whitespace() {
        let room = width.saturating_sub(pad).max(20);
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
            out.push_str(&" ".repeat(pad));
            out.push_str(&line);
            out.push('\n');
            line.clear();
            pad = hang;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&" ".repeat(pad));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_columns_two_apart_and_wrapped_to_the_width() {
        let mut t = Table::new(&["GPU", "WHY"]);
        t.row(vec!["0000:18:00.0".into(), "one two three four five six seven eight nine ten eleven twelve".into()]);
        let wide = t.render_to(None);
        assert_eq!(wide.lines().next(), Some("GPU           WHY"));
        assert!(wide.lines().nth(1).unwrap().starts_with("0000:18:00.0  one two"));
        let narrow = t.render_to(Some(40));
        assert!(narrow.lines().all(|l| l.chars().count() <= 40), "{narrow}");
        assert!(narrow.lines().count() > 2, "the long cell wraps: {narrow}");
        let indented = t.indented(2).render_to(Some(40));
        assert!(indented.lines().all(|l| l.starts_with("  ") && l.chars().count() <= 40), "{indented}");
    }

    #[test]
    fn test_wrap_keeps_words_whole() {
        let w = wrap("alpha beta gamma delta epsilon zeta eta theta iota kappa", Some(24), 2, 6);
        assert!(w.lines().all(|l| l.starts_with("  ") && l.chars().count() <= 24), "{w}");
        assert!(w.lines().skip(1).all(|l| l.starts_with("      ")), "continuation lines hang: {w}");
        assert_eq!(w.split_whitespace().count(), 10);
    }
}
