//! The reconciler task: the only one that changes VIPs and read_only (so two desired
//! states never interleave). Each pass observes the host, runs the pure plan of
//! `crate::reconcile` for the desired state it follows, observes again and publishes the
//! status snapshot every connection answers from.

use crate::lease::Stamp;
use crate::reconcile::{error_chain, plan, Desired, Executor, Observed, Scope, Step};
use crate::server::{Agent, REFRESH};
use mmm_common::proto::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Each carries the lease's stamp of when it was accepted: the plan it leads to dies when
/// anything newer arrives (`Lease::current`), even while it waits in this queue.
pub(crate) enum ReconcilerCommand {
    /// Answered with None when a newer order superseded it before it was done: that
    /// order answers for itself (an Applied for this epoch with the plan's remaining
    /// steps as failures would tell a promotion the candidate failed).
    Apply(DesiredState, Stamp, oneshot::Sender<Option<Applied>>),
    /// Force read_only (true) or lift it (false) until the next desired state.
    ReadOnly(bool, Stamp, oneshot::Sender<Vec<String>>),
    /// Give up the writer role: VIP, then read_only, then sessions.
    Demote(Stamp, oneshot::Sender<Vec<String>>),
    /// The lease task has removed the writer VIPs: drop the writer from the desired state
    /// and finish the fence (read_only, sessions).
    Fenced(Stamp),
}

/// The only task that changes VIPs and read_only.
pub(crate) async fn reconciler(
    agent: Arc<Agent>,
    exec: Executor,
    mut rx: mpsc::Receiver<ReconcilerCommand>,
    woken: Arc<tokio::sync::Notify>,
) {
    let scope = &agent.scope;
    // The desired state followed, with the stamp of the order that set it.
    let mut desired: Option<(Desired, Stamp)> = None;
    let mut refresh = tokio::time::interval(REFRESH);
    let mut seen = Seen::default();
    // Periodic re-announcement of held VIPs (garp_refresh), for switches and clients that
    // missed the takeover burst; off when garp_refresh = "0s".
    let refresh_every = agent.config.agent.garp_refresh;
    let mut garp_tick = tokio::time::interval(refresh_every.unwrap_or(Duration::from_secs(3600)));
    loop {
        // Orders first: a refresh of a desired state that a queued one supersedes would
        // only be cut short.
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    ReconcilerCommand::Apply(d, stamp, reply) => {
                        let epoch = d.epoch;
                        let applied = match scope.check(&d) {
                            Err(problems) => {
                                tracing::warn!(epoch, ?problems, "desired state refused; nothing changed");
                                Some(Applied { epoch, failures: problems })
                            }
                            Ok(d) => {
                                desired = Some((d, stamp));
                                let failures = converge(&agent, &exec, current(&desired), &mut seen).await;
                                if exec.lease.current(stamp) {
                                    Some(Applied { epoch, failures })
                                } else {
                                    // The fence answers no request: say it here, or the
                                    // monitor would wait out its timeout for nothing. A
                                    // newer order answers for itself (None).
                                    exec.lease.fenced().map(|reason| Applied {
                                        epoch,
                                        failures: vec![format!("self-fenced before state {epoch} was applied: {reason}")],
                                    })
                                }
                            }
                        };
                        let _ = reply.send(applied);
                    }
                    ReconcilerCommand::ReadOnly(on, stamp, reply) => {
                        let (mut d, _) = desired.take().unwrap_or_else(|| (empty_desired(0), stamp));
                        if on {
                            drop_writer(&mut d, scope);
                        } else {
                            d.writable = true;
                        }
                        desired = Some((d, stamp));
                        let _ = reply.send(converge(&agent, &exec, current(&desired), &mut seen).await);
                    }
                    ReconcilerCommand::Demote(stamp, reply) => {
                        let (mut d, _) = desired.take().unwrap_or_else(|| (empty_desired(0), stamp));
                        drop_writer(&mut d, scope);
                        desired = Some((d, stamp));
                        let _ = reply.send(converge(&agent, &exec, current(&desired), &mut seen).await);
                    }
                    ReconcilerCommand::Fenced(fence) => {
                        match desired.take() {
                            // A desired state accepted after the fence (on a session made
                            // after it, which alone may lift it) is what holds now.
                            Some((d, stamp)) if stamp.generation > fence.generation => {
                                desired = Some((d, stamp));
                            }
                            other => {
                                let (mut d, _) = other.unwrap_or_else(|| (empty_desired(0), fence));
                                drop_writer(&mut d, scope);
                                // Applied epoch 0 tells the monitor this host holds no state of its choosing.
                                d.epoch = 0;
                                desired = Some((d, fence));
                            }
                        }
                        let failures = converge(&agent, &exec, current(&desired), &mut seen).await;
                        if !failures.is_empty() {
                            tracing::error!(?failures, "self-fencing incomplete after the VIP removal");
                        }
                    }
                }
            }
            // A hung server answers again and was made read-only: report it now.
            _ = woken.notified() => {
                converge(&agent, &exec, current(&desired), &mut seen).await;
            }
            _ = refresh.tick() => {
                // Re-applies the desired state when the host drifted from it (an address
                // removed by hand, read_only flipped), and refreshes the report.
                converge(&agent, &exec, current(&desired), &mut seen).await;
            }
            _ = garp_tick.tick(), if refresh_every.is_some() => {
                let mut held = agent.status.borrow().held_vips.clone();
                // A writer VIP is announced only while this host is to be the writer and
                // may: one whose lease ran out is about to be fenced (an agent that just
                // thawed), one a newer desired state takes away is about to be removed;
                // announcing either would pull clients back from its successor.
                if !exec.lease.writer_wanted() {
                    held.retain(|ip| !exec.writer_vips.contains(ip));
                }
                if let Err(e) = exec.reannounce(&held).await {
                    tracing::warn!(error = %error_chain(&e), "periodic gratuitous ARP failed");
                }
            }
        }
    }
}

