//! The agent's MySQL/MariaDB actions, through mysql_async with the agent user. Every call
//! is bounded: a call that exceeds its bound drops the connection (it may be stuck in the
//! server, e.g. STOP SLAVE while the IO thread connects to a vanished master) and reports
//! a timeout; the next call reconnects.
//!
//! Read-only: on MySQL `super_read_only` also stops SUPER users. MariaDB has only
//! `read_only`, which users with SUPER or READ_ONLY ADMIN bypass; so demotion kills every
//! client session after setting read_only, and application users must not hold SUPER.

use mmm_common::proto::{Position, Replication, ServerKind};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("{op}: MySQL error {code}: {message}")]
    Server {
        op: String,
        code: u16,
        message: String,
    },
    #[error("{op}")]
    Client {
        op: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{op}: no answer within {timeout:?}")]
    Timeout { op: String, timeout: Duration },
    #[error("{op}: {reason}")]
    Unexpected { op: String, reason: String },
}

impl MysqlError {
    fn from_driver(op: &str, e: mysql_async::Error) -> MysqlError {
        match e {
            mysql_async::Error::Server(s) => MysqlError::Server {
                op: op.into(),
                code: s.code,
                message: s.message,
            },
            source => MysqlError::Client {
                op: op.into(),
                source,
            },
        }
    }

