//! The daemon in a monitor fleet (`[coordination]`): stand by until etcd elects this
//! monitor, lead for one term, stand by again.
//!
//! Standing by, a monitor drives nothing: it keeps its etcd session, registers its name,
//! campaigns, and hands every control command to the leader through etcd
//! (`<prefix>/commands/<id>`, answered at `<prefix>/replies/<id>`), so `mmm-control`
//! works from any monitor host. Elected, it checks that the prefix holds this cluster,
//! writes the term's fresh epoch there (`mmm_common::epoch`), resumes from the status in
//! etcd, and runs the same daemon as a monitor alone, with three differences: its links
//! carry the term and its epoch (agents refuse older terms, and a term of an epoch their
//! own read of etcd does not show), the status
//! and the writer (`<prefix>/writer`) are written in transactions that fail once it no
//! longer leads, and a writer is fenced by ending its agent's own etcd lease
//! ([`Leader::end_lease`]), since no monitor renews it.
//!
//! Leadership ends at once, with every task of the term, when the session cannot be
//! renewed (before etcd expires it, so before another monitor can be elected) or a
//! guarded write fails; SIGTERM resigns so a standby takes over without waiting.

use super::{DaemonError, Ended, Process, Seat};
use crate::core::status::StatusRecord;
use crate::core::{Cluster, Event, FleetShow};
use crate::fleet::{DirChange, Fleet, FleetError, FleetView, Leadership, Session};
use mmm_common::config::{ClusterKey, Config};
use mmm_common::epoch::{EpochRecord, RecordError, Term};
use mmm_common::timing::EtcdTiming;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

const STATUS: &str = "status";
const WRITER: &str = "writer";
const IDENTITY: &str = mmm_common::epoch::KEY;

/// A command a standby forwarded, for the leader to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub id: String,
    pub line: String,
}

/// What the leader knows of one agent's etcd lease (`<prefix>/agents/<host>`).
#[derive(Debug, Clone, Default)]
struct AgentLease {
    lease: Option<i64>,
    /// When this term saw the key deleted, and the lease it had.
    gone: Option<(Instant, i64)>,
}

/// Resolves once this term's leadership is over.
pub struct Deposition(watch::Receiver<bool>);

impl Deposition {
    pub async fn lost(&mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }
}

/// One term's leadership, as the daemon uses it.
pub struct Leader {
    fleet: Fleet,
    lead: Leadership,
    name: String,
    /// The epoch this leader wrote at `<prefix>/cluster`.
    epoch: u64,
    session_lease: i64,
    /// The agents' etcd leases: when one is counted over, when a revoke may go out.
    etcd: EtcdTiming,
    deposed: Arc<watch::Sender<bool>>,
    writer: watch::Sender<Option<(String, Ipv4Addr, u16)>>,
    view: Arc<Mutex<FleetView>>,
    agents: Arc<Mutex<HashMap<String, AgentLease>>>,
    background: Vec<tokio::task::AbortHandle>,
    /// Forwarded commands and answers are MACed with the cluster key: anyone who can
    /// write to etcd is not thereby an operator.
    key: ClusterKey,
    /// Forwarded command ids already run (with their issue time), against replays.
    seen: Mutex<HashMap<String, u64>>,
}

/// How old a forwarded command may be (its id carries when it was issued, wall clock).
const FORWARD_WINDOW_MS: u64 = 60_000;

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A forwarded command as stored in etcd: `MMM-AUTH <mac(id, command, line)>\n<line>`.
fn sign_command(key: &ClusterKey, id: &str, line: &str) -> String {
    let mac = crate::control::auth::mac(key, id, crate::control::auth::Part::Command, line);
    format!("{}{mac}\n{line}", crate::control::auth::AUTH)
}

/// An answer as stored in etcd: `MMM-MAC <mac(id, answer, text)>\n<text>`.
fn sign_answer(key: &ClusterKey, id: &str, text: &str) -> String {
    let mac = crate::control::auth::mac(key, id, crate::control::auth::Part::Answer, text);
    format!("{}{mac}\n{text}", crate::control::auth::ANSWER_MAC)
}

