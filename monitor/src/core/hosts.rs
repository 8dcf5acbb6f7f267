//! The hosts: each one's record (configuration, evidence, state), and the one place a
//! state changes ([`Hosts::set_state`]), which counts transitions and flaps.

use super::health::{CheckTrack, Flaps};
use super::{Action, AgentView, Millis};
use mmm_common::config::{Config, Host as HostConfig};
use mmm_common::gtid::GtidSet;
use mmm_common::proto::DesiredState;
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
        out: &mut Vec<Action>,
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
                out.push(Action::Notify {
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
        out.push(Action::Notify {
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
