//! The monitor fleet's leadership terms, as this agent has seen them.
//!
//! In a fleet (`[coordination]`) every monitor's Hello carries the term it leads in: the
//! epoch its leader wrote at `<prefix>/cluster` and the revision of its election key
//! (`mmm_common::epoch`). The agent keeps the highest term it has accepted, on disk in
//! `<state_dir>/<host>.term`, and refuses a lower one of the same epoch: a deposed leader
//! that still believes it leads cannot drive this host once its successor has spoken to
//! it, not even after an agent restart. A term of another epoch is not ordered by its
//! revision (revisions start again in a wiped etcd and go back in a restored one): it is
//! taken only when this agent's own read of etcd shows that epoch's record, verified with
//! the cluster key, and that term leading the election, so the etcd history the old epoch
//! belonged to is really gone from the etcd this agent reaches. (An agent that follows no epoch yet, fresh or from before
//! epochs, takes the first term etcd does not contradict when etcd cannot be asked: it
//! has left no history behind to be confused with.) A new term is written to disk before
//! it is accepted. Term 0 is a monitor without a fleet: refused in a fleet, and the only
//! term there is without one.
//!
//! This module decides and persists; `crate::authority` asks etcd when
//! [`Terms::needs_etcd`] says so and closes the sessions of earlier terms
//! (`Lease::enter_term`).

use mmm_common::epoch::{EpochRecord, Term};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a monitor's term was refused; the text goes back to the monitor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this agent belongs to a monitor fleet ([coordination]): a monitor without a term (term 0) or without an epoch is refused")]
    NoTerm,
    #[error("term {term} refused: this agent has no [coordination] section (its config must name the fleet's etcd and prefix)")]
    NotInFleet { term: Term },
    #[error("term {term} is over: this agent has seen term {highest}")]
    Stale { term: Term, highest: Term },
    #[error("term {term} is not of the epoch etcd shows (epoch {shown:016x}): its leader was deposed, or led an etcd that is gone (wiped, re-created or restored)")]
    OtherEpoch { term: Term, shown: u64 },
    #[error("term {term} is earlier than its epoch, which begins with term {begins}")]
    BeforeEpoch { term: Term, begins: u64 },
    #[error("term {term} does not lead the election of the epoch etcd shows ({})", leading_text(.leading))]
    NotLeading { term: Term, leading: Option<u64> },
    #[error("term {term} is of another epoch than this agent's (term {highest}) and etcd cannot confirm it: {reason}")]
    Unconfirmed {
        term: Term,
        highest: Term,
        reason: String,
    },
    #[error("term {term} not accepted: it cannot be recorded in {path}: {reason}")]
    NotRecorded {
        term: Term,
        path: String,
        reason: String,
    },
}

/// What an accepted term means for the sessions already open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The term already known (or term 0 without a fleet).
    Same,
    /// A higher term of the same epoch: every session of an earlier one must close.
    Higher { was: Term },
    /// A term of another epoch, which etcd shows: every session of an earlier one must
    /// close.
    NewEpoch { was: Term },
}

fn leading_text(leading: &Option<u64>) -> String {
    leading.map_or_else(
        || "no monitor leads".to_string(),
        |rev| format!("the leader's revision is {rev}"),
    )
}

/// What this agent's own read of etcd showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// etcd was not asked (the term's epoch is the one this agent follows).
    NotAsked,
    /// The record at `<prefix>/cluster`, verified with the cluster key, and the revision
    /// of the election's leader, read together.
    Etcd {
        record: EpochRecord,
        leading: Option<u64>,
    },
    /// No verified record: etcd did not answer, or the key is missing or does not verify.
    Unknown(String),
}

