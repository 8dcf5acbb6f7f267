//! The agent's MySQL/MariaDB actions, through mysql_async with the agent user. Every call
//! is bounded: a call that exceeds its bound drops the connection (it may be stuck in the
//! server, e.g. STOP SLAVE while the IO thread connects to a vanished master) and reports
//! a timeout; the next call reconnects.
//!
//! Every statement comes from the [`Dialect`] detected when the connection opened, so the
//! same code drives MariaDB and MySQL 5.7 to 8.4.
//!
//! Lifting read_only is the one statement that makes this server a writer, and a timed-out
//! one may still run: a server that hung (SIGSTOP, a stuck disk) with it in its socket
//! runs it when it wakes up, after the agent gave up on it and long after the monitor may
//! have moved the writer elsewhere. So it is sent only after its permit was checked on a
//! ready connection ([`Mysql::lift_read_only`]), it carries its own deadline (the server
//! ignores it past the lease that allowed it), and one whose outcome is unknown is kept in
//! [`Grants`] until the server answers again and its thread is gone
//! ([`Mysql::end_thread`]).
//!
//! Read-only: on MySQL `super_read_only` also stops SUPER users. MariaDB has only
//! `read_only`, which users with SUPER or READ_ONLY ADMIN bypass; so demotion kills every
//! client session after setting read_only, and application users must not hold SUPER.

use crate::clock::Boot;
use mmm_common::proto::{Position, Replication, ServerKind};
use mmm_common::sql::{
    self, quote, ChangeSource, Dialect, DialectError, GtidStart, ReplicaStatus, SourceStart,
};
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
    #[error("{op}")]
    Dialect {
        op: String,
        #[source]
        source: DialectError,
    },
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

    /// Nothing listens: the connection was refused (or the socket file is gone). No
    /// server process holds anything to run, unlike one that does not answer.
    pub fn refused(&self) -> bool {
        let MysqlError::Client {
            source: mysql_async::Error::Io(mysql_async::IoError::Io(e)),
            ..
        } = self
        else {
            return false;
        };
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        )
    }
}

/// How a catch-up wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    Reached,
    TimedOut,
    /// Nothing to catch up on: the server replicates from nobody (or its SQL thread is
    /// stopped, so nothing it received will be applied).
    NotReplica,
}

/// Set while the agent holds this server's semi-sync master wait off
/// ([`Mysql::suspend_semi_sync_master`]); shared by the action handler that suspends it and
/// the step that must restore it (going writable; replicating again after an isolation).
///
/// Kept on disk too (`<state_dir>/<host>.semisync-held`), written before the wait is
/// suspended and removed after it is restored: an agent restarted in between still
/// restores it when the server goes writable, instead of leaving a new writer whose
/// acknowledged commits no replica has confirmed.
#[derive(Debug, Clone, Default)]
pub struct SemiSyncHold {
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    marker: Option<std::sync::Arc<std::path::PathBuf>>,
}

impl SemiSyncHold {
    /// The hold of `host`, resumed from its marker in `state_dir` if a previous agent
    /// left one.
    pub fn persisted(state_dir: &std::path::Path, host: &str) -> SemiSyncHold {
        let marker = state_dir.join(format!("{host}.semisync-held"));
        let held = marker.exists();
        if held {
            tracing::warn!(marker = %marker.display(), "resuming a semi-sync master wait a previous agent suspended: it is restored when this server goes writable");
        }
        SemiSyncHold {
            held: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(held)),
            marker: Some(std::sync::Arc::new(marker)),
        }
    }

    pub fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Suspends the wait and remembers to restore it; returns whether it was on. Without
    /// a marker on disk it is not suspended at all: saving a second is not worth a writer
    /// left without semi-sync.
    pub async fn suspend(&self, mysql: &Mysql) -> Result<bool, MysqlError> {
        if let Some(marker) = &self.marker {
            if let Err(e) = std::fs::write(marker.as_path(), b"held\n") {
                tracing::warn!(marker = %marker.display(), error = %e, "semi-sync master wait left on: its hold cannot be recorded");
                return Ok(false);
            }
        }
        let was_on = mysql.suspend_semi_sync_master().await;
        match was_on {
            Ok(true) => {
                self.held.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(true)
            }
            other => {
                // Nothing suspended (it was off, or the statement failed): no hold.
                if !self.held() {
                    self.remove_marker();
                }
                other
            }
        }
    }

    /// Restores the wait if this agent (or the one before it) suspended it.
    pub async fn release(&self, mysql: &Mysql) -> Result<(), MysqlError> {
        if self.held() {
            mysql.restore_semi_sync_master().await?;
            self.held.store(false, std::sync::atomic::Ordering::SeqCst);
            self.remove_marker();
            tracing::info!("semi-sync master wait restored");
        }
        Ok(())
    }

    fn remove_marker(&self) {
        if let Some(marker) = &self.marker {
            if let Err(e) = std::fs::remove_file(marker.as_path()) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(marker = %marker.display(), error = %e, "semi-sync hold marker not removed");
                }
            }
        }
    }
}

