//! The agent's etcd lease: its writer permit in a monitor fleet (`[coordination]`).
//!
//! In a fleet the monitor must not be a write dependency: a dead leader must stop no
//! write. So the permit to hold the writer role is not renewed by the monitor but by the
//! agent itself, through a lease of its own in etcd (TTL `session_ttl`), published as
//! `<prefix>/agents/<host>` = `{"host":"db1","lease":<id>}` and bound to that lease. The
//! monitor reads the key to learn the lease, and before it promotes another host it
//! waits until the lease has expired in etcd, or revokes it and waits `session_ttl`.
//!
//! The agent's side of that contract: it gives the writer up *before* etcd can have let
//! the lease go. Each keepalive's CLOCK_BOOTTIME instant is taken just before it is
//! sent; etcd counts the renewed TTL from when it handles it, later, so its expiry is at
//! least `sent + ttl`. The local deadline is `sent + ttl - margin(ttl)`
//! ([`crate::lease::etcd_permit_until`]): when it passes, `server::lease_task` removes
//! the writer VIPs and sets read_only, as it does without a fleet.
//!
//! - Revoked (a monitor fences this host) or expired: the next keepalive is answered
//!   with TTL 0; the permit ends at once (the lease task fences now, not at the
//!   deadline), and a new lease is granted, saved and published.
//! - etcd unreachable: keepalives fail, nothing renews the deadline, and writes stop
//!   after about `session_ttl` (less the margin), leader or no leader. The agent retries
//!   with a bounded backoff and keeps serving read-only roles and reports meanwhile.
//! - After a local fence the old lease is never renewed again (a monitor may already
//!   count on its expiry): it is revoked, best effort, and a new one is granted.
//! - Restart: the lease id is kept in `<state_dir>/<host>.etcd-lease`. If etcd still
//!   renews that lease, the agent goes on with it and the deadline it saved stays valid.
//!   If the lease is gone, or none was saved, or etcd cannot be asked, the permit starts
//!   expired and the agent grants itself a fresh lease as soon as etcd answers. (Until
//!   etcd answers, a resumed deadline is still one a live renewal of that lease gave, so
//!   it ends before etcd could have expired the lease.)

