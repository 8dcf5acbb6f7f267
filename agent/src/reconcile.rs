//! From the monitor's desired state to ordered steps, and their execution.
//!
//! [`plan`] is pure: desired state + what the host holds -> steps, in the order that
//! keeps the cluster safe: first VIPs are removed (the writer's first), then the server
//! becomes read-only and client sessions are killed (docs/fencing.md); then, when this host
//! is to write, it becomes writable before it takes VIPs and announces them. A host that
//! already matches gets no steps, so re-applying the same state (after an agent restart,
//! or the monitor's periodic re-assertion) touches nothing. A parked writer VIP (see
//! [`crate::rst`]) is answered with RST and announced, never added: parking goes last,
//! and taking the VIP for real ends it (the RST program lets its packets pass again just
//! after the address is added, which follows the server going writable).

use crate::garp::{Announcer, GarpError, Ticket};
use crate::mysql::{Mysql, MysqlError};
use crate::vip::{Link, Netlink, VipError};
use mmm_common::config::{Config, Host};
use mmm_common::proto::DesiredState;
use mmm_common::types::HostState;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// A desired state checked against the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub epoch: u32,
    pub state: HostState,
    pub active_master: String,
    pub writable: bool,
    /// VIP -> role.
    pub vips: BTreeMap<Ipv4Addr, String>,
    /// Writer VIPs to park.
    pub parked: BTreeSet<Ipv4Addr>,
}

/// What the host holds, as read from the kernel and the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub vips: BTreeSet<Ipv4Addr>,
    /// `None` when mysqld did not answer.
    pub read_only: Option<bool>,
    /// VIPs the RST program answers for as parked.
    pub parked: BTreeSet<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    RemoveVip(Ipv4Addr),
    SetReadOnly(bool),
    KillSessions,
    AddVip(Ipv4Addr),
    Announce(Ipv4Addr),
    /// Answer TCP to the VIP with RST and announce it, without adding it.
    Park(Ipv4Addr),
    /// Parked no more and not taken: answered with RST until the owner's ARP (as released).
    Unpark(Ipv4Addr),
    /// Parked, yet the address is ours (added by hand): only the kernel may answer for it.
    Reclaim(Ipv4Addr),
}

/// What the agent needs to know of the config to judge and apply desired states.
#[derive(Debug, Clone)]
pub struct Scope {
    pub host: String,
    /// Every role IP in the config: the only addresses the agent ever removes.
    pub managed: BTreeSet<Ipv4Addr>,
    /// role IP -> (role, hosts allowed to hold it).
    pub roles: BTreeMap<Ipv4Addr, (String, Vec<String>)>,
    pub writer_role: String,
    /// Hosts of the writer role: the only ones ever made writable (the role may have no
    /// VIP, so this is not in `roles`).
    pub writer_hosts: Vec<String>,
}

impl Scope {
    pub fn new(config: &Config, host: &Host) -> Scope {
        let mut roles = BTreeMap::new();
        for r in &config.roles {
            for ip in &r.ips {
                roles.insert(*ip, (r.name.clone(), r.hosts.clone()));
            }
        }
        Scope {
            host: host.name.clone(),
            managed: roles.keys().copied().collect(),
            roles,
            writer_role: config.active_master_role.clone(),
            writer_hosts: config
                .role(&config.active_master_role)
                .map(|r| r.hosts.clone())
                .unwrap_or_default(),
        }
    }

