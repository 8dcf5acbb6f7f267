//! The monitor fleet's coordination on etcd (`[coordination]`): a session (an etcd lease
//! kept alive), leadership by etcd's election, and writes that succeed only while the
//! writer still leads.
//!
//! The term is the create revision of the leader's election key: etcd's revision only
//! grows, and every campaign creates a new key, so a later leader always has a larger
//! term. A write is a transaction that compares that key's create revision with the term:
//! once the leader's session has expired, or it resigned, the key is gone (or another's)
//! and the write fails as [`FleetError::Deposed`], whatever the deposed monitor believes.
//!
//! This module is the etcd side only; it knows nothing of the cluster it coordinates.

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaderKey, ResignOptions, Txn, TxnOp,
};
use mmm_common::config::Coordination;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("connecting to etcd at {endpoints}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{op}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{op}: etcd answered without a leader key")]
    NoLeaderKey { op: &'static str },
    #[error("term {term} is over: another monitor leads, or etcd expired this monitor's session")]
    Deposed { term: u64 },
}

fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> FleetError {
    move |source| FleetError::Etcd { op, source }
}

/// A connection to the etcd cluster under one prefix.
#[derive(Clone)]
pub struct Fleet {
    client: Client,
    prefix: String,
    ttl: Duration,
}

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
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Leadership won by a campaign: the election key, and the term it stands for.
#[derive(Debug, Clone)]
pub struct Leadership {
    key: LeaderKey,
    pub term: u64,
}

impl Fleet {
    /// Connects (bounded by `timeout`); every later request is bounded by it too.
    pub async fn connect(c: &Coordination, timeout: Duration) -> Result<Fleet, FleetError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = Client::connect(&c.etcd, Some(options))
            .await
            .map_err(|source| FleetError::Connect {
                endpoints: c.etcd.join(", "),
                source,
            })?;
        Ok(Fleet {
            client,
            prefix: c.prefix.clone(),
            ttl: c.session_ttl,
        })
    }

    fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// A key under the prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Grants a lease of the session TTL and renews it three times per TTL.
    pub async fn session(&mut self) -> Result<Session, FleetError> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let lease = self
            .client
            .lease_grant(ttl, None)
            .await
            .map_err(etcd("granting the session lease"))?
            .id();
        let (mut keeper, mut stream) = self
            .client
            .lease_keep_alive(lease)
            .await
            .map_err(etcd("keeping the session lease alive"))?;
        let (tx, alive) = watch::channel(true);
        let every = self.ttl / 3;
        let keeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                // A renewal must come back within the interval, or the session counts as
                // lost now, before etcd expires it: nothing may be decided on it any more.
                let renewed = tokio::time::timeout(every, async {
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await;
                match renewed {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    _ => {
                        let _ = tx.send(false);
                        return;
                    }
                }
            }
        });
        Ok(Session {
            lease,
            alive,
            keeper,
        })
    }

    /// Waits until this monitor leads (etcd's election under the prefix); `name` is
    /// what other monitors see as the leader.
    pub async fn campaign(
        &mut self,
        session: &Session,
        name: &str,
    ) -> Result<Leadership, FleetError> {
        let election = self.election();
        let won = self
            .client
            .campaign(election, name, session.lease)
            .await
            .map_err(etcd("campaigning for leadership"))?;
        let key = won.leader().cloned().ok_or(FleetError::NoLeaderKey {
            op: "campaigning for leadership",
        })?;
        let term = u64::try_from(key.rev()).unwrap_or(0);
        Ok(Leadership { key, term })
    }

    /// The current leader's name and term, if any monitor leads.
    pub async fn leader(&mut self) -> Result<Option<(String, u64)>, FleetError> {
        match self.client.leader(self.election()).await {
            Ok(r) => Ok(r.kv().map(|kv| {
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    u64::try_from(kv.create_revision()).unwrap_or(0),
                )
            })),
            // etcd answers "no leader" as an error.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
            Err(source) => Err(FleetError::Etcd {
                op: "asking for the leader",
                source,
            }),
        }
    }

    /// Puts `value` at `name` under the prefix only while `lead` still leads.
    pub async fn put_as_leader(
        &mut self,
        lead: &Leadership,
        name: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), FleetError> {
        let still_leading = Compare::create_revision(
            lead.key.key(),
            CompareOp::Equal,
            i64::try_from(lead.term).unwrap_or(i64::MAX),
        );
        let txn =
            Txn::new()
                .when([still_leading])
                .and_then([TxnOp::put(self.key(name), value, None)]);
        let done = self
            .client
            .txn(txn)
            .await
            .map_err(etcd("writing as the leader"))?;
        if done.succeeded() {
            Ok(())
        } else {
            Err(FleetError::Deposed { term: lead.term })
        }
    }

    /// Reads `name` under the prefix.
    pub async fn get(&mut self, name: &str) -> Result<Option<Vec<u8>>, FleetError> {
        let r = self
            .client
            .get(self.key(name), None)
            .await
            .map_err(etcd("reading from etcd"))?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Gives up leadership at once (a planned stop): another monitor is elected without
    /// waiting for the session to expire.
    pub async fn resign(&mut self, lead: Leadership) -> Result<(), FleetError> {
        self.client
            .resign(Some(ResignOptions::new().with_leader(lead.key)))
            .await
            .map_err(etcd("resigning leadership"))?;
        Ok(())
    }

    /// Ends the session now: its keys go with it (a monitor that dies does the same, only
    /// a TTL later).
    pub async fn end(&mut self, session: Session) -> Result<(), FleetError> {
        let lease = session.lease;
        drop(session);
        self.client
            .lease_revoke(lease)
            .await
            .map_err(etcd("revoking the session lease"))?;
        Ok(())
    }
}
