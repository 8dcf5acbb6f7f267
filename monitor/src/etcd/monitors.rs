//! The monitors registered under `<prefix>/monitors/`, each bound to its session.

use super::{Fleet, FleetError, Session};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

/// What `show` says of the fleet: who leads in which term, and every monitor present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    pub leader: Option<(String, u64)>,
    /// The names registered under `<prefix>/monitors/`, each bound to a lease.
    pub members: Vec<String>,
    /// Each of those names with the value it was registered with (sealed with the
    /// cluster key by a monitor of this release: monitor/src/daemon/seat/roster.rs).
    pub registrations: Vec<(String, Vec<u8>)>,
}

impl Fleet {
    /// Registers this monitor as `name` under `<prefix>/monitors/`, bound to its session,
    /// unless another live monitor has that name. `earlier` are this process's earlier
    /// sessions: a session this monitor counted lost (a renewal late, an etcd election)
    /// can still live in etcd for a TTL, and etcd extends every lease when its own leader
    /// changes; the name it holds is this monitor's, not a duplicate's.
    pub async fn join(
        &mut self,
        session: &Session,
        name: &str,
        value: &str,
        earlier: &[i64],
    ) -> Result<(), FleetError> {
        let key = self.keys.monitor(name);
        let put = TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(session.lease)),
        );
        let absent = Compare::create_revision(key.clone(), CompareOp::Equal, 0);
        let mut guards = vec![absent];
        for lease in std::iter::once(session.lease).chain(earlier.iter().copied()) {
            guards.push(Compare::lease(key.clone(), CompareOp::Equal, lease));
        }
        // Bound to no lease: no monitor registers so (its name goes with its session), so
        // it is a squatter's (anyone who can write to etcd) and would keep this monitor
        // out for good. Taken over, and named.
        let squatted = guards.len();
        guards.push(Compare::lease(key.clone(), CompareOp::Equal, 0));
        for (i, guard) in guards.into_iter().enumerate() {
            let done = {
                let (mut c, failed) = self.bounded("registering this monitor");
                c.txn(Txn::new().when([guard]).and_then([put.clone()]))
                    .await
                    .map_err(failed)
            }?;
            if done.succeeded() {
                if i == squatted {
                    tracing::warn!(%key, "a key bound to no lease held this monitor's name (no monitor registers so): taken over");
                }
                return Ok(());
            }
        }
        Err(FleetError::NameTaken {
            name: name.into(),
            key,
        })
    }

    /// The leader and every registered monitor.
    pub async fn view(&mut self) -> Result<FleetView, FleetError> {
        let leader = self.leader().await?;
        let r = {
            let (mut c, failed) = self.bounded("listing the monitors");
            c.get(self.keys.monitors(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(failed)
        }?;
        // A name bound to no lease is no monitor's (each registers under its session): it
        // would sit in the roster for good and keep the writer's failsafe from holding.
        let dir = self.keys.monitors();
        let registrations: Vec<(String, Vec<u8>)> = r
            .kvs()
            .iter()
            .filter(|kv| kv.lease() != 0)
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let name = key.strip_prefix(dir.as_str())?.to_string();
                Some((name, kv.value().to_vec()))
            })
            .collect();
        let mut members: Vec<String> = registrations.iter().map(|(n, _)| n.clone()).collect();
        members.sort();
        Ok(FleetView {
            leader,
            members,
            registrations,
        })
    }
}
