//! What a monitor's message does: in a fleet, etcd's election confirms the order first;
//! then heartbeats, desired states, status queries and actions are answered.

use crate::authority::Stake;
use crate::reconcile::error_chain;
use crate::reconciler::ReconcilerCommand;
use mmm_common::proto::{
    Action, ActionOutcome, ActionResult, Applied, FrameError, Message, StatusReport, Term,
    FLAG_RESPONSE,
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::Agent;

impl Agent {
    /// The status report with the server's replication state and GTID set read now.
    async fn fresh_report(&self) -> StatusReport {
        let mut report = self.status.borrow().report();
        let db = &self.status_mysql;
        let kind = match db.server_kind().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "status query: mysqld does not answer");
                // Unreachable is not read-only: one that may still be writable stays up.
                report.mysql_up = self.status.borrow().possibly_writable;
                report.gtid_unreadable = format!("mysqld does not answer: {}", error_chain(&e));
                return report;
            }
        };
        report.server = kind;
        report.mysql_up = true;
        if let Ok(ro) = db.read_only().await {
            // A lift of read_only that may still run makes a read-only server no better.
            report.read_only = ro && !self.grants.may_still_run();
        }
        // A set that cannot be read is reported as unknown, never as the cached or an
        // empty one: the monitor's errant-transaction checks must fail closed.
        match db.gtid_executed().await {
            Ok(g) => report.gtid_executed = g,
            Err(e) => report.gtid_unreadable = error_chain(&e),
        }
        if let Ok(r) = db.replication().await {
            report.replication = r;
        }
        if let Ok(b) = db.binlog_position().await {
            report.binlog = b;
        }
        report
    }

    pub(super) async fn dispatch(
        self: &Arc<Self>,
        session: u64,
        term: Term,
        msg: Message,
        id: u32,
        out: &mpsc::Sender<(Message, u32, u8)>,
    ) -> Result<(), FrameError> {
        let reply = move |m: Message| (m, id, FLAG_RESPONSE);
        // In a fleet an order is obeyed only from the term etcd's election says leads now.
        if let Message::DesiredState(_) | Message::Action(_) = &msg {
            // What could make this host a writer: writable, a writer VIP, or lifting a
            // fence. Only that waits for etcd's word when etcd cannot be asked; a reader
            // role or a demotion is taken while etcd is away.
            let grants_writer = match &msg {
                Message::DesiredState(d) => {
                    let writer = self.scope.writer_vips();
                    // Parking draws the writer's clients here: a deposed leader's
                    // parking would pull them from the writer another leader made.
                    d.writable
                        || d.roles.iter().any(|(_, ip)| writer.contains(ip))
                        || !d.parked.is_empty()
                        || self.lease.fenced().is_some()
                }
                Message::Action(a) => matches!(a.action, Action::SetReadOnly { on: false }),
                _ => false,
            };
            let stake = if grants_writer {
                Stake::Writer
            } else {
                Stake::NoWriter
            };
            // Refused (and logged) when another term leads; that term is then accepted,
            // so this session closes.
            if let Err(not) = self.authority.confirm(term, stake).await {
                let refusal = match &msg {
                    Message::DesiredState(d) => Message::Applied(Applied {
                        epoch: d.epoch,
                        failures: vec![not.to_string()],
                    }),
                    _ => Message::ActionResult(ActionResult {
                        outcome: ActionOutcome::Failed,
                        detail: not.to_string(),
                        position: None,
                    }),
                };
                let _ = out.send(reply(refusal)).await;
                return Ok(());
            }
        }
        match msg {
            Message::Heartbeat(_) => {
                self.lease.on_heartbeat(session);
                let hb = self.heartbeat();
                let _ = out.send(reply(Message::AgentHeartbeat(hb))).await;
            }
            // Consents come on witness sessions (crate::witness) only.
            Message::Consent(_) => {}
            Message::DesiredState(d) => {
                let epoch = d.epoch;
                // A state this host cannot take (a VIP or role its config does not know)
                // is refused before it is stamped: it must not supersede the plan under
                // way for the state it would have replaced.
                if let Err(problems) = self.scope.check(&d) {
                    tracing::warn!(epoch, ?problems, "desired state refused; nothing changed");
                    let refusal = Applied {
                        epoch,
                        failures: problems,
                    };
                    let _ = out.send(reply(Message::Applied(refusal))).await;
                    return Ok(());
                }
                let decided = {
                    let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                    let unchanged = followed.as_ref() == Some(&d);
                    let decided = self.lease.on_desired(session, unchanged);
                    if decided.is_ok() {
                        *followed = Some(d.clone());
                    }
                    decided
                };
                let stamp = match decided {
                    Err(still) => {
                        tracing::warn!(epoch, reason = %still, "desired state refused");
                        let refusal = Applied {
                            epoch,
                            failures: vec![still.to_string()],
                        };
                        let _ = out.send(reply(Message::Applied(refusal))).await;
                        return Ok(());
                    }
                    Ok(f) => {
                        if f.lifted {
                            tracing::info!(
                                epoch,
                                "desired state from a new monitor connection ends the self-fence"
                            );
                            self.status.send_modify(|s| s.fenced_reason.clear());
                        }
                        f.stamp
                    }
                };
                let (tx, rx) = oneshot::channel();
                let out = out.clone();
                if self
                    .commands
                    .send(ReconcilerCommand::Apply(d, stamp, tx))
                    .await
                    .is_ok()
                {
                    tokio::spawn(async move {
                        let applied = match rx.await {
                            Ok(Some(applied)) => applied,
                            Ok(None) => return,
                            Err(_dropped) => Applied {
                                epoch,
                                failures: vec!["the reconciler stopped".into()],
                            },
                        };
                        let _ = out.send(reply(Message::Applied(applied))).await;
                    });
                } else {
                    let stopped = Applied {
                        epoch,
                        failures: vec!["the reconciler stopped".into()],
                    };
                    let _ = out.send(reply(Message::Applied(stopped))).await;
                }
            }
            Message::StatusQuery => {
                let agent = self.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    let mut report = agent.fresh_report().await;
                    report.fit_message();
                    let _ = out.send(reply(Message::StatusReport(report))).await;
                });
            }
            Message::Action(req) => {
                let agent = self.clone();
                let out = out.clone();
                tokio::spawn(
                    async move {
                        let kind = crate::http::metrics::action_kind(&req.action);
                        let result = agent.action(session, req).await;
                        agent.counters.action(kind, result.outcome);
                        let _ = out.send(reply(Message::ActionResult(result))).await;
                    }
                    .instrument(tracing::info_span!("action", id)),
                );
            }
            Message::Error(e) => {
                tracing::warn!(message = %e.message, "the monitor reports an error")
            }
            other => {
                return Err(FrameError::Unexpected {
                    msg_type: other.msg_type(),
                    state: "from a monitor",
                })
            }
        }
        Ok(())
    }
}
