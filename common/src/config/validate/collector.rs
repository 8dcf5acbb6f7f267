//! Conversion of raw values, each yielding a usable fallback with its problem.

use crate::config::{Problem, Secret};
use crate::duration::parse_duration;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Collects problems while converting values; each conversion yields a usable fallback
/// so that validation can go on and find the rest.
pub(in crate::config) struct Collector {
    pub(super) problems: Vec<Problem>,
}

impl Collector {
    pub(in crate::config) fn problem(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match parse_duration(text) {
                // Every duration ends up in deadline arithmetic (Instant + d, ms as u64):
                // a bound keeps an absurd value from overflowing it.
                Ok(d) if d > MAX_DURATION => {
                    self.problem(key, format!("{text:?} is too long (at most 30 days)"));
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.problem(key, e.to_string());
                    default
                }
            },
        }
    }

    /// An optional `IP:PORT` listener address.
    pub(super) fn address(&mut self, key: &str, value: &Option<String>) -> Option<SocketAddr> {
        let text = value.as_deref()?;
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_not_an_address) => {
                self.problem(key, format!("{text:?} is not IP:PORT"));
                None
            }
        }
    }

    /// A duration where zero means "off".
    pub(super) fn optional_duration(
        &mut self,
        key: &str,
        value: &Option<String>,
    ) -> Option<Duration> {
        Some(self.duration(key, value, Duration::ZERO)).filter(|d| !d.is_zero())
    }

    pub(super) fn positive_duration(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(key, value, default);
        if d.is_zero() {
            self.problem(key, "must be greater than zero");
            return default;
        }
        d
    }

    /// A duration bounded by other keys or by what etcd accepts: outside `range`,
    /// `message` is the problem of `key` (built only then: messages quote the values).
    pub(super) fn within(
        &mut self,
        key: &str,
        value: Duration,
        range: impl RangeBounds<Duration>,
        message: impl FnOnce() -> String,
    ) {
        if !range.contains(&value) {
            self.problem(key, message());
        }
    }

    pub(in crate::config) fn named<T: FromStr<Err = crate::types::UnknownName>>(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: T,
    ) -> T {
        match value {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|e: crate::types::UnknownName| {
                self.problem(key, e.to_string());
                default
            }),
        }
    }

    pub(super) fn ipv4(&mut self, key: &str, text: &str) -> Option<Ipv4Addr> {
        match text.trim().parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => {
                self.problem(key, format!("{ip} cannot be a host or role address"));
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                self.problem(key, format!("{text:?} is not an IPv4 address"));
                None
            }
        }
    }

    pub(super) fn secret(
        &mut self,
        key: &str,
        inline: &Option<String>,
        file: &Option<String>,
    ) -> Secret {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("give {key} or {key}_file, not both"));
                Secret::Inline(String::new())
            }
            (Some(s), None) => Secret::Inline(s.clone()),
            (None, Some(f)) if f.trim().is_empty() => {
                self.problem(format!("{key}_file"), "is empty");
                Secret::Inline(String::new())
            }
            (None, Some(f)) => Secret::File(PathBuf::from(f)),
            (None, None) => {
                self.problem(
                    key,
                    format!("missing: set {key} or {key}_file (in [defaults] or the host)"),
                );
                Secret::Inline(String::new())
            }
        }
    }
}
