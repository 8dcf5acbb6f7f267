//! Real MariaDB servers for tests, one per node namespace: a template datadir made once
//! with mariadb-install-db and cached under target/, copied per server (~0.2 s), small
//! settings, GTID with gtid_strict_mode, log_slave_updates, and read_only=1 in every
//! server's options (the agent lifts it), as a restarted old master must come up read-only.

use crate::netns::{sh, wait_for, Net};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Credentials the lab config (conf/lab.toml) uses.
pub const AGENT: (&str, &str) = ("mmm_agent", "lab-agent");
pub const MONITOR: (&str, &str) = ("mmm_monitor", "lab-monitor");
pub const REPL: (&str, &str) = ("repl", "lab-repl");
pub const APP: (&str, &str) = ("app", "lab-app");

fn template() -> PathBuf {
    // Tests of one process share one template, made once; other processes are kept apart
    // by the pid in the temp name and the atomic rename.
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(make_template).clone()
}

fn make_template() -> PathBuf {
    let dir = crate::target_dir()
        .join("mmm-test")
        .join("mariadb-template");
    if dir.join("mysql").is_dir() {
        return dir;
    }
    let parent = dir.parent().expect("template has a parent");
    std::fs::create_dir_all(parent).expect("creating target/mmm-test");
    // Build beside, then rename: concurrent test processes never see half a template.
    let tmp = parent.join(format!("template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    sh(&[
        "mariadb-install-db",
        "--no-defaults",
        &format!("--datadir={}", tmp.display()),
        "--user=root",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
        "--innodb-buffer-pool-size=8M",
        "--innodb-log-file-size=8M",
    ]);
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process won the race; its template is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// How one server is set up; [`Setup::default`] is the lab's usual server.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The host part of the agent's, monitor's and replication user's accounts: "%" in
    /// the lab; MMM's guide scoped them to the cluster's network ("192.0.2.%").
    pub account_host: String,
    /// The replication user and password (the config's replication_user).
    pub repl: (String, String),
    /// mysqld's bind-address ("0.0.0.0": answers on VIPs too).
    pub bind: String,
    pub log_slave_updates: bool,
    /// TLS on the server: its CA, certificate and key (ssl_ca, ssl_cert, ssl_key).
    pub tls: Option<crate::pki::ServerTls>,
    /// What the agent's and the monitor's accounts REQUIRE ("SSL", "X509"; empty: nothing).
    pub require: String,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            account_host: "%".into(),
            repl: (REPL.0.into(), REPL.1.into()),
            bind: "0.0.0.0".into(),
            log_slave_updates: true,
            tls: None,
            require: String::new(),
        }
    }
}

pub struct Mariadb {
    pub node: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub pid: u32,
    pub server_id: u32,
    args: Vec<String>,
    log_dir: PathBuf,
}

impl Mariadb {
    /// Starts mariadbd in `node`'s namespace, listening on 0.0.0.0:3306 (a server bound
    /// to the host IP would not answer on VIPs), and creates the lab's users at '%'.
    pub fn start(net: &Net, node: &str, server_id: u32, dir: &Path) -> Mariadb {
        Mariadb::start_with(net, node, server_id, dir, &Setup::default())
    }