use crate::clock::Boot;
use crate::lease::{etcd_permit_until, Lease};
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use mmm_common::config::Coordination;
use mmm_common::etcd::{Keys, LazyMembers};
use mmm_common::timing::EtcdTiming;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{op}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{op}: no answer within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("keeping the etcd lease alive: etcd closed the stream")]
    StreamClosed,
    #[error("connecting to etcd")]
    Members(#[source] mmm_common::etcd::MembersError),
    #[error("saving the etcd lease id in {path}")]
    Save {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl EtcdError {
    /// The request failed the way requests to a lost, stalled or leaderless member fail.
    fn member_failure(&self) -> bool {
        match self {
            EtcdError::Etcd { source, .. } => mmm_common::etcd::member_failure(source),
            EtcdError::Timeout { .. } | EtcdError::StreamClosed => true,
            EtcdError::Members(_) | EtcdError::Save { .. } => false,
        }
    }
}

/// Bounds every etcd request by `after`.
async fn bounded<T>(
    op: &'static str,
    after: Duration,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(after, f).await {
        Ok(r) => r.map_err(|source| EtcdError::Etcd { op, source }),
        Err(_elapsed) => Err(EtcdError::Timeout { op, after }),
    }
}

/// The lease in use, and the fence count when it was taken: after a fence it is done.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: i64,
    fences: u64,
    /// etcd has renewed it since this agent started.
    confirmed: bool,
}

/// Grants, publishes and keeps alive the agent's lease; renews [`Lease`] from it.
pub struct Keeper {
    coordination: Coordination,
    key: String,
    host: String,
    /// `timing.ttl`: the TTL asked of etcd, and the longest a granted one is counted.
    ttl: Duration,
    timing: EtcdTiming,
    id_path: PathBuf,
    lease: Arc<Lease>,
}

/// Bounds of the retry backoff.
const MIN_BACKOFF: Duration = EtcdTiming::RETRY_BACKOFF;

impl Keeper {
    pub fn new(c: &Coordination, state_dir: &Path, host: &str, lease: Arc<Lease>) -> Keeper {
        let timing = EtcdTiming::new(c.session_ttl);
        Keeper {
            coordination: c.clone(),
            key: Keys::new(c.prefix.as_str()).agent(host),
            host: host.to_string(),
            ttl: timing.ttl,
            timing,
            id_path: id_path(state_dir, host),
            lease,
        }
    }

    /// A keepalive every eighth of the TTL: the permit (3/4 TTL after the last answered
    /// renewal was sent) then outlives an etcd leader election of up to 3/8 TTL, the rule
    /// `Coordination::min_session_ttl` states (docs/operations.md).
    fn every(&self) -> Duration {
        self.timing.keepalive_every
    }

    /// Bound on each request. A renewal that hangs (a member that stops answering
    /// without a reset, an etcd election, a stalled disk) is given up after TTL/8 and
    /// retried at once on another member when that one failed: one hung request or one
    /// lost member does not fence the writer.
    fn request_timeout(&self) -> Duration {
        self.timing.request_timeout
    }

    /// Runs for the agent's life.
    pub async fn run(self) {
        let mut held = match read_id(&self.id_path) {
            Some(id) => Some(Held {
                id,
                fences: self.lease.fences(),
                confirmed: false,
            }),
            None => {
                self.lease.expire_now();
                tracing::info!(
                    "no etcd lease saved: the writer permit starts expired until one is granted"
                );
                None
            }
        };
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        let members = LazyMembers::new(&self.coordination, self.request_timeout());
        loop {
            let mut progressed = false;
            let mut moved = false;
            let err = match members.get().await {
                Ok(m) => {
                    let conn = m.current();
                    let mut client = conn.bounded;
                    let err = self.keep(&mut client, &mut held, &mut progressed).await;
                    // A member that failed is left at once for one that answers: a
                    // retry on it would fail the same way until the permit ran out.
                    if err.member_failure() {
                        moved = m
                            .move_off(conn.generation, &crate::reconcile::error_chain(&err))
                            .await;
                    }
                    err
                }
                Err(e) => EtcdError::Members(e),
            };
            let error = crate::reconcile::error_chain(&err);
            if let Some(h) = held.as_mut().filter(|h| !h.confirmed) {
                // The saved lease could not be confirmed: no permit from it. One line says
                // it all: etcd unreachable at start, no writer permit until it answers.
                self.lease.expire_now();
                tracing::warn!(lease = h.id, %error, "etcd cannot confirm the saved lease: the writer permit starts expired and stays so until etcd renews a lease; read-only roles and reports go on; retrying");
                h.confirmed = true;
                failing = true;
            }
            if progressed {
                backoff = MIN_BACKOFF;
                failing = false;
            }
            if !failing {
                tracing::warn!(%error, "etcd does not renew this agent's lease: the writer permit ends with the deadline; read-only roles and reports go on; retrying");
                failing = true;
            } else {
                tracing::debug!(%error, "etcd retry failed");
            }
            if moved {
                continue;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.request_timeout());
        }
    }

    /// Keeps the lease alive until an error; `progressed` is set at the first renewal.
    async fn keep(
        &self,
        client: &mut Client,
        held: &mut Option<Held>,
        progressed: &mut bool,
    ) -> EtcdError {
        loop {
            let h = match *held {
                Some(h) if h.fences == self.lease.fences() => h,
                stale => {
                    if let Some(old) = stale {
                        self.revoke(client, old.id).await;
                        *held = None;
                    }
                    match self.grant(client).await {
                        Ok(h) => {
                            *held = Some(h);
                            *progressed = true;
                            h
                        }
                        Err(e) => return e,
                    }
                }
            };
            // The client sends a first keepalive here, and fails when etcd answers it
            // with TTL 0: the lease is gone.
            let (keeper, stream) = match bounded(
                "keeping the etcd lease alive",
                self.request_timeout(),
                client.lease_keep_alive(h.id),
            )
            .await
            {
                Ok(k) => k,
                Err(EtcdError::Etcd {
                    source: etcd_client::Error::LeaseKeepAliveError(m),
                    ..
                }) if m == "lease not found" => {
                    self.lost(h).await;
                    *held = None;
                    continue;
                }
                Err(e) => return e,
            };
            match self.renew(client, keeper, stream, h, progressed).await {
                Ok(next) => *held = next,
                Err(e) => {
                    if let Some(held) = held.as_mut() {
                        held.confirmed |= *progressed;
                    }
                    return e;
                }
            }
        }
    }

    /// Renews `h` every quarter TTL. Returns the lease to go on with: `Some(h)` after
    /// a fence (revoked and replaced by the caller) or None once etcd says it is gone.
    async fn renew(
        &self,
        client: &mut Client,
        mut keeper: LeaseKeeper,
        mut stream: LeaseKeepAliveStream,
        mut h: Held,
        progressed: &mut bool,
    ) -> Result<Option<Held>, EtcdError> {
        let mut tick = tokio::time::interval(self.every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.lease.fences() != h.fences {
                return Ok(Some(h));
            }
            let sent = Boot::now();
            let answer = bounded("renewing the etcd lease", self.request_timeout(), async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await?;
            let Some(answer) = answer else {
                return Err(EtcdError::StreamClosed);
            };
            if answer.ttl() <= 0 {
                self.lost(h).await;
                return Ok(None);
            }
            // The key naming this lease is what a monitor reads to learn which lease to
            // wait for before it promotes another host. Deleted, bound to no lease or to
            // another one (anyone who can write to etcd can do that), it would have a
            // monitor wait for the wrong thing and count this host fenced while it writes.
            // So the permit is renewed only while the key names this lease; otherwise it
            // ends now, the lease is given up and a new one is granted and published.
            let found = bounded(
                "reading the agent's own key",
                self.request_timeout(),
                client.get(self.key.as_str(), None),
            )
            .await?;
            let kv = found.kvs().first();
            let ours = kv.is_some_and(|kv| {
                kv.lease() == h.id && kv.value() == value(&self.host, h.id).as_bytes()
            });
            if !ours {
                tracing::warn!(
                    lease = h.id,
                    key = %self.key,
                    found = %kv.map_or("nothing".to_string(), |kv| format!("{} (lease {})", String::from_utf8_lossy(kv.value()), kv.lease())),
                    "this agent's key in etcd does not name its lease (deleted or rewritten by someone else): the writer permit ends now; a new lease is granted and published"
                );
                self.lost(h).await;
                self.revoke(client, h.id).await;
                return Ok(None);
            }
            let ttl = permit_ttl(answer.ttl(), self.ttl);
            if !self
                .lease
                .renew_until(etcd_permit_until(sent, ttl), h.fences)
            {
                if self.lease.fences() == h.fences {
                    // A forced expiry waits for the lease task: renew once it is judged
                    // (a fence it decides then replaces this lease at the next tick).
                    self.lease.settled().await;
                    continue;
                }
                return Ok(Some(h));
            }
            *progressed = true;
            if !h.confirmed {
                tracing::info!(
                    lease = h.id,
                    "etcd lease resumed from before the restart: it renews the writer permit"
                );
                h.confirmed = true;
            }
        }
    }

    /// etcd no longer knows `h` (revoked by a monitor, or expired): the permit ends now.
    /// The writer goes first: the fence this causes must be decided before a new lease
    /// is granted, or it would void the new one, and a monitor that revoked this lease
    /// expects the writer gone, not carried on under another lease.
    async fn lost(&self, h: Held) {
        let expiry = self.lease.expire_now();
        if h.confirmed {
            tracing::warn!(lease = h.id, "etcd lease lost (revoked, or expired in etcd): writer permit ended now; granting a new lease");
        } else {
            tracing::info!(lease = h.id, "the saved etcd lease is gone: the writer permit starts expired; granting a new lease");
        }
        // No new lease until the loss is judged, however long that takes: a permit
        // granted before would void the fence the loss calls for.
        while !self.lease.judged(expiry, self.ttl).await {
            tracing::warn!(
                lease = h.id,
                "the lease task has not judged the lost lease yet: no new lease until it has"
            );
        }
    }

    /// A new lease, published under the agent's key and saved; the permit counts from
    /// it only once the key names it (a monitor reads the key to learn which lease to
    /// wait for).
    async fn grant(&self, client: &mut Client) -> Result<Held, EtcdError> {
        let t = self.request_timeout();
        // A fence still pending for an earlier loss is decided first, so `fences` below
        // already counts it and the new permit is not voided by it (nor voids it).
        self.lease.settled().await;
        let fences = self.lease.fences();
        let ttl_s = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let sent = Boot::now();
        let granted = bounded(
            "granting the agent's etcd lease",
            t,
            client.lease_grant(ttl_s, None),
        )
        .await?;
        let id = granted.id();
        bounded(
            "publishing the agent's etcd lease",
            t,
            client.put(
                self.key.as_str(),
                value(&self.host, id),
                Some(PutOptions::new().with_lease(id)),
            ),
        )
        .await?;
        // Saved before it renews anything: a lease this agent cannot keep track of must
        // never carry the permit (each retry would grant another and renew the permit
        // from it, and no revoke of one lease would end the permit).
        if let Err(source) = save_id(&self.id_path, id) {
            self.revoke(client, id).await;
            return Err(EtcdError::Save {
                path: self.id_path.display().to_string(),
                source,
            });
        }
        let ttl = permit_ttl(granted.ttl(), self.ttl);
        self.lease.renew_until(etcd_permit_until(sent, ttl), fences);
        tracing::info!(lease = id, key = %self.key, ?ttl, "etcd lease granted: it renews the writer permit");
        Ok(Held {
            id,
            fences,
            confirmed: true,
        })
    }

    /// After a fence: the old lease is given up, best effort (it expires by itself).
    async fn revoke(&self, client: &mut Client, id: i64) {
        match bounded(
            "revoking the agent's etcd lease",
            self.request_timeout(),
            client.lease_revoke(id),
        )
        .await
        {
            Ok(_) => tracing::info!(lease = id, "etcd lease revoked after the fence"),
            Err(e) => {
                tracing::info!(lease = id, error = %crate::reconcile::error_chain(&e), "etcd lease not revoked after the fence: it expires by itself")
            }
        }
    }
}

/// The TTL a renewal answered with `granted` seconds lets this host count on: never more
/// than `session_ttl`. etcd raises a TTL below its minimum (1.5 election timeouts, 2 s with
/// its defaults) and may answer with that, while a monitor that revoked this lease counts
/// it over `session_ttl` after the revoke: a longer local permit would outlive its count.
pub fn permit_ttl(granted: i64, session_ttl: Duration) -> Duration {
    Duration::from_secs(granted.unsigned_abs()).min(session_ttl)
}

/// The published value: which host, and which lease a monitor must wait for.
pub fn value(host: &str, lease: i64) -> String {
    let escaped: String = host
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("{{\"host\":\"{escaped}\",\"lease\":{lease}}}")
}

/// Where the lease id is kept across restarts.
pub fn id_path(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join(format!("{host}.etcd-lease"))
}

fn read_id(path: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim().parse() {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "saved etcd lease id unreadable: a new lease is granted");
            None
        }
    }
}