/// The desired state followed and its stamp, as `converge` takes them.
pub(crate) fn current(desired: &Option<(Desired, Stamp)>) -> Option<(&Desired, Stamp)> {
    desired.as_ref().map(|(d, s)| (d, *s))
}

/// What the reconciler remembers of the server between passes.
#[derive(Debug)]
pub(crate) struct Seen {
    kind: ServerKind,
    /// The last read_only the server answered (None: none yet, or its process exited
    /// since: a restarted mysqld comes up read_only from its my.cnf).
    read_only: Option<bool>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            kind: ServerKind::Unknown,
            read_only: None,
        }
    }
}

/// Removes the writer role and writability: the demotion every fencing path applies.
pub(crate) fn drop_writer(d: &mut Desired, scope: &Scope) {
    let writer = scope.writer_vips();
    d.vips.retain(|ip, _| !writer.contains(ip));
    d.writable = false;
}

pub(crate) fn empty_desired(epoch: u32) -> Desired {
    Desired {
        epoch,
        state: mmm_common::types::HostState::Online,
        active_master: String::new(),
        writable: false,
        vips: Default::default(),
        parked: Default::default(),
    }
}

/// Observes, applies the plan (if there is a desired state), observes again and
/// publishes the status. Returns the failed steps.
pub(crate) async fn converge(
    agent: &Agent,
    exec: &Executor,
    desired: Option<(&Desired, Stamp)>,
    seen: &mut Seen,
) -> Vec<String> {
    // What anything else that finds the server writable must leave alone.
    exec.lease
        .set_wanted(desired.filter(|(d, _)| d.writable).map(|(_, s)| s));
    if exec.lease.writer_wanted() {
        // This host is to write: its clients must reach it before it is writable.
        exec.guards.lower_host_fence();
    }
    if seen.kind == ServerKind::Unknown {
        if let Ok(k) = exec.mysql.server_kind().await {
            seen.kind = k;
        }
    }
    let (observed, mut failures) = exec.observe(&agent.scope, true).await;
    let mut silent = unanswered_but_running(exec, &observed, &failures);
    let after = match desired {
        Some((d, stamp)) => {
            let mut steps = plan(d, &observed, &agent.scope);
            if silent {
                // Each would wait out its bound behind whatever hangs the server, holding
                // up the VIP steps and the report; the wake task sets read_only the moment
                // it answers, if it may be writable.
                steps.retain(|s| !matches!(s, Step::SetReadOnly(_) | Step::KillSessions));
            }
            if !steps.is_empty() {
                tracing::info!(epoch = d.epoch, ?steps, "converging");
                failures = exec.run(&steps, stamp).await;
            } else {
                failures.clear();
            }
            let superseded = failures
                .iter()
                .any(|e| matches!(e, crate::reconcile::StepError::Superseded { .. }));
            if superseded {
                // The order that superseded it is queued: it observes and reports afresh.
                return failures.iter().map(|e| error_chain(e)).collect();
            }
            // A server that did not answer a moment ago is not asked again: the report
            // (the writer VIPs gone) must not wait out another timeout.
            let (after, errors) = exec.observe(&agent.scope, !silent).await;
            silent = silent || unanswered_but_running(exec, &after, &errors);
            after
        }
        None => observed,
    };
    publish(agent, exec, desired.map(|(d, _)| d), &after, silent, seen).await;
    // A writer role this host cannot take for want of a permit is reported in every
    // heartbeat (SELF_FENCED) for as long as that lasts, not only at the fence: a fleet's
    // leader fails over a writer that stays so (an agent cut from etcd alone would
    // otherwise be an outage that `show` calls a healthy writer).
    let permitless = failures
        .iter()
        .any(|e| matches!(e, crate::reconcile::StepError::NoLease { .. }));
    agent.status.send_if_modified(|s| {
        let changed = s.permitless != permitless;
        s.permitless = permitless;
        changed
    });
    // Text from here on: the monitor shows them (Applied::failures).
    failures.iter().map(|e| error_chain(e)).collect()
}