    /// As [`Mariadb::start`], set up as `setup` says.
    pub fn start_with(net: &Net, node: &str, server_id: u32, dir: &Path, setup: &Setup) -> Mariadb {
        let data = dir.join(format!("{node}-data"));
        sh(&[
            "cp",
            "-a",
            template().to_str().expect("UTF-8 path"),
            data.to_str().expect("UTF-8 path"),
        ]);
        let socket = dir.join(format!("{node}.sock"));
        let mut args = vec![
            "mariadbd".to_string(),
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.join(format!("{node}.pid")).display()),
            format!(
                "--log-error={}",
                dir.join(format!("{node}-mysqld.err")).display()
            ),
            "--port=3306".into(),
            format!("--bind-address={}", setup.bind),
            "--user=root".into(),
            format!("--server-id={server_id}"),
            // Masters must not generate the same AUTO_INCREMENT values.
            "--auto-increment-increment=2".into(),
            format!("--auto-increment-offset={server_id}"),
            format!("--gtid-domain-id=0"),
            "--log-bin=mysql-bin".into(),
            format!("--log-slave-updates={}", u8::from(setup.log_slave_updates)),
            "--gtid-strict-mode=1".into(),
            "--read-only=1".into(),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=8M".into(),
            "--innodb-log-file-size=8M".into(),
            "--performance-schema=0".into(),
            "--skip-slave-start".into(),
            // Semi-sync both ways: an acknowledged commit is on a second server.
            "--rpl-semi-sync-master-enabled=1".into(),
            "--rpl-semi-sync-slave-enabled=1".into(),
            "--rpl-semi-sync-master-timeout=1000".into(),
            // A replica's STOP SLAVE first connects to its master to kill the dump thread,
            // bounded by this many seconds (default 5): when the master's host is gone, a
            // failover waits that long for the candidate's IO thread (docs/operations.md).
            "--rpl-semi-sync-slave-kill-conn-timeout=1".into(),
        ];
        if let Some(t) = &setup.tls {
            args.extend([
                format!("--ssl-ca={}", t.ca.display()),
                format!("--ssl-cert={}", t.cert.display()),
                format!("--ssl-key={}", t.key.display()),
            ]);
        }
        let mut db = Mariadb {
            node: node.into(),
            dir: data,
            socket,
            pid: 0,
            server_id,
            args,
            log_dir: dir.to_path_buf(),
        };
        db.launch(net);
        let h = &setup.account_host;
        let user = |(u, p): (&str, &str), require: &str, grants: &str| {
            let require = match require {
                "" => String::new(),
                r => format!(" REQUIRE {r}"),
            };
            format!(
                "CREATE USER '{u}'@'{h}' IDENTIFIED BY '{p}'{require}; GRANT {grants} ON *.* TO '{u}'@'{h}';"
            )
        };
        db.sql(&format!(
            "SET sql_log_bin = 0; {} {} {} CREATE USER '{}'@'%' IDENTIFIED BY '{}'; CREATE DATABASE app; GRANT ALL ON app.* TO '{}'@'%'; GRANT SELECT ON mysql.user TO '{}'@'{}';",
            user(
                AGENT,
                &setup.require,
                "SUPER, PROCESS, RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ADMIN, READ_ONLY ADMIN, CONNECTION ADMIN, BINLOG MONITOR, SLAVE MONITOR, CREATE USER"
            ),
            user(MONITOR, &setup.require, "REPLICATION CLIENT, SLAVE MONITOR"),
            user((&setup.repl.0, &setup.repl.1), "", "REPLICATION SLAVE"),
            // The application's account is no MMM account: the same in every lab.
            APP.0,
            APP.1,
            APP.0,
            AGENT.0,
            h,
        ));
        db
    }

    fn launch(&mut self, net: &Net) {
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.pid = net.spawn(
            &self.node,
            &argv,
            &self.log_dir.join(format!("{}-mysqld.out", self.node)),
        );
        let ready = wait_for(Duration::from_secs(30), || {
            Command::new("mariadb-admin")
                .args([
                    "--no-defaults",
                    "-uroot",
                    &format!("--socket={}", self.socket.display()),
                    "ping",
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        if ready.is_none() {
            let log =
                std::fs::read_to_string(self.log_dir.join(format!("{}-mysqld.err", self.node)))
                    .unwrap_or_default();
            panic!(
                "mariadbd on {} did not become ready within 30 s:\n{log}",
                self.node
            );
        }
        // The agent reads the pid file (MariaDB writes it 0660): give it the agent's group,
        // as the mmm-agent package does by putting mmm in mysqld's group.
        let pid_file = self.log_dir.join(format!("{}.pid", self.node));
        let _ = std::os::unix::fs::chown(&pid_file, None, Some(65534));
    }

    /// Stops mariadbd (SIGTERM, waited for) and starts it again with `edit` applied to
    /// its arguments: for settings MariaDB cannot change at run time.
    pub fn restart_with(&mut self, net: &Net, edit: impl FnOnce(&mut Vec<String>)) {
        net.signal(self.pid, "TERM");
        assert!(
            net.wait_exit(self.pid, Duration::from_secs(30)),
            "mariadbd on {} ignored SIGTERM",
            self.node
        );
        edit(&mut self.args);
        self.launch(net);
    }

    /// Starts mariadbd again on its datadir (after it was stopped or killed), as an
    /// init script would: read_only from its options, replication not started.
    pub fn restart(&mut self, net: &Net) {
        net.wait_exit(self.pid, Duration::from_secs(30));
        self.launch(net);
    }

    /// Runs SQL as root over the unix socket (no namespace needed); returns the
    /// tab-separated rows without headers. Panics with the server's message on error.
    pub fn sql(&self, stmt: &str) -> String {
        let out = self.try_sql(stmt);
        match out {
            Ok(s) => s,
            Err(e) => panic!("SQL on {} failed: {stmt}\n{e}", self.node),
        }
    }

    pub fn try_sql(&self, stmt: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "-uroot",
                &format!("--socket={}", self.socket.display()),
                "-N",
                "-B",
                "-e",
                stmt,
            ])
            .output()
            .map_err(|e| format!("starting mariadb: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// read_only, asked again when the agent killed our session meanwhile (demotion
    /// kills every client session, the test's own included).
    pub fn read_only(&self) -> bool {
        for _ in 0..5 {
            match self.try_sql("SELECT @@GLOBAL.read_only") {
                Ok(v) => return v == "1",
                Err(e) if e.contains("gone away") || e.contains("Lost connection") => continue,
                Err(e) => panic!("reading read_only on {}: {e}", self.node),
            }
        }
        panic!(
            "reading read_only on {}: the session was killed five times in a row",
            self.node
        )
    }

    /// One field of SHOW SLAVE STATUS (empty when the server is no replica).
    pub fn slave_status(&self, field: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "-uroot",
                &format!("--socket={}", self.socket.display()),
                "-B",
                "-e",
                "SHOW SLAVE STATUS",
            ])
            .output()
            .unwrap_or_else(|e| panic!("starting mariadb: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (Some(header), Some(row)) = (lines.next(), lines.next()) else {
            return String::new();
        };
        header
            .split('\t')
            .zip(row.split('\t'))
            .find(|(k, _)| *k == field)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    }
}
