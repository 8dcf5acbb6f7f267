//! Scenario and property tests of the decision logic. `Sim` plays the agents' part the
//! way real agents behave (apply desired states, answer actions, demote themselves when
//! the lease runs out) so that whole failovers run without sockets.

use super::*;
use crate::control::command::CheckSelector;
use mmm_common::proto::{ActionOutcome, StatusReport};
use mmm_common::types::MonitorMode;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

const TICK: Millis = 50;

/// A cluster fenced as the daemon's seat would fence it: a fleet's leader with the
/// agents' etcd leases, a monitor alone with the lease its heartbeats renew.
fn cluster(config: Arc<Config>, now: Millis) -> Cluster {
    let fencing = if config.coordination.is_some() {
        FencingMethod::in_fleet(config.agent.fencing)
    } else {
        FencingMethod::alone(config.agent.fencing)
    };
    Cluster::new(config, fencing, now)
}

fn config(extra: &[(&str, &str)]) -> Arc<Config> {
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/lab.toml"))
            .unwrap();
    for (from, to) in extra {
        assert!(text.contains(from), "lab.toml lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    Arc::new(Config::parse(&text, Path::new("lab.toml")).unwrap())
}

#[derive(Debug, Clone)]
struct SimHost {
    /// The monitor can reach the host (and the host the monitor).
    reachable: bool,
    mysql_alive: bool,
    writable: bool,
    vips: BTreeSet<Ipv4Addr>,
    /// VIPs its agent parks (answered with RST, announced, not added).
    parked: BTreeSet<Ipv4Addr>,
    /// Parkings an owner's announcement ended: not parked again while the monitor asks.
    owner_announced: BTreeSet<Ipv4Addr>,
    /// Monitor dropped the connection (Disconnect): no heartbeats until it reconnects.
    disconnected: bool,
    /// Held down (Isolate): nothing reaches the agent until Release.
    isolated: bool,
    last_heartbeat: Millis,
    reported_unreachable: bool,
    self_fenced: bool,
    applied: u32,
    gtid: String,
    source: Option<(Ipv4Addr, u16)>,
    replicating: bool,
    rep_threads: bool,
    rep_backlog: bool,
    catch_up: ActionOutcome,
    uptime_s: u32,
    /// In a fleet: the agent reaches etcd (renews its own lease), and since when not.
    etcd_ok: bool,
    etcd_cut_at: Millis,
}

struct Sim {
    c: Cluster,
    now: Millis,
    hosts: BTreeMap<String, SimHost>,
    queue: VecDeque<Event>,
    log: Vec<(Millis, CoreAction)>,
    replies: BTreeMap<u64, String>,
    persisted: Option<status::StatusRecord>,
    writer_vip: Ipv4Addr,
    next_reply: u64,
    /// Hosts whose desired states were sent while writable, for the fencing invariant.
    writable_since: BTreeMap<String, Millis>,
    /// When the last Tick was handled: next_deadline is asked what comes after it.
    last_tick: Millis,
    /// In a fleet (`[coordination]`): agents hold their own etcd leases.
    fleet: bool,
    /// EndLease in progress: (when the lease is over, host, report it to the core).
    lease_ends: Vec<(Millis, String, bool)>,
    /// The monitor's own network is down: it reaches no host and no ping_ip (the network
    /// guard), while the hosts go on among themselves.
    monitor_cut: bool,
    /// The last desired state each link was given: the link re-sends it every
    /// REASSERT_MS, as the daemon's links do.
    link_desired: BTreeMap<String, DesiredState>,
}

/// The daemon's links re-send the last desired state this often (daemon/links.rs).
const REASSERT_MS: Millis = 2000;

impl Sim {
    fn new(config: Arc<Config>) -> Sim {
        // A writer role without a VIP (ips = []) gets an address nobody holds.
        let writer_vip = config
            .role("writer")
            .unwrap()
            .ips
            .first()
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    SimHost {
                        reachable: true,
                        mysql_alive: true,
                        writable: false,
                        vips: BTreeSet::new(),
                        parked: BTreeSet::new(),
                        owner_announced: BTreeSet::new(),
                        disconnected: false,
                        isolated: false,
                        last_heartbeat: 1_000_000,
                        reported_unreachable: false,
                        self_fenced: false,
                        applied: 0,
                        gtid: "0-1-100".into(),
                        source: None,
                        replicating: false,
                        rep_threads: true,
                        rep_backlog: true,
                        catch_up: ActionOutcome::Ok,
                        uptime_s: 10_000,
                        etcd_ok: true,
                        etcd_cut_at: 0,
                    },
                )
            })
            .collect();
        Sim {
            now: 1_000_000,
            hosts,
            queue: VecDeque::new(),
            log: Vec::new(),
            replies: BTreeMap::new(),
            persisted: None,
            writer_vip,
            next_reply: 1,
            writable_since: BTreeMap::new(),
            last_tick: 0,
            fleet: config.coordination.is_some(),
            lease_ends: Vec::new(),
            monitor_cut: false,
            link_desired: BTreeMap::new(),
            c: cluster(config, 1_000_000),
        }
    }

    /// The session TTL: an agent's etcd lease.
    fn ttl(&self) -> Millis {
        self.c
            .config
            .coordination
            .as_ref()
            .map_or(0, |c| c.session_ttl.as_millis() as u64)
    }

    /// An agent cut from etcd has no writer permit once its lease could have expired.
    fn etcd_permit(&self, name: &str) -> bool {
        let h = &self.hosts[name];
        !self.fleet || h.etcd_ok || self.now.saturating_sub(h.etcd_cut_at) < self.ttl()
    }

    /// The agent gives the writer up (VIP first, then read_only), as its lease task does.
    fn self_fence(&mut self, name: &str) {
        let writer_vip = self.writer_vip;
        let h = self.hosts.get_mut(name).unwrap();
        if h.writable || h.vips.contains(&writer_vip) {
            h.writable = false;
            h.vips.remove(&writer_vip);
            h.self_fenced = true;
            h.applied = 0;
        }
    }

    /// Another monitor of the fleet is elected: it resumes from the stored status and
    /// the agents' reports. The old leader's pending work dies with it (agents refuse
    /// its term); a revoke it already made still ends that agent's permit.
    fn new_leader(&mut self) {
        let config = self.c.config.clone();
        let mut c = cluster(config, self.now);
        if let Some(r) = &self.persisted {
            c.restore(r)
                .expect("the record the last leader wrote restores");
        }
        self.c = c;
        self.queue.clear();
        for e in &mut self.lease_ends {
            e.2 = false;
        }
        for h in self.hosts.values_mut() {
            h.disconnected = false;
            h.isolated = false;
            h.reported_unreachable = false;
        }
        let reports: Vec<(String, AgentView)> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.reachable)
            .map(|(n, _)| (n.clone(), self.view(n)))
            .collect();
        let actions = self.c.startup(self.now, &reports);
        for a in actions {
            self.apply(a);
        }
        self.drain();
    }

    /// A cluster of db1 (writer), db2, db3 all ONLINE with roles distributed.
    fn online(config: Arc<Config>) -> Sim {
        let mut s = Sim::new(config);
        s.tick(TICK);
        for h in ["db1", "db2", "db3"] {
            let r = s.command(ControlCommand::SetOnline { host: h.into() });
            assert!(r.starts_with("OK: State of"), "{r}");
        }
        s.settle();
        assert_eq!(s.c.active_master(), Some("db1"));
        assert_eq!(s.writable_hosts(), vec!["db1".to_string()]);
        s.log.clear();
        s
    }

    fn view(&self, name: &str) -> AgentView {
        let h = &self.hosts[name];
        AgentView {
            applied_epoch: h.applied,
            uptime_s: h.uptime_s,
            mysql_up: h.mysql_alive,
            read_only: !h.writable,
            self_fenced: h.self_fenced,
            held_vips: h.vips.iter().copied().collect(),
            source: h.source,
            replicating: h.replicating && h.mysql_alive,
            io_running: h.replicating && h.mysql_alive,
            probe: proto::ProbeState::Off,
        }
    }

    fn event(&mut self, e: Event) {
        self.queue.push_back(e);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(e) = self.queue.pop_front() {
            let tick = e == Event::Tick;
            let announced = self.c.next_deadline();
            let actions = self.c.handle(self.now, e);
            // The daemon ticks only at next_deadline: a Tick that acts must have been
            // announced, or the daemon would act late.
            if tick {
                assert!(
                    actions.is_empty() || announced.is_some_and(|d| d <= self.now),
                    "a Tick at {} acted, but next_deadline({}) said {announced:?}: {actions:#?}",
                    self.now,
                    self.last_tick
                );
                self.last_tick = self.now;
            }
            for a in actions {
                self.apply(a);
            }
            self.check_invariants();
        }
    }

    /// The agent side of a desired state reaching `host` (sent now, or re-sent).
    fn deliver(&mut self, host: String, desired: DesiredState) {
        let permit = self.etcd_permit(&host);
        let writer_vip = self.writer_vip;
        let cut = self.monitor_cut;
        let h = self.hosts.get_mut(&host).unwrap();
        if !h.reachable || cut || h.isolated {
            return;
        }
        h.disconnected = false;
        h.self_fenced = false;
        // Demotion order: VIPs first, then read_only; promotion: writable first.
        h.vips = desired.roles.iter().map(|(_, ip)| *ip).collect();
        h.writable = desired.writable && h.mysql_alive;
        if !permit {
            // No writer permit (the agent's etcd lease is gone): no writer bits, and the
            // agent reports itself self-fenced while it is asked for them.
            if desired.writable || h.vips.contains(&writer_vip) {
                h.self_fenced = true;
            }
            h.writable = false;
            h.vips.remove(&writer_vip);
        }
        let asked: BTreeSet<Ipv4Addr> = desired.parked.iter().copied().collect();
        h.owner_announced.retain(|ip| asked.contains(ip));
        h.parked = asked.difference(&h.owner_announced).copied().collect();
        let announced: Vec<Ipv4Addr> = h.vips.iter().copied().collect();
        h.applied = desired.epoch;
        h.last_heartbeat = self.now;
        let failures = if desired.writable && !h.mysql_alive {
            vec!["setting read_only = 0: mysqld is down".to_string()]
        } else {
            vec![]
        };
        // An owner's gratuitous ARP ends parking elsewhere (the RST program sees it).
        for (name, other) in self.hosts.iter_mut() {
            if *name != host {
                for ip in &announced {
                    if other.parked.remove(ip) {
                        other.owner_announced.insert(*ip);
                    }
                }
            }
        }
        // Since when: a re-sent writable state is no new promotion.
        if desired.writable {
            self.writable_since.entry(host.clone()).or_insert(self.now);
        }
        self.queue.push_back(Event::Applied {
            host: host.clone(),
            epoch: desired.epoch,
            failures,
        });
        let view = self.view(&host);
        self.queue.push_back(Event::AgentHeartbeat { host, view });
    }

    fn apply(&mut self, a: CoreAction) {
        self.log.push((self.now, a.clone()));
        let lease = self.c.config.agent.lease.as_millis() as u64;
        match a {
            CoreAction::SendDesired { host, desired } => {
                self.link_desired.insert(host.clone(), desired.clone());
                self.deliver(host, desired);
            }
            CoreAction::AgentAction {
                host, id, action, ..
            } => {
                let cut = self.monitor_cut;
                if let proto::Action::StopIoThread { source } = &action {
                    self.check_io_thread_stop(&host, *source);
                }
                let h = self.hosts.get_mut(&host).unwrap();
                if !h.reachable || cut {
                    return;
                }
                let (outcome, detail) = match &action {
                    proto::Action::CatchUp { .. } => (h.catch_up, "catch-up".to_string()),
                    proto::Action::ChangeMaster { host: ip, port, .. } => {
                        h.source = Some((*ip, *port));
                        h.replicating = true;
                        (ActionOutcome::Ok, "repointed".into())
                    }
                    proto::Action::StopReplication | proto::Action::StopIoThread { .. } => {
                        h.replicating = false;
                        (ActionOutcome::Ok, "stopped".into())
                    }
                    proto::Action::StartReplication => {
                        h.replicating = h.source.is_some();
                        (ActionOutcome::Ok, "started".into())
                    }
                    _ => (ActionOutcome::Ok, "done".into()),
                };
                self.queue.push_back(Event::ActionDone {
                    host,
                    id,
                    outcome,
                    detail,
                    position: None,
                });
            }
            CoreAction::QueryStatus { host } => {
                let h = &self.hosts[&host];
                if !h.reachable || self.monitor_cut {
                    return;
                }
                let report = StatusReport {
                    applied_epoch: h.applied,
                    uptime_s: h.uptime_s,
                    server: proto::ServerKind::MariaDb,
                    mysql_up: h.mysql_alive,
                    read_only: !h.writable,
                    held_vips: h.vips.iter().copied().collect(),
                    replication: None,
                    gtid_executed: h.gtid.clone(),
                    gtid_unreadable: String::new(),
                    binlog: None,
                    probe: proto::ProbeState::Watching,
                    fenced_reason: String::new(),
                };
                self.queue.push_back(Event::AgentStatus { host, report });
            }
            CoreAction::Disconnect { host } => {
                let h = self.hosts.get_mut(&host).unwrap();
                h.disconnected = true;
                h.isolated = false;
            }
            CoreAction::Isolate { host } => {
                let h = self.hosts.get_mut(&host).unwrap();
                h.disconnected = true;
                h.isolated = true;
            }
            CoreAction::Release { host } => {
                let h = self.hosts.get_mut(&host).unwrap();
                h.disconnected = false;
                h.isolated = false;
            }
            CoreAction::KillHost { host, .. } => {
                let h = self.hosts.get_mut(&host).unwrap();
                h.mysql_alive = false;
                h.writable = false;
                h.vips.clear();
                self.queue.push_back(Event::KillHostDone {
                    host,
                    ok: true,
                    output: String::new(),
                });
            }
            CoreAction::EndLease { host } => {
                assert!(self.fleet, "EndLease without a fleet");
                // Waited out or revoked: either way the permit is over a TTL from now.
                let at = self.now + self.ttl();
                self.lease_ends.push((at, host, true));
            }
            CoreAction::Persist(r) => self.persisted = Some(r),
            CoreAction::Reply { id, text } => {
                self.replies.insert(id, text);
            }
            CoreAction::Notify { .. } => {}
        }
        let _ = lease;
    }

    /// Time passes: agents hear heartbeats (or their lease runs out), checks report.
    fn tick(&mut self, dt: Millis) {
        let reassert = (self.now + dt) / REASSERT_MS != self.now / REASSERT_MS;
        self.now += dt;
        if reassert {
            for (host, desired) in self.link_desired.clone() {
                let h = &self.hosts[&host];
                if !h.disconnected {
                    self.deliver(host, desired);
                }
            }
        }
        let lease = self.c.config.agent.lease.as_millis() as u64;
        let agent_timeout = self.c.config.monitor.agent_timeout.as_millis() as u64;
        let writer_vip = self.writer_vip;
        let cut = self.monitor_cut;
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for name in &names {
            let h = self.hosts.get_mut(name).unwrap();
            // A dead mysqld's replication threads are gone; a restarted one (skip-slave-start)
            // keeps its source but does not start them.
            if !h.mysql_alive {
                h.replicating = false;
            }
            if h.reachable && !cut && !h.disconnected {
                h.last_heartbeat = self.now;
                h.reported_unreachable = false;
                let view = self.view(name);
                self.queue.push_back(Event::AgentHeartbeat {
                    host: name.clone(),
                    view,
                });
            } else {
                // Without a fleet the monitor's heartbeats are the lease.
                if !self.fleet
                    && self.now - h.last_heartbeat > lease
                    && (h.writable || h.vips.contains(&writer_vip))
                {
                    h.writable = false;
                    h.vips.remove(&writer_vip);
                    h.self_fenced = true;
                    h.applied = 0;
                }
                if self.now - h.last_heartbeat > agent_timeout && !h.reported_unreachable {
                    h.reported_unreachable = true;
                    self.queue.push_back(Event::AgentUnreachable {
                        host: name.clone(),
                        reason: "no heartbeat answer".into(),
                        last_heard: Some(h.last_heartbeat),
                    });
                }
            }
            let h = &self.hosts[name];
            let (ping, mysql) = if !h.reachable || cut {
                (
                    CheckResult::Failed {
                        message: "timeout".into(),
                        refused: false,
                    },
                    CheckResult::Failed {
                        message: "timeout".into(),
                        refused: false,
                    },
                )
            } else if !h.mysql_alive {
                (
                    CheckResult::Ok,
                    CheckResult::Failed {
                        message: "Connection refused".into(),
                        refused: true,
                    },
                )
            } else {
                (CheckResult::Ok, CheckResult::Ok)
            };
            let rt = if h.rep_threads || !h.reachable || cut || !h.mysql_alive {
                CheckResult::Ok
            } else {
                CheckResult::Failed {
                    message: "IO thread not running".into(),
                    refused: false,
                }
            };
            let rb = if h.rep_backlog || !h.reachable || cut || !h.mysql_alive {
                CheckResult::Ok
            } else {
                CheckResult::Failed {
                    message: "behind master: 120s".into(),
                    refused: false,
                }
            };
            for (check, result) in [
                (CheckKind::Ping, ping),
                (CheckKind::Mysql, mysql),
                (CheckKind::RepThreads, rt),
                (CheckKind::RepBacklog, rb),
            ] {
                self.queue.push_back(Event::Check {
                    host: name.clone(),
                    check,
                    result,
                    started: self.now,
                });
            }
        }
        if self.fleet {
            for name in &names {
                if !self.etcd_permit(name) {
                    self.self_fence(name);
                }
            }
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) =
                self.lease_ends.drain(..).partition(|(at, _, _)| *at <= now);
            self.lease_ends = later;
            for (_, host, report) in due {
                self.self_fence(&host);
                if report {
                    self.queue.push_back(Event::LeaseEnded { host });
                }
            }
        }
        self.queue.push_back(Event::Tick);
        self.drain();
    }

    fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        while self.now < end {
            self.tick(TICK);
        }
    }

    /// Runs until no promotion is under way (bounded).
    fn settle(&mut self) {
        for _ in 0..400 {
            self.tick(TICK);
            if self.c.promotion.is_none() {
                self.tick(TICK);
                return;
            }
        }
        panic!("promotion did not finish: {:?}", self.c.promotion);
    }

    fn command(&mut self, command: ControlCommand) -> String {
        let id = self.next_reply;
        self.next_reply += 1;
        self.event(Event::Command { reply: id, command });
        self.replies.get(&id).cloned().unwrap_or_default()
    }

    fn state(&self, host: &str) -> HostState {
        self.c.host(host).unwrap().state
    }

    fn writable_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.writable)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn vip_holders(&self, ip: Ipv4Addr) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.vips.contains(&ip))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Position in the log of the first action matching `f`, after `from`.
    fn find(&self, from: usize, f: impl Fn(&CoreAction) -> bool) -> Option<usize> {
        self.log
            .iter()
            .skip(from)
            .position(|(_, a)| f(a))
            .map(|i| i + from)
    }

    /// Semi-sync falls back to async once no replica receives: a master that may still
    /// commit then acknowledges writes that no replica has, lost at the failover. So no
    /// reachable replica's IO thread stops while its master is writable.
    fn check_io_thread_stop(&self, replica: &str, source: Ipv4Addr) {
        if !self.hosts[replica].reachable || self.monitor_cut {
            return;
        }
        let Some(m) = self.c.config.hosts.iter().find(|c| c.ip == source) else {
            return;
        };
        let master = &self.hosts[&m.name];
        assert!(
            !(master.writable && master.mysql_alive),
            "{replica}'s IO thread stopped while {} may still commit\n{:#?}",
            m.name,
            self.log.iter().rev().take(30).collect::<Vec<_>>()
        );
    }

    fn check_invariants(&self) {
        // Never two writable servers, never the writer VIP on two hosts.
        assert!(
            self.writable_hosts().len() <= 1,
            "two writable masters: {:?}\n{:#?}",
            self.writable_hosts(),
            self.log.iter().rev().take(20).collect::<Vec<_>>()
        );
        assert!(
            self.vip_holders(self.writer_vip).len() <= 1,
            "writer VIP on {:?}",
            self.vip_holders(self.writer_vip)
        );
        // The writer VIP is parked only where nothing writes, and never while a host holds
        // it: parking answers for a writer that is gone, it never competes with one.
        for (name, h) in &self.hosts {
            if h.parked.contains(&self.writer_vip) {
                assert!(!h.writable, "{name} parks the writer VIP and is writable");
                assert!(
                    self.vip_holders(self.writer_vip).is_empty(),
                    "{name} parks the writer VIP while {:?} hold it\n{:#?}",
                    self.vip_holders(self.writer_vip),
                    self.log.iter().rev().take(30).collect::<Vec<_>>()
                );
            }
        }
        // The writer role on at most one host, and roles only where they may be.
        let writers = self
            .c
            .roles
            .ips()
            .iter()
            .filter(|r| r.role == self.c.roles.writer_role() && r.holder.is_some())
            .count();
        assert!(writers <= 1);
        if self.c.mode.get() == MonitorMode::Active {
            for r in self.c.roles.ips() {
                if let Some(h) = &r.holder {
                    let state = self.state(h);
                    assert!(
                        state == HostState::Online,
                        "role {} on {h} which is {state}",
                        r.label()
                    );
                }
            }
        }
    }
}

