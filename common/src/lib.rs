//! Shared parts of mmm: the configuration schema and its validation, the import of
//! MySQL-MMM 2.2.1 configurations, the authenticated wire protocol between monitor and
//! agents, and the enums every crate agrees on.

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod duration;
pub mod epoch;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod gtid;
#[cfg(feature = "http")]
pub mod http;
pub mod legacy;
pub mod proto;
pub mod sql;
pub mod timing;
pub mod types;

/// An error and its causes on one line, for the one place an error is logged or shown.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
