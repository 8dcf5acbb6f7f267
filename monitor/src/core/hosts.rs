//! The hosts: each one's record (configuration, evidence, state), and the one place a
//! state changes ([`Hosts::set_state`]), which counts transitions and flaps.

use super::health::{CheckTrack, Flaps};
use super::{AgentView, CheckResult, CoreAction, Millis};
use mmm_common::config::{Config, Host as HostConfig};
use mmm_common::gtid::GtidSet;
use mmm_common::proto::{DesiredState, ProbeEventKind, StatusReport};
use mmm_common::types::{CheckKind, HostMode, HostState};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Everything the monitor knows about one host.
#[derive(Debug, Clone)]
pub struct HostRec {
    pub name: String,
    pub ip: Ipv4Addr,
    pub mode: HostMode,
    pub peer: Option<String>,
    pub mysql_port: u16,
    pub state: HostState,
    pub since: Millis,
    pub reason: String,
    pub checks: [CheckTrack; 4],
    /// The probe saw mysqld die and no sign of life came since.
    pub probe_dead: bool,
    pub agent_up: bool,
    pub agent_seen: Option<Millis>,
    pub view: Option<AgentView>,
    /// Agent uptime when the host left ONLINE (MMM's last_uptime).
    pub uptime_at_failure: Option<u32>,
    pub flaps: Flaps,
    pub flapping: bool,
    pub errant: Option<String>,
    pub gtid: Option<GtidSet>,
    /// Why the last reported GTID set cannot be compared (the agent could not read it,
    /// or it does not parse): the host is then judged to have errant transactions.
    pub gtid_unknown: Option<String>,
    pub last_sent: Option<DesiredState>,
    pub online_since: Millis,
    /// Which master this slave was last told to replicate from, and when.
    pub repointed: Option<(Ipv4Addr, Millis)>,
    /// When its full status (GTID set) was last asked for, and last received.
    pub status_asked: Option<Millis>,
    pub gtid_at: Option<Millis>,
    /// Since when its link is held down (Isolate): a promotion counts its lease from here.
    pub isolated_since: Option<Millis>,
    /// Since when its agent, heard all along, reports itself self-fenced (it holds no
    /// writer permit): see `permitless`.
    pub self_fenced_since: Option<Millis>,
}

impl HostRec {
    fn new(h: &HostConfig, now: Millis) -> HostRec {
        HostRec {
            name: h.name.clone(),
            ip: h.ip,
            mode: h.mode,
            peer: h.peer.clone(),
            mysql_port: h.mysql_port,
            state: HostState::AwaitingRecovery,
            since: now,
            reason: "monitor started".into(),
            checks: Default::default(),
            probe_dead: false,
            agent_up: false,
            agent_seen: None,
            view: None,
            uptime_at_failure: None,
            flaps: Flaps::default(),
            flapping: false,
            errant: None,
            gtid: None,
            gtid_unknown: None,
            last_sent: None,
            online_since: now,
            repointed: None,
            status_asked: None,
            gtid_at: None,
            isolated_since: None,
            self_fenced_since: None,
        }
    }

    pub(super) fn check(&self, c: CheckKind) -> &CheckTrack {
        &self.checks[c as usize]
    }

    pub(super) fn check_mut(&mut self, c: CheckKind) -> &mut CheckTrack {
        &mut self.checks[check_index(c)]
    }

    /// Since when the host has answered nothing at all: neither its agent nor a ping.
    /// `None` while its agent answers, if it never did, or if pings tell nothing (the
    /// monitor cannot ping). Silence while the monitor could not observe (the network
    /// guard held, or the monitor itself stalled) counts only from when it could again.
    pub(super) fn silent_since(&self, network_back: Millis) -> Option<Millis> {
        let ping = self.check(CheckKind::Ping);
        if self.agent_up || ping.unknown {
            return None;
        }
        self.agent_seen
            .map(|a| a.max(ping.last_ok.unwrap_or(0)).max(network_back))
    }

