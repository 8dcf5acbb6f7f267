//! What happened lately, for `show --json` (and through it the HTTP API's `/events` and
//! the live page): host state transitions, and failovers with their timelines and cause.
//! Bounded and in memory only: a restarted or newly elected monitor starts with none.
//! Nothing is decided on it.

use super::promote::Promotion;
use super::{Cluster, Millis};
use mmm_common::types::HostState;
use serde::Serialize;
use std::collections::VecDeque;

/// How many transitions and failovers are kept, newest last.
pub const TRANSITIONS: usize = 50;
pub const FAILOVERS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Monitor clock, ms since the Unix epoch.
    pub at_ms: Millis,
    pub host: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// How a promotion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The candidate is the writer.
    Promoted,
    /// Given up (the refusal says why); a later attempt is a failover of its own.
    Refused,
}

/// One step of a failover's timeline, as the failover log line prints it (`+12ms ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Milliseconds since the promotion started.
    pub offset_ms: Millis,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failover {
    pub started_ms: Millis,
    pub ended_ms: Millis,
    /// ended - started: the figure of the log line's "is the new writer after N ms".
    pub total_ms: Millis,
    pub from: Option<String>,
    pub to: String,
    /// Why the promotion started (the host's failure, or the operator's move_role).
    pub cause: String,
    pub outcome: Outcome,
    /// Why it was refused; none when promoted.
    pub refusal: Option<String>,
    pub steps: Vec<Step>,
}

impl Failover {
    pub fn of(p: &Promotion, now: Millis, outcome: Outcome, refusal: Option<String>) -> Failover {
        Failover {
            started_ms: p.started,
            ended_ms: now,
            total_ms: now.saturating_sub(p.started),
            from: p.from.clone(),
            to: p.to.clone(),
            cause: p.reason.clone(),
            outcome,
            refusal,
            steps: steps(p),
        }
    }
}

/// The timeline of a promotion, ended or not.
pub fn steps(p: &Promotion) -> Vec<Step> {
    p.timeline
        .iter()
        .map(|(offset_ms, what)| Step {
            offset_ms: *offset_ms,
            what: what.clone(),
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct History {
    transitions: VecDeque<Transition>,
    failovers: VecDeque<Failover>,
}

impl History {
    pub fn transition(&mut self, t: Transition) {
        push_bounded(&mut self.transitions, t, TRANSITIONS);
    }

    pub fn failover(&mut self, f: Failover) {
        push_bounded(&mut self.failovers, f, FAILOVERS);
    }

    /// Oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.transitions.iter()
    }

    /// Oldest first.
    pub fn failovers(&self) -> impl Iterator<Item = &Failover> {
        self.failovers.iter()
    }
}

impl Cluster {
    /// Keeps a host's transition (the core's own, or an operator's command).
    pub(super) fn remember_transition(
        &mut self,
        now: Millis,
        host: &str,
        from: HostState,
        to: HostState,
        reason: &str,
    ) {
        self.history.transition(Transition {
            at_ms: now,
            host: host.into(),
            from: from.to_string(),
            to: to.to_string(),
            reason: reason.into(),
        });
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, bound: usize) {
    if q.len() == bound {
        q.pop_front();
    }
    q.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_within_its_bound() {
        let mut h = History::default();
        for i in 0..(TRANSITIONS as u64 + 5) {
            h.transition(Transition {
                at_ms: i,
                host: "db1".into(),
                from: "ONLINE".into(),
                to: "HARD_OFFLINE".into(),
                reason: String::new(),
            });
        }
        let kept: Vec<u64> = h.transitions().map(|t| t.at_ms).collect();
        assert_eq!(kept.len(), TRANSITIONS);
        assert_eq!(kept.first(), Some(&5));
        assert_eq!(kept.last(), Some(&(TRANSITIONS as u64 + 4)));
    }
}
