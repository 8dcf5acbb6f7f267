//! MMM 2.2.1's status file (`status_path`, usually mmm_mond.status), so that a monitor
//! replacing mmm_mond resumes the states and roles MMM left instead of calling the file
//! corrupt.
//!
//! MMM wrote one line per host (lib/Monitor/Agents.pm, save_status):
//!
//! ```text
//! db1|ONLINE|reader(10.0.0.101),writer(10.0.0.100)
//! db3|HARD_OFFLINE|
//! ```
//! host, state and the roles it holds as `name(ip)`, comma-separated and sorted; a host
//! holding no role ends in `|` (or, as Perl's split reads it, without the third field).
//! MMM's own states are ours; `UNKNOWN` (an agent never contacted) means no state is
//! known.
//!
//! How the monitor uses it: read `status_path`; when [`looks_like_mmm_status`] says the
//! text is MMM's, [`parse`] it and start from those states and role holders (hosts and
//! roles the configuration lacks are ignored with a warning, as MMM did), then write the
//! monitor's own format from then on.

use crate::types::HostState;
use std::net::Ipv4Addr;

/// One host's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub host: String,
    /// `None` for MMM's `UNKNOWN`: the monitor decides as for a host it never saw.
    pub state: Option<HostState>,
    /// (role, IP) pairs the host held, in the file's order.
    pub roles: Vec<(String, Ipv4Addr)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MMM status file, line {line}: {problem}")]
pub struct StatusError {
    pub line: usize,
    pub problem: String,
}

/// Whether `text` is an MMM status file rather than something else in the same place
/// (mmm's own status record is a JSON object). Only the shape is looked at; [`parse`]
/// says what is wrong in a file that has it.
pub fn looks_like_mmm_status(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    // MMM wrote an empty file when it had no hosts yet.
    let Some(first) = lines.next() else {
        return true;
    };
    !first.starts_with('{') && first.contains('|')
}

/// Every host line of an MMM status file. A line that is not `host|STATE|roles` is an
/// error naming it (MMM skipped a role it could not read; taking over a cluster half
/// understood is worse than asking the operator).
pub fn parse(text: &str) -> Result<Vec<HostStatus>, StatusError> {
    let mut out: Vec<HostStatus> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let err = |problem: String| StatusError {
            line: i + 1,
            problem,
        };
        let fields: Vec<&str> = line.split('|').collect();
        let (host, state, roles) = match fields.as_slice() {
            [h, s] => (*h, *s, ""),
            [h, s, r] => (*h, *s, *r),
            _ => {
                return Err(err(format!(
                    "{line:?} is not host|STATE|roles (found {} fields)",
                    fields.len()
                )))
            }
        };
        if host.is_empty() {
            return Err(err(format!("{line:?} has no host name")));
        }
        if out.iter().any(|h| h.host == host) {
            return Err(err(format!("host {host:?} appears twice")));
        }
        let state = match state {
            "UNKNOWN" => None,
            s => Some(
                s.parse::<HostState>()
                    .map_err(|e| err(format!("host {host:?}: {e}")))?,
            ),
        };
        let roles = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                parse_role(r)
                    .ok_or_else(|| err(format!("host {host:?}: role {r:?} is not name(IPv4)")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(HostStatus {
            host: host.to_string(),
            state,
            roles,
        });
    }
    Ok(out)
}

/// MMM's `name(ip)` (lib/Monitor/Role.pm, from_string).
fn parse_role(s: &str) -> Option<(String, Ipv4Addr)> {
    let (name, rest) = s.split_once('(')?;
    let ip = rest.strip_suffix(')')?.trim().parse().ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status file as MMM 2.2.1 wrote it for the four-host layout of conf/legacy:
    /// db2 holds the writer after a failover, db1 is back but waits, db4 is down.
    const MMM_STATUS: &str = "\
db1|AWAITING_RECOVERY|
db2|ONLINE|reader(10.0.0.102),writer(10.0.0.100)
db3|ONLINE|reader(10.0.0.101),reader(10.0.0.103)
db4|HARD_OFFLINE
";

    #[test]
    fn reads_what_mmm_wrote() {
        assert!(looks_like_mmm_status(MMM_STATUS));
        let hosts = parse(MMM_STATUS).unwrap();
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[0].host, "db1");
        assert_eq!(hosts[0].state, Some(HostState::AwaitingRecovery));
        assert!(hosts[0].roles.is_empty());
        assert_eq!(
            hosts[1].roles,
            [
                ("reader".to_string(), Ipv4Addr::new(10, 0, 0, 102)),
                ("writer".to_string(), Ipv4Addr::new(10, 0, 0, 100)),
            ]
        );
        assert_eq!(hosts[2].roles.len(), 2);
        assert_eq!(hosts[3].state, Some(HostState::HardOffline));
        assert_eq!(parse("db5|UNKNOWN|\n").unwrap()[0].state, None);
        assert_eq!(parse("").unwrap(), []);
    }

    #[test]
    fn mmm_status_is_told_apart_from_mmms_own_record() {
        assert!(!looks_like_mmm_status(
            "{\n  \"version\": 1,\n  \"hosts\": {}\n}"
        ));
        assert!(!looks_like_mmm_status("garbage"));
        assert!(looks_like_mmm_status(""));
        assert!(looks_like_mmm_status("\n db1|ONLINE|\n"));
    }

    #[test]
    fn a_line_not_understood_is_an_error_naming_it() {
        for (text, needle) in [
            (
                "db1|ONLINE|writer(10.0.0.100)|x\n",
                "line 1: \"db1|ONLINE|writer(10.0.0.100)|x\" is not host|STATE|roles",
            ),
            (
                "db1|ONLINE|\ndb2|SIDEWAYS|\n",
                "line 2: host \"db2\": unknown host state \"SIDEWAYS\"",
            ),
            ("db1|ONLINE|writer\n", "role \"writer\" is not name(IPv4)"),
            (
                "db1|ONLINE|writer(10.0.0)\n",
                "role \"writer(10.0.0)\" is not name(IPv4)",
            ),
            ("|ONLINE|\n", "has no host name"),
            (
                "db1|ONLINE|\ndb1|ONLINE|\n",
                "line 2: host \"db1\" appears twice",
            ),
            ("db1\n", "found 1 fields"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }
}
