//! One term's leadership in a monitor fleet, as the event loop uses it: the [`Seat`] of
//! the elected monitor. Its links carry the term (agents refuse older terms); the status
//! and the writer are written in transactions that fail once it no longer leads; a
//! writer is fenced by ending its agent's own etcd lease ([`Seat::end_lease`]), since no
//! monitor renews it. The term ends at once, with every task of it, when the session
//! cannot be renewed (before etcd expires it, so before another monitor can be elected)
//! or a guarded write fails.

use super::forward::Inbox;
use super::{Deposition, Seat};
use crate::control::Command;
use crate::core::status::StatusRecord;
use crate::core::{Event, FleetShow};
use crate::etcd::{DirChange, Fleet, FleetError, FleetView, Leadership, Session};
use mmm_common::config::ClusterKey;
use mmm_common::epoch::Term;
use mmm_common::timing::EtcdTiming;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What the leader knows of one agent's etcd lease (`<prefix>/agents/<host>`).
#[derive(Debug, Clone, Default)]
struct AgentLease {
    lease: Option<i64>,
    /// When this term saw the key deleted, and the lease it had.
    gone: Option<(Instant, i64)>,
}

/// One term's leadership, as the daemon uses it.
pub struct Leader {
    fleet: Fleet,
    lead: Leadership,
    name: String,
    /// The epoch this leader wrote at `<prefix>/cluster`.
    epoch: u64,
    /// The agents' etcd leases: when one is counted over, when a revoke may go out.
    etcd: EtcdTiming,
    deposed: Arc<watch::Sender<bool>>,
    writer: watch::Sender<Option<(String, Ipv4Addr, u16)>>,
    view: Arc<Mutex<FleetView>>,
    agents: Arc<Mutex<HashMap<String, AgentLease>>>,
    background: Vec<tokio::task::AbortHandle>,
    /// `<prefix>/status`; taken only by [`Seat::persist_last`].
    status: Option<StatusWriter>,
    /// The commands standbys forward, and their answers.
    inbox: Inbox,
    /// The writer's failsafe: this term's vouch, and the consents' promise.
    witness: Arc<crate::witness::Witness>,
    /// To tell this cluster's monitor registrations from others' in `show`.
    key: ClusterKey,
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
    pub async fn start(
        mut fleet: Fleet,
        lead: Leadership,
        epoch: u64,
        session: &Session,
        etcd: EtcdTiming,
        key: ClusterKey,
        witness: Arc<crate::witness::Witness>,
    ) -> Result<Leader, FleetError> {
        // The witness is this monitor's: it carries its name.
        let name = witness.name().to_string();
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
        let (entries, mut changes) = fleet.watch_dir(&fleet.keys().agents()).await?;
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
            tokio::spawn(keep_writer_published(
                fleet.clone(),
                lead.clone(),
                epoch,
                rx,
                deposed.clone(),
            ))
            .abort_handle(),
        );
        let status = StatusWriter::start(fleet.clone(), lead.clone(), deposed.clone(), key.clone());
        let inbox = Inbox::new(fleet.clone(), session.lease, key.clone(), lead.term);
        // The roster: every registered monitor may lead after this one (roster.rs).
        let written: Arc<Mutex<Option<Vec<String>>>> = Arc::default();
        let (mut f, l, k, me, wr) = (
            fleet.clone(),
            lead.clone(),
            key.clone(),
            name.clone(),
            written.clone(),
        );
        background.push(
            tokio::spawn(async move {
                let mut roster = super::roster::Keeper::default();
                loop {
                    if let Err(e) = roster.keep(&mut f, &l, &k, &me, &wr).await {
                        tracing::debug!(error = %crate::error_chain(&e), "keeping the fleet's roster failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
            .abort_handle(),
        );
        // What this term would vouch with if etcd went away: kept fresh while it leads,
        // and kept by the witness after (agents still following this term take it). Only
        // with a roster written: a monitor elected later is one of its names.
        let (w, writer_now) = (witness.clone(), writer.subscribe());
        let term = Term {
            epoch,
            rev: lead.term,
        };
        background.push(
            tokio::spawn(async move {
                loop {
                    let roster = written.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(roster) = roster {
                        let writer = writer_now.borrow().as_ref().map(|(h, _, _)| h.clone());
                        w.set_lead(crate::witness::Vouching {
                            term,
                            writer,
                            roster,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .abort_handle(),
        );
        Ok(Leader {
            fleet,
            lead,
            name,
            epoch,
            etcd,
            deposed,
            writer,
            view,
            agents,
            background,
            status: Some(status),
            inbox,
            witness,
            key,
        })
    }
}

impl Seat for Leader {
    fn name(&self) -> &str {
        &self.name
    }

    fn term(&self) -> Term {
        Term {
            epoch: self.epoch,
            rev: self.lead.term,
        }
    }

    fn is_deposed(&self) -> bool {
        *self.deposed.borrow()
    }

    fn deposition(&self) -> Deposition {
        Deposition::of(self.deposed.subscribe())
    }

    fn gives_way_unheard(&self) -> bool {
        true
    }

    fn persist(&self, record: StatusRecord) {
        if let Some(status) = &self.status {
            status.save(record);
        }
    }

    async fn persist_last(mut self, record: StatusRecord) {
        if let Some(status) = self.status.take() {
            status.finish(record).await;
        }
    }

    /// The writer as it should be published at `<prefix>/writer` (newest wins).
    fn publish_writer(&self, writer: Option<(String, Ipv4Addr, u16)>) {
        self.writer.send_if_modified(|w| {
            let changed = *w != writer;
            *w = writer;
            changed
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
    fn end_lease(&self, host: String, events: mpsc::Sender<Event>) {
        let mut fleet = self.fleet.clone();
        let lead = self.lead.clone();
        let (etcd, agents, deposed) = (self.etcd, self.agents.clone(), self.deposed.clone());
        let witness = self.witness.clone();
        // From now on no consent of this monitor reaches the host it fences.
        witness.fencing(&host);
        tokio::spawn(async move {
            let start = Instant::now();
            let revoked_key = fleet.keys().revoked(&host);
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
                            // Ended without our revoke: expired (the agent gave the
                            // writer up before), or revoked by whoever can write to
                            // etcd, which the agent learns only at its next renewal.
                            Some((at, lease)) if revoked != Some(lease) => {
                                at + etcd.agent_learns_lease_end
                            }
                            Some((at, _)) => at + etcd.monitor_counts_over,
                            // Gone before this term began: how is unknown, so a TTL.
                            None => Instant::now() + etcd.monitor_counts_over,
                        };
                    }
                }
            };
            // A writer may hold its permit through the failsafe, on consents this monitor
            // (or an earlier run of it) gave while etcd was out of its reach: never
            // counted over before they ran out, read again after each wait, since other
            // hosts are consented to meanwhile (crate::witness).
            tokio::time::sleep_until(over_at).await;
            let promised = witness.promised_until(&host);
            if promised > Instant::now() {
                tracing::info!(%host, wait = ?(promised - Instant::now()), "waiting out this monitor's failsafe consents before counting the writer's permit over");
            }
            witness.wait_out_promise(&host).await;
            if !*deposed.borrow() {
                witness.fenced(&host);
                let _ = events.send(Event::LeaseEnded { host }).await;
            }
        });
    }

    /// The fleet line of `show`.
    fn show(&self) -> Option<FleetShow> {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // A name registered without the cluster key is no standby of this fleet: named on
        // the `# etcd:` line instead (the roster's keeper logs its key).
        let sealed =
            super::roster::sealed_members(&self.key, self.fleet.keys(), &view.registrations, None);
        let unsealed: Vec<&String> = view
            .members
            .iter()
            .filter(|m| !sealed.contains(m))
            .collect();
        let mut etcd = self.fleet.etcd_trouble();
        if !unsealed.is_empty() {
            let note = format!(
                "monitor names registered without the cluster key (not in the roster): {}",
                unsealed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            etcd = Some(match etcd {
                Some(t) => format!("{t}; {note}"),
                None => note,
            });
        }
        Some(FleetShow {
            leader: self.name.clone(),
            term: self.lead.term,
            epoch: self.epoch,
            etcd,
            standbys: sealed.into_iter().filter(|m| *m != self.name).collect(),
        })
    }

    async fn hear_forwarded(&mut self) {
        self.inbox.hear().await
    }

    async fn forwarded(&mut self) -> (Command, String) {
        self.inbox.next().await
    }

    fn answer_to(&self, id: String) -> oneshot::Sender<String> {
        self.inbox.answer_to(id)
    }
}

/// Publishes the writer at `<prefix>/writer` as `{"host","ip","port","term","epoch"}`
/// (host null when there is none), newest first, while the term lasts.
async fn keep_writer_published(
    mut fleet: Fleet,
    lead: Leadership,
    epoch: u64,
    mut rx: watch::Receiver<Option<(String, Ipv4Addr, u16)>>,
    deposed: Arc<watch::Sender<bool>>,
) {
    let key = fleet.keys().writer();
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
            match fleet.put_as_leader(&lead, &key, json.to_string()).await {
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
struct StatusWriter {
    latest: watch::Sender<Option<StatusRecord>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWriter {
    fn start(
        mut fleet: Fleet,
        lead: Leadership,
        deposed: Arc<watch::Sender<bool>>,
        cluster_key: ClusterKey,
    ) -> StatusWriter {
        let (latest, mut rx) = watch::channel::<Option<StatusRecord>>(None);
        let task = tokio::spawn(async move {
            let key = fleet.keys().status();
            while rx.changed().await.is_ok() {
                loop {
                    let Some(record) = rx.borrow_and_update().clone() else {
                        break;
                    };
                    let sealed = super::sealed::seal(&cluster_key, &key, &record.to_json());
                    match fleet.put_as_leader(&lead, &key, sealed).await {
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
