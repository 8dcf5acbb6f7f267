//! Which words a server takes, from its `@@version` and `@@version_comment`.

use super::quote;
use crate::proto::Position;
use std::fmt;

/// A MySQL release, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl Version {
    pub const fn new(major: u16, minor: u16, patch: u16) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The leading `major.minor.patch` of a version string; whatever follows the patch
    /// number (`-log`, a distribution's `-28`) is the build's, not the release's.
    fn parse(text: &str) -> Option<Version> {
        let mut parts = text.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let patch = rest[..end].parse().ok()?;
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The SQL a server understands. MariaDB's replication statements have not changed in
/// the versions mmm supports; MySQL's depend on the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MariaDb,
    MySql(Version),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialectError {
    #[error("detecting the SQL dialect: version {version:?} ({comment:?}) is neither MariaDB nor MySQL major.minor.patch")]
    Unrecognised { version: String, comment: String },
}

/// Where a re-pointed replica starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStart<'a> {
    /// By GTID. MySQL always auto-positions; MariaDB needs to be told which of its
    /// positions to offer.
    Gtid(GtidStart),
    FilePos {
        file: &'a str,
        pos: u64,
    },
}

/// MariaDB's `MASTER_USE_GTID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GtidStart {
    SlavePos,
    CurrentPos,
}

impl GtidStart {
    /// A server with transactions of its own (a former master) must offer its whole
    /// history, current_pos; under gtid_strict_mode an errant one then fails with error
    /// 1950 instead of diverging silently. Otherwise what it applied, slave_pos.
    pub fn choose(gtid_slave_pos: &str, gtid_current_pos: &str) -> GtidStart {
        if gtid_slave_pos == gtid_current_pos {
            GtidStart::SlavePos
        } else {
            GtidStart::CurrentPos
        }
    }
}

/// The arguments of a re-pointing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeSource<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    /// Seconds between reconnection attempts.
    pub connect_retry: u32,
    pub start: SourceStart<'a>,
}

/// SHOW/START/STOP REPLICA exist from 8.0.22.
const REPLICA_WORDS: Version = Version::new(8, 0, 22);
/// CHANGE REPLICATION SOURCE TO and its SOURCE_* options exist from 8.0.23.
const SOURCE_OPTIONS: Version = Version::new(8, 0, 23);
/// SOURCE_POS_WAIT exists from 8.0.26.
const SOURCE_POS_WAIT: Version = Version::new(8, 0, 26);
/// SHOW BINARY LOG STATUS exists from 8.2.0 (SHOW MASTER STATUS is gone in 8.4).
const BINARY_LOG_STATUS: Version = Version::new(8, 2, 0);
/// The rpl_semi_sync_source plugin (SOURCE-named variables) exists from 8.0.26, beside
/// the old one, and alone from 8.4; the same release renamed log_slave_updates.
const SEMI_SYNC_SOURCE: Version = Version::new(8, 0, 26);
const SEMI_SYNC_SOURCE_ONLY: Version = Version::new(8, 4, 0);
/// super_read_only exists from 5.7 (5.7.8, before the first GA release 5.7.9).
const SUPER_READ_ONLY: Version = Version::new(5, 7, 0);

impl Dialect {
    /// From `SELECT @@version, @@version_comment` ([`super::DETECT`]). MariaDB says so in
    /// its version (`10.11.6-MariaDB-0+deb12u1`) or, in some builds, only in the comment;
    /// anything else that parses is MySQL (Percona Server included).
    pub fn detect(version: &str, comment: &str) -> Result<Dialect, DialectError> {
        let says_mariadb = |s: &str| s.to_ascii_lowercase().contains("mariadb");
        if says_mariadb(version) || says_mariadb(comment) {
            return Ok(Dialect::MariaDb);
        }
        Version::parse(version)
            .map(Dialect::MySql)
            .ok_or_else(|| DialectError::Unrecognised {
                version: version.into(),
                comment: comment.into(),
            })
    }

