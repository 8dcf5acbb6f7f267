//! Helpers of the agent's namespace tests (tests/tests/agent_*.rs, rst.rs) on top of
//! [`Lab`]: apply a desired state that must succeed, and ask whether a host holds a VIP.

use crate::lab::Lab;
use mmm_common::proto::DesiredState;
use mmm_monitor::agents::client::LinkError;
use std::time::Duration;

/// Applies `d` on `host`'s agent and panics, with the host's logs, unless every step
/// succeeded.
pub fn apply_ok(lab: &Lab, host: &str, d: DesiredState) {
    // A bound against a hang, not a timing: a first pass after a restart may wait on a
    // loaded server's connection set-up.
    let bound = Duration::from_secs(20);
    // A session the agent closed (its freeze detection, on a loaded machine) is opened
    // again and the state re-sent, as the monitor does.
    let attempt = || {
        let d = d.clone();
        lab.with_link(host, move |mut l| async move { l.apply(d, bound).await })
    };
    let mut applied = attempt();
    for _ in 0..2 {
        if !matches!(applied, Err(LinkError::Conn { .. })) {
            break;
        }
        applied = attempt();
    }
    let applied = applied.unwrap_or_else(|e| {
        panic!(
            "applying on {host}: {}\n{}",
            mmm_common::error_chain(&e),
            lab.logs_of(host)
        )
    });
    assert!(
        applied.failures.is_empty(),
        "{host} failed to apply: {:?}",
        applied.failures
    );
}

/// Whether `host` holds an address starting with `vip`.
pub fn holds(lab: &Lab, host: &str, vip: &str) -> bool {
    lab.net.addresses(host).iter().any(|a| a.starts_with(vip))
}
