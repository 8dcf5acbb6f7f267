//! Whether a monitor may drive this host: one place for the three things that decide it.
//!
//! - The fleet's terms (`crate::term`): the highest term accepted, kept on disk; a lower
//!   one of the same epoch is refused, one of another epoch needs etcd's word.
//! - etcd's election (`crate::election`): in a fleet an order is obeyed only from the
//!   term that leads now, and a Hello of another epoch is judged by what etcd shows.
//! - The lease's sessions (`crate::lease`): a newly accepted term closes every session of
//!   the earlier ones, and a handshake overtaken by a later term opens none.
//!
//! A term accepted without the lease told would leave a deposed monitor's session open,
//! so accepting a term and entering it in the lease are one step here, whether the term
//! comes in a Hello ([`Authority::admit`]) or is the one etcd's election names when it
//! refuses an order ([`Authority::confirm`]).

use crate::election::{Election, NotLeader};
use crate::lease::Lease;
use crate::term::{Accepted, Refused, Shown, Terms};
use mmm_common::epoch::Term;
use std::sync::Arc;
use tokio::sync::watch;

/// A monitor's term, accepted at its handshake: open its session with
/// [`Authority::open_session`] once it has authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub accepted: Accepted,
    /// The term's place in the order this process accepted terms in (`Terms::admit`).
    order: u64,
}

/// A monitor session, open in its term.
pub struct Opened {
    pub id: u64,
    /// Changes when the session must close: a fence, or a later term accepted.
    pub closing: watch::Receiver<u64>,
}

/// The session was not opened: a later term was accepted during its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a later term began during the handshake of term {term}")]
pub struct Overtaken {
    pub term: Term,
}

/// What an order stands to change, which decides how sure the election must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stake {
    /// It could make this host a writer (writable, a writer VIP, parking, or lifting a
    /// fence): etcd is asked every time, and no answer is a refusal.
    Writer,
    /// A reader role or a demotion: the watch's answer will do, and an etcd that cannot
    /// be asked does not hold it up.
    NoWriter,
}

/// Why an order is obeyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// No fleet: the terms and the lease decide alone.
    NoFleet,
    /// etcd's election says this term leads.
    Leads,
    /// etcd could not say, and the order makes no writer.
    Unconfirmed { reason: String },
}

/// The terms, the election and the lease's sessions, behind one API.
pub struct Authority {
    terms: Terms,
    /// In a fleet: etcd's election, which a monitor's term must lead to be obeyed.
    election: Option<Arc<Election>>,
    lease: Arc<Lease>,
}

impl Authority {
    pub fn new(terms: Terms, election: Option<Arc<Election>>, lease: Arc<Lease>) -> Authority {
        Authority {
            terms,
            election,
            lease,
        }
    }

    /// The highest term accepted.
    pub fn highest(&self) -> Term {
        self.terms.highest()
    }

    /// Judges the Hello of `monitor` in `term`: asks etcd first when the term is of
    /// another epoch than this agent's. A newer term is recorded, and every session of
    /// an earlier one told to close, before this returns. A refusal is logged by the
    /// terms, once per term; its text is for the monitor.
    pub async fn admit(&self, monitor: &str, term: Term) -> Result<Entry, Refused> {
        let shown = match &self.election {
            Some(e) if self.terms.needs_etcd(term) => e.shown().await,
            _ => Shown::NotAsked,
        };
        self.admit_shown(monitor, term, &shown)
    }

    /// [`Authority::admit`] once etcd's word (if any) is in.
    fn admit_shown(&self, monitor: &str, term: Term, shown: &Shown) -> Result<Entry, Refused> {
        let admitted = self.terms.admit(monitor, term, shown)?;
        if let Accepted::Higher { .. } | Accepted::NewEpoch { .. } = admitted.accepted {
            self.lease.enter_term(admitted.order);
        }
        Ok(Entry {
            accepted: admitted.accepted,
            order: admitted.order,
        })
    }