/// A lift of read_only in flight, or one whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The server's id of the connection that carried it (its CONNECTION_ID(), which the
    /// handshake tells): the thread to kill when the server answers again.
    pub connection: u32,
    /// From this instant on the server runs it as a no-op (its deadline, SYSDATE).
    pub until: Boot,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum GrantState {
    #[default]
    Idle,
    InFlight(Grant),
    /// Timed out, or its connection broke before the answer: it may run whenever the
    /// server reads it.
    Unresolved(Grant),
}

/// The lifts of read_only whose outcome is not known yet, shared by the connection that
/// sends them and the one that ends them when a hung server answers again; and whether
/// the server stopped answering while it may be writable.
#[derive(Debug, Default)]
pub struct Grants {
    state: std::sync::Mutex<GrantState>,
    hung_writable: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
    /// Held while a lift is decided and sent, and while a woken server is made read-only
    /// again: neither lands between the other's check and its statement.
    serial: Mutex<()>,
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, GrantState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a lift of read_only may still take effect: one in flight, or one whose
    /// outcome is unknown and whose deadline has not passed.
    pub fn may_still_run(&self) -> bool {
        match *self.lock() {
            GrantState::Idle => false,
            GrantState::InFlight(_) => true,
            GrantState::Unresolved(g) => Boot::now() < g.until,
        }
    }

    /// A lift whose outcome is unknown, if there is one.
    pub fn unresolved(&self) -> Option<Grant> {
        match *self.lock() {
            GrantState::Unresolved(g) => Some(g),
            _ => None,
        }
    }

    /// `grant`'s thread is gone: nothing of it can run any more.
    pub fn resolve(&self, grant: Grant) {
        let mut state = self.lock();
        if *state == GrantState::Unresolved(grant) {
            *state = GrantState::Idle;
        }
    }

    /// The server does not answer and may be writable (`true`), or answers again.
    pub fn set_hung_writable(&self, stalled: bool) {
        let was = self
            .hung_writable
            .swap(stalled, std::sync::atomic::Ordering::SeqCst);
        if stalled && !was {
            self.changed.notify_one();
        }
    }

    pub fn hung_writable(&self) -> bool {
        self.hung_writable.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once there is something to do when the server answers again: a lift whose
    /// outcome is unknown, or a server that stopped answering while it may be writable.
    pub async fn wanted(&self) {
        loop {
            let notified = self.changed.notified();
            if self.unresolved().is_some() || self.hung_writable() {
                return;
            }
            notified.await;
        }
    }

    /// Held while a woken server is made read-only again (see the field).
    pub async fn serial(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.serial.lock().await
    }

    fn begin(&self, grant: Grant) {
        *self.lock() = GrantState::InFlight(grant);
    }

    /// The server answered `grant` (applied, refused, or a no-op past its deadline).
    fn answered(&self, grant: Grant) {
        let mut state = self.lock();
        if *state == GrantState::InFlight(grant) {
            *state = GrantState::Idle;
        }
    }

    /// A lift still in flight when its call returned got no answer: it may run later.
    fn abandon(&self) -> Option<Grant> {
        let mut state = self.lock();
        let GrantState::InFlight(g) = *state else {
            return None;
        };
        *state = GrantState::Unresolved(g);
        drop(state);
        self.changed.notify_one();
        Some(g)
    }
}

/// One reused connection to the local server.
pub struct Mysql {
    opts: OptsBuilder,
    /// The connection and the dialect its server speaks, detected when it opened.
    conn: Mutex<Option<(Conn, Dialect)>>,
    /// Bound on ordinary statements.
    pub timeout: Duration,
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

