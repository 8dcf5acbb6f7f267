use super::*;
use std::os::unix::fs::PermissionsExt;

const MINIMAL: &str = r#"
[defaults]
agent_password = "a"
monitor_password = "m"
replication_password = "r"

[hosts.db2]
ip = "10.0.0.12"
mode = "master"
peer = "db1"
[hosts.db1]
ip = "10.0.0.11"
mode = "master"
peer = "db2"
agent_port = 19989
[hosts.db3]
ip = "10.0.0.13"
mode = "slave"
agent_password_file = "/etc/mmm/db3-agent.password"

[roles.writer]
mode = "exclusive"
hosts = ["db1", "db2"]
ips = ["10.0.0.100"]
[roles.reader]
mode = "balanced"
hosts = ["db1", "db2", "db3"]
ips = ["10.0.0.101", "10.0.0.102"]

[monitor]
ping_ips = ["10.0.0.1"]

[checks.mysql]
trap_period = "500ms"

[security]
key = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

/// The problems of an invalid config as `key: message` lines.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.0.iter().map(|p| p.to_string()).collect()
        }
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn assert_has(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem contains {needle:?}; problems:\n{}",
        problems.join("\n")
    );
}

/// Every file under conf/, by kind: our TOML parses and validates, each MMM file in
/// conf/legacy imports on its own (includes resolved; each installation as a whole
/// validates in legacy::tests), and systemd units are left to systemd. A file of another kind fails the test, so nothing
/// lands in conf/ unchecked.
#[test]
fn every_file_in_conf_parses() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable conf/ directory") {
            let path = entry.expect("readable conf/ entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    let (mut toml, mut legacy) = (0, 0);
    for path in files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let in_legacy = path.components().any(|c| c.as_os_str() == "legacy");
        match ext {
            "toml" => {
                let text = std::fs::read_to_string(&path).expect("readable config");
                if let Err(e) = Config::parse(&text, &path) {
                    panic!(
                        "{} does not parse:\n{}",
                        path.display(),
                        e.lines().join("\n")
                    );
                }
                toml += 1;
            }
            "conf" if in_legacy => {
                // Alone an agent's or common file lacks the monitor's half: validating
                // whole installations is legacy::tests' job.
                crate::legacy::import(std::slice::from_ref(&path))
                    .unwrap_or_else(|e| panic!("{} does not import: {e}", path.display()));
                legacy += 1;
            }
            "service" | "target" | "timer" => {}
            // The Grafana dashboard and Prometheus rules: parsed, and checked against the
            // metrics the binaries export, by tests/tests/dashboards.rs.
            "json" | "yml" => {}
            // Example hooks (notify_command, kill_host_bin): shell, checked by sh -n below.
            "sh" => {
                let ok = std::process::Command::new("sh")
                    .arg("-n")
                    .arg(&path)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "{} is not valid sh", path.display());
            }
            _ => panic!("{}: unexpected file kind in conf/", path.display()),
        }
    }
    assert!(
        toml >= 2,
        "expected at least mmm.toml and lab.toml in conf/, found {toml}"
    );
    assert!(
        legacy >= 9,
        "expected three MMM installations in conf/legacy, found {legacy} files"
    );
}

#[test]
fn minimal_config_gets_defaults_and_keeps_file_order() {
    let c = parse(MINIMAL).unwrap();
    let names: Vec<_> = c.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["db2", "db1", "db3"],
        "hosts keep the order of the file"
    );
    assert_eq!(c.active_master_role, "writer");
    let db1 = c.host("db1").unwrap();
    assert_eq!(db1.agent_port, 19989, "host value overrides the default");
    assert_eq!(c.host("db2").unwrap().agent_port, 9989);
    assert_eq!(db1.cluster_interface, "eth0");
    assert_eq!(db1.agent_password, Secret::Inline("a".into()));
    assert_eq!(
        c.host("db3").unwrap().agent_password,
        Secret::File("/etc/mmm/db3-agent.password".into()),
        "a host's secret file replaces the default's inline secret"
    );
    assert_eq!(c.monitor.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.monitor.auto_set_online, None);
    assert!(c.monitor.careful_startup);
    assert!(!c.monitor.failback);
    assert_eq!(
        c.monitor.control,
        ControlAddr::Unix("/run/mmm/mmm-monitor.sock".into())
    );
    assert_eq!(c.checks.mysql.trap_period, Duration::from_millis(500));
    assert_eq!(c.checks.ping.trap_period, Duration::from_secs(3));
    assert_eq!(c.agent.fencing, Fencing::Lease);
    assert_eq!(c.agent.garp_count, 5);
}