fn is_desired(a: &CoreAction, host: &str, writable: bool) -> bool {
    matches!(a, CoreAction::SendDesired { host: h, desired } if h == host && desired.writable == writable)
}

fn is_agent_action(a: &CoreAction, host: &str, pred: impl Fn(&proto::Action) -> bool) -> bool {
    matches!(a, CoreAction::AgentAction { host: h, action, .. } if h == host && pred(action))
}

#[test]
fn distribution_at_start_follows_mmm() {
    let s = Sim::online(config(&[]));
    // writer on the preferred db1, readers balanced one each.
    assert_eq!(
        s.c.roles.host_role_labels("db1"),
        ["reader(192.0.2.103)", "writer(192.0.2.100)"]
    );
    assert_eq!(s.c.roles.host_role_labels("db2"), ["reader(192.0.2.101)"]);
    assert_eq!(s.c.roles.host_role_labels("db3"), ["reader(192.0.2.102)"]);
    let show = s.c.show(s.now);
    assert!(
        show.contains(
            "  db1(192.0.2.11) master/ONLINE. Roles: reader(192.0.2.103), writer(192.0.2.100)\n"
        ),
        "{show}"
    );
    assert!(
        show.contains("  db3(192.0.2.13) slave/ONLINE. Roles: reader(192.0.2.102)\n"),
        "{show}"
    );
    assert!(
        show.contains("# Role writer is assigned to it's preferred host db1."),
        "{show}"
    );
}

