//! The Debian packages of `cargo xtask dist` (which `cargo xtask test` runs before the
//! suite): their contents and lintian's verdict; then, as root, installed on this
//! machine with dpkg, the user, files and units checked, the namespace lab run from the
//! installed binaries with the units' command lines (agents as mmm with the unit's
//! capabilities and no mysql_pid_file, the monitor as mmm), a mysqld SIGKILL failed
//! over on the probe's event, and both packages purged again.

use mmm_tests::assert::assert_writer;
use mmm_tests::dist::{
    deb, output, start_installed_agents, start_installed_monitor, stop_lab_agents, unit_value,
    Installed,
};
use mmm_tests::lab::{Cluster, Spec};
use mmm_tests::mariadb::Setup;
use mmm_tests::netns::{require_root, sh};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

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

#[test]
fn installed_packages_run_the_lab_from_the_units_command_lines() {
    if !require_root("installed_packages_run_the_lab_from_the_units_command_lines") {
        return;
    }
    let (agent_deb, monitor_deb) = (deb("mmm-agent"), deb("mmm-monitor"));
    // Declared before the lab: dropped (purged) after its processes are gone.
    let _installed = Installed::before();
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
    stop_lab_agents(&mut c);
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
    start_installed_agents(&mut c, &config);
    start_installed_monitor(&mut c, &config);
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
