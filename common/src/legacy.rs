//! Import of MySQL-MMM 2.2.1 configurations (`mmm-control import-mmm`).
//!
//! MMM's format (lib/Common/Config.pm of 2.2.1): `key value` lines, `#` comment lines
//! (MMM knew only whole-line comments: a `#` inside a word, as in a password, is part
//! of the value; one after a blank starts a comment here, with a warning),
//! `include FILE`, sections `<host default>`, `<host NAME>`, `<role NAME>`, `<monitor>`,
//! `<check NAME>`, `<socket>`, `<copy_method NAME>` closed by `</host>` etc., empty
//! sections as `<socket/>` or `<check mysql/>`, lists separated by commas (and, here,
//! spaces), booleans as 0/1, yes/no, on/off, true/false, and durations as integer
//! seconds. A section opened twice (as `<host default>` usually is, once per file) is
//! merged, later keys winning, as MMM did.
//!
//! Every option MMM 2.2.1 accepts imports into a config that passes validation: options
//! mmm has no use for (mmm-tools, pid files, SSL sockets) are dropped with a warning
//! naming the file and line they came from, as is every option mapped differently.
//! MMM's status file is read by [`status::parse`].

use crate::duration::format_duration;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {problem}")]
    Syntax { at: String, problem: String },
    #[error("{at}: include nests deeper than {max} files (an include loop?)", max = MAX_INCLUDE_DEPTH)]
    IncludeDepth { at: String },
}

const MAX_INCLUDE_DEPTH: usize = 8;

pub mod status;

/// Where MMM looked for an included file, after the including file's own directory.
const MMM_CONFIG_DIRS: &[&str] = &["/etc", "/etc/mmm", "/etc/mysql-mmm"];

/// The check names MMM 2.2.1 accepts in `<check NAME>`.
const CHECK_NAMES: &[&str] = &["default", "ping", "mysql", "rep_backlog", "rep_threads"];

/// Where a value came from, for warnings.
#[derive(Debug, Clone)]
struct Loc {
    file: String,
    line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    loc: Loc,
}

/// Entries by key, in first-seen order.
#[derive(Debug, Default, Clone)]
struct Table(Vec<(String, Entry)>);

impl Table {
    fn set(&mut self, key: String, entry: Entry) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, e)) => *e = entry,
            None => self.0.push((key, entry)),
        }
    }
}

#[derive(Debug, Default)]
struct Mmm {
    globals: Table,
    /// (kind, name) -> entries, in first-seen order.
    sections: Vec<((String, String), Table)>,
    /// Warnings of the reading itself (trailing comments).
    warnings: Vec<String>,
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

