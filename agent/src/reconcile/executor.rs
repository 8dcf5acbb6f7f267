//! The steps of a plan run against the kernel and the server, in order, each writer step
//! under a permit from the lease asked for right before it acts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::{Observed, Scope, Step, VipGuards};
use crate::garp::{GarpError, Ticket};
use crate::mysql::{Mysql, MysqlError};
use crate::vip::{Link, Netlink, VipError};
use mmm_common::error_chain;

/// Why a step (or reading what the host holds) failed. The kernel's and the server's
/// errors already name their operation; the rest say what was refused and why. They
/// reach the monitor as text (`Applied::failures`), the whole chain in one line.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Vip(#[from] VipError),
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error(transparent)]
    Garp(#[from] GarpError),
    #[error("adding {ip}: no answer from the kernel within {bound:?}")]
    AddTimeout { ip: Ipv4Addr, bound: Duration },
    /// The lease forbids writing: self-fenced, or no monitor renews it.
    #[error("{what} not done: {reason}")]
    NoLease { what: String, reason: String },
    /// The desired state it served was superseded (a newer one, a fence, a demoting
    /// order, a later term): its writer step is not taken.
    #[error("{what} not done: {reason}")]
    Stale {
        what: String,
        reason: crate::lease::Refused,
    },
    /// A newer desired state, a fence or a demoting order came while the plan ran: the
    /// rest of it is left to the plan that follows.
    #[error("{skipped} step(s) not done: a newer desired state, or a fence, superseded the one they were planned for")]
    Superseded { skipped: usize },
    #[error("parking {ip}: the RST program is not loaded (clients would be drawn to a host that drops their packets)")]
    NoRstProgram { ip: Ipv4Addr },
    #[error("parking {ip}")]
    Park {
        ip: Ipv4Addr,
        #[source]
        source: crate::rst::RstError,
    },
    #[error("no gratuitous ARP{}: CAP_NET_RAW missing, clients switch only when their ARP entry expires", .ip.map(|ip| format!(" for {ip}")).unwrap_or_default())]
    NoArpSocket { ip: Option<Ipv4Addr> },
}

/// Bound on one netlink request of a step.
const VIP_STEP: Duration = Duration::from_millis(500);

/// Executes steps against the kernel and the server.
pub struct Executor {
    pub netlink: Netlink,
    pub interface: String,
    pub guards: VipGuards,
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub mysql: Arc<Mysql>,
    /// mysqld's port: the connections to a VIP about to go are reset on it.
    pub mysql_port: u16,
    pub max_kill_retries: u32,
    /// Users whose sessions demotion leaves alone (the agent's, the monitor's).
    pub spare_users: Vec<String>,
    /// `[agent] block_users`, and the users it must never match (agent, monitor,
    /// replication).
    pub block_users: Vec<String>,
    pub never_blocked: Vec<String>,
    /// Restored before the server goes writable.
    pub semi_sync: crate::mysql::SemiSyncHold,
    /// Asked before a writer VIP is added or announced, or the server goes writable.
    pub lease: Arc<crate::lease::Lease>,
    /// Lifts of read_only whose outcome is unknown (shared with the task that ends them).
    pub grants: Arc<crate::mysql::Grants>,
    pub writer_vips: BTreeSet<Ipv4Addr>,
    /// Set while the probe has seen mysqld's process exit and no new one listening: no SQL
    /// can reach it, the VIP removal alone fences (a restarted mysqld comes up read_only
    /// from its my.cnf).
    pub mysqld_exited: Arc<std::sync::atomic::AtomicBool>,
}

impl Executor {
    pub async fn link(&self) -> Result<Link, StepError> {
        Ok(self.netlink.link(&self.interface).await?)
    }

    /// Reads what the host holds now. The server is not asked (its read_only is unknown)
    /// when `ask_server` is false, when its process exited, or while it hung writable:
    /// the wake task waits for its answer then, and nothing here queues behind it.
    pub async fn observe(&self, scope: &Scope, ask_server: bool) -> (Observed, Vec<StepError>) {
        let mut errors = Vec::new();
        let vips = match self.link().await {
            Ok(link) => match self.netlink.addresses(link.index, &self.interface).await {
                Ok(addrs) => addrs
                    .into_iter()
                    .map(|(ip, _)| ip)
                    .filter(|ip| scope.managed.contains(ip))
                    .collect(),
                Err(e) => {
                    errors.push(e.into());
                    BTreeSet::new()
                }
            },
            Err(e) => {
                errors.push(e);
                BTreeSet::new()
            }
        };
        let read_only = if self.mysqld_exited() || !ask_server || self.grants.hung_writable() {
            None
        } else {
            self.read_only().await.map_err(|e| errors.push(e)).ok()
        };
        let parked = self.guards.parked();
        (
            Observed {
                vips,
                read_only,
                parked,
            },
            errors,
        )
    }

