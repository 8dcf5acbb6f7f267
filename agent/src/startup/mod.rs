//! Start-up checks: what would otherwise surface minutes later, as a refused term, an
//! unsaved lease deadline or a failed VIP step, is refused before the agent serves.
//!
//! An agent that starts and then cannot do its job is worse than one that does not start:
//! a fleet never converges around it, and the operator sees the cause, if at all, in a
//! monitor's refusal long after the deploy. So every condition here is checked once, as
//! the agent will run (after [`crate::caps::restrict`]: a root-started agent has dropped
//! CAP_DAC_OVERRIDE by then, and file access is decided as it will be from then on), and
//! every problem found is reported at once, each on one line with its fix.
//!
//! Degraded but working setups (no gratuitous ARP, no probe under `probe = "auto"`, an
//! unreadable `mysql_pid_file`) are warned about where they are detected, not here.

//!
//! The checks are grouped by what they look at: `files` (state_dir, the state files, the
//! secrets, etcd's TLS files, the MySQL socket), `interface` (the cluster interface),
//! `user` (who the agent runs as, named in every fix).

use crate::caps::{Capability, Held};
use mmm_common::config::{Config, Host, SecretError};
use mmm_common::error_chain;
use mmm_common::etcd::EtcdTlsError;
use mmm_common::types::ProbeMode;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

mod files;
mod interface;
#[cfg(test)]
mod tests;
mod user;

use files::{etcd_tls, mysql_socket, secrets};
pub use files::{state_dir, state_files, StateStep};
pub use interface::{interface, interfaces, Interface};
pub use user::User;

/// The unit file whose settings the fixes point at.
const UNIT: &str = "conf/systemd/mmm-agent.service";

/// One reason not to start. Each names what it is about, and [`StartupError::fix`] says
/// what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("CAP_NET_ADMIN is required: without it the agent cannot add or remove VIPs")]
    NoNetAdmin,
    #[error("probe = \"required\" but CAP_BPF and CAP_PERFMON are not both held")]
    ProbeCaps,
    #[error("[agent] state_dir {path}: {step} as {user}")]
    StateDir {
        path: PathBuf,
        step: StateStep,
        user: User,
        #[source]
        source: io::Error,
    },
    #[error("[agent] state_dir {path} is not a directory")]
    StateDirNotDir { path: PathBuf, user: User },
    #[error("state file {path}: opening it to read and write as {user}")]
    StateFile {
        path: PathBuf,
        user: User,
        #[source]
        source: io::Error,
    },
    #[error("{key} as {user}")]
    Secret {
        key: String,
        user: User,
        /// What the agent needs it for.
        needed: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("[coordination] as {user}")]
    EtcdTls {
        user: User,
        #[source]
        source: EtcdTlsError,
    },
    #[error("[agent] mysql_socket {path}: reaching it as {user}")]
    MysqlSocket {
        path: PathBuf,
        user: User,
        #[source]
        source: io::Error,
    },
    #[error("{key} {name:?} does not exist here (interfaces: {}), and every VIP of {} would fail on it", present.join(", "), roles.join(", "))]
    NoInterface {
        key: String,
        name: String,
        /// The interfaces this host has (boxed slices keep every result small).
        present: Box<[String]>,
        /// The roles with VIPs this host may hold.
        roles: Box<[String]>,
        /// The interface that holds the host's own ip, if any.
        holder: Option<(Ipv4Addr, String)>,
    },
    #[error("{key} {name:?} has no Ethernet address: VIP steps look it up and announce by gratuitous ARP")]
    NoEthernet { key: String, name: String },
}

impl StartupError {
    /// What to change so the agent starts.
    pub fn fix(&self) -> String {
        match self {
            StartupError::NoNetAdmin | StartupError::ProbeCaps => format!(
                "grant it (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON, as {UNIT} does){}",
                if matches!(self, StartupError::ProbeCaps) {
                    ", or set probe = \"auto\""
                } else {
                    ""
                }
            ),
            StartupError::StateDir { user, source, .. } => {
                let mut fix = state_dir_fix(user);
                if source.kind() == io::ErrorKind::ReadOnlyFilesystem {
                    fix.push_str(
                        " (systemd's ProtectSystem=strict leaves only RuntimeDirectory= and ReadWritePaths= writable)",
                    );
                }
                fix
            }
            StartupError::StateDirNotDir { user, .. } => state_dir_fix(user),
            StartupError::StateFile { user, .. } => format!(
                "chown it to {} (an agent started as another user left it?), or remove it (a removed lease makes a restarted writer give its role up)",
                user.owner()
            ),
            StartupError::Secret { user, needed, .. } => format!(
                "make it readable by {} (owned by it, mode 0600): the agent needs it {needed}",
                user.owner()
            ),
            StartupError::EtcdTls { user, .. } => format!(
                "make it readable by {}: without it the agent never holds its etcd lease, the writer permit",
                user.owner()
            ),
            StartupError::MysqlSocket { user, .. } => format!(
                "let {} reach it (the socket's directories searchable, the socket writable; MariaDB's /run/mysqld is 0755 and the socket 0777), or leave mysql_socket empty (the host's ip:mysql_port)",
                user.owner()
            ),
            StartupError::NoInterface { holder, .. } => match holder {
                Some((ip, iface)) => {
                    format!("{ip}, this host's ip, is on {iface:?}: set cluster_interface = {iface:?}")
                }
                None => "set cluster_interface to the interface on the cluster's network".into(),
            },
            StartupError::NoEthernet { .. } => {
                "set cluster_interface to the Ethernet interface on the cluster's network".into()
            }
        }
    }
}

fn state_dir_fix(user: &User) -> String {
    format!(
        "create it owned by {} (systemd: RuntimeDirectory=mmm in the unit, as {UNIT} does), or set [agent] state_dir",
        user.owner()
    )
}

/// Every reason not to start, one line each: what failed, the system's reason, the fix.
#[derive(Debug, thiserror::Error)]
pub struct Refusals(pub Vec<StartupError>);

impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}; fix: {}", error_chain(e), e.fix())?;
        }
        Ok(())
    }
}

/// Runs every start-up check for `host` as the agent runs now (`held` after
/// [`crate::caps::restrict`]).
pub fn check(config: &Config, host: &Host, held: &Held, user: &User) -> Result<(), Refusals> {
    let mut found = Vec::new();
    if !held.has(Capability::CAP_NET_ADMIN) {
        found.push(StartupError::NoNetAdmin);
    }
    if config.agent.probe == ProbeMode::Required
        && !(held.has(Capability::CAP_BPF) && held.has(Capability::CAP_PERFMON))
    {
        found.push(StartupError::ProbeCaps);
    }
    match state_dir(&config.agent.state_dir, &host.name, user) {
        // The files in it are only worth checking in a directory the agent can use.
        Ok(()) => found.extend(state_files(&config.agent.state_dir, &host.name, user)),
        Err(e) => found.push(e),
    }
    found.extend(secrets(host, user));
    if let Some(c) = &config.coordination {
        found.extend(etcd_tls(c, user));
    }
    if let Some(socket) = &config.agent.mysql_socket {
        found.extend(mysql_socket(socket, user));
    }
    match interfaces() {
        Ok(present) => found.extend(interface(config, host, &present)),
        // Not a reason to refuse: the VIP steps name a missing interface themselves.
        Err(e) => {
            tracing::warn!(error = %e, "interfaces not listed: cluster_interface not checked")
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Refusals(found))
    }
}
