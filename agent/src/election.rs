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
//!
//! The term is (epoch, revision) (`mmm_common::epoch`): the same read takes the epoch
//! record at `<prefix>/cluster` and verifies it with the cluster key, so a leader of an
//! etcd that was wiped, re-created or restored is never confirmed by a revision that the
//! new history happens to reuse. A record that does not verify is named in one log line
//! and confirms nothing.

use crate::term::Shown;
use etcd_client::{
    Client, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use mmm_common::config::{ClusterKey, Coordination};
use mmm_common::epoch::{EpochRecord, Term};
use mmm_common::etcd::{Keys, LazyMembers};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// What the agent knows of the fleet's leadership.
pub struct Election {
    coordination: Coordination,
    /// Verifies the epoch record.
    key: ClusterKey,
    /// The current leader's term; None while unknown (etcd unreachable, no verified
    /// epoch) or none leads.
    current: watch::Sender<Option<Term>>,
    timeout: Duration,
    /// One etcd member at a time, moved off when it fails.
    members: LazyMembers,
    /// The last `<prefix>/cluster` value that did not verify: logged once, not per read.
    refused: Mutex<Option<Vec<u8>>>,
}

/// Why a term is not obeyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    #[error("term {term} does not lead the fleet (etcd's election: term {current})")]
    Other {
        term: Term,
        current: Term,
        /// The epoch record read with `current`, verified.
        record: EpochRecord,
    },
    #[error("term {term} does not lead the fleet (etcd's election has no leader)")]
    Nobody { term: Term },
    #[error("term {term} cannot be confirmed as the fleet's leader: {reason}")]
    Unknown { term: Term, reason: String },
}

/// One consistent read of the election and the epoch record.
struct Now {
    /// The leader's revision, if any monitor leads.
    leader: Option<u64>,
    /// The record at `<prefix>/cluster`, or why there is none this agent can verify.
    epoch: Result<EpochRecord, String>,
}

impl Now {
    /// The leader's term, when a monitor leads in the epoch shown.
    fn term(&self) -> Option<Term> {
        let (rev, r) = (self.leader?, self.epoch.as_ref().ok()?);
        (rev >= r.term).then_some(Term {
            epoch: r.epoch,
            rev,
        })
    }
}

impl Election {
    /// `agent_timeout`: the monitor's patience with this agent. An order that asks etcd
    /// who leads holds up the session's frames behind it (heartbeats included), so the
    /// question is bounded by half of it: a host cut from etcd by a firewall that drops
    /// packets answers its monitors, and is seen self-fenced, instead of falling silent.
    pub fn new(c: &Coordination, key: &ClusterKey, agent_timeout: Duration) -> Election {
        let timeout = (agent_timeout / 2)
            .max(Duration::from_millis(100))
            .min((c.session_ttl / 2).max(Duration::from_millis(200)));
        Election {
            coordination: c.clone(),
            key: key.clone(),
            current: watch::Sender::new(None),
            timeout,
            members: LazyMembers::new(c, timeout),
            refused: Mutex::new(None),
        }
    }

    fn election(&self) -> String {
        Keys::new(self.coordination.prefix.as_str()).candidates()
    }

    fn epoch_key(&self) -> String {
        Keys::new(self.coordination.prefix.as_str()).cluster()
    }

    /// The epoch record in `value`, verified; a value that does not verify is logged once.
    fn verify(&self, value: Option<&[u8]>) -> Result<EpochRecord, String> {
        let key = self.epoch_key();
        let Some(value) = value else {
            return Err(format!(
                "etcd key {key} is missing (no leader has written an epoch)"
            ));
        };
        match mmm_common::epoch::open(&self.key, &self.coordination.prefix, value) {
            Ok(r) => Ok(r),
            Err(e) => {
                let why = format!("etcd key {key} is not accepted: {e}");
                let mut last = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_deref() != Some(value) {
                    tracing::warn!(value = %String::from_utf8_lossy(value), "{why}");
                    *last = Some(value.to_vec());
                }
                Err(why)
            }
        }
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

    async fn read(&self, client: &mut Client, generation: u64) -> Result<Now, String> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
            .with_keys_only();
        // One transaction: the leader and the epoch as of one revision.
        let txn = Txn::new().and_then([
            TxnOp::get(self.election(), Some(options)),
            TxnOp::get(self.epoch_key(), None),
        ]);
        let r = match tokio::time::timeout(self.timeout, client.txn(txn)).await {
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
        let mut gets = r.op_responses().into_iter().filter_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(election), Some(epoch)) = (gets.next(), gets.next()) else {
            return Err("etcd answered the election's read without its two ranges".into());
        };
        Ok(Now {
            leader: election
                .kvs()
                .first()
                .map(|kv| u64::try_from(kv.create_revision()).unwrap_or(0)),
            epoch: self.verify(epoch.kvs().first().map(|kv| kv.value())),
        })
    }

    /// The epoch etcd shows now, verified, and the election's leader as of the same
    /// read: what a Hello of another epoch than this agent's is judged by (`crate::term`).
    pub async fn shown(&self) -> Shown {
        let read = async {
            let (mut client, generation) = self.connect(true).await?;
            self.read(&mut client, generation).await
        };
        match read.await {
            Ok(Now {
                epoch: Ok(record),
                leader,
            }) => Shown::Etcd {
                record,
                leading: leader,
            },
            Ok(Now {
                epoch: Err(why), ..
            }) => Shown::Unknown(why),
            Err(reason) => Shown::Unknown(format!("etcd does not answer ({reason})")),
        }
    }

    pub async fn run(self: std::sync::Arc<Self>) {
        let mut said = false;
        loop {
            let watched = async {
                let (mut client, generation) = self.connect(false).await?;
                let (mut reader, _) = self.connect(true).await?;
                let now = self.read(&mut reader, generation).await?.term();
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
                // A new leader writes its epoch just after it is elected: the cached term
                // must follow that write too, not only the election's keys.
                if let Err(e) = stream.watch(self.epoch_key(), None).await {
                    return Err(self.failed(generation, &e).await);
                }
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return Err(self.failed(generation, &e).await),
                    }
                    let now = self.read(&mut reader, generation).await?.term();
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
    pub async fn confirms(&self, term: Term, fresh: bool) -> Result<(), NotLeader> {
        if !fresh && *self.current.borrow() == Some(term) {
            return Ok(());
        }
        // The watch may lag behind a leader elected a moment ago: ask etcd itself.
        let unanswered = |reason| NotLeader::Unknown {
            term,
            reason: format!("etcd does not answer ({reason})"),
        };
        let (mut client, generation) = self.connect(true).await.map_err(unanswered)?;
        let now = self
            .read(&mut client, generation)
            .await
            .map_err(unanswered)?;
        // Not written to `current`: this read may finish after the watch stored a newer
        // answer, and must not overwrite it.
        match (now.leader, &now.epoch, now.term()) {
            (None, _, _) => Err(NotLeader::Nobody { term }),
            (Some(_), Err(why), _) => Err(NotLeader::Unknown {
                term,
                reason: why.clone(),
            }),
            (Some(_), Ok(_), Some(t)) if t == term => Ok(()),
            (Some(_), Ok(record), Some(current)) => Err(NotLeader::Other {
                term,
                current,
                record: *record,
            }),
            (Some(rev), Ok(record), None) => Err(NotLeader::Unknown {
                term,
                reason: format!(
                    "the election's leader (revision {rev}) is earlier than the epoch etcd shows, which begins with term {}",
                    record.term
                ),
            }),
        }
    }
}
