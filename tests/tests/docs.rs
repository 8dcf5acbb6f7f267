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