    /// The writer role's VIPs.
    pub fn writer_vips(&self) -> BTreeSet<Ipv4Addr> {
        self.roles
            .iter()
            .filter(|(_, (role, _))| *role == self.writer_role)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Checks a desired state against the config; every problem is listed and nothing
    /// of a refused state is applied.
    pub fn check(&self, d: &DesiredState) -> Result<Desired, Vec<String>> {
        let mut problems = Vec::new();
        let mut vips = BTreeMap::new();
        for (role, ip) in &d.roles {
            match self.roles.get(ip) {
                None => problems.push(format!("{ip} is not an IP of any configured role")),
                Some((r, _)) if r != role => {
                    problems.push(format!("{ip} belongs to role {r}, not {role}"))
                }
                Some((_, hosts)) if !hosts.contains(&self.host) => {
                    problems.push(format!("role {role} may not be held by {}", self.host))
                }
                Some(_) => {
                    if vips.insert(*ip, role.clone()).is_some() {
                        problems.push(format!("{ip} is listed twice"));
                    }
                }
            }
        }
        let writer_vips = self.writer_vips();
        let mut parked = BTreeSet::new();
        for ip in &d.parked {
            if !writer_vips.contains(ip) {
                problems.push(format!(
                    "{ip} is parked but is not a VIP of role {}",
                    self.writer_role
                ));
            } else if !self.writer_hosts.contains(&self.host) {
                problems.push(format!(
                    "{ip} is parked, but {} is not a host of role {}",
                    self.host, self.writer_role
                ));
            } else if vips.contains_key(ip) {
                problems.push(format!("{ip} is both held and parked"));
            } else if !parked.insert(*ip) {
                problems.push(format!("{ip} is parked twice"));
            }
        }
        if d.writable && !d.parked.is_empty() {
            problems.push("parked VIPs with writable = true".to_string());
        }
        let writes = d.roles.iter().any(|(r, _)| *r == self.writer_role);
        if writes && !d.writable {
            problems.push(format!("role {} without writable = true", self.writer_role));
        }
        if d.writable && !self.writer_hosts.contains(&self.host) {
            problems.push(format!(
                "writable = true, but {} is not a host of role {}",
                self.host, self.writer_role
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Desired {
            epoch: d.epoch,
            state: d.state,
            active_master: d.active_master.clone(),
            writable: d.writable,
            vips,
            parked,
        })
    }
}

/// The ordered steps that take `observed` to `desired`.
pub fn plan(desired: &Desired, observed: &Observed, scope: &Scope) -> Vec<Step> {
    let mut steps = Vec::new();
    let writer_vips = scope.writer_vips();
    let mut removals: Vec<Ipv4Addr> = observed
        .vips
        .iter()
        .filter(|ip| scope.managed.contains(ip) && !desired.vips.contains_key(ip))
        .copied()
        .collect();
    // The writer VIP goes first: it is what lets clients write here.
    removals.sort_by_key(|ip| !writer_vips.contains(ip));
    steps.extend(removals.into_iter().map(Step::RemoveVip));
    // Parked no more: a VIP about to be added is reclaimed by its addition.
    for ip in &observed.parked {
        if desired.parked.contains(ip) {
            continue;
        }
        match (desired.vips.contains_key(ip), observed.vips.contains(ip)) {
            (false, _) => steps.push(Step::Unpark(*ip)),
            (true, true) => steps.push(Step::Reclaim(*ip)),
            (true, false) => {}
        }
    }
    if !desired.writable && observed.read_only != Some(true) {
        steps.push(Step::SetReadOnly(true));
        steps.push(Step::KillSessions);
    }
    if desired.writable && observed.read_only != Some(false) {
        steps.push(Step::SetReadOnly(false));
    }
    let mut additions: Vec<Ipv4Addr> = desired
        .vips
        .keys()
        .filter(|ip| !observed.vips.contains(ip))
        .copied()
        .collect();
    additions.sort_by_key(|ip| !writer_vips.contains(ip));
    steps.extend(additions.iter().map(|ip| Step::AddVip(*ip)));
    steps.extend(additions.into_iter().map(Step::Announce));
    steps.extend(
        desired
            .parked
            .iter()
            .filter(|ip| !observed.parked.contains(ip))
            .map(|ip| Step::Park(*ip)),
    );
    steps
}

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

/// What must happen around a VIP's address on this host, whoever adds or removes it (the
/// reconciler, or the lease's own fence): the RST program and the gratuitous ARP sender
/// must agree with the address at every moment.
#[derive(Clone)]
pub struct VipGuards {
    /// Answers clients of a VIP this host releases (None: the program could not load).
    pub rst: Option<Arc<crate::rst::Rst>>,
    /// None: no CAP_NET_RAW.
    pub garp: Option<Arc<Announcer>>,
    /// Without a writer VIP (`ips = []`): this host's address and mysql_port, which
    /// [`VipGuards::raise_host_fence`] closes to the network while a hung server may wake
    /// up writable. None when the writer role has VIPs (their removal is the fence).
    pub host: Option<(Ipv4Addr, u16)>,
    pub host_fenced: Arc<std::sync::atomic::AtomicBool>,
}

impl VipGuards {
    /// Before the address is added: the returned ticket announces it unless it is
    /// released meanwhile.
    pub fn before_add(&self, ip: Ipv4Addr) -> Option<Ticket> {
        self.garp.as_ref().map(|g| g.claim(ip))
    }

    /// Once the address is added: its packets pass to the kernel again. Not before: a SYN
    /// between the two would find neither the program nor the address and wait for its
    /// retransmission, and clients retrying on RST (a parked VIP) send one every moment.
    pub fn after_add(&self, ip: Ipv4Addr) {
        if let Some(rst) = &self.rst {
            rst.reclaim(ip);
        }
    }

    /// Before the address is removed: no announcement of it leaves any more (a burst
    /// still running stops), and its clients are answered with RST.
    pub fn before_remove(&self, ip: Ipv4Addr) {
        if let Some(garp) = &self.garp {
            garp.withdraw(ip);
        }
        if let Some(rst) = &self.rst {
            rst.release(ip);
        }
    }

    /// Parks `ip`: answered with RST from now on; the returned ticket announces it.
    /// `Ok(None)`: its owner announced it since the monitor asked; left alone.
    pub fn park(&self, ip: Ipv4Addr) -> Result<Option<Ticket>, StepError> {
        let Some(rst) = &self.rst else {
            return Err(StepError::NoRstProgram { ip });
        };
        if !rst
            .park(ip)
            .map_err(|source| StepError::Park { ip, source })?
        {
            tracing::info!(%ip, "not parked again: its owner announced it");
            return Ok(None);
        }
        match &self.garp {
            Some(g) => Ok(Some(g.claim(ip))),
            None => Err(StepError::NoArpSocket { ip: Some(ip) }),
        }
    }

    /// Parked no more: no announcement of it leaves, and it is answered as released.
    pub fn unpark(&self, ip: Ipv4Addr) {
        if let Some(garp) = &self.garp {
            garp.withdraw(ip);
        }
        if let Some(rst) = &self.rst {
            rst.unpark(ip);
        }
    }

    /// Without a writer VIP nothing stands between a hung server that may wake up
    /// writable and its clients: TCP from the network to mysql_port on this host's address
    /// is answered with RST from now on (new connections and packets of old ones), and
    /// the sessions already open are reset, so a reply the server sends when it wakes up
    /// finds no socket. Connections from this host itself (the agent's) pass. True when it
    /// holds: the RST program is loaded and took the address.
    pub fn raise_host_fence(&self) -> bool {
        use std::sync::atomic::Ordering;
        let (Some((ip, port)), Some(rst)) = (self.host, &self.rst) else {
            return false;
        };
        if self.host_fenced.load(Ordering::SeqCst) {
            return true;
        }
        if let Err(e) = rst.hold(ip) {
            tracing::error!(%ip, error = %error_chain(&e), "a hung mysqld that may wake up writable is not fenced from the network");
            return false;
        }
        self.host_fenced.store(true, Ordering::SeqCst);
        match crate::sockdiag::reset_remote_connections_to(ip, port) {
            Ok(n) => {
                tracing::warn!(%ip, port, sessions = n, "mysqld hangs and may wake up writable, and no writer VIP stands before it: TCP from the network to it is refused until it answers read-only; open sessions reset")
            }
            Err(e) => {
                tracing::error!(%ip, error = %error_chain(&e), "open sessions to a hung mysqld not reset: a reply it sends when it wakes up may reach them")
            }
        }
        true
    }

    /// The server answered read-only (or is to be the writer): its clients reach it again.
    pub fn lower_host_fence(&self) {
        let Some((ip, _)) = self.host else {
            return;
        };
        if self
            .host_fenced
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            if let Some(rst) = &self.rst {
                rst.unhold(ip);
            }
            tracing::info!(%ip, "mysqld answers read-only: TCP from the network reaches it again");
        }
    }

    pub fn host_fence_raised(&self) -> bool {
        self.host_fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What parked VIPs the RST program answers for.
    pub fn parked(&self) -> BTreeSet<Ipv4Addr> {
        self.rst.as_ref().map(|r| r.parked()).unwrap_or_default()
    }
}

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
        let read_only = match self.mysqld_exited() || !ask_server || self.grants.hung_writable() {
            true => None,
            false => self.read_only().await.map_err(|e| errors.push(e)).ok(),
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

pub use mmm_common::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn scope() -> Scope {
        let mut roles = BTreeMap::new();
        roles.insert(
            ip(100),
            (
                "writer".to_string(),
                vec!["db1".to_string(), "db2".to_string()],
            ),
        );
        for last in [101, 102] {
            roles.insert(
                ip(last),
                (
                    "reader".to_string(),
                    vec!["db1".into(), "db2".into(), "db3".into()],
                ),
            );
        }
        Scope {
            host: "db1".into(),
            managed: roles.keys().copied().collect(),
            roles,
            writer_role: "writer".into(),
            writer_hosts: vec!["db1".into(), "db2".into()],
        }
    }

    fn desired(writable: bool, vips: &[(u8, &str)]) -> Desired {
        Desired {
            epoch: 1,
            state: HostState::Online,
            active_master: "db1".into(),
            writable,
            vips: vips.iter().map(|(l, r)| (ip(*l), r.to_string())).collect(),
            parked: BTreeSet::new(),
        }
    }

    fn observed(read_only: Option<bool>, vips: &[u8]) -> Observed {
        Observed {
            vips: vips.iter().map(|l| ip(*l)).collect(),
            read_only,
            parked: BTreeSet::new(),
        }
    }

    #[test]
    fn demotion_removes_the_writer_vip_before_read_only_and_kill() {
        let steps = plan(
            &desired(false, &[(101, "reader")]),
            &observed(Some(false), &[101, 100]),
            &scope(),
        );
        assert_eq!(
            steps,
            vec![
                Step::RemoveVip(ip(100)),
                Step::SetReadOnly(true),
                Step::KillSessions
            ]
        );
    }

    #[test]
    fn promotion_goes_writable_before_taking_and_announcing_the_vip() {
        let steps = plan(
            &desired(true, &[(100, "writer"), (101, "reader")]),
            &observed(Some(true), &[101]),
            &scope(),
        );
        assert_eq!(
            steps,
            vec![
                Step::SetReadOnly(false),
                Step::AddVip(ip(100)),
                Step::Announce(ip(100))
            ]
        );
    }

    #[test]
    fn a_matching_host_gets_no_steps() {
        let d = desired(true, &[(100, "writer"), (101, "reader")]);
        assert_eq!(
            plan(&d, &observed(Some(false), &[100, 101]), &scope()),
            vec![]
        );
    }

    #[test]
    fn unmanaged_addresses_are_never_removed() {
        let steps = plan(
            &desired(false, &[]),
            &observed(Some(true), &[11, 250]),
            &scope(),
        );
        assert_eq!(steps, vec![]);
    }

    #[test]
    fn unknown_mysql_state_is_forced_read_only() {
        let steps = plan(&desired(false, &[]), &observed(None, &[]), &scope());
        assert_eq!(steps, vec![Step::SetReadOnly(true), Step::KillSessions]);
    }

    #[test]
    fn parking_is_last_and_taking_the_vip_ends_it() {
        let mut d = desired(false, &[(101, "reader")]);
        d.parked.insert(ip(100));
        // A reader losing its VIP and parking the writer's: removal first, parking last.
        assert_eq!(
            plan(&d, &observed(Some(true), &[101, 102]), &scope()),
            vec![Step::RemoveVip(ip(102)), Step::Park(ip(100))]
        );
        let mut parked = observed(Some(true), &[101]);
        parked.parked.insert(ip(100));
        assert_eq!(plan(&d, &parked, &scope()), vec![]);
        // Promoted: writable first, then the addition (which reclaims it from the RST
        // program); no separate unparking, which would answer for it with RST again.
        let promoted = desired(true, &[(100, "writer"), (101, "reader")]);
        assert_eq!(
            plan(&promoted, &parked, &scope()),
            vec![
                Step::SetReadOnly(false),
                Step::AddVip(ip(100)),
                Step::Announce(ip(100))
            ]
        );
        // The old writer came back: parked no more.
        assert_eq!(
            plan(&desired(false, &[(101, "reader")]), &parked, &scope()),
            vec![Step::Unpark(ip(100))]
        );
        // Parked while the address is ours anyway: only the kernel answers for it.
        let mut both = observed(Some(false), &[100, 101]);
        both.parked.insert(ip(100));
        assert_eq!(
            plan(&promoted, &both, &scope()),
            vec![Step::Reclaim(ip(100))]
        );
    }

    #[test]
    fn parking_is_refused_for_what_is_not_a_writer_vip_of_this_host() {
        let d = DesiredState {
            epoch: 3,
            state: HostState::Online,
            active_master: String::new(),
            writable: false,
            roles: vec![("reader".into(), ip(101))],
            parked: vec![ip(101), ip(100), ip(100)],
        };
        assert_eq!(
            scope().check(&d).unwrap_err(),
            vec![
                "10.0.0.101 is parked but is not a VIP of role writer",
                "10.0.0.100 is parked twice",
            ]
        );
        let mut db3 = scope();
        db3.host = "db3".into();
        let d = DesiredState {
            parked: vec![ip(100)],
            ..d
        };
        assert_eq!(
            db3.check(&d).unwrap_err(),
            vec!["10.0.0.100 is parked, but db3 is not a host of role writer"]
        );
        let d = DesiredState {
            roles: vec![("writer".into(), ip(100))],
            writable: true,
            ..d
        };
        assert_eq!(
            scope().check(&d).unwrap_err(),
            vec![
                "10.0.0.100 is both held and parked",
                "parked VIPs with writable = true"
            ]
        );
        assert!(scope()
            .check(&DesiredState {
                roles: vec![],
                writable: false,
                ..d
            })
            .is_ok_and(|ok| ok.parked.contains(&ip(100))));
    }

    #[test]
    fn bad_desired_states_are_refused_whole() {
        let d = DesiredState {
            epoch: 3,
            state: HostState::Online,
            active_master: "db1".into(),
            writable: false,
            roles: vec![
                ("reader".into(), ip(101)),
                ("writer".into(), ip(100)),
                ("reader".into(), ip(77)),
                ("writer".into(), ip(102)),
            ],
            parked: vec![],
        };
        let problems = scope().check(&d).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "10.0.0.77 is not an IP of any configured role",
                "10.0.0.102 belongs to role reader, not writer",
                "role writer without writable = true",
            ]
        );
        let mut db3 = scope();
        db3.host = "db3".into();
        let d = DesiredState {
            roles: vec![("writer".into(), ip(100))],
            writable: true,
            ..d
        };
        assert_eq!(
            db3.check(&d).unwrap_err(),
            vec![
                "role writer may not be held by db3",
                "writable = true, but db3 is not a host of role writer"
            ]
        );
        // A writer role without a VIP: writable alone, still only on its hosts.
        let d = DesiredState {
            roles: vec![],
            writable: true,
            ..d
        };
        assert_eq!(
            db3.check(&d).unwrap_err(),
            vec!["writable = true, but db3 is not a host of role writer"]
        );
        assert!(scope()
            .check(&d)
            .is_ok_and(|ok| ok.writable && ok.vips.is_empty()));
    }
}
