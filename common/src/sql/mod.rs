//! The SQL each server family and version understands, as pure functions: no connection
//! here, so every statement mmm issues can be tested without a server.
//!
//! MariaDB keeps the MASTER/SLAVE words (and its own GTID options); MySQL 8.0.22 renamed
//! them to SOURCE/REPLICA step by step and 8.4 removed the old ones. The agent and the
//! monitor detect a [`Dialect`] once per connection ([`DETECT`]) and take every
//! statement from it, and read replication status through [`ReplicaStatus`], which
//! accepts either column naming.

mod dialect;
mod status;
#[cfg(test)]
mod tests;

pub use dialect::{ChangeSource, Dialect, DialectError, GtidStart, SourceStart, Version};
pub use status::ReplicaStatus;

/// Makes the session's time functions UTC: what [`Dialect::lift_read_only_before`]'s
/// deadline is written in.
pub const UTC_SESSION: &str = "SET SESSION time_zone = '+00:00'";

/// What [`Dialect::detect`] needs, in one round trip.
pub const DETECT: &str = "SELECT @@version, @@version_comment";

/// Quotes a string literal for SQL (MySQL and MariaDB, default sql_mode).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
