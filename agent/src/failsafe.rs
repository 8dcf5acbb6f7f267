//! The writer's failsafe in a fleet: writes go on while etcd has no majority.
//!
//! In a fleet the writer's permit is its own etcd lease (crate::etcd). With etcd's
//! majority gone nobody can renew a lease, nobody can be elected and nothing can be
//! promoted; etcd also expires no lease then, and refreshes every lease to a whole TTL
//! when its majority is back. So a writer that stops at its permit's end, as it must
//! when only *it* is cut from etcd, stops writes for nothing when *everyone* is.
//!
//! The failsafe tells the two apart with the monitors' word, counted on this agent's
//! clock alone:
//!
//! - Every fleet monitor that cannot reach etcd sends, after each heartbeat answer it
//!   reads from this agent, a [`Consent`](mmm_common::proto::Consent) echoing that
//!   heartbeat's request id. The consent counts from when this agent *sent* that
//!   answer ([`Failsafe::answered`]): a frame that waited anywhere (a frozen monitor, a
//!   frozen agent, the network) counts from before it waited.
//! - A monitor consenting promises to end no writer's permit by waiting until
//!   `session_ttl` after it sent the consent (monitor/src/witness.rs); a monitor that
//!   reaches etcd's majority sends none, which is its veto. Each consent names the newest
//!   term its monitor knows of, and counts only when that is the term this agent follows.
//! - The leader of the term this agent follows adds its vouch: the fleet's roster, every
//!   monitor that may lead (the only ones that could promote over this host later). It
//!   vouches only while every agent it reaches says it cannot reach etcd either.
//!
//! With a vouch of the current term and a consent from every monitor of its roster, the
//! permit may run until the oldest of them plus the permit an etcd renewal gives
//! ([`held_for`]`(session_ttl)`). It only ever extends a permit still running, never one
//! that ended (a fence stays a fence), and only while this agent's own etcd lease is not
//! renewed (a writer that reaches etcd renews it there). docs/fencing.md has the argument.

use crate::clock::Boot;
use mmm_common::epoch::Term;
use mmm_common::timing::held_for;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How many heartbeat answers per session are remembered: a monitor echoes the newest it
/// read, so a few cover a slow reader; an echo older than these counts for nothing.
const ANSWERS_KEPT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Vouch {
    term: Term,
    roster: Vec<String>,
    at: Boot,
}

/// Consents and the vouch received, and when the answers they echo were sent.
#[derive(Debug, Default)]
pub struct Failsafe {
    /// Per session: (heartbeat request id, when its answer was sent), oldest first.
    answers: HashMap<u64, VecDeque<(u32, Boot)>>,
    /// Per monitor name: the newest consent, counted from its echoed answer.
    consents: HashMap<String, Boot>,
    vouch: Option<Vouch>,
}

/// What a consent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// It echoes no answer this session sent lately: counts for nothing.
    Unknown,
    /// Counted; the permit the failsafe now allows runs until `until` (None: a consent
    /// of the roster, or the vouch, is missing).
    Counted { until: Option<Boot> },
    /// A vouch of a term other than the one this agent follows: refused.
    OtherTerm,
}

impl Failsafe {
    /// Session `session` is sending the answer to heartbeat request `id` now. An id
    /// seen before on this session keeps its first time: a consent never counts later
    /// than the answer it may have read.
    pub fn answered(&mut self, session: u64, id: u32, at: Boot) {
        let sent = self.answers.entry(session).or_default();
        if sent.iter().any(|(seen, _)| *seen == id) {
            return;
        }
        if sent.len() == ANSWERS_KEPT {
            sent.pop_front();
        }
        sent.push_back((id, at));
    }

    pub fn closed(&mut self, session: u64) {
        self.answers.remove(&session);
    }

    /// A consent from `monitor` on `session`, echoing `echo`, from a monitor that knows
    /// of term `known` at newest, with its vouch (`vouch` not `Term::NONE`) when it leads:
    /// `current` is the term this agent follows. `ttl` is `session_ttl`.
    #[allow(clippy::too_many_arguments)]
    pub fn consent(
        &mut self,
        session: u64,
        monitor: &str,
        echo: u32,
        known: Term,
        vouch: Term,
        roster: &[String],
        current: Term,
        ttl: Duration,
    ) -> Counted {
        let Some(at) = self
            .answers
            .get(&session)
            .and_then(|a| a.iter().find(|(id, _)| *id == echo))
            .map(|(_, at)| *at)
        else {
            return Counted::Unknown;
        };
        // A monitor that knows another term than the one this agent follows (a later
        // one it led or saw elected, whose leader may have listed monitors this term's
        // vouch does not name; or an earlier one) consents to nothing here.
        if known != current || known.is_witness() {
            return Counted::OtherTerm;
        }
        if vouch != Term::NONE {
            if vouch != current || vouch.is_witness() {
                return Counted::OtherTerm;
            }
            // The voucher is one of the monitors its roster names, whatever it sent.
            let mut roster = roster.to_vec();
            if !roster.iter().any(|m| m == monitor) {
                roster.push(monitor.to_string());
            }
            roster.sort();
            roster.dedup();
            if self.vouch.as_ref().is_none_or(|v| v.at <= at) {
                self.vouch = Some(Vouch {
                    term: vouch,
                    roster,
                    at,
                });
            }
        }
        let newest = self.consents.entry(monitor.to_string()).or_insert(at);
        if *newest < at {
            *newest = at;
        }
        Counted::Counted {
            until: self.until(current, ttl),
        }
    }

