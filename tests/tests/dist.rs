//! The Debian packages of `cargo xtask dist` (which `cargo xtask test` runs before the
//! suite): their contents and lintian's verdict; then, as root, installed on this
//! machine with dpkg, the user, files and units checked, the namespace lab run from the
//! installed binaries with the units' command lines (agents as mmm with the unit's
//! capabilities and no mysql_pid_file, the monitor as mmm), a mysqld SIGKILL failed
//! over on the probe's event, and both packages purged again.

use mmm_tests::assert::assert_writer;
use mmm_tests::lab::{Cluster, Spec};
use mmm_tests::mariadb::Setup;
use mmm_tests::netns::{require_root, sh, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// target/dist/NAME_*.deb, as `cargo xtask dist` names it.
fn deb(name: &str) -> PathBuf {
    let dir = mmm_tests::target_dir().join("dist");
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

fn output(cmd: &mut Command) -> (bool, String) {
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

#[test]
fn the_packages_hold_what_operators_need_and_lintian_passes() {
    let agent = deb("mmm-agent");
    let monitor = deb("mmm-monitor");
    let contents = |deb: &Path| output(Command::new("dpkg-deb").arg("--contents").arg(deb)).1;
    let field =
        |deb: &Path, f: &str| output(Command::new("dpkg-deb").arg("--field").arg(deb).arg(f)).1;
    let a = contents(&agent);
    for path in [
        "./usr/bin/mmm-agent",
        "./lib/systemd/system/mmm-agent.service",
        "./lib/systemd/system/mmm-agent@.service",
        "./etc/default/mmm-agent",
        "./etc/mmm/",
        "./usr/share/doc/mmm-agent/examples/mmm.toml",
        "./usr/share/doc/mmm-agent/copyright",
        "./usr/share/man/man8/mmm-agent.8.gz",
        "./usr/share/bash-completion/completions/mmm-agent",
        "./usr/share/zsh/vendor-completions/_mmm-agent",
        "./usr/share/fish/vendor_completions.d/mmm-agent.fish",
    ] {
        assert!(a.contains(path), "mmm-agent lacks {path}:\n{a}");
    }
    let m = contents(&monitor);
    for path in [
        "./usr/bin/mmm-monitor",
        "./usr/bin/mmm-control",
        "./lib/systemd/system/mmm-monitor.service",
        "./lib/systemd/system/mmm-monitor@.service",
        "./etc/mmm/mmm.toml.example",
        "./usr/lib/sysctl.d/60-mmm-monitor.conf",
        "./usr/share/man/man8/mmm-monitor.8.gz",
        "./usr/share/man/man1/mmm-control.1.gz",
        "./usr/share/bash-completion/completions/mmm-control",
        "./usr/share/zsh/vendor-completions/_mmm-control",
        "./usr/share/fish/vendor_completions.d/mmm-control.fish",
    ] {
        assert!(m.contains(path), "mmm-monitor lacks {path}:\n{m}");
    }
    // One file belongs to one package: both can be installed on one host.
    let files = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter(|l| !l.starts_with('d'))
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    };
    let shared: Vec<String> = files(&a)
        .into_iter()
        .filter(|f| files(&m).contains(f))
        .collect();
    assert!(shared.is_empty(), "in both packages: {shared:?}");
    for deb in [&agent, &monitor] {
        let depends = field(deb, "Depends");
        assert!(
            depends.contains("libc6") && depends.contains("adduser"),
            "{depends}"
        );
        let (ok, conffiles) = output(
            Command::new("dpkg-deb")
                .arg("--info")
                .arg(deb)
                .arg("conffiles"),
        );
        assert!(ok && conffiles.contains("/etc/"), "{conffiles}");
    }
    // Every remaining tag is overridden with its reason (usr/share/lintian/overrides).
    let (_, verdict) = output(Command::new("lintian").arg(&agent).arg(&monitor));
    let tags: Vec<&str> = verdict
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(tags.is_empty(), "lintian:\n{verdict}");
}

/// Restores what installing the packages changed on this machine, even when the test
/// panics: both packages purged, the mmm user removed if the test created it, the
/// ping sysctl as it was.
struct Installed {
    user_existed: bool,
    ping_range: String,
}

impl Drop for Installed {
    fn drop(&mut self) {
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

/// The unit's `KEY=` value (the first one).
fn unit_value(unit: &str, key: &str) -> String {
    let path = Path::new("/lib/systemd/system").join(unit);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_string()
}

/// `AmbientCapabilities=CAP_NET_ADMIN CAP_BPF` -> `-all,+net_admin,+bpf` (setpriv).
fn setpriv_caps(ambient: &str) -> String {
    let mut caps = String::from("-all");
    for c in ambient.split_whitespace() {
        caps.push_str(&format!(
            ",+{}",
            c.trim_start_matches("CAP_").to_lowercase()
        ));
    }
    caps
}

#[test]
fn installed_packages_run_the_lab_from_the_units_command_lines() {
    if !require_root("installed_packages_run_the_lab_from_the_units_command_lines") {
        return;
    }
    let (agent_deb, monitor_deb) = (deb("mmm-agent"), deb("mmm-monitor"));
    let (_, installed) =
        output(Command::new("dpkg-query").args(["-W", "mmm-agent", "mmm-monitor"]));
    assert!(
        !installed.contains("\t0."),
        "mmm packages are already installed on this machine; this test installs and purges them:\n{installed}"
    );
    // Declared before the lab: dropped (purged) after its processes are gone.
    let _installed = Installed {
        user_existed: output(Command::new("getent").args(["passwd", "mmm"])).0,
        ping_range: output(Command::new("sysctl").args(["-n", "net.ipv4.ping_group_range"]))
            .1
            .trim()
            .replace('\t', " "),
    };
    let (ok, said) = output(
        Command::new("dpkg")
            .arg("-i")
            .arg(&agent_deb)
            .arg(&monitor_deb),
    );
    assert!(ok, "dpkg -i:\n{said}");
    assert!(
        said.contains("mmm-agent is installed; nothing was started"),
        "{said}"
    );
    assert!(
        said.contains("mmm-monitor is installed; nothing was started"),
        "{said}"
    );

    // The user: a system account, in mysqld's group where that exists.
    let (_, passwd) = output(Command::new("getent").args(["passwd", "mmm"]));
    let uid: u32 = passwd
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("mmm's uid");
    assert!(uid < 1000, "not a system user: {passwd}");
    if output(Command::new("getent").args(["group", "mysql"])).0 {
        let (_, groups) = output(Command::new("id").args(["-nG", "mmm"]));
        assert!(groups.split_whitespace().any(|g| g == "mysql"), "{groups}");
    }
    for path in [
        "/usr/bin/mmm-agent",
        "/usr/bin/mmm-monitor",
        "/usr/bin/mmm-control",
        "/etc/mmm/mmm.toml.example",
        "/etc/default/mmm-agent",
        "/usr/lib/sysctl.d/60-mmm-monitor.conf",
    ] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    // The units are valid as systemd reads them, and none was enabled or started.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        for unit in [
            "mmm-agent.service",
            "mmm-monitor.service",
            "mmm-agent@main.service",
            "mmm-monitor@main.service",
        ] {
            let file = format!("/lib/systemd/system/{}", unit.replace("@main", "@"));
            let (ok, said) =
                output(Command::new("systemd-analyze").args(["verify", &format!("{file}:{unit}")]));
            // An unknown key is only a warning to systemd: one is a mistake here.
            assert!(
                ok && !said.contains("Unknown"),
                "systemd-analyze verify {unit}:\n{said}"
            );
        }
    }
    // `systemctl reload` is a SIGHUP, which both daemons take for a re-read of the config.
    for unit in [
        "mmm-agent.service",
        "mmm-monitor.service",
        "mmm-agent@.service",
        "mmm-monitor@.service",
    ] {
        assert_eq!(unit_value(unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    }
    let wants = std::fs::read_dir("/etc/systemd/system/multi-user.target.wants")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mmm-"))
        .count();
    assert_eq!(wants, 0, "a unit was enabled by the package");

    // The lab, with no mysql_pid_file: its agents (as nobody, from target/) make way
    // for the installed ones, as mmm with the unit's capabilities.
    let spec = Spec {
        mysql_pid_file: false,
        ..Spec::three(Setup::default())
    };
    let mut c = Cluster::start_spec("dist", &[], &spec);
    for pid in c.agents.clone() {
        c.lab.net.signal(pid, "TERM");
        assert!(c.lab.net.wait_exit(pid, T));
    }
    c.agents.clear();
    // What the operator does: config and key owned by mmm (the monitor's status file and
    // control socket live in the lab's directory here).
    let dir = c.lab.dir.path().to_str().expect("UTF-8 path").to_string();
    let config = c.lab.config.to_str().expect("UTF-8 path").to_string();
    sh(&[
        "chown",
        "mmm:mmm",
        &dir,
        &config,
        &format!("{dir}/cluster.key"),
    ]);
    sh(&["chown", "-R", "mmm:mmm", &format!("{dir}/state")]);
    let command = |unit: &str, key: &str, host: &str| -> Vec<String> {
        unit_value(unit, key)
            .replace("/etc/mmm/mmm.toml", &config)
            .replace("${MMM_HOST}", host)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let caps = setpriv_caps(&unit_value("mmm-agent.service", "AmbientCapabilities"));
    assert_eq!(unit_value("mmm-agent.service", "User"), "mmm");
    for host in ["db1", "db2", "db3"] {
        let mut argv: Vec<String> = [
            "setpriv",
            "--reuid=mmm",
            "--regid=mmm",
            "--init-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
            "--",
        ]
        .map(str::to_string)
        .to_vec();
        argv.extend(command("mmm-agent.service", "ExecStart", host));
        assert_eq!(argv[8], "/usr/bin/mmm-agent", "{argv:?}");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = format!("agent-{host}.log");
        let pid = c.lab.net.spawn(host, &argv, &c.lab.dir.path().join(&log));
        c.agents.push(pid);
        c.lab.wait_agent_listening(host, &log);
    }
    // The monitor's ping check: the installed sysctl in the monitor's namespace (each
    // network namespace has its own).
    c.lab.net.exec(
        "mon",
        &[
            "sysctl",
            "-q",
            "-p",
            "/usr/lib/sysctl.d/60-mmm-monitor.conf",
        ],
    );
    let as_mmm = |cmd: Vec<String>| -> Vec<String> {
        [
            "setpriv",
            "--reuid=mmm",
            "--regid=mmm",
            "--init-groups",
            "--",
        ]
        .map(str::to_string)
        .into_iter()
        .chain(cmd)
        .collect()
    };
    let pre = as_mmm(command("mmm-monitor.service", "ExecStartPre", ""));
    let pre: Vec<&str> = pre.iter().map(String::as_str).collect();
    let checked = c.lab.net.try_exec("mon", &pre);
    assert!(checked.status.success(), "{checked:?}");
    let start = as_mmm(command("mmm-monitor.service", "ExecStart", ""));
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let monitor = c
        .lab
        .net
        .spawn("mon", &start, &c.lab.dir.path().join("monitor.log"));
    c.monitor = Some(monitor);
    let up = wait_for(T, || {
        (c.control(&["ping"]).1 == "OK: Pinged successfully!\n").then_some(())
    });
    assert!(up.is_some(), "{}", c.lab.log("monitor.log"));
    c.bring_online();
    for host in ["db1", "db2", "db3"] {
        let log = c.lab.log(&format!("agent-{host}.log"));
        assert!(log.contains("user=mmm"), "{log}");
        assert!(
            log.contains("mysqld found listening on mysql_port"),
            "{log}"
        );
    }
    let sock = c.lab.dir.path().join("control.sock");
    let show = c.lab.net.exec(
        "mon",
        &[
            "/usr/bin/mmm-control",
            "--monitor",
            sock.to_str().expect("UTF-8"),
            "show",
        ],
    );
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("writer(192.0.2.100)"), "{show}");

    // A mysqld SIGKILL is failed over on the probe's event.
    c.lab.net.signal(c.db("db1").pid, "KILL");
    c.wait_show("db1", "master/HARD_OFFLINE", T);
    let log = c.monitor_log("monitor.log");
    let line = log
        .lines()
        .find(|l| l.contains("changed from ONLINE to HARD_OFFLINE"))
        .unwrap_or_default();
    assert!(
        line.contains("mysqld process exited (probe)"),
        "{line}\n{log}"
    );
    assert_writer(&c, "db2", &["db3"]);
    drop(c);

    // Purged: the package's files are gone (the user stays, as Debian packages do).
    let (ok, said) = output(Command::new("dpkg").args(["--purge", "mmm-agent", "mmm-monitor"]));
    assert!(ok, "dpkg --purge:\n{said}");
    for path in [
        "/usr/bin/mmm-agent",
        "/usr/bin/mmm-control",
        "/etc/mmm/mmm.toml.example",
        "/etc/default/mmm-agent",
    ] {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
}