/// The pure rule: `term` against the highest seen, in a fleet or not, with what etcd
/// showed when the epochs differ.
pub fn judge(fleet: bool, highest: Term, term: Term, shown: &Shown) -> Result<Accepted, Refused> {
    if !fleet {
        // Without a fleet every monitor speaks in term 0. A fleet's leader reaching an
        // agent configured without `[coordination]` is a config drift it must not paper
        // over: it would fence this host by an etcd lease the agent does not hold, while
        // the agent's permit runs on the monitor's heartbeats.
        return if term == Term::NONE {
            Ok(Accepted::Same)
        } else {
            Err(Refused::NotInFleet { term })
        };
    }
    if term.rev == 0 || term.epoch == 0 {
        return Err(Refused::NoTerm);
    }
    if term.epoch == highest.epoch {
        return match term.rev.cmp(&highest.rev) {
            std::cmp::Ordering::Less => Err(Refused::Stale { term, highest }),
            std::cmp::Ordering::Equal => Ok(Accepted::Same),
            std::cmp::Ordering::Greater => Ok(Accepted::Higher { was: highest }),
        };
    }
    // Revisions of two epochs say nothing about each other: only etcd, as this agent
    // reaches it, can say which epoch is current. A revision higher than the highest seen
    // is no reason either: a deposed leader of an etcd that is gone may hold one. The
    // term must lead too: the record alone, put back by someone who can write to etcd,
    // would let a deposed leader of its epoch take the agent from the current one.
    match shown {
        Shown::Etcd { record, .. } if record.epoch != term.epoch => Err(Refused::OtherEpoch {
            term,
            shown: record.epoch,
        }),
        Shown::Etcd { record, .. } if term.rev < record.term => Err(Refused::BeforeEpoch {
            term,
            begins: record.term,
        }),
        Shown::Etcd { leading, .. } if *leading != Some(term.rev) => Err(Refused::NotLeading {
            term,
            leading: *leading,
        }),
        Shown::Etcd { .. } => Ok(Accepted::NewEpoch { was: highest }),
        // No epoch followed yet (a fresh agent, a reboot that emptied state_dir, a term
        // file from before epochs): nothing this agent moved away from can come back
        // through here, so etcd's silence does not keep it unmanaged. As before epochs,
        // at worst a deposed leader is admitted until the current one connects; an order
        // that could make a writer is confirmed with etcd all the same (crate::election).
        _ if highest.epoch == 0 => Ok(Accepted::NewEpoch { was: highest }),
        Shown::NotAsked => Err(Refused::Unconfirmed {
            term,
            highest,
            reason: "etcd was not asked".into(),
        }),
        Shown::Unknown(reason) => Err(Refused::Unconfirmed {
            term,
            highest,
            reason: reason.clone(),
        }),
    }
}

struct State {
    highest: Term,
    /// Grows by one with every term accepted after the start: the order the lease's
    /// sessions are kept in (`Lease::enter_term`). Terms of two epochs have no order of
    /// their own; the one accepted later is the later one here.
    order: u64,
    /// Refused terms already logged: one warning per term, not per connection attempt.
    /// Bounded: only authenticated monitors reach here, and old terms are few.
    warned: BTreeSet<(u64, u64)>,
}

/// An accepted term, and its place in the order of terms accepted by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub accepted: Accepted,
    pub order: u64,
}

/// The highest term seen, kept across restarts.
pub struct Terms {
    fleet: bool,
    path: PathBuf,
    state: Mutex<State>,
}

