//! Becoming the fleet's leader: a connection and a session to campaign with, and, once
//! elected, what is settled before leading: that the prefix holds this cluster, and the
//! status etcd keeps for it.

use crate::core::status::StatusRecord;
use crate::core::{Cluster, FencingMethod};
use crate::daemon::DaemonError;
use crate::etcd::{Fleet, FleetError, Leadership, Session};
use mmm_common::config::{ClusterKey, Config};
use mmm_common::epoch::{EpochRecord, RecordError, Term};
use std::sync::Arc;
use std::time::Duration;

/// A connection to etcd and a session on it.
pub async fn connect(
    c: &mmm_common::config::Coordination,
    timeout: Duration,
) -> Result<(Fleet, Session), FleetError> {
    let mut fleet = Fleet::connect(c, timeout).await?;
    let session = fleet.session().await?;
    Ok((fleet, session))
}

/// Claims the prefix for this cluster, refuses one that holds another's, and writes this
/// term's fresh epoch there: every leader does, before any agent hears of its term, so a
/// term is never ordered against one of another etcd history (wiped, re-created or
/// restored from a snapshot, where revisions start again or go back: docs/fencing.md).
pub async fn check_identity(
    fleet: &mut Fleet,
    lead: &Leadership,
    key: &ClusterKey,
    prefix: &str,
) -> Result<Term, DaemonError> {
    let at = fleet.keys().cluster();
    if let Some(found) = fleet.get(&at).await.map_err(DaemonError::Fleet)? {
        match mmm_common::epoch::open(key, prefix, &found) {
            // This cluster's: an epoch of an earlier term, or the identity alone as
            // monitors wrote it before epochs.
            Ok(_) | Err(RecordError::Legacy) => {}
            // This cluster's identity with a MAC that does not verify: someone who can
            // write to etcd but lacks the key. Never taken; the new epoch replaces it.
            Err(e @ RecordError::Forged) => {
                tracing::warn!(key = %at, value = %String::from_utf8_lossy(&found), "{e}: not accepted, replaced by this term's epoch")
            }
            Err(RecordError::Foreign | RecordError::Unreadable { .. }) => {
                return Err(DaemonError::ForeignPrefix { key: at })
            }
        }
    }
    let epoch = mmm_common::epoch::fresh_epoch().map_err(DaemonError::Epoch)?;
    let record = EpochRecord {
        epoch,
        term: lead.term,
    };
    fleet
        .put_as_leader(lead, &at, mmm_common::epoch::seal(key, prefix, record))
        .await
        .map_err(DaemonError::Fleet)?;
    let term = Term {
        epoch,
        rev: lead.term,
    };
    tracing::info!(%term, key = %at, "this term's epoch is written: agents take the term once their own read of etcd shows it");
    Ok(term)
}

/// The status record in etcd as a cluster, or passive mode naming the key when it cannot
/// be trusted (corrupt, another version, not sealed with the cluster key); a first start
/// has none.
pub async fn restore_from_etcd(
    fleet: &mut Fleet,
    config: &Arc<Config>,
    cluster_key: &ClusterKey,
    now: crate::core::Millis,
) -> Result<Cluster, FleetError> {
    let fencing = FencingMethod::in_fleet(config.agent.fencing);
    let mut cluster = Cluster::new(config.clone(), fencing, now);
    let key = fleet.keys().status();
    match fleet.get(&key).await? {
        None => tracing::info!(%key, "no status in etcd: first start, hosts AWAITING_RECOVERY"),
        Some(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    super::sealed::open(cluster_key, &key, text).map_err(|e| e.to_string())
                })
                .and_then(|json| StatusRecord::from_json(json).map_err(|e| e.to_string()));
            match parsed.and_then(|r| cluster.restore(&r).map_err(|e| e.to_string())) {
                Ok(()) => tracing::info!(%key, "resuming from the status in etcd"),
                Err(e) => {
                    let cause = format!("status key {key} unusable: {e}: not acting until an operator checks it (set_active after fixing or deleting the key)");
                    tracing::error!("{cause}");
                    cluster.go_passive(cause);
                }
            }
        }
    }
    Ok(cluster)
}
