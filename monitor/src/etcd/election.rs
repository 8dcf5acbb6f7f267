//! Leadership by etcd's election under the prefix, and the writes only a leader makes.

use super::{Fleet, FleetError, Session};
use etcd_client::{
    Compare, CompareOp, GetOptions, LeaderKey, PutOptions, ResignOptions, SortOrder, SortTarget,
    Txn, TxnOp,
};
use std::time::Duration;

/// How often a campaign looks for election keys bound to no lease.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Leadership won by a campaign: the election key, and the term it stands for.
#[derive(Debug, Clone)]
pub struct Leadership {
    key: LeaderKey,
    pub term: u64,
}

impl Fleet {
    /// Waits until this monitor leads (etcd's election under the prefix); `name` is
    /// what other monitors see as the leader.
    /// The wait is not bounded by the request timeout (a standby waits as long as another
    /// leads); it ends with [`FleetError::SessionLost`] if this monitor's session is lost.
    pub async fn campaign(
        &mut self,
        session: &mut Session,
        name: &str,
    ) -> Result<Leadership, FleetError> {
        let election = self.keys.election();
        let lease = session.lease;
        let (mut waiting, failed) = self.waiting("campaigning for leadership");
        // etcd's election waits for every earlier key under the election to go, and a key
        // bound to no lease (put by hand, or by a tool) never goes by itself: nobody would
        // ever be elected again. Such keys are removed, named, while the campaign waits.
        let mut sweeper = self.clone();
        let sweep = tokio::spawn(async move {
            loop {
                sweeper.remove_leaseless_candidates().await;
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
        let won = tokio::select! {
            won = waiting.campaign(election, name, lease) => won,
            _ = session.lost() => {
                sweep.abort();
                return Err(FleetError::SessionLost);
            }
        };
        sweep.abort();
        let won = won.map_err(failed)?;
        let key = won.leader().cloned().ok_or(FleetError::NoLeaderKey {
            op: "campaigning for leadership",
        })?;
        let term = u64::try_from(key.rev()).unwrap_or(0);
        Ok(Leadership { key, term })
    }

    /// Deletes every key under the election that is bound to no lease (no campaign makes
    /// one), unless it changed meanwhile; each one is named in the log.
    async fn remove_leaseless_candidates(&mut self) {
        let listed = {
            let (mut c, failed) = self.bounded("listing the election's keys");
            c.get(
                self.keys.candidates(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(failed)
        };
        let Ok(listed) = listed else { return };
        for kv in listed.kvs().iter().filter(|kv| kv.lease() == 0) {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let unchanged = Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision());
            let txn = Txn::new()
                .when([unchanged])
                .and_then([TxnOp::delete(key.clone(), None)]);
            let (mut c, failed) =
                self.bounded("removing a key bound to no lease from the election");
            match c.txn(txn).await.map_err(failed) {
                Ok(_) => {
                    tracing::warn!(%key, "a key under the fleet's election bound to no lease (not a monitor's campaign: it would block every election) was removed")
                }
                Err(e) => {
                    tracing::warn!(%key, error = %crate::error_chain(&e), "a key under the fleet's election bound to no lease could not be removed")
                }
            }
        }
    }

    /// The current leader's name and term, if any monitor leads: as etcd's election
    /// defines it, the campaign key under the election with the lowest create revision.
    /// (Read as a range rather than through etcd's Leader call, which answers "no leader"
    /// only as an error message.)
    pub async fn leader(&mut self) -> Result<Option<(String, u64)>, FleetError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let r = {
            let (mut c, failed) = self.bounded("asking for the leader");
            c.get(self.keys.candidates(), Some(options))
                .await
                .map_err(failed)
        }?;
        Ok(r.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                u64::try_from(kv.create_revision()).unwrap_or(0),
            )
        }))
    }

    /// Puts `value` at `key` only while `lead` still leads.
    pub async fn put_as_leader(
        &mut self,
        lead: &Leadership,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), FleetError> {
        self.put_as_leader_in(lead, key, value, None).await
    }

    /// As [`Fleet::put_as_leader`], the key bound to `lease` when given.
    pub async fn put_as_leader_in(
        &mut self,
        lead: &Leadership,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: Option<i64>,
    ) -> Result<(), FleetError> {
        let still_leading = Compare::create_revision(
            lead.key.key(),
            CompareOp::Equal,
            i64::try_from(lead.term).unwrap_or(i64::MAX),
        );
        let txn = Txn::new().when([still_leading]).and_then([TxnOp::put(
            key,
            value,
            lease.map(|l| PutOptions::new().with_lease(l)),
        )]);
        let done = {
            let (mut c, failed) = self.bounded("writing as the leader");
            c.txn(txn).await.map_err(failed)
        }?;
        if done.succeeded() {
            Ok(())
        } else {
            Err(FleetError::Deposed { term: lead.term })
        }
    }

    /// Gives up leadership at once (a planned stop): another monitor is elected without
    /// waiting for the session to expire.
    pub async fn resign(&mut self, lead: Leadership) -> Result<(), FleetError> {
        {
            let (mut c, failed) = self.bounded("resigning leadership");
            c.resign(Some(ResignOptions::new().with_leader(lead.key)))
                .await
                .map_err(failed)
        }?;
        Ok(())
    }
}