    /// Opens the session of a monitor admitted in `entry` (`term` is for the refusal).
    pub fn open_session(&self, entry: Entry, term: Term) -> Result<Opened, Overtaken> {
        match self.lease.new_session(entry.order) {
            Some((id, closing)) => Ok(Opened { id, closing }),
            None => Err(Overtaken { term }),
        }
    }

    /// Whether an order of a session in `term` may be obeyed now, by etcd's election (a
    /// deposed leader woken up may still hold a session here: `crate::election`). When a
    /// later term leads, it is accepted as if its monitor had connected: this session
    /// closes, and the deposed monitor's reconnections are refused at the handshake.
    pub async fn confirm(&self, term: Term, stake: Stake) -> Result<Confirmed, NotLeader> {
        let Some(election) = &self.election else {
            return Ok(Confirmed::NoFleet);
        };
        match election.confirms(term, stake == Stake::Writer).await {
            Ok(()) => Ok(Confirmed::Leads),
            Err(NotLeader::Unknown { reason, .. }) if stake == Stake::NoWriter => {
                Ok(Confirmed::Unconfirmed { reason })
            }
            Err(not) => {
                tracing::warn!(reason = %not, "monitor order refused");
                self.follow(&not);
                Err(not)
            }
        }
    }

    /// Accepts the term etcd's election named in `not`, if it named one.
    fn follow(&self, not: &NotLeader) {
        if let NotLeader::Other {
            current, record, ..
        } = not
        {
            let shown = Shown::Etcd {
                record: *record,
                leading: Some(current.rev),
            };
            // A refusal here (the named term is not newer, or cannot be recorded) is
            // logged by the terms; the order is refused all the same.
            let _ = self.admit_shown("(etcd's election)", *current, &shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{NotFollowed, Renewal};
    use mmm_common::epoch::EpochRecord;
    use std::path::PathBuf;
    use std::time::Duration;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmm-authority-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn t(epoch: u64, rev: u64) -> Term {
        Term { epoch, rev }
    }

    /// A fleet agent (no etcd to ask here) whose highest term is `highest`.
    fn fleet(tag: &str, highest: Term) -> Authority {
        let d = dir(tag);
        if highest != Term::NONE {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                crate::term::path(&d, "db1"),
                format!("{} {:016x}\n", highest.rev, highest.epoch),
            )
            .unwrap();
        }
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Etcd, &d, "db1");
        Authority::new(Terms::load(true, &d, "db1"), None, Arc::new(lease))
    }

    fn shows(epoch: u64, first: u64, leading: u64) -> Shown {
        Shown::Etcd {
            record: EpochRecord { epoch, term: first },
            leading: Some(leading),
        }
    }

    #[tokio::test]
    async fn a_stale_term_is_refused_and_opens_nothing() {
        let a = fleet("stale", t(7, 5));
        assert_eq!(
            a.admit("m0", t(7, 4)).await,
            Err(Refused::Stale {
                term: t(7, 4),
                highest: t(7, 5)
            })
        );
        assert_eq!(a.highest(), t(7, 5));
    }

    #[tokio::test]
    async fn the_same_term_keeps_the_sessions_open() {
        let a = fleet("same", t(7, 5));
        let entry = a.admit("m1", t(7, 5)).await.unwrap();
        assert_eq!(entry.accepted, Accepted::Same);
        let first = a.open_session(entry, t(7, 5)).unwrap();
        let again = a.admit("m1", t(7, 5)).await.unwrap();
        let second = a.open_session(again, t(7, 5)).unwrap();
        assert!(second.id > first.id);
        assert!(
            !first.closing.has_changed().unwrap(),
            "a reconnection in the same term closed the open session"
        );
    }

    #[tokio::test]
    async fn a_newer_term_closes_the_sessions_of_older_ones() {
        let a = fleet("newer", t(7, 5));
        let old_entry = a.admit("m1", t(7, 5)).await.unwrap();
        let old = a.open_session(old_entry, t(7, 5)).unwrap();
        let entry = a.admit("m2", t(7, 6)).await.unwrap();
        assert_eq!(entry.accepted, Accepted::Higher { was: t(7, 5) });
        assert!(
            old.closing.has_changed().unwrap(),
            "the earlier term's session is told to close"
        );
        assert_eq!(
            a.lease.on_desired(old.id, false),
            Err(NotFollowed::TermOver)
        );
        let new = a.open_session(entry, t(7, 6)).unwrap();
        assert!(
            !new.closing.has_changed().unwrap(),
            "not closed by its own term"
        );
        assert!(a.lease.term_leads(new.id) && !a.lease.term_leads(old.id));
        // A handshake of the earlier term that was admitted before the newer one and
        // authenticates only now is overtaken.
        assert_eq!(
            a.open_session(old_entry, t(7, 5)).err(),
            Some(Overtaken { term: t(7, 5) })
        );
    }

    #[tokio::test]
    async fn another_epoch_needs_etcd_and_is_taken_only_when_it_shows_it_leading() {
        let a = fleet("epoch", t(0xaaaa, 222));
        let new = t(0xbbbb, 8);
        assert!(
            matches!(
                a.admit("m2", new).await,
                Err(Refused::Unconfirmed { reason, .. }) if reason == "etcd was not asked"
            ),
            "no etcd to ask: refused"
        );
        let old_entry = a.admit("m1", t(0xaaaa, 222)).await.unwrap();
        let old = a.open_session(old_entry, t(0xaaaa, 222)).unwrap();
        assert!(matches!(
            a.admit_shown("m2", new, &shows(0xbbbb, 8, 12)),
            Err(Refused::NotLeading { .. })
        ));
        assert!(!old.closing.has_changed().unwrap());
        let entry = a.admit_shown("m2", new, &shows(0xbbbb, 8, 8)).unwrap();
        assert_eq!(
            entry.accepted,
            Accepted::NewEpoch {
                was: t(0xaaaa, 222)
            }
        );
        assert!(old.closing.has_changed().unwrap());
        assert!(a.open_session(entry, new).is_ok());
    }

    #[tokio::test]
    async fn without_a_fleet_only_term_0_is_admitted_and_orders_need_no_election() {
        let d = dir("nofleet");
        let lease = Arc::new(Lease::new(
            Duration::from_secs(5),
            true,
            Renewal::Monitor,
            &d,
            "db1",
        ));
        let a = Authority::new(Terms::load(false, &d, "db1"), None, lease);
        let entry = a.admit("m1", Term::NONE).await.unwrap();
        assert_eq!(entry.accepted, Accepted::Same);
        assert!(a.open_session(entry, Term::NONE).is_ok());
        assert_eq!(
            a.admit("m1", t(1, 3)).await,
            Err(Refused::NotInFleet { term: t(1, 3) })
        );
        assert_eq!(
            a.confirm(Term::NONE, Stake::Writer).await,
            Ok(Confirmed::NoFleet)
        );
    }

    #[tokio::test]
    async fn a_later_leader_named_by_the_election_closes_the_deposed_terms_sessions() {
        let a = fleet("follow", t(7, 5));
        let entry = a.admit("m1", t(7, 5)).await.unwrap();
        let deposed = a.open_session(entry, t(7, 5)).unwrap();
        // Nobody leads, or etcd cannot say: nothing to follow.
        a.follow(&NotLeader::Nobody { term: t(7, 5) });
        a.follow(&NotLeader::Unknown {
            term: t(7, 5),
            reason: "down".into(),
        });
        assert!(!deposed.closing.has_changed().unwrap());
        a.follow(&NotLeader::Other {
            term: t(7, 5),
            current: t(7, 9),
            record: EpochRecord { epoch: 7, term: 1 },
        });
        assert_eq!(a.highest(), t(7, 9));
        assert!(deposed.closing.has_changed().unwrap());
        assert!(!a.lease.term_leads(deposed.id));
        assert!(
            matches!(a.admit("m1", t(7, 5)).await, Err(Refused::Stale { .. })),
            "the deposed monitor's reconnection is refused at the handshake"
        );
    }
}