    /// MySQL's error code, when the server gave one.
    pub fn code(&self) -> Option<u16> {
        match self {
            MysqlError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How a catch-up wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    Reached,
    TimedOut,
}

/// One reused connection to the local server.
/// Set while the agent holds this server's semi-sync master wait off
/// ([`Mysql::suspend_semi_sync_master`]); shared by the action handler that suspends it and
/// the steps that must restore it (going writable, replicating again).
#[derive(Debug, Clone, Default)]
pub struct SemiSyncHold(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl SemiSyncHold {
    pub fn held(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Suspends the wait and remembers to restore it; returns whether it was on.
    pub async fn suspend(&self, mysql: &Mysql) -> Result<bool, MysqlError> {
        let was_on = mysql.suspend_semi_sync_master().await?;
        if was_on {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(was_on)
    }

    /// Restores the wait if this agent suspended it.
    pub async fn release(&self, mysql: &Mysql) -> Result<(), MysqlError> {
        if self.held() {
            mysql.restore_semi_sync_master().await?;
            self.0.store(false, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("semi-sync master wait restored");
        }
        Ok(())
    }
}

pub struct Mysql {
    opts: OptsBuilder,
    conn: Mutex<Option<Conn>>,
    /// Bound on ordinary statements.
    pub timeout: Duration,
}

/// Quotes a string literal for SQL (MySQL and MariaDB, default sql_mode).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

impl Mysql {
    pub fn new(host: &str, port: u16, user: &str, password: &str, timeout: Duration) -> Mysql {
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        Mysql {
            opts,
            conn: Mutex::new(None),
            timeout,
        }
    }

    /// Through a unix socket (`[agent] mysql_socket`).
    pub fn socket(path: &str, user: &str, password: &str, timeout: Duration) -> Mysql {
        let opts = OptsBuilder::default()
            .socket(Some(path))
            .user(Some(user))
            .pass(Some(password));
        Mysql {
            opts,
            conn: Mutex::new(None),
            timeout,
        }
    }

    /// Runs `f` on the connection (connecting first if needed), bounded by `bound`.
    async fn with<T, F, Fut>(&self, op: &str, bound: Duration, f: F) -> Result<T, MysqlError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, mysql_async::Error>)>,
    {
        let mut slot = self.conn.lock().await;
        let work = async {
            let conn = match slot.take() {
                Some(c) => c,
                None => Conn::new(self.opts.clone())
                    .await
                    .map_err(|e| MysqlError::from_driver(op, e))?,
            };
            let (conn, result) = f(conn).await;
            Ok::<_, MysqlError>((conn, result))
        };
        match tokio::time::timeout(bound, work).await {
            Err(_elapsed) => Err(MysqlError::Timeout {
                op: op.into(),
                timeout: bound,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok((conn, result))) => match result {
                Ok(v) => {
                    *slot = Some(conn);
                    Ok(v)
                }
                Err(e) => {
                    // A server error leaves the connection usable; anything else does not.
                    if matches!(e, mysql_async::Error::Server(_)) {
                        *slot = Some(conn);
                    }
                    Err(MysqlError::from_driver(op, e))
                }
            },
        }
    }

    async fn exec(&self, op: &str, sql: String) -> Result<(), MysqlError> {
        self.exec_bounded(op, sql, self.timeout).await
    }

    /// Whether an error means the reused connection had been closed (a KILL, a server
    /// restart): the statement never ran and one retry on a new connection is safe.
    fn stale(e: &MysqlError) -> bool {
        matches!(
            e,
            MysqlError::Client {
                source: mysql_async::Error::Io(_),
                ..
            }
        )
    }

    async fn exec_bounded(&self, op: &str, sql: String, bound: Duration) -> Result<(), MysqlError> {
        let run = |sql: String| {
            self.with(op, bound, |mut c| async move {
                let r = c.query_drop(sql).await;
                (c, r)
            })
        };
        match run(sql.clone()).await {
            Err(e) if Self::stale(&e) => run(sql).await,
            other => other,
        }
    }

    async fn rows(&self, op: &str, sql: String) -> Result<Vec<Row>, MysqlError> {
        let run = |sql: String| {
            self.with(op, self.timeout, |mut c| async move {
                let r = c.query::<Row, _>(sql).await;
                (c, r)
            })
        };
        match run(sql.clone()).await {
            Err(e) if Self::stale(&e) => run(sql).await,
            other => other,
        }
    }

    async fn value<T: mysql_async::prelude::FromValue + Send + 'static>(
        &self,
        op: &str,
        sql: String,
        bound: Duration,
    ) -> Result<Option<T>, MysqlError> {
        let run = |sql: String| {
            self.with(op, bound, |mut c| async move {
                let r = c
                    .query_first::<Option<T>, _>(sql)
                    .await
                    .map(Option::flatten);
                (c, r)
            })
        };
        // A connection left from before a restart of mysqld fails once: that is no reason
        // to judge the server unknown (and force read_only and a session kill).
        match run(sql.clone()).await {
            Err(e) if Self::stale(&e) => run(sql).await,
            other => other,
        }
    }

    pub async fn ping(&self) -> Result<(), MysqlError> {
        self.exec("pinging mysqld", "DO 1".into()).await
    }

    pub async fn server_kind(&self) -> Result<ServerKind, MysqlError> {
        let v: Option<String> = self
            .value(
                "reading the server version",
                "SELECT VERSION()".into(),
                self.timeout,
            )
            .await?;
        Ok(match v {
            Some(v) if v.contains("MariaDB") => ServerKind::MariaDb,
            Some(_) => ServerKind::MySql,
            None => ServerKind::Unknown,
        })
    }

    pub async fn read_only(&self) -> Result<bool, MysqlError> {
        let v: Option<i64> = self
            .value(
                "reading read_only",
                "SELECT @@GLOBAL.read_only".into(),
                self.timeout,
            )
            .await?;
        Ok(v.unwrap_or(0) != 0)
    }

    /// Sets read_only (and super_read_only on MySQL, where it exists).
    pub async fn set_read_only(&self, kind: ServerKind, on: bool) -> Result<(), MysqlError> {
        let op = if on {
            "setting read_only = 1"
        } else {
            "setting read_only = 0"
        };
        match (kind, on) {
            (ServerKind::MySql, true) => {
                self.exec(op, "SET GLOBAL super_read_only = 1".into()).await
            }
            (ServerKind::MySql, false) => {
                self.exec(op, "SET GLOBAL super_read_only = 0".into())
                    .await?;
                self.exec(op, "SET GLOBAL read_only = 0".into()).await
            }
            (_, on) => {
                self.exec(op, format!("SET GLOBAL read_only = {}", on as u8))
                    .await
            }
        }
    }

    /// Locks (or unlocks) the accounts matching `patterns` (SQL LIKE), except `spare`,
    /// without binary logging: the lock is this server's own affair, and logged it would
    /// replicate to the new master (or be an errant transaction). Returns how many.
    pub async fn lock_accounts(
        &self,
        patterns: &[String],
        spare: &[String],
        lock: bool,
    ) -> Result<usize, MysqlError> {
        if patterns.is_empty() {
            return Ok(0);
        }
        let matching = patterns
            .iter()
            .map(|p| format!("User LIKE {}", quote(p)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let rows = self
            .rows(
                "listing the accounts of block_users",
                format!("SELECT User, Host FROM mysql.user WHERE {matching}"),
            )
            .await?;
        let statements: Vec<String> = rows
            .into_iter()
            .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<String, _>(1)?)))
            .filter(|(u, _)| !spare.contains(u))
            .map(|(u, h)| {
                format!(
                    "ALTER USER {}@{} ACCOUNT {}",
                    quote(&u),
                    quote(&h),
                    if lock { "LOCK" } else { "UNLOCK" }
                )
            })
            .collect();
        let n = statements.len();
        if n == 0 {
            return Ok(0);
        }
        let op = if lock {
            "locking the accounts of block_users"
        } else {
            "unlocking the accounts of block_users"
        };
        self.with(op, self.timeout, |mut c| async move {
            let mut r = c.query_drop("SET SESSION sql_log_bin = 0").await;
            for s in statements {
                if r.is_ok() {
                    r = c.query_drop(s).await;
                }
            }
            let reset = c.query_drop("SET SESSION sql_log_bin = 1").await;
            (c, r.and(reset))
        })
        .await?;
        Ok(n)
    }

    /// Kills client sessions (not system or replication threads, nor sessions of `spare`
    /// users: the agent's own other connections and the monitor's checks), repeating up
    /// to `max_retries` times while new ones appear. Returns how many were killed.
    pub async fn kill_sessions(
        &self,
        max_retries: u32,
        spare: &[String],
    ) -> Result<u32, MysqlError> {
        let mut killed = 0;
        for _ in 0..max_retries.max(1) {
            let rows = self
                .rows(
                    "listing client sessions",
                    "SELECT ID, USER, COMMAND FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()".into(),
                )
                .await?;
            let victims: Vec<u64> = rows
                .into_iter()
                .filter_map(|mut r| {
                    let id: u64 = r.take_opt(0)?.ok()?;
                    let user: String = r
                        .take_opt::<Option<String>, _>(1)?
                        .ok()?
                        .unwrap_or_default();
                    let command: String = r
                        .take_opt::<Option<String>, _>(2)?
                        .ok()?
                        .unwrap_or_default();
                    (is_client_session(&user, &command) && !spare.contains(&user)).then_some(id)
                })
                .collect();
            if victims.is_empty() {
                return Ok(killed);
            }
            for id in victims {
                match self
                    .exec("killing a client session", format!("KILL CONNECTION {id}"))
                    .await
                {
                    Ok(()) => killed += 1,
                    // 1094: unknown thread id, it ended by itself meanwhile.
                    Err(e) if e.code() == Some(1094) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(killed)
    }

    /// Replication state from SHOW SLAVE STATUS; `None` when the server is no replica.
    pub async fn replication(&self) -> Result<Option<Replication>, MysqlError> {
        let rows = self
            .rows("reading replication status", "SHOW SLAVE STATUS".into())
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let text = |names: &[&str]| -> String {
            names
                .iter()
                .find_map(|n| {
                    row.get_opt::<Option<String>, _>(*n)
                        .and_then(Result::ok)
                        .flatten()
                })
                .unwrap_or_default()
        };
        let host = text(&["Master_Host", "Source_Host"]);
        let port = text(&["Master_Port", "Source_Port"]).parse().unwrap_or(0);
        let behind = text(&["Seconds_Behind_Master", "Seconds_Behind_Source"]);
        let io = text(&["Slave_IO_Running", "Replica_IO_Running"]);
        let sql = text(&["Slave_SQL_Running", "Replica_SQL_Running"]);
        let last_error = [text(&["Last_IO_Error"]), text(&["Last_SQL_Error"])]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if host.is_empty() {
            return Ok(None);
        }
        Ok(Some(Replication {
            source_host: host,
            source_port: port,
            io_running: io == "Yes",
            sql_running: sql == "Yes",
            seconds_behind: behind.parse().ok(),
            last_error,
        }))
    }

    /// The executed GTID set, empty when the server has none. MariaDB: gtid_binlog_state,
    /// one entry per domain *and server*, which tells errant transactions apart exactly
    /// (needs log_slave_updates, as every mmm topology has); MySQL: gtid_executed.
    pub async fn gtid_executed(&self, kind: ServerKind) -> Result<String, MysqlError> {
        let sql = match kind {
            ServerKind::MariaDb => "SELECT @@GLOBAL.gtid_binlog_state",
            _ => "SELECT @@GLOBAL.gtid_executed",
        };
        Ok(self
            .value::<String>("reading the executed GTID set", sql.into(), self.timeout)
            .await?
            .unwrap_or_default())
    }

    /// This server's own binary log position.
    pub async fn binlog_position(&self) -> Result<Option<(String, u64)>, MysqlError> {
        let rows = self
            .rows("reading the binlog position", "SHOW MASTER STATUS".into())
            .await?;
        Ok(rows.into_iter().next().and_then(|r| {
            let file: String = r.get_opt(0)?.ok()?;
            let pos: u64 = r.get_opt(1)?.ok()?;
            Some((file, pos))
        }))
    }

    /// Waits until the SQL thread has applied `target`, or everything the IO thread has
    /// received when `None`, for at most `deadline`.
    pub async fn catch_up(
        &self,
        kind: ServerKind,
        target: Option<Position>,
        deadline: Duration,
    ) -> Result<CatchUp, MysqlError> {
        let secs = deadline.as_secs_f64();
        // "Applied what it received" is the target without one, and for slave_pos.
        let target = match target {
            Some(Position::GtidSlavePos) | None => self.received_position(kind).await?,
            Some(t) => t,
        };
        let sql = match (&target, kind) {
            (Position::Gtid(set), ServerKind::MariaDb) => {
                format!("SELECT MASTER_GTID_WAIT({}, {secs})", quote(set))
            }
            (Position::Gtid(set), _) => {
                format!("SELECT WAIT_FOR_EXECUTED_GTID_SET({}, {secs})", quote(set))
            }
            (Position::FilePos { file, pos }, _) => {
                format!("SELECT MASTER_POS_WAIT({}, {pos}, {secs})", quote(file))
            }
            (Position::GtidSlavePos, _) => {
                return Err(MysqlError::Unexpected {
                    op: "waiting for relay-log catch-up".into(),
                    reason: "the received position is never slave_pos".into(),
                })
            }
        };
        // The server enforces the deadline; ours is a backstop a little later.
        let bound = deadline + self.timeout;
        let r: Option<i64> = self
            .value("waiting for relay-log catch-up", sql, bound)
            .await?;
        Ok(match (&target, kind, r) {
            // MASTER_GTID_WAIT: 0 reached, -1 timeout. WAIT_FOR_EXECUTED_GTID_SET: 0 / 1.
            (Position::Gtid(_), _, Some(0)) => CatchUp::Reached,
            // MASTER_POS_WAIT: events waited for (>= 0), -1 timeout, NULL not a replica.
            (Position::FilePos { .. }, _, Some(n)) if n >= 0 => CatchUp::Reached,
            (_, _, None) => {
                return Err(MysqlError::Unexpected {
                    op: "waiting for relay-log catch-up".into(),
                    reason: "the server is not replicating (the wait returned NULL)".into(),
                })
            }
            _ => CatchUp::TimedOut,
        })
    }

    /// What the IO thread has received: the point "fully caught up" refers to.
    async fn received_position(&self, kind: ServerKind) -> Result<Position, MysqlError> {
        let op = "reading the received replication position";
        let rows = self.rows(op, "SHOW SLAVE STATUS".into()).await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| MysqlError::Unexpected {
                op: op.into(),
                reason: "the server is not a replica".into(),
            })?;
        let get = |n: &str| {
            row.get_opt::<Option<String>, _>(n)
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_default()
        };
        let gtid = match kind {
            ServerKind::MariaDb => get("Gtid_IO_Pos"),
            _ => get("Retrieved_Gtid_Set"),
        };
        if !gtid.is_empty() {
            return Ok(Position::Gtid(gtid));
        }
        let file = get("Master_Log_File");
        let pos = get("Read_Master_Log_Pos").parse().unwrap_or(0);
        Ok(Position::FilePos { file, pos })
    }

    pub async fn stop_replication(&self, deadline: Duration) -> Result<(), MysqlError> {
        self.exec_bounded("stopping replication", "STOP SLAVE".into(), deadline)
            .await
    }

    pub async fn stop_io_thread(&self, deadline: Duration) -> Result<(), MysqlError> {
        self.exec_bounded(
            "stopping the replication IO thread",
            "STOP SLAVE IO_THREAD".into(),
            deadline,
        )
        .await
    }

    /// Turns the semi-sync master wait off when it is on; returns whether it was. For a
    /// server whose source is gone: with semi-sync both ways between the masters, the
    /// candidate's own semi-sync replica is the dead old master, and every transaction its
    /// SQL thread still applies would wait rpl_semi_sync_master_timeout for that replica's
    /// acknowledgement (measured: ~1 s of a kill -9 failover in 1 run of 20). Turning it
    /// off also releases a commit already waiting. [`restore_semi_sync_master`] turns it
    /// back on before the server takes writes or replicates again. Not applicable (false)
    /// on servers without the variable.
    pub async fn suspend_semi_sync_master(&self) -> Result<bool, MysqlError> {
        let op = "suspending the semi-sync master wait";
        let on: Option<i64> = match self
            .value(
                op,
                "SELECT @@GLOBAL.rpl_semi_sync_master_enabled".into(),
                self.timeout,
            )
            .await
        {
            Ok(v) => v,
            // ER_UNKNOWN_SYSTEM_VARIABLE: no semi-sync on this server.
            Err(MysqlError::Server { code: 1193, .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if on != Some(1) {
            return Ok(false);
        }
        self.exec(op, "SET GLOBAL rpl_semi_sync_master_enabled = 0".into())
            .await?;
        Ok(true)
    }

    /// Undoes [`suspend_semi_sync_master`].
    pub async fn restore_semi_sync_master(&self) -> Result<(), MysqlError> {
        self.exec(
            "restoring the semi-sync master wait",
            "SET GLOBAL rpl_semi_sync_master_enabled = 1".into(),
        )
        .await
    }

    pub async fn start_replication(&self, deadline: Duration) -> Result<(), MysqlError> {
        self.exec_bounded("starting replication", "START SLAVE".into(), deadline)
            .await
    }

    /// Re-points replication at `host:port` from `position`, then starts it.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_master(
        &self,
        kind: ServerKind,
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        position: &Position,
        deadline: Duration,
    ) -> Result<(), MysqlError> {
        self.stop_replication(deadline).await?;
        let mut sql = format!(
            "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {}, MASTER_PASSWORD = {}, MASTER_CONNECT_RETRY = 1",
            quote(host),
            quote(user),
            quote(password)
        );
        match (position, kind) {
            (Position::Gtid(_), ServerKind::MariaDb) => {
                // A server with transactions of its own (a former master) must offer its
                // whole history; under gtid_strict_mode an errant one then fails with
                // error 1950 instead of diverging silently.
                let slave_pos: Option<String> = self
                    .value(
                        "reading gtid_slave_pos",
                        "SELECT @@GLOBAL.gtid_slave_pos".into(),
                        self.timeout,
                    )
                    .await?;
                let current: Option<String> = self
                    .value(
                        "reading gtid_current_pos",
                        "SELECT @@GLOBAL.gtid_current_pos".into(),
                        self.timeout,
                    )
                    .await?;
                let current = current.unwrap_or_default();
                let mode = if slave_pos.unwrap_or_default() == current {
                    "slave_pos"
                } else {
                    "current_pos"
                };
                sql.push_str(&format!(", MASTER_USE_GTID = {mode}"));
            }
            (
                Position::Gtid(_) | Position::GtidSlavePos,
                ServerKind::MySql | ServerKind::Unknown,
            ) => sql.push_str(", MASTER_AUTO_POSITION = 1"),
            (Position::GtidSlavePos, ServerKind::MariaDb) => {
                sql.push_str(", MASTER_USE_GTID = slave_pos")
            }
            (Position::FilePos { file, pos }, ServerKind::MariaDb) => sql.push_str(&format!(
                ", MASTER_LOG_FILE = {}, MASTER_LOG_POS = {pos}, MASTER_USE_GTID = no",
                quote(file)
            )),
            (Position::FilePos { file, pos }, _) => sql.push_str(&format!(
                ", MASTER_LOG_FILE = {}, MASTER_LOG_POS = {pos}, MASTER_AUTO_POSITION = 0",
                quote(file)
            )),
        }
        self.exec_bounded("re-pointing replication (CHANGE MASTER)", sql, deadline)
            .await?;
        self.start_replication(deadline).await
    }
}

/// Sessions that demotion kills: everything but server threads, replication threads
/// (both directions) and the event scheduler.
fn is_client_session(user: &str, command: &str) -> bool {
    const SERVER_COMMANDS: &[&str] = &[
        "Binlog Dump",
        "Binlog Dump GTID",
        "Daemon",
        "Slave_IO",
        "Slave_SQL",
        "Slave_worker",
        "Connect",
    ];
    !(user == "system user" || user == "event_scheduler" || SERVER_COMMANDS.contains(&command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote("a\\b"), "'a\\\\b'");
        assert_eq!(quote("nul\0"), "'nul\\0'");
    }

    #[test]
    fn only_client_sessions_are_killed() {
        assert!(is_client_session("app", "Query"));
        assert!(is_client_session("app", "Sleep"));
        assert!(!is_client_session("system user", "Query"));
        assert!(!is_client_session("repl", "Binlog Dump GTID"));
        assert!(!is_client_session("event_scheduler", "Daemon"));
        assert!(!is_client_session("system user", "Slave_SQL"));
    }
}