/// mysqld did not answer, and nothing says its process is gone (the probe saw no exit, the
/// connection was not refused): it may still run what it holds when it wakes up.
pub(crate) fn unanswered_but_running(
    exec: &Executor,
    observed: &Observed,
    errors: &[crate::reconcile::StepError],
) -> bool {
    // Refused (nothing listens) or answered with an error (access denied, too many
    // connections, host blocked): a server that says something is not hung.
    let heard = errors.iter().any(|e| match e {
        crate::reconcile::StepError::Mysql(m) => m.refused() || m.code().is_some(),
        _ => false,
    });
    observed.read_only.is_none() && !exec.mysqld_exited() && !heard
}

pub(crate) async fn publish(
    agent: &Agent,
    exec: &Executor,
    desired: Option<&Desired>,
    observed: &Observed,
    silent: bool,
    seen: &mut Seen,
) {
    // A dead mysqld (the probe saw it exit) answers nothing: do not spend time asking.
    let (replication, gtid, binlog) = if exec.mysqld_exited() || silent {
        (Ok(None), String::new(), None)
    } else {
        (
            exec.mysql.replication().await,
            exec.mysql.gtid_executed().await.unwrap_or_default(),
            exec.mysql.binlog_position().await.unwrap_or(None),
        )
    };
    match observed.read_only {
        Some(ro) => seen.read_only = Some(ro),
        None if !silent => seen.read_only = None,
        None => {}
    }
    let grant_live = exec.grants.may_still_run();
    // A silent server whose read_only this agent never read (it started while mysqld
    // hung) may be writable: only a read back read_only = 1, or the process gone, says
    // it is not.
    let possibly_writable =
        observed.read_only == Some(false) || grant_live || (silent && seen.read_only != Some(true));
    // A hung server that may be writable: the wake task waits for its answer (and makes
    // it read-only then, unless this host is to be the writer); nothing else queues SQL
    // behind it meanwhile.
    let hung_writable = silent && possibly_writable;
    exec.grants.set_hung_writable(hung_writable);
    let wanted = desired.is_some_and(|d| d.writable) && exec.lease.writer_wanted();
    // What keeps clients from it whatever it runs when it wakes up: no writer VIP here;
    // without a writer VIP at all, its address closed to the network (docs/fencing.md).
    // And no lift of read_only that can still take effect.
    let fence_holds = match exec.writer_vips.is_empty() {
        false => observed
            .vips
            .iter()
            .all(|ip| !exec.writer_vips.contains(ip)),
        true if hung_writable && !wanted => exec.guards.raise_host_fence(),
        true => false,
    };
    if exec.guards.host_fence_raised()
        && (wanted || (observed.read_only == Some(true) && !grant_live))
    {
        exec.guards.lower_host_fence();
    }
    let stall_fenced = hung_writable && !wanted && fence_holds && !grant_live;
    let matches = desired.is_some_and(|d| plan(d, observed, &agent.scope).is_empty());
    agent.status.send_modify(|s| {
        s.server = Some(seen.kind);
        s.mysql_up = observed.read_only.is_some();
        s.read_only = observed.read_only;
        if observed.read_only.is_some() {
            s.answered = Some(std::time::Instant::now());
        }
        s.possibly_writable = possibly_writable;
        s.stall_fenced = stall_fenced;
        s.held_vips = observed.vips.iter().copied().collect();
        s.replication = replication.unwrap_or(None);
        s.gtid_executed = gtid;
        s.binlog = binlog;
        // The epoch is reported only once the host really is in that state.
        s.applied_epoch = match desired {
            Some(d) if matches && s.fenced_reason.is_empty() => d.epoch,
            _ => 0,
        };
    });
}
