use super::*;
use crate::config::testing::ConfigBuilder;
use std::os::unix::fs::PermissionsExt;

/// db2 then db1 (on its own agent port), slave db3 whose agent password is a file, a
/// reader role over all three and a shorter mysql trap period.
fn minimal() -> ConfigBuilder {
    let mut b = ConfigBuilder::new();
    b.without_host("db1")
        .master("db1", Ipv4Addr::new(10, 0, 0, 11), "db2")
        .set("hosts.db1.agent_port", 19989)
        .host("db3", HostMode::Slave, Ipv4Addr::new(10, 0, 0, 13))
        .set(
            "hosts.db3.agent_password_file",
            "/etc/mmm/db3-agent.password",
        )
        .reader(
            &["db1", "db2", "db3"],
            &[Ipv4Addr::new(10, 0, 0, 101), Ipv4Addr::new(10, 0, 0, 102)],
        )
        .duration("checks.mysql.trap_period", Duration::from_millis(500));
    b
}

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

/// The problems of a builder's config that does not validate.
fn invalid(b: &ConfigBuilder) -> Vec<String> {
    problems(&b.toml())
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
    let c = minimal().build();
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
    let p = invalid(
        minimal()
            .master("db9", Ipv4Addr::new(10, 0, 0, 19), "db2")
            .set("hosts.db3.peer", "db1"),
    );
    assert_has(
        &p,
        "hosts.db9.peer: \"db2\" does not name \"db9\" as its peer",
    );
    assert_has(&p, "hosts.db3.peer: only masters have a peer");
}

#[test]
fn active_master_role_must_exist_be_exclusive_and_hold_only_masters() {
    let p = invalid(minimal().set("active_master_role", "primary"));
    assert_has(
        &p,
        "active_master_role: names no configured role (\"primary\")",
    );
    let p = invalid(minimal().role(
        "writer",
        RoleMode::Exclusive,
        &["db1", "db3"],
        &[Ipv4Addr::new(10, 0, 0, 100)],
    ));
    assert_has(&p, "\"db3\" is a slave and cannot be the active master");
}

#[test]
fn missing_secrets_and_bad_intervals_are_named() {
    let p = invalid(
        minimal()
            .remove("defaults.monitor_password")
            .heartbeat_interval(Duration::from_secs(1))
            .agent_timeout(Duration::from_millis(500)),
    );
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
    std::fs::write(&path, minimal().toml()).unwrap();
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
        minimal()
            .set("hosts.db3.agent_password_file", secret.to_str().unwrap())
            .toml(),
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
    let p = invalid(
        minimal()
            .set("agent.garp_count", 100000)
            .duration("agent.garp_interval", Duration::ZERO)
            .set("agent.lease", "100000000h")
            .set("agent.state_dir", "run/mmm")
            .set("agent.monitor_ips", vec!["10.0.0.5", "mon1"]),
    );
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
    let p = invalid(minimal().without_host("db1").master(
        "-db1",
        Ipv4Addr::new(10, 0, 0, 11),
        "db2",
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("hosts.-db1: host names may use")),
        "{p:?}"
    );
}

#[test]
fn ipv6_ping_targets_are_refused_by_name() {
    assert_has(
        &invalid(minimal().ping_ips(&["::1".parse().unwrap()])),
        "monitor.ping_ips: \"::1\" is IPv6: the network guard pings IPv4 addresses only",
    );
}

