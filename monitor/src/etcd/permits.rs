//! The agents' writer permits: each agent's own etcd lease, read and ended by the leader.

use super::{Fleet, FleetError};

impl Fleet {
    /// The etcd lease an agent holds as its writer permit (`<prefix>/agents/<host>`), if
    /// its key exists.
    pub async fn agent_lease(&mut self, host: &str) -> Result<Option<i64>, FleetError> {
        let r = {
            let (mut c, failed) = self.bounded("reading an agent's lease");
            c.get(self.keys.agent(host), None).await.map_err(failed)
        }?;
        Ok(r.kvs().first().map(|kv| kv.lease()).filter(|l| *l != 0))
    }

    /// Whether etcd still keeps `lease` alive. etcd answers TTL -1 for a lease it does not
    /// know; a live one's remaining TTL is given in whole seconds, rounded down, so a
    /// lease with less than a second left (most of the time with a 1 s TTL) reads 0.
    pub async fn lease_alive(&mut self, lease: i64) -> Result<bool, FleetError> {
        let r = {
            let (mut c, failed) = self.bounded("asking for a lease's time to live");
            c.lease_time_to_live(lease, None).await.map_err(failed)
        }?;
        Ok(r.ttl() >= 0)
    }

    /// Ends `lease` now: its keys go, and its holder learns it at its next renewal.
    pub async fn revoke(&mut self, lease: i64) -> Result<(), FleetError> {
        let (mut client, failed) = self.bounded("revoking an agent's lease");
        match client.lease_revoke(lease).await {
            Ok(_) => Ok(()),
            // A lease already gone is refused; gone is what the revoke was for.
            Err(source) => match self.lease_alive(lease).await {
                Ok(false) => Ok(()),
                _ => Err(failed(source)),
            },
        }
    }
}
