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
//! Each consent is a promise ([`Witness::promised_until`]): this monitor ends no writer's
//! permit by waiting (`LeaseEnded`) before `session_ttl` plus a margin after sending it,
//! nor before that long after it started (a consent of an earlier run of it may still
//! count). A monitor that reaches etcd sends no consent: that is its veto, and the
//! writer's failsafe ends within `session_ttl` of it, before this monitor, elected, could
//! count the writer fenced. docs/fencing.md ("Failsafe") has every interleaving.

use crate::agents::link::AgentLink;
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
    /// No `LeaseEnded` before this (the promise every consent makes).
    promise: Mutex<Instant>,
    /// When this monitor last read etcd's majority (a linearizable read answered).
    reached: Mutex<Option<Instant>>,
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
            reached: Mutex::new(None),
            heard: Mutex::new(HashMap::new()),
            hosts: config.hosts.iter().map(|h| h.name.clone()).collect(),
        });
        tokio::spawn(probe_etcd(w.clone(), c));
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
        *self.lead.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// This monitor is about to campaign, listed in the roster: the leader that listed it
    /// may have stopped consenting just before, and its last consents may still hold the
    /// writer; promised like a consent (roster.rs).
    pub fn listed(&self) {
        let mut promise = self.promise.lock().unwrap_or_else(|p| p.into_inner());
        *promise = (*promise).max(Instant::now() + Self::promise_length(&self.etcd));
    }

    /// Until when this monitor must not count a writer's permit over by waiting.
    pub fn promised_until(&self) -> Instant {
        *self.promise.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something of this monitor's just got an answer from etcd's majority (a campaign won,
    /// a guarded write): it consents no more from now, without waiting for its probe. A
    /// leader elected never consents after its election (docs/fencing.md, "Failsafe").
    pub fn reached_now(&self) {
        *self.reached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// This monitor cannot reach etcd's majority: no read answered for two probe periods.
    pub fn etcd_unreachable(&self) -> bool {
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
        let lead = self.lead.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let vouch = lead
            .filter(|v| v.writer.as_deref() == Some(host))
            .filter(|_| {
                let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
                self.hosts.iter().all(|h| {
                    heard
                        .get(h)
                        .is_some_and(|s| !s.etcd_ok && s.at.elapsed() <= freshness)
                })
            });
        // Promised before it leaves: the agent counts it from an answer sent earlier.
        let mut promise = self.promise.lock().unwrap_or_else(|p| p.into_inner());
        *promise = (*promise).max(Instant::now() + Self::promise_length(&self.etcd));
        Some(match vouch {
            Some(v) => {
                let mut roster = v.roster;
                if !roster.contains(&self.name) {
                    roster.push(self.name.clone());
                }
                Consent {
                    echo,
                    vouch: v.term,
                    roster,
                }
            }
            None => Consent {
                echo,
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
async fn probe_etcd(w: Arc<Witness>, c: Coordination) {
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
                    Ok(Ok(_)) => true,
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
