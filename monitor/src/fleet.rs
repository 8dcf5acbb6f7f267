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
    Client, Compare, CompareOp, EventType, GetOptions, LeaderKey, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, ResignOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use mmm_common::config::Coordination;
use mmm_common::etcd::{Keys, Members};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
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
    #[error("a monitor named '{name}' is already in this fleet (key {key}): give each monitor its own --name")]
    NameTaken { name: String, key: String },
    #[error("connecting to etcd")]
    Members(#[source] mmm_common::etcd::MembersError),
    #[error("the session was lost while campaigning")]
    SessionLost,
    #[error("no answer from the leading monitor within {timeout:?}")]
    NoReply { timeout: std::time::Duration },
}

/// How soon a failed session renewal is retried (on another member if the last failed).
const RETRY: Duration = Duration::from_millis(100);

/// How often a campaign looks for election keys bound to no lease.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long a directory's watch that ended may take to resume before its feed ends.
const RESUME_WITHIN: Duration = Duration::from_secs(5);

/// A connection to the etcd cluster under one prefix, through one member at a time
/// (moved off as soon as a request fails the way a lost member fails).
#[derive(Clone)]
pub struct Fleet {
    members: Members,
    keys: Keys,
    ttl: Duration,
}

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

/// A key under a directory of the prefix, with the lease it is bound to (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// A change seen by [`Fleet::watch_dir`]; a deletion says which lease the key had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChange {
    Put(DirEntry),
    Deleted { name: String, lease: i64 },
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

/// Leadership won by a campaign: the election key, and the term it stands for.
#[derive(Debug, Clone)]
pub struct Leadership {
    key: LeaderKey,
    pub term: u64,
}

impl Fleet {
    /// Connects (bounded by `timeout`); every later request is bounded by it too.
    pub async fn connect(c: &Coordination, timeout: Duration) -> Result<Fleet, FleetError> {
        let members = Members::connect(c, timeout)
            .await
            .map_err(FleetError::Members)?;
        Ok(Fleet {
            members,
            keys: Keys::new(c.prefix.as_str()),
            ttl: c.session_ttl,
        })
    }

    /// The last recent failure of an etcd member, for `show`.
    pub fn etcd_trouble(&self) -> Option<String> {
        self.members.trouble()
    }

    /// The member in use, each request bounded by the connect timeout, and the mapping of
    /// its errors, which moves off that member when it failed.
    fn bounded(&self, op: &'static str) -> (Client, impl FnOnce(etcd_client::Error) -> FleetError) {
        let conn = self.members.current();
        (conn.bounded, self.failed(conn.generation, op))
    }

    /// As [`Fleet::bounded`], for requests that wait by design (a campaign, a watch).
    fn waiting(&self, op: &'static str) -> (Client, impl FnOnce(etcd_client::Error) -> FleetError) {
        let conn = self.members.current();
        (conn.waiting, self.failed(conn.generation, op))
    }

    fn failed(
        &self,
        generation: u64,
        op: &'static str,
    ) -> impl FnOnce(etcd_client::Error) -> FleetError {
        let members = self.members.clone();
        move |source| {
            members.spawn_failed(generation, &source);
            FleetError::Etcd { op, source }
        }
    }

    /// The keys of this fleet's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

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

    /// Puts `value` at `key`, bound to `session` (it goes with it).
    pub async fn put_in_session(
        &mut self,
        session_lease: i64,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), FleetError> {
        {
            let (mut c, failed) = self.bounded("writing to etcd");
            c.put(
                key,
                value,
                Some(PutOptions::new().with_lease(session_lease)),
            )
            .await
            .map_err(failed)
        }?;
        Ok(())
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &str) -> Result<(), FleetError> {
        {
            let (mut c, failed) = self.bounded("deleting from etcd");
            c.delete(key, None).await.map_err(failed)
        }?;
        Ok(())
    }

