//! The monitor's side of the writer's failsafe (agent/src/failsafe.rs has the agent's).
//!
//! With etcd's majority gone the writer's own etcd lease, its permit, cannot be renewed:
//! without a failsafe, writes stop about `session_ttl` after etcd does. Every fleet
//! monitor, leader or standby, keeps a witness session (`Term::WITNESS`) to every agent
//! and, while it cannot reach etcd itself, follows each heartbeat answer with a consent;
//! the leader of the last term etcd confirmed adds its vouch for the writer, naming the
//! fleet's roster, but only while every agent says that etcd does not renew its lease
//! either. With a vouch and a consent of every monitor of the roster the writer's agent
//! lets its permit run on, counted on its own clock from the answers they echo.
//!
//! Each consent is a promise ([`Witness::promised_until`]): this monitor counts the permit
//! of the host it sent it to over by waiting (`LeaseEnded`) no earlier than `session_ttl`
//! plus a margin after sending it, nor any host's before that long after it started or
//! started campaigning (a consent of an earlier run of it, or of the leader that listed
//! it, may still count); and from the moment it starts counting a host over it sends that
//! host no consent. A monitor that reaches etcd sends no consent: that is its veto. Each
//! consent names the newest term its monitor knows, and counts only toward a failsafe of
//! that term. docs/fencing.md ("Failsafe") has every interleaving.

use crate::agents::client::AgentLink;
use mmm_common::config::{ClusterKey, Config, Coordination};
use mmm_common::epoch::Term;
use mmm_common::etcd::LazyMembers;
use mmm_common::proto::{hb_flags, Consent, Message};
use mmm_common::timing::{margin, EtcdTiming};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What the leader of a term vouches with: its term, the writer, the fleet's roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouching {
    pub term: Term,
    pub writer: Option<String>,
    pub roster: Vec<String>,
}

/// One agent as this monitor's witness session last heard it.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    etcd_ok: bool,
}

/// Shared by the witness tasks, the leader seat and `end_lease`.
pub struct Witness {
    name: String,
    etcd: EtcdTiming,
    /// The last term this monitor led (kept after it ends: a leader cut from etcd loses
    /// its term locally, and vouches for the writer all the same while the agents still
    /// follow that term).
    lead: Mutex<Option<Vouching>>,
    /// No `LeaseEnded` for any host before this: this process's start, and each campaign
    /// (a consent of an earlier run, or of the leader that listed it, may still count).
    promise: Mutex<Instant>,
    /// No `LeaseEnded` for a host before this: the promise every consent sent to its
    /// agent makes (only those can extend its permit).
    promises: Mutex<HashMap<String, Instant>>,
    /// When this monitor last read etcd's majority (a linearizable read answered).
    reached: Mutex<Option<Instant>>,
    /// Whether the probe has asked etcd once: before that, this monitor does not know it
    /// cannot reach etcd and consents to nothing.
    probed: std::sync::atomic::AtomicBool,
    /// The newest term this monitor knows of: the last epoch record it read at
    /// `<prefix>/cluster` (verified with the cluster key), or one it leads. Sent with
    /// every consent; the agent counts it only toward a failsafe of that very term.
    known: Mutex<Option<Term>>,
    /// Hosts whose permit this monitor is counting over (`end_lease`), and until when it
    /// consents to nothing for them: its consents must not extend what it waits out.
    fencing: Mutex<HashMap<String, Instant>>,
    heard: Mutex<HashMap<String, Heard>>,
    hosts: Vec<String>,
}

impl Witness {
    /// Starts the etcd probe and one witness session per agent.
    pub fn start(config: &Arc<Config>, key: &ClusterKey, name: &str) -> Arc<Witness> {
        let c = config
            .coordination
            .clone()
            .expect("a witness is only started with [coordination]");
        let etcd = EtcdTiming::new(c.session_ttl);
        let w = Arc::new(Witness {
            name: name.to_string(),
            etcd,
            lead: Mutex::new(None),
            promise: Mutex::new(Instant::now() + Self::promise_length(&etcd)),
            promises: Mutex::new(HashMap::new()),
            reached: Mutex::new(None),
            probed: std::sync::atomic::AtomicBool::new(false),
            known: Mutex::new(None),
            fencing: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            hosts: config.hosts.iter().map(|h| h.name.clone()).collect(),
        });
        tokio::spawn(probe_etcd(w.clone(), c, key.clone()));
        for h in &config.hosts {
            let addr = SocketAddr::from((h.ip, h.agent_port));
            tokio::spawn(session(
                w.clone(),
                key.clone(),
                config.clone(),
                h.name.clone(),
                addr,
            ));
        }
        w
    }