    /// Opens a connection and learns its server's dialect.
    async fn connect(&self, op: &str) -> Result<(Conn, Dialect), MysqlError> {
        let mut conn = Conn::new(self.opts.clone())
            .await
            .map_err(|e| MysqlError::from_driver(op, e))?;
        let (version, comment) = conn
            .query_first::<(Option<String>, Option<String>), _>(sql::DETECT)
            .await
            .map_err(|e| MysqlError::from_driver(op, e))?
            .unwrap_or_default();
        let dialect = Dialect::detect(
            version.as_deref().unwrap_or_default(),
            comment.as_deref().unwrap_or_default(),
        )
        .map_err(|source| MysqlError::Dialect {
            op: op.into(),
            source,
        })?;
        Ok((conn, dialect))
    }

    /// Runs `f` on the connection (connecting first if needed), bounded by `bound`.
    async fn with<T, F, Fut>(&self, op: &str, bound: Duration, f: F) -> Result<T, MysqlError>
    where
        F: FnOnce(Conn, Dialect) -> Fut,
        Fut: Future<Output = (Conn, Result<T, mysql_async::Error>)>,
    {
        let mut slot = self.conn.lock().await;
        let work = async {
            let (conn, dialect) = match slot.take() {
                Some(session) => session,
                None => self.connect(op).await?,
            };
            let (conn, result) = f(conn, dialect).await;
            Ok::<_, MysqlError>((conn, dialect, result))
        };
        match tokio::time::timeout(bound, work).await {
            Err(_elapsed) => Err(MysqlError::Timeout {
                op: op.into(),
                timeout: bound,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok((conn, dialect, result))) => match result {
                Ok(v) => {
                    *slot = Some((conn, dialect));
                    Ok(v)
                }
                Err(e) => {
                    // A server error leaves the connection usable; anything else does not.
                    if matches!(e, mysql_async::Error::Server(_)) {
                        *slot = Some((conn, dialect));
                    }
                    Err(MysqlError::from_driver(op, e))
                }
            },
        }
    }

    /// The dialect of the server, connecting first if needed. A connection that turns out
    /// stale is replaced by the statement that finds out, and the dialect detected again.
    async fn dialect(&self, op: &str) -> Result<Dialect, MysqlError> {
        self.with(op, self.timeout, |c, d| async move { (c, Ok(d)) })
            .await
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
            self.with(op, bound, |mut c, _| async move {
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
            self.with(op, self.timeout, |mut c, _| async move {
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
            self.with(op, bound, |mut c, _| async move {
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

    /// The server family, as the connection's dialect has it. Asks mysqld first: callers
    /// also learn from this whether it answers.
    pub async fn server_kind(&self) -> Result<ServerKind, MysqlError> {
        self.ping().await?;
        Ok(match self.dialect("reading the server version").await? {
            Dialect::MariaDb => ServerKind::MariaDb,
            Dialect::MySql(_) => ServerKind::MySql,
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

    /// Sets read_only (and super_read_only on MySQL, where it exists). Lifting it is
    /// [`Mysql::lift_read_only`]'s alone.
    pub async fn make_read_only(&self) -> Result<(), MysqlError> {
        let op = "setting read_only = 1";
        for statement in self.dialect(op).await?.set_read_only(true) {
            self.exec(op, statement).await?;
        }
        Ok(())
    }

    /// Lifts read_only (super_read_only too where it exists), if `authorize` still allows
    /// it once a connection is ready: it is asked right before the statements leave, and
    /// returns how long the permit runs (or why there is none, returned as is). The
    /// statements carry that deadline, at most this call's own bound: the server runs
    /// them as no-ops from then on, so one that waits in a hung server's socket cannot
    /// make it writable after its permit. One that gets no answer is kept in `grants`.
    pub async fn lift_read_only<R, F, Fut>(
        &self,
        grants: &Grants,
        authorize: F,
    ) -> Result<Result<(), R>, MysqlError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Duration, R>>,
    {
        let op = "setting read_only = 0";
        let _serial = grants.serial.lock().await;
        // A pooled connection that broke (a restarted mysqld) fails here, not with the
        // lift in flight, where a broken connection leaves its outcome unknown.
        self.ping().await?;
        let bound = self.timeout;
        let result = self
            .with(op, bound, |mut c, dialect| async move {
                if let Err(e) = c.query_drop(sql::UTC_SESSION).await {
                    return (c, Err(e));
                }
                let left = match authorize().await {
                    Ok(left) => left,
                    Err(refused) => return (c, Ok(Err(refused))),
                };
                let within = left.min(bound);
                let until = std::time::SystemTime::now() + within;
                let until_us = until
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros()
                    .min(u128::from(u64::MAX)) as u64;
                let grant = Grant {
                    connection: c.id(),
                    until: Boot::now().after(within),
                };
                grants.begin(grant);
                let mut sent = Ok(());
                for statement in dialect.lift_read_only_before(until_us) {
                    sent = c.query_drop(statement).await;
                    if sent.is_err() {
                        break;
                    }
                }
                if matches!(sent, Ok(()) | Err(mysql_async::Error::Server(_))) {
                    grants.answered(grant);
                }
                (c, sent.map(Ok))
            })
            .await;
        if let Some(g) = grants.abandon() {
            tracing::warn!(
                connection = g.connection,
                "lifting read_only got no answer: it may still run when the server reads it; its thread is killed when the server answers again"
            );
        }
        result
    }

    /// Waits up to `patience` for the server to answer. A connection attempt to a hung
    /// server waits for its greeting, and completes the moment the server wakes up.
    pub async fn answer(&self, patience: Duration) -> Result<(), MysqlError> {
        self.exec_bounded("waiting for mysqld to answer", "DO 1".into(), patience)
            .await
    }

    /// Kills connection `id`'s thread and waits, at most `within`, until the server no
    /// longer lists it: a statement of it that has not run by then never will. False when
    /// it was still listed at the end.
    pub async fn end_thread(&self, id: u32, within: Duration) -> Result<bool, MysqlError> {
        match self
            .exec(
                "killing a stale connection",
                format!("KILL CONNECTION {id}"),
            )
            .await
        {
            // 1094: unknown thread id, it ended by itself.
            Err(e) if e.code() == Some(1094) => return Ok(true),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let listed: Option<i64> = self
                .value(
                    "waiting for a killed connection to end",
                    format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}"),
                    self.timeout,
                )
                .await?;
            if listed.unwrap_or(0) == 0 {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
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
        self.with(op, self.timeout, |mut c, _| async move {
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

    /// The replica status row, under whichever column names the server uses; `None` when
    /// the server is no replica.
    async fn replica_status(&self, op: &str) -> Result<Option<ReplicaStatus>, MysqlError> {
        let statement = self.dialect(op).await?.show_replica_status();
        let rows = self.rows(op, statement).await?;
        Ok(rows.into_iter().next().map(|row| status_of(&row)))
    }

    /// Replication state from the replica status; `None` when the server is no replica.
    pub async fn replication(&self) -> Result<Option<Replication>, MysqlError> {
        let Some(status) = self.replica_status("reading replication status").await? else {
            return Ok(None);
        };
        let host = status.source_host.clone().unwrap_or_default();
        if host.is_empty() {
            return Ok(None);
        }
        Ok(Some(Replication {
            source_host: host,
            source_port: status.source_port.unwrap_or(0),
            io_running: status.io_running.as_deref() == Some("Yes"),
            sql_running: status.sql_running.as_deref() == Some("Yes"),
            seconds_behind: status.seconds_behind.and_then(|s| u32::try_from(s).ok()),
            last_error: status.last_error(),
        }))
    }

    /// The executed GTID set, empty when the server has none (see
    /// [`Dialect::executed_gtid_set`] for which variable).
    pub async fn gtid_executed(&self) -> Result<String, MysqlError> {
        let op = "reading the executed GTID set";
        let statement = self.dialect(op).await?.executed_gtid_set();
        Ok(self
            .value::<String>(op, statement.into(), self.timeout)
            .await?
            .unwrap_or_default())
    }

    /// This server's own binary log position.
    pub async fn binlog_position(&self) -> Result<Option<(String, u64)>, MysqlError> {
        let op = "reading the binlog position";
        let statement = self.dialect(op).await?.show_binlog_status();
        let rows = self.rows(op, statement.into()).await?;
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
        target: Option<Position>,
        deadline: Duration,
    ) -> Result<CatchUp, MysqlError> {
        let op = "waiting for relay-log catch-up";
        // "Applied what it received" is the target without one, and for slave_pos.
        let target = match target {
            Some(Position::GtidSlavePos) | None => match self.received_position().await? {
                Some(p) => p,
                None => return Ok(CatchUp::NotReplica),
            },
            Some(t) => t,
        };
        let sql = self
            .dialect(op)
            .await?
            .wait_for(&target, deadline.as_secs_f64())
            .ok_or_else(|| MysqlError::Unexpected {
                op: op.into(),
                reason: "the received position is never slave_pos".into(),
            })?;
        // The server enforces the deadline; ours is a backstop a little later.
        let bound = deadline + self.timeout;
        let r: Option<i64> = self.value(op, sql, bound).await?;
        Ok(match (&target, r) {
            // MASTER_GTID_WAIT: 0 reached, -1 timeout. WAIT_FOR_EXECUTED_GTID_SET: 0 / 1.
            (Position::Gtid(_), Some(0)) => CatchUp::Reached,
            // MASTER_POS_WAIT / SOURCE_POS_WAIT: events waited for (>= 0), -1 timeout,
            // NULL not a replica.
            (Position::FilePos { .. }, Some(n)) if n >= 0 => CatchUp::Reached,
            // NULL: replication is not configured or its SQL thread does not run.
            (_, None) => CatchUp::NotReplica,
            _ => CatchUp::TimedOut,
        })
    }

    /// What the IO thread has received: the point "fully caught up" refers to.
    /// `None`: the server is no replica.
    async fn received_position(&self) -> Result<Option<Position>, MysqlError> {
        let op = "reading the received replication position";
        let Some(status) = self.replica_status(op).await? else {
            return Ok(None);
        };
        Ok(Some(match status.received_gtids {
            Some(gtid) if !gtid.is_empty() => Position::Gtid(gtid),
            _ => Position::FilePos {
                file: status.source_log_file.unwrap_or_default(),
                pos: status.read_source_log_pos.unwrap_or(0),
            },
        }))
    }

    pub async fn stop_replication(&self, deadline: Duration) -> Result<(), MysqlError> {
        let op = "stopping replication";
        let statement = self.dialect(op).await?.stop_replication();
        self.exec_bounded(op, statement, deadline).await
    }

    pub async fn stop_io_thread(&self, deadline: Duration) -> Result<(), MysqlError> {
        let op = "stopping the replication IO thread";
        let statement = self.dialect(op).await?.stop_io_thread();
        self.exec_bounded(op, statement, deadline).await
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
        let Some((variable, on)) = self.semi_sync_variable(op).await? else {
            return Ok(false);
        };
        if on != Some(1) {
            return Ok(false);
        }
        self.exec(op, format!("SET GLOBAL {variable} = 0")).await?;
        Ok(true)
    }

    /// Undoes [`suspend_semi_sync_master`], on the first candidate variable the server
    /// knows (the plugin [`suspend_semi_sync_master`] found).
    pub async fn restore_semi_sync_master(&self) -> Result<(), MysqlError> {
        let op = "restoring the semi-sync master wait";
        let candidates = self.dialect(op).await?.semi_sync_source_enabled();
        let mut last = None;
        for variable in candidates {
            match self.exec(op, format!("SET GLOBAL {variable} = 1")).await {
                // ER_UNKNOWN_SYSTEM_VARIABLE: the other plugin's name.
                Err(e @ MysqlError::Server { code: 1193, .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| MysqlError::Unexpected {
            op: op.into(),
            reason: "no semi-sync source variable is known for this server".into(),
        }))
    }

    /// The semi-sync source switch this server has, with its value; `None` without the
    /// plugin (no candidate variable exists).
    async fn semi_sync_variable(
        &self,
        op: &str,
    ) -> Result<Option<(&'static str, Option<i64>)>, MysqlError> {
        for variable in self.dialect(op).await?.semi_sync_source_enabled() {
            match self
                .value(op, format!("SELECT @@GLOBAL.{variable}"), self.timeout)
                .await
            {
                Ok(v) => return Ok(Some((variable, v))),
                // ER_UNKNOWN_SYSTEM_VARIABLE: not this plugin, or none.
                Err(MysqlError::Server { code: 1193, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    pub async fn start_replication(&self, deadline: Duration) -> Result<(), MysqlError> {
        let op = "starting replication";
        let statement = self.dialect(op).await?.start_replication();
        self.exec_bounded(op, statement, deadline).await
    }

    /// Re-points replication at `host:port` from `position`, then starts it.
    pub async fn change_master(
        &self,
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        position: &Position,
        deadline: Duration,
    ) -> Result<(), MysqlError> {
        self.stop_replication(deadline).await?;
        let op = "re-pointing replication";
        let dialect = self.dialect(op).await?;
        let start = match position {
            Position::Gtid(_) => SourceStart::Gtid(self.gtid_start(dialect).await?),
            Position::GtidSlavePos => SourceStart::Gtid(GtidStart::SlavePos),
            Position::FilePos { file, pos } => SourceStart::FilePos { file, pos: *pos },
        };
        let statement = dialect.change_source(&ChangeSource {
            host,
            port,
            user,
            password,
            connect_retry: 1,
            start,
        });
        self.exec_bounded(op, statement, deadline).await?;
        self.start_replication(deadline).await
    }

    /// Which of its GTID positions a MariaDB replica offers ([`GtidStart::choose`]);
    /// MySQL auto-positions and is not asked.
    async fn gtid_start(&self, dialect: Dialect) -> Result<GtidStart, MysqlError> {
        let Some([slave_pos, current_pos]) = dialect.gtid_positions() else {
            return Ok(GtidStart::SlavePos);
        };
        let slave_pos: Option<String> = self
            .value("reading gtid_slave_pos", slave_pos.into(), self.timeout)
            .await?;
        let current_pos: Option<String> = self
            .value("reading gtid_current_pos", current_pos.into(), self.timeout)
            .await?;
        Ok(GtidStart::choose(
            &slave_pos.unwrap_or_default(),
            &current_pos.unwrap_or_default(),
        ))
    }
}

/// A replica status row as (column name, text) pairs for [`ReplicaStatus`].
fn status_of(row: &Row) -> ReplicaStatus {
    ReplicaStatus::from_columns(row.columns_ref().iter().enumerate().map(|(i, c)| {
        let value = row
            .get_opt::<Option<String>, _>(i)
            .and_then(Result::ok)
            .flatten();
        (c.name_str(), value)
    }))
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
    fn only_client_sessions_are_killed() {
        assert!(is_client_session("app", "Query"));
        assert!(is_client_session("app", "Sleep"));
        assert!(!is_client_session("system user", "Query"));
        assert!(!is_client_session("repl", "Binlog Dump GTID"));
        assert!(!is_client_session("event_scheduler", "Daemon"));
        assert!(!is_client_session("system user", "Slave_SQL"));
    }
}
