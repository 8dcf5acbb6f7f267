//! The monitor fleet's epochs: which etcd history a leadership term belongs to.
//!
//! A leader's term is the create revision of its election key. Revisions only grow in one
//! etcd history, but they start again at 1 when etcd is wiped and re-created, and go back
//! when it is restored from a snapshot: the same number then names another leadership,
//! and a number the agents have seen can stay out of reach for months. Nothing else in
//! etcd tells the histories apart either: a cluster re-created, or restored, with the
//! same member names, peer URLs and `--initial-cluster-token` gets the same cluster id,
//! member ids and raft term (measured with etcd 3.4), and a restored snapshot brings its
//! keys and leases back.
//!
//! So every leader, once elected, writes a fresh epoch (64 random bits) with its term to
//! `<prefix>/cluster`, MACed with the cluster key, and its Hello carries the [`Term`]
//! (epoch, revision). Agents order terms by revision only within one epoch; a term of
//! another epoch is taken only when the agent's own read of etcd shows that epoch's
//! record, verified (docs/fencing.md, "etcd wiped, re-created or restored").
//!
//! The record also names the cluster's identity (a digest of the cluster key), so a
//! monitor finding another cluster under its prefix can tell it from a record that was
//! tampered with.

use crate::config::ClusterKey;
use std::fmt;

/// A fleet leader's term as it travels in the Hello: the epoch its leader wrote and the
/// create revision of its election key. `Term::NONE` is a monitor without a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Term {
    pub epoch: u64,
    pub rev: u64,
}

impl Term {
    /// A monitor without a fleet.
    pub const NONE: Term = Term { epoch: 0, rev: 0 };
    /// A fleet monitor's witness session (protocol version 7): it leads nothing and is
    /// refused every order; it only says, while it cannot reach etcd, that it consents to
    /// the writer's failsafe (agent/src/failsafe.rs). No epoch is ever this value.
    pub const WITNESS: Term = Term {
        epoch: u64::MAX,
        rev: 0,
    };

    pub fn is_witness(&self) -> bool {
        *self == Term::WITNESS
    }
}

impl fmt::Display for Term {
    /// `17 (epoch 3fa4c1d2e5f60718)`; a term without an epoch (no fleet, or recorded
    /// before epochs existed) is its revision alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch == 0 {
            write!(f, "{}", self.rev)
        } else {
            write!(f, "{} (epoch {:016x})", self.rev, self.epoch)
        }
    }
}

/// What `<prefix>/cluster` says once its MAC verified: the epoch, and the term of the
/// leader that wrote it (the epoch's first term).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u64,
    pub term: u64,
}

/// Why a `<prefix>/cluster` value is not this cluster's epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("it holds this cluster's identity without an epoch (written by a monitor that predates epochs)")]
    Legacy,
    #[error("it is not an epoch record of this cluster key ({reason})")]
    Unreadable { reason: &'static str },
    #[error("it names another cluster (another cluster key under the same prefix)")]
    Foreign,
    #[error(
        "its MAC does not verify with this cluster key (not written by a monitor holding the key)"
    )]
    Forged,
}

/// The key under the fleet's prefix that holds the record: `<prefix>/cluster`.
pub const KEY: &str = "cluster";

/// The first word of a record: the format and its version.
const MAGIC: &str = "mmm-epoch/1";
/// The MAC's key derivation context (distinct from every other use of the cluster key).
const CONTEXT: &str = "mmm 2026-11 fleet epoch record";

/// This cluster's identity under a prefix: a digest of the cluster key (every cluster has
/// its own), so two clusters configured with the same prefix by mistake are told apart.
/// Not of the hosts: adding a host or changing an address is the same cluster.
pub fn identity(key: &ClusterKey) -> String {
    hex(&blake3::derive_key(
        "mmm 2026-11 cluster identity under an etcd prefix",
        key.as_bytes(),
    ))
}

