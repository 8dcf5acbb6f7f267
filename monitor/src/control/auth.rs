//! Authentication of the control protocol over TCP, without IO.
//!
//! A TCP control socket can be reached by every local user (loopback included) and, on
//! another address, by the network: it always requires the cluster key, and the key covers
//! the command and the answer, not just the connection:
//!
//! ```text
//! monitor -> client   MMM-CHALLENGE <nonce, 32 hex digits>
//! client  -> monitor  MMM-AUTH <mac(nonce, "command", line)>
//!                     <line>
//! monitor -> client   MMM-MAC <mac(nonce, "answer", text)>
//!                     <text>
//! ```
//!
//! A replayed command fails (a fresh nonce per connection), a command changed in flight
//! fails (its MAC), and a client knows the answer came from a monitor holding the key. A
//! unix socket needs none of this: it is created 0600 for the monitor's user.

use mmm_common::config::ClusterKey;

/// The context string of the control MACs (distinct from the agent protocol's keys).
const CONTEXT: &str = "mmm v2 2026-11 control";

pub const CHALLENGE: &str = "MMM-CHALLENGE ";
pub const AUTH: &str = "MMM-AUTH ";
pub const ANSWER_MAC: &str = "MMM-MAC ";

/// What a MAC covers: which side said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Command,
    Answer,
}

/// Keyed BLAKE3 over the challenge, the part and the text, each length-prefixed so no
/// two (challenge, text) pairs hash alike.
pub fn mac(key: &ClusterKey, challenge: &str, part: Part, text: &str) -> String {
    let k = blake3::derive_key(CONTEXT, key.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&k);
    let label: &[u8] = match part {
        Part::Command => b"command",
        Part::Answer => b"answer",
    };
    for field in [challenge.as_bytes(), label, text.as_bytes()] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.finalize().to_hex().to_string()
}

/// Compares in time independent of where the strings differ.
pub fn verify(key: &ClusterKey, challenge: &str, part: Part, text: &str, claimed: &str) -> bool {
    let expected = mac(key, challenge, part, text);
    expected.len() == claimed.len()
        && expected
            .bytes()
            .zip(claimed.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn the_mac_binds_challenge_part_and_text() {
        let k = key(7);
        let m = mac(&k, "aa", Part::Command, "set_passive");
        assert!(verify(&k, "aa", Part::Command, "set_passive", &m));
        assert!(
            !verify(&k, "ab", Part::Command, "set_passive", &m),
            "replayed"
        );
        assert!(
            !verify(&k, "aa", Part::Answer, "set_passive", &m),
            "reflected"
        );
        assert!(
            !verify(&k, "aa", Part::Command, "set_active", &m),
            "changed"
        );
        assert!(
            !verify(&key(8), "aa", Part::Command, "set_passive", &m),
            "other key"
        );
        assert!(!verify(&k, "aa", Part::Command, "set_passive", &m[..10]));
    }

    proptest! {
        #[test]
        fn no_other_text_or_claim_verifies(
            challenge in "[0-9a-f]{32}",
            text in ".{0,64}",
            other in ".{0,64}",
            claim in ".{0,80}",
        ) {
            let k = key(1);
            let m = mac(&k, &challenge, Part::Command, &text);
            prop_assert!(verify(&k, &challenge, Part::Command, &text, &m));
            if other != text {
                prop_assert!(!verify(&k, &challenge, Part::Command, &other, &m));
            }
            if claim != m {
                prop_assert!(!verify(&k, &challenge, Part::Command, &text, &claim));
            }
        }
    }
}