#[test]
fn mysqld_stopped_on_the_active_master_fails_over_at_once_in_safe_order() {
    let mut s = Sim::online(config(&[]));
    let t0 = s.now;
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.tick(TICK);
    // Refused while the agent answers: definitive, no trap_period (1 s in lab.toml).
    assert_eq!(s.state("db1"), HostState::HardOffline);
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.writable_hosts(), vec!["db2".to_string()]);
    assert!(
        s.now - t0 < 1000,
        "took {} ms of simulated time",
        s.now - t0
    );
    // Order: db1 demoted, db2 caught up, replication stopped, then writable, then slaves.
    let demote = s
        .find(0, |a| is_desired(a, "db1", false))
        .expect("db1 demoted");
    let catch_up = s
        .find(demote, |a| {
            is_agent_action(a, "db2", |x| matches!(x, proto::Action::CatchUp { .. }))
        })
        .expect("catch-up");
    let stop = s
        .find(catch_up, |a| {
            is_agent_action(a, "db2", |x| matches!(x, proto::Action::StopReplication))
        })
        .expect("stop");
    let promote = s
        .find(stop, |a| is_desired(a, "db2", true))
        .expect("promote");
    // The slave follows the candidate before it is writable (GTID: from what it applied),
    // so the first semi-sync commit on db2 finds a replica connected.
    let repoint = s.find(stop, |a| is_agent_action(a, "db3", |x| matches!(x, proto::Action::ChangeMaster { host, .. } if *host == Ipv4Addr::new(192, 0, 2, 12)))).expect("db3 repointed");
    assert!(demote < catch_up && catch_up < stop && stop < repoint && repoint < promote);
    // db3's IO thread, retrying a dead master, was stopped at once (a quick re-point later).
    let stop_io = s
        .find(0, |a| {
            is_agent_action(a, "db3", |x| {
                matches!(x, proto::Action::StopIoThread { .. })
            })
        })
        .expect("db3's IO thread stopped");
    assert!(stop_io < promote);
    // So was the candidate's, before its catch-up: a STOP of a semi-sync IO thread whose
    // master is gone can take seconds, and overlaps fencing this way.
    let candidate_io = s
        .find(0, |a| {
            is_agent_action(a, "db2", |x| {
                matches!(x, proto::Action::StopIoThread { .. })
            })
        })
        .expect("db2's IO thread stopped");
    assert!(candidate_io < catch_up);
    // The reader db1 had moved too, and db3 replicates from db2.
    assert!(s.c.roles.host_roles("db1").is_empty());
    assert_eq!(
        s.hosts["db3"].source,
        Some((Ipv4Addr::new(192, 0, 2, 12), 3306))
    );
}

#[test]
fn probe_event_is_definitive_evidence() {
    let mut s = Sim::online(config(&[]));
    s.event(Event::Probe {
        host: "db1".into(),
        kind: ProbeEventKind::ProcessExit,
    });
    assert_eq!(
        s.state("db1"),
        HostState::HardOffline,
        "no trap_period for a probe event"
    );
    let show = s.c.checks(Some("db1"), Some(CheckKind::Mysql)).unwrap();
    assert!(
        show.contains("ERROR: mysqld process exited (probe)"),
        "{show}"
    );
}

#[test]
fn ambiguous_failures_wait_trap_period_and_overload_is_not_death() {
    let mut s = Sim::online(config(&[]));
    for _ in 0..10 {
        s.event(Event::Check {
            host: "db3".into(),
            check: CheckKind::Mysql,
            result: CheckResult::Unknown {
                message: "Too many connections (1040)".into(),
            },
            started: s.now,
        });
    }
    assert_eq!(s.state("db3"), HostState::Online, "1040 is alive");
    // A hung db3: checks time out; ONLINE until trap_period (1 s) has passed.
    s.event(Event::Check {
        host: "db3".into(),
        check: CheckKind::Mysql,
        result: CheckResult::Failed {
            message: "timeout".into(),
            refused: false,
        },
        started: s.now,
    });
    // The monitor goes on hearing the other hosts meanwhile (a longer quiet would be its
    // own stall).
    for _ in 0..9 {
        s.now += 100;
        s.event(Event::Tick);
    }
    assert_eq!(s.state("db3"), HostState::Online);
    s.now += 200;
    s.event(Event::Tick);
    assert_eq!(s.state("db3"), HostState::HardOffline);
}

#[test]
fn lost_master_is_replaced_only_after_its_lease() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db1").unwrap().reachable = false;
    let t0 = s.now;
    let mut promoted_at = None;
    for _ in 0..200 {
        s.tick(TICK);
        if promoted_at.is_none() && s.c.active_master() == Some("db2") {
            promoted_at = Some(s.now);
        }
    }
    let promoted_at = promoted_at.expect("db2 promoted");
    let lease = s.c.config.agent.lease.as_millis() as u64;
    // From the first moment the link stopped renewing db1's lease.
    let disconnect = s
        .log
        .iter()
        .find(|(_, a)| {
            matches!(a, CoreAction::Disconnect { host } | CoreAction::Isolate { host } if host == "db1")
        })
        .map(|(t, _)| *t)
        .expect("db1 disconnected");
    let writable_at = s.writable_since["db2"];
    assert!(
        writable_at >= disconnect + lease,
        "db2 writable at {writable_at}, db1's lease ran until {}",
        disconnect + lease
    );
    assert!(promoted_at > t0);
    // The link comes back: db1 fenced itself and never takes the writer back.
    s.hosts.get_mut("db1").unwrap().reachable = true;
    s.run_for(3000);
    assert!(!s.hosts["db1"].writable && !s.hosts["db1"].vips.contains(&s.writer_vip));
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.state("db1"), HostState::AwaitingRecovery);
}

#[test]
fn a_silent_writers_lease_runs_during_trap_period() {
    let mut s = Sim::online(config(&[]));
    let (lease, trap) = (
        s.c.config.agent.lease.as_millis() as u64,
        s.c.config.checks.ping.trap_period.as_millis() as u64,
    );
    s.hosts.get_mut("db1").unwrap().reachable = false;
    let t0 = s.now;
    s.run_for(4000);
    assert_eq!(s.c.active_master(), Some("db2"));
    let isolated = s
        .log
        .iter()
        .find(|(_, a)| matches!(a, CoreAction::Isolate { host } if host == "db1"))
        .map(|(t, _)| *t)
        .expect("db1's link held down once its agent and ping were silent");
    let writable_at = s.writable_since["db2"];
    assert!(
        writable_at >= isolated + lease,
        "db2 writable before db1's lease ran out"
    );
    // Overlapped: not trap_period and then a whole lease on top of it.
    assert!(
        writable_at < t0 + trap + lease,
        "db2 writable at +{} ms: the lease did not overlap trap_period ({trap} ms) at all",
        writable_at - t0
    );
}

/// Time passes in the simulator's ticks up to exactly `t` (a monitor that hears nothing
/// for longer takes itself for stalled).
fn advance_to(s: &mut Sim, t: Millis) {
    while s.now + TICK < t {
        s.tick(TICK);
    }
    if t > s.now {
        s.tick(t - s.now);
    }
}

/// The writer's agent falls silent at `heard`; its silence is noticed agent_timeout later,
/// and its first failed ping (a timeout) is reported later still.
fn writer_falls_silent(s: &mut Sim) -> (Millis, Millis) {
    let trap = s.c.config.checks.ping.trap_period.as_millis() as u64;
    let agent_timeout = s.c.config.monitor.agent_timeout.as_millis() as u64;
    let heard = s.now;
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.now = heard + agent_timeout;
    s.event(Event::AgentUnreachable {
        host: "db1".into(),
        reason: "no heartbeat answer".into(),
        last_heard: Some(heard),
    });
    assert!(
        s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::Isolate { host } if host == "db1")),
        "db1 silent everywhere for agent_timeout: held down at once"
    );
    s.now = heard + agent_timeout + 200;
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Failed {
            message: "no echo reply within 500ms".into(),
            refused: false,
        },
        started: heard + 1,
    });
    (heard, trap)
}

#[test]
fn a_writer_silent_everywhere_fails_trap_period_after_it_was_last_heard() {
    let mut s = Sim::online(config(&[]));
    let (heard, trap) = writer_falls_silent(&mut s);
    // db2 parks the VIP once db1's agent gave the writer up by its lease (and a ping failed).
    let c = s.c.config.clone();
    let lease = c.agent.lease - mmm_common::types::lease_margin(c.agent.lease);
    let parked = heard + (c.monitor.agent_timeout + lease).as_millis() as u64;
    assert_eq!(s.c.next_deadline(), Some(parked));
    advance_to(&mut s, parked);
    // Its replicas stop their IO threads once its lease is over by the monitor's count
    // (held at agent_timeout, plus lease + heartbeat_interval), not before.
    let over = heard
        + (c.monitor.agent_timeout + c.agent.lease + c.monitor.heartbeat_interval).as_millis()
            as u64;
    assert_eq!(s.c.next_deadline(), Some(over));
    let before = s.log.len();
    advance_to(&mut s, over);
    for r in ["db2", "db3"] {
        assert!(
            s.log[before..]
                .iter()
                .any(|(_, a)| is_agent_action(a, r, |x| matches!(
                    x,
                    proto::Action::StopIoThread { .. }
                ))),
            "{r}'s IO thread stopped once db1's lease is over"
        );
    }
    assert_eq!(
        s.c.next_deadline(),
        Some(heard + trap),
        "the trap counts from when db1 was last heard, and a Tick is announced for it"
    );
    advance_to(&mut s, heard + trap - 1);
    assert_eq!(s.state("db1"), HostState::Online, "not before trap_period");
    advance_to(&mut s, heard + trap);
    assert_eq!(s.state("db1"), HostState::HardOffline);
}

