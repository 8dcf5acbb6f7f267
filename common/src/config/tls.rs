//! TLS to MySQL (`mysql_tls`, `mysql_ca`, `mysql_cert`, `mysql_key`, in `[defaults]` or a
//! host): the MySQL clients' `--ssl-mode`, `--ssl-ca`, `--ssl-cert` and `--ssl-key`.

use super::raw::RawHostFields;
use super::validate::Collector;
use super::{Host, Problem};
use crate::types::TlsMode;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How the agent and the monitor reach one host's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    pub mode: TlsMode,
    /// The CA that signed the server's certificate (PEM); checked by verify_ca and
    /// verify_identity only, as the MySQL clients do.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for accounts created `REQUIRE X509`.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Default for MysqlTls {
    /// Plaintext, as before TLS existed here.
    fn default() -> MysqlTls {
        MysqlTls {
            mode: TlsMode::Disabled,
            ca: None,
            client: None,
        }
    }
}

pub(super) fn validate(c: &mut Collector, host: &str, f: &RawHostFields) -> MysqlTls {
    let key = |k: &str| format!("hosts.{host}.{k}");
    let mut file = |k: &str, v: &Option<String>| match v.as_deref() {
        Some("") => {
            c.problem(key(k), "is empty");
            None
        }
        other => other.map(PathBuf::from),
    };
    let ca = file("mysql_ca", &f.mysql_ca);
    let cert = file("mysql_cert", &f.mysql_cert);
    let private = file("mysql_key", &f.mysql_key);
    // As the MySQL clients: a CA without a mode means verify_ca.
    let implied = match ca {
        Some(_) => TlsMode::VerifyCa,
        None => TlsMode::Disabled,
    };
    let mode = c.named(&key("mysql_tls"), &f.mysql_tls, implied);
    if mode.verifies() && ca.is_none() {
        c.problem(
            key("mysql_ca"),
            format!("missing: mysql_tls = \"{mode}\" checks the server's certificate against this CA (PEM); without one use \"required\""),
        );
    }
    if cert.is_some() != private.is_some() {
        let (missing, given) = match cert {
            Some(_) => ("mysql_key", "mysql_cert"),
            None => ("mysql_cert", "mysql_key"),
        };
        c.problem(
            key(missing),
            format!("missing: a client certificate needs both mysql_cert and mysql_key ({given} is set)"),
        );
    }
    // Files a host inherits from [defaults] and does not use (mysql_tls = "disabled" on
    // one host) are no problem: TOML cannot unset an inherited key.
    MysqlTls {
        mode,
        ca,
        client: cert.zip(private).filter(|_| mode != TlsMode::Disabled),
    }
}

/// The TLS files `host` uses that are missing, unreadable or not PEM of the right kind,
/// and a client key others can read; each file once across hosts (`seen`).
pub(super) fn file_problems(host: &Host, seen: &mut BTreeSet<PathBuf>) -> Vec<Problem> {
    let t = &host.mysql_tls;
    if t.mode == TlsMode::Disabled {
        return Vec::new();
    }
    let mut files: Vec<(&str, &Path, &str)> = Vec::new();
    if let Some(ca) = t.ca.as_deref().filter(|_| t.mode.verifies()) {
        files.push(("mysql_ca", ca, "CERTIFICATE"));
    }
    if let Some((cert, key)) = &t.client {
        files.push(("mysql_cert", cert, "CERTIFICATE"));
        files.push(("mysql_key", key, "PRIVATE KEY"));
    }
    let mut out = Vec::new();
    for (k, path, label) in files {
        if !seen.insert(path.to_path_buf()) {
            continue;
        }
        let key = format!("hosts.{}.{k}", host.name);
        if let Some(message) = pem_problem(path, label) {
            out.push(Problem { key, message });
        } else if k == "mysql_key" {
            out.extend(super::secret::insecure_mode(path, &key));
        }
    }
    out
}

/// Why `path` is not a readable PEM file holding a `label` block (`BEGIN CERTIFICATE`,
/// `BEGIN ... PRIVATE KEY`): a swapped CA and key, or a DER file, is caught here instead
/// of at the first connection.
fn pem_problem(path: &Path, label: &str) -> Option<String> {
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
    if let Err(e) = read {
        return Some(format!("cannot read {}: {e}", path.display()));
    }
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    (!found).then(|| {
        format!(
            "{} holds no PEM \"{label}\" block (-----BEGIN ...{label}-----)",
            path.display()
        )
    })
}
