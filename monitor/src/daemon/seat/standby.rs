//! A monitor in a fleet (`[coordination]`): stand by until etcd elects it, lead for one
//! term, stand by again.
//!
//! Standing by, a monitor drives nothing: it keeps its etcd session, registers its name,
//! campaigns, and hands every control command to the leader through etcd (forward.rs),
//! so `mmm-control` works from any monitor host. Elected, it checks that the prefix
//! holds this cluster, resumes from the status in etcd (campaign.rs), and runs the same
//! daemon as a monitor alone, seated as the term's leader (leader.rs): its links carry
//! the term, its status and writer are written only while it leads, and a writer is
//! fenced by ending its agent's own etcd lease, since no monitor renews it.
//!
//! Leadership ends at once, with every task of the term, when the session cannot be
//! renewed (before etcd expires it, so before another monitor can be elected) or a
//! guarded write fails; SIGTERM resigns so a standby takes over without waiting.

use super::campaign::{check_identity, connect, restore_from_etcd};
use super::forward::{serve_standby, Forwarder};
use super::leader::Leader;
use crate::daemon::{Clock, DaemonError, LeadEnded, Process};
use crate::etcd::FleetError;
use std::time::Duration;

/// Stands by and leads in turn until the monitor stops.
pub async fn run(process: &mut Process, name: String) -> Result<(), DaemonError> {
    let config = process.config.clone();
    let c = config
        .coordination
        .clone()
        .expect("standby::run is only called with [coordination]");
    let etcd = process
        .timing
        .etcd
        .expect("standby::run is only called with [coordination]");
    let timeout = c
        .session_ttl
        .clamp(Duration::from_millis(500), Duration::from_secs(2));
    // Witness sessions to every agent, for the monitor's life: the writer's failsafe
    // while etcd is out of reach (crate::witness).
    let witness = crate::witness::Witness::start(&config, &process.key, &name);
    let mut unreachable_said = false;
    // This process's recent sessions: one counted lost may still hold our name in etcd.
    let mut earlier: Vec<i64> = Vec::new();
    // Since when this monitor's name is held by a session it does not know.
    let mut name_taken: Option<tokio::time::Instant> = None;
    loop {
        let connected = tokio::select! {
            stopped = serve_unconnected(process, &witness, "ERROR: This monitor cannot reach etcd and stands by, retrying: connecting to etcd") => return stopped,
            c = connect(&c, timeout) => c,
        };
        let (mut fleet, mut session) = match connected {
            Ok(x) => x,
            Err(e) => {
                let why = crate::error_chain(&e);
                if !unreachable_said {
                    tracing::error!(error = %why, "etcd unreachable: standing by, retrying every second (nothing is driven until etcd answers)");
                    unreachable_said = true;
                }
                let refusal =
                    format!("ERROR: This monitor cannot reach etcd and stands by, retrying: {why}");
                tokio::select! {
                    stopped = serve_unconnected(process, &witness, &refusal) => return stopped,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let registration =
            super::roster::registration(&process.key, &fleet.keys().monitor(&name), &name);
        let joined = fleet.join(&session, &name, &registration, &earlier).await;
        // Kept whatever the outcome: a registration that failed on the way back may
        // still have been written.
        earlier.insert(0, session.lease);
        earlier.truncate(4);
        match joined {
            Ok(()) => name_taken = None,
            Err(e @ FleetError::NameTaken { .. }) => {
                let _ = fleet.end(session).await;
                // A name left by a session that no process renews goes with its lease:
                // etcd restored from a snapshot brings back the names of monitors that
                // have restarted since (on new sessions), each kept for a TTL and an etcd
                // election after the restore. A monitor that holds the name renews it:
                // only a name still taken after that is another monitor's.
                let wait = c.session_ttl * 2 + c.etcd_election_timeout * 2;
                let first = name_taken.is_none();
                let since = *name_taken.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= wait {
                    return Err(DaemonError::Fleet(e));
                }
                if first {
                    tracing::warn!(error = %crate::error_chain(&e), "waiting up to {wait:?} for the name to be released (a registration restored from an etcd snapshot expires), then stopping");
                }
                tokio::select! {
                    stopped = serve_unconnected(process, &witness, "ERROR: This monitor's name is taken in the fleet and it waits for it to be released") => return stopped,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "registering in the fleet failed; retrying");
                continue;
            }
        }
        unreachable_said = false;
        tracing::info!(%name, prefix = %c.prefix, "standing by in the monitor fleet");
        let forwarder = Forwarder {
            key: process.key.clone(),
            fleet: fleet.clone(),
            session_lease: session.lease,
            name: name.clone(),
            timeout: config.monitor.promotion_timeout * 3 + Duration::from_secs(10),
        };
        // Only a monitor of the roster campaigns (roster.rs): the writer's failsafe has the
        // consent of every monitor that may lead.
        let mut unlisted_said = false;
        let admitted = loop {
            match super::roster::read(&mut fleet, &process.key).await {
                Ok(r) if r.admits(&name) => {
                    witness.listed();
                    break true;
                }
                Ok(super::roster::Roster::Unusable(e)) => {
                    if !unlisted_said {
                        tracing::warn!(key = %fleet.keys().roster(), "the fleet's roster is unusable ({e}): nobody campaigns under it; a leader rewrites it, and without one delete the key (docs/operations.md)");
                        unlisted_said = true;
                    }
                }
                Ok(_) => {
                    if !unlisted_said {
                        tracing::info!("not in the fleet's roster yet: standing by without campaigning until the leader lists this monitor");
                        unlisted_said = true;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %crate::error_chain(&e), "reading the fleet's roster failed; retrying")
                }
            }
            if !session.alive() {
                break false;
            }
            tokio::select! {
                stopped = serve_standby(process, &forwarder) => {
                    let _ = fleet.end(session).await;
                    return stopped;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        if !admitted {
            continue;
        }
        let won = tokio::select! {
            won = fleet.campaign(&mut session, &name) => won,
            stopped = serve_standby(process, &forwarder) => {
                let _ = fleet.end(session).await;
                return stopped;
            }
        };
        let leadership = match won {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "campaign ended without leadership; standing by again");
                continue;
            }
        };
        witness.reached_now();
        tracing::info!(
            term = leadership.term,
            "elected leader of the monitor fleet"
        );
        // Removed from the roster while it campaigned (its registration had lapsed): not
        // a monitor the writer's failsafe asked. Only the leader writes the roster, so this
        // read holds for the term.
        match super::roster::read(&mut fleet, &process.key).await {
            Ok(r) if r.admits(&name) => {}
            Ok(_) => {
                tracing::warn!("elected, but no longer in the fleet's roster: resigning");
                let _ = fleet.resign(leadership).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading the fleet's roster failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        }
        let term = match check_identity(&mut fleet, &leadership, &process.key, &c.prefix).await {
            Ok(term) => term,
            Err(e @ DaemonError::ForeignPrefix { .. }) => {
                let _ = fleet.resign(leadership).await;
                let _ = fleet.end(session).await;
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "checking the prefix failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        };
        let clock = Clock::new();
        let cluster = match restore_from_etcd(&mut fleet, &config, &process.key, clock.now()).await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading the status from etcd failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        };
        let leader = match Leader::start(
            fleet.clone(),
            leadership.clone(),
            term.epoch,
            &session,
            etcd,
            process.key.clone(),
            witness.clone(),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "starting the term failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        };
        match crate::daemon::lead(process, leader, cluster, clock).await? {
            LeadEnded::Shutdown => {
                // A planned stop hands over at once instead of after the session's TTL.
                if let Err(e) = fleet.resign(leadership).await {
                    tracing::warn!(error = %crate::error_chain(&e), "resigning failed: a standby takes over when the session expires");
                }
                let _ = fleet.end(session).await;
                tracing::info!("resigned the fleet's leadership");
                return Ok(());
            }
            LeadEnded::Deposed => {
                tracing::warn!(term = leadership.term, "no longer the leader: standing by");
                // A term that ended with its session alive (a watch that could not be
                // resumed) would otherwise hold the election key until etcd expires the
                // session, and nobody could be elected meanwhile. A key that is already
                // another's is not touched by the resign: it names this term's key.
                if session.alive() {
                    let _ = fleet.resign(leadership).await;
                    let _ = fleet.end(session).await;
                } else {
                    drop(session);
                }
            }
            LeadEnded::SteppedDown => {
                if let Err(e) = fleet.resign(leadership).await {
                    tracing::warn!(error = %crate::error_chain(&e), "resigning failed: a standby takes over when the session expires");
                }
                let _ = fleet.end(session).await;
                // The others campaign first; this one joins the line again later, and
                // leads again only if nobody else does.
                tokio::select! {
                    stopped = serve_unconnected(process, &witness, "ERROR: This monitor stepped down (it reached no agent) and stands by; ask another monitor of the fleet.") => return stopped,
                    _ = tokio::time::sleep(c.session_ttl * 3) => {}
                }
            }
        }
    }
}

/// Answers control commands while etcd cannot be reached: `ping` here (the process is
/// alive), everything else refused with the cause. Returns when the monitor must stop.
async fn serve_unconnected(
    process: &mut Process,
    witness: &crate::witness::Witness,
    refusal: &str,
) -> Result<(), DaemonError> {
    loop {
        let (command, reply) = tokio::select! {
            stopped = process.life.stopped() => return stopped,
            Some(r) = process.control.recv() => r,
        };
        let text = if command == crate::control::Command::Ping {
            "OK: Pinged successfully!".to_string()
        } else {
            match witness.describe() {
                Some(failsafe) => format!("{refusal}\n{failsafe}"),
                None => refusal.to_string(),
            }
        };
        let _ = reply.send(text);
    }
}