impl Terms {
    /// Reads `<state_dir>/<host>.term`. A missing file is a fresh agent: term 0. An
    /// unreadable or corrupt one is logged and also read as 0: refusing to start would
    /// leave the host unmanaged until someone repairs the file, while starting from 0
    /// at worst admits a deposed leader until the current one connects, and its higher
    /// term then closes the deposed one's session. The writer permit in a fleet is the
    /// agent's own etcd lease, not the term, so no write depends on this file. A file
    /// from before epochs (a revision alone) is a term without an epoch: the next leader
    /// is taken once etcd shows its epoch.
    pub fn load(fleet: bool, state_dir: &Path, host: &str) -> Terms {
        let path = path(state_dir, host);
        let highest = match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Some(t) => t,
                None => {
                    tracing::warn!(path = %path.display(), content = %text.trim(), "term file corrupt: starting from term 0 (the current leader's next connection records its term again)");
                    Term::NONE
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Term::NONE,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "term file unreadable: starting from term 0 (the current leader's next connection records its term again)");
                Term::NONE
            }
        };
        if fleet && highest != Term::NONE {
            tracing::info!(
                term = %highest,
                "highest monitor term resumed from before the restart"
            );
        }
        Terms {
            fleet,
            path,
            state: Mutex::new(State {
                highest,
                order: 0,
                warned: BTreeSet::new(),
            }),
        }
    }

    pub fn highest(&self) -> Term {
        self.lock().highest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `term` can only be judged with etcd's word on its epoch: a fleet term of
    /// another epoch than the one this agent follows.
    pub fn needs_etcd(&self, term: Term) -> bool {
        self.fleet && term.epoch != 0 && term.rev != 0 && term.epoch != self.lock().highest.epoch
    }

    /// Admits (or refuses) the Hello of `monitor` in `term`, with what etcd showed (see
    /// [`Terms::needs_etcd`]); a new term is saved first.
    pub fn admit(&self, monitor: &str, term: Term, shown: &Shown) -> Result<Admitted, Refused> {
        let mut s = self.lock();
        match judge(self.fleet, s.highest, term, shown) {
            Ok(accepted @ (Accepted::Higher { was } | Accepted::NewEpoch { was })) => {
                let text = format!("{} {:016x}\n", term.rev, term.epoch);
                if let Err(e) = crate::state_dir::replace(&self.path, &text) {
                    let refused = Refused::NotRecorded {
                        term,
                        path: self.path.display().to_string(),
                        reason: e.to_string(),
                    };
                    tracing::error!(monitor, %refused, "monitor refused");
                    return Err(refused);
                }
                s.highest = term;
                s.order += 1;
                s.warned.clear();
                if matches!(accepted, Accepted::NewEpoch { .. }) {
                    tracing::info!(
                        "monitor {monitor} leads in term {term}, of the epoch etcd shows (was {was}): sessions of earlier terms close"
                    );
                } else {
                    tracing::info!(
                        "monitor {monitor} leads in term {term} (was {was}): sessions of earlier terms close"
                    );
                }
                Ok(Admitted {
                    accepted,
                    order: s.order,
                })
            }
            Ok(same) => Ok(Admitted {
                accepted: same,
                order: s.order,
            }),
            Err(refused) => {
                if s.warned.insert((term.epoch, term.rev)) {
                    tracing::warn!(monitor, %refused, "monitor refused");
                }
                Err(refused)
            }
        }
    }
}

/// `<revision> <epoch, 16 hex digits>`, or a revision alone (written before epochs).
fn parse(text: &str) -> Option<Term> {
    let mut words = text.split_whitespace();
    let rev = words.next()?.parse().ok()?;
    let epoch = match words.next() {
        None => 0,
        Some(e) => u64::from_str_radix(e, 16).ok()?,
    };
    words.next().is_none().then_some(Term { epoch, rev })
}

