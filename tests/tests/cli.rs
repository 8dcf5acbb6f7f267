//! The binaries as an operator runs them: config checks, MMM import, key generation,
//! and mmm-control's refusals.

use mmm_tests::*;

#[test]
fn check_config_accepts_the_lab_config() {
    let dir = TempDir::new("check-ok");
    let config = lab_config(&dir);
    let out = run("mmm-monitor", &["--check-config", config.to_str().unwrap()]);
    assert_eq!(stdout(&out), "OK\n");
    assert!(out.status.success());
    // The DESIGN spelling: --config FILE --check-config.
    let out = run(
        "mmm-monitor",
        &["--config", config.to_str().unwrap(), "--check-config"],
    );
    assert_eq!(stdout(&out), "OK\n");
}

#[test]
fn check_config_lists_every_problem_on_stderr_and_exits_3() {
    let dir = TempDir::new("check-bad");
    let config = lab_config(&dir);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("peer = \"db1\"", "peer = \"db3\"")
        .replace(
            "heartbeat_interval = \"50ms\"",
            "heartbeat_interval = \"50\"",
        )
        .replace("[agent]", "[agent]\nwings = 2");
    let bad = dir.write("bad.toml", &text, 0o644);
    let out = run("mmm-monitor", &["--check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "");
    let text = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "(file): ",
        "readable by group or others (mode 644)",
        "hosts.db2.peer: \"db3\" is not a master",
        "monitor.heartbeat_interval: duration \"50\" has no unit",
        "agent.wings: unknown key",
    ] {
        assert!(text.contains(needle), "output lacks {needle:?}:\n{text}");
    }
}

#[test]
fn check_config_reports_a_missing_key_file() {
    let dir = TempDir::new("check-nokey");
    let config = lab_config(&dir);
    std::fs::remove_file(dir.path().join("cluster.key")).unwrap();
    let out = run("mmm-monitor", &["--check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        shown(&out).contains("security.key_file: cannot read"),
        "{}",
        shown(&out)
    );
}

#[test]
fn import_mmm_prints_a_config_that_checks_ok() {
    let root = workspace_root();
    let legacy = |f: &str| {
        root.join("conf/legacy")
            .join(f)
            .to_str()
            .unwrap()
            .to_string()
    };
    let out = run(
        "mmm-control",
        &[
            "import-mmm",
            &legacy("mmm_common.conf"),
            &legacy("mmm_mon.conf"),
            &legacy("mmm_agent.conf"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.lines().all(|l| l.starts_with("warning: ")),
        "{warnings}"
    );
    assert!(warnings.contains("<socket> dropped"), "{warnings}");

    // With a real key file in place of /etc/mmm/cluster.key, the output passes the check.
    let dir = TempDir::new("import");
    let key = dir.write(
        "cluster.key",
        &stdout(&run("mmm-control", &["gen-key"])),
        0o600,
    );
    let toml = stdout(&out).replace("/etc/mmm/cluster.key", key.to_str().unwrap());
    let imported = dir.write("imported.toml", &toml, 0o600);
    let check = run(
        "mmm-monitor",
        &["--check-config", imported.to_str().unwrap()],
    );
    assert_eq!(stdout(&check), "OK\n");

    let out = run("mmm-control", &["import-mmm", &legacy("mmm_common.conf")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ERROR: usage: mmm-control import-mmm"),
        "{err}"
    );
}

/// Every MMM installation in conf/legacy (a directory with an mmm_common.conf: the
/// documented one, four hosts, per-check sections) goes through the binaries an operator
/// runs: import-mmm, then --check-config on what it printed.
#[test]
fn every_mmm_config_in_conf_legacy_imports_and_passes_check_config() {
    let root = workspace_root().join("conf/legacy");
    let mut dirs = vec![root.clone()];
    for entry in std::fs::read_dir(&root).expect("conf/legacy") {
        let path = entry.expect("readable entry").path();
        if path.join("mmm_common.conf").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    let names: Vec<String> = dirs
        .iter()
        .map(|d| d.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for expected in ["", "four-hosts", "per-check"] {
        assert!(
            names.iter().any(|n| n == expected),
            "conf/legacy/{expected} is gone: {names:?}"
        );
    }
    let dir = TempDir::new("import-all");
    let key = dir.write(
        "cluster.key",
        &stdout(&run("mmm-control", &["gen-key"])),
        0o600,
    );
    for (d, name) in dirs.iter().zip(&names) {
        let files: Vec<String> = ["mmm_common.conf", "mmm_mon.conf", "mmm_agent.conf"]
            .iter()
            .map(|f| d.join(f))
            .filter(|f| f.is_file())
            .map(|f| f.to_str().unwrap().to_string())
            .collect();
        let mut args = vec!["import-mmm"];
        args.extend(files.iter().map(String::as_str));
        let out = run("mmm-control", &args);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "conf/legacy/{name}: {warnings}");
        assert!(
            warnings.lines().all(|l| l.starts_with("warning: ")),
            "conf/legacy/{name}: {warnings}"
        );
        let toml = stdout(&out).replace("/etc/mmm/cluster.key", key.to_str().unwrap());
        let imported = dir.write(
            &format!("imported-{}.toml", name.replace('/', "-")),
            &toml,
            0o600,
        );
        let check = run(
            "mmm-monitor",
            &["--check-config", imported.to_str().unwrap()],
        );
        assert_eq!(
            stdout(&check),
            "OK\n",
            "conf/legacy/{name} imported:\n{toml}"
        );
    }
}

#[test]
fn gen_key_prints_64_hex_digits_and_differs_each_time() {
    let a = stdout(&run("mmm-control", &["gen-key"]));
    let b = stdout(&run("mmm-control", &["gen-key"]));
    assert_eq!(a.trim().len(), 64);
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn control_refuses_unknown_commands_and_unreachable_monitors() {
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // Usage errors: exit 2, on stderr, with the list of commands.
    let out = run("mmm-control", &["--monitor", "127.0.0.1:9", "explode"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert!(
        err(&out).starts_with("ERROR: Unknown command 'explode'")
            && err(&out).contains("set_online <host>"),
        "{}",
        err(&out)
    );

    let out = run("mmm-control", &["--monitor", "127.0.0.1:9", "set_online"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).starts_with("ERROR: Wrong arguments for 'set_online'"));

    // clap's own usage errors share the code.
    let out = run("mmm-control", &["--timeout", "soon", "show"]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    let out = run("mmm-control", &["@../x", "show"]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));

    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    // MMM's line, on stderr, and exit 4: the monitor was not reached.
    let out = run("mmm-control", &["--monitor", "127.0.0.1:9", "show"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&out), "");
    assert!(
        err(&out).starts_with(
            "ERROR: Can't connect to monitor daemon!\nconnecting to the monitor at 127.0.0.1:9: "
        ),
        "{}",
        err(&out)
    );
}

/// A config that does not validate is exit 3 for every binary, its problems on stderr.
#[test]
fn an_invalid_config_is_exit_3_everywhere() {
    let dir = TempDir::new("config-3");
    let config = lab_config(&dir);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]", "[agent]\nwings = 2");
    let bad = dir.write("bad.toml", &text, 0o600);
    let bad = bad.to_str().unwrap();
    for (binary, args) in [
        ("mmm-control", vec!["--config", bad, "show"]),
        ("mmm-control", vec!["--config", bad, "check-cluster"]),
        ("mmm-monitor", vec!["--config", bad]),
        ("mmm-agent", vec!["--config", bad, "--host", "db1"]),
    ] {
        let out = run(binary, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{binary} {args:?}:\n{err}");
        assert!(err.contains("agent.wings: unknown key"), "{binary}:\n{err}");
        assert_eq!(stdout(&out), "", "{binary}: errors go to stderr");
    }
    // A missing file too.
    let out = run(
        "mmm-control",
        &["--config", "/nonexistent/mmm.toml", "show"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", shown(&out));
}

/// `help` (and no command at all) lists every command: the monitor's, then mmm-control's own.
#[test]
fn control_help_lists_every_command() {
    use mmm_monitor::control::command::{COMMANDS, LOCAL_COMMANDS};
    for args in [&["help"][..], &[][..], &["--help"][..]] {
        let out = run("mmm-control", args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = stdout(&out);
        for (name, _, _) in COMMANDS.iter().chain(&LOCAL_COMMANDS) {
            assert!(
                text.contains(&format!("\n    {name}")),
                "{args:?} lacks {name}:\n{text}"
            );
        }
    }
}

/// Completions and man pages come from the clap definitions of the three binaries.
#[test]
fn completions_and_man_pages_are_generated() {
    use mmm_monitor::control::command::{COMMANDS, LOCAL_COMMANDS};
    for shell in ["bash", "zsh", "fish"] {
        let out = run("mmm-control", &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", shown(&out));
        let text = stdout(&out);
        for (name, _, _) in COMMANDS.iter().chain(&LOCAL_COMMANDS) {
            assert!(text.contains(name), "{shell} completions lack {name}");
        }
        for daemon in ["mmm-monitor", "mmm-agent"] {
            let out = run(daemon, &["--completions", shell]);
            assert_eq!(out.status.code(), Some(0), "{daemon} {shell}");
            assert!(stdout(&out).contains("config"), "{daemon} {shell}");
        }
    }
    let out = run("mmm-control", &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));

    let out = run("mmm-control", &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let man = stdout(&out);
    assert!(
        man.starts_with(".ie") || man.contains(".TH mmm-control 1"),
        "{man}"
    );
    for (name, _, _) in COMMANDS.iter().chain(&LOCAL_COMMANDS) {
        // roff escapes '-' as '\-'.
        assert!(
            man.contains(&name.replace('-', "\\-")),
            "the man page lacks {name}"
        );
    }
    assert!(man.contains("Exit status"), "{man}");
    for daemon in ["mmm-monitor", "mmm-agent"] {
        let out = run(daemon, &["--man"]);
        assert_eq!(out.status.code(), Some(0), "{daemon}");
        let man = stdout(&out);
        assert!(man.contains(&format!(".TH {daemon} 8")), "{daemon}:\n{man}");
        assert!(man.contains("\\-\\-log\\-format"), "{daemon}:\n{man}");
    }
}

/// `--log-format json`: one JSON object per line; on the journal (JOURNAL_STREAM names
/// stderr), each line starts with its sd-daemon priority.
#[test]
fn log_format_json_and_journal_priorities() {
    let dir = TempDir::new("log-format");
    let config = lab_config(&dir);
    let args = ["--config", config.to_str().unwrap(), "--host", "db9"];
    let mut json = vec!["--log-format", "json"];
    json.extend(args);
    let out = run("mmm-agent", &json);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().next().expect("a log line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["level"], "ERROR", "{line}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("--host \"db9\" is not in"),
        "{line}"
    );

    // stderr to a file whose device and inode JOURNAL_STREAM names, as systemd sets it.
    for format in ["text", "json"] {
        let log = dir.path().join(format!("journal-{format}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let stream = format!(
            "{}:{}",
            std::os::unix::fs::MetadataExt::dev(&meta),
            std::os::unix::fs::MetadataExt::ino(&meta)
        );
        let status = std::process::Command::new(bin("mmm-agent"))
            .args(["--log-format", format])
            .args(args)
            .env("JOURNAL_STREAM", &stream)
            .stderr(file)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("<3>"), "{format}: {text}");
        assert!(text.lines().all(|l| l.starts_with('<')), "{format}: {text}");
    }
    // Elsewhere (a JOURNAL_STREAM inherited by a process whose stderr is a pipe): no prefix.
    let out = std::process::Command::new(bin("mmm-agent"))
        .args(args)
        .env("JOURNAL_STREAM", "1:1")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).starts_with('<'));
}

#[test]
fn agent_refuses_a_host_not_in_the_config() {
    let dir = TempDir::new("agent-host");
    let config = lab_config(&dir);
    let out = run(
        "mmm-agent",
        &["--config", config.to_str().unwrap(), "--host", "db9"],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host \"db9\" is not in") && err.contains("db1, db2, db3"),
        "{err}"
    );
}

/// The lab config for an agent outside any namespace: db1 at 127.0.0.1 on `lo`, which
/// every host has, its agent_port one the test holds (an agent past its start-up checks
/// stops at its bind and never serves), and `state_dir` as given.
fn agent_config(dir: &TempDir, state_dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = lab_config(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let mut edited = text.clone();
    for (from, to) in [
        (
            "cluster_interface = \"eth0\"",
            "cluster_interface = \"lo\"".to_string(),
        ),
        ("ip = \"192.0.2.11\"", "ip = \"127.0.0.1\"".to_string()),
        ("agent_port = 9989", format!("agent_port = {port}")),
        (
            "/tmp/mmm-lab/state",
            state_dir.to_str().unwrap().to_string(),
        ),
    ] {
        assert!(edited.contains(from), "lab.toml lacks {from:?}");
        edited = edited.replacen(from, &to, 1);
    }
    std::fs::write(&config, edited).unwrap();
    config
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Runs db1's agent to its exit (20 s at most). As root through setpriv with
/// CAP_NET_ADMIN alone, and as uid 65534 when `nobody`: an agent that got past its
/// checks loads no BPF program and opens no packet socket on this host. As another
/// user it runs with no capability at all (and refuses for that too).
fn agent_to_exit(config: &std::path::Path, nobody: bool) -> (Option<i32>, String) {
    let caps = "-all,+net_admin";
    let (inh, amb, bound) = (
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
    );
    let mut prefix = vec!["setpriv"];
    if nobody {
        prefix.extend(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    prefix.extend([inh.as_str(), amb.as_str(), bound.as_str(), "--"]);
    let prefix: &[&str] = if is_root() { &prefix } else { &[] };
    let out = run_to_exit(
        prefix,
        "mmm-agent",
        &["--config", config.to_str().unwrap(), "--host", "db1"],
        20,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(
        out.status.code(),
        Some(124),
        "the agent kept running:\n{err}"
    );
    (out.status.code(), err)
}

/// The ERROR lines of an agent's stderr.
fn errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(" ERROR ")).collect()
}

#[test]
fn agent_refuses_to_start_without_a_usable_state_dir() {
    let dir = TempDir::new("agent-state");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // A regular file where a directory of the path must be: unusable even by root.
    let file = dir.write("not-a-dir", "", 0o600);
    let state = file.join("mmm");
    let config = agent_config(&dir, &state, held.local_addr().unwrap().port());
    let (code, err) = agent_to_exit(&config, false);
    assert_eq!(code, Some(1), "{err}");
    let named = format!("[agent] state_dir {}: ", state.display());
    for needle in [
        named.as_str(),
        "Not a directory (os error 20)",
        "; fix: create it owned by ",
        "(systemd: RuntimeDirectory=mmm in the unit, as conf/systemd/mmm-agent.service does), or set [agent] state_dir",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("listening for the monitor"), "{err}");
    if is_root() {
        assert_eq!(errors(&err).len(), 1, "one problem, one line:\n{err}");
        assert!(err.contains("as root (uid 0, gid 0)"), "{err}");
    }
    // A file where the directory itself should be.
    let config = agent_config(&dir, &file, held.local_addr().unwrap().port());
    let (code, err) = agent_to_exit(&config, false);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "[agent] state_dir {} is not a directory; fix: create it owned by",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn agent_as_nobody_refuses_a_state_dir_it_cannot_write_and_starts_once_it_can() {
    if !mmm_tests::netns::require_root(
        "agent_as_nobody_refuses_a_state_dir_it_cannot_write_and_starts_once_it_can",
    ) {
        return;
    }
    use std::os::unix::fs::{chown, PermissionsExt};
    const NOBODY: u32 = 65534;
    let dir = TempDir::new("agent-nobody");
    // The agent must reach its config and key, as in the lab.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = agent_config(&dir, &state, port);
    for f in [&config, &dir.path().join("cluster.key")] {
        chown(f, Some(NOBODY), Some(NOBODY)).unwrap();
    }

    // Root's directory: nobody may not create files in it.
    let (code, err) = agent_to_exit(&config, true);
    assert_eq!(code, Some(1), "{err}");
    let named = format!(
        "[agent] state_dir {}: creating a file in it as ",
        state.display()
    );
    for needle in [
        named.as_str(),
        "(uid 65534, gid 65534): Permission denied (os error 13); fix: create it owned by ",
        "RuntimeDirectory=mmm",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert_eq!(errors(&err).len(), 1, "one problem, one line:\n{err}");

    // Its directory, but a lease file left by an agent run as root.
    chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let lease = state.join("db1.lease");
    std::fs::write(&lease, "").unwrap();
    std::fs::set_permissions(&lease, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = agent_to_exit(&config, true);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "state file {}: opening it to read and write as ",
            lease.display()
        )) && err.contains("Permission denied")
            && err.contains("fix: chown it to "),
        "{err}"
    );
    assert!(!err.contains("[agent] state_dir"), "{err}");

    // Everything in order: past its checks, it stops only at the port this test holds,
    // and its check left nothing in the directory.
    chown(&lease, Some(NOBODY), Some(NOBODY)).unwrap();
    let (code, err) = agent_to_exit(&config, true);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("start-up checks passed"), "{err}");
    assert!(
        err.contains(&format!("listening for the monitor on 127.0.0.1:{port}"))
            && err.contains("Address already in use"),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["db1.lease"]);
    drop(held);
}

#[test]
fn agent_refuses_a_cluster_interface_this_host_lacks() {
    let dir = TempDir::new("agent-iface");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let state = dir.path().join("state");
    let config = agent_config(&dir, &state, held.local_addr().unwrap().port());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "cluster_interface = \"lo\"",
        "cluster_interface = \"mmmnone0\"",
    );
    std::fs::write(&config, text).unwrap();
    let (code, err) = agent_to_exit(&config, false);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("hosts.db1.cluster_interface \"mmmnone0\" does not exist here")
            && err.contains("every VIP of role writer, role reader would fail on it")
            && err.contains(
                "fix: 127.0.0.1, this host's ip, is on \"lo\": set cluster_interface = \"lo\""
            ),
        "{err}"
    );
    if is_root() {
        assert_eq!(errors(&err).len(), 1, "one problem, one line:\n{err}");
    }
}