fn parked_on(s: &Sim, from: usize) -> Vec<(String, Vec<Ipv4Addr>)> {
    s.log
        .iter()
        .skip(from)
        .filter_map(|(_, a)| match a {
            CoreAction::SendDesired { host, desired } => {
                Some((host.clone(), desired.parked.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_vanished_writers_successor_parks_the_vip_once_its_lease_ran_out_until_it_takes_it() {
    let mut s = Sim::online(config(&[("trap_period = \"1s\"", "trap_period = \"3s\"")]));
    let agent_timeout = s.c.config.monitor.agent_timeout.as_millis() as u64;
    let lease = s.c.config.agent.lease;
    let gives_up = (lease - mmm_common::types::lease_margin(lease)).as_millis() as u64;
    let (heard, _) = writer_falls_silent(&mut s);
    // db1's agent gives the writer up at its own deadline, not the promotion's bound.
    let due = heard + agent_timeout + gives_up;
    let before = s.log.len();
    advance_to(&mut s, due - 1);
    assert!(
        parked_on(&s, before).iter().all(|(_, p)| p.is_empty()),
        "parked before db1's lease surely ran out"
    );
    // Announced to the daemon's timer, decided by the Tick at that moment.
    assert_eq!(s.c.next_deadline(), Some(due));
    advance_to(&mut s, due);
    let vip = s.writer_vip;
    assert_eq!(parked_on(&s, before), vec![("db2".to_string(), vec![vip])]);
    assert!(
        !s.hosts["db1"].vips.contains(&vip) && !s.hosts["db1"].writable,
        "db1 gave the writer up first"
    );
    assert!(s.hosts["db2"].parked.contains(&vip) && !s.hosts["db2"].writable);
    assert_eq!(s.c.active_master(), Some("db1"), "parking is no failover");
    // trap_period fails db1; db2 stays parked through the promotion until it takes the
    // VIP (check_invariants: never parked while a host holds it).
    advance_to(&mut s, heard + 3000 + 2000);
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.vip_holders(vip), vec!["db2".to_string()]);
    assert!(s.hosts.values().all(|h| h.parked.is_empty()));
    assert!(
        s.log.iter().any(|(_, a)| matches!(a, CoreAction::Notify { message, .. } if message.starts_with("Writer VIP 192.0.2.100 parked on 'db2'"))),
        "parking is told"
    );
}

#[test]
fn a_writer_that_answers_again_unparks_the_vip() {
    let mut s = Sim::online(config(&[("trap_period = \"1s\"", "trap_period = \"3s\"")]));
    let agent_timeout = s.c.config.monitor.agent_timeout.as_millis() as u64;
    let lease = s.c.config.agent.lease.as_millis() as u64;
    let heartbeat = s.c.config.monitor.heartbeat_interval.as_millis() as u64;
    let (heard, _) = writer_falls_silent(&mut s);
    advance_to(&mut s, heard + agent_timeout + lease + heartbeat + 100);
    let vip = s.writer_vip;
    assert!(s.hosts["db2"].parked.contains(&vip));
    let before = s.log.len();
    s.hosts.get_mut("db1").unwrap().reachable = true;
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Ok,
        started: s.now,
    });
    assert!(
        parked_on(&s, before).contains(&("db2".to_string(), vec![])),
        "db1 answers again: db2 unparked"
    );
    assert!(s.hosts["db2"].parked.is_empty());
    s.settle();
    assert_eq!(
        s.c.active_master(),
        Some("db1"),
        "a blip shorter than trap_period"
    );
}

#[test]
fn a_late_answer_to_an_old_ping_neither_releases_nor_clears_a_silent_writer() {
    let mut s = Sim::online(config(&[]));
    let (heard, trap) = writer_falls_silent(&mut s);
    // An attempt from before the silence, answered late (overlapping pings).
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Ok,
        started: heard - 10,
    });
    assert!(!s
        .log
        .iter()
        .any(|(_, a)| matches!(a, CoreAction::Release { .. })));
    advance_to(&mut s, heard + trap);
    assert_eq!(s.state("db1"), HostState::HardOffline);
}

#[test]
fn a_ping_sent_after_the_hold_releases_the_writer_before_its_trap() {
    let mut s = Sim::online(config(&[]));
    let (heard, trap) = writer_falls_silent(&mut s);
    let isolated = s
        .log
        .iter()
        .find(|(_, a)| matches!(a, CoreAction::Isolate { .. }))
        .map(|(t, _)| *t)
        .unwrap();
    advance_to(&mut s, heard + trap - 60);
    s.hosts.get_mut("db1").unwrap().reachable = true;
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Ok,
        started: s.now.max(isolated + 1),
    });
    assert!(
        s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::Release { host } if host == "db1")),
        "db1 answered a ping sent after it was held down"
    );
    advance_to(&mut s, heard + trap + 10);
    assert_eq!(
        s.state("db1"),
        HostState::Online,
        "a blip shorter than trap_period"
    );
}

#[test]
fn a_writer_whose_agent_died_but_answers_ping_is_not_held_down() {
    let mut s = Sim::online(config(&[]));
    let agent_timeout = s.c.config.monitor.agent_timeout.as_millis() as u64;
    let heard = s.now;
    s.now = heard + agent_timeout - 20;
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Ok,
        started: s.now,
    });
    s.now = heard + agent_timeout;
    s.event(Event::AgentUnreachable {
        host: "db1".into(),
        reason: "no heartbeat answer".into(),
        last_heard: Some(heard),
    });
    assert_eq!(
        s.c.next_deadline(),
        Some(heard + 2 * agent_timeout - 20),
        "held only if no ping answers within agent_timeout of the last one"
    );
    // Pings keep answering: never held, its replicas keep replicating.
    for _ in 0..10 {
        s.now += agent_timeout / 2;
        s.event(Event::Check {
            host: "db1".into(),
            check: CheckKind::Ping,
            result: CheckResult::Ok,
            started: s.now,
        });
        s.event(Event::Tick);
    }
    assert!(
        !s.log.iter().any(|(_, a)| matches!(
            a,
            CoreAction::Isolate { .. } | CoreAction::AgentAction { .. }
        )),
        "{:#?}",
        s.log
    );
    assert_eq!(s.c.active_master(), Some("db1"));
}

#[test]
fn silence_seen_while_the_network_guard_held_counts_only_from_its_end() {
    let mut s = Sim::online(config(&[]));
    let trap = s.c.config.checks.ping.trap_period.as_millis() as u64;
    let agent_timeout = s.c.config.monitor.agent_timeout.as_millis() as u64;
    let heard = s.now;
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.event(Event::Network { ok: false });
    s.now = heard + agent_timeout;
    s.event(Event::AgentUnreachable {
        host: "db1".into(),
        reason: "no heartbeat answer".into(),
        last_heard: Some(heard),
    });
    s.now = heard + agent_timeout + 200;
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Failed {
            message: "no echo reply within 500ms".into(),
            refused: false,
        },
        started: heard + 1,
    });
    s.now = heard + 5 * trap;
    s.event(Event::Tick);
    s.event(Event::Network { ok: true });
    let back = s.now;
    assert_eq!(
        s.state("db1"),
        HostState::Online,
        "nothing decided on old evidence"
    );
    assert!(!s
        .log
        .iter()
        .any(|(_, a)| matches!(a, CoreAction::Isolate { .. })));
    assert_eq!(s.c.next_deadline(), Some(back + agent_timeout));
    advance_to(&mut s, back + trap - 1);
    assert!(
        s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::Isolate { host } if host == "db1")),
        "held agent_timeout after the guard lifted"
    );
    assert_eq!(
        s.state("db1"),
        HostState::Online,
        "a whole trap_period again"
    );
    s.tick(1);
    assert_eq!(s.state("db1"), HostState::HardOffline);
}

#[test]
fn a_monitor_that_stalled_does_not_hold_its_silence_against_the_writer() {
    let mut s = Sim::online(config(&[]));
    let trap = s.c.config.checks.ping.trap_period.as_millis() as u64;
    let heard = s.now;
    // A ping failed just before the monitor stopped running for 3 x trap_period.
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Failed {
            message: "no echo reply within 500ms".into(),
            refused: false,
        },
        started: heard,
    });
    s.now = heard + 3 * trap;
    // What it finds on waking: its link timed out, a ping sent before the stall failed.
    s.event(Event::AgentUnreachable {
        host: "db1".into(),
        reason: "no heartbeat answer".into(),
        last_heard: Some(heard),
    });
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Failed {
            message: "no echo reply within 500ms".into(),
            refused: false,
        },
        started: heard + 100,
    });
    s.event(Event::Tick);
    assert_eq!(s.state("db1"), HostState::Online, "{:#?}", s.log);
    assert!(!s.log.iter().any(|(_, a)| matches!(
        a,
        CoreAction::Isolate { .. } | CoreAction::AgentAction { .. }
    )));
    assert!(s.log.iter().any(|(_, a)| matches!(
        a,
        CoreAction::Notify { message, .. } if message.contains("heard nothing for")
    )));
}

#[test]
fn a_writer_is_not_held_down_when_pings_tell_nothing() {
    let mut s = Sim::online(config(&[]));
    let agent_timeout = s.c.config.monitor.agent_timeout.as_millis() as u64;
    let heard = s.now;
    s.now = heard + 50;
    // The monitor cannot ping at all (no ICMP socket): no result says the host is gone.
    s.event(Event::Check {
        host: "db1".into(),
        check: CheckKind::Ping,
        result: CheckResult::Unknown {
            message: "opening the ICMP socket".into(),
        },
        started: s.now,
    });
    s.now = heard + agent_timeout;
    s.event(Event::AgentUnreachable {
        host: "db1".into(),
        reason: "no heartbeat answer".into(),
        last_heard: Some(heard),
    });
    for _ in 0..20 {
        s.now += 100;
        s.event(Event::Tick);
    }
    assert!(!s
        .log
        .iter()
        .any(|(_, a)| matches!(a, CoreAction::Isolate { .. })));
    assert_eq!(s.c.active_master(), Some("db1"));
}

#[test]
fn a_writer_blip_shorter_than_trap_period_moves_nothing() {
    let mut s = Sim::online(config(&[]));
    let trap = s.c.config.checks.ping.trap_period.as_millis() as u64;
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.run_for(trap - 300);
    assert!(
        s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::Isolate { host } if host == "db1")),
        "the silent writer's link is held down"
    );
    s.hosts.get_mut("db1").unwrap().reachable = true;
    s.run_for(3000);
    assert!(
        s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::Release { host } if host == "db1")),
        "released once it answers again"
    );
    // Shorter than its lease: its replicas kept their IO threads (it could still commit).
    for r in ["db2", "db3"] {
        assert!(
            !s.log
                .iter()
                .any(|(_, a)| is_agent_action(a, r, |x| matches!(
                    x,
                    proto::Action::StopIoThread { .. }
                ))),
            "{r}'s IO thread stopped while the writer's lease ran"
        );
    }
    assert_eq!(s.c.active_master(), Some("db1"), "no failover for a blip");
    assert_eq!(s.state("db1"), HostState::Online);
    assert!(
        !s.writable_since.contains_key("db2"),
        "db2 never told to write"
    );
    // What the blip cost: at most a self-fence that the next desired state undid.
    assert!(s.hosts["db1"].vips.contains(&s.writer_vip) && s.hosts["db1"].writable);
}

#[test]
fn without_any_fencing_an_unreachable_writer_is_not_replaced() {
    let mut s = Sim::online(config(&[("fencing = \"lease\"", "fencing = \"none\"")]));
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.run_for(5000);
    assert_eq!(
        s.c.active_master(),
        None,
        "the writer role stays unassigned"
    );
    assert!(
        !s.writable_since.contains_key("db2"),
        "db2 never told to write"
    );
    assert!(s.log.iter().any(|(_, a)| matches!(a, CoreAction::Notify { message, .. } if message.contains("Cannot fence 'db1'"))));
    // kill_host_bin changes that: it fences, then db2 is promoted.
    let mut s = Sim::online(config(&[
        ("fencing = \"lease\"", "fencing = \"none\""),
        (
            "promotion_timeout = \"5s\"",
            "promotion_timeout = \"5s\"\nkill_host_bin = \"/usr/local/bin/fence\"",
        ),
    ]));
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.run_for(5000);
    assert_eq!(s.c.active_master(), Some("db2"));
    assert!(s
        .log
        .iter()
        .any(|(_, a)| matches!(a, CoreAction::KillHost { host, ping_ok: false } if host == "db1")));
}