/// The file name of `host`'s term in `state_dir`.
pub fn path(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join(format!("{host}.term"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmm-term-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn t(epoch: u64, rev: u64) -> Term {
        Term { epoch, rev }
    }

    /// etcd shows the record of `epoch`, first term `first`, and `leading` leads.
    fn shows(epoch: u64, first: u64, leading: u64) -> Shown {
        Shown::Etcd {
            record: EpochRecord { epoch, term: first },
            leading: Some(leading),
        }
    }

    #[test]
    fn terms_are_ordered_within_an_epoch_and_term_0_belongs_to_no_fleet() {
        let none = &Shown::NotAsked;
        assert_eq!(
            judge(false, Term::NONE, Term::NONE, none),
            Ok(Accepted::Same)
        );
        assert_eq!(
            judge(false, t(1, 9), t(1, 3), none),
            Err(Refused::NotInFleet { term: t(1, 3) }),
            "no fleet: a fleet leader is a config drift"
        );
        assert_eq!(judge(true, t(1, 5), Term::NONE, none), Err(Refused::NoTerm));
        assert_eq!(
            judge(true, Term::NONE, Term::NONE, none),
            Err(Refused::NoTerm)
        );
        assert_eq!(
            judge(true, t(1, 5), t(0, 7), none),
            Err(Refused::NoTerm),
            "a fleet term without an epoch"
        );
        assert_eq!(
            judge(true, t(1, 5), t(1, 4), none),
            Err(Refused::Stale {
                term: t(1, 4),
                highest: t(1, 5)
            })
        );
        assert_eq!(judge(true, t(1, 5), t(1, 5), none), Ok(Accepted::Same));
        assert_eq!(
            judge(true, t(1, 5), t(1, 7), none),
            Ok(Accepted::Higher { was: t(1, 5) })
        );
        let msg = Refused::Stale {
            term: t(1, 4),
            highest: t(1, 5),
        }
        .to_string();
        assert!(
            msg.contains("term 4 (epoch 0000000000000001)") && msg.contains("term 5"),
            "{msg}"
        );
    }

    /// etcd wiped and re-created: revisions start again at 1, and the agents have seen
    /// term 222. A new leader's lower revision is taken once etcd shows its epoch and it
    /// leading; the deposed leader of the etcd that is gone is refused, whatever its
    /// revision and even with its record put back, and lower revisions of the new epoch
    /// are refused again.
    #[test]
    fn another_epoch_is_taken_only_when_etcd_shows_it_leading() {
        let old = t(0xaaaa, 222);
        let new = t(0xbbbb, 8);
        assert!(matches!(
            judge(true, old, new, &Shown::NotAsked),
            Err(Refused::Unconfirmed { .. })
        ));
        assert!(matches!(
            judge(true, old, new, &Shown::Unknown("etcd does not answer".into())),
            Err(Refused::Unconfirmed { reason, .. }) if reason == "etcd does not answer"
        ));
        assert_eq!(
            judge(true, old, new, &shows(0xbbbb, 8, 8)),
            Ok(Accepted::NewEpoch { was: old })
        );
        assert_eq!(
            judge(true, old, new, &shows(0xbbbb, 3, 8)),
            Ok(Accepted::NewEpoch { was: old }),
            "a later term of the epoch shown"
        );
        assert_eq!(
            judge(true, old, new, &shows(0xbbbb, 9, 9)),
            Err(Refused::BeforeEpoch {
                term: new,
                begins: 9
            })
        );
        assert_eq!(
            judge(true, old, new, &shows(0xbbbb, 8, 12)),
            Err(Refused::NotLeading {
                term: new,
                leading: Some(12)
            }),
            "deposed in the new epoch already"
        );
        let nobody = Shown::Etcd {
            record: EpochRecord {
                epoch: 0xbbbb,
                term: 8,
            },
            leading: None,
        };
        assert_eq!(
            judge(true, old, new, &nobody),
            Err(Refused::NotLeading {
                term: new,
                leading: None
            })
        );
        // The old epoch's record put back by someone who can write to etcd: its deposed
        // leader still does not lead the election.
        assert_eq!(
            judge(true, new, old, &shows(0xaaaa, 222, 9)),
            Err(Refused::NotLeading {
                term: old,
                leading: Some(9)
            })
        );
        assert_eq!(
            judge(true, old, new, &shows(0xcccc, 8, 8)),
            Err(Refused::OtherEpoch {
                term: new,
                shown: 0xcccc
            }),
            "etcd shows a third epoch"
        );
        // Moved on: the old epoch's leader is refused even with a revision far above.
        assert_eq!(
            judge(true, new, t(0xaaaa, 900), &shows(0xbbbb, 8, 8)),
            Err(Refused::OtherEpoch {
                term: t(0xaaaa, 900),
                shown: 0xbbbb
            })
        );
        assert!(matches!(
            judge(true, new, t(0xaaaa, 900), &Shown::Unknown("down".into())),
            Err(Refused::Unconfirmed { .. })
        ));
        // Within the new epoch the usual order holds.
        assert!(matches!(
            judge(true, new, t(0xbbbb, 5), &Shown::NotAsked),
            Err(Refused::Stale { .. })
        ));
        // A term file from before epochs, or none: etcd's word when it has one...
        assert_eq!(
            judge(true, t(0, 222), new, &shows(0xbbbb, 8, 8)),
            Ok(Accepted::NewEpoch { was: t(0, 222) })
        );
        assert!(matches!(
            judge(true, Term::NONE, new, &shows(0xcccc, 1, 1)),
            Err(Refused::OtherEpoch { .. })
        ));
        // ...and the first term when etcd cannot say: no epoch was left behind.
        for first in [t(0, 222), Term::NONE] {
            assert_eq!(
                judge(
                    true,
                    first,
                    new,
                    &Shown::Unknown("etcd does not answer".into())
                ),
                Ok(Accepted::NewEpoch { was: first })
            );
        }
    }

    #[test]
    fn the_highest_term_survives_a_restart_and_corruption_reads_as_0() {
        let d = dir("persist");
        let none = &Shown::NotAsked;
        let t3 = t(7, 3);
        let terms = Terms::load(true, &d, "db1");
        assert_eq!(terms.highest(), Term::NONE);
        assert!(terms.needs_etcd(t3));
        assert_eq!(
            terms.admit("m1", t3, &shows(7, 3, 3)),
            Ok(Admitted {
                accepted: Accepted::NewEpoch { was: Term::NONE },
                order: 1
            })
        );
        assert!(!terms.needs_etcd(t3));
        assert_eq!(
            terms.admit("m1", t3, none),
            Ok(Admitted {
                accepted: Accepted::Same,
                order: 1
            })
        );
        assert!(terms.admit("m0", t(7, 2), none).is_err());
        assert_eq!(
            terms.admit("m2", t(7, 5), none).map(|a| a.order),
            Ok(2),
            "each accepted term comes later in the order"
        );
        drop(terms);
        let terms = Terms::load(true, &d, "db1");
        assert_eq!(
            terms.highest(),
            t(7, 5),
            "a restarted agent remembers the term"
        );
        assert_eq!(
            terms.admit("m0", t(7, 3), none),
            Err(Refused::Stale {
                term: t(7, 3),
                highest: t(7, 5)
            })
        );
        std::fs::write(path(&d, "db1"), "222\n").unwrap();
        assert_eq!(
            Terms::load(true, &d, "db1").highest(),
            t(0, 222),
            "a term file from before epochs"
        );
        std::fs::write(path(&d, "db1"), "not a number\n").unwrap();
        assert_eq!(Terms::load(true, &d, "db1").highest(), Term::NONE);
        std::fs::write(path(&d, "db1"), "5 7 9\n").unwrap();
        assert_eq!(Terms::load(true, &d, "db1").highest(), Term::NONE);
    }

    #[test]
    fn a_term_that_cannot_be_recorded_is_refused() {
        let d = dir("unwritable");
        std::fs::create_dir_all(&d).unwrap();
        // A directory where the file should be: the rename fails.
        std::fs::create_dir_all(path(&d, "db1")).unwrap();
        let terms = Terms::load(true, &d, "db1");
        assert!(matches!(
            terms.admit("m1", t(1, 4), &shows(1, 4, 4)),
            Err(Refused::NotRecorded { .. })
        ));
        assert_eq!(terms.highest(), Term::NONE);
    }
}
