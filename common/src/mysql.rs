//! Every MySQL connection mmm opens (the agent's to its own server, the monitor's checks,
//! check-cluster's reads) starts here: one place decides the address, the account and
//! TLS (`mysql_tls` and its files, as the MySQL clients' `--ssl-mode`), and names what
//! failed by the server's address, TLS verification apart from everything else.
//!
//! The TLS files are read at every new connection, so replaced certificates take effect
//! on the next connection without a restart.

use crate::config::{Host, MysqlTls};
use crate::types::TlsMode;
use mysql_async::{ClientIdentity, Conn, DriverError, IoError, OptsBuilder, SslOpts};
use std::fmt;
use std::path::{Path, PathBuf};

/// "Access denied": also what an account created `REQUIRE SSL` or `REQUIRE X509` gets
/// without TLS (or without a client certificate).
const ER_ACCESS_DENIED: u16 = 1045;

/// One server and account to connect to.
#[derive(Clone)]
pub struct Target {
    opts: OptsBuilder,
    /// `ip:port` or the socket's path, for errors.
    addr: String,
    tls: MysqlTls,
}

impl fmt::Debug for Target {
    // OptsBuilder's Debug shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `host`'s server at its ip and mysql_port, with its `mysql_tls`.
    pub fn tcp(host: &Host, user: &str, password: &str) -> Target {
        let opts = OptsBuilder::default()
            .ip_or_hostname(host.ip.to_string())
            .tcp_port(host.mysql_port)
            .user(Some(user))
            .pass(Some(password))
            // Not switching to the server's unix socket behind our back: grants and TLS
            // are for this address.
            .prefer_socket(false);
        Target {
            opts,
            addr: format!("{}:{}", host.ip, host.mysql_port),
            tls: host.mysql_tls.clone(),
        }
    }

    /// A local server through its unix socket (`[agent] mysql_socket`): no TLS, as the
    /// MySQL clients use none there (the socket never leaves the host).
    pub fn socket(path: &Path, user: &str, password: &str) -> Target {
        let opts = OptsBuilder::default()
            .socket(Some(path.to_string_lossy()))
            .user(Some(user))
            .pass(Some(password));
        Target {
            opts,
            addr: path.display().to_string(),
            tls: MysqlTls::default(),
        }
    }

    /// Where it connects (`ip:port` or a socket's path).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.tls.mode
    }

    /// Opens a connection as `mysql_tls` says; `preferred` falls back to plaintext only
    /// when the server offers no TLS at all.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let Some(ssl) = self.ssl_opts().await? else {
            return self.plain(Transport::Plain).await;
        };
        match Conn::new(self.opts.clone().ssl_opts(ssl)).await {
            Ok(conn) => Ok(conn),
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if self.tls.mode == TlsMode::Preferred =>
            {
                self.plain(Transport::NoTlsOffered).await
            }
            Err(e) => Err(self.tls_failure(e)),
        }
    }

    async fn plain(&self, transport: Transport) -> Result<Conn, ConnectError> {
        Conn::new(self.opts.clone())
            .await
            .map_err(|e| ConnectError::Driver {
                addr: self.addr.clone(),
                transport,
                source: Cause(e),
            })
    }

    /// The driver's TLS settings (None: plaintext), with the files read now.
    async fn ssl_opts(&self) -> Result<Option<SslOpts>, ConnectError> {
        let t = &self.tls;
        if t.mode == TlsMode::Disabled {
            return Ok(None);
        }
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(!t.mode.verifies())
            .with_danger_skip_domain_validation(t.mode != TlsMode::VerifyIdentity);
        if let Some(ca) = t.ca.as_deref().filter(|_| t.mode.verifies()) {
            // Only the configured CA: a public CA's certificate for any name must not
            // pass for our database server. (Without verification the driver still wants
            // some root to build its verifier from: its built-in ones, never consulted.)
            ssl = ssl
                .with_root_certs(vec![self.read("mysql_ca", ca).await?.into()])
                .with_disable_built_in_roots(true);
        }
        if let Some((cert, key)) = &t.client {
            let cert = self.read("mysql_cert", cert).await?;
            let key = self.read("mysql_key", key).await?;
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.into(), key.into())));
        }
        Ok(Some(ssl))
    }

    async fn read(&self, key: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
        tokio::fs::read(path)
            .await
            .map_err(|source| ConnectError::ReadFile {
                key,
                path: path.to_path_buf(),
                addr: self.addr.clone(),
                source,
            })
    }

    /// Names a failed TLS connection: the server's certificate refused, the server
    /// refusing ours, no TLS offered, or any other failure of the connection.
    fn tls_failure(&self, source: mysql_async::Error) -> ConnectError {
        let (addr, mode) = (self.addr.clone(), self.tls.mode);
        let rustls_error = match &source {
            mysql_async::Error::Io(IoError::Io(io)) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        // The certificate's verdict is rustls's own error: keep it, not the driver's
        // wrapping, which repeats it three times over.
        match (&source, rustls_error.cloned()) {
            (_, Some(source @ rustls::Error::InvalidCertificate(_))) => ConnectError::Verify {
                addr,
                mode,
                ca: self.tls.ca.clone().filter(|_| mode.verifies()),
                source,
            },
            (_, Some(source @ rustls::Error::AlertReceived(_))) => ConnectError::Refused {
                addr,
                mode,
                client_cert: self.tls.client.is_some(),
                source,
            },
            (mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer), _) => {
                ConnectError::NoTls {
                    addr,
                    mode,
                    source: Cause(source),
                }
            }
            (
                mysql_async::Error::Io(IoError::Tls(_))
                | mysql_async::Error::Driver(DriverError::NoKeyFound),
                _,
            )
            | (_, Some(_)) => ConnectError::Handshake {
                addr,
                mode,
                source: Cause(source),
            },
            _ => ConnectError::Driver {
                addr,
                transport: Transport::Tls(mode),
                source: Cause(source),
            },
        }
    }
}