    pub fn is_mariadb(self) -> bool {
        self == Dialect::MariaDb
    }

    fn mysql_from(self, release: Version) -> bool {
        matches!(self, Dialect::MySql(v) if v >= release)
    }

    /// `SLAVE` or `REPLICA`, for SHOW/START/STOP.
    fn replica_word(self) -> &'static str {
        if self.mysql_from(REPLICA_WORDS) {
            "REPLICA"
        } else {
            "SLAVE"
        }
    }

    pub fn show_replica_status(self) -> String {
        format!("SHOW {} STATUS", self.replica_word())
    }

    pub fn stop_replication(self) -> String {
        format!("STOP {}", self.replica_word())
    }

    pub fn stop_io_thread(self) -> String {
        format!("STOP {} IO_THREAD", self.replica_word())
    }

    pub fn start_replication(self) -> String {
        format!("START {}", self.replica_word())
    }

    /// This server's own binary log file and position (first two columns).
    pub fn show_binlog_status(self) -> &'static str {
        if self.mysql_from(BINARY_LOG_STATUS) {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        }
    }

    /// The executed GTID set. MariaDB: gtid_binlog_state, one entry per domain *and
    /// server*, which tells errant transactions apart exactly (needs log_slave_updates,
    /// as every mmm topology has); MySQL: gtid_executed.
    pub fn executed_gtid_set(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SELECT @@GLOBAL.gtid_binlog_state",
            Dialect::MySql(_) => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// What [`GtidStart::choose`] compares, MariaDB only: MySQL auto-positions.
    pub fn gtid_positions(self) -> Option<[&'static str; 2]> {
        match self {
            Dialect::MariaDb => Some([
                "SELECT @@GLOBAL.gtid_slave_pos",
                "SELECT @@GLOBAL.gtid_current_pos",
            ]),
            Dialect::MySql(_) => None,
        }
    }

    /// The statements, in order, that set read_only. MySQL's super_read_only also stops
    /// SUPER users, so it is used where it exists; setting it implies read_only, clearing
    /// it does not. MariaDB has only read_only.
    pub fn set_read_only(self, on: bool) -> Vec<String> {
        match (self.mysql_from(SUPER_READ_ONLY), on) {
            (true, true) => vec!["SET GLOBAL super_read_only = 1".into()],
            (true, false) => vec![
                "SET GLOBAL super_read_only = 0".into(),
                "SET GLOBAL read_only = 0".into(),
            ],
            (false, on) => vec![format!("SET GLOBAL read_only = {}", on as u8)],
        }
    }

    /// The statements, in order, that lift read_only only if the server runs them before
    /// `until_us` (microseconds since the Unix epoch, by the server's own clock when it
    /// executes each one: SYSDATE, not the statement's start). A statement that waited in
    /// a hung server's socket past its deadline changes nothing when the server wakes up.
    /// Send [`super::UTC_SESSION`] first on the same connection: UNIX_TIMESTAMP of a local time
    /// is ambiguous in a daylight-saving fold.
    pub fn lift_read_only_before(self, until_us: u64) -> Vec<String> {
        let deadline = format!("{}.{:06}", until_us / 1_000_000, until_us % 1_000_000);
        let guarded = |var: &str| {
            format!(
                "SET GLOBAL {var} = IF(UNIX_TIMESTAMP(SYSDATE(6)) < {deadline}, 0, @@GLOBAL.{var})"
            )
        };
        match self.mysql_from(SUPER_READ_ONLY) {
            true => vec![guarded("super_read_only"), guarded("read_only")],
            false => vec![guarded("read_only")],
        }
    }

    /// The variable that turns the semi-sync source wait on and off, as candidates in the
    /// order to try: between 8.0.26 and 8.4 either plugin may be installed, never both,
    /// so the first one the server knows is the one.
    pub fn semi_sync_source_enabled(self) -> &'static [&'static str] {
        const OLD: &str = "rpl_semi_sync_master_enabled";
        const NEW: &str = "rpl_semi_sync_source_enabled";
        if self.mysql_from(SEMI_SYNC_SOURCE_ONLY) {
            &[NEW]
        } else if self.mysql_from(SEMI_SYNC_SOURCE) {
            &[NEW, OLD]
        } else {
            &[OLD]
        }
    }

    /// The variable saying whether replicated transactions are written to this server's
    /// binary log (renamed in 8.0.26).
    pub fn log_replica_updates(self) -> &'static str {
        if self.mysql_from(SEMI_SYNC_SOURCE) {
            "log_replica_updates"
        } else {
            "log_slave_updates"
        }
    }

    /// Re-points replication (replication must be stopped).
    pub fn change_source(self, c: &ChangeSource<'_>) -> String {
        let (head, w) = if self.mysql_from(SOURCE_OPTIONS) {
            ("CHANGE REPLICATION SOURCE TO", "SOURCE")
        } else {
            ("CHANGE MASTER TO", "MASTER")
        };
        let mut sql = format!(
            "{head} {w}_HOST = {}, {w}_PORT = {}, {w}_USER = {}, {w}_PASSWORD = {}, {w}_CONNECT_RETRY = {}",
            quote(c.host),
            c.port,
            quote(c.user),
            quote(c.password),
            c.connect_retry,
        );
        let auto_position = |on: u8| format!(", {w}_AUTO_POSITION = {on}");
        let tail = match (self, c.start) {
            (Dialect::MariaDb, SourceStart::Gtid(GtidStart::SlavePos)) => {
                ", MASTER_USE_GTID = slave_pos".to_string()
            }
            (Dialect::MariaDb, SourceStart::Gtid(GtidStart::CurrentPos)) => {
                ", MASTER_USE_GTID = current_pos".to_string()
            }
            (Dialect::MySql(_), SourceStart::Gtid(_)) => auto_position(1),
            (dialect, SourceStart::FilePos { file, pos }) => format!(
                ", {w}_LOG_FILE = {}, {w}_LOG_POS = {pos}{}",
                quote(file),
                if dialect.is_mariadb() {
                    ", MASTER_USE_GTID = no".to_string()
                } else {
                    auto_position(0)
                }
            ),
        };
        sql.push_str(&tail);
        sql
    }

    /// Waits, for at most `secs`, until the SQL thread has applied `target`; `None` for
    /// [`Position::GtidSlavePos`], which names no point to wait for. MASTER_GTID_WAIT
    /// returns 0 when reached and -1 on timeout; WAIT_FOR_EXECUTED_GTID_SET 0 and 1;
    /// MASTER_POS_WAIT / SOURCE_POS_WAIT the events waited for (>= 0), -1 on timeout
    /// and NULL when the server is no replica.
    pub fn wait_for(self, target: &Position, secs: f64) -> Option<String> {
        Some(match (target, self) {
            (Position::Gtid(set), Dialect::MariaDb) => {
                format!("SELECT MASTER_GTID_WAIT({}, {secs})", quote(set))
            }
            (Position::Gtid(set), Dialect::MySql(_)) => {
                format!("SELECT WAIT_FOR_EXECUTED_GTID_SET({}, {secs})", quote(set))
            }
            (Position::FilePos { file, pos }, _) => {
                let function = if self.mysql_from(SOURCE_POS_WAIT) {
                    "SOURCE_POS_WAIT"
                } else {
                    "MASTER_POS_WAIT"
                };
                format!("SELECT {function}({}, {pos}, {secs})", quote(file))
            }
            (Position::GtidSlavePos, _) => return None,
        })
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dialect::MariaDb => f.write_str("MariaDB"),
            Dialect::MySql(v) => write!(f, "MySQL {v}"),
        }
    }
}