fn save_id(path: &Path, id: i64) -> std::io::Result<()> {
    crate::state_dir::replace(path, &format!("{id}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_value_names_the_host_and_the_lease() {
        assert_eq!(
            value("db1", 7587862137548951234),
            r#"{"host":"db1","lease":7587862137548951234}"#
        );
        assert_eq!(value("a\"b", 1), r#"{"host":"a\"b","lease":1}"#);
    }

    #[test]
    fn a_ttl_raised_by_etcd_gives_no_longer_permit_than_session_ttl() {
        let one = Duration::from_secs(1);
        // etcd's minimum lease TTL with its default timing is 2 s: asked 1 s, it grants 2.
        assert_eq!(permit_ttl(2, one), one);
        assert_eq!(permit_ttl(1, one), one);
        // session_ttl in whole seconds; a shorter answer is taken as it is.
        assert_eq!(
            permit_ttl(2, Duration::from_secs(3)),
            Duration::from_secs(2)
        );
    }

    /// Found by review: after a renewal sent at 0 the permit lasts until `ttl - margin`
    /// (3/4 TTL). The next renewal goes out a quarter TTL later; when it hangs instead of
    /// failing it must be given up early enough for a retry (backoff, connect, renewal)
    /// to fit before the permit ends, or one hung request fences a writer while etcd's
    /// majority is fine. (With a bound of half a TTL, no retry fitted.)
    #[test]
    fn a_hung_renewal_leaves_time_for_another_before_the_permit_ends() {
        let d = std::env::temp_dir().join(format!("mmm-etcd-hung-{}", std::process::id()));
        for s in [1u64, 2, 5, 30] {
            let c = Coordination {
                etcd: vec!["http://127.0.0.1:9".into()],
                prefix: "/mmm/test".into(),
                session_ttl: Duration::from_secs(s),
                etcd_election_timeout: Duration::from_millis(500),
                etcd_heartbeat_interval: Duration::from_millis(50),
                tls: None,
            };
            let lease = Arc::new(Lease::new(
                c.session_ttl,
                true,
                crate::lease::Renewal::Etcd,
                &d,
                "db1",
            ));
            let k = Keeper::new(&c, &d, "db1", lease);
            let given_up = k.every() + k.request_timeout();
            let permit = k.ttl - crate::lease::margin(k.ttl);
            assert!(
                given_up + MIN_BACKOFF + k.request_timeout() / 2 < permit,
                "session_ttl {s}s: a renewal hung from {:?} is given up at {given_up:?}, the permit ends at {permit:?}",
                k.every()
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_lease_id_survives_a_restart() {
        let d = std::env::temp_dir().join(format!("mmm-etcd-id-{}", std::process::id()));
        let p = id_path(&d, "db1");
        assert_eq!(read_id(&p), None);
        save_id(&p, 42).unwrap();
        assert_eq!(read_id(&p), Some(42));
        std::fs::write(&p, "junk").unwrap();
        assert_eq!(read_id(&p), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