#[test]
fn reports_every_problem_at_once_each_naming_its_key() {
    let text = r#"
bogus_top = 1
active_master_role = "writer"
[defaults]
agent_password = "a"
monitor_password = "m"
replication_password = "r"
[hosts.db1]
ip = "10.0.0.11"
mode = "master"
colour = "blue"
[hosts.db2]
ip = "10.0.0.11"
mode = "master"
peer = "db3"
[hosts.db3]
ip = "10.0.0.300"
mode = "slave"
[hosts.db4]
ip = "10.0.0.14"
mode = "primary"
[roles.writer]
mode = "exclusive"
hosts = ["db1", "db2", "db4", "db9"]
ips = ["10.0.0.100", "10.0.0.99"]
[roles.reader]
mode = "balanced"
hosts = ["db1"]
ips = ["10.0.0.100", "10.0.0.11"]
prefer = "db1"
[monitor]
ping_ips = ["10.0.0.1"]
heartbeat_interval = "100"
agent_timeout = "5 parsecs"
mode = "sleepy"
[checks.default]
trap_period = "soon"
[checks.pong]
timeout = "1s"
[agent]
lease = "1s"
[security]
key = "abcd"
"#;
    let p = problems(text);
    assert!(
        !p.iter().any(|l| l.contains("\"db4\" is a slave")),
        "a host whose mode did not parse is not judged by a placeholder mode: {p:?}"
    );
    for needle in [
        "bogus_top: unknown key",
        "hosts.db1.colour: unknown key",
        "hosts.db1.peer: a master needs a peer",
        "hosts.db2.peer: \"db3\" is not a master",
        "hosts.db2.ip: 10.0.0.11 is also hosts.db1.ip",
        "hosts.db3.ip: \"10.0.0.300\" is not an IPv4 address",
        "hosts.db4.mode: unknown host mode \"primary\"",
        "roles.writer.hosts: unknown host \"db9\"",
        "roles.writer.ips: an exclusive role has one IP or none, found 2",
        "roles.writer.hosts: at most two hosts",
        "roles.reader.ips: 10.0.0.100 is also in roles.writer.ips",
        "roles.reader.ips: 10.0.0.11 is a host's own address (hosts.db1.ip)",
        "roles.reader.prefer: only exclusive roles",
        "monitor.heartbeat_interval: duration \"100\" has no unit",
        "monitor.agent_timeout: duration \"5 parsecs\" has unknown unit",
        "monitor.mode: unknown monitor mode \"sleepy\"",
        "checks.default.trap_period",
        "checks.pong: unknown check \"pong\"",
        "security.key: cluster key is 2 bytes",
    ] {
        assert_has(&p, needle);
    }
}

#[test]
fn peers_must_point_back_and_slaves_have_none() {
    let text = MINIMAL
        .replace("peer = \"db1\"\n[hosts.db1]", "peer = \"db1\"\n[hosts.db9]\nip = \"10.0.0.19\"\nmode = \"master\"\npeer = \"db2\"\n[hosts.db1]")
        .replace("mode = \"slave\"", "mode = \"slave\"\npeer = \"db1\"");
    let p = problems(&text);
    assert_has(
        &p,
        "hosts.db9.peer: \"db2\" does not name \"db9\" as its peer",
    );
    assert_has(&p, "hosts.db3.peer: only masters have a peer");
}

#[test]
fn active_master_role_must_exist_be_exclusive_and_hold_only_masters() {
    let p =
        problems(&MINIMAL.replace("[defaults]", "active_master_role = \"primary\"\n[defaults]"));
    assert_has(
        &p,
        "active_master_role: names no configured role (\"primary\")",
    );
    let p = problems(&MINIMAL.replace("hosts = [\"db1\", \"db2\"]", "hosts = [\"db1\", \"db3\"]"));
    assert_has(&p, "\"db3\" is a slave and cannot be the active master");
}

