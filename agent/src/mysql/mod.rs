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

//!
//! This module holds the connection and its bounds; the statements are grouped by concern:
//! `read_only` (and the lifts whose outcome is unknown), `sessions` (locking accounts,
//! killing client sessions), `replication`, `semi_sync`.

use mmm_common::mysql::{ConnectError, Target};
use mmm_common::proto::ServerKind;
use mmm_common::sql::{self, Dialect, DialectError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;

mod read_only;
mod replication;
mod semi_sync;
mod sessions;

pub use read_only::{Grant, Grants};
pub use replication::CatchUp;
pub use semi_sync::SemiSyncHold;

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
    #[error("{op}")]
    Connect {
        op: String,
        /// Boxed: every step's error carries this type, and a connection's is large.
        #[source]
        source: Box<ConnectError>,
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
            MysqlError::Connect { source, .. } => match source.driver() {
                Some(mysql_async::Error::Server(s)) => Some(s.code),
                _ => None,
            },
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

/// One reused connection to the local server.
pub struct Mysql {
    target: Target,
    /// The connection and the dialect its server speaks, detected when it opened.
    conn: Mutex<Option<(Conn, Dialect)>>,
    /// Bound on ordinary statements.
    pub timeout: Duration,
}

impl Mysql {
    pub fn new(target: Target, timeout: Duration) -> Mysql {
        Mysql {
            target,
            conn: Mutex::new(None),
            timeout,
        }
    }

    /// Opens a connection and learns its server's dialect.
    async fn connect(&self, op: &str) -> Result<(Conn, Dialect), MysqlError> {
        let mut conn = self
            .target
            .connect()
            .await
            .map_err(|source| MysqlError::Connect {
                op: op.into(),
                source: Box::new(source),
            })?;
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
}
