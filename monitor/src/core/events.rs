//! What each event tells the core: evidence recorded on its host, a promotion moved on,
//! a command run. Each handler returns `None` for a host the config does not name (the
//! event is then dropped whole), and lists the hosts whose evidence changed: those are
//! judged at once, never left for a later Tick.

use super::hosts::HostRec;
use super::{Action, AgentView, CheckResult, Cluster, Command, Millis};
use mmm_common::proto::{ActionOutcome, ProbeEventKind, StatusReport};
use mmm_common::types::{CheckKind, HostState};

/// Hosts whose evidence changed in this event.
pub(super) type Evaluate = Vec<String>;

impl Cluster {
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
        let agent_up = h.agent_up;
        let judged = |h: &HostRec| {
            let from = h.trap_start(check, back);
            let track = h.check(check);
            (
                track.verdict_from(now, trap, from),
                track.trap_expires(trap, from),
            )
        };
        let before = judged(h);
        let track = h.check_mut(check);
        match result {
            // Older than a newer result, or asked while the network guard held.
            _ if track.stale(started) || started < back => {}
            CheckResult::Ok => {
                track.record_ok(now, started, trap);
                if check == CheckKind::Mysql {
                    h.probe_dead = false;
                }
            }
            // Overload is not death: the server answered, it is alive.
            CheckResult::Unknown { .. } => track.record_unknown(started),
            CheckResult::Failed { message, refused } => {
                // Refused while the agent answers: mysqld is not there. Definitive.
                let definitive = refused && check == CheckKind::Mysql && agent_up;
                track.record_failure(now, started, message, definitive);
            }
        }
        // A changed verdict, or a changed deadline: a failure that turned definitive
        // just as its trap ran out has no Tick announced any more.
        if judged(h) != before {
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
        let h = self.hosts.get_mut(&host)?;
        match kind {
            ProbeEventKind::ProcessExit | ProbeEventKind::ListenClose => {
                if !h.probe_dead {
                    h.probe_dead = true;
                    let what = if kind == ProbeEventKind::ProcessExit {
                        "mysqld process exited"
                    } else {
                        "mysqld stopped listening"
                    };
                    h.check_mut(CheckKind::Mysql).record_failure(
                        now,
                        now,
                        format!("{what} (probe)"),
                        true,
                    );
                    evaluate.push(host);
                }
            }
            ProbeEventKind::ListenOpen => h.probe_dead = false,
        }
        Some(())
    }

    pub(super) fn on_heartbeat(
        &mut self,
        now: Millis,
        host: String,
        view: AgentView,
        evaluate: &mut Evaluate,
        out: &mut Vec<Action>,
    ) -> Option<()> {
        let h = self.hosts.get_mut(&host)?;
        let was_up = h.agent_up;
        h.agent_up = true;
        h.agent_seen = Some(now);
        // What it reports changed (it replicates again, mysqld came up...): judged now.
        // Its uptime alone changes every second and decides nothing by itself.
        let changed = h.view.as_ref().is_none_or(|v| !v.same_but_uptime(&view));
        h.self_fenced_since = match (view.self_fenced, h.self_fenced_since) {
            (false, _) => None,
            (true, since) => since.or(Some(now)),
        };
        h.view = Some(view);
        if changed && was_up {
            evaluate.push(host.clone());
        }
        if !was_up {
            out.push(Action::Notify {
                host: Some(host.clone()),
                message: format!("Agent on host '{host}' is reachable again"),
            });
            // It needs to hear its desired state again on the new connection.
            h.last_sent = None;
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
        out: &mut Vec<Action>,
    ) -> Option<()> {
        let h = self.hosts.get_mut(&host)?;
        let news = h.agent_up || h.agent_seen.is_none();
        // What a silent agent's server does is not known: not its self-fence either.
        h.self_fenced_since = None;
        if let Some(t) = last_heard {
            h.agent_seen = Some(h.agent_seen.map_or(t, |s| s.max(t)));
        }
        if news {
            h.agent_up = false;
            out.push(Action::Notify {
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
        out: &mut Vec<Action>,
    ) -> Option<()> {
        if let Some(h) = self.hosts.get_mut(&host) {
            match report.gtid_set() {
                Ok(set) => {
                    h.gtid = Some(set);
                    h.gtid_unknown = None;
                }
                // Fail closed: an unknown set is not an empty one.
                Err(e) => {
                    h.gtid = None;
                    h.gtid_unknown = Some(e.to_string());
                }
            }
            h.gtid_at = Some(now);
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
        out: &mut Vec<Action>,
    ) -> Option<()> {
        if !failures.is_empty() {
            out.push(Action::Notify {
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
        out: &mut Vec<Action>,
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
        out: &mut Vec<Action>,
    ) -> Option<()> {
        out.push(Action::Notify {
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
        out: &mut Vec<Action>,
    ) -> Option<()> {
        if ok == self.network_ok {
            return Some(());
        }
        self.network_ok = ok;
        if !ok {
            self.network_lost_at = now;
        }
        out.push(Action::Notify {
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
        command: Command,
        out: &mut Vec<Action>,
    ) -> Option<()> {
        if let Some(text) = self.command(now, reply, command, out) {
            out.push(Action::Reply { id: reply, text });
        }
        Some(())
    }
}