    pub fn mysqld_exited(&self) -> bool {
        self.mysqld_exited
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn read_only(&self) -> Result<bool, StepError> {
        Ok(self.mysql.read_only().await?)
    }

    /// Runs the steps of a plan made under `stamp` in order; returns one line per failed
    /// step. A failed step does not stop the later ones: fencing steps are each worth
    /// doing on their own. A plan whose stamp is no longer current stops at once: every
    /// stamp change queues a plan of its own, made from what the host holds then. A
    /// writer-granting step asks the lease for a permit of `stamp` immediately before it
    /// touches the kernel or the server.
    pub async fn run(&self, steps: &[Step], stamp: crate::lease::Stamp) -> Vec<StepError> {
        let mut failures = Vec::new();
        if steps.is_empty() {
            return failures;
        }
        let link = match self.link().await {
            Ok(l) => Some(l),
            Err(e) => {
                failures.push(e);
                None
            }
        };
        // Taken before each address is added, spent by its Announce step.
        let mut tickets: BTreeMap<Ipv4Addr, Ticket> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            if !self.lease.current(stamp) {
                tracing::info!(
                    skipped = ?&steps[i..],
                    "plan superseded (a newer desired state, a fence or a demoting order): the rest is left to the next plan"
                );
                failures.push(StepError::Superseded {
                    skipped: steps.len() - i,
                });
                break;
            }
            if self.mysqld_exited() && matches!(step, Step::SetReadOnly(true) | Step::KillSessions)
            {
                tracing::info!(
                    ?step,
                    "skipped: the probe saw mysqld exit, the VIP removal is the fence"
                );
                continue;
            }
            let result = match (step, link) {
                (Step::RemoveVip(ip), Some(l)) => {
                    self.guards.before_remove(*ip);
                    // Its clients' sessions get an RST now, while the address can still
                    // carry one: once it is gone, mysqld's close (the killed session) could
                    // not reach them, and a client mid-request would wait for TCP's
                    // retransmission (~200 ms) to learn. A reconnect lands on the RST
                    // program. A dead mysqld's were reset when it exited.
                    if !self.mysqld_exited() {
                        match crate::sockdiag::reset_connections_to(*ip, self.mysql_port) {
                            Ok(n) if n > 0 => {
                                tracing::info!(%ip, sessions = n, "client connections to the VIP reset")
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(%ip, error = %error_chain(&e), "client connections to the VIP not reset")
                            }
                        }
                    }
                    self.netlink
                        .remove(l.index, &self.interface, *ip)
                        .await
                        .map(drop)
                        .map_err(StepError::from)
                }
                (Step::AddVip(ip), Some(l)) if self.writer_vips.contains(ip) => {
                    // The permit holds the fence off until the address is in place, so a
                    // fence decided meanwhile removes it again.
                    match self.lease.permit(stamp).await {
                        Err(r) => Err(refused(format!("taking the writer VIP {ip}"), r)),
                        Ok(_permit) => self.add_vip(l, *ip, &mut tickets).await,
                    }
                }
                (Step::AddVip(ip), Some(l)) => self.add_vip(l, *ip, &mut tickets).await,
                (Step::RemoveVip(_) | Step::AddVip(_), None) => continue,
                // Announcing the writer VIP draws its clients here: only with a permit.
                (Step::Announce(ip), Some(l)) if self.writer_vips.contains(ip) => {
                    match self.lease.permit(stamp).await {
                        Err(r) => Err(refused(format!("announcing the writer VIP {ip}"), r)),
                        Ok(_permit) => match tickets.remove(ip) {
                            Some(ticket) => self.announce(l, ticket),
                            None => self.reannounce(&[*ip]).await,
                        },
                    }
                }
                (Step::Announce(ip), Some(l)) => match tickets.remove(ip) {
                    Some(ticket) => self.announce(l, ticket),
                    // Only a plan that announces what it did not add gets here.
                    None => self.reannounce(&[*ip]).await,
                },
                (Step::Announce(_), None) => continue,
                (Step::Park(ip), Some(l)) => match self.guards.park(*ip) {
                    Err(e) => Err(e),
                    Ok(Some(ticket)) => self.announce(l, ticket),
                    Ok(None) => Ok(()),
                },
                (Step::Park(_), None) => continue,
                (Step::Unpark(ip), _) => {
                    self.guards.unpark(*ip);
                    Ok(())
                }
                (Step::Reclaim(ip), _) => {
                    if let Some(rst) = &self.guards.rst {
                        rst.reclaim(*ip);
                    }
                    Ok(())
                }
                (Step::SetReadOnly(false), _) => match self.lease.permit(stamp).await {
                    // Nothing of the writer's is unlocked for a step that will not run.
                    Err(r) => Err(refused("lifting read_only".into(), r)),
                    Ok(permit) => {
                        drop(permit);
                        self.lift_read_only(stamp, &mut failures).await
                    }
                },
                (Step::SetReadOnly(_), _) => {
                    self.mysql.make_read_only().await.map_err(StepError::from)
                }
                (Step::KillSessions, _) => {
                    // Application users locked first, so a killed session cannot log in
                    // again on the demoted master.
                    self.block_users(true, &mut failures).await;
                    self.mysql
                        .kill_sessions(self.max_kill_retries, &self.spare_users)
                        .await
                        .map(drop)
                        .map_err(StepError::from)
                }
            };
            match result {
                Ok(()) => tracing::info!(?step, "applied"),
                Err(e) => {
                    tracing::warn!(?step, error = %error_chain(&e), "step failed");
                    failures.push(e);
                }
            }
        }
        failures
    }

