//! The fleet's status record in etcd, sealed with the cluster key.
//!
//! A new leader resumes from `<prefix>/status`: which host is ONLINE, who holds the writer
//! role, a promotion half done. Whoever can write to etcd (without the cluster key) could
//! otherwise rewrite it to move the writer without fencing or catch-up. So the leader
//! writes `MMM-STATUS <mac>\n<json>`, the MAC (BLAKE3 keyed with a key derived from the
//! cluster key) over the key's name and the JSON, and a record that does not verify is
//! unusable: the leader names it and waits for an operator, as for a corrupt one.

use mmm_common::config::ClusterKey;

const TAG: &str = "MMM-STATUS ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not sealed with the cluster key (written by something else than a leader of this cluster, or by a release before sealed records)")]
    Unsealed,
    #[error(
        "its MAC does not verify with the cluster key (written without the key, or changed since)"
    )]
    Forged,
}

fn mac(key: &ClusterKey, at: &str, json: &str) -> String {
    let k = blake3::derive_key("mmm 2026-12 fleet status record", key.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&k);
    h.update(at.as_bytes());
    h.update(b"\n");
    h.update(json.as_bytes());
    h.finalize().to_hex().to_string()
}

/// The value to store at `at` for `json`.
pub fn seal(key: &ClusterKey, at: &str, json: &str) -> String {
    format!("{TAG}{}\n{json}", mac(key, at, json))
}

/// The JSON of a value stored at `at`, if the cluster key sealed it there.
pub fn open<'a>(key: &ClusterKey, at: &str, value: &'a str) -> Result<&'a str, SealError> {
    let rest = value.strip_prefix(TAG).ok_or(SealError::Unsealed)?;
    let (found, json) = rest.split_once('\n').ok_or(SealError::Unsealed)?;
    // Compared in constant time: the MAC is a secret-derived value.
    let expected = mac(key, at, json);
    let same = found.len() == expected.len()
        && found
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(json)
    } else {
        Err(SealError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::{open, seal, SealError};
    use mmm_common::config::ClusterKey;

    #[test]
    fn only_the_cluster_key_at_the_same_key_opens_a_record() {
        let a = ClusterKey::from_hex(&"ab".repeat(32)).expect("a key");
        let b = ClusterKey::from_hex(&"cd".repeat(32)).expect("a key");
        let sealed = seal(&a, "/mmm/x/status", "{\"v\":1}");
        assert_eq!(open(&a, "/mmm/x/status", &sealed), Ok("{\"v\":1}"));
        assert_eq!(open(&b, "/mmm/x/status", &sealed), Err(SealError::Forged));
        assert_eq!(open(&a, "/mmm/y/status", &sealed), Err(SealError::Forged));
        let changed = sealed.replace("\"v\":1", "\"v\":2");
        assert_eq!(open(&a, "/mmm/x/status", &changed), Err(SealError::Forged));
        assert_eq!(
            open(&a, "/mmm/x/status", "{\"v\":1}"),
            Err(SealError::Unsealed)
        );
    }
}
