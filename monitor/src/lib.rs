//! The monitor: the pure decision core and the IO shell around it (checks, agent links,
//! control socket, status file), plus what `mmm-control` shares with the daemon.

pub mod agents;
pub mod control;
pub mod core;
pub mod daemon;

/// An error and its causes on one line, for the one place an error is logged.
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
