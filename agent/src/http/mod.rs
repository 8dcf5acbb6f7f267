//! The agent's read-only HTTP listener (`agent.http`), for load balancers and Prometheus:
//! `/writer`, `/reader` and `/health` answer 200 or 503 with a one-line JSON reason
//! ([`verdict`]), `/metrics` the agent's state ([`metrics`]). GET and HEAD only; clients
//! bounded as the monitor's are (`mmm_common::http::serve`). Every answer is read from
//! the agent's state in memory (the status snapshot, the lease): no request waits on SQL
//! or netlink, or holds up anything the agent does.

pub mod metrics;
pub mod verdict;

use crate::server::Agent;
use mmm_common::http::response::{read_only, PROMETHEUS};
use mmm_common::http::{Limits, Request, Response, JSON};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use verdict::{EtcdRenewal, Permit, Snapshot, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("agent.http: listening on {addr} ({hint})")]
    Bind {
        addr: SocketAddr,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Writer,
    Reader,
    Health,
    Metrics,
}

/// The route of `r`, or the response that refuses it: a method other than GET or HEAD
/// (405), an unknown path (404).
pub fn route(r: &Request) -> Result<Route, Response> {
    read_only(r)?;
    match r.path.as_str() {
        "/writer" => Ok(Route::Writer),
        "/reader" => Ok(Route::Reader),
        "/health" => Ok(Route::Health),
        "/metrics" => Ok(Route::Metrics),
        p => Err(Response::error(
            404,
            &format!("no such path {p:?}: try /writer, /reader, /health or /metrics"),
        )),
    }
}

/// A check's response: 200 or 503, `{"<check>": true|false, "reason": "..."}`.
fn check(name: &str, v: &Verdict) -> Response {
    let body = serde_json::json!({ name: v.ok, "reason": v.reason }).to_string();
    Response::with_status(if v.ok { 200 } else { 503 }, JSON, body)
}

/// The answer to a route, from `s`.
pub fn answer(to: Route, host: &str, s: &Snapshot, counters: &metrics::Counters) -> Response {
    match to {
        Route::Writer => check("writer", &verdict::writer(s)),
        Route::Reader => check("reader", &verdict::reader(s)),
        Route::Health => check("health", &verdict::health(s)),
        Route::Metrics => Response::ok(PROMETHEUS, metrics::render(host, s, counters)),
    }
}

/// Binds `agent.http` when it is set and serves it from then on. A listener asked for
/// and not there fails the start: a load balancer would only find out later.
pub async fn start(agent: Arc<Agent>) -> Result<Option<SocketAddr>, StartError> {
    let Some(addr) = agent.config.agent.http else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
                "a port below 1024 needs CAP_NET_BIND_SERVICE, which the agent does not keep: use 1024 or above"
            }
            _ => "another process on that port, or not an address of this host",
        };
        StartError::Bind { addr, hint, source }
    })?;
    let bound = l.local_addr().unwrap_or(addr);
    tokio::spawn(mmm_common::http::serve(
        l,
        Limits::default(),
        move |r: Request| {
            let agent = agent.clone();
            async move {
                match route(&r) {
                    Ok(to) => answer(to, &agent.host.name, &snapshot(&agent), &agent.counters),
                    Err(refusal) => refusal,
                }
            }
        },
    ));
    Ok(Some(bound))
}

/// The agent's state now, as the answers need it.
pub fn snapshot(agent: &Agent) -> Snapshot {
    let status = agent.status();
    let lease = agent.lease();
    let scope = agent.scope();
    let writer_vips = scope.writer_vips();
    let self_fenced = if status.permitless {
        Some("the writer role cannot be taken: no writer permit".to_string())
    } else if status.stall_fenced {
        Some("mysqld does not answer and may wake up writable: held off".to_string())
    } else {
        None
    };
    let timing = agent.timing();
    Snapshot {
        answered_ago: status.answered.map(|at| at.elapsed()),
        fresh: fresh(agent.config.checks.mysql.timeout),
        mysqld_exited: agent.mysqld_exited(),
        read_only: status.read_only,
        held_vips: status.held_vips.clone(),
        reader_vips: scope
            .managed
            .iter()
            .copied()
            .filter(|ip| !writer_vips.contains(ip))
            .collect(),
        writer_vips,
        writer_wanted: lease.writer_wanted(),
        permit: Permit {
            enforced: lease.enforced(),
            left: lease.left(),
            fenced: lease.fenced(),
            etcd: timing.etcd.is_some(),
        },
        self_fenced,
        replication: status.replication.clone(),
        max_lag: agent.config.checks.rep_backlog.max_backlog,
        probe: status.probe,
        fences: lease.fences(),
        etcd: timing.etcd.map(|_| EtcdRenewal {
            ok: agent.etcd_ok(),
            ago: lease.etcd_renewed_ago(),
        }),
        config_load: crate::reload::load_state(),
    }
}

/// How old mysqld's last answer may be and still count: two refreshes of the status and
/// the longest one may wait on mysqld (its connection timeout, as `Agent::start` bounds
/// it). Older, a refresh is stuck behind a server that does not answer.
fn fresh(mysql_timeout: Duration) -> Duration {
    crate::server::REFRESH * 2 + mysql_timeout.max(Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            authorization: None,
        }
    }

    #[test]
    fn routes_the_four_paths_and_refuses_the_rest() {
        assert_eq!(route(&get("/writer")), Ok(Route::Writer));
        assert_eq!(route(&get("/reader")), Ok(Route::Reader));
        assert_eq!(route(&get("/health")), Ok(Route::Health));
        assert_eq!(route(&get("/metrics")), Ok(Route::Metrics));
        let head = Request {
            method: "HEAD".into(),
            ..get("/writer")
        };
        assert_eq!(route(&head), Ok(Route::Writer));
        for missing in ["/", "/writer/", "/status", "/Writer"] {
            let refusal = route(&get(missing)).expect_err(missing);
            assert_eq!(
                (refusal.status, refusal.content_type),
                (404, JSON),
                "{missing}"
            );
        }
        let post = Request {
            method: "POST".into(),
            ..get("/writer")
        };
        assert_eq!(route(&post).expect_err("POST").status, 405);
    }

    /// A snapshot of a host that is no writer: `/writer` 503 with the reason in JSON,
    /// `/health` 200, `/metrics` as text.
    #[test]
    fn checks_answer_200_or_503_with_a_json_reason() {
        let s = Snapshot {
            answered_ago: Some(Duration::from_millis(10)),
            fresh: fresh(Duration::from_secs(1)),
            read_only: Some(true),
            ..Snapshot::default()
        };
        let counters = metrics::Counters::default();
        let r = answer(Route::Writer, "db2", &s, &counters);
        assert_eq!((r.status, r.content_type), (503, JSON));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["writer"], false);
        assert_eq!(
            v["reason"],
            "not the writer: the monitor has not made this host writable"
        );
        let r = answer(Route::Health, "db2", &s, &counters);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["health"], true);
        let r = answer(Route::Metrics, "db2", &s, &counters);
        assert_eq!((r.status, r.content_type), (200, PROMETHEUS));
        assert!(String::from_utf8_lossy(&r.body).contains("\nmmm_agent_writer 0\n"));
    }
}