#[test]
fn coordination_is_optional_and_checked_whole() {
    assert_eq!(minimal().build().coordination, None);
    let c = minimal()
        .coordination(&["http://10.0.0.5:2379", "http://etcd2:2379"], "/mmm/main")
        .session_ttl(Duration::from_secs(2))
        .build()
        .coordination
        .expect("coordination");
    assert_eq!(c.etcd.len(), 2);
    assert_eq!(c.prefix, "/mmm/main");
    assert_eq!(c.session_ttl, Duration::from_secs(2));
    let found = invalid(
        minimal()
            .coordination(&["ftp://10.0.0.5:2379", "http://:2379"], "mmm/main/")
            .session_ttl(Duration::from_millis(500))
            .set("coordination.ttl", 3),
    );
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
        &invalid(minimal().set("coordination.prefix", "/x")),
        "coordination.etcd: missing",
    );
    // TLS: https everywhere, the CA required, a client certificate whole or not at all.
    let t = minimal()
        .coordination(&["https://10.0.0.5:2379"], "/mmm/main")
        .set("coordination.ca_file", "/etc/mmm/etcd-ca.pem")
        .set("coordination.cert_file", "/etc/mmm/c.pem")
        .set("coordination.key_file", "/etc/mmm/c.key")
        .build()
        .coordination
        .unwrap()
        .tls
        .expect("tls");
    assert_eq!(t.ca_file, PathBuf::from("/etc/mmm/etcd-ca.pem"));
    assert_eq!(
        t.client,
        Some((
            PathBuf::from("/etc/mmm/c.pem"),
            PathBuf::from("/etc/mmm/c.key")
        ))
    );
    let found = invalid(
        minimal()
            .coordination(&["https://10.0.0.5:2379", "http://10.0.0.6:2379"], "/x")
            .set("coordination.cert_file", "c.pem"),
    );
    for needle in [
        "coordination.etcd: mixes http:// and https:// endpoints",
        "coordination.ca_file: missing: https:// endpoints need the CA",
        "coordination.key_file: a client certificate needs both cert_file and key_file",
    ] {
        assert_has(&found, needle);
    }
    assert_has(
        &invalid(
            minimal()
                .coordination(&["http://10.0.0.5:2379"], "/x")
                .set("coordination.ca_file", "ca.pem"),
        ),
        "coordination.ca_file: only with https:// etcd endpoints",
    );
}

/// The default session_ttl outlives an etcd leader election with etcd's own timings (and
/// with the ones given), and a shorter one is a warning naming the least that works.
#[test]
fn session_ttl_outlives_an_etcd_election_by_default() {
    let coordination = |timings: &[(&str, Duration)]| {
        let mut b = minimal();
        b.coordination(&["http://10.0.0.5:2379"], "/mmm/main");
        for (key, d) in timings {
            b.duration(&format!("coordination.{key}"), *d);
        }
        b
    };
    let etcd_lan = [
        ("etcd_election_timeout", Duration::from_millis(500)),
        ("etcd_heartbeat_interval", Duration::from_millis(50)),
    ];
    let etcd_defaults = coordination(&[]).build();
    let c = etcd_defaults.coordination.as_ref().unwrap();
    assert_eq!(c.etcd_election_timeout, Duration::from_secs(1));
    assert_eq!(c.etcd_heartbeat_interval, Duration::from_millis(100));
    assert_eq!(
        c.session_ttl,
        Duration::from_secs(7),
        "3 x (2 x 1 s + 100 ms)"
    );
    assert!(etcd_defaults.warnings().is_empty());
    let lan = coordination(&etcd_lan).build();
    assert_eq!(
        lan.coordination.as_ref().unwrap().session_ttl,
        Duration::from_secs(4)
    );
    let short = coordination(&etcd_lan)
        .session_ttl(Duration::from_secs(1))
        .build();
    let w = short.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("coordination.session_ttl: 1s does not outlive an etcd leader election")
            && w[0].contains("use at least 4s"),
        "{w:?}"
    );
    assert_has(
        &invalid(&coordination(&[(
            "etcd_heartbeat_interval",
            Duration::from_secs(2),
        )])),
        "coordination.etcd_heartbeat_interval: 2s: etcd's --heartbeat-interval, above zero and below its --election-timeout (1s)",
    );
}

