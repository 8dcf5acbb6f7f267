//! The docs state figures the code decides: a documented protocol version or default that
//! disagrees with the code fails here, not in an operator's hands.

use mmm_common::config::{min_session_ttl, Config};
use std::path::Path;
use std::time::Duration;

fn doc(name: &str) -> String {
    let path = mmm_tests::workspace_root().join("docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_frame_table_names_the_protocol_version() {
    let design = doc("design.md");
    let row = format!(
        "| 2 | 1 | version ({}) |",
        mmm_common::proto::frame::VERSION
    );
    assert!(
        design.contains(&row),
        "docs/design.md's frame table must say {row:?}"
    );
}

/// docs/operations.md's table of default `session_ttl` per etcd tuning.
#[test]
fn the_documented_session_ttl_defaults_are_the_codes() {
    let ops = doc("operations.md");
    for (row, election, heartbeat) in [
        (
            "| etcd's defaults (`--heartbeat-interval 100 --election-timeout 1000`) | 2.1 s |",
            1000,
            100,
        ),
        (
            "| LAN tuning (`--heartbeat-interval 50 --election-timeout 500`) | 1.05 s |",
            500,
            50,
        ),
    ] {
        let line = ops
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("docs/operations.md lost the row {row:?}"));
        let ttl = min_session_ttl(Duration::from_millis(2 * election + heartbeat));
        assert!(
            line.ends_with(&format!("| {} s |", ttl.as_secs())),
            "{line:?} but the code derives {ttl:?}"
        );
    }
    // And a config that leaves session_ttl out gets the first row's value.
    let text = std::fs::read_to_string(mmm_tests::workspace_root().join("conf/lab.toml"))
        .expect("conf/lab.toml")
        + "\n[coordination]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/mmm/doc\"\n";
    let c = Config::parse(&text, Path::new("lab.toml")).expect("parses");
    assert_eq!(
        c.coordination.expect("coordination").session_ttl,
        Duration::from_secs(7)
    );
}

/// docs/fencing.md: "a clock step moves no deadline". Every lease, permit and promotion
/// count is kept on a monotonic clock (the agent's CLOCK_BOOTTIME, the monitor's tokio
/// `Instant`); a read of the wall clock, here or in SQL the server evaluates, is listed
/// below with the reason it moves no fence. A new one fails here until it is judged and
/// listed (and, if a fencing path reads it, docs/fencing.md says what a step does to it).
#[test]
fn no_fencing_path_reads_the_wall_clock() {
    const WALL: [&str; 11] = [
        "SystemTime",
        "UNIX_EPOCH",
        "chrono",
        "CLOCK_REALTIME",
        "gettimeofday",
        "libc::time(",
        "Utc::now",
        "SYSDATE",
        "NOW()",
        "UNIX_TIMESTAMP",
        "Timestamp::now",
    ];
    // (file, lines that read the wall clock, why no fence moves with a step).
    let allowed: &[(&str, usize, &str)] = &[
        (
            "agent/src/mysql/read_only.rs",
            2,
            "the lift of read_only carries its permit's end as a wall-clock deadline the \
             server checks (SYSDATE); fencing.md says what a step does to it, and the kill at \
             the wake-up bounds it whatever the clock did",
        ),
        (
            "common/src/config/reload.rs",
            2,
            "the time of the last reload, for mmm_config_last_reload_timestamp_seconds: a \
             metric an operator reads, nothing decides on it",
        ),
        (
            "common/src/sql/dialect.rs",
            1,
            "the SQL of that same deadline (UNIX_TIMESTAMP(SYSDATE(6)))",
        ),
        (
            "monitor/src/daemon/clock.rs",
            3,
            "the monitor's Clock reads the wall clock once at start for the timestamps of \
             `show` and the status file, monotonic after",
        ),
        (
            "monitor/src/daemon/localtime.rs",
            1,
            "the UTC offset of the times `checks` prints to people",
        ),
        (
            "monitor/src/daemon/seat/forward.rs",
            2,
            "a forwarded command's age (refused after 60 s): no fence, no promotion count",
        ),
    ];
    let root = mmm_tests::workspace_root();
    let mut found: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for dir in ["agent/src", "monitor/src", "common/src"] {
        for path in rust_files(&root.join(dir)) {
            let rel = path
                .strip_prefix(&root)
                .expect("under the workspace")
                .display()
                .to_string();
            if rel.ends_with("/tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            // Unit tests sit at the end of their file, after this attribute.
            let product = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in product.lines() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                if WALL.iter().any(|w| code.contains(w)) {
                    found.entry(rel.clone()).or_default().push(code.to_string());
                }
            }
        }
    }
    let mut wrong = Vec::new();
    for (file, lines) in &found {
        match allowed.iter().find(|(f, _, _)| f == file) {
            Some((_, n, _)) if lines.len() <= *n => {}
            _ => wrong.push(format!("{file}: {lines:#?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "wall-clock reads nobody judged (list each in this test, with why no fence moves with a clock step):\n{}",
        wrong.join("\n")
    );
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}
