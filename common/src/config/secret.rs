//! Secrets: given inline or as a file path, never printed, and refused when a file
//! holding one is readable by group or others (as MMM refused its config).

use super::Problem;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret::Inline(<redacted>)"),
            Secret::File(p) => write!(f, "Secret::File({})", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    InsecureMode { path: PathBuf, mode: u32 },
}

impl Secret {
    /// The secret's value; a file's content without its trailing newline.
    pub fn reveal(&self) -> Result<String, SecretError> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(path) => {
                let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretError::InsecureMode {
                        path: path.clone(),
                        mode,
                    });
                }
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                    path: path.clone(),
                    source,
                })?;
                Ok(text.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }
}

/// The pre-shared cluster key: at least 32 bytes, written as one line of hex.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Vec<u8>);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(<{} bytes>)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cluster key is not hex: character {character:?} at position {position}")]
    NotHex { character: char, position: usize },
    #[error("cluster key has an odd number of hex digits ({digits})")]
    OddLength { digits: usize },
    #[error("cluster key is {bytes} bytes; at least {min} are required (mmm-control gen-key makes one)", min = ClusterKey::MIN_BYTES)]
    TooShort { bytes: usize },
    #[error("loading the cluster key")]
    Secret(#[from] SecretError),
}

impl ClusterKey {
    pub const MIN_BYTES: usize = 32;

    pub fn from_hex(text: &str) -> Result<ClusterKey, KeyError> {
        let text = text.trim();
        let digits: Vec<(usize, char)> = text.char_indices().collect();
        if !digits.len().is_multiple_of(2) {
            return Err(KeyError::OddLength {
                digits: digits.len(),
            });
        }
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks(2) {
            let mut byte = 0u8;
            for &(position, character) in pair {
                let v = character.to_digit(16).ok_or(KeyError::NotHex {
                    character,
                    position,
                })?;
                byte = (byte << 4) | v as u8;
            }
            bytes.push(byte);
        }
        if bytes.len() < Self::MIN_BYTES {
            return Err(KeyError::TooShort { bytes: bytes.len() });
        }
        Ok(ClusterKey(bytes))
    }

    pub fn load(secret: &Secret) -> Result<ClusterKey, KeyError> {
        ClusterKey::from_hex(&secret.reveal()?)
    }

    /// A fresh random key as the hex line `gen-key` prints.
    pub fn generate_hex() -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; Self::MIN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A problem when `path` is readable or writable by group or others.
pub(super) fn insecure_mode(path: &Path, key: &str) -> Option<Problem> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| Problem {
        key: key.into(),
        message: format!(
            "{} is readable by group or others (mode {mode:o}); chmod 600 it",
            path.display()
        ),
    })
}

/// A problem when a secret file is missing, unreadable or too open.
pub(super) fn file_problem(path: &Path, key: &str) -> Option<Problem> {
    match std::fs::metadata(path) {
        Err(e) => Some(Problem {
            key: key.into(),
            message: format!("cannot read {}: {e}", path.display()),
        }),
        Ok(_) => insecure_mode(path, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_rules() {
        let good = "ab".repeat(32);
        assert_eq!(ClusterKey::from_hex(&good).unwrap().as_bytes().len(), 32);
        assert!(matches!(
            ClusterKey::from_hex("abc"),
            Err(KeyError::OddLength { digits: 3 })
        ));
        assert!(matches!(
            ClusterKey::from_hex(&"ab".repeat(16)),
            Err(KeyError::TooShort { bytes: 16 })
        ));
        let bad = format!("{}zz", "ab".repeat(32));
        assert!(matches!(
            ClusterKey::from_hex(&bad),
            Err(KeyError::NotHex {
                character: 'z',
                position: 64
            })
        ));
        let generated = ClusterKey::generate_hex().unwrap();
        assert_eq!(generated.len(), 64);
        assert!(ClusterKey::from_hex(&generated).is_ok());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
