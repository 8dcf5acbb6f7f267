//! What each event tells the core: evidence recorded on its host, a promotion moved on,
//! a command run. Each handler returns `None` for a host the config does not name (the
//! event is then dropped whole), and lists the hosts whose evidence changed: those are
//! judged at once, never left for a later Tick.

use super::{ms, AgentView, CheckResult, Cluster, ControlCommand, CoreAction, Millis};
use mmm_common::proto::{ActionOutcome, ProbeEventKind, StatusReport};
use mmm_common::types::{CheckKind, HostState};

/// Hosts whose evidence changed in this event.
pub(super) type Evaluate = Vec<String>;

impl Cluster {
    /// Events arrive at least every ping pace (agent_timeout / 3 per host): a longer quiet
    /// means the monitor did not run (swapped out, throttled, stopped), and the silence
    /// it then sees in every host is its own. Counted from now, as after the network
    /// guard.
    pub(super) fn notice_stall(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let limit = ms(self.timing.stall_after);
        let quiet = self.last_event.map_or(0, |t| now.saturating_sub(t));
        self.last_event = Some(now);
        if quiet > limit && !self.hosts.is_empty() {
            self.blind_for(now, quiet);
            out.push(CoreAction::Notify {
                host: None,
                message: format!("The monitor heard nothing for {quiet} ms (it did not run): silence before now is not held against any host"),
            });
        }
    }

    /// The monitor could not observe for `paused` until `now`: trap_period pauses for that
    /// long (a failure counts only the time it was seen from a working monitor), and
    /// silence counts from now.
    pub(super) fn blind_for(&mut self, now: Millis, paused: Millis) {
        self.network_back = self.network_back.max(now);
        self.hosts.blind_for(now, paused);
    }

    /// Time passed: every host is judged against its deadlines.
    pub(super) fn on_tick(&mut self, now: Millis, out: &mut Vec<CoreAction>) -> Option<()> {
        self.evaluate_all(now, out);
        Some(())
    }

    pub(super) fn on_lease_ended(
        &mut self,
        now: Millis,
        host: String,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        self.promotion_on_lease_ended(now, &host, out);
        Some(())
    }

    pub(super) fn on_check(
        &mut self,
        now: Millis,
        host: String,
        check: CheckKind,
        result: CheckResult,
        started: Millis,
        evaluate: &mut Evaluate,
    ) -> Option<()> {
        let trap = self.trap(check);
        let back = self.network_back;
        let h = self.hosts.get_mut(&host)?;
        if h.record_check(now, check, result, started, trap, back) {
            evaluate.push(host);
        }
        Some(())
    }

    pub(super) fn on_probe(
        &mut self,
        now: Millis,
        host: String,
        kind: ProbeEventKind,
        evaluate: &mut Evaluate,
    ) -> Option<()> {
        if self.hosts.get_mut(&host)?.record_probe(now, kind) {
            evaluate.push(host);
        }
        Some(())
    }

    pub(super) fn on_heartbeat(
        &mut self,
        now: Millis,
        host: String,
        view: AgentView,
        evaluate: &mut Evaluate,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        let h = self.hosts.get_mut(&host)?;
        let was_up = h.agent_up;
        let changed = h.record_heartbeat(now, view);
        if changed && was_up {
            evaluate.push(host.clone());
        }
        if !was_up {
            out.push(CoreAction::Notify {
                host: Some(host.clone()),
                message: format!("Agent on host '{host}' is reachable again"),
            });
            evaluate.push(host.clone());
        }
        self.promotion_on_heartbeat(now, &host, out);
        Some(())
    }

    pub(super) fn on_unreachable(
        &mut self,
        host: String,
        reason: String,
        last_heard: Option<Millis>,
        evaluate: &mut Evaluate,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        if self.hosts.get_mut(&host)?.record_unreachable(last_heard) {
            out.push(CoreAction::Notify {
                host: Some(host.clone()),
                message: format!("Can't reach agent on host '{host}': {reason}"),
            });
            evaluate.push(host);
        }
        Some(())
    }

    pub(super) fn on_status(
        &mut self,
        now: Millis,
        host: String,
        report: StatusReport,
        evaluate: &mut Evaluate,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        if let Some(h) = self.hosts.get_mut(&host) {
            h.record_status(now, &report);
        }
        self.check_errant(now, &host, out);
        self.promotion_on_status(now, &host, &report, out);
        // A fresh GTID set may let a waiting host rejoin or come online: the host's own,
        // or the writer's for every host waiting.
        if self.active_master() == Some(host.as_str()) {
            evaluate.extend(
                self.hosts
                    .iter()
                    .filter(|h| h.state == HostState::AwaitingRecovery)
                    .map(|h| h.name.clone()),
            );
        }
        evaluate.push(host);
        Some(())
    }

    pub(super) fn on_applied(
        &mut self,
        now: Millis,
        host: String,
        epoch: u32,
        failures: Vec<String>,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        if !failures.is_empty() {
            out.push(CoreAction::Notify {
                host: Some(host.clone()),
                message: format!(
                    "Agent on '{host}' could not apply state {epoch}: {}",
                    failures.join("; ")
                ),
            });
        }
        self.promotion_on_applied(now, &host, epoch, &failures, out);
        Some(())
    }

    pub(super) fn on_action_done(
        &mut self,
        now: Millis,
        host: String,
        id: u64,
        outcome: ActionOutcome,
        detail: String,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        self.promotion_on_action(now, &host, id, outcome, &detail, out);
        Some(())
    }

    pub(super) fn on_kill_host_done(
        &mut self,
        now: Millis,
        host: String,
        ok: bool,
        output: String,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        out.push(CoreAction::Notify {
            host: Some(host.clone()),
            message: if ok {
                format!(
                    "kill_host_bin for '{host}' succeeded{}",
                    if output.is_empty() {
                        String::new()
                    } else {
                        format!(": {output}")
                    }
                )
            } else {
                format!("Could not kill host '{host}' - kill_host_bin failed: {output}")
            },
        });
        self.promotion_on_kill_host(now, &host, ok, out);
        Some(())
    }

    pub(super) fn on_network(
        &mut self,
        now: Millis,
        ok: bool,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        if ok == self.network_ok {
            return Some(());
        }
        self.network_ok = ok;
        if !ok {
            self.network_lost_at = now;
        }
        out.push(CoreAction::Notify {
            host: None,
            message: if ok {
                "Network is reachable again: state changes resume".into()
            } else {
                "No ping_ips answer: network guard holds every state as it is".into()
            },
        });
        if ok {
            // While the monitor was cut off, trap_period was paused: a failure counts only
            // the time it was seen from a working network (a guard that flaps delays a
            // failover by its outages, never forever).
            let paused = now.saturating_sub(self.network_lost_at);
            self.blind_for(now, paused);
            self.evaluate_all(now, out);
        }
        Some(())
    }

    pub(super) fn on_command(
        &mut self,
        now: Millis,
        reply: u64,
        command: ControlCommand,
        out: &mut Vec<CoreAction>,
    ) -> Option<()> {
        if let Some(text) = self.command(now, reply, command, out) {
            out.push(CoreAction::Reply { id: reply, text });
        }
        Some(())
    }
}
