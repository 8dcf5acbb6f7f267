//! This monitor's etcd session: a lease renewed in the background, and its end.

use super::{Fleet, FleetError, RETRY};
use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;

/// This monitor's etcd session: a lease kept alive in the background. When it cannot be
/// renewed (etcd unreachable, majority lost) `alive` turns false, and etcd itself expires
/// the lease after its TTL: every key bound to it, the election key included, goes.
pub struct Session {
    pub lease: i64,
    alive: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Whether the last renewal succeeded in time.
    pub fn alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves once the session is lost.
    pub async fn lost(&mut self) {
        let _ = self.alive.wait_for(|alive| !alive).await;
    }

    /// Another view of `alive`, for a task that must stop when the session is lost.
    pub fn alive_watch(&self) -> watch::Receiver<bool> {
        self.alive.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Fleet {
    /// Grants a lease of the session TTL and renews it eight times per TTL, as agents
    /// renew their permits: an etcd leader election (up to 3/8 TTL with the default TTL)
    /// then passes between two renewals with room for a retry, and an etcd raft leader
    /// frozen for less than 7/8 TTL has seen a renewal recent enough not to revoke the
    /// session when it wakes (etcd 3.4's stale leader revokes every lease it counts
    /// expired before it learns it was replaced).
    ///
    /// The session counts as alive until a TTL less the margin after the last renewal
    /// that etcd answered was sent (etcd counts the TTL from when it handled it, later):
    /// never past etcd's own expiry, and a failed renewal is retried on another member
    /// meanwhile, so one lost member or an etcd leader election does not end it.
    pub async fn session(&mut self) -> Result<Session, FleetError> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let sent = tokio::time::Instant::now();
        let lease = {
            let (mut c, failed) = self.bounded("granting the session lease");
            c.lease_grant(ttl, None).await.map_err(failed)
        }?
        .id();
        let valid = self.ttl - mmm_common::types::lease_margin(self.ttl);
        let (tx, alive) = watch::channel(true);
        let every = self.ttl / 8;
        let members = self.members.clone();
        let keeper = tokio::spawn(async move {
            let mut valid_until = sent + valid;
            let mut renewing: Option<(LeaseKeeper, LeaseKeepAliveStream, u64)> = None;
            let mut next = tokio::time::Instant::now();
            loop {
                tokio::time::sleep_until(next).await;
                let sent = tokio::time::Instant::now();
                if sent >= valid_until {
                    let _ = tx.send(false);
                    return;
                }
                let budget = (valid_until - sent).min(every);
                let attempt = renewing
                    .as_ref()
                    .map_or_else(|| members.current().generation, |r| r.2);
                let renewed = tokio::time::timeout(budget, async {
                    let (keeper, stream, generation) = match renewing.as_mut() {
                        Some(r) => r,
                        None => {
                            let conn = members.current();
                            let mut client = conn.bounded;
                            let generation = conn.generation;
                            let (k, s) = client
                                .lease_keep_alive(lease)
                                .await
                                .map_err(|e| (generation, Some(e)))?;
                            renewing.insert((k, s, generation))
                        }
                    };
                    let generation = *generation;
                    keeper
                        .keep_alive()
                        .await
                        .map_err(|e| (generation, Some(e)))?;
                    stream
                        .message()
                        .await
                        .map_err(|e| (generation, Some(e)))?
                        .ok_or((generation, None))
                })
                .await;
                match renewed {
                    Ok(Ok(r)) if r.ttl() > 0 => {
                        valid_until = sent + valid;
                        next = sent + every;
                        continue;
                    }
                    // etcd no longer knows the lease: the session is over.
                    Ok(Ok(_)) => {
                        let _ = tx.send(false);
                        return;
                    }
                    Ok(Err((generation, Some(e)))) => {
                        members.failed(generation, &e).await;
                    }
                    Ok(Err((generation, None))) => {
                        members
                            .move_off(generation, "etcd closed the keepalive stream")
                            .await;
                    }
                    Err(_elapsed) => {
                        members
                            .move_off(attempt, "a session renewal was not answered")
                            .await;
                    }
                }
                renewing = None;
                next = tokio::time::Instant::now() + RETRY;
            }
        });
        Ok(Session {
            lease,
            alive,
            keeper,
        })
    }

    /// Ends the session now: its keys go with it (a monitor that dies does the same, only
    /// a TTL later).
    pub async fn end(&mut self, session: Session) -> Result<(), FleetError> {
        let lease = session.lease;
        drop(session);
        {
            let (mut c, failed) = self.bounded("revoking the session lease");
            c.lease_revoke(lease).await.map_err(failed)
        }?;
        Ok(())
    }
}