    fn read(
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

/// The result of an import: TOML text and the warnings to show the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Reads MMM config files (each may `include` others) and converts them.
pub fn import(files: &[PathBuf]) -> Result<Import, ImportError> {
    let mut mmm = Mmm::default();
    for f in files {
        let mut open = None;
        mmm.read(f, 0, &mut open)?;
        if let Some((k, n, at)) = open {
            return Err(ImportError::Syntax {
                at: at.to_string(),
                problem: format!("<{k} {n}> is never closed"),
            });
        }
    }
    let converter = Converter {
        warnings: std::mem::take(&mut mmm.warnings),
        ..Converter::default()
    };
    converter.convert(&mmm)
}

#[derive(Default)]
struct Converter {
    warnings: Vec<String>,
    out: String,
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn quoted_list(value: &str) -> String {
    let items: Vec<String> = list(value).iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Keys of MMM's host sections that belong to mmm-tools (mmm_backup, mmm_clone,
/// mmm_restore) or to MMM's own process management; mmm has neither. Names as in MMM
/// 2.2.1's ruleset.
const DROPPED_HOST_KEYS: &[(&str, &str)] = &[
    (
        "pid_path",
        "the service manager tracks the process (conf/systemd)",
    ),
    (
        "bin_path",
        "mmm's binaries are found on PATH or by the systemd unit",
    ),
    ("mysql_rcscript", "mmm does not start or stop mysqld"),
    ("mysql_cnf", TOOLS),
    ("ssh_user", TOOLS),
    ("ssh_port", TOOLS),
    ("ssh_parameters", TOOLS),
    ("tools_user", TOOLS),
    ("tools_password", TOOLS),
    ("backup_dir", TOOLS),
    ("restore_dir", TOOLS),
    ("lvm_bin_lvcreate", TOOLS),
    ("lvm_bin_lvremove", TOOLS),
    ("lvm_snapshot_size", TOOLS),
    ("lvm_logical_volume", TOOLS),
    ("lvm_volume_group", TOOLS),
    ("lvm_mount_dir", TOOLS),
    ("lvm_mount_opts", TOOLS),
];

const TOOLS: &str = "mmm-tools (backup/clone/restore) are not part of mmm";

const HOST_KEYS: &[&str] = &[
    "cluster_interface",
    "agent_port",
    "mysql_port",
    "agent_user",
    "agent_password",
    "monitor_user",
    "monitor_password",
    "replication_user",
    "replication_password",
];

impl Converter {
    fn warn(&mut self, loc: &Loc, message: impl std::fmt::Display) {
        self.warnings.push(format!("{loc}: {message}"));
    }

    fn line(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{text}");
    }

    /// MMM's integer (or decimal) seconds as our duration string.
    fn seconds(&mut self, key: &str, e: &Entry) -> Result<String, ImportError> {
        let secs: f64 =
            e.value
                .parse()
                .map_err(|_e: std::num::ParseFloatError| ImportError::Syntax {
                    at: e.loc.to_string(),
                    problem: format!("{key} {:?} is not a number of seconds", e.value),
                })?;
        if !(0.0..=1e9).contains(&secs) {
            return Err(ImportError::Syntax {
                at: e.loc.to_string(),
                problem: format!("{key} {:?} is out of range", e.value),
            });
        }
        Ok(quote(&format_duration(Duration::from_millis(
            (secs * 1000.0).round() as u64,
        ))))
    }

    fn integer(&mut self, key: &str, e: &Entry) -> Result<String, ImportError> {
        e.value
            .parse::<u64>()
            .map(|n| n.to_string())
            .map_err(|_e| ImportError::Syntax {
                at: e.loc.to_string(),
                problem: format!("{key} {:?} is not a whole number", e.value),
            })
    }

    fn boolean(&mut self, key: &str, e: &Entry) -> Result<String, ImportError> {
        // MMM's words, case-insensitive.
        match e.value.to_ascii_lowercase().as_str() {
            "1" | "yes" | "true" | "on" => Ok("true".into()),
            "0" | "no" | "false" | "off" => Ok("false".into()),
            _ => Err(ImportError::Syntax {
                at: e.loc.to_string(),
                problem: format!(
                    "{key} {:?} is not 0 or 1 (nor yes/no, on/off, true/false)",
                    e.value
                ),
            }),
        }
    }

    /// Writes the host keys both `<host default>` and `<host NAME>` may carry.
    fn host_keys(
        &mut self,
        table: &Table,
        agent_extra: &mut Vec<(String, Entry)>,
    ) -> Result<(), ImportError> {
        for (key, e) in &table.0 {
            match key.as_str() {
                "ip" | "mode" | "peer" => {}
                k if HOST_KEYS.contains(&k) => {
                    let v = if k.ends_with("_port") {
                        self.integer(k, e)?
                    } else {
                        quote(&e.value)
                    };
                    if k.ends_with("_password") {
                        self.warn(
                            &e.loc,
                            format!("{k} stays inline; consider {k}_file with a 0600 file"),
                        );
                    }
                    self.line(format_args!("{k} = {v}"));
                }
                "mysql_pidfile" => self.line(format_args!("mysql_pid_file = {}", quote(&e.value))),
                "max_kill_retries" => agent_extra.push((key.clone(), e.clone())),
                k => match DROPPED_HOST_KEYS.iter().find(|(d, _)| *d == k) {
                    Some((_, why)) => self.warn(&e.loc, format!("{k} dropped: {why}")),
                    None => self.warn(&e.loc, format!("{k} is not an MMM host option; dropped")),
                },
            }
        }
        Ok(())
    }

    fn convert(mut self, mmm: &Mmm) -> Result<Import, ImportError> {
        let sections = |kind: &str| -> Vec<(&str, &Table)> {
            mmm.sections
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|((_, n), t)| (n.as_str(), t))
                .collect()
        };
        self.line("# Generated by `mmm-control import-mmm` from a MySQL-MMM 2.2.1 configuration.");
        self.line(
            "# Review the warnings it printed, then check with `mmm-monitor --check-config FILE`.",
        );
        self.line("");

        let mut agent_extra: Vec<(String, Entry)> = Vec::new();
        for (key, e) in &mmm.globals.0 {
            match key.as_str() {
                "active_master_role" => {
                    self.line(format_args!("active_master_role = {}", quote(&e.value)))
                }
                "this" => self.warn(
                    &e.loc,
                    format!(
                        "this {0} dropped: start the agent as `mmm-agent --host {0}`",
                        e.value
                    ),
                ),
                "debug" => self.warn(&e.loc, "debug dropped: set RUST_LOG=debug instead"),
                "max_kill_retries" => agent_extra.push((key.clone(), e.clone())),
                "default_copy_method" | "clone_dirs" => {
                    self.warn(&e.loc, format!("{key} dropped: {TOOLS}"))
                }
                k => self.warn(&e.loc, format!("{k} is not an MMM option; dropped")),
            }
        }

        self.line("\n[defaults]");
        if let Some((_, t)) = sections("host").into_iter().find(|(n, _)| *n == "default") {
            self.host_keys(t, &mut agent_extra)?;
        }

        let host_default = sections("host")
            .into_iter()
            .find(|(n, _)| *n == "default")
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        for (name, t) in sections("host")
            .into_iter()
            .filter(|(n, _)| *n != "default")
        {
            self.line(format_args!("\n[hosts.{name}]"));
            // MMM's `<host default>` is a template for every key, these included.
            for key in ["ip", "mode", "peer"] {
                let found = t.0.iter().chain(&host_default.0).find(|(k, _)| k == key);
                if let Some((_, e)) = found {
                    self.line(format_args!("{key} = {}", quote(&e.value)));
                }
            }
            self.host_keys(t, &mut agent_extra)?;
        }

        for (name, t) in sections("role") {
            self.line(format_args!("\n[roles.{name}]"));
            for (key, e) in &t.0 {
                match key.as_str() {
                    "mode" | "prefer" => self.line(format_args!("{key} = {}", quote(&e.value))),
                    "hosts" | "ips" => self.line(format_args!("{key} = {}", quoted_list(&e.value))),
                    k => self.warn(&e.loc, format!("{k} is not an MMM role option; dropped")),
                }
                if key == "prefer" {
                    self.warn(
                        &e.loc,
                        format!(
                            "prefer {}: MMM moved the role back to it automatically; mmm does so only with monitor.failback = true",
                            e.value
                        ),
                    );
                }
            }
        }

        self.line("\n[monitor]");
        let monitor = sections("monitor")
            .first()
            .map(|(_, t)| (*t).clone())
            .unwrap_or_default();
        let get = |k: &str| {
            monitor
                .0
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, e)| e.clone())
        };
        let ip = get("ip")
            .map(|e| e.value)
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = get("port")
            .map(|e| e.value)
            .unwrap_or_else(|| "9988".into());
        self.line(format_args!("control = {}", quote(&format!("{ip}:{port}"))));
        for (key, e) in &monitor.0 {
            match key.as_str() {
                "ip" | "port" => {}
                "mode" => self.line(format_args!("mode = {}", quote(&e.value))),
                "status_path" => {
                    self.line(format_args!("status_path = {}", quote(&e.value)));
                    self.warn(
                        &e.loc,
                        "status_path: mmm-monitor takes over the states and roles in MMM's status file there, \
                         then writes its own format in its place; keep a copy to go back to MMM",
                    );
                }
                "kill_host_bin" => {
                    // MMM ran a relative kill_host_bin from bin_path/monitor/.
                    let path = match get("bin_path") {
                        Some(bin) if !e.value.starts_with('/') => {
                            let abs =
                                format!("{}/monitor/{}", bin.value.trim_end_matches('/'), e.value);
                            self.warn(
                                &e.loc,
                                format!(
                                    "kill_host_bin {}: relative to bin_path as MMM ran it: {abs}",
                                    e.value
                                ),
                            );
                            abs
                        }
                        _ => e.value.clone(),
                    };
                    self.line(format_args!("kill_host_bin = {}", quote(&path)));
                }
                "flap_count" if e.value.trim() == "0" => {
                    // MMM's 0 turned flap detection off; mmm has no off switch.
                    self.warn(
                        &e.loc,
                        "flap_count 0: MMM did not detect flapping then; mmm always does, the largest count is used",
                    );
                    self.line(format_args!("flap_count = {}", u32::MAX));
                }
                "ping_ips" => self.line(format_args!("ping_ips = {}", quoted_list(&e.value))),
                "ping_interval" | "flap_duration" | "auto_set_online" | "wait_for_other_master" => {
                    let v = self.seconds(key, e)?;
                    self.line(format_args!("{key} = {v}"));
                }
                "flap_count" => {
                    let v = self.integer(key, e)?;
                    self.line(format_args!("flap_count = {v}"));
                }
                "careful_startup" => {
                    let v = self.boolean(key, e)?;
                    self.line(format_args!("careful_startup = {v}"));
                }
                "pid_path" | "bin_path" => self.warn(
                    &e.loc,
                    format!("{key} dropped: the service manager runs mmm-monitor (conf/systemd)"),
                ),
                k => self.warn(&e.loc, format!("{k} is not an MMM monitor option; dropped")),
            }
        }
        if get("auto_set_online").is_none() {
            self.line("auto_set_online = \"0s\"");
        }

        let checks = sections("check");
        let mut timings_set = false;
        for (name, t) in &checks {
            self.line(format_args!("\n[checks.{name}]"));
            for (key, e) in &t.0 {
                match key.as_str() {
                    // MMM accepted max_backlog in every check section (its ruleset
                    // shares one key list) but only rep_backlog reads it.
                    "max_backlog" if !matches!(*name, "rep_backlog" | "default") => self.warn(
                        &e.loc,
                        format!("max_backlog in <check {name}> dropped: only the rep_backlog check uses it (MMM ignored it there too)"),
                    ),
                    "check_period" | "trap_period" | "timeout" | "max_backlog" => {
                        timings_set |= key != "max_backlog";
                        let v = self.seconds(key, e)?;
                        self.line(format_args!("{key} = {v}"));
                    }
                    "restart_after" => {
                        let v = self.integer(key, e)?;
                        self.line(format_args!("restart_after = {v}"));
                    }
                    k => self.warn(&e.loc, format!("{k} is not an MMM check option; dropped")),
                }
            }
        }
        if timings_set {
            self.warnings.push(
                "checks: MMM's check timings were carried over; mmm's defaults (check_period 1s, trap_period 3s, timeout 1s) \
                 detect failures faster, and definitive evidence (probe, refused connection) skips trap_period anyway"
                    .into(),
            );
        } else {
            self.warnings.push(
                "checks: MMM's default timings (check_period 5s, trap_period 10s, timeout 2s) are not carried over; \
                 mmm's defaults apply (1s, 3s, 1s)"
                    .into(),
            );
        }

        self.line("\n[agent]");
        let mut retries = BTreeMap::new();
        for (_, e) in &agent_extra {
            retries.insert(e.value.clone(), e.loc.clone());
        }
        if let Some((value, loc)) = retries.iter().next_back() {
            let v = self.integer(
                "max_kill_retries",
                &Entry {
                    value: value.clone(),
                    loc: loc.clone(),
                },
            )?;
            self.line(format_args!("max_kill_retries = {v}"));
            if retries.len() > 1 {
                self.warn(loc, "max_kill_retries differs between hosts; mmm has one value for all agents, the largest is used");
            }
        }
        self.line("fencing = \"lease\"   # new: a writer that loses the monitor demotes itself after `lease`");
        self.line("probe = \"auto\"      # new: eBPF liveness probe, sub-millisecond detection of mysqld death");

        for (_, t) in sections("socket") {
            if let Some((_, e)) = t.0.first() {
                self.warn(
                    &e.loc,
                    "<socket> dropped: the agent protocol is authenticated with the cluster key instead of SSL certificates",
                );
            }
        }
        for (name, t) in sections("copy_method") {
            if let Some((_, e)) = t.0.first() {
                self.warn(&e.loc, format!("<copy_method {name}> dropped: {TOOLS}"));
            }
        }
        self.line("\n[security]");
        self.line("key_file = \"/etc/mmm/cluster.key\"   # new: create with `mmm-control gen-key > /etc/mmm/cluster.key; chmod 600`");
        self.warnings.push(
            "security.key_file: new; generate the cluster key with `mmm-control gen-key` and copy it to every host".into(),
        );

        Ok(Import {
            toml: self.out,
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn legacy(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../conf/legacy")
            .join(name)
    }

    #[test]
    fn imports_the_documented_layout_into_a_valid_config() {
        let imp = import(&[
            legacy("mmm_common.conf"),
            legacy("mmm_mon.conf"),
            legacy("mmm_agent.conf"),
        ])
        .unwrap();
        let config = Config::parse(&imp.toml, Path::new("imported.toml")).unwrap_or_else(|e| {
            panic!(
                "imported TOML does not validate:\n{}\n{}",
                e.lines().join("\n"),
                imp.toml
            )
        });
        let names: Vec<_> = config.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1", "db2", "db3"]);
        let db1 = config.host("db1").unwrap();
        assert_eq!(db1.peer.as_deref(), Some("db2"));
        assert_eq!(db1.replication_user, "replication");
        assert_eq!(
            db1.monitor_user, "mmm_monitor",
            "<host default> from both files is merged"
        );
        let writer = config.role("writer").unwrap();
        assert_eq!(writer.prefer.as_deref(), Some("db1"));
        assert_eq!(config.role("reader").unwrap().ips.len(), 3);
        assert_eq!(
            config.monitor.auto_set_online,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            config.monitor.status_path,
            Path::new("/var/lib/mysql-mmm/mmm_mond.status")
        );
        assert_eq!(config.monitor.ping_ips.len(), 4);
        assert_eq!(config.checks.mysql.check_period, Duration::from_secs(5));
        assert_eq!(config.checks.ping.trap_period, Duration::from_secs(10));
        assert_eq!(
            config.checks.rep_backlog.max_backlog,
            Duration::from_secs(120)
        );
        assert_eq!(
            config.checks.rep_backlog.check_period,
            Duration::from_secs(5)
        );

        let w = imp.warnings.join("\n");
        for needle in [
            "mmm_common.conf:6: pid_path dropped",
            "mmm_common.conf:7: bin_path dropped",
            "replication_password stays inline",
            "mmm_mon.conf:5: pid_path dropped",
            "<socket> dropped",
            "debug dropped",
            "this db1 dropped: start the agent as `mmm-agent --host db1`",
            "prefer db1: MMM moved the role back",
            "MMM's check timings were carried over",
            "security.key_file: new",
        ] {
            assert!(w.contains(needle), "no warning contains {needle:?}:\n{w}");
        }
    }

    fn parse_imported(imp: &Import) -> Config {
        Config::parse(&imp.toml, Path::new("imported.toml")).unwrap_or_else(|e| {
            panic!(
                "imported TOML does not validate:\n{}\n{}",
                e.lines().join("\n"),
                imp.toml
            )
        })
    }

    /// Each directory of conf/legacy holding an mmm_common.conf is one MMM installation:
    /// its files, as `mmm-control import-mmm` takes them.
    fn legacy_sets() -> Vec<Vec<PathBuf>> {
        let root = legacy("");
        let mut dirs = vec![root.clone()];
        for entry in std::fs::read_dir(&root).expect("conf/legacy exists") {
            let path = entry.expect("readable entry").path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
        dirs.sort();
        dirs.into_iter()
            .filter(|d| d.join("mmm_common.conf").exists())
            .map(|d| {
                ["mmm_common.conf", "mmm_mon.conf", "mmm_agent.conf"]
                    .iter()
                    .map(|f| d.join(f))
                    .filter(|f| f.exists())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_mmm_config_in_conf_legacy_imports_into_a_valid_config() {
        let sets = legacy_sets();
        assert!(
            sets.len() >= 3,
            "expected the documented, four-host and per-check sets: {sets:?}"
        );
        for files in sets {
            let imp = import(&files).unwrap_or_else(|e| panic!("{files:?}: {e}"));
            parse_imported(&imp);
            // Every file:line warning names a file of this set.
            for w in &imp.warnings {
                if w.contains(".conf:") {
                    assert!(
                        files
                            .iter()
                            .any(|f| w.starts_with(&f.display().to_string())),
                        "{w}"
                    );
                }
            }
        }
    }

    #[test]
    fn four_hosts_with_tools_options_and_copy_methods() {
        let dir = legacy("four-hosts");
        let imp = import(&[
            dir.join("mmm_common.conf"),
            dir.join("mmm_mon.conf"),
            dir.join("mmm_agent.conf"),
        ])
        .unwrap();
        let config = parse_imported(&imp);
        let names: Vec<_> = config.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1", "db2", "db3", "db4"]);
        assert_eq!(
            config.host("db4").unwrap().mode,
            crate::types::HostMode::Slave
        );
        assert_eq!(config.role("reader").unwrap().ips.len(), 4);
        // A '#' inside a value is part of it, as MMM read it.
        assert_eq!(
            config
                .host("db1")
                .unwrap()
                .replication_password
                .reveal()
                .unwrap(),
            "Rep#Pass"
        );
        assert_eq!(
            config.monitor.kill_host_bin.as_deref(),
            Some(Path::new("/usr/libexec/mysql-mmm/monitor/kill_host"))
        );
        assert!(config.monitor.careful_startup);
        assert_eq!(config.agent.max_kill_retries, 10);
        let w = imp.warnings.join("\n");
        for needle in [
            "lvm_logical_volume dropped: mmm-tools",
            "lvm_volume_group dropped: mmm-tools",
            "tools_user dropped",
            "tools_password dropped",
            "mmm_common.conf:7: default_copy_method dropped",
            "clone_dirs dropped",
            "<copy_method ssh-gz> dropped",
            "<copy_method rdiff> dropped",
            "kill_host_bin kill_host: relative to bin_path",
            "status_path: mmm-monitor takes over",
            "this db4 dropped",
        ] {
            assert!(w.contains(needle), "no warning contains {needle:?}:\n{w}");
        }
        assert!(!w.contains("is not an MMM"), "every option is MMM's:\n{w}");
    }

    #[test]
    fn per_check_sections_as_the_guides_wrote_them() {
        let dir = legacy("per-check");
        let imp = import(&[
            dir.join("mmm_common.conf"),
            dir.join("mmm_mon.conf"),
            dir.join("mmm_agent.conf"),
        ])
        .unwrap();
        let config = parse_imported(&imp);
        assert_eq!(config.checks.ping.check_period, Duration::from_secs(1));
        assert_eq!(config.checks.ping.trap_period, Duration::from_secs(5));
        assert_eq!(config.checks.mysql.check_period, Duration::from_secs(10));
        assert_eq!(config.checks.rep_threads.timeout, Duration::from_secs(2));
        assert_eq!(
            config.checks.rep_backlog.max_backlog,
            Duration::from_secs(120)
        );
        assert_eq!(
            config.checks.rep_backlog.check_period,
            Duration::from_secs(5)
        );
        assert!(!config.monitor.careful_startup);
        assert_eq!(config.monitor.flap_count, u32::MAX);
        assert_eq!(config.monitor.control.to_string(), "192.168.10.5:9988");
        let w = imp.warnings.join("\n");
        for needle in [
            "max_backlog in <check mysql> dropped: only the rep_backlog check uses it",
            "flap_count 0: MMM did not detect flapping",
            "<socket> dropped",
        ] {
            assert!(w.contains(needle), "no warning contains {needle:?}:\n{w}");
        }
        assert!(!w.contains("is not an MMM"), "every option is MMM's:\n{w}");
    }

    /// Every key of MMM 2.2.1's ruleset (lib/Common/Config.pm), each section kind, empty
    /// sections and MMM's boolean words: the import validates and drops nothing silently.
    #[test]
    fn every_option_mmm_2_2_1_accepts_imports_into_a_valid_config() {
        let dir = std::env::temp_dir().join(format!("mmm-import-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("all.conf");
        std::fs::write(
            &f,
            "this a\ndebug off\nactive_master_role writer\nmax_kill_retries 7\ndefault_copy_method scp\nclone_dirs /var/lib/mysql\n\
             <role writer>\n mode exclusive\n hosts a, b\n ips 10.1.0.9\n prefer a\n</role>\n\
             <role reader>\n mode balanced\n hosts a, b, c\n ips 10.1.0.10, 10.1.0.11\n</role>\n\
             <monitor>\n ip 127.0.0.1\n port 9988\n pid_path /run/m.pid\n bin_path /usr/lib/mysql-mmm\n status_path /var/lib/mysql-mmm/mmm_mond.status\n\
              ping_interval 1\n ping_ips 10.1.0.1\n flap_duration 3600\n flap_count 3\n auto_set_online 30\n kill_host_bin kill_host\n\
              careful_startup YES\n mode wait\n wait_for_other_master 120\n</monitor>\n\
             <socket>\n type ssl\n cert_file /c.crt\n key_file /c.key\n ca_file /ca.crt\n</socket>\n\
             <copy_method scp>\n backup_command b\n restore_command r\n incremental_command i\n incremental 0\n single_run 0\n true_copy 0\n</copy_method>\n\
             <copy_method default/>\n\
             <host default>\n pid_path /run/a.pid\n bin_path /usr/lib/mysql-mmm\n agent_port 9989\n cluster_interface eth0\n mysql_port 3306\n\
              mysql_pidfile /run/mysqld.pid\n mysql_rcscript /etc/init.d/mysql\n mysql_cnf /etc/my.cnf\n agent_user ag\n agent_password ap\n\
              monitor_user mo\n monitor_password mp\n replication_user re\n replication_password rp\n ssh_user root\n ssh_port 22\n\
              ssh_parameters -q\n tools_user tu\n tools_password tp\n backup_dir /b\n restore_dir /r\n lvm_bin_lvcreate lvcreate\n\
              lvm_bin_lvremove lvremove\n lvm_snapshot_size 1G\n lvm_logical_volume lv\n lvm_volume_group vg\n lvm_mount_dir /mnt\n lvm_mount_opts -o ro\n</host>\n\
             <host a>\n ip 10.1.0.1\n mode master\n peer b\n</host>\n<host b>\n ip 10.1.0.2\n mode master\n peer a\n</host>\n\
             <host c>\n ip 10.1.0.3\n mode slave\n</host>\n\
             <check default>\n check_period 5\n trap_period 10\n timeout 2\n restart_after 10000\n max_backlog 60\n</check>\n\
             <check ping>\n max_backlog 60\n</check>\n<check mysql/>\n<check rep_threads>\n timeout 3\n</check>\n\
             <check rep_backlog>\n max_backlog 90\n</check>\n",
        )
        .unwrap();
        let imp = import(std::slice::from_ref(&f)).unwrap();
        let config = parse_imported(&imp);
        assert_eq!(config.monitor.mode, crate::types::MonitorMode::Wait);
        assert!(config.monitor.careful_startup);
        assert_eq!(config.agent.max_kill_retries, 7);
        assert_eq!(
            config.checks.rep_backlog.max_backlog,
            Duration::from_secs(90)
        );
        assert_eq!(config.checks.mysql.check_period, Duration::from_secs(5));
        assert_eq!(config.checks.rep_threads.timeout, Duration::from_secs(3));
        assert_eq!(
            config.host("c").unwrap().mysql_pid_file.as_deref(),
            Some(Path::new("/run/mysqld.pid"))
        );
        let w = imp.warnings.join("\n");
        assert!(!w.contains("is not an MMM"), "every option is MMM's:\n{w}");
        for needle in [
            "max_backlog in <check ping> dropped",
            "<copy_method scp> dropped",
            "<socket> dropped",
        ] {
            assert!(w.contains(needle), "no warning contains {needle:?}:\n{w}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn trailing_comments_are_cut_with_a_warning_and_a_hash_inside_a_word_stays() {
        let dir = std::env::temp_dir().join(format!("mmm-import-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("mmm.conf");
        std::fs::write(
            &f,
            "<host default>\n agent_password a#1\n monitor_password m\n replication_password r\n</host>\n\
             <host a>\n ip 10.1.0.1\n mode master\n peer b\n</host>\n<host b>\n ip 10.1.0.2\n mode master\n peer a\n</host>\n\
             <role writer>\n hosts a,b\n ips 10.1.0.9\n mode exclusive\n</role>\n\
             <monitor>\n ping_ips 10.1.0.1, 10.1.0.2    # real IPs, not VIPs\n auto_set_online 60 # seconds\n</monitor>\n",
        )
        .unwrap();
        let imp = import(std::slice::from_ref(&f)).unwrap();
        let config = parse_imported(&imp);
        assert_eq!(
            config.host("a").unwrap().agent_password.reveal().unwrap(),
            "a#1"
        );
        assert_eq!(config.monitor.ping_ips.len(), 2);
        assert_eq!(
            config.monitor.auto_set_online,
            Some(Duration::from_secs(60))
        );
        let w = imp.warnings.join("\n");
        assert!(
            w.contains("mmm.conf:22: ping_ips: \"# real IPs, not VIPs\" taken as a comment"),
            "{w}"
        );
        assert!(
            w.contains("mmm.conf:23: auto_set_online: \"# seconds\" taken as a comment"),
            "{w}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn comma_and_space_lists_and_bare_defaults() {
        let dir = std::env::temp_dir().join(format!("mmm-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("mmm.conf");
        std::fs::write(
            &f,
            "<host default>\n agent_password a\n monitor_password m\n replication_password r\n</host>\n\
             <host a>\n ip 10.1.0.1\n mode master\n peer b\n</host>\n<host b>\n ip 10.1.0.2\n mode master\n peer a\n</host>\n\
             <role writer>\n hosts a,b\n ips 10.1.0.9\n mode exclusive\n</role>\n\
             <role reader>\n hosts a b\n ips 10.1.0.10 ,10.1.0.11\n mode balanced\n</role>\n\
             <monitor>\n ping_ips 10.1.0.1 10.1.0.2\n port 9999\n</monitor>\n",
        )
        .unwrap();
        let imp = import(std::slice::from_ref(&f)).unwrap();
        let config = Config::parse(&imp.toml, &f)
            .unwrap_or_else(|e| panic!("{}\n{}", e.lines().join("\n"), imp.toml));
        assert_eq!(config.role("reader").unwrap().hosts, ["a", "b"]);
        assert_eq!(config.role("reader").unwrap().ips.len(), 2);
        assert_eq!(config.monitor.control.to_string(), "127.0.0.1:9999");
        assert!(imp
            .warnings
            .iter()
            .any(|w| w.contains("default timings (check_period 5s")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("mmm-import-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            ("<host db1>\n ip 1.2.3.4\n", "<host db1> is never closed"),
            ("<host db1>\n</role>\n", ":2: </role> closes <host db1>"),
            ("<cluster x>\n</cluster>\n", ":1: unknown section <cluster>"),
            ("<role>\n</role>\n", ":1: <role> needs a name"),
            (
                "<check replication>\n</check>\n",
                ":1: <check replication>: MMM knows the checks default, ping, mysql",
            ),
            (
                "<monitor>\n careful_startup maybe\n</monitor>\n",
                ":2: careful_startup \"maybe\" is not 0 or 1",
            ),
            (
                "active_master_role\n",
                ":1: \"active_master_role\" has no value",
            ),
            ("include self.conf\n", "include nests deeper"),
            (
                "<monitor>\n auto_set_online soon\n</monitor>\n",
                ":2: auto_set_online \"soon\" is not a number of seconds",
            ),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let f = if needle.contains("include") {
                dir.join("self.conf")
            } else {
                dir.join(format!("case{i}.conf"))
            };
            std::fs::write(&f, text).unwrap();
            let err = import(std::slice::from_ref(&f)).unwrap_err().to_string();
            assert!(err.contains(needle), "case {i}: {err:?} lacks {needle:?}");
        }
        let missing = import(&[dir.join("nope.conf")]).unwrap_err();
        assert!(matches!(missing, ImportError::Read { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
