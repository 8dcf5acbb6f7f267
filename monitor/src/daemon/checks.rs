//! The checks MMM ran, one task per host and check, each on its own check_period with
//! its own reused connection and every attempt bounded by the check's timeout: a hung
//! server times out its own check and stalls nothing else. Pings do not wait for each
//! other ([`run_ping`]).

use super::ping::{PingError, Pinger};
use crate::core::observed::Replication;
use crate::core::{CheckResult, Event};
use crate::replica::{self, ReadError};
use mmm_common::config::{CheckConfig, Host};
use mmm_common::error_chain;
use mmm_common::mysql::{ConnectError, Target};
use mmm_common::sql::{self, Dialect, ReplicaStatus};
use mmm_common::types::CheckKind;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// What a check reports besides its result: how long it took (for metrics), and what a
/// replication check read (for `show --json`).
#[derive(Debug, Clone)]
pub struct Sample {
    pub event: Event,
    pub latency: Duration,
    pub replication: Option<Result<Replication, String>>,
}

/// MySQL's "too many connections": the server is alive and busy.
const ER_CON_COUNT_ERROR: u16 = 1040;

/// "Host is blocked because of many connection errors": the server answered, so it is
/// alive; what is blocked is this monitor's address (max_connect_errors), which any local
/// user who can open and abort connections from that address can provoke. Never a failure
/// of the server by itself: its own outcome, with the fix.
const ER_HOST_IS_BLOCKED: u16 = 1129;

fn classify(e: &mysql_async::Error) -> CheckResult {
    match e {
        mysql_async::Error::Server(s) if s.code == ER_CON_COUNT_ERROR => CheckResult::Unknown {
            message: format!("{} ({})", s.message, s.code),
        },
        mysql_async::Error::Server(s) if s.code == ER_HOST_IS_BLOCKED => CheckResult::Unknown {
            message: format!(
                "{} ({}): this monitor's address is blocked by the server's max_connect_errors, the server itself answers; run `mariadb-admin flush-hosts` (MySQL: TRUNCATE performance_schema.host_cache) on it and raise max_connect_errors",
                s.message, s.code
            ),
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

/// A check's connection failing, or its statement: a failed connection keeps its own
/// error, which names the server and any TLS failure.
#[derive(Debug)]
enum Failure {
    Connect(ConnectError),
    Query(mysql_async::Error),
}

impl Failure {
    fn read_error(self, op: &'static str) -> ReadError {
        match self {
            Failure::Connect(e) => ReadError::Connect(e),
            Failure::Query(source) => ReadError::Query { op, source },
        }
    }
}

/// A connection failure judged as the driver's error would be, with our words where
/// they say more: a TLS failure, an account that may require TLS.
fn classify_failure(f: &Failure) -> CheckResult {
    let e = match f {
        Failure::Query(e) => return classify(e),
        Failure::Connect(e) => e,
    };
    match (e.is_tls(), e.driver(), e.hint()) {
        (false, Some(d), None) => classify(d),
        _ => CheckResult::Failed {
            message: error_chain(e),
            refused: false,
        },
    }
}

struct Mysql {
    target: Target,
    conn: Option<Conn>,
    /// The dialect of `conn`'s server, detected once per connection.
    dialect: Option<Dialect>,
}

impl Mysql {
    async fn rows(&mut self, sql: &str) -> Result<Vec<Row>, Failure> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                // A new connection may reach a restarted, even upgraded, server.
                self.dialect = None;
                self.target.connect().await.map_err(Failure::Connect)?
            }
        };
        let r = conn.query::<Row, _>(sql).await;
        // A server error leaves the connection usable; anything else does not.
        if r.is_ok() || matches!(r, Err(mysql_async::Error::Server(_))) {
            self.conn = Some(conn);
        }
        r.map_err(Failure::Query)
    }

    /// The replica status row (`None`: no replica), in the server's dialect.
    async fn replica_status(&mut self) -> Result<Option<ReplicaStatus>, ReadError> {
        let dialect = match (&self.conn, self.dialect) {
            (Some(_), Some(d)) => d,
            _ => {
                let rows = self
                    .rows(sql::DETECT)
                    .await
                    .map_err(|f| f.read_error(replica::DETECTING))?;
                let d = replica::dialect_of(rows.first())?;
                self.dialect = Some(d);
                d
            }
        };
        let rows = self
            .rows(&dialect.show_replica_status())
            .await
            .map_err(|f| f.read_error(replica::READING_STATUS))?;
        Ok(rows.first().map(replica::status_of))
    }

    /// The server's executed GTID set, in the dialect of the connection the replica
    /// status was just read on; none when it cannot be read (shown, never judged).
    async fn executed_gtids(&mut self) -> Option<String> {
        let dialect = self.dialect?;
        let rows = self.rows(dialect.executed_gtid_set()).await.ok()?;
        rows.first()?.get_opt::<Option<String>, _>(0)?.ok()?
    }
}