/// The text of a signed value, if its MAC verifies for `id` and `part`.
fn verified(
    key: &ClusterKey,
    id: &str,
    part: crate::control::auth::Part,
    value: &str,
) -> Option<String> {
    let prefix = match part {
        crate::control::auth::Part::Command => crate::control::auth::AUTH,
        crate::control::auth::Part::Answer => crate::control::auth::ANSWER_MAC,
    };
    let (head, text) = value.split_once('\n')?;
    let claimed = head.strip_prefix(prefix)?;
    crate::control::auth::verify(key, id, part, text, claimed).then(|| text.to_string())
}

impl Drop for Leader {
    fn drop(&mut self) {
        // The term is over for this monitor (stepped down, stopping): tasks still in
        // flight, an EndLease waiting to revoke above all, must not act in its name.
        self.deposed.send_replace(true);
        for t in &self.background {
            t.abort();
        }
    }
}

impl Leader {
    async fn start(
        mut fleet: Fleet,
        lead: Leadership,
        name: String,
        epoch: u64,
        session: &Session,
        etcd: EtcdTiming,
        key: ClusterKey,
    ) -> Result<Leader, FleetError> {
        let (deposed, _) = watch::channel(false);
        let deposed = Arc::new(deposed);
        let mut background = Vec::new();
        // The session's loss ends the term: etcd expires it a while later, and only then
        // can another monitor be elected.
        let mut alive = session.alive_watch();
        let d = deposed.clone();
        background.push(
            tokio::spawn(async move {
                let _ = alive.wait_for(|a| !a).await;
                d.send_replace(true);
            })
            .abort_handle(),
        );
        let (entries, mut changes) = fleet.watch_dir("agents").await?;
        let agents: Arc<Mutex<HashMap<String, AgentLease>>> = Arc::new(Mutex::new(
            entries
                .into_iter()
                .map(|e| {
                    let lease = (e.lease != 0).then_some(e.lease);
                    (e.name, AgentLease { lease, gone: None })
                })
                .collect(),
        ));
        let (a, d) = (agents.clone(), deposed.clone());
        background.push(
            tokio::spawn(async move {
                while let Some(change) = changes.recv().await {
                    let mut map = a.lock().unwrap_or_else(|p| p.into_inner());
                    match change {
                        DirChange::Put(e) => {
                            let rec = map.entry(e.name).or_default();
                            rec.lease = (e.lease != 0).then_some(e.lease);
                        }
                        DirChange::Deleted { name, lease } => {
                            let rec = map.entry(name).or_default();
                            rec.lease = None;
                            rec.gone = Some((Instant::now(), lease));
                        }
                    }
                }
                // The watch ended (its etcd member went away, or etcd cancelled it): from
                // now on the map would miss a new lease or a lease's end, and `end_lease`
                // would count a stale lease over. The term ends; the next one reads and
                // watches afresh.
                tracing::error!("the watch on the agents' etcd leases ended: ending this term");
                d.send_replace(true);
            })
            .abort_handle(),
        );
        let view = Arc::new(Mutex::new(FleetView::default()));
        let (v, mut f) = (view.clone(), fleet.clone());
        background.push(
            tokio::spawn(async move {
                loop {
                    match f.view().await {
                        Ok(now) => *v.lock().unwrap_or_else(|p| p.into_inner()) = now,
                        // `show` keeps the last list; the session's own loss ends the term.
                        Err(e) => tracing::debug!(error = %crate::error_chain(&e), "listing the fleet's monitors failed"),
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
            .abort_handle(),
        );
        let (writer, rx) = watch::channel(None);
        background.push(
            tokio::spawn(publish_writer(
                fleet.clone(),
                lead.clone(),
                epoch,
                rx,
                deposed.clone(),
            ))
            .abort_handle(),
        );
        Ok(Leader {
            fleet,
            lead,
            name,
            epoch,
            session_lease: session.lease,
            etcd,
            deposed,
            writer,
            view,
            agents,
            background,
            key,
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_deposed(&self) -> bool {
        *self.deposed.borrow()
    }

    pub fn deposed(&self) -> Deposition {
        Deposition(self.deposed.subscribe())
    }

    /// The fleet line of `show`.
    pub fn show(&self) -> FleetShow {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        FleetShow {
            leader: self.name.clone(),
            term: self.lead.term,
            epoch: self.epoch,
            standbys: view
                .members
                .into_iter()
                .filter(|m| *m != self.name)
                .collect(),
        }
    }

    /// The writer as it should be published at `<prefix>/writer` (newest wins).
    pub fn publish_writer(&self, writer: Option<(String, Ipv4Addr, u16)>) {
        self.writer.send_if_modified(|w| {
            let changed = *w != writer;
            *w = writer;
            changed
        });
    }

    pub fn status_writer(&self) -> StatusWriter {
        StatusWriter::start(self.fleet.clone(), self.lead.clone(), self.deposed.clone())
    }

    /// Commands given to standbys: those waiting now, then each new one.
    pub async fn forwarded_commands(&self) -> mpsc::Receiver<Forwarded> {
        let (tx, rx) = mpsc::channel(16);
        let mut fleet = self.fleet.clone();
        tokio::spawn(async move {
            let (pending, mut changes) = match fleet.watch_dir("commands").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "forwarded commands cannot be read: standbys' commands go unanswered");
                    return;
                }
            };
            let as_forwarded = |e: crate::fleet::DirEntry| Forwarded {
                id: e.name,
                line: String::from_utf8_lossy(&e.value).into_owned(),
            };
            for e in pending {
                if tx.send(as_forwarded(e)).await.is_err() {
                    return;
                }
            }
            while let Some(change) = changes.recv().await {
                if let DirChange::Put(e) = change {
                    if tx.send(as_forwarded(e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }

    /// A forwarded line as a command, or the refusal to send back.
    /// Refused (None, logged) unless its MAC verifies under the cluster key, it was
    /// issued within the last minute and it was not run before.
    pub fn parse_forwarded(
        &self,
        f: &Forwarded,
    ) -> Option<Result<crate::control::Command, String>> {
        let Some(line) = verified(
            &self.key,
            &f.id,
            crate::control::auth::Part::Command,
            &f.line,
        ) else {
            tracing::warn!(id = %f.id, "a command under the fleet's prefix without a valid MAC: not run (it was not put by a monitor holding the cluster key)");
            return None;
        };
        let issued =
            f.id.rsplit('-')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        let now = wall_ms();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, t| now.saturating_sub(*t) <= FORWARD_WINDOW_MS);
        if now.abs_diff(issued) > FORWARD_WINDOW_MS || seen.insert(f.id.clone(), issued).is_some() {
            tracing::warn!(id = %f.id, "a forwarded command replayed or too old: not run");
            return None;
        }
        Some(super::control::parse_line(&line))
    }

    /// Answers a forwarded command (the reply lives in this leader's session).
    pub fn reply(&self, id: String, text: String) {
        let (mut fleet, lease) = (self.fleet.clone(), self.session_lease);
        let text = sign_answer(&self.key, &id, &text);
        tokio::spawn(async move {
            if let Err(e) = fleet
                .put_in_session(lease, &format!("replies/{id}"), text)
                .await
            {
                tracing::warn!(%id, error = %crate::error_chain(&e), "a forwarded command's answer was not written");
            }
            let _ = fleet.delete(&format!("commands/{id}")).await;
        });
    }

    /// Answers a forwarded command once the core has.
    pub fn reply_when(&self, id: String, answer: oneshot::Receiver<String>) {
        let (mut fleet, lease, key) = (self.fleet.clone(), self.session_lease, self.key.clone());
        tokio::spawn(async move {
            let text = answer
                .await
                .unwrap_or_else(|_dropped| "ERROR: The monitor is shutting down.".to_string());
            let text = sign_answer(&key, &id, &text);
            if let Err(e) = fleet
                .put_in_session(lease, &format!("replies/{id}"), text)
                .await
            {
                tracing::warn!(%id, error = %crate::error_chain(&e), "a forwarded command's answer was not written");
            }
            let _ = fleet.delete(&format!("commands/{id}")).await;
        });
    }

    /// Ends `host`'s writer permit, its agent's own etcd lease, and reports `LeaseEnded`.
    ///
    /// The agent gives the writer up before etcd could expire its lease (it counts from
    /// before each renewal it sent). So a lease that etcd expired is over for the agent
    /// too; a dead host's lease expires within a TTL of its last renewal, mostly while
    /// trap_period was being counted. A lease still renewed after a whole TTL belongs to
    /// a live agent that this monitor cannot reach: it is revoked (recorded first at
    /// `<prefix>/revoked/<host>` in a guarded write, so a deposed leader cannot), and the
    /// agent, whose last renewal was sent before the revoke, is done a TTL later.
    pub fn end_lease(&self, host: String, events: mpsc::Sender<Event>) {
        let mut fleet = self.fleet.clone();
        let lead = self.lead.clone();
        let (etcd, agents, deposed) = (self.etcd, self.agents.clone(), self.deposed.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let revoked_key = format!("revoked/{host}");
            let over_at = loop {
                if *deposed.borrow() {
                    return;
                }
                let known = agents
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&host)
                    .cloned()
                    .unwrap_or_default();
                // A key deleted by hand (or by anything but its lease's end) leaves the
                // lease, and the agent's permit, alive: the lease is what counts.
                let current = match (known.lease, known.gone) {
                    (Some(lease), _) => Some(lease),
                    (None, Some((_, lease))) => match fleet.lease_alive(lease).await {
                        Ok(true) => Some(lease),
                        Ok(false) => None,
                        Err(e) => {
                            tracing::warn!(%host, error = %crate::error_chain(&e), "asking etcd about the lease failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    },
                    (None, None) => None,
                };
                match current {
                    Some(_) if start.elapsed() < etcd.monitor_counts_over => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Some(lease) => {
                        tracing::warn!(%host, lease, "its etcd lease is still renewed: revoking it");
                        let recorded = Instant::now();
                        match fleet
                            .put_as_leader(&lead, &revoked_key, lease.to_string())
                            .await
                        {
                            Err(FleetError::Deposed { .. }) => {
                                deposed.send_replace(true);
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(%host, error = %crate::error_chain(&e), "recording the revoke failed; retrying");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                            Ok(()) => {}
                        }
                        // The revoke itself cannot be guarded: it goes out only while the
                        // guarded record is fresh, so a leader frozen in between (and
                        // deposed meanwhile) does not fence a writer its successor keeps.
                        if *deposed.borrow() || recorded.elapsed() > etcd.revoke_within {
                            continue;
                        }
                        if let Err(e) = fleet.revoke(lease).await {
                            tracing::warn!(%host, error = %crate::error_chain(&e), "revoking failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        // Counted from the answer, not from the request: a renewal etcd
                        // handled before the revoke may have been sent after the request
                        // left (the request can be delayed by an etcd election, a retry,
                        // the network); every renewal was sent before the answer came.
                        break Instant::now() + etcd.monitor_counts_over;
                    }
                    None => {
                        let revoked = match fleet.get(&revoked_key).await {
                            Ok(v) => {
                                v.and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok())
                            }
                            Err(e) => {
                                tracing::warn!(%host, error = %crate::error_chain(&e), "reading the revoke record failed; retrying");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        };
                        break match known.gone {
                            // Expired: the agent had given the writer up already.
                            Some((at, lease)) if revoked != Some(lease) => at,
                            Some((at, _)) => at + etcd.monitor_counts_over,
                            // Gone before this term began: how is unknown, so a TTL.
                            None => Instant::now() + etcd.monitor_counts_over,
                        };
                    }
                }
            };
            tokio::time::sleep_until(over_at).await;
            if !*deposed.borrow() {
                let _ = events.send(Event::LeaseEnded { host }).await;
            }
        });
    }
}

/// Publishes the writer at `<prefix>/writer` as `{"host","ip","port","term","epoch"}`
/// (host null when there is none), newest first, while the term lasts.
async fn publish_writer(
    mut fleet: Fleet,
    lead: Leadership,
    epoch: u64,
    mut rx: watch::Receiver<Option<(String, Ipv4Addr, u16)>>,
    deposed: Arc<watch::Sender<bool>>,
) {
    // Terms are ordered only within an epoch (a re-created etcd counts them again).
    let epoch = format!("{epoch:016x}");
    loop {
        let value = rx.borrow_and_update().clone();
        let json = match &value {
            Some((host, ip, port)) => {
                serde_json::json!({"host": host, "ip": ip.to_string(), "port": port, "term": lead.term, "epoch": epoch})
            }
            None => {
                serde_json::json!({"host": null, "ip": null, "port": null, "term": lead.term, "epoch": epoch})
            }
        };
        loop {
            match fleet.put_as_leader(&lead, WRITER, json.to_string()).await {
                Ok(()) => break,
                Err(FleetError::Deposed { .. }) => {
                    deposed.send_replace(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "publishing the writer failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The status record's writer in a fleet: `<prefix>/status`, newest wins, each write
/// guarded by the leadership (a failed guard ends the term).
pub struct StatusWriter {
    latest: watch::Sender<Option<StatusRecord>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWriter {
    fn start(
        mut fleet: Fleet,
        lead: Leadership,
        deposed: Arc<watch::Sender<bool>>,
    ) -> StatusWriter {
        let (latest, mut rx) = watch::channel::<Option<StatusRecord>>(None);
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                loop {
                    let Some(record) = rx.borrow_and_update().clone() else {
                        break;
                    };
                    match fleet.put_as_leader(&lead, STATUS, record.to_json()).await {
                        Ok(()) => break,
                        Err(FleetError::Deposed { .. }) => {
                            deposed.send_replace(true);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %crate::error_chain(&e), "status not saved to etcd; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        });
        StatusWriter { latest, task }
    }

    pub fn save(&self, record: StatusRecord) {
        self.latest.send_replace(Some(record));
    }

    /// Writes `record` last; bounded, as etcd may be what stops us.
    pub async fn finish(self, record: StatusRecord) {
        const BOUND: Duration = Duration::from_secs(5);
        self.latest.send_replace(Some(record));
        drop(self.latest);
        if tokio::time::timeout(BOUND, self.task).await.is_err() {
            tracing::error!(
                "the status was not written to etcd within {BOUND:?}: stopping without it"
            );
        }
    }
}

/// The status record in etcd as a cluster, or passive mode naming the key when it cannot
/// be trusted (corrupt, another version); a first start has none.
async fn restore(
    fleet: &mut Fleet,
    config: &Arc<Config>,
    now: crate::core::Millis,
) -> Result<Cluster, FleetError> {
    let mut cluster = Cluster::new(config.clone(), now);
    let key = fleet.key(STATUS);
    match fleet.get(STATUS).await? {
        None => tracing::info!(%key, "no status in etcd: first start, hosts AWAITING_RECOVERY"),
        Some(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|text| StatusRecord::from_json(text).map_err(|e| e.to_string()));
            match parsed.and_then(|r| cluster.restore(&r).map_err(|e| e.to_string())) {
                Ok(()) => tracing::info!(%key, "resuming from the status in etcd"),
                Err(e) => {
                    let cause = format!("status key {key} unusable: {e}: not acting until an operator checks it (set_active after fixing or deleting the key)");
                    tracing::error!("{cause}");
                    cluster.go_passive(cause);
                }
            }
        }
    }
    Ok(cluster)
}

/// Stands by and leads in turn until the monitor stops.
pub async fn run(process: &mut Process, name: String) -> Result<(), DaemonError> {
    let config = process.config.clone();
    let c = config
        .coordination
        .clone()
        .expect("fleet::run is only called with [coordination]");
    let etcd = process
        .timing
        .etcd
        .expect("fleet::run is only called with [coordination]");
    let timeout = c
        .session_ttl
        .clamp(Duration::from_millis(500), Duration::from_secs(2));
    let mut unreachable_said = false;
    // This process's recent sessions: one counted lost may still hold our name in etcd.
    let mut earlier: Vec<i64> = Vec::new();
    // Since when this monitor's name is held by a session it does not know.
    let mut name_taken: Option<Instant> = None;
    loop {
        let connected = tokio::select! {
            stopped = serve_unconnected(process, "ERROR: This monitor cannot reach etcd and stands by, retrying: connecting to etcd") => return stopped,
            c = connect(&c, timeout) => c,
        };
        let (mut fleet, mut session) = match connected {
            Ok(x) => x,
            Err(e) => {
                let why = crate::error_chain(&e);
                if !unreachable_said {
                    tracing::error!(error = %why, "etcd unreachable: standing by, retrying every second (nothing is driven until etcd answers)");
                    unreachable_said = true;
                }
                let refusal =
                    format!("ERROR: This monitor cannot reach etcd and stands by, retrying: {why}");
                tokio::select! {
                    stopped = serve_unconnected(process, &refusal) => return stopped,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let joined = fleet.join(&session, &name, &earlier).await;
        // Kept whatever the outcome: a registration that failed on the way back may
        // still have been written.
        earlier.insert(0, session.lease);
        earlier.truncate(4);
        match joined {
            Ok(()) => name_taken = None,
            Err(e @ FleetError::NameTaken { .. }) => {
                let _ = fleet.end(session).await;
                // A name left by a session that no process renews goes with its lease:
                // etcd restored from a snapshot brings back the names of monitors that
                // have restarted since (on new sessions), each kept for a TTL and an etcd
                // election after the restore. A monitor that holds the name renews it:
                // only a name still taken after that is another monitor's.
                let wait = c.session_ttl * 2 + c.etcd_election_timeout * 2;
                let first = name_taken.is_none();
                let since = *name_taken.get_or_insert_with(Instant::now);
                if since.elapsed() >= wait {
                    return Err(DaemonError::Fleet(e));
                }
                if first {
                    tracing::warn!(error = %crate::error_chain(&e), "waiting up to {wait:?} for the name to be released (a registration restored from an etcd snapshot expires), then stopping");
                }
                tokio::select! {
                    stopped = serve_unconnected(process, "ERROR: This monitor's name is taken in the fleet and it waits for it to be released") => return stopped,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "registering in the fleet failed; retrying");
                continue;
            }
        }
        unreachable_said = false;
        tracing::info!(%name, prefix = %c.prefix, "standing by in the monitor fleet");
        let standby = Standby {
            key: process.key.clone(),
            fleet: fleet.clone(),
            session_lease: session.lease,
            name: name.clone(),
            timeout: config.monitor.promotion_timeout * 3 + Duration::from_secs(10),
        };
        let won = tokio::select! {
            won = fleet.campaign(&mut session, &name) => won,
            stopped = serve_standby(process, &standby) => {
                let _ = fleet.end(session).await;
                return stopped;
            }
        };
        let leadership = match won {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "campaign ended without leadership; standing by again");
                continue;
            }
        };
        tracing::info!(
            term = leadership.term,
            "elected leader of the monitor fleet"
        );
        let term = match check_identity(&mut fleet, &leadership, &process.key, &c.prefix).await {
            Ok(term) => term,
            Err(e @ DaemonError::ForeignPrefix { .. }) => {
                let _ = fleet.resign(leadership).await;
                let _ = fleet.end(session).await;
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "checking the prefix failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        };
        let clock = super::Clock::new();
        let cluster = match restore(&mut fleet, &config, clock.now()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading the status from etcd failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        };
        let leader = match Leader::start(
            fleet.clone(),
            leadership.clone(),
            name.clone(),
            term.epoch,
            &session,
            etcd,
            process.key.clone(),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "starting the term failed; standing by again");
                let _ = fleet.resign(leadership).await;
                continue;
            }
        };
        let seat = Seat {
            name: name.clone(),
            term,
            leader: Some(leader),
        };
        match super::lead(process, seat, cluster, clock).await? {
            Ended::Shutdown => {
                // A planned stop hands over at once instead of after the session's TTL.
                if let Err(e) = fleet.resign(leadership).await {
                    tracing::warn!(error = %crate::error_chain(&e), "resigning failed: a standby takes over when the session expires");
                }
                let _ = fleet.end(session).await;
                tracing::info!("resigned the fleet's leadership");
                return Ok(());
            }
            Ended::Deposed => {
                tracing::warn!(term = leadership.term, "no longer the leader: standing by");
                drop(session);
            }
            Ended::SteppedDown => {
                if let Err(e) = fleet.resign(leadership).await {
                    tracing::warn!(error = %crate::error_chain(&e), "resigning failed: a standby takes over when the session expires");
                }
                let _ = fleet.end(session).await;
                // The others campaign first; this one joins the line again later, and
                // leads again only if nobody else does.
                tokio::select! {
                    stopped = serve_unconnected(process, "ERROR: This monitor stepped down (it reached no agent) and stands by; ask another monitor of the fleet.") => return stopped,
                    _ = tokio::time::sleep(c.session_ttl * 3) => {}
                }
            }
        }
    }
}

async fn connect(
    c: &mmm_common::config::Coordination,
    timeout: Duration,
) -> Result<(Fleet, Session), FleetError> {
    let mut fleet = Fleet::connect(c, timeout).await?;
    let session = fleet.session().await?;
    Ok((fleet, session))
}

/// Claims the prefix for this cluster, refuses one that holds another's, and writes this
/// term's fresh epoch there: every leader does, before any agent hears of its term, so a
/// term is never ordered against one of another etcd history (wiped, re-created or
/// restored from a snapshot, where revisions start again or go back: docs/fencing.md).
async fn check_identity(
    fleet: &mut Fleet,
    lead: &Leadership,
    key: &ClusterKey,
    prefix: &str,
) -> Result<Term, DaemonError> {
    if let Some(found) = fleet.get(IDENTITY).await.map_err(DaemonError::Fleet)? {
        match mmm_common::epoch::open(key, prefix, &found) {
            // This cluster's: an epoch of an earlier term, or the identity alone as
            // monitors wrote it before epochs.
            Ok(_) | Err(RecordError::Legacy) => {}
            // This cluster's identity with a MAC that does not verify: someone who can
            // write to etcd but lacks the key. Never taken; the new epoch replaces it.
            Err(e @ RecordError::Forged) => {
                tracing::warn!(key = %fleet.key(IDENTITY), value = %String::from_utf8_lossy(&found), "{e}: not accepted, replaced by this term's epoch")
            }
            Err(RecordError::Foreign | RecordError::Unreadable { .. }) => {
                return Err(DaemonError::ForeignPrefix {
                    key: fleet.key(IDENTITY),
                })
            }
        }
    }
    let epoch = mmm_common::epoch::fresh_epoch().map_err(DaemonError::Epoch)?;
    let record = EpochRecord {
        epoch,
        term: lead.term,
    };
    fleet
        .put_as_leader(lead, IDENTITY, mmm_common::epoch::seal(key, prefix, record))
        .await
        .map_err(DaemonError::Fleet)?;
    let term = Term {
        epoch,
        rev: lead.term,
    };
    tracing::info!(%term, key = %fleet.key(IDENTITY), "this term's epoch is written: agents take the term once their own read of etcd shows it");
    Ok(term)
}

/// Answers control commands while etcd cannot be reached: `ping` here (the process is
/// alive), everything else refused with the cause. Returns when the monitor must stop.
async fn serve_unconnected(process: &mut Process, refusal: &str) -> Result<(), DaemonError> {
    loop {
        let (command, reply) = tokio::select! {
            stopped = process.life.stopped() => return stopped,
            Some(r) = process.control.recv() => r,
        };
        let text = if command == crate::control::Command::Ping {
            "OK: Pinged successfully!".to_string()
        } else {
            refusal.to_string()
        };
        let _ = reply.send(text);
    }
}

/// A standby's side of the control socket.
struct Standby {
    key: ClusterKey,
    fleet: Fleet,
    session_lease: i64,
    name: String,
    timeout: Duration,
}

/// Answers control commands while standing by: `ping` here, everything else by the
/// leader. Returns when the monitor must stop.
async fn serve_standby(process: &mut Process, s: &Standby) -> Result<(), DaemonError> {
    let mut n: u64 = 0;
    loop {
        let (command, reply) = tokio::select! {
            stopped = process.life.stopped() => return stopped,
            Some(r) = process.control.recv() => r,
        };
        if command == crate::control::Command::Ping {
            let _ = reply.send("OK: Pinged successfully!".to_string());
            continue;
        }
        n += 1;
        // The id ends with the issue time: the leader refuses an old or replayed one.
        let id = format!("{}-{}-{n}-{}", s.name, std::process::id(), wall_ms());
        let (mut fleet, lease, timeout) = (s.fleet.clone(), s.session_lease, s.timeout);
        let key = s.key.clone();
        let signed = sign_command(&key, &id, &command.to_string());
        tokio::spawn(async move {
            // Without a leader nobody would answer: say so now rather than after the wait.
            match fleet.leader().await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let _ = reply.send("ERROR: No monitor leads the fleet at the moment (an election is under way, or etcd has lost its majority); this one stands by.".to_string());
                    return;
                }
                Err(e) => {
                    let _ = reply.send(format!(
                        "ERROR: This monitor stands by and cannot ask etcd who leads: {}",
                        crate::error_chain(&e)
                    ));
                    return;
                }
            }
            let text = match fleet
                .forward(lease, &id, &signed, timeout)
                .await
            {
                Ok(answer) => verified(&key, &id, crate::control::auth::Part::Answer, &answer)
                    .unwrap_or_else(|| {
                        tracing::warn!(%id, "an answer under the fleet's prefix without a valid MAC: ignored");
                        "ERROR: The answer from the fleet's leader could not be verified with the cluster key.".to_string()
                    }),
                Err(e) => format!(
                    "ERROR: This monitor stands by and the fleet's leader did not answer: {}",
                    crate::error_chain(&e)
                ),
            };
            let _ = reply.send(text);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_commands_and_answers_verify_only_with_the_key_and_their_id() {
        use crate::control::auth::Part;
        let key = ClusterKey::from_hex(&"ab".repeat(32)).expect("a key");
        let other = ClusterKey::from_hex(&"cd".repeat(32)).expect("a key");
        let signed = sign_command(&key, "mon2-1-1-100", "move_role writer db2");
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Command, &signed).as_deref(),
            Some("move_role writer db2")
        );
        assert_eq!(
            verified(&other, "mon2-1-1-100", Part::Command, &signed),
            None
        );
        assert_eq!(
            verified(&key, "mon2-1-2-100", Part::Command, &signed),
            None,
            "moved to another id"
        );
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Answer, &signed),
            None,
            "a command is no answer"
        );
        let changed = signed.replace("db2", "db3");
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Command, &changed),
            None
        );
        assert_eq!(
            verified(&key, "x", Part::Command, "move_role writer db2"),
            None,
            "unsigned"
        );
        let answer = sign_answer(&key, "mon2-1-1-100", "OK: done\nsecond line");
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Answer, &answer).as_deref(),
            Some("OK: done\nsecond line")
        );
    }
}
