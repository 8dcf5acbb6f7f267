//! The agent's health checks with Debian's HAProxy, on the namespace lab: HAProxy in the
//! client's namespace routes TCP to the two masters by `option httpchk GET /writer`
//! (each agent's `agent.http`). A client connecting through it writes on db1; db1's
//! mysqld is killed; after the failover new connections through HAProxy reach db2 and
//! write there. Also what each agent's endpoints answer before and after, as curl in the
//! client's namespace sees them.
//!
//! Nothing about time is asserted: every wait is generous (the machine is shared).

use mmm_tests::client::TABLE;
use mmm_tests::haproxy::{Haproxy, AGENT_HTTP, FRONTEND};
use mmm_tests::lab::Cluster;
use mmm_tests::mariadb::APP;
use mmm_tests::netns::{require_root, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// (status code, body) of a GET made with curl in the client's namespace.
fn curl(c: &Cluster, url: &str) -> (u16, String) {
    let out = c.lab.net.try_exec(
        "client",
        &["curl", "-s", "-m", "20", "-w", "\n%{http_code}", url],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Waits until `url` answers `code` with a body containing `needle`; panics with the last
/// answer.
fn wait_answer(c: &Cluster, url: &str, code: u16, needle: &str) -> String {
    let mut last = (0, String::new());
    let found = wait_for(T, || {
        last = curl(c, url);
        (last.0 == code && last.1.contains(needle)).then(|| last.1.clone())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{url} never answered {code} with {needle:?}; last: {last:?}\nshow:\n{}",
            c.control(&["show"]).1
        )
    })
}

/// One write on a new connection through HAProxy: the server_id that took it, or the
/// client's error.
fn write_through_haproxy(c: &Cluster, id: u64) -> Result<u32, String> {
    let (host, port) = (FRONTEND.0, FRONTEND.1.to_string());
    let out = c.lab.net.try_exec(
        "client",
        &[
            "mariadb",
            "--no-defaults",
            "--connect-timeout=5",
            "-h",
            host,
            "-P",
            &port,
            &format!("-u{}", APP.0),
            &format!("-p{}", APP.1),
            "-N",
            "-B",
            "app",
            "-e",
            &format!("INSERT INTO w (id, sid) VALUES ({id}, @@server_id); SELECT @@server_id"),
        ],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|e| format!("server_id {text:?}: {e}"))
}

#[test]
fn haproxy_sends_new_connections_to_the_new_writer_by_its_writer_check() {
    if !require_root("haproxy") {
        return;
    }
    assert!(
        mmm_tests::haproxy::installed(),
        "haproxy is not installed: apt-get install haproxy (cargo xtask test installs it)"
    );
    let mut c = Cluster::start("hap", &[AGENT_HTTP]);
    c.start_monitor("monitor.log");
    c.bring_online();
    c.db("db1").sql(TABLE);

    // What each agent answers with db1 writing.
    let body = wait_answer(&c, "http://192.0.2.11:9991/writer", 200, "\"writer\":true");
    assert!(body.contains("192.0.2.100"), "{body}");
    wait_answer(&c, "http://192.0.2.12:9991/writer", 503, "\"writer\":false");
    wait_answer(&c, "http://192.0.2.13:9991/reader", 200, "\"reader\":true");
    wait_answer(&c, "http://192.0.2.12:9991/health", 200, "\"health\":true");
    let metrics = wait_answer(
        &c,
        "http://192.0.2.11:9991/metrics",
        200,
        "\nmmm_agent_writer 1\n",
    );
    assert!(
        metrics.contains("\nmmm_agent_writer_permit 1\n"),
        "{metrics}"
    );

    // db2 is read-only: HAProxy marks it down at its first check.
    let haproxy = Haproxy::start(&c, T);
    let haproxy_log = || haproxy.log();

    let mut acked = Vec::new();
    let mut next = 1u64;
    let mut last = Err(String::new());
    let first = wait_for(T, || {
        last = write_through_haproxy(&c, next);
        next += 1;
        last.clone().ok()
    });
    assert_eq!(
        first,
        Some(1),
        "no write through HAProxy on db1: {last:?}\n{}",
        haproxy_log()
    );
    acked.push(next - 1);
    for _ in 0..5 {
        let sid = write_through_haproxy(&c, next);
        assert_eq!(
            sid,
            Ok(1),
            "every new connection reaches db1 while it writes"
        );
        acked.push(next);
        next += 1;
    }

    c.lab.net.signal(c.db("db1").pid, "KILL");
    c.wait_show("db2", "writer(192.0.2.100)", T);
    assert!(
        haproxy.wait_log("masters/db1 is DOWN", T),
        "HAProxy never marked db1 down:\n{}",
        haproxy_log()
    );
    // By its agent's answer (a 503 from /writer), not by a failed connection.
    let reason = haproxy_log()
        .lines()
        .find(|l| l.contains("masters/db1 is DOWN"))
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("code: 503"), "{reason}");
    let landed = wait_for(T, || {
        last = write_through_haproxy(&c, next);
        next += 1;
        last.clone().ok()
    });
    assert_eq!(
        landed,
        Some(2),
        "no write through HAProxy on db2 after the failover: {last:?}\n{}\nshow:\n{}",
        haproxy_log(),
        c.control(&["show"]).1
    );
    acked.push(next - 1);
    for _ in 0..5 {
        let sid = write_through_haproxy(&c, next);
        assert_eq!(
            sid,
            Ok(2),
            "every new connection reaches db2 after the failover"
        );
        acked.push(next);
        next += 1;
    }
    assert!(
        haproxy_log().contains("masters/db2 is UP"),
        "{}",
        haproxy_log()
    );

    // What the agents answer now: db1's mysqld is gone, db2 writes.
    let body = wait_answer(&c, "http://192.0.2.11:9991/writer", 503, "\"writer\":false");
    assert!(
        body.contains("mysqld") || body.contains("not the writer"),
        "{body}"
    );
    wait_answer(&c, "http://192.0.2.11:9991/health", 503, "\"health\":false");
    wait_answer(&c, "http://192.0.2.12:9991/writer", 200, "\"writer\":true");

    // Every acknowledged write is on the new writer, once.
    let ids: Vec<String> = acked.iter().map(u64::to_string).collect();
    let count = c.db("db2").sql(&format!(
        "SELECT COUNT(*) FROM app.w WHERE id IN ({})",
        ids.join(",")
    ));
    assert_eq!(
        count,
        acked.len().to_string(),
        "acknowledged writes {acked:?}"
    );
}
