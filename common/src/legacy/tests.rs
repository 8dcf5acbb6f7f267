use super::{import, Import, ImportError};
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
