//! What the event loop does with the core's actions: commands to agent links, the seat's
//! status and leases, kill_host_bin, notices; and the metrics it refreshes after them.

use super::links::LinkCmd;
use super::seat::Seat;
use super::{metrics, notify, Clock};
use crate::core::{Action, Cluster, Event, Millis};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(super) struct Shell<S: Seat> {
    pub(super) clock: Clock,
    pub(super) links: HashMap<String, mpsc::Sender<LinkCmd>>,
    pub(super) replies: HashMap<u64, oneshot::Sender<String>>,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) kill_host_bin: Option<std::path::PathBuf>,
    pub(super) kill_timeout: Duration,
    pub(super) notifier: Option<notify::Notifier>,
    pub(super) metrics: metrics::Shared,
    pub(super) writer: Option<String>,
    pub(super) promotion_started: Option<Millis>,
    /// Where this monitor sits: the status, the writer's publication, a fleet's leases.
    pub(super) seat: S,
    /// Per host: whether the core holds its link down (Isolate), for its ping check's
    /// pace.
    pub(super) held: HashMap<String, tokio::sync::watch::Sender<bool>>,
}

impl<S: Seat> Shell<S> {
    pub(super) fn hold(&self, host: &str, held: bool) {
        if let Some(h) = self.held.get(host) {
            h.send_replace(held);
        }
    }

    pub(super) async fn dispatch(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendDesired { host, desired } => {
                    tracing::debug!(%host, epoch = desired.epoch, writable = desired.writable, roles = ?desired.roles, "desired state");
                    self.link(&host, LinkCmd::Desired(desired)).await;
                }
                Action::AgentAction {
                    host,
                    id,
                    action,
                    deadline,
                } => {
                    tracing::info!(%host, ?action, ?deadline, "agent action");
                    self.link(
                        &host,
                        LinkCmd::Action {
                            id,
                            action,
                            deadline,
                        },
                    )
                    .await;
                }
                Action::QueryStatus { host } => self.link(&host, LinkCmd::Query).await,
                Action::Disconnect { host } => {
                    self.hold(&host, false);
                    self.link(&host, LinkCmd::Disconnect).await
                }
                Action::Isolate { host } => {
                    self.hold(&host, true);
                    self.link(&host, LinkCmd::Isolate).await
                }
                Action::Release { host } => {
                    self.hold(&host, false);
                    self.link(&host, LinkCmd::Release).await
                }
                Action::KillHost { host, ping_ok } => self.kill_host(host, ping_ok),
                Action::EndLease { host } => self.seat.end_lease(host, self.events.clone()),
                Action::Persist(record) => self.seat.persist(record),
                Action::Notify { host, message } => {
                    match &host {
                        Some(h) => tracing::warn!(host = %h, "{message}"),
                        None => tracing::warn!("{message}"),
                    }
                    if let Some(n) = &self.notifier {
                        n.send(notify::Notice {
                            at_ms: self.clock.now(),
                            host,
                            message,
                        });
                    }
                }
                Action::Reply { id, text } => {
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(text);
                    }
                }
            }
        }
    }

    async fn link(&self, host: &str, cmd: LinkCmd) {
        if let Some(l) = self.links.get(host) {
            let _ = l.send(cmd).await;
        }
    }

    fn kill_host(&self, host: String, ping_ok: bool) {
        let Some(bin) = self.kill_host_bin.clone() else {
            return;
        };
        let events = self.events.clone();
        let timeout = self.kill_timeout;
        tokio::spawn(async move {
            tracing::warn!(%host, bin = %bin.display(), "running kill_host_bin");
            let run = tokio::process::Command::new(&bin)
                .arg(&host)
                .arg(if ping_ok { "1" } else { "0" })
                .kill_on_drop(true)
                .output();
            let (ok, output) = match tokio::time::timeout(timeout, run).await {
                Err(_) => (false, format!("no exit within {timeout:?}")),
                Ok(Err(e)) => (false, format!("starting {}: {e}", bin.display())),
                Ok(Ok(o)) => (
                    o.status.success(),
                    format!(
                        "{} {}{}",
                        o.status,
                        String::from_utf8_lossy(&o.stdout).trim(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ),
            };
            let _ = events.send(Event::KillHostDone { host, ok, output }).await;
        });
    }

    /// Refreshes the probes' metrics: agents report their probe in heartbeats, which
    /// change nothing else and so call no `observe`. Once per Tick (at least every
    /// IDLE_TICK), not per event: a heartbeat each second per host would make it
    /// quadratic in the number of hosts.
    pub(super) fn observe_probes(&self, c: &Cluster) {
        let probes = c
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), h.probe_state(), h.probe_blind()))
            .collect();
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .probes = probes;
    }

    /// Refreshes the metrics after the core changed something.
    pub(super) fn observe(&mut self, c: &Cluster, now: Millis) {
        let writer = c.active_master().map(str::to_string);
        if let Some(started) = c.promotion_started() {
            self.promotion_started.get_or_insert(started);
        } else if let Some(started) = self.promotion_started.take() {
            if writer.is_some() {
                let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
                m.failovers += 1;
                m.last_failover_seconds = now.saturating_sub(started) as f64 / 1000.0;
            }
        }
        self.writer = writer;
        let published = self
            .writer
            .as_deref()
            .and_then(|w| c.host(w))
            .map(|h| (h.name.clone(), h.ip, h.mysql_port));
        self.seat.publish_writer(published);
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.writer = self
            .writer
            .as_deref()
            .and_then(|w| c.host(w))
            .map(|h| (h.name.clone(), h.ip.to_string()));
        m.hosts = c
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), h.state))
            .collect();
        m.roles = c
            .roles()
            .ips()
            .iter()
            .filter_map(|r| {
                let ip = r.ip.map(|ip| ip.to_string()).unwrap_or_default();
                Some((r.role.clone(), ip, r.holder.clone()?))
            })
            .collect();
    }
}
