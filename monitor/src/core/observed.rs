//! What the replication checks last read of each server, kept for `show --json` (the
//! replication tree of the live page): source, IO and SQL threads, lag, GTID positions.
//! The checks' verdicts reach the core as `Event::Check`; this is the reading behind
//! them, told by the shell, and nothing is decided on it.

use super::{Cluster, Millis};
use serde::Serialize;
use std::collections::HashMap;

/// One reading of a server's replica status (SHOW SLAVE / REPLICA STATUS) and executed
/// GTID set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// The source as the server names it (host or address) and its port; none when the
    /// server replicates from nobody.
    pub source_host: Option<String>,
    pub source_port: Option<u16>,
    /// `Yes`, `No` or `Connecting`.
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    /// Seconds_Behind_Master; none while a thread is stopped.
    pub lag_s: Option<u64>,
    /// What the IO thread has received (MariaDB's Gtid_IO_Pos, MySQL's
    /// Retrieved_Gtid_Set).
    pub received_gtids: Option<String>,
    /// The server's executed GTID set (gtid_binlog_state, gtid_executed).
    pub executed_gtids: Option<String>,
    /// The last IO or SQL error, empty when none.
    pub last_error: String,
}

/// A host's last reading, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// Monitor clock, ms since the Unix epoch.
    pub at_ms: Millis,
    #[serde(flatten)]
    pub replication: Replication,
    /// Why the status could not be read (the server is down, say); the fields above are
    /// then empty.
    pub error: Option<String>,
}

pub type Observed = HashMap<String, Reading>;

impl Cluster {
    /// Keeps `host`'s newest replication reading.
    pub fn observe_replication(
        &mut self,
        host: &str,
        at_ms: Millis,
        read: Result<Replication, String>,
    ) {
        if !self.hosts.contains(host) {
            return;
        }
        let reading = match read {
            Ok(replication) => Reading {
                at_ms,
                replication,
                error: None,
            },
            Err(e) => Reading {
                at_ms,
                replication: Replication::default(),
                error: Some(e),
            },
        };
        self.observed.insert(host.to_string(), reading);
    }

    /// `host`'s last replication reading.
    pub fn replication(&self, host: &str) -> Option<&Reading> {
        self.observed.get(host)
    }
}
