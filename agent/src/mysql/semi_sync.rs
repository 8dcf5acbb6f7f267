//! The semi-sync master wait: suspended so a writer being demoted does not block on
//! replicas that are gone, and restored (across agent restarts too) before it writes again.

use super::{Mysql, MysqlError};

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

impl Mysql {
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
}
