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
fn check_config_lists_every_problem_and_exits_1() {
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
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
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
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("security.key_file: cannot read"),
        "{}",
        stdout(&out)
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
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("ERROR: usage: mmm-control import-mmm"));
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
    let out = run("mmm-control", &["--monitor", "127.0.0.1:9", "explode"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("ERROR: Unknown command 'explode'"),
        "{}",
        stdout(&out)
    );

    let out = run("mmm-control", &["--monitor", "127.0.0.1:9", "set_online"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("ERROR: Wrong arguments for 'set_online'"));

    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let out = run("mmm-control", &["--monitor", "127.0.0.1:9", "show"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "ERROR: Can't connect to monitor daemon!\n");
}

#[test]
fn agent_refuses_a_host_not_in_the_config() {
    let dir = TempDir::new("agent-host");
    let config = lab_config(&dir);
    let out = run(
        "mmm-agent",
        &["--config", config.to_str().unwrap(), "--host", "db9"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host \"db9\" is not in") && err.contains("db1, db2, db3"),
        "{err}"
    );
}
