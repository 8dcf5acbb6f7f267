//! Becoming the fleet's leader: a connection and a session to campaign with, and, once
//! elected, what is settled before leading: that the prefix holds this cluster, and the
//! status etcd keeps for it.

use crate::core::status::StatusRecord;
use crate::core::Cluster;
use crate::daemon::DaemonError;
use crate::fleet::{Fleet, FleetError, Leadership, Session};
use mmm_common::config::{ClusterKey, Config};
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

/// Claims the prefix for this cluster on first use; refuses one that holds another's.
pub async fn check_identity(
    fleet: &mut Fleet,
    lead: &Leadership,
    key: &ClusterKey,
) -> Result<(), DaemonError> {
    let ours = identity(key);
    let at = fleet.keys().cluster();
    match fleet.get(&at).await.map_err(DaemonError::Fleet)? {
        Some(found) if found == ours.as_bytes() => Ok(()),
        Some(_) => Err(DaemonError::ForeignPrefix { key: at }),
        None => fleet
            .put_as_leader(lead, &at, ours)
            .await
            .map_err(DaemonError::Fleet),
    }
}

/// This cluster's identity under the prefix: a digest of the cluster key (every cluster
/// has its own), so two clusters configured with the same prefix by mistake are told
/// apart. Not of the hosts: adding a host or changing an address is the same cluster.
fn identity(key: &ClusterKey) -> String {
    blake3::derive_key(
        "mmm 2026-11 cluster identity under an etcd prefix",
        key.as_bytes(),
    )
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect()
}

/// The status record in etcd as a cluster, or passive mode naming the key when it cannot
/// be trusted (corrupt, another version); a first start has none.
pub async fn restore_from_etcd(
    fleet: &mut Fleet,
    config: &Arc<Config>,
    now: crate::core::Millis,
) -> Result<Cluster, FleetError> {
    let mut cluster = Cluster::new(config.clone(), now);
    let key = fleet.keys().status();
    match fleet.get(&key).await? {
        None => tracing::info!(%key, "no status in etcd: first start, hosts AWAITING_RECOVERY"),
        Some(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|text| StatusRecord::from_json(text).map_err(|e| e.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity is the cluster key's alone (it once digested the host list too, and
    /// adding a host made every updated monitor call its own prefix foreign and exit).
    #[test]
    fn another_cluster_key_is_another_cluster() {
        let a = ClusterKey::from_hex(&"ab".repeat(32)).expect("a key");
        let b = ClusterKey::from_hex(&"cd".repeat(32)).expect("a key");
        assert_ne!(identity(&a), identity(&b));
        assert_eq!(identity(&a), identity(&a.clone()));
    }
}
