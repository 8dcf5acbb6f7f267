//! The fleet's roster: the monitors that may lead, at `<prefix>/roster`.
//!
//! The writer's failsafe (crate::witness) holds only while every monitor that could lead
//! later has consented, since each consent is a promise not to count the writer fenced
//! by waiting while it could still run on it. So the set of monitors the leader vouches
//! with must contain every monitor that can be elected: a monitor that registered after
//! the leader lost etcd, never heard of by the agents, must not become a leader that
//! fences the writer by waiting while the failsafe still runs.
//!
//! - The leader writes the roster (the registered monitors, itself, and for [`GRACE`]
//!   those that went away: a restarted monitor campaigns at once), guarded by its
//!   election key and sealed with the cluster key, whenever it changes; it vouches only
//!   with a roster it has written.
//! - A monitor campaigns only while the roster lists it, or while there is none yet (a
//!   first start, a wiped etcd). A roster that does not verify (written without the key)
//!   is named; nobody campaigns under it: the leader rewrites it within a second, and
//!   without a leader an operator deletes it (docs/operations.md).
//! - Elected, a monitor reads the roster again and resigns if it is not listed (it was
//!   removed while it campaigned). Only the leader writes the roster, so that read is
//!   final for its term.
//! - From the moment a monitor first sees itself listed it promises, like a consent, to
//!   count no writer over by waiting for a `session_ttl` and a margin
//!   ([`crate::witness::Witness::listed`]): the leader that listed it may have stopped
//!   consenting just before, and its last consents may still hold the writer.

use super::sealed::{open, seal, SealError};
use crate::etcd::{Fleet, FleetError, Leadership};
use mmm_common::config::ClusterKey;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What `<prefix>/roster` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roster {
    /// No roster yet: any monitor may campaign.
    Absent,
    Listed(Vec<String>),
    /// Not sealed with the cluster key: named; nobody campaigns under it (a leader, if
    /// there is one, rewrites it; without one an operator deletes it, docs/operations.md).
    Unusable(SealError),
}

impl Roster {
    /// Whether `name` may campaign under this roster.
    pub fn admits(&self, name: &str) -> bool {
        match self {
            Roster::Listed(names) => names.iter().any(|n| n == name),
            Roster::Absent => true,
            Roster::Unusable(_) => false,
        }
    }
}

/// The sealed value of `names` at `at`.
pub fn sealed(key: &ClusterKey, at: &str, names: &[String]) -> String {
    seal(key, at, &names.join("\n"))
}