    /// The agent counts a consent for `held_for(ttl)` from an answer sent before it; the
    /// promise is longer by a margin for the two hosts' clock rates and scheduling.
    fn promise_length(etcd: &EtcdTiming) -> Duration {
        etcd.ttl + margin(etcd.ttl)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This monitor leads `v` now (the leader seat refreshes it).
    pub fn set_lead(&self, v: Vouching) {
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.term);
        *self.lead.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// This monitor starts counting `host`'s permit over (`end_lease`): no consent of its
    /// reaches `host` from now until [`Witness::fenced`] plus a promise, or for ten
    /// minutes if that never comes (the count given up with its term).
    pub fn fencing(&self, host: &str) {
        self.fencing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), Instant::now() + Duration::from_secs(600));
    }

    /// `host`'s permit is counted over: its agent holds none, and a consent can revive
    /// none (the agent's failsafe only extends a running permit). Consents to it resume a
    /// promise later.
    pub fn fenced(&self, host: &str) {
        self.fencing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                host.to_string(),
                Instant::now() + Self::promise_length(&self.etcd),
            );
    }

    /// Waits until every consent this monitor has sent to `host`'s agent has run out, and
    /// the promises of its start and its campaign: read again after each wait.
    pub async fn wait_out_promise(&self, host: &str) {
        loop {
            let until = self.promised_until(host);
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }

    /// This monitor is about to campaign, listed in the roster: the leader that listed it
    /// may have stopped consenting just before, and its last consents may still hold the
    /// writer; promised like a consent (roster.rs).
    pub fn listed(&self) {
        let mut promise = self.promise.lock().unwrap_or_else(|p| p.into_inner());
        *promise = (*promise).max(Instant::now() + Self::promise_length(&self.etcd));
    }

    /// Until when this monitor must not count `host`'s permit over by waiting.
    pub fn promised_until(&self, host: &str) -> Instant {
        let floor = *self.promise.lock().unwrap_or_else(|p| p.into_inner());
        let consents = self
            .promises
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .copied();
        consents.map_or(floor, |c| c.max(floor))
    }

    /// Something of this monitor's just got an answer from etcd's majority (a campaign
    /// won): it consents no more until its probe finds etcd out of reach again.
    pub fn reached_now(&self) {
        *self.reached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// This monitor cannot reach etcd's majority: no read answered for two probe periods.
    pub fn etcd_unreachable(&self) -> bool {
        if !self.probed.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let reached = *self.reached.lock().unwrap_or_else(|p| p.into_inner());
        reached.is_none_or(|at| at.elapsed() > self.etcd.keepalive_every * 2)
    }

    /// What to send after `host`'s answer, if anything: a consent while etcd is out of
    /// reach, with the vouch when this monitor led the last term, `host` is its writer,
    /// and every agent said lately that etcd does not renew its lease either.
    fn consent(&self, host: &str, echo: u32, freshness: Duration) -> Option<Consent> {
        if !self.etcd_unreachable() {
            return None;
        }
        let fencing = self
            .fencing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .is_some_and(|until| Instant::now() < *until);
        if fencing {
            return None;
        }
        let known = (*self.known.lock().unwrap_or_else(|p| p.into_inner()))?;
        let lead = self.lead.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Only the term it knows as the newest: a leader that saw a later term elected
        // vouches no more.
        let vouch = lead
            .filter(|v| v.term == known && v.writer.as_deref() == Some(host))
            .filter(|_| {
                let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
                self.hosts.iter().all(|h| {
                    heard
                        .get(h)
                        .is_some_and(|s| !s.etcd_ok && s.at.elapsed() <= freshness)
                })
            });
        // Promised before it leaves: the agent counts it from an answer sent earlier.
        let until = Instant::now() + Self::promise_length(&self.etcd);
        let mut promises = self.promises.lock().unwrap_or_else(|p| p.into_inner());
        let p = promises.entry(host.to_string()).or_insert(until);
        *p = (*p).max(until);
        drop(promises);
        Some(match vouch {
            Some(v) => {
                let mut roster = v.roster;
                if !roster.contains(&self.name) {
                    roster.push(self.name.clone());
                }
                Consent {
                    echo,
                    known,
                    vouch: v.term,
                    roster,
                }
            }
            None => Consent {
                echo,
                known,
                vouch: Term::NONE,
                roster: Vec::new(),
            },
        })
    }

    /// For `mmm-control` while etcd is out of reach: what this monitor does for the
    /// writer's failsafe, and what keeps it from vouching.
    pub fn describe(&self) -> Option<String> {
        if !self.etcd_unreachable() {
            return None;
        }
        let mut text =
            String::from("# failsafe: this monitor consents (etcd's majority is out of its reach)");
        let lead = self.lead.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(v) = lead else {
            return Some(text);
        };
        let Some(writer) = &v.writer else {
            return Some(text);
        };
        let freshness = self.etcd.keepalive_every * 4;
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let blockers: Vec<String> = self
            .hosts
            .iter()
            .filter_map(|h| match heard.get(h) {
                None => Some(format!("{h} not heard")),
                Some(s) if s.etcd_ok => Some(format!("{h} still reaches etcd")),
                Some(s) if s.at.elapsed() > freshness => Some(format!("{h} not heard lately")),
                Some(_) => None,
            })
            .collect();
        if blockers.is_empty() {
            text.push_str(&format!(
                "; it vouches for writer {writer} in term {} with the roster {}",
                v.term,
                v.roster.join(", ")
            ));
        } else {
            text.push_str(&format!(
                "; it led term {} but does not vouch for {writer}: {}",
                v.term,
                blockers.join(", ")
            ));
        }
        Some(text)
    }

    fn heard(&self, host: &str, etcd_ok: bool) {
        self.heard.lock().unwrap_or_else(|p| p.into_inner()).insert(
            host.to_string(),
            Heard {
                at: Instant::now(),
                etcd_ok,
            },
        );
    }
}

/// Reads etcd's majority every keepalive period (a linearizable read of the cluster
/// key), moving off a member that fails as every other client of ours does.
async fn probe_etcd(w: Arc<Witness>, c: Coordination, cluster_key: ClusterKey) {
    let every = w.etcd.keepalive_every;
    let members = LazyMembers::new(&c, w.etcd.request_timeout);
    let key = mmm_common::etcd::Keys::new(c.prefix.as_str()).cluster();
    let mut was_unreachable = false;
    loop {
        let started = Instant::now();
        let ok = match members.get().await {
            Ok(m) => {
                let conn = m.current();
                let mut client = conn.bounded;
                match tokio::time::timeout(w.etcd.request_timeout, client.get(key.as_str(), None))
                    .await
                {
                    Ok(Ok(found)) => {
                        // The epoch record names the term that leads now (each leader
                        // writes one when elected); a record that does not verify
                        // changes nothing known.
                        let record = found.kvs().first().and_then(|kv| {
                            mmm_common::epoch::open(&cluster_key, &c.prefix, kv.value()).ok()
                        });
                        if let Some(r) = record {
                            let term = Term {
                                epoch: r.epoch,
                                rev: r.term,
                            };
                            let mut known = w.known.lock().unwrap_or_else(|p| p.into_inner());
                            if known.is_none_or(|k| k != term) {
                                *known = Some(term);
                            }
                        }
                        true
                    }
                    Ok(Err(e)) => {
                        if mmm_common::etcd::member_failure(&e) {
                            m.move_off(conn.generation, &crate::error_chain(&e)).await;
                        }
                        false
                    }
                    Err(_elapsed) => {
                        m.move_off(conn.generation, "no answer in time").await;
                        false
                    }
                }
            }
            Err(_) => false,
        };
        if ok {
            *w.reached.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        }
        w.probed.store(true, std::sync::atomic::Ordering::Relaxed);
        let unreachable = w.etcd_unreachable();
        if unreachable != was_unreachable {
            if unreachable {
                tracing::warn!("etcd's majority is out of reach: this monitor consents to the writer's failsafe");
            } else {
                tracing::info!(
                    "etcd's majority answers again: this monitor no longer consents to a failsafe"
                );
            }
            was_unreachable = unreachable;
        }
        tokio::time::sleep_until(started + every).await;
    }
}

/// One witness session to `host`'s agent, reconnecting for the monitor's life.
async fn session(
    w: Arc<Witness>,
    key: ClusterKey,
    config: Arc<Config>,
    host: String,
    addr: SocketAddr,
) {
    let every = config.monitor.heartbeat_interval;
    let timeout = config.monitor.agent_timeout;
    let mut said = false;
    loop {
        let link =
            AgentLink::connect_in_term(addr, &key, &w.name, &host, Term::WITNESS, timeout).await;
        let mut link = match link {
            Ok(l) => {
                said = false;
                l
            }
            Err(e) => {
                if !said {
                    tracing::info!(%host, error = %crate::error_chain(&e), "witness session not open; retrying");
                    said = true;
                }
                tokio::time::sleep(every.max(Duration::from_millis(200))).await;
                continue;
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tick.tick().await;
            let (id, hb) = match link.heartbeat_with_id(0, timeout).await {
                Ok(x) => x,
                Err(e) => break e,
            };
            w.heard(&host, hb.flags & hb_flags::ETCD_OK != 0);
            if let Some(c) = w.consent(&host, id, timeout + every) {
                if let Err(e) = link.send(&Message::Consent(c), timeout).await {
                    break e;
                }
            }
        };
        tracing::debug!(%host, error = %crate::error_chain(&ended), "witness session ended; reconnecting");
        tokio::time::sleep(every).await;
    }
}