    /// A standby hands an operator's command line to the leader and waits (at most
    /// `timeout`) for its answer. The command key lives in this monitor's session: a
    /// standby that dies leaves nothing for a later leader to run.
    pub async fn forward(
        &mut self,
        session_lease: i64,
        id: &str,
        line: &str,
        timeout: Duration,
    ) -> Result<String, FleetError> {
        let reply_key = self.keys.reply(id);
        self.put_in_session(session_lease, &self.keys.command(id), line)
            .await?;
        let start = tokio::time::Instant::now();
        let answer = loop {
            if let Some(text) = self.get(&reply_key).await? {
                break Ok(String::from_utf8_lossy(&text).into_owned());
            }
            if start.elapsed() >= timeout {
                break Err(FleetError::NoReply { timeout });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = self.delete(&self.keys.command(id)).await;
        let _ = self.delete(&reply_key).await;
        answer
    }

    /// Every key under `dir` (a directory of [`Keys`], ending in `/`) now, named by the
    /// rest of its key, then each change as it happens (the watch
    /// starts right after the read, so nothing falls in between). The feed ends when the
    /// watch does (etcd unreachable): the receiver then sees the channel closed.
    pub async fn watch_dir(
        &mut self,
        dir: &str,
    ) -> Result<(Vec<DirEntry>, tokio::sync::mpsc::Receiver<DirChange>), FleetError> {
        let prefix = dir.to_string();
        let now = {
            let (mut c, failed) = self.bounded("reading a directory");
            c.get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(failed)
        }?;
        let from = now.header().map_or(0, |h| h.revision()) + 1;
        let mut watching = self.members.current().generation;
        let mut stream = {
            let (mut c, failed) = self.waiting("watching a directory");
            c.watch(
                prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_prev_key()
                        .with_start_revision(from),
                ),
            )
            .await
            .map_err(failed)
        }?;
        let name = {
            let prefix = prefix.clone();
            move |kv: &etcd_client::KeyValue| {
                String::from_utf8_lossy(kv.key())
                    .trim_start_matches(prefix.as_str())
                    .to_string()
            }
        };
        let entries = now
            .kvs()
            .iter()
            .map(|kv| DirEntry {
                name: name(kv),
                value: kv.value().to_vec(),
                lease: kv.lease(),
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let fleet = self.clone();
        tokio::spawn(async move {
            // Where the feed stands: a watch that ends (its member died, was cut off or
            // lost its leader) is resumed from here on the member now in use, so no
            // change falls in between and a lost member ends no term. The feed ends only
            // when the watch cannot be resumed within RESUME_WITHIN (etcd compacted past
            // it, or no member answers): the receiver then sees the channel closed.
            let mut next = from;
            loop {
                loop {
                    let r = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) | Err(_) => break,
                    };
                    if r.canceled() || r.compact_revision() > 0 {
                        return;
                    }
                    for e in r.events() {
                        let Some(kv) = e.kv() else { continue };
                        next = next.max(kv.mod_revision() + 1);
                        let change = match e.event_type() {
                            EventType::Put => DirChange::Put(DirEntry {
                                name: name(kv),
                                value: kv.value().to_vec(),
                                lease: kv.lease(),
                            }),
                            EventType::Delete => DirChange::Deleted {
                                name: name(kv),
                                lease: e.prev_kv().map_or(0, |p| p.lease()),
                            },
                        };
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                }
                fleet.members.move_off(watching, "a watch ended").await;
                let resumed = tokio::time::timeout(RESUME_WITHIN, async {
                    loop {
                        watching = fleet.members.current().generation;
                        let (mut c, failed) = fleet.waiting("resuming a directory's watch");
                        let options = WatchOptions::new()
                            .with_prefix()
                            .with_prev_key()
                            .with_start_revision(next);
                        match c.watch(prefix.clone(), Some(options)).await.map_err(failed) {
                            Ok(s) => return s,
                            Err(e) => {
                                tracing::debug!(error = %crate::error_chain(&e), "resuming a watch failed; retrying");
                                tokio::time::sleep(RETRY).await;
                            }
                        }
                    }
                })
                .await;
                match resumed {
                    Ok(s) => stream = s,
                    Err(_elapsed) => return,
                }
            }
        });
        Ok((entries, rx))
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

    /// Reads `key`.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
        let r = {
            let (mut c, failed) = self.bounded("reading from etcd");
            c.get(key, None).await.map_err(failed)
        }?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
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