#[test]
fn missing_secrets_and_bad_intervals_are_named() {
    let p = problems(&MINIMAL.replace("monitor_password = \"m\"\n", "").replace(
        "[monitor]\n",
        "[monitor]\nheartbeat_interval = \"1s\"\nagent_timeout = \"500ms\"\n",
    ));
    assert_has(&p, "hosts.db1.monitor_password: missing");
    assert_has(
        &p,
        "monitor.agent_timeout: must be longer than monitor.heartbeat_interval",
    );
    assert_has(
        &p,
        "agent.lease: must be longer than monitor.heartbeat_interval",
    );
}

#[test]
fn syntax_errors_are_reported_as_such() {
    let err = parse("[hosts.db1\nip = 1").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    let err = parse("[defaults]\nagent_port = \"many\"").unwrap_err();
    let lines = err.lines().join("\n");
    assert!(
        lines.contains("agent_port") || lines.contains("u16") || lines.contains("integer"),
        "{lines}"
    );
}

#[test]
fn load_refuses_open_modes_and_missing_secret_files() {
    let dir = std::env::temp_dir().join(format!("mmm-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mmm.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load(&path).unwrap_err();
    let lines = err.lines().join("\n");
    assert!(
        lines.contains("readable by group or others (mode 644)"),
        "{lines}"
    );
    assert!(
        lines.contains("hosts.db3.agent_password_file: cannot read /etc/mmm/db3-agent.password"),
        "{lines}"
    );

    let secret = dir.join("db3.password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(
        &path,
        MINIMAL.replace("/etc/mmm/db3-agent.password", secret.to_str().unwrap()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lines = Config::load(&path).unwrap_err().lines().join("\n");
    assert!(
        lines.contains("db3.password is readable by group or others (mode 640)"),
        "{lines}"
    );

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.host("db3").unwrap().agent_password.reveal().unwrap(),
        "s3cret"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garp_bounds_extreme_durations_and_state_dir_are_named() {
    let p = problems(&MINIMAL.replace(
        "[monitor]\n",
        "[agent]\ngarp_count = 100000\ngarp_interval = \"0s\"\nlease = \"100000000h\"\nstate_dir = \"run/mmm\"\nmonitor_ips = [\"10.0.0.5\", \"mon1\"]\n\n[monitor]\n",
    ));
    assert_has(&p, "agent.garp_count: must be at most 100");
    assert_has(&p, "agent.garp_interval: must be greater than zero");
    assert_has(
        &p,
        "agent.lease: \"100000000h\" is too long (at most 30 days)",
    );
    assert_has(&p, "agent.state_dir: must be an absolute path");
    assert_has(&p, "agent.monitor_ips[1]: \"mon1\" is not an IP address");
}

#[test]
fn a_host_name_that_reads_as_an_option_is_refused() {
    let text = MINIMAL.replace("[hosts.db1]", "[hosts.-db1]");
    assert!(
        problems(&text)
            .iter()
            .any(|p| p.starts_with("hosts.-db1: host names may use")),
        "{:?}",
        problems(&text)
    );
}

#[test]
fn ipv6_ping_targets_are_refused_by_name() {
    let text = MINIMAL.replace("ping_ips = [\"10.0.0.1\"]", "ping_ips = [\"::1\"]");
    assert_has(
        &problems(&text),
        "monitor.ping_ips: \"::1\" is IPv6: the network guard pings IPv4 addresses only",
    );
}

#[test]
fn coordination_is_optional_and_checked_whole() {
    assert_eq!(parse(MINIMAL).unwrap().coordination, None);
    let good = format!(
        "{MINIMAL}\n[coordination]\netcd = [\"http://10.0.0.5:2379\", \"http://etcd2:2379\"]\nprefix = \"/mmm/main\"\nsession_ttl = \"2s\"\n"
    );
    let c = parse(&good).unwrap().coordination.expect("coordination");
    assert_eq!(c.etcd.len(), 2);
    assert_eq!(c.prefix, "/mmm/main");
    assert_eq!(c.session_ttl, Duration::from_secs(2));
    let bad = format!(
        "{MINIMAL}\n[coordination]\netcd = [\"ftp://10.0.0.5:2379\", \"http://:2379\"]\nprefix = \"mmm/main/\"\nsession_ttl = \"500ms\"\nttl = 3\n"
    );
    let found = problems(&bad);
    for needle in [
        "coordination.etcd: \"ftp://10.0.0.5:2379\" is not an etcd client URL",
        "coordination.etcd: \"http://:2379\" is not an etcd client URL",
        "coordination.prefix: \"mmm/main/\": one absolute key path per cluster",
        "coordination.session_ttl: 500ms: whole seconds from 1s to 60s",
        "coordination.ttl: unknown key",
    ] {
        assert_has(&found, needle);
    }
    assert_has(
        &problems(&format!("{MINIMAL}\n[coordination]\nprefix = \"/x\"\n")),
        "coordination.etcd: missing",
    );
    // TLS: https everywhere, the CA required, a client certificate whole or not at all.
    let tls = format!(
        "{MINIMAL}\n[coordination]\netcd = [\"https://10.0.0.5:2379\"]\nprefix = \"/mmm/main\"\nca_file = \"/etc/mmm/etcd-ca.pem\"\ncert_file = \"/etc/mmm/c.pem\"\nkey_file = \"/etc/mmm/c.key\"\n"
    );
    let t = parse(&tls).unwrap().coordination.unwrap().tls.expect("tls");
    assert_eq!(t.ca_file, PathBuf::from("/etc/mmm/etcd-ca.pem"));
    assert_eq!(
        t.client,
        Some((
            PathBuf::from("/etc/mmm/c.pem"),
            PathBuf::from("/etc/mmm/c.key")
        ))
    );
    let found = problems(&format!(
        "{MINIMAL}\n[coordination]\netcd = [\"https://10.0.0.5:2379\", \"http://10.0.0.6:2379\"]\nprefix = \"/x\"\ncert_file = \"c.pem\"\n"
    ));
    for needle in [
        "coordination.etcd: mixes http:// and https:// endpoints",
        "coordination.ca_file: missing: https:// endpoints need the CA",
        "coordination.key_file: a client certificate needs both cert_file and key_file",
    ] {
        assert_has(&found, needle);
    }
    assert_has(
        &problems(&format!(
            "{MINIMAL}\n[coordination]\netcd = [\"http://10.0.0.5:2379\"]\nprefix = \"/x\"\nca_file = \"ca.pem\"\n"
        )),
        "coordination.ca_file: only with https:// etcd endpoints",
    );
}

/// The default session_ttl outlives an etcd leader election with etcd's own timings (and
/// with the ones given), and a shorter one is a warning naming the least that works.
#[test]
fn session_ttl_outlives_an_etcd_election_by_default() {
    let coordination = |extra: &str| {
        let text = format!(
            "{MINIMAL}\n[coordination]\netcd = [\"http://10.0.0.5:2379\"]\nprefix = \"/mmm/main\"\n{extra}"
        );
        parse(&text).unwrap()
    };
    let etcd_defaults = coordination("");
    let c = etcd_defaults.coordination.as_ref().unwrap();
    assert_eq!(c.etcd_election_timeout, Duration::from_secs(1));
    assert_eq!(c.etcd_heartbeat_interval, Duration::from_millis(100));
    assert_eq!(
        c.session_ttl,
        Duration::from_secs(7),
        "3 x (2 x 1 s + 100 ms)"
    );
    assert!(etcd_defaults.warnings().is_empty());
    let lan =
        coordination("etcd_election_timeout = \"500ms\"\netcd_heartbeat_interval = \"50ms\"\n");
    assert_eq!(
        lan.coordination.as_ref().unwrap().session_ttl,
        Duration::from_secs(4)
    );
    let short = coordination(
        "etcd_election_timeout = \"500ms\"\netcd_heartbeat_interval = \"50ms\"\nsession_ttl = \"1s\"\n",
    );
    let w = short.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("coordination.session_ttl: 1s does not outlive an etcd leader election")
            && w[0].contains("use at least 4s"),
        "{w:?}"
    );
    assert_has(
        &problems(&format!(
            "{MINIMAL}\n[coordination]\netcd = [\"http://10.0.0.5:2379\"]\nprefix = \"/x\"\netcd_heartbeat_interval = \"2s\"\n"
        )),
        "coordination.etcd_heartbeat_interval: 2s: etcd's --heartbeat-interval, above zero and below its --election-timeout (1s)",
    );
}

/// The HTTP listener is optional; `metrics` keeps working beside it but not on its
/// address (the listener serves /metrics itself), and a token needs a listener.
#[test]
fn the_http_listener_and_its_token() {
    let c = parse(&MINIMAL.replace(
        "[monitor]\n",
        "[monitor]\nhttp = \"127.0.0.1:9992\"\nhttp_token_file = \"/etc/mmm/http.token\"\nmetrics = \"127.0.0.1:9990\"\n",
    ))
    .expect("valid");
    assert_eq!(
        c.monitor.http,
        Some("127.0.0.1:9992".parse().expect("addr"))
    );
    assert_eq!(
        c.monitor.http_token_file.as_deref(),
        Some(Path::new("/etc/mmm/http.token"))
    );
    assert_eq!(parse(MINIMAL).expect("valid").monitor.http, None);
    let p = problems(&MINIMAL.replace(
        "[monitor]\n",
        "[monitor]\nhttp = \"localhost\"\nmetrics = \"127.0.0.1:1\"\nhttp_token_file = \"token\"\n",
    ));
    assert_has(&p, "monitor.http: \"localhost\" is not IP:PORT");
    assert_has(&p, "monitor.http_token_file: must be an absolute path");
    let p = problems(&MINIMAL.replace(
        "[monitor]\n",
        "[monitor]\nhttp = \"127.0.0.1:9992\"\nmetrics = \"127.0.0.1:9992\"\n",
    ));
    assert_has(&p, "monitor.metrics: is monitor.http's address");
    let p = problems(&MINIMAL.replace(
        "[monitor]\n",
        "[monitor]\nhttp_token_file = \"/etc/mmm/http.token\"\n",
    ));
    assert_has(&p, "monitor.http_token_file: set without monitor.http");
}

/// The agent's listener is optional, and its port must be free on every database host;
/// every problem is reported at once.
#[test]
fn the_agent_http_listener() {
    let with = |http: &str| {
        MINIMAL.replace(
            "[security]\n",
            &format!("[agent]\nhttp = {http:?}\n\n[security]\n"),
        )
    };
    let c = parse(&with("0.0.0.0:9991")).expect("valid");
    assert_eq!(c.agent.http, Some("0.0.0.0:9991".parse().expect("addr")));
    assert_eq!(parse(MINIMAL).expect("valid").agent.http, None);
    // Another host's ip on db1's agent_port is no conflict; the same port on any ip is.
    parse(&with("10.0.0.12:19989")).expect("valid: db2 listens on 9989");
    let p =
        problems(&with("0.0.0.0:19989").replace("[monitor]\n", "[monitor]\nhttp = \"nowhere\"\n"));
    assert_has(
        &p,
        "agent.http: 0.0.0.0:19989 takes hosts.db1.agent_port (19989)",
    );
    assert_has(&p, "monitor.http: \"nowhere\" is not IP:PORT");
    let p = problems(&with("10.0.0.13:3306"));
    assert_has(
        &p,
        "agent.http: 10.0.0.13:3306 takes hosts.db3.mysql_port (3306)",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_has(
        &problems(&with(":9991")),
        "agent.http: \":9991\" is not IP:PORT",
    );
}

proptest::proptest! {
    /// Whatever etcd's timings, the derived TTL satisfies the rule it is derived from:
    /// an election shorter than 3/8 of it.
    #[test]
    fn the_derived_session_ttl_outlives_the_election(et in 100u64..10_000, hb in 10u64..1000) {
        let election = Duration::from_millis(2 * et + hb);
        let ttl = crate::config::min_session_ttl(election);
        proptest::prop_assert!(election * 8 < ttl * 3, "{election:?} vs {ttl:?}");
    }
}
