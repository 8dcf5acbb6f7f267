//! Demotion's statements on client sessions: locking the blocked accounts and killing
//! every client session (MariaDB's read_only does not stop SUPER users).

use mmm_common::sql::quote;
use mysql_async::prelude::Queryable;

use super::{Mysql, MysqlError};

impl Mysql {
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