    /// Until when the failsafe allows the writer role: a vouch of the term `current`, and
    /// a consent of every monitor in its roster, each counted from its echoed answer.
    pub fn until(&self, current: Term, ttl: Duration) -> Option<Boot> {
        let v = self.vouch.as_ref().filter(|v| v.term == current)?;
        let mut oldest = v.at;
        for m in &v.roster {
            oldest = oldest.min(*self.consents.get(m)?);
        }
        Some(oldest.after(held_for(ttl)))
    }

    /// The monitors of the vouched roster without a consent since `since` (for the log
    /// and `show`: who keeps the failsafe from holding).
    pub fn missing(&self, since: Boot) -> Vec<String> {
        match &self.vouch {
            None => vec!["(no vouch from the leader)".into()],
            Some(v) => v
                .roster
                .iter()
                .filter(|m| self.consents.get(*m).is_none_or(|at| *at < since))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(4);
    const T: Term = Term { epoch: 7, rev: 100 };

    fn at(ms: u64) -> Boot {
        Boot::ZERO.after(Duration::from_millis(ms))
    }

    fn roster() -> Vec<String> {
        vec!["mon1".into(), "mon2".into()]
    }

    #[test]
    fn the_permit_needs_the_vouch_and_every_consent_and_counts_from_the_oldest() {
        let mut f = Failsafe::default();
        f.answered(1, 10, at(1000));
        f.answered(2, 20, at(1200));
        // mon2 alone consents: no vouch yet.
        assert_eq!(
            f.consent(2, "mon2", 20, T, Term::NONE, &[], T, TTL),
            Counted::Counted { until: None }
        );
        // mon1 leads and vouches for the roster {mon1, mon2}: both consented.
        let until = f.consent(1, "mon1", 10, T, T, &roster(), T, TTL);
        assert_eq!(
            until,
            Counted::Counted {
                until: Some(at(1000).after(held_for(TTL)))
            }
        );
        // A third monitor in the roster that never consented: nothing.
        let mut three = roster();
        three.push("mon3".into());
        f.answered(1, 11, at(1500));
        assert_eq!(
            f.consent(1, "mon1", 11, T, T, &three, T, TTL),
            Counted::Counted { until: None }
        );
        assert_eq!(f.missing(at(0)), vec!["mon3".to_string()]);
    }

    #[test]
    fn a_consent_counts_from_the_answer_it_echoes_never_later() {
        let mut f = Failsafe::default();
        f.answered(1, 10, at(1000));
        // The same id answered again later keeps the first time.
        f.answered(1, 10, at(5000));
        let Counted::Counted { until } = f.consent(1, "mon1", 10, T, T, &["mon1".into()], T, TTL)
        else {
            panic!("counted")
        };
        assert_eq!(until, Some(at(1000).after(held_for(TTL))));
        // An id this session never answered, or another session's, counts for nothing.
        assert_eq!(
            f.consent(1, "mon1", 99, T, T, &[], T, TTL),
            Counted::Unknown
        );
        assert_eq!(
            f.consent(2, "mon1", 10, T, T, &[], T, TTL),
            Counted::Unknown
        );
        f.closed(1);
        assert_eq!(
            f.consent(1, "mon1", 10, T, T, &[], T, TTL),
            Counted::Unknown
        );
    }

    #[test]
    fn only_the_current_term_vouches() {
        let mut f = Failsafe::default();
        f.answered(1, 1, at(10));
        let old = Term { epoch: 7, rev: 90 };
        assert_eq!(
            f.consent(1, "mon1", 1, T, old, &roster(), T, TTL),
            Counted::OtherTerm
        );
        assert_eq!(
            f.consent(
                1,
                "mon1",
                1,
                T,
                Term::WITNESS,
                &roster(),
                Term::WITNESS,
                TTL
            ),
            Counted::OtherTerm
        );
        // A monitor that knows a later term consents to nothing under this one.
        let later = Term { epoch: 8, rev: 120 };
        assert_eq!(
            f.consent(1, "mon2", 1, later, Term::NONE, &[], T, TTL),
            Counted::OtherTerm
        );
        // A vouch taken under T is void once the agent follows a later term.
        f.answered(2, 1, at(20));
        f.consent(2, "mon2", 1, T, Term::NONE, &[], T, TTL);
        assert!(matches!(
            f.consent(1, "mon1", 1, T, T, &roster(), T, TTL),
            Counted::Counted { until: Some(_) }
        ));
        assert_eq!(f.until(Term { epoch: 8, rev: 1 }, TTL), None);
    }

    #[test]
    fn only_a_few_answers_per_session_are_remembered() {
        let mut f = Failsafe::default();
        for id in 0..100u32 {
            f.answered(1, id, at(u64::from(id)));
        }
        assert_eq!(
            f.consent(1, "mon1", 5, T, Term::NONE, &[], T, TTL),
            Counted::Unknown
        );
        assert!(matches!(
            f.consent(1, "mon1", 99, T, Term::NONE, &[], T, TTL),
            Counted::Counted { .. }
        ));
    }
}
