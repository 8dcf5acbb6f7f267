//! One row of SHOW SLAVE STATUS / SHOW REPLICA STATUS, whichever names its columns
//! carry: MySQL 8.0.22 renamed Master to Source and Slave to Replica in them, MariaDB
//! and older MySQL keep the old names. Columns are looked up by name, never by place
//! (their order differs between versions too).

/// What mmm reads of the replica status. `None` where the column is missing or NULL;
/// text as the server printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub source_host: Option<String>,
    pub source_port: Option<u16>,
    /// `Yes`, `No` or `Connecting`.
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    /// NULL while a thread is stopped or the IO thread is disconnected.
    pub seconds_behind: Option<u64>,
    pub last_io_error: Option<String>,
    pub last_sql_error: Option<String>,
    /// The source's binary log the IO thread reads, and how far it has read.
    pub source_log_file: Option<String>,
    pub read_source_log_pos: Option<u64>,
    /// The source's binary log the SQL thread applies, and how far it has applied.
    pub relay_source_log_file: Option<String>,
    pub exec_source_log_pos: Option<u64>,
    /// What the IO thread has received: MariaDB's Gtid_IO_Pos, MySQL's
    /// Retrieved_Gtid_Set (each server has one of them).
    pub received_gtids: Option<String>,
}

impl ReplicaStatus {
    /// From the row's (column name, value) pairs, values as text (NULL as `None`).
    /// Unknown columns are ignored; a number that does not parse counts as missing.
    pub fn from_columns<N, I>(columns: I) -> ReplicaStatus
    where
        N: AsRef<str>,
        I: IntoIterator<Item = (N, Option<String>)>,
    {
        let mut s = ReplicaStatus::default();
        for (name, value) in columns {
            match name.as_ref() {
                "Master_Host" | "Source_Host" => s.source_host = value,
                "Master_Port" | "Source_Port" => s.source_port = number(&value),
                "Slave_IO_Running" | "Replica_IO_Running" => s.io_running = value,
                "Slave_SQL_Running" | "Replica_SQL_Running" => s.sql_running = value,
                "Seconds_Behind_Master" | "Seconds_Behind_Source" => {
                    s.seconds_behind = number(&value)
                }
                "Last_IO_Error" => s.last_io_error = value,
                "Last_SQL_Error" => s.last_sql_error = value,
                "Master_Log_File" | "Source_Log_File" => s.source_log_file = value,
                "Read_Master_Log_Pos" | "Read_Source_Log_Pos" => {
                    s.read_source_log_pos = number(&value)
                }
                "Relay_Master_Log_File" | "Relay_Source_Log_File" => {
                    s.relay_source_log_file = value
                }
                "Exec_Master_Log_Pos" | "Exec_Source_Log_Pos" => {
                    s.exec_source_log_pos = number(&value)
                }
                "Gtid_IO_Pos" | "Retrieved_Gtid_Set" => s.received_gtids = value,
                _ => {}
            }
        }
        s
    }

    /// Both replication threads run.
    pub fn threads_running(&self) -> bool {
        self.io_running.as_deref() == Some("Yes") && self.sql_running.as_deref() == Some("Yes")
    }

    /// The IO and SQL threads' last errors, those that are set, joined by `; `.
    pub fn last_error(&self) -> String {
        [&self.last_io_error, &self.last_sql_error]
            .into_iter()
            .flatten()
            .filter(|e| !e.is_empty())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn number<T: std::str::FromStr>(value: &Option<String>) -> Option<T> {
    value.as_deref().and_then(|v| v.parse().ok())
}
