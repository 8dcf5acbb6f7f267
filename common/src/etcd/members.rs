//! One etcd member at a time, moved off the moment it fails.
//!
//! etcd-client balances a channel over every endpoint, but a dead member stays in it: with
//! the first member of the list SIGKILLed, requests kept failing with "tcp connect error"
//! to it for 20 s and more (measured), so a monitor stood by and an agent's writer permit
//! ran out while two members of three answered. Here a client talks to exactly one
//! member; a request that fails the way a lost member fails (transport, timeout, "no
//! leader") moves every user of this [`Members`] to the next member that answers a
//! linearizable read (so it is connected to a leader), trying each in turn from the one
//! after the failed one. While no member answers (an etcd election, a lost majority) the
//! current one is kept and the next failure tries again.
//!
//! A wrong endpoint in the list (a member of another etcd cluster: a copy-paste, a
//! test cluster) would split the fleet: monitors and agents that land on it would elect,
//! renew and read in another world. So the cluster is pinned when connecting: the etcd
//! cluster id a majority of the configured endpoints answer with. A member that answers
//! with another id is never used, and is named in the log and in `show`.

use super::connect_options;
use crate::config::Coordination;
use etcd_client::{Client, GetOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long `show` mentions a member's last failure.
const NOTE_FOR: Duration = Duration::from_secs(600);

/// The longest a member's probe may take.
const PROBE_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("setting up TLS to etcd")]
    Tls(#[from] super::EtcdTlsError),
    /// Every member failed its probe; each one's failure is named.
    #[error("no etcd member answers with a leader: {}", .failures.iter().map(|(e, why)| format!("{e}: {why}")).collect::<Vec<_>>().join("; "))]
    NoneAnswers { failures: Vec<(String, String)> },
    /// The answering endpoints belong to different etcd clusters and none is a majority of
    /// the list: which cluster is this fleet's cannot be told.
    #[error("the etcd endpoints answer for different clusters and none has a majority of the {configured} configured: {}", .answers.iter().map(|(e, id)| format!("{e}: cluster {id:016x}")).collect::<Vec<_>>().join("; "))]
    Split {
        configured: usize,
        answers: Vec<(String, u64)>,
    },
}

/// The clients of the member in use. `generation` names the connection: a failure
/// reported against an older one moves nothing (someone moved already).
#[derive(Clone)]
pub struct Conn {
    /// Every request bounded by the timeout given to [`Members::connect`].
    pub bounded: Client,
    /// For requests that wait by design (a campaign, a watch): no request timeout.
    pub waiting: Client,
    pub generation: u64,
    pub endpoint: String,
}

struct State {
    index: usize,
    conn: Conn,
    /// The etcd cluster id a majority of the configured endpoints answered with.
    cluster: u64,
    /// The last move-off found no member: said once, not at every retry.
    failing: bool,
    /// The last member failure, and when: what `show` tells an operator.
    note: Option<(std::time::Instant, String)>,
}

struct Shared {
    coordination: Coordination,
    timeout: Duration,
    state: Mutex<State>,
    /// One move-off at a time: the others wait for it and use its result.
    moving: tokio::sync::Mutex<()>,
}

/// The etcd members of `[coordination]`, used one at a time (cheap to clone: shared).
#[derive(Clone)]
pub struct Members {
    shared: Arc<Shared>,
}

/// Whether `e` is how a request fails on a member that is gone, cut off, stalled or
/// without a leader: worth moving to another. Answers about the request itself (a lease
/// or key not found, a compare that failed, bad arguments) are not.
pub fn member_failure(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => matches!(
            s.code(),
            // Not ResourceExhausted: "too many requests" or a NOSPACE alarm is the
            // whole cluster's state, and hopping members would only add load.
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
        ),
        E::WatchError(_) | E::LeaseKeepAliveError(_) => {
            // "lease not found" is an answer; a stream that ended is the member.
            !e.to_string().contains("not found")
        }
        _ => false,
    }
}

