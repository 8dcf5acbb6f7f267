//! The glue between mysql_async rows and the pure [`mmm_common::sql`]: the dialect from
//! a [`sql::DETECT`] row and the replica status from a status row, for the checks and
//! for check-cluster alike.

use mmm_common::mysql::ConnectError;
use mmm_common::sql::{self, Dialect, DialectError, ReplicaStatus};
use mysql_async::prelude::Queryable;
use mysql_async::Row;

/// What reading a server's replication state can fail on.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{op}")]
    Query {
        op: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Dialect(#[from] DialectError),
}

pub const DETECTING: &str = "detecting the SQL dialect";
pub const READING_STATUS: &str = "reading replication status";

/// The dialect from the row [`sql::DETECT`] returned (none or NULLs: unrecognised).
pub fn dialect_of(row: Option<&Row>) -> Result<Dialect, DialectError> {
    let version = row.and_then(|r| text(r, 0)).unwrap_or_default();
    let comment = row.and_then(|r| text(r, 1)).unwrap_or_default();
    Dialect::detect(&version, &comment)
}

/// A replica status row, under whichever column names the server printed.
pub fn status_of(row: &Row) -> ReplicaStatus {
    ReplicaStatus::from_columns(
        row.columns_ref()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name_str(), text(row, i))),
    )
}

/// A cell as text; NULL, and a value that is not text, as `None` (text-protocol results
/// are always text).
fn text(row: &Row, i: usize) -> Option<String> {
    row.get_opt::<Option<String>, _>(i)
        .and_then(Result::ok)
        .flatten()
}

/// Detects the dialect of `conn`'s server.
pub async fn detect(conn: &mut mysql_async::Conn) -> Result<Dialect, ReadError> {
    let detected: Option<Row> =
        conn.query_first(sql::DETECT)
            .await
            .map_err(|source| ReadError::Query {
                op: DETECTING,
                source,
            })?;
    Ok(dialect_of(detected.as_ref())?)
}

/// Reads the replica status in `dialect` (`None`: no replica).
pub async fn status(
    conn: &mut mysql_async::Conn,
    dialect: Dialect,
) -> Result<Option<ReplicaStatus>, ReadError> {
    let status: Option<Row> = conn
        .query_first(dialect.show_replica_status())
        .await
        .map_err(|source| ReadError::Query {
            op: READING_STATUS,
            source,
        })?;
    Ok(status.as_ref().map(status_of))
}