#[test]
fn lagging_candidate_is_refused_with_a_reason_and_retried() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db2").unwrap().catch_up = ActionOutcome::TimedOut;
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.run_for(500);
    assert_eq!(s.c.active_master(), None);
    assert!(s.writable_hosts().is_empty());
    let show = s.c.show(s.now);
    assert!(
        show.contains("promotion of 'db2' refused: 'db2' did not catch up"),
        "{show}"
    );
    // It catches up later: the next attempt (after promotion_timeout) succeeds.
    s.hosts.get_mut("db2").unwrap().catch_up = ActionOutcome::Ok;
    s.run_for(6000);
    assert_eq!(s.c.active_master(), Some("db2"));
}

/// `show --json` carries what the live page shows of the past: each state transition,
/// and each failover, refused or done, with its cause and its timeline's offsets.
#[test]
fn show_json_carries_transitions_and_failover_timelines() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db2").unwrap().catch_up = ActionOutcome::TimedOut;
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.run_for(500);
    s.hosts.get_mut("db2").unwrap().catch_up = ActionOutcome::Ok;
    s.run_for(6000);
    assert_eq!(s.c.active_master(), Some("db2"));
    let v: serde_json::Value = serde_json::from_str(&s.c.show_json(s.now)).expect("JSON");
    let t = v["transitions"].as_array().expect("transitions");
    assert!(
        t.iter()
            .any(|t| t["host"] == "db1" && t["from"] == "ONLINE" && t["to"] == "HARD_OFFLINE"),
        "{t:?}"
    );
    // The start-up's own promotion of db1, then the refused one, then the retry.
    let f = v["failovers"].as_array().expect("failovers");
    assert_eq!(f.len(), 3, "{f:?}");
    let f = &f[1..];
    assert_eq!(f[0]["outcome"], "refused");
    assert_eq!((&f[0]["from"], &f[0]["to"]), (&"db1".into(), &"db2".into()));
    assert_eq!(f[0]["cause"], "'db1' lost the writer role");
    assert!(f[0]["refusal"]
        .as_str()
        .unwrap_or_default()
        .contains("did not catch up"));
    assert_eq!(f[1]["outcome"], "promoted");
    assert_eq!(f[1]["to"], "db2");
    let steps = f[1]["steps"].as_array().expect("steps");
    assert!(steps.len() >= 3, "{steps:?}");
    assert_eq!(steps[0]["offset_ms"], 0);
    let offsets: Vec<u64> = steps
        .iter()
        .filter_map(|s| s["offset_ms"].as_u64())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(f[1]["total_ms"].as_u64() >= offsets.last().copied());
    // The hosts carry their VIPs and their agent's view beside the role labels.
    let db2 = v["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == "db2"))
        .expect("db2");
    assert!(
        db2["vips"]
            .as_array()
            .expect("vips")
            .iter()
            .any(|r| r["role"] == "writer" && r["ip"] == "192.0.2.100"),
        "{db2}"
    );
    assert_eq!(db2["agent"]["read_only"], false, "{db2}");
}

/// The agent says, as a typed outcome, that the candidate replicates from nobody: nothing
/// to catch up on, the promotion goes on. Any other failure text refuses it.
#[test]
fn a_candidate_that_is_no_replica_has_nothing_to_catch_up_on() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db2").unwrap().catch_up = ActionOutcome::NotReplica;
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db2").unwrap().catch_up = ActionOutcome::Failed;
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.run_for(500);
    assert_eq!(s.c.active_master(), None);
}

#[test]
fn a_slave_ahead_of_the_candidate_is_fetched_from_first() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db2").unwrap().gtid = "0-1-100".into();
    s.hosts.get_mut("db3").unwrap().gtid = "0-1-103".into();
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    let fetch = s.find(0, |a| is_agent_action(a, "db2", |x| matches!(x, proto::Action::ChangeMaster { host, .. } if *host == Ipv4Addr::new(192, 0, 2, 13)))).expect("db2 fetches from db3");
    let wait = s.find(fetch, |a| is_agent_action(a, "db2", |x| matches!(x, proto::Action::CatchUp { target: Some(Position::Gtid(g)) } if g == "0-1-103"))).expect("waits for db3's position");
    let promote = s
        .find(wait, |a| is_desired(a, "db2", true))
        .expect("then promoted");
    assert!(fetch < wait && wait < promote);
}

#[test]
fn returning_old_master_with_errant_transactions_stays_awaiting_recovery() {
    let mut s = Sim::online(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nauto_set_online = \"1s\"",
    )]));
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    // db1 committed 0-1-101..105 that never left it; db2 went on from 0-1-100.
    s.hosts.get_mut("db1").unwrap().gtid = "0-1-105".into();
    s.hosts.get_mut("db2").unwrap().gtid = "0-1-100,0-2-110".into();
    s.hosts.get_mut("db1").unwrap().mysql_alive = true;
    s.hosts.get_mut("db1").unwrap().uptime_s = 5; // rebooted
    s.run_for(3000);
    assert_eq!(
        s.state("db1"),
        HostState::AwaitingRecovery,
        "auto_set_online must not apply"
    );
    let reply = s.command(ControlCommand::SetOnline { host: "db1".into() });
    assert_eq!(reply, "ERROR: Host 'db1' has errant transactions 0-1-101..105 not on the writer db2. It can't be switched to ONLINE until they are resolved.");
    assert!(s
        .c
        .show(s.now)
        .contains("# Host db1 has errant transactions 0-1-101..105"));
}

#[test]
fn an_unparseable_gtid_set_keeps_a_returning_host_awaiting_recovery() {
    let mut s = Sim::online(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nauto_set_online = \"1s\"",
    )]));
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    // Garbage where a set should be: not taken for an empty (contained) set.
    s.hosts.get_mut("db1").unwrap().gtid = "0-1-105,garbage".into();
    s.hosts.get_mut("db1").unwrap().mysql_alive = true;
    s.hosts.get_mut("db1").unwrap().uptime_s = 5;
    s.run_for(3000);
    assert_eq!(s.state("db1"), HostState::AwaitingRecovery);
    let reply = s.command(ControlCommand::SetOnline { host: "db1".into() });
    assert!(
        reply.starts_with("ERROR: Host 'db1' has possible errant transactions (its GTID set cannot be compared with the writer's: \"0-1-105,garbage\" is not a GTID set"),
        "{reply}"
    );
    assert!(s
        .c
        .show(s.now)
        .contains("# Host db1 has possible errant transactions"));
    // Once it reports a set the writer contains, it may come back.
    s.hosts.get_mut("db1").unwrap().gtid = "0-1-100".into();
    s.run_for(3000);
    let reply = s.command(ControlCommand::SetOnline { host: "db1".into() });
    assert!(reply.starts_with("OK: "), "{reply}");
}

#[test]
fn an_unparseable_gtid_set_of_a_slave_refuses_the_promotion() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db3").unwrap().gtid = "0-1-103,3e11fa47-71ca-11e1-9e33-c80aa9429562:1".into();
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.run_for(500);
    assert_eq!(s.c.active_master(), None);
    assert!(s.writable_hosts().is_empty());
    let show = s.c.show(s.now);
    assert!(
        show.contains("promotion of 'db2' refused: cannot compare the GTID sets of 'db2' and its slaves: 'db3': "),
        "{show}"
    );
}

#[test]
fn old_master_back_without_errant_transactions_is_rejoined_by_itself() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    s.hosts.get_mut("db2").unwrap().gtid = "0-1-100,0-2-110".into();
    let mark = s.log.len();
    s.hosts.get_mut("db1").unwrap().mysql_alive = true;
    s.hosts.get_mut("db1").unwrap().uptime_s = 5;
    s.run_for(2000);
    // Rejoined both ways by the monitor (MMM brought masters back by itself), and
    // AWAITING_RECOVERY until set_online (auto_set_online is off).
    assert!(s.find(mark, |a| is_agent_action(a, "db1", |x| matches!(x, proto::Action::ChangeMaster { host, .. } if *host == Ipv4Addr::new(192, 0, 2, 12)))).is_some(), "{:#?}", &s.log[mark..]);
    assert!(s.find(mark, |a| is_agent_action(a, "db2", |x| matches!(x, proto::Action::ChangeMaster { host, .. } if *host == Ipv4Addr::new(192, 0, 2, 11)))).is_some());
    assert_eq!(s.state("db1"), HostState::AwaitingRecovery);
    let reply = s.command(ControlCommand::SetOnline { host: "db1".into() });
    assert_eq!(
        reply,
        "OK: State of 'db1' changed to ONLINE. Now you can wait some time and check its new roles!"
    );
    s.run_for(500);
    assert_eq!(s.c.active_master(), Some("db2"), "no failback by default");
    assert!(
        !s.c.roles.host_roles("db1").is_empty(),
        "db1 got a reader back"
    );
}

#[test]
fn failback_to_prefer_only_when_enabled() {
    let mut s = Sim::online(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nfailback = true",
    )]));
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    s.hosts.get_mut("db1").unwrap().mysql_alive = true;
    s.hosts.get_mut("db1").unwrap().uptime_s = 5;
    s.run_for(2000);
    s.command(ControlCommand::SetOnline { host: "db1".into() });
    s.settle();
    assert_eq!(
        s.c.active_master(),
        Some("db1"),
        "failback = true moves it back"
    );
}

#[test]
fn with_failback_the_writer_is_not_moved_away_from_its_preferred_host() {
    let mut s = Sim::online(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nfailback = true",
    )]));
    assert_eq!(s.c.active_master(), Some("db1"));
    let reply = s.command(ControlCommand::MoveRole {
        force: false,
        role: "writer".into(),
        host: "db2".into(),
    });
    assert_eq!(
        reply,
        "ERROR: Role 'writer' is assigned to preferred host 'db1'. Can't move it!"
    );
    s.settle();
    assert_eq!(s.c.active_master(), Some("db1"), "nothing moved");
    // Without failback the same move is a switchover.
    let mut s = Sim::online(config(&[]));
    let reply = s.command(ControlCommand::MoveRole {
        force: false,
        role: "writer".into(),
        host: "db2".into(),
    });
    assert!(!reply.starts_with("ERROR"), "{reply}");
}

#[test]
fn replication_failure_on_the_passive_master_and_its_recovery() {
    let mut s = Sim::online(config(&[]));
    // Replication failures are ignored for SOURCE_SETTLE after the source came online.
    s.run_for(61_000);
    s.hosts.get_mut("db2").unwrap().rep_threads = false;
    s.run_for(500);
    assert_eq!(s.state("db2"), HostState::Online, "within trap_period");
    s.run_for(1000);
    assert_eq!(s.state("db2"), HostState::ReplicationFail);
    assert!(s.c.roles.host_roles("db2").is_empty(), "reader moved away");
    s.hosts.get_mut("db2").unwrap().rep_threads = true;
    s.run_for(200);
    assert_eq!(s.state("db2"), HostState::Online);
    assert_eq!(s.c.roles.host_roles("db2").len(), 1, "balanced back");
    // The active master's replication failures do not matter.
    s.hosts.get_mut("db1").unwrap().rep_threads = false;
    s.run_for(3000);
    assert_eq!(s.state("db1"), HostState::Online);
}

