//! The checks MMM ran, one task per host and check, each on its own check_period with
//! its own reused connection and every attempt bounded by the check's timeout: a hung
//! server times out its own check and stalls nothing else.

use super::ping::{PingError, Pinger};
use crate::core::{CheckResult, Event};
use mmm_common::config::{CheckConfig, Host};
use mmm_common::types::CheckKind;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// What a check reports besides its result: how long it took (for metrics).
#[derive(Debug, Clone)]
pub struct Sample {
    pub event: Event,
    pub latency: Duration,
}

/// MySQL's "too many connections": the server is alive and busy.
const ER_CON_COUNT_ERROR: u16 = 1040;

fn classify(e: &mysql_async::Error) -> CheckResult {
    match e {
        mysql_async::Error::Server(s) if s.code == ER_CON_COUNT_ERROR => CheckResult::Unknown {
            message: format!("{} ({})", s.message, s.code),
        },
        mysql_async::Error::Server(s) => CheckResult::Failed {
            message: format!("{} ({})", s.message, s.code),
            refused: false,
        },
        mysql_async::Error::Io(io) => {
            let refused = matches!(io, mysql_async::IoError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
            CheckResult::Failed {
                message: format!("Connect error: {io}"),
                refused,
            }
        }
        other => CheckResult::Failed {
            message: other.to_string(),
            refused: false,
        },
    }
}

struct Mysql {
    opts: OptsBuilder,
    conn: Option<Conn>,
}

impl Mysql {
    async fn rows(&mut self, sql: &str) -> Result<Vec<Row>, mysql_async::Error> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Conn::new(self.opts.clone()).await?,
        };
        let r = conn.query::<Row, _>(sql).await;
        // A server error leaves the connection usable; anything else does not.
        if r.is_ok() || matches!(r, Err(mysql_async::Error::Server(_))) {
            self.conn = Some(conn);
        }
        r
    }
}

fn field(row: &Row, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        row.get_opt::<Option<String>, _>(*n)
            .and_then(Result::ok)
            .flatten()
    })
}

/// Runs one check forever, sending each result to the core.
pub async fn run(
    host: Host,
    monitor_password: String,
    kind: CheckKind,
    cfg: CheckConfig,
    pinger: Pinger,
    events: mpsc::Sender<Sample>,
) {
    let span = tracing::info_span!("check", host = %host.name, check = %kind);
    async move {
        let mut mysql = Mysql {
            opts: OptsBuilder::default()
                .ip_or_hostname(host.ip.to_string())
                .tcp_port(host.mysql_port)
                .user(Some(host.monitor_user.clone()))
                .pass(Some(monitor_password))
                .prefer_socket(false),
            conn: None,
        };
        let mut interval = tokio::time::interval(cfg.check_period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let start = tokio::time::Instant::now();
            let result = match tokio::time::timeout(
                cfg.timeout,
                once(kind, &host, &cfg, &pinger, &mut mysql),
            )
            .await
            {
                Ok(r) => r,
                Err(_elapsed) => {
                    // Whatever it waited on may be stuck: start afresh next time.
                    mysql.conn = None;
                    CheckResult::Failed {
                        message: format!("no answer within {:?}", cfg.timeout),
                        refused: false,
                    }
                }
            };
            let sample = Sample {
                event: Event::Check {
                    host: host.name.clone(),
                    check: kind,
                    result,
                },
                latency: start.elapsed(),
            };
            if events.send(sample).await.is_err() {
                return;
            }
        }
    }
    .instrument(span)
    .await
}