/// The system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("reading random bytes for a new epoch")]
pub struct RandomError(#[source] getrandom::Error);

/// A fresh epoch: 64 random bits, never 0 (0 is "no epoch").
pub fn fresh_epoch() -> Result<u64, RandomError> {
    loop {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(RandomError)?;
        let epoch = u64::from_be_bytes(b);
        if epoch != 0 && epoch != Term::WITNESS.epoch {
            return Ok(epoch);
        }
    }
}

/// The value to store at `<prefix>/cluster` for `record`:
/// `mmm-epoch/1 identity=<64 hex> epoch=<16 hex> term=<decimal> mac=<64 hex>`.
pub fn seal(key: &ClusterKey, prefix: &str, record: EpochRecord) -> String {
    format!(
        "{MAGIC} identity={} epoch={:016x} term={} mac={}",
        identity(key),
        record.epoch,
        record.term,
        mac(key, prefix, record)
    )
}

/// The record in `value`, if it is this cluster's and its MAC verifies for `prefix`.
pub fn open(key: &ClusterKey, prefix: &str, value: &[u8]) -> Result<EpochRecord, RecordError> {
    let ours = identity(key);
    let text = std::str::from_utf8(value).map_err(|_not_utf8| RecordError::Unreadable {
        reason: "not UTF-8",
    })?;
    if text.trim() == ours {
        return Err(RecordError::Legacy);
    }
    let unreadable = |reason| RecordError::Unreadable { reason };
    let mut words = text.split_whitespace();
    if words.next() != Some(MAGIC) {
        return Err(unreadable("no mmm-epoch/1 header"));
    }
    let mut field = |name: &str| {
        words
            .next()
            .and_then(|w| w.strip_prefix(name))
            .and_then(|w| w.strip_prefix('='))
    };
    let identity = field("identity").ok_or(unreadable("no identity"))?;
    let epoch = field("epoch")
        .filter(|e| e.len() == 16)
        .and_then(|e| u64::from_str_radix(e, 16).ok())
        .filter(|e| *e != 0)
        .ok_or(unreadable("no epoch of 16 hex digits"))?;
    let term = field("term")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t != 0)
        .ok_or(unreadable("no term"))?;
    let claimed = field("mac").ok_or(unreadable("no mac"))?;
    if words.next().is_some() {
        return Err(unreadable("trailing words"));
    }
    if identity != ours {
        return Err(RecordError::Foreign);
    }
    let record = EpochRecord { epoch, term };
    if !ct_eq(mac(key, prefix, record).as_bytes(), claimed.as_bytes()) {
        return Err(RecordError::Forged);
    }
    Ok(record)
}