#[test]
fn replication_delay_on_a_slave() {
    let mut s = Sim::online(config(&[]));
    s.run_for(61_000);
    s.hosts.get_mut("db3").unwrap().rep_backlog = false;
    s.run_for(1500);
    assert_eq!(s.state("db3"), HostState::ReplicationDelay);
    assert!(s.c.roles.host_roles("db3").is_empty());
    s.hosts.get_mut("db3").unwrap().rep_backlog = true;
    s.run_for(200);
    assert_eq!(s.state("db3"), HostState::Online);
    assert_eq!(s.c.roles.host_roles("db3").len(), 1);
}

#[test]
fn flapping_host_stays_awaiting_recovery_and_the_flap_state_survives_a_restart() {
    let mut s = Sim::online(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nauto_set_online = \"1s\"",
    )]));
    for round in 0..3 {
        s.hosts.get_mut("db3").unwrap().mysql_alive = false;
        s.run_for(200);
        assert_eq!(s.state("db3"), HostState::HardOffline, "round {round}");
        s.hosts.get_mut("db3").unwrap().mysql_alive = true;
        s.hosts.get_mut("db3").unwrap().uptime_s += 1000; // not a short outage
        s.run_for(2000);
    }
    assert!(s.c.host("db3").unwrap().flapping);
    assert_eq!(
        s.state("db3"),
        HostState::AwaitingRecovery,
        "auto_set_online does not apply to a flapping host"
    );
    // Restart: a new monitor from the persisted record still knows db3 is flapping.
    let record = s.persisted.clone().unwrap();
    let record = status::StatusRecord::from_json(&record.to_json()).unwrap();
    let mut c = cluster(s.c.config.clone(), s.now);
    c.restore(&record).unwrap();
    assert!(c.host("db3").unwrap().flapping);
    assert_eq!(c.host("db3").unwrap().state, HostState::AwaitingRecovery);
    assert!(c.show(s.now).contains("# Host db3 is flapping"));
}

#[test]
fn monitor_restart_keeps_every_role_where_it_was() {
    let mut s = Sim::online(config(&[]));
    let before: Vec<_> = s.c.roles.ips().to_vec();
    let record = s.persisted.clone().unwrap();
    let mut c = cluster(s.c.config.clone(), s.now);
    c.restore(&record).unwrap();
    let reports: Vec<(String, AgentView)> = ["db1", "db2", "db3"]
        .iter()
        .map(|h| (h.to_string(), s.view(h)))
        .collect();
    let actions = c.startup(s.now, &reports);
    assert_eq!(c.roles.ips(), before);
    assert_eq!(c.mode.get(), MonitorMode::Active);
    // What it sends is what the agents hold already: nothing moves.
    for a in &actions {
        if let CoreAction::SendDesired { host, desired } = a {
            let held: BTreeSet<Ipv4Addr> = desired.roles.iter().map(|(_, ip)| *ip).collect();
            assert_eq!(held, s.hosts[host].vips, "{host}");
            assert_eq!(desired.writable, s.hosts[host].writable, "{host}");
        }
    }
    s.c = c;
    s.run_for(1000);
    assert_eq!(s.c.roles.ips(), before);
}

/// A leader lost its term between stopping a candidate's replication and persisting the
/// promotion: its successor adopts the stored writer, and restarts what was stopped.
#[test]
fn a_new_leader_restarts_replication_an_earlier_leader_left_stopped() {
    let mut s = Sim::online(config(&[]));
    let writer = (
        s.c.host("db1").unwrap().ip,
        s.c.host("db1").unwrap().mysql_port,
    );
    assert_eq!(s.hosts["db2"].source, Some(writer));
    s.hosts.get_mut("db2").unwrap().replicating = false;
    s.new_leader();
    s.settle();
    assert_eq!(s.c.active_master(), Some("db1"));
    assert!(s.hosts["db2"].replicating, "db2's replication left stopped");
    assert_eq!(s.hosts["db2"].source, Some(writer));
    // An operator's offline host is left alone.
    let r = s.command(ControlCommand::SetOffline { host: "db3".into() });
    assert!(r.starts_with("OK"), "{r}");
    s.settle();
    s.hosts.get_mut("db3").unwrap().replicating = false;
    s.new_leader();
    s.settle();
    assert!(!s.hosts["db3"].replicating, "db3 is offline: not restarted");
}

#[test]
fn careful_startup_with_the_writer_vip_on_two_hosts_goes_passive() {
    let s = Sim::online(config(&[]));
    let mut reports: Vec<(String, AgentView)> = ["db1", "db2", "db3"]
        .iter()
        .map(|h| (h.to_string(), s.view(h)))
        .collect();
    reports[1].1.held_vips.push(s.writer_vip);
    let mut c = cluster(s.c.config.clone(), s.now);
    let actions = c.startup(s.now, &reports);
    assert_eq!(c.mode.get(), MonitorMode::Passive);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, CoreAction::SendDesired { .. })),
        "passive sends nothing"
    );
    let show = c.show(s.now);
    assert!(show.starts_with("# --- Monitor is in PASSIVE MODE ---\n# Cause: the writer role is claimed by db1 and db2"), "{show}");
    // The operator decides: set_ip in passive mode, then set_active.
    let mut out = Vec::new();
    assert_eq!(c.command(s.now, 1, ControlCommand::SetIp { ip: s.writer_vip, host: "db2".into() }, &mut out).unwrap(), "ERROR: Host 'db2' is 'AWAITING_RECOVERY' at the moment. Can't move role with ip '192.0.2.100' there.");
}

#[test]
fn control_commands_answer_with_mmm_texts() {
    let mut s = Sim::online(config(&[]));
    assert_eq!(s.command(ControlCommand::Ping), "OK: Pinged successfully!");
    assert_eq!(s.command(ControlCommand::Mode), "ACTIVE");
    assert_eq!(
        s.command(ControlCommand::SetOnline { host: "db9".into() }),
        "ERROR: Unknown host name 'db9'!"
    );
    assert_eq!(
        s.command(ControlCommand::SetOnline { host: "db2".into() }),
        "OK: This host is already ONLINE. Skipping command."
    );
    assert_eq!(s.command(ControlCommand::SetOffline { host: "db3".into() }), "OK: State of 'db3' changed to ADMIN_OFFLINE. Now you can wait some time and check all roles!");
    assert_eq!(
        s.command(ControlCommand::SetOffline { host: "db3".into() }),
        "OK: This host is already ADMIN_OFFLINE. Skipping command."
    );
    assert!(s.c.roles.host_roles("db3").is_empty());
    assert_eq!(
        s.command(ControlCommand::SetOnline { host: "db3".into() }),
        "OK: State of 'db3' changed to ONLINE. Now you can wait some time and check its new roles!"
    );
    assert_eq!(
        s.command(ControlCommand::MoveRole {
            force: false,
            role: "writer".into(),
            host: "db3".into()
        }),
        "ERROR: Host 'db3' can't handle role 'writer'. Only following hosts could: db1, db2"
    );
    assert_eq!(
        s.command(ControlCommand::MoveRole {
            force: false,
            role: "boss".into(),
            host: "db2".into()
        }),
        "ERROR: Unknown role name 'boss'!"
    );
    assert_eq!(
        s.command(ControlCommand::MoveRole {
            force: false,
            role: "writer".into(),
            host: "db1".into()
        }),
        "OK: Role is on 'db1' already. Skipping command."
    );
    assert_eq!(
        s.command(ControlCommand::MoveRole {
            force: true,
            role: "writer".into(),
            host: "db2".into()
        }),
        "ERROR: Can't force move of role to host with state ONLINE."
    );
    assert_eq!(
        s.command(ControlCommand::SetIp {
            ip: Ipv4Addr::new(192, 0, 2, 101),
            host: "db1".into()
        }),
        "ERROR: This command is only allowed in passive mode"
    );
    assert_eq!(
        s.command(ControlCommand::SetManual),
        "OK: Switched into manual mode."
    );
    assert_eq!(
        s.command(ControlCommand::SetManual),
        "OK: Already in manual mode."
    );
    assert_eq!(
        s.command(ControlCommand::SetPassive),
        "OK: Switched into passive mode."
    );
    assert_eq!(
        s.command(ControlCommand::MoveRole {
            force: false,
            role: "writer".into(),
            host: "db2".into()
        }),
        "ERROR: This command is not allowed in passive mode"
    );
    // set_ip in passive mode moves a reader, sends nothing to agents.
    let mark = s.log.len();
    assert_eq!(
        s.command(ControlCommand::SetIp {
            ip: Ipv4Addr::new(192, 0, 2, 101),
            host: "db3".into()
        }),
        "OK: Set role 'reader(192.0.2.101)' to host 'db3'."
    );
    assert!(s
        .find(mark, |a| matches!(a, CoreAction::SendDesired { .. }))
        .is_none());
    assert_eq!(
        s.command(ControlCommand::SetIp {
            ip: Ipv4Addr::new(192, 0, 2, 99),
            host: "db3".into()
        }),
        "ERROR: Unknown ip '192.0.2.99'!"
    );
    assert_eq!(
        s.command(ControlCommand::SetActive),
        "OK: Switched into active mode."
    );
    let checks = s.command(ControlCommand::Checks {
        host: Some("db1".into()),
        check: CheckSelector::All,
    });
    assert!(
        checks
            .lines()
            .next()
            .unwrap()
            .starts_with("db1  ping         [last change: "),
        "{checks}"
    );
    assert!(
        checks.contains("db1  mysql        [last change: ")
            && checks.ends_with("db1  probe        off\ndb1  agent        OK\n"),
        "{checks}"
    );
    assert_eq!(
        s.command(ControlCommand::Checks {
            host: Some("db7".into()),
            check: CheckSelector::All
        }),
        "ERROR: Unknown host name 'db7'!"
    );
}

#[test]
fn checks_print_the_monitor_hosts_local_time() {
    let mut s = Sim::online(config(&[]));
    let line = |s: &mut Sim| {
        s.command(ControlCommand::Checks {
            host: Some("db1".into()),
            check: CheckSelector::All,
        })
        .lines()
        .next()
        .unwrap()
        .to_string()
    };
    let utc = line(&mut s);
    s.c.utc_offset_s = 2 * 3600;
    let local = line(&mut s);
    let hour = |l: &str| -> u32 {
        let at = l.find("[last change: ").unwrap() + "[last change: yyyy/mm/dd ".len();
        l[at..at + 2].parse().unwrap()
    };
    assert_eq!((hour(&utc) + 2) % 24, hour(&local), "{utc}\n{local}");
}

#[test]
fn set_offline_stops_replication_and_set_online_starts_it() {
    let mut s = Sim::online(config(&[]));
    let mark = s.log.len();
    assert!(s
        .command(ControlCommand::SetOffline { host: "db3".into() })
        .starts_with("OK: State of 'db3' changed to ADMIN_OFFLINE"));
    assert!(
        s.find(mark, |a| is_agent_action(a, "db3", |x| *x
            == proto::Action::StopReplication))
            .is_some(),
        "set_offline stops db3's replication"
    );
    s.run_for(1000);
    let mark = s.log.len();
    assert!(s
        .command(ControlCommand::SetOnline { host: "db3".into() })
        .starts_with("OK: State of 'db3' changed to ONLINE"));
    assert!(
        s.find(mark, |a| is_agent_action(a, "db3", |x| matches!(x, proto::Action::ChangeMaster { host, .. } if *host == Ipv4Addr::new(192, 0, 2, 11))))
            .is_some(),
        "set_online makes db3 replicate from the active master again"
    );
}

