//! `[coordination]`: the etcd cluster of a monitor fleet.

use super::Collector;
use crate::config::raw::RawCoordination;
use crate::config::{Coordination, EtcdTls};
use std::ops::Bound::Excluded;
use std::path::PathBuf;
use std::time::Duration;

/// `[coordination]`: etcd client URLs (all http, or all https with the CA file and an
/// optional client certificate), a prefix that is one absolute etcd key path, and a
/// session TTL of whole seconds.
pub(super) fn coordination(c: &mut Collector, r: &RawCoordination) -> Coordination {
    let etcd = r.etcd.clone().unwrap_or_default();
    if etcd.is_empty() {
        c.problem(
            "coordination.etcd",
            "missing: the client URLs of the etcd members (http://HOST:2379)",
        );
    }
    let mut schemes = std::collections::BTreeSet::new();
    for url in &etcd {
        let (scheme, host_port) = match url.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            _ => ("", ""),
        };
        let valid = !host_port.is_empty()
            && !host_port.contains('/')
            && host_port
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if valid {
            schemes.insert(scheme);
        } else {
            c.problem(
                "coordination.etcd",
                format!(
                    "{url:?} is not an etcd client URL (http://HOST:PORT or https://HOST:PORT)"
                ),
            );
        }
    }
    if schemes.len() > 1 {
        c.problem(
            "coordination.etcd",
            "mixes http:// and https:// endpoints: one etcd cluster speaks one of them",
        );
    }
    let https = schemes.contains("https");
    let file = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(PathBuf::from);
    let (ca, cert, key) = (file(&r.ca_file), file(&r.cert_file), file(&r.key_file));
    if !https {
        for (k, v) in [("ca_file", &ca), ("cert_file", &cert), ("key_file", &key)] {
            if v.is_some() {
                c.problem(
                    format!("coordination.{k}"),
                    "only with https:// etcd endpoints",
                );
            }
        }
    } else if ca.is_none() {
        c.problem(
            "coordination.ca_file",
            "missing: https:// endpoints need the CA certificate that signed etcd's (PEM)",
        );
    }
    if cert.is_some() != key.is_some() {
        c.problem(
            if cert.is_some() {
                "coordination.key_file"
            } else {
                "coordination.cert_file"
            },
            "a client certificate needs both cert_file and key_file",
        );
    }
    let tls = match (https, ca) {
        (true, Some(ca_file)) => Some(EtcdTls {
            ca_file,
            client: cert.zip(key),
        }),
        _ => None,
    };
    let prefix = r.prefix.clone().unwrap_or_default();
    let prefix_ok = prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains("//")
        && prefix.chars().all(|ch| ch.is_ascii_graphic());
    if !prefix_ok {
        c.problem(
            "coordination.prefix",
            format!("{prefix:?}: one absolute key path per cluster, like \"/mmm/main\" (no trailing '/', no spaces)"),
        );
    }
    let etcd_election_timeout = c.duration(
        "coordination.etcd_election_timeout",
        &r.etcd_election_timeout,
        Duration::from_secs(1),
    );
    let etcd_heartbeat_interval = c.duration(
        "coordination.etcd_heartbeat_interval",
        &r.etcd_heartbeat_interval,
        Duration::from_millis(100),
    );
    c.within(
        "coordination.etcd_heartbeat_interval",
        etcd_heartbeat_interval,
        (Excluded(Duration::ZERO), Excluded(etcd_election_timeout)),
        || format!("{etcd_heartbeat_interval:?}: etcd's --heartbeat-interval, above zero and below its --election-timeout ({etcd_election_timeout:?})"),
    );
    let derived =
        crate::config::min_session_ttl(2 * etcd_election_timeout + etcd_heartbeat_interval)
            .min(Duration::from_secs(60));
    let session_ttl = c.duration("coordination.session_ttl", &r.session_ttl, derived);
    if session_ttl.subsec_nanos() != 0
        || session_ttl < Duration::from_secs(1)
        || session_ttl > Duration::from_secs(60)
    {
        c.problem(
            "coordination.session_ttl",
            format!(
                "{session_ttl:?}: whole seconds from 1s to 60s (etcd grants leases in seconds)"
            ),
        );
    }
    Coordination {
        etcd,
        prefix,
        session_ttl,
        etcd_election_timeout,
        etcd_heartbeat_interval,
        tls,
    }
}