/// Reads the value stored at `at`.
pub fn parse(key: &ClusterKey, at: &str, value: Option<&[u8]>) -> Roster {
    let Some(value) = value else {
        return Roster::Absent;
    };
    match open(key, at, &String::from_utf8_lossy(value)) {
        Ok(text) => Roster::Listed(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Err(e) => Roster::Unusable(e),
    }
}

pub async fn read(fleet: &mut Fleet, key: &ClusterKey) -> Result<Roster, FleetError> {
    let at = fleet.keys().roster();
    let value = fleet.get(&at).await?;
    Ok(parse(key, &at, value.as_deref()))
}

/// Writes `names` (sorted, deduplicated) as the roster, guarded by `lead`.
pub async fn write(
    fleet: &mut Fleet,
    lead: &Leadership,
    key: &ClusterKey,
    names: &[String],
) -> Result<(), FleetError> {
    let at = fleet.keys().roster();
    fleet
        .put_as_leader(lead, &at, sealed(key, &at, names))
        .await
}

/// The value a monitor registers its name with at `at` (`<prefix>/monitors/<name>`):
/// sealed with the cluster key, so that a name registered by whoever can write to etcd
/// (with a lease kept alive) is not listed, and cannot keep the failsafe from holding.
pub fn registration(key: &ClusterKey, at: &str, name: &str) -> String {
    seal(key, at, name)
}

/// The registered names whose value is this cluster's sealed registration of that name;
/// with `named`, the others are named in the log once each.
pub fn sealed_members(
    key: &ClusterKey,
    keys: &mmm_common::etcd::Keys,
    registrations: &[(String, Vec<u8>)],
    mut named: Option<&mut std::collections::HashSet<String>>,
) -> Vec<String> {
    registrations
        .iter()
        .filter_map(|(name, value)| {
            let at = keys.monitor(name);
            match open(key, &at, &String::from_utf8_lossy(value)) {
                Ok(n) if n == name => Some(name.clone()),
                Ok(_) | Err(_) => {
                    if named.as_mut().is_some_and(|n| n.insert(name.clone())) {
                        tracing::warn!(key = %at, "a monitor name registered without this cluster's key (or by a monitor of an earlier release): not listed in the roster");
                    }
                    None
                }
            }
        })
        .collect()
}

/// The roster a leader writes: the registered monitors and itself, sorted.
pub fn of(members: &[String], leader: &str) -> Vec<String> {
    let mut names = members.to_vec();
    names.push(leader.to_string());
    names.sort();
    names.dedup();
    names
}

/// How long a monitor stays listed after its registration went away: a restart (an
/// upgrade, a crash) must not leave it unable to campaign when the leader goes next, and a
/// monitor gone for good only keeps the failsafe from holding (it cannot consent) until
/// then.
pub const GRACE: Duration = Duration::from_secs(300);

/// The leader's side: keeps `<prefix>/roster` equal to the registered monitors, this
/// leader, and the monitors listed before that went away less than [`GRACE`] ago.
#[derive(Debug, Default)]
pub struct Keeper {
    /// Listed monitors not registered now, and since when this term has missed them.
    absent: HashMap<String, Instant>,
    /// Registrations not sealed with the cluster key, already named in the log.
    named: std::collections::HashSet<String>,
}

impl Keeper {
    /// Writes the roster when etcd's differs from what it should be (a new monitor, one
    /// gone past its grace, or a value not sealed with the cluster key), and records in
    /// `written` what etcd holds once it matches.
    pub async fn keep(
        &mut self,
        fleet: &mut Fleet,
        lead: &Leadership,
        key: &ClusterKey,
        me: &str,
        written: &std::sync::Mutex<Option<Vec<String>>>,
    ) -> Result<(), FleetError> {
        let view = fleet.view().await?;
        let members = sealed_members(
            key,
            fleet.keys(),
            &view.registrations,
            Some(&mut self.named),
        );
        let found = read(fleet, key).await?;
        let listed = match &found {
            Roster::Listed(names) => names.clone(),
            Roster::Absent | Roster::Unusable(_) => Vec::new(),
        };
        let names = self.roster(&members, &listed, me, Instant::now());
        if found != Roster::Listed(names.clone()) {
            if let Roster::Unusable(e) = &found {
                tracing::warn!(key = %fleet.keys().roster(), "the fleet's roster is unusable ({e}): rewriting it");
            }
            // Vouched with the old and the new names together until etcd's answer: a write
            // applied but unanswered (etcd lost just then) lists monitors that may campaign.
            {
                let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(w) = w.as_mut() {
                    w.extend(names.iter().cloned());
                    w.sort();
                    w.dedup();
                }
            }
            write(fleet, lead, key, &names).await?;
            tracing::info!(roster = ?names, "the fleet's roster (the monitors that may lead) is written");
        }
        *written.lock().unwrap_or_else(|p| p.into_inner()) = Some(names);
        Ok(())
    }

    /// The roster to hold at `now`: the registered monitors, `me`, and those `listed`
    /// before whose registration went away less than [`GRACE`] ago.
    fn roster(
        &mut self,
        members: &[String],
        listed: &[String],
        me: &str,
        now: Instant,
    ) -> Vec<String> {
        let mut names = of(members, me);
        let gone: Vec<&String> = listed.iter().filter(|n| !names.contains(n)).collect();
        for gone in gone {
            let since = *self.absent.entry(gone.clone()).or_insert(now);
            if now.duration_since(since) < GRACE {
                names.push(gone.clone());
            }
        }
        self.absent
            .retain(|n, _| !members.contains(n) && listed.contains(n));
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: &str) -> ClusterKey {
        ClusterKey::from_hex(&b.repeat(32)).expect("a key")
    }

    #[test]
    fn a_roster_admits_its_names_and_none_admits_everyone() {
        let k = key("ab");
        let at = "/mmm/x/roster";
        let names = of(&["mon2".into(), "mon1".into(), "mon2".into()], "mon3");
        assert_eq!(names, ["mon1", "mon2", "mon3"]);
        let value = sealed(&k, at, &names);
        let r = parse(&k, at, Some(value.as_bytes()));
        assert_eq!(r, Roster::Listed(names.clone()));
        assert!(r.admits("mon2") && !r.admits("mon4"));
        assert!(parse(&k, at, None).admits("mon4"));
        // Written without the key (or moved from another key): nobody campaigns under it.
        let forged = parse(&key("cd"), at, Some(value.as_bytes()));
        assert_eq!(forged, Roster::Unusable(SealError::Forged));
        assert!(!forged.admits("mon1"));
        assert_eq!(
            parse(&k, "/mmm/x/status", Some(value.as_bytes())),
            Roster::Unusable(SealError::Forged)
        );
        assert_eq!(
            parse(&k, at, Some(b"mon1\nmon2")),
            Roster::Unusable(SealError::Unsealed)
        );
    }

    #[test]
    fn a_monitor_that_went_away_stays_listed_for_the_grace() {
        let mut k = Keeper::default();
        let t0 = Instant::now();
        let listed: Vec<String> = vec!["mon1".into(), "mon2".into()];
        // mon1 restarting: not registered, still listed.
        let r = k.roster(&["mon2".into()], &listed, "mon2", t0);
        assert_eq!(r, ["mon1", "mon2"]);
        let r = k.roster(&["mon2".into()], &listed, "mon2", t0 + GRACE / 2);
        assert_eq!(r, ["mon1", "mon2"]);
        // Back before the grace ran out: its clock starts again the next time.
        let r = k.roster(
            &["mon1".into(), "mon2".into()],
            &listed,
            "mon2",
            t0 + GRACE / 2,
        );
        assert_eq!(r, ["mon1", "mon2"]);
        let later = t0 + GRACE;
        assert_eq!(
            k.roster(&["mon2".into()], &listed, "mon2", later),
            ["mon1", "mon2"]
        );
        // Gone for good: dropped once the grace ran out.
        assert_eq!(
            k.roster(&["mon2".into()], &listed, "mon2", later + GRACE),
            ["mon2"]
        );
        // A new monitor is listed at once.
        assert_eq!(
            k.roster(
                &["mon2".into(), "mon3".into()],
                &["mon2".into()],
                "mon2",
                later + GRACE
            ),
            ["mon2", "mon3"]
        );
    }
}
