//! The silent writer: its agent and its ping both silent, its link is held down so that
//! its lease runs out while trap_period is still counted, and its replicas stop their IO
//! threads once it can commit nothing more. The first ping answered after the hold
//! releases it.

use super::hosts::HostRec;
use super::timers::Deadlines;
use super::{ms, Cluster, CoreAction, FencingMethod, Millis};
use mmm_common::proto;
use mmm_common::types::CheckKind;
use std::collections::BTreeSet;
use std::time::Duration;

/// What the hold of a silent writer did beyond the hold itself (which each host's
/// `isolated_since` records).
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// Replicas of the held writer whose IO threads were stopped early (their semi-sync
    /// STOP waits for the vanished master): restarted if the writer comes back. `None`
    /// until they are.
    early_stopped: Option<BTreeSet<String>>,
}

impl Isolation {
    pub fn stopped_early(&self) -> bool {
        self.early_stopped.is_some()
    }

    fn record_early_stopped(&mut self, replicas: Vec<String>) {
        self.early_stopped = Some(replicas.into_iter().collect());
    }

    /// The replicas to start again: the writer answers after all.
    fn take_early_stopped(&mut self) -> BTreeSet<String> {
        self.early_stopped.take().unwrap_or_default()
    }

    /// A promotion (or a new hold) takes the replicas over.
    pub(super) fn forget_early_stopped(&mut self) {
        self.early_stopped = None;
    }
}

impl Cluster {
    /// When the writer, silent on every channel, is to be held down (`None`: not the
    /// writer, already held, or it answers). Silence counts from the later of its agent's
    /// last answer and its last answered ping; agent_timeout of it is enough, since the
    /// ping check keeps asking (every heartbeat_interval while held) and the first
    /// answer releases it.
    pub(super) fn isolation_due(&self, h: &HostRec) -> Option<Millis> {
        let eligible = self.fencing.lease()
            && self.promotion.is_none()
            && self.network_ok
            && h.isolated_since.is_none()
            && self.roles.writer_holder() == Some(h.name.as_str());
        if !eligible {
            return None;
        }
        let agent_timeout = ms(self.timing.agent_timeout);
        h.silent_since(self.network_back).map(|t| t + agent_timeout)
    }

    /// The writer's agent and its ping both silent: its lease starts now, in parallel with
    /// trap_period, by holding its link down (nothing can renew the lease until Release).
    /// If trap_period then fails the host, the promotion counts the lease from here instead
    /// of waiting it out afterwards. If a ping sent after the hold answers (or pings stop
    /// telling anything), the link is released: a blip costs the writer at most a
    /// self-fence and its undoing, never a failover.
    pub(super) fn isolate_silent_writer(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        self.unhold_former_writers(out);
        let Some(w) = self.roles.writer_holder().map(str::to_string) else {
            return;
        };
        let Some(h) = self.host(&w) else {
            return;
        };
        let ping = h.check(CheckKind::Ping);
        let silent = self.isolation_due(h).is_some_and(|t| now >= t);
        let ping_failing = ping.failing.is_some() && !ping.unknown;
        let released = |held: Millis| ping.unknown || ping.last_ok.is_some_and(|ok| ok >= held);
        match h.isolated_since {
            None if silent => {
                if let Some(h) = self.host_mut(&w) {
                    h.isolated_since = Some(now);
                }
                out.push(CoreAction::Isolate { host: w.clone() });
                out.push(CoreAction::Notify {
                    host: Some(w.clone()),
                    message: format!("Agent and ping of writer '{w}' are silent: its link is held down, so its lease runs out while trap_period is counted"),
                });
                // Its replicas keep their IO threads: it may still commit until its
                // lease is over (`early_stop_due`), and a replica stopped before that
                // lets semi-sync fall back to async and lose what it acknowledges.
                self.isolation.forget_early_stopped();
            }
            Some(held) if self.promotion.is_none() && released(held) => {
                if let Some(h) = self.host_mut(&w) {
                    h.isolated_since = None;
                }
                out.push(CoreAction::Release { host: w.clone() });
                out.push(CoreAction::Notify {
                    host: Some(w.clone()),
                    message: format!("Writer '{w}' answers ping again: its link is released"),
                });
                let deadline = Duration::from_millis(ms(self.config.monitor.promotion_timeout));
                for s in self.isolation.take_early_stopped() {
                    let id = self.next_id();
                    out.push(CoreAction::AgentAction {
                        host: s,
                        id,
                        action: proto::Action::StartReplication,
                        deadline,
                    });
                }
            }
            Some(_) if ping_failing && self.early_stop_due().is_some_and(|due| now >= due) => {
                self.stop_replicas_early(&w, out);
            }
            _ => {}
        }
    }

    /// When the held-down writer's replicas may stop their IO threads ahead of the
    /// promotion: once it can commit nothing more. A replica's IO thread stopped while its
    /// master may still commit lets semi-sync time out and fall back to async, and the
    /// master then acknowledges writes that no replica has (lost at the failover). Alone,
    /// the hold renews nothing, so the lease is over `lease + heartbeat_interval` after it
    /// (the promotion's own count). In a fleet the permit is the agent's etcd lease, which
    /// no hold ends: only the promotion's EndLease does, so nothing stops early. `None`:
    /// nothing to stop, or not yet known when.
    pub(super) fn early_stop_due(&self) -> Option<Millis> {
        if self.fencing != FencingMethod::MonitorLease
            || self.promotion.is_some()
            || self.isolation.stopped_early()
            || !self.network_ok
        {
            return None;
        }
        let held = self.host(self.roles.writer_holder()?)?.isolated_since?;
        Some(held + ms(self.timing.monitor_counts_lease_over))
    }

    /// Their STOP SLAVE would wait for the vanished master (semi-sync's kill-connection):
    /// started while trap_period is counted, once the writer's lease is over and a ping has
    /// failed too (an agent that merely died, or one lost echo reply, stops no replica).
    fn stop_replicas_early(&mut self, writer: &str, out: &mut Vec<CoreAction>) {
        let stopped = self.stop_io_threads_of(writer, out);
        self.isolation.record_early_stopped(stopped);
    }

    /// A held host that lost the writer role with no promotion to fence it (no candidate,
    /// a refused promotion) gets the link's bounded stay-away instead of an endless hold:
    /// its agent may come back and be heard.
    fn unhold_former_writers(&mut self, out: &mut Vec<CoreAction>) {
        if self.promotion.is_some() {
            return;
        }
        let writer = self.roles.writer_holder().map(str::to_string);
        for h in &mut self.hosts {
            if h.isolated_since.is_some() && writer.as_deref() != Some(h.name.as_str()) {
                h.isolated_since = None;
                out.push(CoreAction::Disconnect {
                    host: h.name.clone(),
                });
            }
        }
    }

    /// A silent writer is held down once it has been silent for agent_timeout; its
    /// replicas stop their IO threads once its lease is over.
    pub(super) fn isolation_deadlines(&self, d: &mut Deadlines) {
        if let Some(t) = self
            .roles
            .writer_holder()
            .and_then(|w| self.host(w))
            .and_then(|h| self.isolation_due(h))
        {
            d.at(t);
        }
        if let Some(t) = self.early_stop_due() {
            d.at(t);
        }
    }
}