/// Keyed BLAKE3 over the prefix, the epoch and the term, each length-prefixed: a record
/// moved to another prefix, or with another epoch or term, does not verify.
fn mac(key: &ClusterKey, prefix: &str, record: EpochRecord) -> String {
    let k = blake3::derive_key(CONTEXT, key.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&k);
    for field in [
        prefix.as_bytes(),
        &record.epoch.to_be_bytes(),
        &record.term.to_be_bytes(),
    ] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field);
    }
    hex(h.finalize().as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so timing does not reveal how much of a MAC matched.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_hex(&format!("{byte:02x}").repeat(32)).expect("a key")
    }

    const R: EpochRecord = EpochRecord {
        epoch: 0x3fa4_c1d2_e5f6_0718,
        term: 17,
    };

    #[test]
    fn a_sealed_record_opens_with_its_key_and_prefix_only() {
        let k = key(1);
        let v = seal(&k, "/mmm/main", R);
        assert!(
            v.starts_with("mmm-epoch/1 identity=")
                && v.contains(" epoch=3fa4c1d2e5f60718 term=17 mac="),
            "{v}"
        );
        assert_eq!(open(&k, "/mmm/main", v.as_bytes()), Ok(R));
        assert_eq!(
            open(&k, "/mmm/other", v.as_bytes()),
            Err(RecordError::Forged),
            "moved to another prefix"
        );
        assert_eq!(
            open(&key(2), "/mmm/main", v.as_bytes()),
            Err(RecordError::Foreign),
            "another cluster key is another cluster"
        );
    }

    /// Whoever can write to etcd can write any value at `<prefix>/cluster`: without the
    /// key, an epoch or a term of their choosing never verifies.
    #[test]
    fn a_changed_epoch_term_or_mac_is_forged() {
        let k = key(1);
        let v = seal(&k, "/p", R);
        let epoch = v.replace("epoch=3fa4c1d2e5f60718", "epoch=3fa4c1d2e5f60719");
        assert_eq!(open(&k, "/p", epoch.as_bytes()), Err(RecordError::Forged));
        let term = v.replace("term=17", "term=18");
        assert_eq!(open(&k, "/p", term.as_bytes()), Err(RecordError::Forged));
        let mac_at = v.find("mac=").expect("a mac") + 4;
        let mut bad = v.clone().into_bytes();
        bad[mac_at] = if bad[mac_at] == b'0' { b'1' } else { b'0' };
        assert_eq!(open(&k, "/p", &bad), Err(RecordError::Forged));
    }

    #[test]
    fn the_identity_alone_is_a_record_from_before_epochs_and_anything_else_unreadable() {
        let k = key(1);
        assert_eq!(
            open(&k, "/p", identity(&k).as_bytes()),
            Err(RecordError::Legacy)
        );
        assert_eq!(
            open(&key(2), "/p", identity(&k).as_bytes()),
            Err(RecordError::Unreadable {
                reason: "no mmm-epoch/1 header"
            }),
            "another cluster's identity from before epochs"
        );
        for junk in [
            "another cluster",
            "",
            "mmm-epoch/1",
            "mmm-epoch/1 identity=x epoch=0000000000000000 term=1 mac=y",
            "mmm-epoch/1 identity=x epoch=1 term=1 mac=y",
        ] {
            assert!(
                matches!(
                    open(&k, "/p", junk.as_bytes()),
                    Err(RecordError::Unreadable { .. })
                ),
                "{junk:?}"
            );
        }
        let trailing = format!("{} more", seal(&k, "/p", R));
        assert!(matches!(
            open(&k, "/p", trailing.as_bytes()),
            Err(RecordError::Unreadable { .. })
        ));
        assert!(matches!(
            open(&k, "/p", &[0xff, 0xfe]),
            Err(RecordError::Unreadable { .. })
        ));
    }

    /// The identity is the cluster key's alone (it once digested the host list too, and
    /// adding a host made every updated monitor call its own prefix foreign and exit).
    #[test]
    fn another_cluster_key_is_another_cluster() {
        assert_ne!(identity(&key(1)), identity(&key(2)));
        assert_eq!(identity(&key(1)), identity(&key(1).clone()));
        assert_eq!(identity(&key(1)).len(), 64);
    }

    #[test]
    fn terms_print_their_epoch_when_they_have_one() {
        assert_eq!(Term::NONE.to_string(), "0");
        assert_eq!(Term { epoch: 0, rev: 222 }.to_string(), "222");
        assert_eq!(
            Term {
                epoch: 0x3fa4_c1d2_e5f6_0718,
                rev: 17
            }
            .to_string(),
            "17 (epoch 3fa4c1d2e5f60718)"
        );
    }

    #[test]
    fn fresh_epochs_are_never_0_and_differ() {
        let a = fresh_epoch().expect("random");
        let b = fresh_epoch().expect("random");
        assert!(a != 0 && b != 0 && a != b);
    }

    proptest! {
        #[test]
        fn any_value_opens_without_panicking(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(&key(1), "/p", &v);
        }

        #[test]
        fn every_record_round_trips(epoch in 1u64.., term in 1u64.., prefix in "[a-z/]{0,20}") {
            let k = key(3);
            let r = EpochRecord { epoch, term };
            prop_assert_eq!(open(&k, &prefix, seal(&k, &prefix, r).as_bytes()), Ok(r));
        }
    }
}