/// What `show --json` shows of a replica status reading.
fn replication_of(
    status: &Result<Option<ReplicaStatus>, ReadError>,
    executed_gtids: Option<String>,
) -> Result<Replication, String> {
    match status {
        Err(e) => Err(error_chain(e)),
        Ok(None) => Ok(Replication {
            executed_gtids,
            ..Default::default()
        }),
        Ok(Some(s)) => Ok(Replication {
            source_host: s.source_host.clone(),
            source_port: s.source_port,
            io_running: s.io_running.clone(),
            sql_running: s.sql_running.clone(),
            lag_s: s.seconds_behind,
            received_gtids: s.received_gtids.clone(),
            executed_gtids,
            last_error: s.last_error(),
        }),
    }
}

/// Runs one check forever, sending each result to the core. `kinds` is one check, or
/// rep_threads and rep_backlog together when they share period and timeout: both read
/// the same replica status, so one query answers both (MMM ran it twice).
pub async fn run(
    host: Host,
    monitor_password: String,
    kinds: Vec<CheckKind>,
    cfg: CheckConfig,
    pinger: Pinger,
    clock: super::Clock,
    events: mpsc::Sender<Sample>,
) {
    let names: Vec<String> = kinds.iter().map(ToString::to_string).collect();
    let span = tracing::info_span!("check", host = %host.name, check = %names.join("+"));
    async move {
        let mut mysql = Mysql {
            target: Target::tcp(&host, &host.monitor_user, &monitor_password),
            conn: None,
            dialect: None,
        };
        let mut interval = tokio::time::interval(cfg.check_period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let start = tokio::time::Instant::now();
            let started = clock.now();
            let (results, mut replication) = match tokio::time::timeout(
                cfg.timeout,
                once(&kinds, &host, &cfg, &pinger, &mut mysql),
            )
            .await
            {
                Ok(r) => r,
                Err(_elapsed) => {
                    // Whatever it waited on may be stuck: start afresh next time.
                    mysql.conn = None;
                    let message = format!("no answer within {:?}", cfg.timeout);
                    let failed = CheckResult::Failed {
                        message: message.clone(),
                        refused: false,
                    };
                    let replication = kinds
                        .iter()
                        .any(|k| matches!(k, CheckKind::RepThreads | CheckKind::RepBacklog))
                        .then_some(Err(message));
                    (
                        kinds.iter().map(|k| (*k, failed.clone())).collect(),
                        replication,
                    )
                }
            };
            let latency = start.elapsed();
            for (check, result) in results {
                let sample = Sample {
                    event: Event::Check {
                        host: host.name.clone(),
                        check,
                        result,
                        started,
                    },
                    latency,
                    // One reading, told once.
                    replication: replication.take(),
                };
                if events.send(sample).await.is_err() {
                    return;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// How often the ping check asks.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub normal: Duration,
    /// While the core holds the host's link down.
    pub held: Duration,
    /// Where in `normal` this host's pings fall after the first (which goes at once):
    /// the hosts' pings spread over the period instead of all leaving in one instant,
    /// whose replies, arriving together, overflowed the socket's receive buffer (an
    /// unprivileged monitor cannot enlarge it past net.core.rmem_max: a few hundred).
    pub offset: Duration,
}

/// The ping check. An attempt starts at its [`Pace`] (`held` says which), and none waits
/// for the one before: a host that answers again is seen by the next attempt, not after
/// the previous one's timeout, so a link blip shorter than trap_period releases the host
/// in time.
pub async fn run_ping(
    host: Host,
    cfg: CheckConfig,
    pace: Pace,
    mut held: watch::Receiver<bool>,
    pinger: Pinger,
    clock: super::Clock,
    events: mpsc::Sender<Sample>,
) {
    let span = tracing::info_span!("check", host = %host.name, check = "ping");
    async move {
        let mut attempts = tokio::task::JoinSet::new();
        let mut next = tokio::time::Instant::now();
        let mut first = true;
        let mut told = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let period = if *held.borrow() {
                        pace.held.min(pace.normal)
                    } else {
                        pace.normal
                    };
                    next += if std::mem::take(&mut first) && !pace.offset.is_zero() && period == pace.normal {
                        pace.offset.min(pace.normal)
                    } else {
                        period
                    };
                    // After a stall (the monitor's host swapping, say) one ping, not a burst
                    // of every one missed, and in this host's slot still (whole periods
                    // skipped): slots merged by stalls would bring the bursts back.
                    next = super::clock::on_grid(next, tokio::time::Instant::now(), period);
                    let (pinger, ip, timeout, started) = (pinger.clone(), host.ip, cfg.timeout, clock.now());
                    attempts.spawn(async move {
                        let start = tokio::time::Instant::now();
                        let result = ping_result(pinger.ping(ip, timeout).await);
                        (result, started, start.elapsed())
                    });
                }
                changed = held.changed(), if told => match changed {
                    // Held down: ask now, and then at the quicker pace.
                    Ok(()) if *held.borrow() => next = tokio::time::Instant::now(),
                    Ok(()) => {}
                    Err(_) => told = false,
                },
                Some(done) = attempts.join_next() => {
                    let Ok((result, started, latency)) = done else { continue };
                    let sample = Sample {
                        event: Event::Check {
                            host: host.name.clone(),
                            check: CheckKind::Ping,
                            result,
                            started,
                        },
                        latency,
                        replication: None,
                    };
                    if events.send(sample).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

fn ping_result(r: Result<Duration, PingError>) -> CheckResult {
    match r {
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

/// Each check's result, and what a replication check read.
type Once = (
    Vec<(CheckKind, CheckResult)>,
    Option<Result<Replication, String>>,
);

async fn once(
    kinds: &[CheckKind],
    host: &Host,
    cfg: &CheckConfig,
    pinger: &Pinger,
    mysql: &mut Mysql,
) -> Once {
    let replication = kinds
        .iter()
        .all(|k| matches!(k, CheckKind::RepThreads | CheckKind::RepBacklog));
    if replication {
        let status = mysql.replica_status().await;
        let executed = match status {
            Ok(_) => mysql.executed_gtids().await,
            Err(_) => None,
        };
        let results = kinds
            .iter()
            .map(|k| (*k, replication_result(*k, &status, cfg)))
            .collect();
        return (results, Some(replication_of(&status, executed)));
    }
    let mut out = Vec::with_capacity(kinds.len());
    for kind in kinds {
        out.push((*kind, single(*kind, host, cfg, pinger, mysql).await));
    }
    (out, None)
}

/// rep_threads or rep_backlog from one reading of the replica status.
fn replication_result(
    kind: CheckKind,
    status: &Result<Option<ReplicaStatus>, ReadError>,
    cfg: &CheckConfig,
) -> CheckResult {
    let status = match status {
        Ok(s) => s,
        // The mysql check reports an unreachable server; don't double-count it.
        Err(e) => {
            return CheckResult::Unknown {
                message: error_chain(e),
            }
        }
    };
    let Some(status) = status else {
        return CheckResult::Failed {
            message: "Replication is not set up".into(),
            refused: false,
        };
    };
    if kind == CheckKind::RepThreads {
        rep_threads(status)
    } else {
        rep_backlog(status, cfg.max_backlog)
    }
}

async fn single(
    kind: CheckKind,
    host: &Host,
    cfg: &CheckConfig,
    pinger: &Pinger,
    mysql: &mut Mysql,
) -> CheckResult {
    match kind {
        CheckKind::Ping => ping_result(pinger.ping(host.ip, cfg.timeout).await),
        CheckKind::Mysql => match mysql.rows("SELECT 1").await {
            Ok(_) => CheckResult::Ok,
            Err(e) => classify_failure(&e),
        },
        CheckKind::RepThreads | CheckKind::RepBacklog => {
            let status = mysql.replica_status().await;
            replication_result(kind, &status, cfg)
        }
    }
}

fn rep_threads(status: &ReplicaStatus) -> CheckResult {
    if status.threads_running() {
        return CheckResult::Ok;
    }
    let err = status.last_error();
    CheckResult::Failed {
        message: format!(
            "Replication thread(s) not running: IO {}, SQL {}{}",
            status.io_running.as_deref().unwrap_or_default(),
            status.sql_running.as_deref().unwrap_or_default(),
            if err.is_empty() {
                String::new()
            } else {
                format!(" ({err})")
            }
        ),
        refused: false,
    }
}

/// NULL (threads stopped) counts as OK here, as in MMM: rep_threads reports it.
fn rep_backlog(status: &ReplicaStatus, max_backlog: Duration) -> CheckResult {
    match status.seconds_behind {
        Some(behind) if Duration::from_secs(behind) > max_backlog => CheckResult::Failed {
            message: format!("Replication backlog is too big ({behind})"),
            refused: false,
        },
        _ => CheckResult::Ok,
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
                replication: None,
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

    fn server_error(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.into(),
            state: "HY000".into(),
        })
    }

    /// A server that answers with an error about this monitor (its address blocked, too
    /// many connections) is alive: neither outcome fails the host; other errors do.
    #[test]
    fn a_blocked_monitor_address_is_its_own_outcome_not_a_failure() {
        let blocked = classify(&server_error(
            1129,
            "Host '10.0.0.2' is blocked because of many connection errors",
        ));
        match blocked {
            CheckResult::Unknown { message } => {
                assert!(
                    message.contains("(1129)") && message.contains("flush-hosts"),
                    "{message}"
                )
            }
            other => panic!("1129 must not fail a host: {other:?}"),
        }
        assert!(matches!(
            classify(&server_error(1040, "Too many connections")),
            CheckResult::Unknown { .. }
        ));
        assert!(matches!(
            classify(&server_error(1045, "Access denied")),
            CheckResult::Failed { .. }
        ));
    }

    /// A MySQL 8.4 replica names its columns Replica_*/Source_*; the checks read them.
    fn mysql_8_4(io: &str, sql: &str, behind: Option<&str>, sql_error: &str) -> ReplicaStatus {
        ReplicaStatus::from_columns([
            ("Source_Host", Some("10.0.0.1".to_string())),
            ("Replica_IO_Running", Some(io.to_string())),
            ("Replica_SQL_Running", Some(sql.to_string())),
            ("Seconds_Behind_Source", behind.map(str::to_string)),
            ("Last_IO_Error", Some(String::new())),
            ("Last_SQL_Error", Some(sql_error.to_string())),
        ])
    }

    #[test]
    fn rep_threads_reads_the_renamed_columns() {
        assert_eq!(
            rep_threads(&mysql_8_4("Yes", "Yes", Some("0"), "")),
            CheckResult::Ok
        );
        assert_eq!(
            rep_threads(&mysql_8_4("Yes", "No", None, "Error 'Duplicate entry'")),
            CheckResult::Failed {
                message:
                    "Replication thread(s) not running: IO Yes, SQL No (Error 'Duplicate entry')"
                        .into(),
                refused: false,
            }
        );
    }

    #[test]
    fn rep_backlog_reads_seconds_behind_source() {
        let max = Duration::from_secs(60);
        assert_eq!(
            rep_backlog(&mysql_8_4("Yes", "Yes", Some("61"), ""), max),
            CheckResult::Failed {
                message: "Replication backlog is too big (61)".into(),
                refused: false,
            }
        );
        assert_eq!(
            rep_backlog(&mysql_8_4("Yes", "Yes", Some("60"), ""), max),
            CheckResult::Ok
        );
        // NULL: the threads are stopped, which rep_threads reports.
        assert_eq!(
            rep_backlog(&mysql_8_4("No", "Yes", None, ""), max),
            CheckResult::Ok
        );
    }

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