/// The HTTP listener is optional; `metrics` keeps working beside it but not on its
/// address (the listener serves /metrics itself), and a token needs a listener.
#[test]
fn the_http_listener_and_its_token() {
    let c = minimal()
        .set("monitor.http", "127.0.0.1:9992")
        .set("monitor.http_token_file", "/etc/mmm/http.token")
        .set("monitor.metrics", "127.0.0.1:9990")
        .build();
    assert_eq!(
        c.monitor.http,
        Some("127.0.0.1:9992".parse().expect("addr"))
    );
    assert_eq!(
        c.monitor.http_token_file.as_deref(),
        Some(Path::new("/etc/mmm/http.token"))
    );
    assert_eq!(minimal().build().monitor.http, None);
    let p = invalid(
        minimal()
            .set("monitor.http", "localhost")
            .set("monitor.metrics", "127.0.0.1:1")
            .set("monitor.http_token_file", "token"),
    );
    assert_has(&p, "monitor.http: \"localhost\" is not IP:PORT");
    assert_has(&p, "monitor.http_token_file: must be an absolute path");
    let p = invalid(
        minimal()
            .set("monitor.http", "127.0.0.1:9992")
            .set("monitor.metrics", "127.0.0.1:9992"),
    );
    assert_has(&p, "monitor.metrics: is monitor.http's address");
    let p = invalid(minimal().set("monitor.http_token_file", "/etc/mmm/http.token"));
    assert_has(&p, "monitor.http_token_file: set without monitor.http");
}