#[test]
fn a_rejoined_old_master_follows_auto_set_online() {
    let mut s = Sim::online(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nauto_set_online = \"3s\"",
    )]));
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    s.hosts.get_mut("db2").unwrap().gtid = "0-1-100,0-2-110".into();
    s.hosts.get_mut("db1").unwrap().mysql_alive = true;
    // A reboot-length outage: not the "down for only a few seconds" shortcut.
    s.hosts.get_mut("db1").unwrap().uptime_s = 900;
    s.run_for(6000);
    assert_eq!(
        s.state("db1"),
        HostState::Online,
        "auto_set_online after the rejoin"
    );
    assert_eq!(s.c.active_master(), Some("db2"), "no failback by default");
}

#[test]
fn an_agent_that_cannot_reach_its_mysqld_is_a_failed_check_and_no_candidate() {
    let mut s = Sim::online(config(&[]));
    // db2's mysqld answers the monitor, but not its agent (MMM's network-scoped grants).
    let mut view = s.view("db2");
    view.mysql_up = false;
    s.event(Event::AgentHeartbeat {
        host: "db2".into(),
        view,
    });
    let checks = s.command(ControlCommand::Checks {
        host: Some("db2".into()),
        check: CheckSelector::All,
    });
    assert!(
        checks.ends_with("db2  agent        ERROR: the agent cannot reach its own mysqld\n"),
        "{checks}"
    );
    let show = s.c.show(s.now);
    assert!(
        show.contains("# Warning: agent on host db2 cannot reach its own mysqld"),
        "{show}"
    );
    assert!(
        !s.c.eligible("db2"),
        "a promotion to db2 would fail at every step"
    );
}

#[test]
fn switchover_with_move_role_replies_when_done() {
    let mut s = Sim::online(config(&[]));
    let id = s.next_reply;
    s.next_reply += 1;
    s.event(Event::Command {
        reply: id,
        command: ControlCommand::MoveRole {
            force: false,
            role: "writer".into(),
            host: "db2".into(),
        },
    });
    s.settle();
    let promoted = s
        .find(0, |a| is_desired(a, "db2", true))
        .expect("db2 promoted");
    let replied = s
        .find(
            0,
            |a| matches!(a, CoreAction::Reply { id: r, .. } if *r == id),
        )
        .expect("a reply");
    assert!(
        promoted < replied,
        "the reply waits for the switchover to be done"
    );
    assert!(
        s.replies.contains_key(&id),
        "no reply; log:\n{:#?}",
        s.log
            .iter()
            .filter(|(_, a)| !matches!(a, CoreAction::Persist(_)))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.replies[&id], "OK: Role 'writer' has been moved from 'db1' to 'db2'. Now you can wait some time and check new roles info!");
    assert_eq!(s.writable_hosts(), vec!["db2".to_string()]);
    assert_eq!(
        s.c.host("db1").unwrap().state,
        HostState::Online,
        "a switchover keeps the old master online"
    );
    // The old master is alive: nobody's IO thread is stopped ahead of time.
    assert!(s
        .find(0, |a| matches!(
            a,
            CoreAction::AgentAction {
                action: proto::Action::StopIoThread { .. },
                ..
            }
        ))
        .is_none());
}

#[test]
fn network_guard_freezes_states() {
    let mut s = Sim::online(config(&[]));
    s.event(Event::Network { ok: false });
    s.hosts.get_mut("db3").unwrap().mysql_alive = false;
    s.run_for(3000);
    assert_eq!(s.state("db3"), HostState::Online);
    assert!(s.c.show(s.now).contains("# Network is down"));
    s.event(Event::Network { ok: true });
    s.tick(TICK);
    assert_eq!(s.state("db3"), HostState::HardOffline);
}

#[test]
fn manual_mode_keeps_roles_of_failed_hosts() {
    let mut s = Sim::online(config(&[]));
    s.command(ControlCommand::SetManual);
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.run_for(1000);
    assert_eq!(s.state("db1"), HostState::HardOffline);
    assert_eq!(
        s.c.active_master(),
        Some("db1"),
        "MMM's manual mode moves nothing"
    );
}

/// Events a random operator, network and set of servers produce.
#[derive(Debug, Clone)]
enum Chaos {
    Time(u16),
    KillMysql(u8),
    StartMysql(u8),
    Partition(u8),
    Heal(u8),
    RepThreads(u8, bool),
    RepBacklog(u8, bool),
    MoveWriter(u8),
    SetOnline(u8),
    SetOffline(u8),
    /// Fleet only: an agent cut from etcd, or back.
    EtcdCut(u8),
    EtcdHeal(u8),
    /// Fleet only: the leading monitor is replaced by another.
    NewLeader,
    /// The monitor's own network goes down (the network guard holds), or comes back.
    MonitorCut(bool),
}

fn chaos() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        4 => (1u16..2000).prop_map(Chaos::Time),
        1 => (0u8..3).prop_map(Chaos::KillMysql),
        1 => (0u8..3).prop_map(Chaos::StartMysql),
        1 => (0u8..3).prop_map(Chaos::Partition),
        1 => (0u8..3).prop_map(Chaos::Heal),
        1 => (0u8..3, any::<bool>()).prop_map(|(h, b)| Chaos::RepThreads(h, b)),
        1 => (0u8..3, any::<bool>()).prop_map(|(h, b)| Chaos::RepBacklog(h, b)),
        1 => (0u8..2).prop_map(Chaos::MoveWriter),
        1 => (0u8..3).prop_map(Chaos::SetOnline),
        1 => (0u8..3).prop_map(Chaos::SetOffline),
        1 => any::<bool>().prop_map(Chaos::MonitorCut),
    ]
}

fn fleet_chaos() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        8 => chaos(),
        1 => (0u8..3).prop_map(Chaos::EtcdCut),
        1 => (0u8..3).prop_map(Chaos::EtcdHeal),
        2 => Just(Chaos::NewLeader),
    ]
}

impl Sim {
    fn chaos(&mut self, step: Chaos) {
        let name = |i: u8| format!("db{}", i + 1);
        match step {
            Chaos::Time(ms) => self.run_for(u64::from(ms)),
            Chaos::KillMysql(h) => {
                let x = self.hosts.get_mut(&name(h)).unwrap();
                x.mysql_alive = false;
                x.writable = false;
            }
            Chaos::StartMysql(h) => {
                let x = self.hosts.get_mut(&name(h)).unwrap();
                x.mysql_alive = true;
                x.uptime_s += 1000;
            }
            Chaos::Partition(h) => self.hosts.get_mut(&name(h)).unwrap().reachable = false,
            Chaos::Heal(h) => self.hosts.get_mut(&name(h)).unwrap().reachable = true,
            Chaos::RepThreads(h, ok) => self.hosts.get_mut(&name(h)).unwrap().rep_threads = ok,
            Chaos::RepBacklog(h, ok) => self.hosts.get_mut(&name(h)).unwrap().rep_backlog = ok,
            Chaos::MoveWriter(h) => {
                self.command(ControlCommand::MoveRole {
                    force: false,
                    role: "writer".into(),
                    host: name(h),
                });
            }
            Chaos::SetOnline(h) => {
                self.command(ControlCommand::SetOnline { host: name(h) });
            }
            Chaos::SetOffline(h) => {
                self.command(ControlCommand::SetOffline { host: name(h) });
            }
            Chaos::EtcdCut(h) => {
                let now = self.now;
                let x = self.hosts.get_mut(&name(h)).unwrap();
                if x.etcd_ok {
                    x.etcd_ok = false;
                    x.etcd_cut_at = now;
                }
            }
            Chaos::EtcdHeal(h) => self.hosts.get_mut(&name(h)).unwrap().etcd_ok = true,
            Chaos::NewLeader => self.new_leader(),
            Chaos::MonitorCut(cut) => {
                if self.monitor_cut != cut {
                    self.monitor_cut = cut;
                    self.event(Event::Network { ok: !cut });
                }
            }
        }
    }
}

fn fleet_config() -> Arc<Config> {
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/lab.toml"))
            .unwrap();
    text.push_str("\n[coordination]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/mmm/sim\"\nsession_ttl = \"1s\"\n");
    Arc::new(Config::parse(&text, Path::new("lab.toml")).unwrap())
}

/// A fleet's writer keeps its own etcd lease: a monitor cut off from it must wait for
/// that lease to end (EndLease -> LeaseEnded) before promoting, and never counts it out
/// by itself.
#[test]
fn a_fleet_waits_for_the_writers_etcd_lease_before_promoting() {
    let mut s = Sim::online(fleet_config());
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.run_for(3000);
    assert!(
        s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::EndLease { host } if host == "db1")),
        "the writer's lease must be ended through etcd"
    );
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.writable_hosts(), vec!["db2".to_string()]);
}

/// A fleet's writer cut from etcd alone (its agent, mysqld and ping fine) gives the writer
/// up when its permit runs out and says so in every heartbeat: trap_period later the
/// leader moves the role to a host that can hold it, without waiting for a lease (the old
/// writer's own report confirms it fenced), instead of an outage that `show` calls fine.
#[test]
fn a_fleet_writer_cut_from_etcd_alone_is_failed_over() {
    let mut s = Sim::online(fleet_config());
    let cut = s.now;
    let h = s.hosts.get_mut("db1").unwrap();
    h.etcd_ok = false;
    h.etcd_cut_at = cut;
    let ttl = s.ttl();
    let trap = s.c.config.checks.ping.trap_period.as_millis() as u64;
    s.run_for(ttl + trap / 2);
    assert_eq!(s.c.active_master(), Some("db1"), "not before trap_period");
    assert!(s.writable_hosts().is_empty(), "db1 gave the writer up");
    s.run_for(trap);
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.writable_hosts(), vec!["db2".to_string()]);
    assert_eq!(s.state("db1"), HostState::Online, "db1 itself is fine");
    assert!(
        !s.log
            .iter()
            .any(|(_, a)| matches!(a, CoreAction::EndLease { host } if host == "db1")),
        "its own report fenced it: no lease to wait for"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// In a fleet, leaders replaced at random moments (mid-promotion included), agents
    /// cut from the monitor or from etcd, servers failing: never two writable masters and
    /// never the writer VIP twice, checked after every event.
    #[test]
    fn fleet_invariants_hold_under_leader_changes(steps in proptest::collection::vec(fleet_chaos(), 1..60)) {
        let mut s = Sim::online(fleet_config());
        for step in steps {
            s.chaos(step);
        }
    }

    /// Whatever happens: never two writable masters, never the writer VIP twice, roles
    /// only on ONLINE hosts (checked after every event by `check_invariants`); and once
    /// things calm down, every role IP is held whenever a host could hold it.
    #[test]
    fn invariants_hold_under_random_failures(steps in proptest::collection::vec(chaos(), 1..60)) {
        let mut s = Sim::online(config(&[]));
        for step in steps {
            s.chaos(step);
        }
        // Calm: everything healthy and reachable, then every role IP must be held.
        for h in s.hosts.values_mut() {
            h.reachable = true; h.mysql_alive = true; h.rep_threads = true; h.rep_backlog = true; h.catch_up = ActionOutcome::Ok;
        }
        s.chaos(Chaos::MonitorCut(false));
        s.run_for(8000);
        for h in ["db1", "db2", "db3"] {
            if s.state(h) != HostState::Online && s.state(h) != HostState::AdminOffline {
                s.command(ControlCommand::SetOnline { host: h.into() });
            }
        }
        s.run_for(8000);
        let any_master_online = ["db1", "db2"].iter().any(|h| s.c.eligible(h));
        for r in s.c.roles.ips() {
            let eligible = r.hosts.iter().any(|h| s.c.eligible(h));
            if eligible && (r.role != "writer" || any_master_online) {
                prop_assert!(r.holder.is_some(), "{} unassigned though {:?} could hold it; show:\n{}", r.label(), r.hosts, s.c.show(s.now));
            }
        }
    }
}

