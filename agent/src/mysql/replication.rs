//! Replication: its status, the catch-up wait, stopping, starting and pointing it at a
//! new source.

use mmm_common::proto::{Position, Replication};
use mmm_common::sql::{ChangeSource, Dialect, GtidStart, ReplicaStatus, SourceStart};
use mysql_async::Row;
use std::time::Duration;

use super::{Mysql, MysqlError};

/// How a catch-up wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    Reached,
    TimedOut,
    /// Nothing to catch up on: the server replicates from nobody (or its SQL thread is
    /// stopped, so nothing it received will be applied).
    NotReplica,
}

impl Mysql {
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
