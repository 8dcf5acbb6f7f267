//! The monitor's actions (`Message::Action`): read_only forced or lifted and demotions go
//! through the reconciler; replication changes are serialized; each is bounded by the
//! request's deadline and answered with a typed outcome.

use crate::lease::Stamp;
use crate::mysql::CatchUp;
use crate::reconcile::error_chain;
use crate::reconciler::ReconcilerCommand;
use crate::server::Agent;
use mmm_common::proto::*;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::oneshot;

impl Agent {
    /// STOP SLAVE IO_THREAD with a prohibit route to the source meanwhile (crate::route):
    /// semi-sync's kill-connection to a vanished source fails at once instead of waiting
    /// for its timeout. Without the route (unknown source, no CAP_NET_ADMIN) the stop
    /// just takes longer.
    pub(crate) async fn stop_io_thread_of_vanished_source(
        &self,
        vanished: Ipv4Addr,
        deadline: Duration,
    ) -> Result<(), crate::mysql::MysqlError> {
        // Only while the server still replicates from it: a stop that arrives after a
        // re-point must not cut this host off from its new, live source.
        let source = self
            .status
            .borrow()
            .replication
            .as_ref()
            .and_then(|r| self.source_ip(&r.source_host))
            .filter(|ip| *ip == vanished && *ip != self.host.ip && !ip.is_loopback());
        let prohibited = match source {
            None => None,
            Some(ip) => match self.routes.prohibit(ip).await {
                Ok(true) => Some(ip),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(%ip, error = %error_chain(&e), "the IO thread's stop may wait for semi-sync's kill-connection");
                    // One that timed out may have been added all the same: removed after
                    // the stop too.
                    matches!(e, crate::route::RouteError::Timeout { .. }).then_some(ip)
                }
            },
        };
        let stopped = self.actions_mysql.stop_io_thread(deadline).await;
        if let Some(ip) = prohibited {
            if let Err(e) = self.routes.allow(ip).await {
                tracing::error!(%ip, error = %error_chain(&e), "this host cannot reach its old source until the route is removed (the agent removes it at its next start)");
            }
        }
        stopped
    }

    /// The IPv4 address of a replication source as SHOW SLAVE STATUS names it: an
    /// address, or a configured host's name.
    fn source_ip(&self, source_host: &str) -> Option<Ipv4Addr> {
        source_host.parse().ok().or_else(|| {
            self.config
                .hosts
                .iter()
                .find(|h| h.name == source_host)
                .map(|h| h.ip)
        })
    }

    /// Runs an order that came on `session`. An order read after a monitor of a later
    /// term connected (it waited in the deposed monitor's socket) is refused, here and
    /// again when the reconciler runs it (its stamp carries the session's term).
    pub(crate) async fn action(&self, session: u64, req: ActionRequest) -> ActionResult {
        let deadline = Duration::from_millis(req.deadline_ms.into());
        tracing::info!(action = ?req.action, ?deadline, "action requested");
        if !self.lease.term_leads(session) {
            let over = crate::lease::NotFollowed::TermOver;
            tracing::warn!(action = ?req.action, reason = %over, "monitor order refused");
            return failed(over.to_string());
        }
        let failures_to_result = |failures: Vec<String>| ActionResult {
            outcome: if failures.is_empty() {
                ActionOutcome::Ok
            } else {
                ActionOutcome::Failed
            },
            detail: failures.join("; "),
            position: None,
        };
        let via_reconciler =
            |make: fn(Stamp, oneshot::Sender<Vec<String>>) -> ReconcilerCommand| async move {
                let (tx, rx) = oneshot::channel();
                // Whatever the reconciler was doing for an older order is over.
                let stamp = match self.lease.supersede_for(session) {
                    Ok(stamp) => stamp,
                    Err(over) => return vec![over.to_string()],
                };
                if self.commands.send(make(stamp, tx)).await.is_err() {
                    return vec!["the reconciler stopped".to_string()];
                }
                match tokio::time::timeout(deadline, rx).await {
                    Ok(Ok(f)) => f,
                    Ok(Err(_dropped)) => vec!["the reconciler stopped".to_string()],
                    Err(_elapsed) => vec![format!("not done within {deadline:?}")],
                }
            };
        // STOP SLAVE IO_THREAD is not queued: it is sent when the source died, to be done
        // at once, and a re-point it interleaves with is simply retried by the monitor.
        let _serialized =
            match req.action {
                Action::ChangeMaster { .. }
                | Action::StopReplication
                | Action::StartReplication => {
                    match tokio::time::timeout(deadline, self.replication_changes.lock()).await {
                    Ok(guard) => Some(guard),
                    Err(_elapsed) => {
                        return ActionResult {
                            outcome: ActionOutcome::TimedOut,
                            detail: format!("another replication change on this server did not end within {deadline:?}"),
                            position: None,
                        }
                    }
                }
                }
                _ => None,
            };
        // A later term may have connected while this order waited for the lock: a deposed
        // leader's re-point must not run after the new leader's.
        if _serialized.is_some() && !self.lease.term_leads(session) {
            let over = crate::lease::NotFollowed::TermOver;
            tracing::warn!(action = ?req.action, reason = %over, "monitor order refused");
            return failed(over.to_string());
        }
        let result = match req.action {
            Action::SetReadOnly { on: true } => Ok(failures_to_result(
                via_reconciler(|stamp, tx| ReconcilerCommand::ReadOnly(true, stamp, tx)).await,
            )),
            Action::SetReadOnly { on: false } => Ok(failures_to_result(
                via_reconciler(|stamp, tx| ReconcilerCommand::ReadOnly(false, stamp, tx)).await,
            )),
            Action::Demote => Ok(failures_to_result(via_reconciler(ReconcilerCommand::Demote).await)),
            Action::KillSessions => self
                .actions_mysql
                .kill_sessions(
                    self.config.agent.max_kill_retries,
                    &[self.host.agent_user.clone(), self.host.monitor_user.clone()],
                )
                .await
                .map(|n| ActionResult {
                    outcome: ActionOutcome::Ok,
                    detail: format!("{n} sessions killed"),
                    position: None,
                }),
            Action::CatchUp { target } => {
                match self.actions_mysql.catch_up(target, deadline).await {
                    Ok(CatchUp::Reached) => Ok(ActionResult {
                        outcome: ActionOutcome::Ok,
                        detail: "caught up".into(),
                        position: self
                            .actions_mysql
                            .gtid_executed()
                            .await
                            .ok()
                            .filter(|g| !g.is_empty())
                            .map(Position::Gtid),
                    }),
                    Ok(CatchUp::NotReplica) => Ok(ActionResult {
                        outcome: ActionOutcome::NotReplica,
                        detail: "the server is not a replica: nothing to catch up on".into(),
                        position: None,
                    }),
                    Ok(CatchUp::TimedOut) => Ok(ActionResult {
                        outcome: ActionOutcome::TimedOut,
                        detail: format!("relay log not applied within {deadline:?}"),
                        position: None,
                    }),
                    Err(e) => Err(e),
                }
            }
            Action::StopReplication => self
                .actions_mysql
                .stop_replication(deadline)
                .await
                .map(|()| ok("replication stopped")),
            Action::StartReplication => {
                if let Err(e) = self.semi_sync.release(&self.actions_mysql).await {
                    return failed(error_chain(&e));
                }
                self.actions_mysql
                    .start_replication(deadline)
                    .await
                    .map(|()| ok("replication started"))
            }
            // Sent when this server's source is dead (before a promotion).
            Action::StopIoThread { source } => match self
                .stop_io_thread_of_vanished_source(source, deadline)
                .await
            {
                Err(e) => Err(e),
                Ok(()) => match self.semi_sync.suspend(&self.actions_mysql).await {
                    Ok(true) => Ok(ok(
                        "replication IO thread stopped; semi-sync master wait suspended until this server is writable or replicates again",
                    )),
                    Ok(false) => Ok(ok("replication IO thread stopped")),
                    // The stop is what was asked; the suspension only saves time.
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "semi-sync master wait not suspended");
                        Ok(ok("replication IO thread stopped"))
                    }
                },
            },
            Action::ChangeMaster {
                host,
                port,
                position,
            } => {
                // A source the config does not name is refused, as a VIP outside it is:
                // a forged or buggy command must not make this server replicate from
                // anywhere.
                let known = self.config.hosts.iter().any(|h| {
                    h.name != self.host.name && h.ip == host && h.mysql_port == port
                });
                if !known {
                    tracing::warn!(%host, port, "replication source refused: not a configured host");
                    return failed(format!(
                        "replication source {host}:{port} refused: not the ip and mysql_port of another configured host"
                    ));
                }
                let password = match self.host.replication_password.reveal() {
                    Ok(p) => p,
                    Err(e) => return failed(error_chain(&e)),
                };
                // A suspended semi-sync master wait stays suspended: a re-point is a slave
                // following the new writer, or the candidate fetching from a slave that is
                // ahead; neither has a semi-sync replica of its own, and each relayed
                // commit would wait rpl_semi_sync_master_timeout (a whole second of the
                // failover, measured). Going writable restores it.
                self.actions_mysql
                    .change_master(
                        &host.to_string(),
                        port,
                        &self.host.replication_user,
                        &password,
                        &position,
                        deadline,
                    )
                    .await
                    .map(|()| ok(&format!("replicating from {host}:{port}")))
            }
        };
        let result = result.unwrap_or_else(|e| match e {
            crate::mysql::MysqlError::Timeout { .. } => ActionResult {
                outcome: ActionOutcome::TimedOut,
                detail: error_chain(&e),
                position: None,
            },
            e => failed(error_chain(&e)),
        });
        tracing::info!(outcome = ?result.outcome, detail = %result.detail, "action done");
        result
    }
}

pub(crate) fn ok(detail: &str) -> ActionResult {
    ActionResult {
        outcome: ActionOutcome::Ok,
        detail: detail.into(),
        position: None,
    }
}

pub(crate) fn failed(detail: String) -> ActionResult {
    ActionResult {
        outcome: ActionOutcome::Failed,
        detail,
        position: None,
    }
}