/// The agent's listener is optional, and its port must be free on every database host;
/// every problem is reported at once.
#[test]
fn the_agent_http_listener() {
    let with = |http: &str| {
        let mut b = minimal();
        b.set("agent.http", http);
        b
    };
    let c = with("0.0.0.0:9991").build();
    assert_eq!(c.agent.http, Some("0.0.0.0:9991".parse().expect("addr")));
    assert_eq!(minimal().build().agent.http, None);
    // Another host's ip on db1's agent_port is no conflict; the same port on any ip is.
    with("10.0.0.12:19989")
        .parse()
        .expect("valid: db2 listens on 9989");
    let p = invalid(with("0.0.0.0:19989").set("monitor.http", "nowhere"));
    assert_has(
        &p,
        "agent.http: 0.0.0.0:19989 takes hosts.db1.agent_port (19989)",
    );
    assert_has(&p, "monitor.http: \"nowhere\" is not IP:PORT");
    let p = invalid(&with("10.0.0.13:3306"));
    assert_has(
        &p,
        "agent.http: 10.0.0.13:3306 takes hosts.db3.mysql_port (3306)",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_has(
        &invalid(&with(":9991")),
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

/// TLS to MySQL: the keys in [defaults] reach every host, a host overrides them, a CA
/// alone means verify_ca (as in the MySQL clients), and no TLS by default.
#[test]
fn mysql_tls_keys() {
    use crate::types::TlsMode;
    let c = minimal().build();
    assert_eq!(c.host("db1").unwrap().mysql_tls, MysqlTls::default());
    assert_eq!(MysqlTls::default().mode, TlsMode::Disabled);

    let c = minimal()
        .set("defaults.mysql_tls", "verify_identity")
        .set("defaults.mysql_ca", "/etc/mmm/mysql-ca.pem")
        .set("defaults.mysql_cert", "/etc/mmm/mysql-client.pem")
        .set("defaults.mysql_key", "/etc/mmm/mysql-client.key")
        .set("hosts.db3.mysql_tls", "disabled")
        .set("hosts.db1.mysql_tls", "required")
        .build();
    let db2 = &c.host("db2").unwrap().mysql_tls;
    assert_eq!(db2.mode, TlsMode::VerifyIdentity);
    assert_eq!(db2.ca.as_deref(), Some(Path::new("/etc/mmm/mysql-ca.pem")));
    assert_eq!(
        db2.client,
        Some((
            PathBuf::from("/etc/mmm/mysql-client.pem"),
            PathBuf::from("/etc/mmm/mysql-client.key")
        ))
    );
    assert_eq!(c.host("db1").unwrap().mysql_tls.mode, TlsMode::Required);
    // A host that opts out keeps no client certificate it would never send.
    let db3 = &c.host("db3").unwrap().mysql_tls;
    assert_eq!((db3.mode, &db3.client), (TlsMode::Disabled, &None));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    let c = minimal().set("defaults.mysql_ca", "ca.pem").build();
    assert_eq!(c.host("db1").unwrap().mysql_tls.mode, TlsMode::VerifyCa);
    assert!(
        c.warnings().iter().any(|w| w.contains("verify_ca")),
        "{:?}",
        c.warnings()
    );
}

/// Every TLS mistake is reported at once, each under the host's key.
#[test]
fn mysql_tls_problems_all_at_once() {
    let found = invalid(
        minimal()
            .set("defaults.mysql_tls", "verify_identity")
            .set("defaults.mysql_cert", "/etc/mmm/c.pem")
            .set("hosts.db1.mysql_tls", "ssl")
            .set("hosts.db1.mysql_key", ""),
    );
    for needle in [
        "hosts.db2.mysql_ca: missing: mysql_tls = \"verify_identity\" checks",
        "hosts.db2.mysql_key: missing: a client certificate needs both mysql_cert and mysql_key",
        "hosts.db1.mysql_tls: unknown TLS mode \"ssl\" (expected one of: disabled preferred required verify_ca verify_identity)",
        "hosts.db1.mysql_key: is empty",
    ] {
        assert_has(&found, needle);
    }
}

/// `load` reads the TLS files a host uses: missing, not PEM of their kind, a client key
/// others can read.
#[test]
fn load_checks_mysql_tls_files() {
    let dir = std::env::temp_dir().join(format!("mmm-config-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("c.pem"), dir.join("c.key"));
    let pem = |label: &str| format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
    // The key where the CA belongs, and the other way round.
    std::fs::write(&ca, pem("PRIVATE KEY")).unwrap();
    std::fs::write(&cert, pem("CERTIFICATE")).unwrap();
    std::fs::write(&key, pem("RSA PRIVATE KEY")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = dir.join("db3.password");
    std::fs::write(&secret, "s").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path_of = |p: &Path| p.to_str().expect("UTF-8 temp path").to_string();
    let text = minimal()
        .set("hosts.db3.agent_password_file", path_of(&secret))
        .set("defaults.mysql_tls", "verify_ca")
        .set("defaults.mysql_ca", path_of(&ca))
        .set("defaults.mysql_cert", path_of(&cert))
        .set("defaults.mysql_key", path_of(&key))
        .toml();
    let path = dir.join("mmm.toml");
    std::fs::write(&path, &text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lines = Config::load(&path).unwrap_err().lines().join("\n");
    assert!(
        lines.contains(&format!(
            "hosts.db2.mysql_ca: {} holds no PEM \"CERTIFICATE\" block",
            ca.display()
        )),
        "{lines}"
    );
    assert!(
        lines.contains("c.key is readable by group or others (mode 644)"),
        "{lines}"
    );
    // Each file once, under the first host that uses it.
    assert_eq!(lines.matches("holds no PEM").count(), 1, "{lines}");

    std::fs::write(&ca, pem("CERTIFICATE")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&cert).unwrap();
    let lines = Config::load(&path).unwrap_err().lines().join("\n");
    assert!(
        lines.contains(&format!(
            "hosts.db2.mysql_cert: cannot read {}",
            cert.display()
        )),
        "{lines}"
    );
    std::fs::write(&cert, pem("CERTIFICATE")).unwrap();
    Config::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// conf/mmm.toml's commented TLS example is valid once uncommented.
#[test]
fn mmm_toml_tls_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/mmm.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut example = text.clone();
    for key in ["mysql_tls", "mysql_ca", "mysql_cert", "mysql_key"] {
        let commented = format!("\n# {key} = ");
        assert!(text.contains(&commented), "the example lost {key}");
        example = example.replace(&commented, &format!("\n{key} = "));
    }
    let c = parse(&example).unwrap();
    let t = &c.host("db1").unwrap().mysql_tls;
    assert_eq!(t.mode, crate::types::TlsMode::VerifyIdentity);
    assert!(t.client.is_some());
}
