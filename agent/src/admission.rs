//! Who may begin a handshake with the agent.
//!
//! A handshake costs a task and a descriptor for up to its timeout before the peer has
//! proved anything, so their number is bounded. With one shared bound, any host on the
//! database network (no key needed) could hold every slot with idle connections while a
//! monitor restarts, and keep it out until the writer's lease ran out (issue 22: 64
//! half-open connections for 10 s failed over 100 client writes). So peers are split:
//! addresses that have completed a handshake before (a monitor reconnecting, restarted,
//! or a standby of the fleet) have a budget of their own that strangers cannot touch, and
//! a stranger holds at most [`PER_STRANGER`] slots of the strangers' budget, so one noisy
//! address does not lock out a monitor that has never connected yet either. The known
//! addresses are kept in `<state_dir>/<host>.monitors`, so an agent restarted during a
//! flood still knows its monitors. This holds with the default configuration; a flood
//! from many addresses can still keep out a monitor that never connected before, which
//! `agent.monitor_ips` prevents (it closes the port to every other address at once).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Handshakes at once from addresses that authenticated before.
pub const KNOWN_SLOTS: usize = 8;
/// Handshakes at once from every other address together.
pub const STRANGER_SLOTS: usize = 8;
/// Handshakes at once from one address that never authenticated.
pub const PER_STRANGER: usize = 2;
/// Addresses remembered as known (the most recent): a few monitors and their restarts.
const REMEMBERED: usize = 32;

/// Why a connection was closed before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{KNOWN_SLOTS} handshakes from known monitor addresses already under way")]
    KnownBusy,
    #[error(
        "{STRANGER_SLOTS} handshakes from addresses that never authenticated already under way"
    )]
    StrangersBusy,
    #[error(
        "{PER_STRANGER} handshakes from this address, which never authenticated, already under way"
    )]
    StrangerBusy,
}

#[derive(Default)]
struct Inner {
    known: VecDeque<IpAddr>,
    known_open: usize,
    strangers_open: usize,
    per_stranger: HashMap<IpAddr, usize>,
}

#[derive(Default)]
pub struct Admission {
    inner: Mutex<Inner>,
    /// Where the known addresses are kept across restarts (None: in memory only).
    store: Option<PathBuf>,
}

/// One handshake under way; its slot is given back when this is dropped.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    known: bool,
}

impl Admission {
    /// Known addresses from `store` (one per line; a missing or unreadable file is an
    /// empty list: the monitors become known again at their next handshake).
    pub fn new(store: Option<PathBuf>) -> Admission {
        let known = store
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .rev()
                    .take(REMEMBERED)
                    .collect::<Vec<IpAddr>>()
                    .into_iter()
                    .rev()
                    .collect()
            })
            .unwrap_or_default();
        Admission {
            inner: Mutex::new(Inner {
                known,
                ..Inner::default()
            }),
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a handshake from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut s = self.lock();
        let known = s.known.contains(&ip);
        if known {
            if s.known_open >= KNOWN_SLOTS {
                return Err(Refused::KnownBusy);
            }
            s.known_open += 1;
        } else {
            if s.strangers_open >= STRANGER_SLOTS {
                return Err(Refused::StrangersBusy);
            }
            let mine = s.per_stranger.entry(ip).or_default();
            if *mine >= PER_STRANGER {
                return Err(Refused::StrangerBusy);
            }
            *mine += 1;
            s.strangers_open += 1;
        }
        Ok(Slot {
            admission: self.clone(),
            ip,
            known,
        })
    }

    /// `ip` completed a handshake: its later ones use the known addresses' budget.
    pub fn authenticated(&self, ip: IpAddr) {
        let mut s = self.lock();
        let new = !s.known.contains(&ip);
        s.known.retain(|k| *k != ip);
        s.known.push_back(ip);
        if s.known.len() > REMEMBERED {
            s.known.pop_front();
        }
        // Written only when an address joins: a reconnection rewrites nothing.
        if let (true, Some(path)) = (new, &self.store) {
            let text: String = s.known.iter().map(|ip| format!("{ip}\n")).collect();
            if let Err(e) = crate::state_dir::replace(path, &text) {
                tracing::warn!(path = %path.display(), error = %e, "known monitor addresses not saved: after a restart they count as strangers until they connect again");
            }
        }
    }
}

impl Slot {
    /// The handshake completed: the address is known from now on, and the slot is free.
    pub fn authenticated(self) {
        self.admission.authenticated(self.ip);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        if self.known {
            s.known_open -= 1;
            return;
        }
        s.strangers_open -= 1;
        if let Some(n) = s.per_stranger.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_stranger.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_flood_of_strangers_never_takes_a_known_monitors_slot() {
        let a = Arc::new(Admission::default());
        let monitor = ip(5);
        drop(a.admit(monitor).unwrap());
        a.authenticated(monitor);
        // Strangers fill their own budget, from many addresses and from one.
        let mut held: Vec<Slot> = (10..10 + STRANGER_SLOTS as u8)
            .map(|i| a.admit(ip(i)).unwrap())
            .collect();
        assert_eq!(a.admit(ip(200)).err(), Some(Refused::StrangersBusy));
        // The monitor reconnects: its slots are untouched.
        let mine: Vec<Slot> = (0..KNOWN_SLOTS)
            .map(|_| a.admit(monitor).unwrap())
            .collect();
        assert_eq!(a.admit(monitor).err(), Some(Refused::KnownBusy));
        drop(mine);
        assert!(a.admit(monitor).is_ok());
        held.clear();
        assert!(a.admit(ip(200)).is_ok(), "slots come back when dropped");
    }

    #[test]
    fn one_stranger_holds_only_a_few_slots() {
        let a = Arc::new(Admission::default());
        let noisy = ip(66);
        let held: Vec<Slot> = (0..PER_STRANGER).map(|_| a.admit(noisy).unwrap()).collect();
        assert_eq!(a.admit(noisy).err(), Some(Refused::StrangerBusy));
        // A monitor that never connected before still gets in.
        assert!(a.admit(ip(5)).is_ok());
        drop(held);
        assert!(a.admit(noisy).is_ok());
    }

    #[test]
    fn known_addresses_outlive_a_restart() {
        let dir = std::env::temp_dir().join(format!("mmm-admission-{}", std::process::id()));
        let path = dir.join("db1.monitors");
        let _ = std::fs::remove_dir_all(&dir);
        let a = Arc::new(Admission::new(Some(path.clone())));
        a.authenticated(ip(5));
        a.authenticated(ip(6));
        drop(a);
        let again = Arc::new(Admission::new(Some(path)));
        let held: Vec<Slot> = (0..STRANGER_SLOTS as u8)
            .map(|i| again.admit(ip(100 + i)).unwrap())
            .collect();
        assert!(again.admit(ip(5)).is_ok() && again.admit(ip(6)).is_ok());
        assert_eq!(again.admit(ip(7)).err(), Some(Refused::StrangersBusy));
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_most_recent_addresses_are_remembered() {
        let a = Admission::default();
        for i in 0..=REMEMBERED as u8 {
            a.authenticated(ip(i));
        }
        let s = a.lock();
        assert_eq!(s.known.len(), REMEMBERED);
        assert!(!s.known.contains(&ip(0)) && s.known.contains(&ip(REMEMBERED as u8)));
    }
}
