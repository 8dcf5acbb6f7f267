//! Enums every part of mmm agrees on. Named states, never MMM's -1/0/1 integers.

use std::fmt;
use std::str::FromStr;

/// Error for a name that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?} (expected one of: {expected})")]
pub struct UnknownName {
    pub what: &'static str,
    pub got: String,
    pub expected: &'static str,
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownName { what: $what, got: s.into(), expected: concat!($($s, " "),+).trim_ascii_end() }),
                }
            }
        }
    };
}

named_enum!(
    /// MMM's host states, spelled as `mmm-control show` prints them.
    HostState, "host state" {
        Online => "ONLINE",
        AdminOffline => "ADMIN_OFFLINE",
        HardOffline => "HARD_OFFLINE",
        AwaitingRecovery => "AWAITING_RECOVERY",
        ReplicationFail => "REPLICATION_FAIL",
        ReplicationDelay => "REPLICATION_DELAY",
    }
);

named_enum!(
    /// A host's place in the topology.
    HostMode, "host mode" {
        Master => "master",
        Slave => "slave",
    }
);

named_enum!(
    /// Exclusive roles live on one host with one IP; balanced roles spread their IPs.
    RoleMode, "role mode" {
        Exclusive => "exclusive",
        Balanced => "balanced",
    }
);

named_enum!(
    /// The monitor's operating modes (MMM's `mode`).
    MonitorMode, "monitor mode" {
        Active => "active",
        Manual => "manual",
        Wait => "wait",
        Passive => "passive",
    }
);

named_enum!(
    /// The checks the monitor runs against every host.
    CheckKind, "check" {
        Ping => "ping",
        Mysql => "mysql",
        RepThreads => "rep_threads",
        RepBacklog => "rep_backlog",
    }
);

named_enum!(
    /// Whether the agent loads the eBPF liveness probe.
    ProbeMode, "probe mode" {
        Auto => "auto",
        Required => "required",
        Off => "off",
    }
);

named_enum!(
    /// How a writer is fenced when the monitor cannot reach its agent.
    Fencing, "fencing" {
        /// The agent demotes itself when the monitor's heartbeats stop for `lease`.
        Lease => "lease",
        None => "none",
    }
);

named_enum!(
    /// TLS to MySQL, spelled as the MySQL clients' `--ssl-mode` (lower case).
    TlsMode, "TLS mode" {
        /// Plaintext.
        Disabled => "disabled",
        /// TLS when the server offers it, plaintext otherwise; nothing verified.
        Preferred => "preferred",
        /// TLS or no connection; the server's certificate is not verified.
        Required => "required",
        /// TLS with a server certificate signed by `mysql_ca`.
        VerifyCa => "verify_ca",
        /// As verify_ca, and the certificate names the address connected to.
        VerifyIdentity => "verify_identity",
    }
);

impl TlsMode {
    /// Whether the server's certificate is checked against the CA.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

/// The lease margin, defined with the rest of the fencing timing in [`crate::timing`].
pub use crate::timing::margin as lease_margin;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in HostState::ALL {
            assert_eq!(s.as_str().parse::<HostState>(), Ok(*s));
        }
        for c in CheckKind::ALL {
            assert_eq!(c.to_string().parse::<CheckKind>(), Ok(*c));
        }
        let err = "sideways".parse::<RoleMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown role mode \"sideways\" (expected one of: exclusive balanced)"
        );
    }
}
