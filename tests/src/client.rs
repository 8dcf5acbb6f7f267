//! A client in the `client` namespace that writes through the writer VIP: one INSERT
//! every `interval`, each row with a new id; every acknowledged id is recorded, so that
//! after a failover each can be checked to be present exactly once on every server.

use crate::netns::block_on_in;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
pub struct WriteLog {
    /// (id, when it was acknowledged)
    pub acked: Vec<(u64, Instant)>,
    /// (when, error) of failed attempts; the outcome of those rows is unknown.
    pub failed: Vec<(Instant, String)>,
}

pub struct Writer {
    task: Background,
    log: Arc<Mutex<WriteLog>>,
}

/// A task on its own thread inside a namespace, told to stop through a flag; stopping and
/// dropping both wait for it.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Runs `f(stop)` in `ns`; `f` returns once `stop` is set.
    pub fn start<F, Fut>(ns: &str, f: F) -> Background
    where
        F: FnOnce(Arc<AtomicBool>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, ns) = (stop.clone(), ns.to_string());
        let thread = std::thread::spawn(move || block_on_in(&ns, move || f(s)));
        Background {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connection options of the lab's application user through `vip`, database `app`.
pub fn app_opts(vip: &str) -> mysql_async::OptsBuilder {
    app_opts_at(vip, 3306)
}

/// As [`app_opts`], through `host:port` (a proxy in front of the servers).
pub fn app_opts_at(host: &str, port: u16) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(crate::mariadb::APP.0))
        .pass(Some(crate::mariadb::APP.1))
        .db_name(Some("app"))
        .prefer_socket(false)
}

/// The table the writer fills (create it on the writer before starting).
/// `sid` records which server took the write.
pub const TABLE: &str = "CREATE TABLE IF NOT EXISTS app.w (id BIGINT PRIMARY KEY, sid INT, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))";

/// How a client writes and retries.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Ids start here: two clients writing at once must not collide.
    pub first_id: u64,
    /// Bound on one attempt (connect if needed, then the INSERT).
    pub attempt: Duration,
    /// After a failed attempt: try again at once (a connection pool) or after `interval`.
    pub retry_at_once: bool,
}

impl Policy {
    /// The lab's client: 500 ms per attempt, the write interval between attempts.
    pub const LAB: Policy = Policy {
        first_id: 1,
        attempt: Duration::from_millis(500),
        retry_at_once: false,
    };
    /// A connection pool's view: 1 s connect timeout, retries at once.
    pub const RETRYING: Policy = Policy {
        first_id: 1_000_000_000,
        attempt: Duration::from_secs(1),
        retry_at_once: true,
    };
    /// The same pool writing through HAProxy (its own ids).
    pub const HAPROXY: Policy = Policy {
        first_id: 2_000_000_000,
        ..Policy::RETRYING
    };
}

impl Writer {
    pub fn start(client_ns: &str, vip: &str, interval: Duration) -> Writer {
        Writer::with_policy(client_ns, vip, interval, Policy::LAB)
    }

    pub fn with_policy(client_ns: &str, vip: &str, interval: Duration, policy: Policy) -> Writer {
        Writer::with_policy_at(client_ns, (vip, 3306), interval, policy)
    }

    /// As [`Writer::with_policy`], through `(host, port)`.
    pub fn with_policy_at(
        client_ns: &str,
        (host, port): (&str, u16),
        interval: Duration,
        policy: Policy,
    ) -> Writer {
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let (l, opts) = (log.clone(), app_opts_at(host, port));
        let task = Background::start(client_ns, move |s| async move {
            let mut conn: Option<mysql_async::Conn> = None;
            let mut id: u64 = policy.first_id - 1;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let attempt = async {
                    let c = match conn.take() {
                        Some(c) => c,
                        None => mysql_async::Conn::new(opts.clone())
                            .await
                            .map_err(|e| e.to_string())?,
                    };
                    let mut c = c;
                    c.exec_drop("INSERT INTO w (id, sid) VALUES (?, @@server_id)", (id,))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(c)
                };
                let ok = match tokio::time::timeout(policy.attempt, attempt).await {
                    Ok(Ok(c)) => {
                        conn = Some(c);
                        l.lock().unwrap().acked.push((id, Instant::now()));
                        true
                    }
                    Ok(Err(e)) => {
                        l.lock().unwrap().failed.push((Instant::now(), e));
                        false
                    }
                    Err(_) => {
                        l.lock().unwrap().failed.push((
                            Instant::now(),
                            format!("no answer within {:?}", policy.attempt),
                        ));
                        false
                    }
                };
                if ok || !policy.retry_at_once {
                    tokio::time::sleep(interval).await;
                }
            }
        });
        Writer { task, log }
    }

    pub fn log(&self) -> WriteLog {
        self.log.lock().unwrap().clone()
    }

    /// Stops writing and returns the log.
    pub fn stop(mut self) -> WriteLog {
        self.task.stop();
        self.log()
    }
}

/// Two clients through `vip` from `client_ns`: the lab's (an attempt every 5 ms, 500 ms
/// each) and a pool's (1 s attempts, retried at once), so that some attempt is always
/// waiting when an address moves. Ids start at `(round + 1) * 10,000,000`.
pub fn hang_clients(client_ns: &str, vip: &str, round: u64) -> Vec<Writer> {
    let base = (round + 1) * 10_000_000;
    vec![
        Writer::with_policy(
            client_ns,
            vip,
            Duration::from_millis(5),
            Policy {
                first_id: base,
                ..Policy::LAB
            },
        ),
        Writer::with_policy(
            client_ns,
            vip,
            Duration::from_millis(5),
            Policy {
                first_id: base + 5_000_000,
                ..Policy::RETRYING
            },
        ),
    ]
}

/// Acknowledged ids missing from, or present more than once on, a server: (missing, duplicated).
pub fn verify(db: &crate::mariadb::Mariadb, acked: &[(u64, Instant)]) -> (Vec<u64>, Vec<u64>) {
    let rows = db.sql("SELECT id, COUNT(*) FROM app.w GROUP BY id");
    let counts: std::collections::HashMap<u64, u64> = rows
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    let missing = acked
        .iter()
        .filter(|(id, _)| !counts.contains_key(id))
        .map(|(id, _)| *id)
        .collect();
    let dup = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    (missing, dup)
}
