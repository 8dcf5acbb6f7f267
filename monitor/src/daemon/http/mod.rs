//! The read-only HTTP listener (`monitor.http`): the live page, `/status` (exactly
//! `show --json`), `/hosts/NAME`, `/events` and `/metrics`; and the metrics-only listener
//! of `monitor.metrics`, on the same code.
//!
//! Every answer about the cluster is `show --json`, asked of the event loop through the
//! control channel as `mmm-control show --json` is: one message per request, answered
//! from the core in the loop's own time, so no client can hold the loop. A client is
//! bounded instead (`mmm_common::http::serve`, shared with the agent's listener): 32
//! connections at once (more are answered 503 and closed), 5 s to send its request head
//! (8 KiB at most), 10 s to take the answer, one request per connection. A fleet's standby drives nothing: it serves its own view (standing by,
//! who leads) from etcd (standby.rs).

pub mod route;
mod standby;

use super::{control_socket, metrics};
use crate::control::Command;
use mmm_common::http::{Limits, Request};
use route::{Exposure, Response, Route, JSON};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a request waits for the event loop's answer (it may be hearing the agents
/// at the start of a term).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("monitor.http_token_file: {}", mmm_common::error_chain(.source))]
    Token {
        #[source]
        source: mmm_common::config::SecretError,
    },
    #[error("monitor.http_token_file {path} is empty: write the token in it (one line)")]
    EmptyToken { path: PathBuf },
    #[error("monitor.http: listening on {addr} (another process on that port, or not an address of this host)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Whether this process drives the agents now (a fleet's leader, or a monitor alone); the
/// event loop holds it while it runs.
#[derive(Debug, Clone, Default)]
pub struct Driving(Arc<AtomicBool>);

/// Clears [`Driving`] when dropped.
pub struct DrivingGuard(Arc<AtomicBool>);

impl Driving {
    pub fn hold(&self) -> DrivingGuard {
        self.0.store(true, Ordering::SeqCst);
        DrivingGuard(self.0.clone())
    }

    fn now(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for DrivingGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What every connection shares.
struct Hub {
    control: mpsc::Sender<control_socket::Request>,
    metrics: metrics::Shared,
    driving: Driving,
    token: Option<String>,
    /// In a fleet: this monitor's view while it stands by.
    standby: Option<standby::View>,
}

/// Starts the listeners the config asks for. `monitor.http` must bind (a page that is not
/// there would surprise only later); `monitor.metrics` keeps its old leniency and only
/// logs a failure to bind.
pub async fn start(
    config: &mmm_common::config::Config,
    name: &str,
    control: mpsc::Sender<control_socket::Request>,
    metrics: metrics::Shared,
    driving: Driving,
) -> Result<(), StartError> {
    let token = match &config.monitor.http_token_file {
        None => None,
        Some(path) => {
            let t = mmm_common::config::Secret::File(path.clone())
                .reveal()
                .map_err(|source| StartError::Token { source })?;
            if t.trim().is_empty() {
                return Err(StartError::EmptyToken { path: path.clone() });
            }
            Some(t.trim().to_string())
        }
    };
    let hub = Arc::new(Hub {
        control,
        metrics,
        driving,
        token,
        standby: config
            .coordination
            .clone()
            .map(|c| standby::View::new(c, name.to_string())),
    });
    if let Some(addr) = config.monitor.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        tracing::info!(%addr, token = hub.token.is_some(), "HTTP listening (live page, /status, /hosts/NAME, /events, /metrics)");
        tokio::spawn(serve(l, hub.clone(), Exposure::Full));
    }
    if let Some(addr) = config.monitor.metrics {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, "metrics endpoint listening");
                tokio::spawn(serve(l, hub, Exposure::MetricsOnly));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "monitor.metrics: cannot listen; no metrics served there")
            }
        }
    }
    Ok(())
}

async fn serve(l: tokio::net::TcpListener, hub: Arc<Hub>, exposure: Exposure) {
    mmm_common::http::serve(l, Limits::default(), move |r: Request| {
        let hub = hub.clone();
        async move {
            match route::route(&r, exposure, hub.token.as_deref()) {
                Ok(to) => answer(&hub, to).await,
                Err(refusal) => refusal,
            }
        }
    })
    .await
}

/// The monitor's answer to a route it may serve.
async fn answer(hub: &Hub, to: Route) -> Response {
    match to {
        Route::Page => Response::ok("text/html; charset=utf-8", PAGE),
        Route::Script => Response::ok("text/javascript; charset=utf-8", SCRIPT),
        Route::Style => Response::ok("text/css; charset=utf-8", STYLE),
        Route::Metrics => {
            let text = metrics::render(&hub.metrics.lock().unwrap_or_else(|p| p.into_inner()));
            Response::ok(mmm_common::http::response::PROMETHEUS, text)
        }
        Route::Status => match status(hub).await {
            Ok(View::Driving(json)) => Response::ok(JSON, json),
            Ok(View::Standby(doc)) => Response::ok(JSON, doc.to_string()),
            Err(refusal) => refusal,
        },
        Route::Host(name) => match status(hub).await {
            Ok(View::Driving(json)) => host(&json, &name),
            Ok(View::Standby(doc)) => Response::error(
                503,
                &format!(
                    "this monitor stands by and drives no host; {}",
                    standby::who_leads(&doc)
                ),
            ),
            Err(refusal) => refusal,
        },
        Route::Events => match status(hub).await {
            Ok(View::Driving(json)) => events(&json),
            Ok(View::Standby(doc)) => events(&doc.to_string()),
            Err(refusal) => refusal,
        },
    }
}

