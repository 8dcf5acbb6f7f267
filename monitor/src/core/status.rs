//! The status record persisted after every change and read back at start: host states,
//! roles, flap history, errant-transaction reasons and last known GTID sets (MMM kept
//! only states and roles, and forgot flapping on restart).

use super::{Cluster, Millis};
use mmm_common::types::{HostState, MonitorMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub version: u32,
    /// When it was written (monitor clock, ms since the Unix epoch).
    pub written_at: Millis,
    pub mode: String,
    pub hosts: BTreeMap<String, HostRecord>,
    /// role -> [(ip, holder)]
    pub roles: BTreeMap<String, Vec<(String, Option<String>)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub state: String,
    pub since: Millis,
    pub reason: String,
    pub flap_departures: Vec<Millis>,
    pub flapping: bool,
    pub errant: Option<String>,
    pub gtid: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("status record is not valid JSON")]
    Parse(#[from] serde_json::Error),
    #[error("status record has version {0}, this monitor reads version 1")]
    Version(u32),
    #[error("status record: {0}")]
    Content(String),
}

impl StatusRecord {
    /// Equal but for the time it was written.
    pub fn same_content(&self, other: &StatusRecord) -> bool {
        // Field by field: cloning two records of a thousand hosts to blank one field
        // cost more than everything else the monitor does per event.
        let StatusRecord {
            version,
            written_at: _,
            mode,
            hosts,
            roles,
        } = self;
        *version == other.version
            && *mode == other.mode
            && *hosts == other.hosts
            && *roles == other.roles
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a status record always serialises")
    }

    pub fn from_json(text: &str) -> Result<StatusRecord, RestoreError> {
        let r: StatusRecord = serde_json::from_str(text)?;
        if r.version != 1 {
            return Err(RestoreError::Version(r.version));
        }
        Ok(r)
    }
}

impl Cluster {
    /// role -> [(ip, holder)], as the record keeps them.
    fn record_roles(&self) -> BTreeMap<String, Vec<(String, Option<String>)>> {
        let mut roles: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
        for r in self.roles.ips() {
            roles
                .entry(r.role.clone())
                .or_default()
                // "" for a role without a VIP.
                .push((
                    r.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    r.holder.clone(),
                ));
        }
        roles
    }

    /// Whether `record` says what [`Cluster::status_record`] would say now (but for when
    /// it was written), read off the hosts in place. Most events change nothing the record
    /// keeps, and building a record of a thousand hosts for each of them only to find it
    /// the same was most of a start-up's cost (every first heartbeat is an event).
    pub(super) fn matches_record(&self, record: &StatusRecord) -> bool {
        let mut gtid = String::new();
        let host_matches = |h: &super::hosts::HostRec, r: &HostRecord, gtid: &mut String| {
            r.state == h.state.as_str()
                && r.since == h.since
                && r.reason == h.reason
                && r.flap_departures == h.flaps.departures
                && r.flapping == h.flapping
                && r.errant == h.errant
                && match (&h.gtid, &r.gtid) {
                    (None, None) => true,
                    (Some(g), Some(text)) => {
                        gtid.clear();
                        let _ = write!(gtid, "{g}");
                        *gtid == *text
                    }
                    _ => false,
                }
        };
        record.version == 1
            && record.mode == self.mode.get().as_str()
            && record.hosts.len() == self.hosts.iter().count()
            && self.hosts.iter().all(|h| {
                record
                    .hosts
                    .get(&h.name)
                    .is_some_and(|r| host_matches(h, r, &mut gtid))
            })
            && record.roles == self.record_roles()
    }

    pub fn status_record(&self, now: Millis) -> StatusRecord {
        let roles = self.record_roles();
        StatusRecord {
            version: 1,
            written_at: now,
            mode: self.mode.get().to_string(),
            hosts: self
                .hosts
                .iter()
                .map(|h| {
                    (
                        h.name.clone(),
                        HostRecord {
                            state: h.state.to_string(),
                            since: h.since,
                            reason: h.reason.clone(),
                            flap_departures: h.flaps.departures.clone(),
                            flapping: h.flapping,
                            errant: h.errant.clone(),
                            gtid: h.gtid.as_ref().map(|g| g.to_string()),
                        },
                    )
                })
                .collect(),
            roles,
        }
    }

    /// Resumes from a stored record: states, roles, flap history. Hosts or roles the
    /// config no longer has are ignored; an unknown state is an error (no guessing).
    pub fn restore(&mut self, record: &StatusRecord) -> Result<(), RestoreError> {
        for (name, r) in &record.hosts {
            let state: HostState = r
                .state
                .parse()
                .map_err(|e| RestoreError::Content(format!("host {name}: {e}")))?;
            if let Some(h) = self.host_mut(name) {
                h.state = state;
                h.since = r.since;
                h.reason = r.reason.clone();
                h.flaps.departures = r.flap_departures.clone();
                h.flapping = r.flapping;
                h.errant = r.errant.clone();
                h.gtid = r
                    .gtid
                    .as_deref()
                    .and_then(|g| mmm_common::gtid::GtidSet::parse(g).ok());
                h.online_since = r.since;
            }
        }
        for (role, ips) in &record.roles {
            for (ip, holder) in ips {
                let found = if ip.is_empty() {
                    // A role without a VIP.
                    self.roles.find_without_ip(role)
                } else {
                    let Ok(ip) = ip.parse() else {
                        return Err(RestoreError::Content(format!(
                            "role {role}: {ip:?} is not an IP"
                        )));
                    };
                    self.roles.find_ip(ip)
                };
                if let Some(i) = found {
                    let valid = holder
                        .as_ref()
                        .is_none_or(|h| self.roles.ip_at(i).hosts.contains(h));
                    if self.roles.ip_at(i).role == *role && valid {
                        self.roles.set_holder(i, holder.clone());
                    }
                }
            }
        }
        if let Ok(mode) = record.mode.parse::<MonitorMode>() {
            self.mode.resume(mode);
        }
        Ok(())
    }
}