async fn once(
    kind: CheckKind,
    host: &Host,
    cfg: &CheckConfig,
    pinger: &Pinger,
    mysql: &mut Mysql,
) -> CheckResult {
    match kind {
        CheckKind::Ping => {
            match pinger.ping(host.ip, cfg.timeout).await {
                Ok(_) => CheckResult::Ok,
                // Not being allowed to ping says nothing about the host.
                Err(e @ PingError::Open { .. }) => CheckResult::Unknown {
                    message: e.to_string(),
                },
                Err(e) => CheckResult::Failed {
                    message: e.to_string(),
                    refused: false,
                },
            }
        }
        CheckKind::Mysql => match mysql.rows("SELECT 1").await {
            Ok(_) => CheckResult::Ok,
            Err(e) => classify(&e),
        },
        CheckKind::RepThreads | CheckKind::RepBacklog => {
            let rows = match mysql.rows("SHOW SLAVE STATUS").await {
                Ok(r) => r,
                // The mysql check reports an unreachable server; don't double-count it.
                Err(e) => {
                    return CheckResult::Unknown {
                        message: format!("can't read replication status: {e}"),
                    }
                }
            };
            let Some(row) = rows.first() else {
                return CheckResult::Failed {
                    message: "Replication is not set up".into(),
                    refused: false,
                };
            };
            if kind == CheckKind::RepThreads {
                let io =
                    field(row, &["Slave_IO_Running", "Replica_IO_Running"]).unwrap_or_default();
                let sql =
                    field(row, &["Slave_SQL_Running", "Replica_SQL_Running"]).unwrap_or_default();
                if io == "Yes" && sql == "Yes" {
                    CheckResult::Ok
                } else {
                    let err = [
                        field(row, &["Last_IO_Error"]),
                        field(row, &["Last_SQL_Error"]),
                    ]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                    CheckResult::Failed {
                        message: format!(
                            "Replication thread(s) not running: IO {io}, SQL {sql}{}",
                            if err.is_empty() {
                                String::new()
                            } else {
                                format!(" ({err})")
                            }
                        ),
                        refused: false,
                    }
                }
            } else {
                // NULL (threads stopped) counts as OK here, as in MMM: rep_threads reports it.
                match field(row, &["Seconds_Behind_Master", "Seconds_Behind_Source"])
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    Some(behind) if Duration::from_secs(behind) > cfg.max_backlog => {
                        CheckResult::Failed {
                            message: format!("Replication backlog is too big ({behind})"),
                            refused: false,
                        }
                    }
                    _ => CheckResult::Ok,
                }
            }
        }
    }
}

/// The network guard: is any of ping_ips answering?
pub async fn network_guard(
    ips: Vec<Ipv4Addr>,
    interval: Duration,
    timeout: Duration,
    pinger: Pinger,
    events: mpsc::Sender<Sample>,
) {
    let mut tick = tokio::time::interval(interval);
    let mut blind_logged = false;
    loop {
        tick.tick().await;
        let start = tokio::time::Instant::now();
        let mut ok = false;
        let mut opened = 0;
        let mut open_error = None;
        for ip in &ips {
            match pinger.ping(*ip, timeout).await {
                Ok(_) => {
                    opened += 1;
                    ok = true;
                    break;
                }
                Err(e @ PingError::Open { .. }) => open_error = Some(e),
                Err(_) => opened += 1,
            }
        }
        // A guard that cannot ping at all (no IPv4 target, no ICMP socket) knows nothing
        // about the network: it must not freeze every state forever. It steps aside,
        // loudly, once.
        if opened == 0 {
            if !blind_logged {
                let why = open_error
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no IPv4 address in monitor.ping_ips".into());
                tracing::error!(%why, "the network guard cannot ping: it is off, states change without it");
                blind_logged = true;
            }
            ok = true;
        }
        if events
            .send(Sample {
                event: Event::Network { ok },
                latency: start.elapsed(),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard with nothing it can ping knows nothing about the network: it must not report
    /// "down" forever (that would freeze every state change), it steps aside.
    #[tokio::test]
    async fn a_guard_that_cannot_ping_does_not_freeze_the_cluster() {
        let (tx, mut rx) = mpsc::channel(4);
        let guard = tokio::spawn(network_guard(
            vec![],
            Duration::from_millis(10),
            Duration::from_millis(10),
            Pinger::new(),
            tx,
        ));
        let sample = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a sample")
            .expect("the guard runs");
        guard.abort();
        assert!(
            matches!(sample.event, Event::Network { ok: true }),
            "{:?}",
            sample.event
        );
    }
}