/// What this monitor can tell of the cluster now.
enum View {
    /// `show --json`, as the event loop answered it.
    Driving(String),
    /// A fleet's standby: its own view.
    Standby(serde_json::Value),
}

async fn status(hub: &Hub) -> Result<View, Response> {
    if let Some(standby) = &hub.standby {
        if !hub.driving.now() {
            return Ok(View::Standby(standby.document().await));
        }
    }
    let busy = |why: &str| Response::error(503, why);
    let (tx, rx) = oneshot::channel();
    let asked = tokio::time::timeout(
        ANSWER_TIMEOUT,
        hub.control.send((Command::Show { json: true }, tx)),
    );
    match asked.await {
        Ok(Ok(())) => {}
        Ok(Err(_closed)) => return Err(busy("the monitor is shutting down")),
        Err(_elapsed) => return Err(busy("the monitor's control queue is full; retry")),
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(text)) if text.starts_with("ERROR:") => Err(busy(text.trim_end())),
        Ok(Ok(text)) => Ok(View::Driving(text)),
        Ok(Err(_dropped)) => Err(busy("the monitor is shutting down")),
        Err(_elapsed) => Err(busy(
            "no answer from the monitor within 5s (it may be starting a term); retry",
        )),
    }
}

/// `/hosts/NAME`: the host's object of `show --json`, or 404 naming the hosts there are.
fn host(status: &str, name: &str) -> Response {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(status) else {
        return Response::error(503, "show --json did not parse");
    };
    let hosts = doc["hosts"].as_array().cloned().unwrap_or_default();
    match hosts.iter().find(|h| h["name"] == name) {
        Some(h) => Response::ok(JSON, serde_json::to_string_pretty(h).unwrap_or_default()),
        None => {
            let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
            Response::error(
                404,
                &format!("unknown host {name:?}; hosts: {}", names.join(", ")),
            )
        }
    }
}

/// `/events`: the recent transitions and failovers of `show --json`, and the promotion
/// under way.
fn events(status: &str) -> Response {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(status) else {
        return Response::error(503, "show --json did not parse");
    };
    let events = serde_json::json!({
        "transitions": doc["transitions"],
        "failovers": doc["failovers"],
        "promotion": doc["promotion"],
    });
    Response::ok(
        JSON,
        serde_json::to_string_pretty(&events).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const STATUS: &str = r#"{"hosts":[{"name":"db1","state":"ONLINE"},{"name":"db2","state":"ONLINE"}],"transitions":[{"host":"db1"}],"failovers":[],"promotion":null}"#;

    #[test]
    fn a_host_is_picked_from_show_json_and_an_unknown_one_is_a_json_404() {
        let r = host(STATUS, "db2");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["state"], "ONLINE");
        let r = host(STATUS, "db9");
        assert_eq!((r.status, r.content_type), (404, JSON));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["error"], "unknown host \"db9\"; hosts: db1, db2");
    }

    #[test]
    fn events_are_the_history_of_show_json() {
        let r = events(STATUS);
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["transitions"][0]["host"], "db1");
        assert!(v["failovers"].as_array().is_some_and(|f| f.is_empty()));
        assert!(v.get("hosts").is_none());
    }

    /// The listener end to end on loopback, with a fake event loop answering `show
    /// --json`: the API, refusals of bad requests, and a client that sends nothing does
    /// not keep others waiting.
    #[tokio::test]
    async fn serves_the_api_and_refuses_bad_requests() {
        let (tx, mut rx) = mpsc::channel::<control_socket::Request>(8);
        tokio::spawn(async move {
            while let Some((command, reply)) = rx.recv().await {
                assert_eq!(command, Command::Show { json: true });
                let _ = reply.send(STATUS.to_string());
            }
        });
        let hub = Arc::new(Hub {
            control: tx,
            metrics: Default::default(),
            driving: Driving::default(),
            token: None,
            standby: None,
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, hub, Exposure::Full));
        // A silent client holds one connection, not the listener.
        let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let ask = |raw: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(raw.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let r = ask("GET /status HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with(STATUS),
            "{r}"
        );
        let r = ask("GET /hosts/db7 HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 404 ") && r.contains("unknown host"),
            "{r}"
        );
        let r = ask("POST /status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").await;
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD"),
            "{r}"
        );
        let r = ask("nonsense\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = ask("HEAD / HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = ask("GET / HTTP/1.1\r\n\r\n").await;
        assert!(
            r.contains("text/html") && r.contains("<script src=\"app.js\""),
            "{r}"
        );
    }
}