/// How a connection was (to be) made, for its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    /// `preferred`, and the server offered no TLS.
    NoTlsOffered,
    Tls(TlsMode),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Plain => f.write_str("without TLS"),
            Transport::NoTlsOffered => {
                f.write_str("without TLS (mysql_tls = \"preferred\" and the server offers none)")
            }
            Transport::Tls(mode) => write!(f, "over TLS (mysql_tls = \"{mode}\")"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to MySQL at {addr} {transport}{}", plain_hint(*transport, &source.0))]
    Driver {
        addr: String,
        transport: Transport,
        #[source]
        source: Cause,
    },
    #[error("TLS to MySQL at {addr} (mysql_tls = \"{mode}\"): the server's certificate failed verification{}{}", ca.as_ref().map(|p| format!(" against mysql_ca {}", p.display())).unwrap_or_default(), name_note(*mode, source))]
    Verify {
        addr: String,
        mode: TlsMode,
        ca: Option<PathBuf>,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS to MySQL at {addr} (mysql_tls = \"{mode}\"): the server refused the handshake{}", if *client_cert { " (does its ssl_ca sign mysql_cert?)" } else { " (does it require a client certificate? set mysql_cert and mysql_key)" })]
    Refused {
        addr: String,
        mode: TlsMode,
        client_cert: bool,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS to MySQL at {addr} (mysql_tls = \"{mode}\"): the server offers no TLS (MariaDB and MySQL offer it once ssl_cert and ssl_key are set)")]
    NoTls {
        addr: String,
        mode: TlsMode,
        #[source]
        source: Cause,
    },
    #[error("TLS to MySQL at {addr} (mysql_tls = \"{mode}\"): the handshake failed")]
    Handshake {
        addr: String,
        mode: TlsMode,
        #[source]
        source: Cause,
    },
    #[error("reading {key} {path} for TLS to MySQL at {addr}")]
    ReadFile {
        key: &'static str,
        path: PathBuf,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The driver's error as its most specific part alone: its own messages repeat their
/// sources' ("Input/output error: Input/output error: ...: Connection refused").
#[derive(Debug)]
pub struct Cause(pub mysql_async::Error);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut deepest: &dyn std::error::Error = &self.0;
        while let Some(next) = deepest.source() {
            deepest = next;
        }
        write!(f, "{deepest}")
    }
}

impl std::error::Error for Cause {}

/// verify_ca should not check the name, but the driver cannot skip only that check
/// (mysql_async 0.37.1 with rustls 0.23: blackbeam/mysql_async#404): say so where it
/// is the reason.
fn name_note(mode: TlsMode, e: &rustls::Error) -> &'static str {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
    match (mode, e) {
        (
            TlsMode::VerifyCa,
            rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }),
        ) => " (verify_ca checks the name too with this MySQL driver: put the host's ip in the certificate, or use required)",
        _ => "",
    }
}

/// An account refused without TLS may be one that requires it: say so, since the
/// server's message ("Access denied") does not.
fn plain_hint(transport: Transport, e: &mysql_async::Error) -> &'static str {
    match (transport, e) {
        (Transport::Plain | Transport::NoTlsOffered, mysql_async::Error::Server(s))
            if s.code == ER_ACCESS_DENIED =>
        {
            " (an account created REQUIRE SSL or REQUIRE X509 is refused without TLS: see mysql_tls)"
        }
        _ => "",
    }
}

impl ConnectError {
    /// The driver's error, where the driver failed and TLS is not known to be why.
    pub fn driver(&self) -> Option<&mysql_async::Error> {
        match self {
            ConnectError::Driver { source, .. }
            | ConnectError::NoTls { source, .. }
            | ConnectError::Handshake { source, .. } => Some(&source.0),
            ConnectError::Verify { .. }
            | ConnectError::Refused { .. }
            | ConnectError::ReadFile { .. } => None,
        }
    }

    /// What the driver's own message leaves out (an account that may require TLS).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ConnectError::Driver {
                transport, source, ..
            } => Some(plain_hint(*transport, &source.0)).filter(|h| !h.is_empty()),
            _ => None,
        }
    }

    /// Whether TLS failed (certificates, handshake, files), not the network or the
    /// server's answer to the login.
    pub fn is_tls(&self) -> bool {
        !matches!(self, ConnectError::Driver { .. })
    }
}
