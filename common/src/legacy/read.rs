//! Reading MMM's files: lines, sections and includes into tables of entries that
//! remember their file and line, before anything is converted.

use super::{ImportError, MAX_INCLUDE_DEPTH};
use std::path::{Path, PathBuf};

/// Where MMM looked for an included file, after the including file's own directory.
const MMM_CONFIG_DIRS: &[&str] = &["/etc", "/etc/mmm", "/etc/mysql-mmm"];

/// The check names MMM 2.2.1 accepts in `<check NAME>`.
const CHECK_NAMES: &[&str] = &["default", "ping", "mysql", "rep_backlog", "rep_threads"];

/// Where a value came from, for warnings.
#[derive(Debug, Clone)]
pub(super) struct Loc {
    file: String,
    line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) value: String,
    pub(super) loc: Loc,
}

/// Entries by key, in first-seen order.
#[derive(Debug, Default, Clone)]
pub(super) struct Table(pub(super) Vec<(String, Entry)>);

impl Table {
    fn set(&mut self, key: String, entry: Entry) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, e)) => *e = entry,
            None => self.0.push((key, entry)),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Mmm {
    pub(super) globals: Table,
    /// (kind, name) -> entries, in first-seen order.
    pub(super) sections: Vec<((String, String), Table)>,
    /// Warnings of the reading itself (trailing comments).
    pub(super) warnings: Vec<String>,
}

impl Mmm {
    fn section(&mut self, kind: &str, name: &str) -> &mut Table {
        let key = (kind.to_string(), name.to_string());
        if let Some(i) = self.sections.iter().position(|(k, _)| *k == key) {
            return &mut self.sections[i].1;
        }
        self.sections.push((key, Table::default()));
        &mut self.sections.last_mut().expect("just pushed").1
    }

    pub(super) fn read(
        &mut self,
        path: &Path,
        depth: usize,
        open: &mut Option<(String, String, Loc)>,
    ) -> Result<(), ImportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
            path: path.into(),
            source,
        })?;
        let file = path.display().to_string();
        for (i, raw_line) in text.lines().enumerate() {
            let loc = Loc {
                file: file.clone(),
                line: i + 1,
            };
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |problem: String| ImportError::Syntax {
                at: loc.to_string(),
                problem,
            };
            if let Some(close) = line.strip_prefix("</") {
                let kind = close.trim_end_matches('>').trim();
                match open.take() {
                    Some((k, _, _)) if k == kind => {}
                    Some((k, n, at)) => {
                        return Err(syntax(format!("</{kind}> closes <{k} {n}> opened at {at}")));
                    }
                    None => return Err(syntax(format!("</{kind}> without an open section"))),
                }
                continue;
            }
            if let Some(head) = line.strip_prefix('<') {
                let head = head.strip_suffix('>').ok_or_else(|| {
                    syntax(format!("section header {line:?} lacks its closing '>'"))
                })?;
                // `<socket/>`, `<check mysql/>`: a section with nothing in it.
                let (head, empty) = match head.strip_suffix('/') {
                    Some(h) => (h, true),
                    None => (head, false),
                };
                let mut words = head.split_whitespace();
                let kind = words.next().unwrap_or_default().to_string();
                let name = words.next().unwrap_or("").to_string();
                if let Some((k, n, at)) = open {
                    return Err(syntax(format!(
                        "<{kind}> opened inside <{k} {n}> (opened at {at})"
                    )));
                }
                let needs_name = matches!(kind.as_str(), "host" | "role" | "check" | "copy_method");
                let known = needs_name || matches!(kind.as_str(), "monitor" | "socket");
                if !known {
                    return Err(syntax(format!(
                        "unknown section <{kind}> (MMM knows host, role, monitor, check, socket, copy_method)"
                    )));
                }
                if needs_name && name.is_empty() {
                    return Err(syntax(format!("<{kind}> needs a name")));
                }
                if kind == "check" && !CHECK_NAMES.contains(&name.as_str()) {
                    return Err(syntax(format!(
                        "<check {name}>: MMM knows the checks {}",
                        CHECK_NAMES.join(", ")
                    )));
                }
                // Registered even when empty, so that it exists as it did for MMM.
                self.section(&kind, &name);
                if !empty {
                    *open = Some((kind, name, loc.clone()));
                }
                continue;
            }
            let (key, mut value) = match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                None => return Err(syntax(format!("{line:?} has no value"))),
            };
            // Guides put comments after values (`ping_ips a, b   # real IPs`). MMM
            // kept them in the value, which broke it; a '#' after a blank is taken as a
            // comment here, with a warning, while one inside a word (a password) stays.
            if let Some(i) = value
                .char_indices()
                .find(|&(i, c)| c == '#' && i > 0 && value[..i].ends_with(char::is_whitespace))
                .map(|(i, _)| i)
            {
                self.warnings.push(format!(
                    "{loc}: {key}: {:?} taken as a comment (MMM read it as part of the value)",
                    &value[i..]
                ));
                value = value[..i].trim_end().to_string();
            }
            if key == "include" {
                if open.is_some() {
                    return Err(syntax("include inside a section".into()));
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(ImportError::IncludeDepth {
                        at: loc.to_string(),
                    });
                }
                self.read(&include_target(path, &value), depth + 1, open)?;
                continue;
            }
            let entry = Entry { value, loc };
            match open {
                Some((kind, name, _)) => {
                    let (kind, name) = (kind.clone(), name.clone());
                    self.section(&kind, &name).set(key, entry);
                }
                None => self.globals.set(key, entry),
            }
        }
        Ok(())
    }
}

/// The file `include NAME` in `from` means. MMM added `.conf` when missing and looked in
/// /etc, /etc/mmm and /etc/mysql-mmm; beside the including file comes first here (the
/// same place for an installed config, and right for copies), then MMM's directories.
fn include_target(from: &Path, name: &str) -> PathBuf {
    let name = if name.ends_with(".conf") {
        name.to_string()
    } else {
        format!("{name}.conf")
    };
    let beside = from.parent().unwrap_or(Path::new(".")).join(&name);
    if beside.exists() || Path::new(&name).is_absolute() {
        return beside;
    }
    MMM_CONFIG_DIRS
        .iter()
        .map(|d| Path::new(d).join(&name))
        .find(|p| p.exists())
        .unwrap_or(beside)
}
