//! The monitor's live page in Debian's headless Chromium, on the namespace lab: loaded
//! once, it shows the three hosts and the writer on db1; db1's mysqld is killed and the
//! same page, never reloaded, shows db2 as the writer and the failover's timeline. Also
//! the read-only API's answers and refusals, as a client in the monitor's namespace sees
//! them.
//!
//! Screenshots of both states go to target/live-page/ (with MMM_UPDATE_SCREENSHOTS=1, to
//! docs/, which the README shows).

use mmm_tests::browser::Browser;
use mmm_tests::lab::Cluster;
use mmm_tests::netns::require_root;
use std::path::PathBuf;
use std::time::Duration;

/// Generous: the machine is shared and nothing about time is asserted.
const T: Duration = Duration::from_secs(60);
const URL: &str = "http://127.0.0.1:9992/";

fn screenshots() -> PathBuf {
    let dir = if std::env::var("MMM_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        mmm_tests::workspace_root().join("docs")
    } else {
        mmm_tests::target_dir().join("live-page")
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// (status code, body) of a request made with curl in the monitor's namespace.
fn curl(c: &Cluster, args: &[&str]) -> (u16, String) {
    let mut full = vec!["curl", "-s", "-m", "20", "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = c.lab.net.try_exec("mon", &full);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_live_page_follows_a_failover_without_a_reload() {
    if !require_root("live_page") {
        return;
    }
    let mut c = Cluster::start(
        "live",
        &[("[monitor]\n", "[monitor]\nhttp = \"127.0.0.1:9992\"\n")],
    );
    c.start_monitor("monitor.log");
    c.bring_online();
    // A table and a row: GTID sets to show.
    c.db("db1").sql(mmm_tests::client::TABLE);

    let (code, body) = curl(&c, &[&format!("{URL}status")]);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    assert_eq!(status["active_master"], "db1", "{body}");
    let (_, show) = c.control(&["show", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&show).expect("show --json");
    assert_eq!(
        status["hosts"].as_array().map(Vec::len),
        shown["hosts"].as_array().map(Vec::len),
        "/status is show --json"
    );
    let (code, body) = curl(&c, &[&format!("{URL}hosts/db9")]);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("unknown host"), "{body}");
    let (code, body) = curl(&c, &["-X", "POST", &format!("{URL}status")]);
    assert_eq!(code, 405, "{body}");
    let (code, body) = curl(&c, &[&format!("{URL}metrics")]);
    assert!(
        code == 200 && body.contains("mmm_writer{host=\"db1\""),
        "{code} {body}"
    );

    let profile = c.lab.dir.path().join("chromium");
    let mut page = Browser::open(
        &c.lab.net.node("mon").ns,
        &profile,
        URL,
        &c.lab.dir.path().join("chromium.log"),
    )
    .unwrap_or_else(|e| panic!("chromium: {e:#}\n{}", c.lab.log("chromium.log")));
    let first = "document.querySelectorAll('#hosts tbody tr').length === 3 \
        && document.getElementById('writer').textContent === 'db1' \
        && document.querySelector('#host-db1').dataset.roles.includes('writer(192.0.2.100)') \
        && document.querySelectorAll('#tree li').length === 3";
    assert!(
        page.wait_true(first, T),
        "the page never showed three hosts with db1 writing: {:?}",
        page.eval("document.body.innerText")
    );
    page.screenshot(&screenshots().join("live-page.png"))
        .expect("screenshot");

    c.lab.net.signal(c.db("db1").pid, "KILL");
    let after = "document.getElementById('writer').textContent === 'db2' \
        && document.querySelector('#host-db1').dataset.state === 'HARD_OFFLINE' \
        && document.querySelector('#host-db2').dataset.roles.includes('writer(192.0.2.100)') \
        && !!document.querySelector('#failovers article[data-to=\"db2\"][data-from=\"db1\"][data-outcome=\"promoted\"]')";
    assert!(
        page.wait_true(after, T),
        "the page never showed db2 writing after db1's mysqld was killed: {:?}\nshow:\n{}",
        page.eval("document.body.innerText"),
        c.control(&["show"]).1
    );
    // The same page saw both writers: it was never reloaded.
    let seen = page
        .eval("[...document.querySelectorAll('#seen li')].map(l => l.dataset.writer)")
        .expect("seen");
    let seen: Vec<&str> = seen
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(seen.first(), Some(&"db1"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"db2"), "{seen:?}");
    // The timeline: its steps with their offsets, and the cause.
    let timeline = page
        .eval(
            "(() => { const a = document.querySelector('#failovers article[data-to=\"db2\"]'); \
             return { cause: a.querySelector('.cause').textContent, \
             offsets: [...a.querySelectorAll('.steps li')].map(l => Number(l.dataset.offset)), \
             steps: [...a.querySelectorAll('.steps li')].map(l => l.textContent) }; })()",
        )
        .expect("timeline");
    let offsets: Vec<u64> = timeline["offsets"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    assert!(offsets.len() >= 3, "{timeline}");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{timeline}");
    assert!(
        timeline["cause"]
            .as_str()
            .is_some_and(|c| c.contains("db1")),
        "{timeline}"
    );
    assert!(
        timeline["steps"].to_string().contains("is writable"),
        "{timeline}"
    );
    page.screenshot(&screenshots().join("live-page-failover.png"))
        .expect("screenshot");

    let (code, body) = curl(&c, &[&format!("{URL}events")]);
    assert_eq!(code, 200, "{body}");
    let events: serde_json::Value = serde_json::from_str(&body).expect("/events is JSON");
    assert!(
        events["failovers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["to"] == "db2" && f["from"] == "db1")),
        "{body}"
    );
    let (code, body) = curl(&c, &[&format!("{URL}hosts/db2")]);
    assert_eq!(code, 200, "{body}");
    let db2: serde_json::Value = serde_json::from_str(&body).expect("/hosts/db2 is JSON");
    assert!(
        db2["roles"].to_string().contains("writer(192.0.2.100)"),
        "{body}"
    );
    // The replication check's reading: db2 writes now, and its executed GTIDs are read.
    assert!(db2["replication"]["executed_gtids"].is_string(), "{body}");
    drop(page);
    c.stop_monitor();
}