    /// A failing ping of a host whose agent is silent too counts its trap from the
    /// silence: the host has been gone that long, not just since the first ping timed
    /// out (up to a check period plus the check's timeout later). A link blip shorter
    /// than trap_period still fails nothing: the first ping after it answers.
    pub(super) fn trap_start(&self, c: CheckKind, network_back: Millis) -> Option<Millis> {
        (c == CheckKind::Ping)
            .then(|| self.silent_since(network_back))
            .flatten()
    }
}

/// Evidence: what each kind of report tells of the host.
impl HostRec {
    /// A check's result. Returns whether its verdict or its deadline changed: a failure
    /// that turned definitive just as its trap ran out has no Tick announced any more.
    pub(super) fn record_check(
        &mut self,
        now: Millis,
        check: CheckKind,
        result: CheckResult,
        started: Millis,
        trap: Millis,
        network_back: Millis,
    ) -> bool {
        let judged = |h: &HostRec| {
            let from = h.trap_start(check, network_back);
            let track = h.check(check);
            (
                track.verdict_from(now, trap, from),
                track.trap_expires(trap, from),
            )
        };
        let before = judged(self);
        let agent_up = self.agent_up;
        let track = self.check_mut(check);
        match result {
            // Older than a newer result, or asked while the network guard held.
            _ if track.stale(started) || started < network_back => {}
            CheckResult::Ok => {
                track.record_ok(now, started, trap);
                if check == CheckKind::Mysql {
                    self.probe_dead = false;
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
        judged(self) != before
    }

    /// The agent's probe saw mysqld go or come back. Returns whether it died just now.
    pub(super) fn record_probe(&mut self, now: Millis, kind: ProbeEventKind) -> bool {
        match kind {
            ProbeEventKind::ProcessExit | ProbeEventKind::ListenClose => {
                if self.probe_dead {
                    return false;
                }
                self.probe_dead = true;
                let what = if kind == ProbeEventKind::ProcessExit {
                    "mysqld process exited"
                } else {
                    "mysqld stopped listening"
                };
                self.check_mut(CheckKind::Mysql).record_failure(
                    now,
                    now,
                    format!("{what} (probe)"),
                    true,
                );
                true
            }
            ProbeEventKind::ListenOpen => {
                self.probe_dead = false;
                false
            }
        }
    }

    /// The agent answered with `view`. Returns whether what it reports changed (it
    /// replicates again, mysqld came up...): its uptime alone changes every second and
    /// decides nothing by itself.
    pub(super) fn record_heartbeat(&mut self, now: Millis, view: AgentView) -> bool {
        let was_up = self.agent_up;
        self.agent_up = true;
        self.agent_seen = Some(now);
        let changed = self.view.as_ref().is_none_or(|v| !v.same_but_uptime(&view));
        self.self_fenced_since = match (view.self_fenced, self.self_fenced_since) {
            (false, _) => None,
            (true, since) => since.or(Some(now)),
        };
        self.view = Some(view);
        if !was_up {
            // It needs to hear its desired state again on the new connection.
            self.last_sent = None;
        }
        changed
    }

    /// Its agent does not answer (it last did at `last_heard`, if the link knows).
    /// Returns whether that is news.
    pub(super) fn record_unreachable(&mut self, last_heard: Option<Millis>) -> bool {
        let news = self.agent_up || self.agent_seen.is_none();
        // What a silent agent's server does is not known: not its self-fence either.
        self.self_fenced_since = None;
        if let Some(t) = last_heard {
            self.agent_seen = Some(self.agent_seen.map_or(t, |s| s.max(t)));
        }
        if news {
            self.agent_up = false;
        }
        news
    }

    /// Its full status: the GTID set, failing closed (an unknown set is not an empty one).
    pub(super) fn record_status(&mut self, now: Millis, report: &StatusReport) {
        match report.gtid_set() {
            Ok(set) => {
                self.gtid = Some(set);
                self.gtid_unknown = None;
            }
            Err(e) => {
                self.gtid = None;
                self.gtid_unknown = Some(e.to_string());
            }
        }
        self.gtid_at = Some(now);
    }
}

fn check_index(c: CheckKind) -> usize {
    match c {
        CheckKind::Ping => 0,
        CheckKind::Mysql => 1,
        CheckKind::RepThreads => 2,
        CheckKind::RepBacklog => 3,
    }
}

impl<'a> IntoIterator for &'a Hosts {
    type Item = &'a HostRec;
    type IntoIter = std::slice::Iter<'a, HostRec>;

    fn into_iter(self) -> Self::IntoIter {
        self.recs.iter()
    }
}

impl<'a> IntoIterator for &'a mut Hosts {
    type Item = &'a mut HostRec;
    type IntoIter = std::slice::IterMut<'a, HostRec>;

    fn into_iter(self) -> Self::IntoIter {
        self.recs.iter_mut()
    }
}

/// How many departures from ONLINE within how long make a host flapping.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlapRule {
    pub window: Millis,
    pub count: u32,
}

/// Every host, in config order, found by name.
#[derive(Debug, Clone)]
pub struct Hosts {
    recs: Vec<HostRec>,
    /// Host name -> index into `recs`: events name hosts, and clusters have hundreds.
    index: HashMap<String, usize>,
    /// State transitions so far: a handler that made one judges every host again.
    transitions: u64,
}

impl Hosts {
    /// Every configured host AWAITING_RECOVERY since `now`.
    pub fn new(config: &Config, now: Millis) -> Hosts {
        Hosts {
            recs: config.hosts.iter().map(|h| HostRec::new(h, now)).collect(),
            index: config
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.name.clone(), i))
                .collect(),
            transitions: 0,
        }
    }

