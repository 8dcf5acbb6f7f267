//! read_only: reading it, setting it, and lifting it, the one statement that makes this
//! server a writer. A lift whose outcome is unknown is kept in [`Grants`] until the server
//! answers again and its thread is ended through a second connection.

use crate::clock::Boot;
use mmm_common::sql;
use mysql_async::prelude::Queryable;
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;

use super::{Mysql, MysqlError};

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

impl Mysql {
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
}