/// Found by the property test: a promotion refused after its candidate was told to take
/// the writer role left the candidate holding the VIP; the next promotion must fence it.
#[test]
fn a_refused_candidate_is_fenced_before_the_next_promotion() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.command(ControlCommand::MoveRole {
        force: false,
        role: "writer".into(),
        host: "db2".into(),
    });
    // db1 still looks ONLINE (no check has run): the move back is accepted, then fails
    // because db1 cannot become writable.
    s.command(ControlCommand::MoveRole {
        force: false,
        role: "writer".into(),
        host: "db1".into(),
    });
    s.hosts.get_mut("db1").unwrap().reachable = false;
    s.command(ControlCommand::MoveRole {
        force: false,
        role: "writer".into(),
        host: "db2".into(),
    });
    s.run_for(5000);
    // check_invariants ran after every event: never the writer VIP on two hosts.
    assert_eq!(s.vip_holders(s.writer_vip), vec!["db2".to_string()]);
}

#[test]
fn a_short_outage_without_reboot_comes_back_online_by_itself() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db3").unwrap().mysql_alive = false;
    s.run_for(200);
    assert_eq!(s.state("db3"), HostState::HardOffline);
    // Back after a few seconds, host not rebooted (uptime kept counting): MMM's 60 s rule.
    s.hosts.get_mut("db3").unwrap().mysql_alive = true;
    s.hosts.get_mut("db3").unwrap().uptime_s += 5;
    s.run_for(300);
    assert_eq!(s.state("db3"), HostState::Online);
    // A reboot (uptime went back) waits for an operator.
    s.hosts.get_mut("db3").unwrap().mysql_alive = false;
    s.run_for(200);
    s.hosts.get_mut("db3").unwrap().mysql_alive = true;
    s.hosts.get_mut("db3").unwrap().uptime_s = 30;
    s.run_for(3000);
    assert_eq!(s.state("db3"), HostState::AwaitingRecovery);
}

#[test]
fn wait_mode_turns_active_when_both_masters_are_online_or_after_wait_for_other_master() {
    let mut s = Sim::new(config(&[(
        "promotion_timeout = \"5s\"",
        "promotion_timeout = \"5s\"\nmode = \"wait\"\nwait_for_other_master = \"2s\"",
    )]));
    s.hosts.get_mut("db2").unwrap().mysql_alive = false;
    s.tick(TICK);
    s.command(ControlCommand::SetOnline { host: "db1".into() });
    s.run_for(1000);
    assert_eq!(s.c.mode.get(), MonitorMode::Wait);
    assert_eq!(
        s.c.active_master(),
        None,
        "nothing is assigned while waiting"
    );
    s.run_for(1500);
    assert_eq!(
        s.c.mode.get(),
        MonitorMode::Active,
        "db2 did not come within wait_for_other_master"
    );
    s.settle();
    assert_eq!(s.c.active_master(), Some("db1"));
}

#[test]
fn move_role_force_moves_the_writer_to_a_replication_fail_host() {
    let mut s = Sim::online(config(&[]));
    s.run_for(61_000);
    s.hosts.get_mut("db2").unwrap().rep_threads = false;
    s.run_for(1500);
    assert_eq!(s.state("db2"), HostState::ReplicationFail);
    assert_eq!(
        s.command(ControlCommand::MoveRole {
            force: false,
            role: "writer".into(),
            host: "db2".into()
        }),
        "ERROR: Can't move role to host with state REPLICATION_FAIL."
    );
    let id = s.next_reply;
    s.next_reply += 1;
    s.event(Event::Command {
        reply: id,
        command: ControlCommand::MoveRole {
            force: true,
            role: "writer".into(),
            host: "db2".into(),
        },
    });
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.writable_hosts(), vec!["db2".to_string()]);
}

#[test]
fn replication_states_still_change_after_a_monitor_restart() {
    let mut s = Sim::online(config(&[]));
    s.run_for(15_000);
    let record = s.persisted.clone().unwrap();
    let mut c = cluster(s.c.config.clone(), s.now);
    c.restore(&record).unwrap();
    let reports: Vec<(String, AgentView)> = ["db1", "db2", "db3"]
        .iter()
        .map(|h| (h.to_string(), s.view(h)))
        .collect();
    for a in c.startup(s.now, &reports) {
        s.apply(a);
    }
    s.c = c;
    s.run_for(2000);
    s.hosts.get_mut("db3").unwrap().rep_backlog = false;
    s.run_for(1500);
    assert_eq!(
        s.state("db3"),
        HostState::ReplicationDelay,
        "{}",
        s.c.show(s.now)
    );
}

#[test]
fn a_slave_down_during_the_failover_is_repointed_when_it_returns() {
    let mut s = Sim::online(config(&[]));
    s.hosts.get_mut("db3").unwrap().mysql_alive = false;
    s.run_for(200);
    assert_eq!(s.state("db3"), HostState::HardOffline);
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_ne!(
        s.hosts["db3"].source,
        Some((Ipv4Addr::new(192, 0, 2, 12), 3306)),
        "db3 was down"
    );
    s.hosts.get_mut("db3").unwrap().mysql_alive = true;
    s.hosts.get_mut("db3").unwrap().uptime_s += 5;
    s.run_for(1000);
    assert_eq!(
        s.hosts["db3"].source,
        Some((Ipv4Addr::new(192, 0, 2, 12), 3306)),
        "db3 follows the new master"
    );
}

/// After the lab's bring-up (set_online db1, db2, db3) both masters replicate from each
/// other. (The Sim finishes a promotion within one step, so this does not reach the
/// deferral of a rejoin asked for during one; the lab bring-up does.)
#[test]
fn after_bring_up_both_masters_replicate_from_each_other() {
    let s = Sim::online(config(&[]));
    let ip = |n: &str| s.c.host(n).map(|h| (h.ip, h.mysql_port));
    let db1 = &s.hosts["db1"];
    assert!(
        db1.replicating && db1.source == ip("db2"),
        "the writer's back link to its peer runs: {:?} replicating={}",
        db1.source,
        db1.replicating
    );
    let db2 = &s.hosts["db2"];
    assert!(db2.replicating && db2.source == ip("db1"));
}

/// mmm-manager's mode: the writer role has no VIP. The monitor still moves it (fenced
/// promotion, one writable server), and publishes the holder in show, show --json and the
/// status record; the agents are told `writable` and no writer VIP.
#[test]
fn a_writer_role_without_a_vip_fails_over_and_is_published() {
    let mut s = Sim::online(config(&[("ips = [\"192.0.2.100\"]", "ips = []")]));
    assert_eq!(s.c.roles.writer_ip(), None);
    assert!(
        s.c.show(s.now)
            .contains("db1(192.0.2.11) master/ONLINE. Roles: reader(192.0.2.10"),
        "{}",
        s.c.show(s.now)
    );
    assert!(
        s.c.show(s.now).contains(", writer") || s.c.show(s.now).contains("Roles: writer"),
        "{}",
        s.c.show(s.now)
    );
    s.hosts.get_mut("db1").unwrap().mysql_alive = false;
    s.hosts.get_mut("db1").unwrap().writable = false;
    s.settle();
    assert_eq!(s.c.active_master(), Some("db2"));
    assert_eq!(s.writable_hosts(), vec!["db2".to_string()]);
    let json: serde_json::Value = serde_json::from_str(&s.c.show_json(s.now)).unwrap();
    assert_eq!(json["writer"]["host"], "db2");
    assert_eq!(json["writer"]["ip"], "192.0.2.12");
    assert_eq!(json["writer"]["vip"], serde_json::Value::Null);
    // The record keeps it ("" for no VIP) and a restart reads it back.
    let record = s.c.status_record(s.now);
    assert_eq!(
        record.roles["writer"],
        vec![(String::new(), Some("db2".to_string()))]
    );
    let mut again = cluster(s.c.config.clone(), s.now);
    again.restore(&record).unwrap();
    assert_eq!(again.active_master(), Some("db2"));
}

/// The in-place comparison that spares a record per event says "changed" for a change
/// of any field the record keeps, one at a time (the simulator's debug assertion only
/// sees the combinations its scenarios make).
#[test]
fn any_change_the_status_record_keeps_is_seen_without_building_one() {
    let now = 1_000_000;
    let c = cluster(config(&[]), now);
    let record = c.status_record(now);
    assert!(c.matches_record(&record));
    let later = c.status_record(now + 5_000);
    assert!(
        c.matches_record(&later),
        "only the time it was written differs"
    );
    type Change = Box<dyn Fn(&mut HostRec)>;
    let changes: Vec<(&str, Change)> = vec![
        ("state", Box::new(|h| h.state = HostState::AdminOffline)),
        ("since", Box::new(|h| h.since += 1)),
        ("reason", Box::new(|h| h.reason.push('!'))),
        ("flaps", Box::new(|h| h.flaps.departures.push(1))),
        ("flapping", Box::new(|h| h.flapping = !h.flapping)),
        ("errant", Box::new(|h| h.errant = Some("x".into()))),
        (
            "gtid",
            Box::new(|h| h.gtid = mmm_common::gtid::GtidSet::parse("0-1-5").ok()),
        ),
    ];
    for (field, change) in changes {
        let mut changed = cluster(config(&[]), now);
        change(changed.host_mut("db2").unwrap());
        assert!(
            !changed.matches_record(&record),
            "a change of {field} went unseen"
        );
        assert!(!changed.status_record(now).same_content(&record));
    }
    let mut moved = cluster(config(&[]), now);
    moved.mode.go_passive("test".into());
    assert!(
        !moved.matches_record(&record),
        "a change of mode went unseen"
    );
    // One GTID set for another (the comparison that writes the set out).
    let mut ahead = cluster(config(&[]), now);
    ahead.host_mut("db2").unwrap().gtid = mmm_common::gtid::GtidSet::parse("0-1-5").ok();
    let at_5 = ahead.status_record(now);
    assert!(ahead.matches_record(&at_5));
    ahead.host_mut("db2").unwrap().gtid = mmm_common::gtid::GtidSet::parse("0-1-6").ok();
    assert!(!ahead.matches_record(&at_5), "a newer GTID set went unseen");
}