    pub fn all(&self) -> &[HostRec] {
        &self.recs
    }

    pub fn iter(&self) -> std::slice::Iter<'_, HostRec> {
        self.recs.iter()
    }

    pub fn get(&self, name: &str) -> Option<&HostRec> {
        self.index.get(name).map(|i| &self.recs[*i])
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut HostRec> {
        self.index.get(name).map(|i| &mut self.recs[*i])
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.recs.iter().map(|h| h.name.clone()).collect()
    }

    /// State transitions so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Moves `name` to `to`, told once with its reason; a departure from ONLINE counts
    /// towards flapping. Returns the state it left, if it moved.
    pub(super) fn set_state(
        &mut self,
        now: Millis,
        name: &str,
        to: HostState,
        reason: &str,
        flaps: FlapRule,
        out: &mut Vec<CoreAction>,
    ) -> Option<HostState> {
        let h = self.get_mut(name)?;
        if h.state == to {
            return None;
        }
        let from = h.state;
        if from == HostState::Online {
            h.uptime_at_failure = h.view.as_ref().map(|v| v.uptime_s);
            if h.flaps.depart(now, flaps.window, flaps.count) && !h.flapping {
                h.flapping = true;
                out.push(CoreAction::Notify {
                    host: Some(name.into()),
                    message: format!("Host '{name}' is flapping!"),
                });
            }
        }
        if to == HostState::Online {
            h.online_since = now;
        }
        h.state = to;
        h.since = now;
        h.reason = reason.to_string();
        out.push(CoreAction::Notify {
            host: Some(name.into()),
            message: format!(
                "State of host '{name}' changed from {from} to {to}{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
        });
        self.transitions += 1;
        Some(from)
    }

    /// An operator's command moves `name` to `to` (no flap counted, told by the command).
    /// Returns the state it left.
    pub(super) fn force_state(
        &mut self,
        now: Millis,
        name: &str,
        to: HostState,
        reason: String,
    ) -> Option<HostState> {
        let h = self.get_mut(name)?;
        let from = h.state;
        h.state = to;
        h.since = now;
        h.reason = reason;
        self.transitions += 1;
        Some(from)
    }

    /// The monitor could not observe for `paused` until `now`: a failing check's trap
    /// pauses for that long (a failure counts only the time it was seen from a working
    /// monitor).
    pub(super) fn blind_for(&mut self, now: Millis, paused: Millis) {
        for h in &mut self.recs {
            for c in &mut h.checks {
                if let Some(f) = &mut c.failing {
                    f.since = (f.since + paused).min(now);
                }
            }
        }
    }
}
