//! How the monitor fleet and the agents connect to `[coordination]`'s etcd: plain http,
//! or TLS with the configured CA and, when etcd requires one, a client certificate. One
//! place, so a monitor and an agent never disagree on how etcd is reached.

pub mod keys;
pub use keys::Keys;

use crate::config::Coordination;
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    #[error("reading {what} {path} for TLS to etcd")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdTlsError> {
    std::fs::read(path).map_err(|source| EtcdTlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Options for `etcd_client::Client::connect`: every request bounded by `timeout` when
/// given (a campaign or a watch waits by design and passes None), TLS as configured.
pub fn connect_options(
    c: &Coordination,
    timeout: Option<Duration>,
    connect_timeout: Duration,
) -> Result<ConnectOptions, EtcdTlsError> {
    // A member cut off from etcd's quorum must not keep answering (a watch on it would
    // go silent, a read would be stale): require a leader. A path that drops packets
    // silently is noticed by HTTP/2 pings; no more often than every 5 s, etcd's default
    // --grpc-keepalive-min-time, below which etcd closes the connection as abusive.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(connect_timeout)
        .with_require_leader(true)
        .with_keep_alive(
            Duration::from_secs(5),
            (c.session_ttl / 2).max(Duration::from_millis(500)),
        );
    if let Some(t) = timeout {
        options = options.with_timeout(t);
    }
    if let Some(tls) = &c.tls {
        let mut config =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("the CA", &tls.ca_file)?));
        if let Some((cert, key)) = &tls.client {
            config = config.identity(Identity::from_pem(
                read("the client certificate", cert)?,
                read("the client key", key)?,
            ));
        }
        options = options.with_tls(config);
    }
    Ok(options)
}
pub mod members;
pub use members::{member_failure, Conn, LazyMembers, Members, MembersError};
