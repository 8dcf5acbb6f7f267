use super::*;
use mmm_common::config::testing::ConfigBuilder;
use mmm_common::config::Secret;
use mmm_common::types::RoleMode;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmm-startup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn user() -> User {
    User {
        uid: 998,
        gid: 997,
        name: Some("mmm".into()),
    }
}

fn line(e: StartupError) -> String {
    Refusals(vec![e]).to_string()
}

#[test]
fn a_usable_state_dir_is_created_and_the_check_leaves_nothing_behind() {
    let d = dir("ok").join("nested");
    state_dir(&d, "db1", &user()).unwrap();
    assert!(d.is_dir(), "a missing state_dir is created");
    let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert!(left.is_empty(), "the check left {left:?}");
    // Existing state files the agent can open are fine.
    std::fs::write(d.join("db1.lease"), "x").unwrap();
    std::fs::write(d.join("db1.term"), "3\n").unwrap();
    assert!(state_files(&d, "db1", &user()).is_empty());
    let _ = std::fs::remove_dir_all(d.parent().unwrap());
}

#[test]
fn a_state_dir_under_a_file_is_refused_naming_the_path_the_user_and_the_fix() {
    let d = dir("under-file");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("file"), "").unwrap();
    let state = d.join("file").join("mmm");
    let e = state_dir(&state, "db1", &user()).unwrap_err();
    assert!(
        matches!(&e, StartupError::StateDir { step: StateStep::LookUp, source, .. } if source.raw_os_error() == Some(libc::ENOTDIR)),
        "{e:?}"
    );
    let text = line(e);
    for needle in [
        state.to_str().unwrap(),
        "mmm (uid 998, gid 997)",
        "Not a directory",
        "create it owned by mmm (systemd: RuntimeDirectory=mmm in the unit, as conf/systemd/mmm-agent.service does), or set [agent] state_dir",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(!text.contains('\n'), "one line: {text}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_where_the_state_dir_should_be_is_refused() {
    let d = dir("is-file");
    std::fs::create_dir_all(&d).unwrap();
    let state = d.join("mmm");
    std::fs::write(&state, "").unwrap();
    let e = state_dir(&state, "db1", &user()).unwrap_err();
    assert!(matches!(e, StartupError::StateDirNotDir { .. }), "{e:?}");
    assert!(line(e).contains("is not a directory; fix: create it owned by mmm"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_state_file_the_agent_cannot_open_is_refused() {
    let d = dir("files");
    // A directory where the term file should be: its replacement could never be
    // renamed over it.
    std::fs::create_dir_all(d.join("db1.term")).unwrap();
    std::fs::create_dir_all(d.join("db2.term")).unwrap();
    let found = state_files(&d, "db1", &user());
    assert_eq!(found.len(), 1, "{found:?}");
    let text = line(found.into_iter().next().unwrap());
    assert!(
        text.contains(d.join("db1.term").to_str().unwrap())
            && text.contains("as mmm (uid 998, gid 997)")
            && text.contains("chown it to mmm"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_running_user_is_named() {
    let me = User::current();
    let proc_uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1)?.parse::<u32>().ok());
    assert_eq!(Some(me.uid), proc_uid);
    if me.uid == 0 {
        assert_eq!(me.name.as_deref(), Some("root"));
    }
    assert!(me.to_string().contains(&format!("uid {}", me.uid)));
    let nameless = User {
        uid: 4242,
        gid: 4242,
        name: None,
    };
    assert_eq!(nameless.to_string(), "uid 4242, gid 4242");
    assert!(state_dir_fix(&nameless).starts_with("create it owned by uid 4242 "));
}

#[test]
fn interfaces_lists_loopback_with_its_address() {
    let all = interfaces().unwrap();
    let lo = all.iter().find(|i| i.name == "lo").expect("lo");
    assert!(lo.ipv4.contains(&Ipv4Addr::LOCALHOST), "{lo:?}");
}

/// `reader`: db1 and db2 may hold a reader VIP; without it no host holds any VIP.
fn config(interface: &str, reader: bool) -> Config {
    let mut b = ConfigBuilder::new();
    b.set("defaults.cluster_interface", interface).role(
        "writer",
        RoleMode::Exclusive,
        &["db1", "db2"],
        &[],
    );
    if reader {
        b.reader(&["db1", "db2"], &[Ipv4Addr::new(10, 0, 0, 101)]);
    }
    b.build()
}

fn iface(name: &str, ethernet: bool, ipv4: &[Ipv4Addr]) -> Interface {
    Interface {
        name: name.into(),
        ethernet,
        ipv4: ipv4.to_vec(),
    }
}

#[test]
fn a_missing_cluster_interface_is_refused_only_where_vips_would_use_it() {
    let here = [
        iface("lo", true, &[Ipv4Addr::LOCALHOST]),
        iface("ens3", true, &[Ipv4Addr::new(10, 0, 0, 11)]),
        iface("wg0", false, &[]),
    ];
    let c = config("eth0", true);
    let e = interface(&c, c.host("db1").unwrap(), &here).expect("refused");
    let text = line(e);
    assert!(
        text.contains("hosts.db1.cluster_interface \"eth0\" does not exist here (interfaces: lo, ens3, wg0), and every VIP of role reader would fail on it")
            && text.contains("fix: 10.0.0.11, this host's ip, is on \"ens3\": set cluster_interface = \"ens3\""),
        "{text}"
    );
    // The host's ip elsewhere: no interface to suggest.
    let e = interface(&c, c.host("db2").unwrap(), &here).expect("refused");
    assert!(line(e).contains("fix: set cluster_interface to the interface"));
    // No role with VIPs: the interface is never used, the default must not stop it.
    let c = config("eth0", false);
    assert!(interface(&c, c.host("db1").unwrap(), &here).is_none());
    let c = config("ens3", true);
    assert!(interface(&c, c.host("db1").unwrap(), &here).is_none());
    let c = config("wg0", true);
    assert!(matches!(
        interface(&c, c.host("db1").unwrap(), &here),
        Some(StartupError::NoEthernet { .. })
    ));
}

#[test]
fn an_unreadable_replication_password_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("secret");
    std::fs::create_dir_all(&d).unwrap();
    // Private, so only the read itself fails.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut c = config("eth0", false);
    let mut host = c.hosts.remove(0);
    // A directory cannot be read as a file, whoever the agent runs as.
    host.replication_password = Secret::File(d.clone());
    let found = secrets(&host, &user());
    assert_eq!(found.len(), 1, "{found:?}");
    let text = line(found.into_iter().next().unwrap());
    assert!(
        text.starts_with(
            "hosts.db1.replication_password_file as mmm (uid 998, gid 997): reading secret file"
        ) && text.contains("make it readable by mmm"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_capabilities_keep_the_words_operators_grep_for() {
    let text = line(StartupError::NoNetAdmin);
    assert!(
        text.starts_with("CAP_NET_ADMIN is required") && text.contains("AmbientCapabilities="),
        "{text}"
    );
    assert!(line(StartupError::ProbeCaps).ends_with("or set probe = \"auto\""));
}
