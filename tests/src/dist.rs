//! The Debian packages of `cargo xtask dist` on this machine: finding them, installing
//! them with a guard that restores the machine, and running the namespace lab's daemons
//! from the installed binaries with the units' command lines (no systemd runs inside the
//! lab's namespaces). Used by tests/tests/dist.rs and by `cargo xtask bench install`.

use crate::lab::Cluster;
use crate::netns::wait_for;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// target/dist/NAME_*.deb, as `cargo xtask dist` names it.
pub fn deb(name: &str) -> PathBuf {
    let dir = crate::target_dir().join("dist");
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                // This revision's version: target/dist may hold an older release's too.
                .is_some_and(|n| {
                    n.starts_with(&format!("{name}_{}-", env!("CARGO_PKG_VERSION")))
                        && n.ends_with(".deb")
                })
        })
        .unwrap_or_else(|| {
            panic!(
                "no {name} package in {}: run `cargo xtask dist` first (cargo xtask test does)",
                dir.display()
            )
        })
}

/// (succeeded, stdout and stderr) of a command that must start.
pub fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Restores what installing the packages changed on this machine, even when the caller
/// panics: the files the caller put in /etc/mmm removed, both packages purged, the mmm
/// user removed if it did not exist before, the ping sysctl as it was.
pub struct Installed {
    user_existed: bool,
    ping_range: String,
    added: Vec<PathBuf>,
}

impl Installed {
    /// What to restore, taken before `dpkg -i`; panics when a package is installed
    /// already (it would be purged).
    pub fn before() -> Installed {
        let (_, installed) =
            output(Command::new("dpkg-query").args(["-W", "mmm-agent", "mmm-monitor"]));
        assert!(
            !installed.contains("\t0."),
            "mmm packages are already installed on this machine; this installs and purges them:\n{installed}"
        );
        Installed {
            user_existed: output(Command::new("getent").args(["passwd", "mmm"])).0,
            ping_range: output(Command::new("sysctl").args(["-n", "net.ipv4.ping_group_range"]))
                .1
                .trim()
                .replace('\t', " "),
            added: Vec::new(),
        }
    }

    /// `path` is created by the caller (an operator's file in /etc/mmm): removed before
    /// the purge. Panics when it exists already: it would be someone else's.
    pub fn adds(&mut self, path: &str) {
        assert!(!Path::new(path).exists(), "{path} exists already");
        self.added.push(PathBuf::from(path));
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        for path in &self.added {
            let _ = std::fs::remove_file(path);
        }
        let _ = Command::new("dpkg")
            .args(["--purge", "mmm-agent", "mmm-monitor"])
            .output();
        if !self.user_existed {
            let _ = Command::new("deluser")
                .args(["--quiet", "--system", "mmm"])
                .output();
            let _ = Command::new("delgroup")
                .args(["--quiet", "--system", "mmm"])
                .output();
        }
        let _ = Command::new("sysctl")
            .arg("-q")
            .arg(format!("net.ipv4.ping_group_range={}", self.ping_range))
            .output();
    }
}

/// The installed unit's `KEY=` value (the first one).
pub fn unit_value(unit: &str, key: &str) -> String {
    let path = Path::new("/lib/systemd/system").join(unit);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_string()
}

/// `AmbientCapabilities=CAP_NET_ADMIN CAP_BPF` -> `-all,+net_admin,+bpf` (setpriv).
pub fn setpriv_caps(ambient: &str) -> String {
    let mut caps = String::from("-all");
    for c in ambient.split_whitespace() {
        caps.push_str(&format!(
            ",+{}",
            c.trim_start_matches("CAP_").to_lowercase()
        ));
    }
    caps
}

/// The unit's `key` command line, with the lab's `config` for /etc/mmm/mmm.toml and
/// `host` for ${MMM_HOST}.
fn unit_command(unit: &str, key: &str, host: &str, config: &str) -> Vec<String> {
    unit_value(unit, key)
        .replace("/etc/mmm/mmm.toml", config)
        .replace("${MMM_HOST}", host)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `cmd` as the unit runs it: as mmm (its groups too), with `caps` when given.
fn as_mmm(caps: Option<&str>, cmd: Vec<String>) -> Vec<String> {
    let mut argv: Vec<String> = ["setpriv", "--reuid=mmm", "--regid=mmm", "--init-groups"]
        .map(str::to_string)
        .to_vec();
    if let Some(caps) = caps {
        argv.push(format!("--inh-caps={caps}"));
        argv.push(format!("--ambient-caps={caps}"));
        argv.push(format!("--bounding-set={caps}"));
    }
    argv.push("--".into());
    argv.extend(cmd);
    argv
}

/// Stops the lab's own agents (from target/, as nobody): the installed ones take over.
pub fn stop_lab_agents(c: &mut Cluster) {
    for pid in c.agents.clone() {
        c.lab.net.signal(pid, "TERM");
        assert!(c.lab.net.wait_exit(pid, Duration::from_secs(30)));
    }
    c.agents.clear();
}

/// Starts /usr/bin/mmm-agent on db1..db3 with mmm-agent.service's command line, user
/// and capabilities, reading `config`; waits until each listens.
pub fn start_installed_agents(c: &mut Cluster, config: &str) {
    let caps = setpriv_caps(&unit_value("mmm-agent.service", "AmbientCapabilities"));
    assert_eq!(unit_value("mmm-agent.service", "User"), "mmm");
    for host in ["db1", "db2", "db3"] {
        let argv = as_mmm(
            Some(&caps),
            unit_command("mmm-agent.service", "ExecStart", host, config),
        );
        assert_eq!(argv[8], "/usr/bin/mmm-agent", "{argv:?}");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = format!("agent-{host}.log");
        let pid = c.lab.net.spawn(host, &argv, &c.lab.dir.path().join(&log));
        c.agents.push(pid);
        c.lab.wait_agent_listening(host, &log);
    }
}

/// Starts /usr/bin/mmm-monitor with mmm-monitor.service's command lines (its
/// ExecStartPre check first) as mmm, reading `config`, after the installed ping sysctl
/// in the monitor's namespace (each network namespace has its own); waits until it
/// answers `ping`, logging to monitor.log.
pub fn start_installed_monitor(c: &mut Cluster, config: &str) {
    c.lab.net.exec(
        "mon",
        &[
            "sysctl",
            "-q",
            "-p",
            "/usr/lib/sysctl.d/60-mmm-monitor.conf",
        ],
    );
    let pre = as_mmm(
        None,
        unit_command("mmm-monitor.service", "ExecStartPre", "", config),
    );
    let pre: Vec<&str> = pre.iter().map(String::as_str).collect();
    let checked = c.lab.net.try_exec("mon", &pre);
    assert!(checked.status.success(), "{checked:?}");
    let start = as_mmm(
        None,
        unit_command("mmm-monitor.service", "ExecStart", "", config),
    );
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let monitor = c
        .lab
        .net
        .spawn("mon", &start, &c.lab.dir.path().join("monitor.log"));
    c.monitor = Some(monitor);
    let up = wait_for(Duration::from_secs(30), || {
        (c.control(&["ping"]).1 == "OK: Pinged successfully!\n").then_some(())
    });
    assert!(up.is_some(), "{}", c.lab.log("monitor.log"));
}
