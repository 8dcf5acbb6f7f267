//! Who leads the monitor fleet now, as etcd's election says: the agent obeys a monitor
//! only while its term is etcd's current leader term.
//!
//! Terms alone (`crate::term`) stop a deposed leader only once its successor has spoken to
//! this agent. A leader frozen (SIGSTOP, a paused VM) and woken after a successor was
//! elected could otherwise reach an agent the successor cannot reach, still in the highest
//! term that agent has seen, and make it writable again after the successor fenced it
//! (revoked its lease): two writers. So in a fleet every desired state and every action is
//! checked against the election: the leader is the key under `<prefix>/leader/` with the
//! lowest create revision, and that revision is the term. A watch keeps the answer current
//! at no cost on the failover path; when the session's term is not the one last seen (the
//! watch lags behind a new leader, or etcd is unreachable) the agent asks etcd at once
//! (a linearizable read) and refuses if it cannot confirm.

use etcd_client::{Client, GetOptions, SortOrder, SortTarget, WatchOptions};
use mmm_common::config::Coordination;
use mmm_common::etcd::{Keys, LazyMembers};
use std::time::Duration;
use tokio::sync::watch;

/// What the agent knows of the fleet's leadership.
pub struct Election {
    coordination: Coordination,
    /// The current leader's term; None while unknown (etcd unreachable) or none leads.
    current: watch::Sender<Option<u64>>,
    timeout: Duration,
    /// One etcd member at a time, moved off when it fails.
    members: LazyMembers,
}

/// Why a term is not obeyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    #[error("term {term} does not lead the fleet (etcd's election: term {current})")]
    Other { term: u64, current: u64 },
    #[error("term {term} does not lead the fleet (etcd's election has no leader)")]
    Nobody { term: u64 },
    #[error(
        "term {term} cannot be confirmed as the fleet's leader: etcd does not answer ({reason})"
    )]
    Unknown { term: u64, reason: String },
}

impl Election {
    /// `agent_timeout`: the monitor's patience with this agent. An order that asks etcd
    /// who leads holds up the session's frames behind it (heartbeats included), so the
    /// question is bounded by half of it: a host cut from etcd by a firewall that drops
    /// packets answers its monitors, and is seen self-fenced, instead of falling silent.
    pub fn new(c: &Coordination, agent_timeout: Duration) -> Election {
        let timeout = (agent_timeout / 2)
            .max(Duration::from_millis(100))
            .min((c.session_ttl / 2).max(Duration::from_millis(200)));
        Election {
            coordination: c.clone(),
            current: watch::Sender::new(None),
            timeout,
            members: LazyMembers::new(c, timeout),
        }
    }

    fn election(&self) -> String {
        Keys::new(self.coordination.prefix.as_str()).candidates()
    }

    /// The member in use: `bounded` for a read, else the client for the watch.
    async fn connect(&self, bounded: bool) -> Result<(Client, u64), String> {
        let conn = self
            .members
            .get()
            .await
            .map_err(|e| mmm_common::error_chain(&e))?
            .current();
        let client = if bounded { conn.bounded } else { conn.waiting };
        Ok((client, conn.generation))
    }

    /// A request on connection `generation` failed: move off that member if it is the
    /// member's failure, so that the next try asks another.
    async fn failed(&self, generation: u64, e: &etcd_client::Error) -> String {
        if let Ok(m) = self.members.get().await {
            m.failed(generation, e).await;
        }
        mmm_common::error_chain(e)
    }

    async fn read(&self, client: &mut Client, generation: u64) -> Result<Option<u64>, String> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
            .with_keys_only();
        let r = match tokio::time::timeout(self.timeout, client.get(self.election(), Some(options)))
            .await
        {
            // The move runs in the background: an order waits for this answer, and the
            // session's heartbeats wait for the order.
            Err(_elapsed) => {
                let why = format!("no answer within {:?}", self.timeout);
                if let Ok(m) = self.members.get().await {
                    m.spawn_move_off(generation, why.clone());
                }
                return Err(why);
            }
            Ok(Err(e)) => {
                if let Ok(m) = self.members.get().await {
                    m.spawn_failed(generation, &e);
                }
                return Err(mmm_common::error_chain(&e));
            }
            Ok(Ok(r)) => r,
        };
        Ok(r.kvs()
            .first()
            .map(|kv| u64::try_from(kv.create_revision()).unwrap_or(0)))
    }

    pub async fn run(self: std::sync::Arc<Self>) {
        let mut said = false;
        loop {
            let watched = async {
                let (mut client, generation) = self.connect(false).await?;
                let (mut reader, _) = self.connect(true).await?;
                let now = self.read(&mut reader, generation).await?;
                self.current.send_replace(now);
                if std::mem::take(&mut said) {
                    tracing::info!(term = ?now, "the fleet's election is followed again");
                }
                let mut stream = match client
                    .watch(self.election(), Some(WatchOptions::new().with_prefix()))
                    .await
                {
                    Ok(stream) => stream,
                    Err(e) => return Err(self.failed(generation, &e).await),
                };
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return Err(self.failed(generation, &e).await),
                    }
                    let now = self.read(&mut reader, generation).await?;
                    self.current.send_replace(now);
                }
                Err::<(), String>("the watch on the election ended".into())
            };
            if let Err(reason) = watched.await {
                self.current.send_replace(None);
                if !std::mem::replace(&mut said, true) {
                    tracing::warn!(%reason, "the fleet's election cannot be followed: each monitor order is confirmed with etcd first");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ok when `term` leads the fleet now. With `fresh` (an order that could make a
    /// writer) etcd is always asked: a watch can lag, and a stale "yes" there would let a
    /// deposed leader re-arm a host its successor fenced. Other orders may use the
    /// watch's answer.
    pub async fn confirms(&self, term: u64, fresh: bool) -> Result<(), NotLeader> {
        if !fresh && *self.current.borrow() == Some(term) {
            return Ok(());
        }
        // The watch may lag behind a leader elected a moment ago: ask etcd itself.
        let (mut client, generation) = self
            .connect(true)
            .await
            .map_err(|reason| NotLeader::Unknown { term, reason })?;
        let now = self
            .read(&mut client, generation)
            .await
            .map_err(|reason| NotLeader::Unknown { term, reason })?;
        // Not written to `current`: this read may finish after the watch stored a newer
        // answer, and must not overwrite it.
        match now {
            Some(t) if t == term => Ok(()),
            Some(current) => Err(NotLeader::Other { term, current }),
            None => Err(NotLeader::Nobody { term }),
        }
    }
}
