//! Certificates made at test time with `openssl` (Debian's openssl), for TLS to MySQL and
//! to etcd: a CA, server certificates naming their ip, a client certificate, and a
//! second CA that signed none of them. P-256 keys: quick to make, and rustls, Go (etcd)
//! and MariaDB's OpenSSL all take them.

use crate::netns::sh;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What one server is given: ssl_ca, ssl_cert, ssl_key.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    dir: PathBuf,
    pub ca: PathBuf,
    ca_key: PathBuf,
    /// A CA that signed nothing here.
    pub wrong_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

impl Pki {
    /// Makes the CAs and the client certificate (CN=mmm) in `dir`; keys are 0600.
    pub fn new(dir: &Path) -> Pki {
        let ca_key = dir.join("ca.key");
        let ca = dir.join("ca.pem");
        self_signed(&ca, &ca_key, "mmm-test-ca");
        let wrong_ca = dir.join("wrong-ca.pem");
        self_signed(&wrong_ca, &dir.join("wrong-ca.key"), "mmm-test-other-ca");
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
            wrong_ca,
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        pki.sign("client", "mmm", "extendedKeyUsage=clientAuth\n");
        pki
    }

    /// A server certificate for `name` naming `ip` (its subjectAltName), signed by the
    /// CA. Good for client authentication too: etcd's gateway presents it to etcd.
    pub fn server(&self, name: &str, ip: Ipv4Addr) -> ServerTls {
        self.sign(
            name,
            name,
            &format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        );
        ServerTls {
            ca: self.ca.clone(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// `NAME.pem` and `NAME.key` (0600), signed by the CA with the extensions `ext`.
    fn sign(&self, name: &str, cn: &str, ext: &str) {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.pem"));
        let ext_file = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext).expect("writing the extensions");
        req("-new", &key, &csr, cn, &[]);
        sh(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&self.ca),
            "-CAkey",
            p(&self.ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            p(&cert),
            "-extfile",
            p(&ext_file),
        ]);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

fn self_signed(cert: &Path, key: &Path, cn: &str) {
    req(
        "-x509",
        key,
        cert,
        cn,
        &[
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    std::fs::set_permissions(cert, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// `openssl req` with a new P-256 key in `key`: a request (`-new`) or a self-signed
/// certificate (`-x509`) in `out`.
fn req(what: &str, key: &Path, out: &Path, cn: &str, extra: &[&str]) {
    let subject = format!("/CN={cn}");
    let mut args = vec![
        "openssl",
        "req",
        what,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        p(key),
        "-out",
        p(out),
        "-subj",
        &subject,
    ];
    args.extend_from_slice(extra);
    sh(&args);
}
