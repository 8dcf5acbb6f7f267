//! The monitor fleet's leadership terms, as this agent has seen them.
//!
//! In a fleet (`[coordination]`) every monitor's Hello carries the term it leads in. The
//! agent keeps the highest term it has accepted, on disk in `<state_dir>/<host>.term`,
//! and refuses a lower one: a deposed leader that still believes it leads cannot drive
//! this host once its successor has spoken to it, not even after an agent restart. A
//! higher term is written to disk before it is accepted. Term 0 is a monitor without a
//! fleet: refused in a fleet, and the only term there is without one.
//!
//! This module decides and persists; the server closes the sessions of a lower term
//! (`Lease::enter_term`).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a monitor's term was refused; the text goes back to the monitor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this agent belongs to a monitor fleet ([coordination]): a monitor without a term (term 0) is refused")]
    NoTerm,
    #[error("term {term} refused: this agent has no [coordination] section (its config must name the fleet's etcd and prefix)")]
    NotInFleet { term: u64 },
    #[error("term {term} is over: this agent has seen term {highest}")]
    Stale { term: u64, highest: u64 },
    #[error("term {term} not accepted: it cannot be recorded in {path}: {reason}")]
    NotRecorded {
        term: u64,
        path: String,
        reason: String,
    },
}

/// What an accepted term means for the sessions already open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The term already known (or term 0 without a fleet).
    Same,
    /// A new, higher term: every session of a lower one must close.
    Higher { was: u64 },
}

/// The pure rule: `term` against the highest seen, in a fleet or not.
pub fn judge(fleet: bool, highest: u64, term: u64) -> Result<Accepted, Refused> {
    if !fleet {
        // Without a fleet every monitor speaks in term 0. A fleet's leader reaching an
        // agent configured without `[coordination]` is a config drift it must not paper
        // over: it would fence this host by an etcd lease the agent does not hold, while
        // the agent's permit runs on the monitor's heartbeats.
        return if term == 0 {
            Ok(Accepted::Same)
        } else {
            Err(Refused::NotInFleet { term })
        };
    }
    if term == 0 {
        return Err(Refused::NoTerm);
    }
    match term.cmp(&highest) {
        std::cmp::Ordering::Less => Err(Refused::Stale { term, highest }),
        std::cmp::Ordering::Equal => Ok(Accepted::Same),
        std::cmp::Ordering::Greater => Ok(Accepted::Higher { was: highest }),
    }
}

struct State {
    highest: u64,
    /// Refused terms already logged: one warning per term, not per connection attempt.
    /// Bounded: only authenticated monitors reach here, and old terms are few.
    warned: BTreeSet<u64>,
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
    /// agent's own etcd lease, not the term, so no write depends on this file.
    pub fn load(fleet: bool, state_dir: &Path, host: &str) -> Terms {
        let path = path(state_dir, host);
        let highest = match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Some(t) => t,
                None => {
                    tracing::warn!(path = %path.display(), content = %text.trim(), "term file corrupt: starting from term 0 (the current leader's next connection records its term again)");
                    0
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "term file unreadable: starting from term 0 (the current leader's next connection records its term again)");
                0
            }
        };
        if fleet && highest > 0 {
            tracing::info!(
                term = highest,
                "highest monitor term resumed from before the restart"
            );
        }
        Terms {
            fleet,
            path,
            state: Mutex::new(State {
                highest,
                warned: BTreeSet::new(),
            }),
        }
    }

    pub fn highest(&self) -> u64 {
        self.lock().highest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits (or refuses) the Hello of `monitor` in `term`; a higher term is saved first.
    pub fn admit(&self, monitor: &str, term: u64) -> Result<Accepted, Refused> {
        let mut s = self.lock();
        match judge(self.fleet, s.highest, term) {
            Ok(Accepted::Higher { was }) => {
                if let Err(e) = replace_file(&self.path, &format!("{term}\n")) {
                    let refused = Refused::NotRecorded {
                        term,
                        path: self.path.display().to_string(),
                        reason: e.to_string(),
                    };
                    tracing::error!(monitor, %refused, "monitor refused");
                    return Err(refused);
                }
                s.highest = term;
                s.warned.clear();
                tracing::info!(
                    "monitor {monitor} leads in term {term} (was {was}): sessions of earlier terms close"
                );
                Ok(Accepted::Higher { was })
            }
            Ok(same) => Ok(same),
            Err(refused) => {
                if s.warned.insert(term) {
                    tracing::warn!(monitor, %refused, "monitor refused");
                }
                Err(refused)
            }
        }
    }
}

fn parse(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Writes `text` to a temporary file, syncs it and renames it over `path`: a crash
/// leaves the old content or the new one, never a torn file.
pub(crate) fn replace_file(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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

    #[test]
    fn terms_are_ordered_and_term_0_belongs_to_no_fleet() {
        assert_eq!(judge(false, 0, 0), Ok(Accepted::Same));
        assert_eq!(
            judge(false, 9, 3),
            Err(Refused::NotInFleet { term: 3 }),
            "no fleet: a fleet leader is a config drift"
        );
        assert_eq!(judge(true, 5, 0), Err(Refused::NoTerm));
        assert_eq!(judge(true, 0, 0), Err(Refused::NoTerm));
        assert_eq!(
            judge(true, 5, 4),
            Err(Refused::Stale {
                term: 4,
                highest: 5
            })
        );
        assert_eq!(judge(true, 5, 5), Ok(Accepted::Same));
        assert_eq!(judge(true, 5, 7), Ok(Accepted::Higher { was: 5 }));
        let msg = Refused::Stale {
            term: 4,
            highest: 5,
        }
        .to_string();
        assert!(msg.contains('4') && msg.contains('5'), "{msg}");
    }

    #[test]
    fn the_highest_term_survives_a_restart_and_corruption_reads_as_0() {
        let d = dir("persist");
        let t = Terms::load(true, &d, "db1");
        assert_eq!(t.highest(), 0);
        assert_eq!(t.admit("m1", 3), Ok(Accepted::Higher { was: 0 }));
        assert_eq!(t.admit("m1", 3), Ok(Accepted::Same));
        assert!(t.admit("m0", 2).is_err());
        drop(t);
        let t = Terms::load(true, &d, "db1");
        assert_eq!(t.highest(), 3, "a restarted agent remembers the term");
        assert_eq!(
            t.admit("m0", 2),
            Err(Refused::Stale {
                term: 2,
                highest: 3
            })
        );
        std::fs::write(path(&d, "db1"), "not a number\n").unwrap();
        assert_eq!(Terms::load(true, &d, "db1").highest(), 0);
    }

    #[test]
    fn a_term_that_cannot_be_recorded_is_refused() {
        let d = dir("unwritable");
        std::fs::create_dir_all(&d).unwrap();
        // A directory where the file should be: the rename fails.
        std::fs::create_dir_all(path(&d, "db1")).unwrap();
        let t = Terms::load(true, &d, "db1");
        assert!(matches!(
            t.admit("m1", 4),
            Err(Refused::NotRecorded { term: 4, .. })
        ));
        assert_eq!(t.highest(), 0);
    }
}