impl Members {
    /// Connects to the first member, in the configured order, that answers a
    /// linearizable read within `timeout`.
    pub async fn connect(c: &Coordination, timeout: Duration) -> Result<Members, MembersError> {
        let (index, conn, cluster) = probe_majority(c, timeout).await?;
        Ok(Members {
            shared: Arc::new(Shared {
                coordination: c.clone(),
                timeout,
                state: Mutex::new(State {
                    index,
                    conn,
                    cluster,
                    failing: false,
                    note: None,
                }),
                moving: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// What an operator should know of the members: the last failure of one (which, why,
    /// what is used instead, or that none answered) if it is recent, with its age.
    pub fn trouble(&self) -> Option<String> {
        let s = self.lock();
        let (at, text) = s.note.as_ref()?;
        let age = at.elapsed();
        (age < NOTE_FOR).then(|| format!("{text}, {}s ago", age.as_secs()))
    }

    /// The member in use.
    pub fn current(&self) -> Conn {
        self.lock().conn.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request on connection `generation` failed with `error`: when it is a member's
    /// failure, moves off that member now. Returns whether another member is in use now
    /// (by this call or by another since `generation`): only then is a retry at once
    /// worth it.
    pub async fn failed(&self, generation: u64, error: &etcd_client::Error) -> bool {
        if !member_failure(error) {
            return false;
        }
        self.move_off(generation, &crate::error_chain(error)).await
    }

    /// [`Members::move_off`] in the background, for callers that must not wait for it.
    pub fn spawn_move_off(&self, generation: u64, why: String) {
        let this = self.clone();
        tokio::spawn(async move {
            this.move_off(generation, &why).await;
        });
    }

    /// Same, in the background, for callers that only report the error.
    pub fn spawn_failed(&self, generation: u64, error: &etcd_client::Error) {
        if !member_failure(error) {
            return;
        }
        let this = self.clone();
        let why = crate::error_chain(error);
        tokio::spawn(async move {
            this.move_off(generation, &why).await;
        });
    }

    /// Moves off the member of connection `generation`, which failed with `why` (a
    /// timeout of the caller's own, say): to the first that answers when all are asked at
    /// once, the ones after it in list order preferred. Keeps it when none answers.
    pub async fn move_off(&self, generation: u64, why: &str) -> bool {
        let _one = self.shared.moving.lock().await;
        let (index, current, cluster) = {
            let s = self.lock();
            if s.conn.generation != generation {
                return true;
            }
            (s.index, s.conn.generation, s.cluster)
        };
        let c = &self.shared.coordination;
        match probe_all(c, self.shared.timeout, index + 1, current + 1, cluster).await {
            Ok((next, conn)) => {
                let mut s = self.lock();
                let from = std::mem::replace(&mut s.index, next);
                let moved = from != next;
                if moved || s.failing {
                    tracing::warn!(
                        from = %c.etcd[from],
                        to = %conn.endpoint,
                        reason = %why,
                        "etcd member failed: using another"
                    );
                }
                if moved {
                    s.note = Some((
                        std::time::Instant::now(),
                        format!(
                            "member {} failed ({why}); using {}",
                            c.etcd[from], conn.endpoint
                        ),
                    ));
                }
                s.conn = conn;
                s.failing = false;
                moved
            }
            Err(e) => {
                let mut s = self.lock();
                if !std::mem::replace(&mut s.failing, true) {
                    tracing::warn!(error = %crate::error_chain(&e), reason = %why, "etcd member failed and no other answers: retrying");
                }
                s.note = Some((
                    std::time::Instant::now(),
                    format!(
                        "member {} failed ({why}) and none answers: {}",
                        c.etcd[index],
                        crate::error_chain(&e)
                    ),
                ));
                false
            }
        }
    }
}

/// Probes every member at once and takes the first that answers, preferring, among
/// those that answer together, the first at or after `start` in list order. At once:
/// a member that hangs (SIGSTOP, a blackholed path) costs a whole request timeout, and
/// one after another they would add up past the writer's permit.
async fn probe_all(
    c: &Coordination,
    timeout: Duration,
    start: usize,
    generation: u64,
    cluster: u64,
) -> Result<(usize, Conn), MembersError> {
    let n = c.etcd.len();
    let mut probes = tokio::task::JoinSet::new();
    for k in 0..n {
        let i = (start + k) % n;
        let (c, endpoint) = (c.clone(), c.etcd[i].clone());
        probes.spawn(async move {
            // The preferred member gets a head start of a few milliseconds, so that an
            // idle cluster keeps the list's order.
            tokio::time::sleep(Duration::from_millis(5 * k as u64)).await;
            (i, probe(&c, &endpoint, timeout, generation).await)
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = probes.join_next().await {
        let Ok((i, result)) = done else { continue };
        match result {
            Ok((conn, id)) if id == cluster => {
                probes.abort_all();
                return Ok((i, conn));
            }
            Ok((_, id)) => {
                let why = wrong_cluster(id, cluster);
                tracing::warn!(endpoint = %c.etcd[i], "{why}");
                failures.push((c.etcd[i].clone(), why));
            }
            Err(ProbeError::Tls(e)) => return Err(MembersError::Tls(e)),
            Err(ProbeError::Member(why)) => failures.push((c.etcd[i].clone(), why)),
        }
    }
    failures.sort();
    Err(MembersError::NoneAnswers { failures })
}

fn wrong_cluster(id: u64, cluster: u64) -> String {
    format!("this endpoint belongs to etcd cluster {id:016x}, not to {cluster:016x} (the cluster of a majority of the list): never used; fix coordination.etcd")
}

/// Probes every member at once and pins the cluster a majority of the list answers for:
/// returns the member to use (the first in list order among those of that cluster that
/// answered) and the cluster id. A member of another cluster is named and never taken.
async fn probe_majority(
    c: &Coordination,
    timeout: Duration,
) -> Result<(usize, Conn, u64), MembersError> {
    let n = c.etcd.len();
    let majority = n / 2 + 1;
    let mut probes = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, endpoint) = (c.clone(), c.etcd[i].clone());
        probes.spawn(async move { (i, probe(&c, &endpoint, timeout, 0).await) });
    }
    let mut failures = Vec::new();
    let mut answered: Vec<(usize, Conn, u64)> = Vec::new();
    while let Some(done) = probes.join_next().await {
        let Ok((i, result)) = done else { continue };
        match result {
            Ok((conn, id)) => answered.push((i, conn, id)),
            Err(ProbeError::Tls(e)) => return Err(MembersError::Tls(e)),
            Err(ProbeError::Member(why)) => failures.push((c.etcd[i].clone(), why)),
        }
        let agreed = answered.iter().find_map(|(_, _, id)| {
            (answered.iter().filter(|(_, _, other)| other == id).count() >= majority).then_some(*id)
        });
        if let Some(cluster) = agreed {
            probes.abort_all();
            for (i, _, id) in answered.iter().filter(|(_, _, id)| *id != cluster) {
                tracing::warn!(endpoint = %c.etcd[*i], "{}", wrong_cluster(*id, cluster));
            }
            let (i, conn, _) = answered
                .into_iter()
                .filter(|(_, _, id)| *id == cluster)
                .min_by_key(|(i, _, _)| *i)
                .expect("a majority answered");
            return Ok((i, conn, cluster));
        }
    }
    if answered.is_empty() {
        failures.sort();
        return Err(MembersError::NoneAnswers { failures });
    }
    let mut answers: Vec<(String, u64)> = answered
        .into_iter()
        .map(|(i, _, id)| (c.etcd[i].clone(), id))
        .collect();
    answers.sort();
    // Every answer agrees but too few answered to make a majority (the others failed):
    // as good as etcd without a majority for this client.
    if answers.windows(2).all(|w| w[0].1 == w[1].1) {
        failures.extend(answers.into_iter().map(|(e, id)| {
            (e, format!("answered for cluster {id:016x}, but too few members answered to know it is the list's"))
        }));
        failures.sort();
        return Err(MembersError::NoneAnswers { failures });
    }
    Err(MembersError::Split {
        configured: n,
        answers,
    })
}

enum ProbeError {
    Tls(super::EtcdTlsError),
    Member(String),
}

/// Connects to `endpoint` alone and reads the prefix's key count: an answer means this
/// member is up and has a leader (a linearizable read needs one).
async fn probe(
    c: &Coordination,
    endpoint: &str,
    timeout: Duration,
    generation: u64,
) -> Result<(Conn, u64), ProbeError> {
    let bounded_opts = connect_options(c, Some(timeout), timeout).map_err(ProbeError::Tls)?;
    let waiting_opts = connect_options(c, None, timeout).map_err(ProbeError::Tls)?;
    let attempt = async {
        let mut bounded = Client::connect([endpoint], Some(bounded_opts)).await?;
        let answer = bounded
            .get(c.prefix.as_str(), Some(GetOptions::new().with_count_only()))
            .await?;
        let cluster = answer.header().map_or(0, |h| h.cluster_id());
        let waiting = Client::connect([endpoint], Some(waiting_opts)).await?;
        Ok::<_, etcd_client::Error>((bounded, waiting, cluster))
    };
    // A member that answers does so in milliseconds; one that hangs (frozen, blackholed,
    // waiting out an election) must not hold a move-off, and with it a session's renewal,
    // for a whole request timeout: the caller retries soon anyway.
    let timeout = timeout.min(PROBE_WITHIN);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((bounded, waiting, cluster))) => Ok((
            Conn {
                bounded,
                waiting,
                generation,
                endpoint: endpoint.to_string(),
            },
            cluster,
        )),
        Ok(Err(e)) => Err(ProbeError::Member(crate::error_chain(&e))),
        Err(_elapsed) => Err(ProbeError::Member(format!("no answer within {timeout:?}"))),
    }
}

/// [`Members`] connected on first use: a process that starts while etcd is down keeps
/// trying, each time through every member.
pub struct LazyMembers {
    coordination: Coordination,
    timeout: Duration,
    members: tokio::sync::Mutex<Option<Members>>,
}

impl LazyMembers {
    pub fn new(c: &Coordination, timeout: Duration) -> LazyMembers {
        LazyMembers {
            coordination: c.clone(),
            timeout,
            members: tokio::sync::Mutex::new(None),
        }
    }

    /// The members, connected now if they were not.
    pub async fn get(&self) -> Result<Members, MembersError> {
        let mut m = self.members.lock().await;
        if let Some(m) = m.as_ref() {
            return Ok(m.clone());
        }
        let connected = Members::connect(&self.coordination, self.timeout).await?;
        *m = Some(connected.clone());
        Ok(connected)
    }
}
