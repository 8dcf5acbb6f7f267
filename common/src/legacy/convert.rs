//! Writing mmm's TOML from what [`super::read`] gathered: each MMM option mapped to its
//! mmm key, or dropped with a warning that names where it came from.

use super::read::{Entry, Loc, Mmm, Table};
use super::{Import, ImportError};
use crate::duration::format_duration;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub(super) struct Converter {
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
    /// A converter that starts with the warnings of the reading, so they come first.
    pub(super) fn new(warnings: Vec<String>) -> Self {
        Converter {
            warnings,
            out: String::new(),
        }
    }

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

    pub(super) fn convert(mut self, mmm: &Mmm) -> Result<Import, ImportError> {
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