    /// Adds a VIP, bounded: the lease's fence waits for a writer VIP's addition (the
    /// permit), so a hung netlink request must not hold it off.
    async fn add_vip(
        &self,
        link: Link,
        ip: Ipv4Addr,
        tickets: &mut BTreeMap<Ipv4Addr, Ticket>,
    ) -> Result<(), StepError> {
        let ticket = self.guards.before_add(ip);
        match tokio::time::timeout(VIP_STEP, self.netlink.add(link.index, &self.interface, ip))
            .await
        {
            Ok(Ok(_)) => {
                self.guards.after_add(ip);
                // Only an address really added is announced.
                if let Some(t) = ticket {
                    tickets.insert(ip, t);
                }
                Ok(())
            }
            Ok(Err(e)) => {
                self.after_failed_add(link, ip).await;
                Err(StepError::from(e))
            }
            Err(_elapsed) => {
                self.after_failed_add(link, ip).await;
                Err(StepError::AddTimeout {
                    ip,
                    bound: VIP_STEP,
                })
            }
        }
    }

    /// A failed or timed-out addition may still have happened: if the address is there,
    /// only the kernel may answer for it (a released entry would answer its clients with
    /// RST for up to its bound).
    async fn after_failed_add(&self, link: Link, ip: Ipv4Addr) {
        let read = self.netlink.addresses(link.index, &self.interface);
        if let Ok(Ok(held)) = tokio::time::timeout(VIP_STEP, read).await {
            if held.iter().any(|(a, _)| *a == ip) {
                self.guards.after_add(ip);
            }
        }
    }

    /// Locks (`true`) or unlocks `block_users`; a failure is recorded, the step goes on.
    async fn block_users(&self, lock: bool, failures: &mut Vec<StepError>) {
        if let Err(e) = self
            .mysql
            .lock_accounts(&self.block_users, &self.never_blocked, lock)
            .await
        {
            failures.push(e.into());
        }
    }

    /// The server goes writable: the application's accounts unlocked, semi-sync's wait
    /// restored, then read_only lifted if the permit still holds on a ready connection
    /// (the SQL before may have taken a while).
    async fn lift_read_only(
        &self,
        stamp: crate::lease::Stamp,
        failures: &mut Vec<StepError>,
    ) -> Result<(), StepError> {
        // The application's accounts may log in here again.
        self.block_users(false, failures).await;
        // Acknowledged writes need the semi-sync wait again first.
        self.semi_sync.release(&self.mysql).await?;
        let authorize = || async { self.lease.permit(stamp).await.map(|p| p.left) };
        match self.mysql.lift_read_only(&self.grants, authorize).await? {
            Ok(()) => Ok(()),
            Err(r) => Err(refused("lifting read_only".into(), r)),
        }
    }

    /// One gratuitous ARP for each of `vips` this host holds now (garp_refresh). The
    /// tickets are taken before the kernel is asked, so a VIP released after the question
    /// is not announced either.
    pub async fn reannounce(&self, vips: &[Ipv4Addr]) -> Result<(), StepError> {
        if vips.is_empty() {
            return Ok(());
        }
        let Some(garp) = &self.guards.garp else {
            return Err(StepError::NoArpSocket { ip: None });
        };
        let tickets: Vec<Ticket> = vips.iter().map(|ip| garp.ticket(*ip)).collect();
        let link = self.link().await?;
        let held: BTreeSet<Ipv4Addr> = self
            .netlink
            .addresses(link.index, &self.interface)
            .await?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        for ticket in tickets.into_iter().filter(|t| held.contains(&t.ip)) {
            garp.send(ticket, link.index, link.mac)?;
        }
        Ok(())
    }

    /// Sends the first gratuitous ARP now and the rest of the burst in the background; the
    /// burst ends early when the VIP is released.
    fn announce(&self, link: Link, ticket: Ticket) -> Result<(), StepError> {
        let Some(garp) = self.guards.garp.clone() else {
            return Err(StepError::NoArpSocket {
                ip: Some(ticket.ip),
            });
        };
        if !garp.send(ticket, link.index, link.mac)? {
            return Ok(());
        }
        let (count, interval) = (self.garp_count, self.garp_interval);
        tokio::spawn(async move {
            for _ in 1..count {
                tokio::time::sleep(interval).await;
                match garp.send(ticket, link.index, link.mac) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(ip = %ticket.ip, "gratuitous ARP burst ended: the VIP was released");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "gratuitous ARP repeat failed")
                    }
                }
            }
        });
        Ok(())
    }
}

/// A writer step the lease refused: a missing permit (reported as self-fenced while the
/// writer role is asked for), or a desired state that is over.
fn refused(what: String, r: crate::lease::Refused) -> StepError {
    match r.is_permit() {
        true => StepError::NoLease {
            what,
            reason: r.to_string(),
        },
        false => StepError::Stale { what, reason: r },
    }
}
