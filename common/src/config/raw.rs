//! The config file as written, before validation. Everything that can be wrong in more
//! than one place at once (enum names, durations, IPs) is kept as a string here so that
//! validation can report every problem together instead of stopping at the first.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub active_master_role: Option<String>,
    #[serde(default)]
    pub defaults: RawHostFields,
    #[serde(default, deserialize_with = "ordered")]
    pub hosts: Vec<(String, RawHost)>,
    #[serde(default, deserialize_with = "ordered")]
    pub roles: Vec<(String, RawRole)>,
    #[serde(default)]
    pub monitor: RawMonitor,
    #[serde(default, deserialize_with = "ordered")]
    pub checks: Vec<(String, RawCheck)>,
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub security: RawSecurity,
    /// `[coordination]`: a monitor fleet on etcd; absent: one monitor, a status file.
    pub coordination: Option<RawCoordination>,
}

/// Declares the keys a host may set itself or inherit from `[defaults]` (MMM's
/// `<host default>`) once, for both tables. `#[serde(flatten)]` would say it shorter but
/// hides unknown keys from the unknown-key report.
macro_rules! host_fields {
    ($(#[$m:meta])* $name:ident { $($extra:ident: $ety:ty),* }) => {
        $(#[$m])*
        #[derive(Debug, Default, Clone, Deserialize)]
        pub struct $name {
            $(pub $extra: $ety,)*
            pub cluster_interface: Option<String>,
            pub agent_port: Option<u16>,
            pub mysql_port: Option<u16>,
            pub agent_user: Option<String>,
            pub agent_password: Option<String>,
            pub agent_password_file: Option<String>,
            pub monitor_user: Option<String>,
            pub monitor_password: Option<String>,
            pub monitor_password_file: Option<String>,
            pub replication_user: Option<String>,
            pub replication_password: Option<String>,
            pub replication_password_file: Option<String>,
            /// Where mysqld writes its pid (optional): the probe reads it, when set, to
            /// find a running mysqld instead of looking for the one listening on
            /// mysql_port.
            pub mysql_pid_file: Option<String>,
            /// TLS to MySQL (`disabled`, `preferred`, `required`, `verify_ca`,
            /// `verify_identity`) and its files, for the agent's and the monitor's
            /// connections to this host's server.
            pub mysql_tls: Option<String>,
            pub mysql_ca: Option<String>,
            pub mysql_cert: Option<String>,
            pub mysql_key: Option<String>,
        }

        // Generated for both tables; only hosts use it.
        #[allow(dead_code)]
        impl $name {
            /// This table's value where it sets one, else the fallback's.
            pub fn or(&self, fallback: &RawHostFields) -> RawHostFields {
                RawHostFields {
                    cluster_interface: self.cluster_interface.clone().or_else(|| fallback.cluster_interface.clone()),
                    agent_port: self.agent_port.or(fallback.agent_port),
                    mysql_port: self.mysql_port.or(fallback.mysql_port),
                    agent_user: self.agent_user.clone().or_else(|| fallback.agent_user.clone()),
                    agent_password: secret_or(&self.agent_password, &self.agent_password_file, &fallback.agent_password, &fallback.agent_password_file).0,
                    agent_password_file: secret_or(&self.agent_password, &self.agent_password_file, &fallback.agent_password, &fallback.agent_password_file).1,
                    monitor_user: self.monitor_user.clone().or_else(|| fallback.monitor_user.clone()),
                    monitor_password: secret_or(&self.monitor_password, &self.monitor_password_file, &fallback.monitor_password, &fallback.monitor_password_file).0,
                    monitor_password_file: secret_or(&self.monitor_password, &self.monitor_password_file, &fallback.monitor_password, &fallback.monitor_password_file).1,
                    replication_user: self.replication_user.clone().or_else(|| fallback.replication_user.clone()),
                    replication_password: secret_or(&self.replication_password, &self.replication_password_file, &fallback.replication_password, &fallback.replication_password_file).0,
                    replication_password_file: secret_or(&self.replication_password, &self.replication_password_file, &fallback.replication_password, &fallback.replication_password_file).1,
                    mysql_pid_file: self.mysql_pid_file.clone().or_else(|| fallback.mysql_pid_file.clone()),
                    mysql_tls: self.mysql_tls.clone().or_else(|| fallback.mysql_tls.clone()),
                    mysql_ca: self.mysql_ca.clone().or_else(|| fallback.mysql_ca.clone()),
                    mysql_cert: self.mysql_cert.clone().or_else(|| fallback.mysql_cert.clone()),
                    mysql_key: self.mysql_key.clone().or_else(|| fallback.mysql_key.clone()),
                }
            }
        }
    };
}

/// A secret set on the host in either form replaces the default's in both forms, so a
/// host may give a file where the defaults give an inline value.
type SecretPair = (Option<String>, Option<String>);
fn secret_or(
    inline: &Option<String>,
    file: &Option<String>,
    fallback_inline: &Option<String>,
    fallback_file: &Option<String>,
) -> SecretPair {
    if inline.is_some() || file.is_some() {
        (inline.clone(), file.clone())
    } else {
        (fallback_inline.clone(), fallback_file.clone())
    }
}

host_fields!(RawHostFields {});
host_fields!(RawHost { ip: Option<String>, mode: Option<String>, peer: Option<String> });

#[derive(Debug, Default, Deserialize)]
pub struct RawRole {
    pub mode: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    pub prefer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMonitor {
    pub control: Option<String>,
    pub status_path: Option<String>,
    pub ping_ips: Option<Vec<String>>,
    pub ping_interval: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub agent_timeout: Option<String>,
    pub flap_duration: Option<String>,
    pub flap_count: Option<u32>,
    pub auto_set_online: Option<String>,
    pub failback: Option<bool>,
    pub kill_host_bin: Option<String>,
    pub notify_command: Option<String>,
    pub careful_startup: Option<bool>,
    pub mode: Option<String>,
    pub wait_for_other_master: Option<String>,
    pub promotion_timeout: Option<String>,
    pub metrics: Option<String>,
    pub http: Option<String>,
    pub http_token_file: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawCheck {
    pub check_period: Option<String>,
    pub trap_period: Option<String>,
    pub timeout: Option<String>,
    pub restart_after: Option<u32>,
    pub max_backlog: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAgent {
    pub probe: Option<String>,
    pub fencing: Option<String>,
    pub lease: Option<String>,
    pub max_kill_retries: Option<u32>,
    pub garp_count: Option<u32>,
    pub garp_interval: Option<String>,
    pub garp_refresh: Option<String>,
    pub state_dir: Option<String>,
    pub monitor_ips: Option<Vec<String>>,
    pub mysql_socket: Option<String>,
    pub block_users: Option<Vec<String>>,
    pub http: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCoordination {
    pub etcd: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub session_ttl: Option<String>,
    pub etcd_election_timeout: Option<String>,
    pub etcd_heartbeat_interval: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSecurity {
    pub key_file: Option<String>,
    pub key: Option<String>,
}

/// Deserializes a table into its entries in file order: hosts and roles are listed in
/// the order the operator wrote them, and MMM broke role-distribution ties by that order.
fn ordered<'de, D, T>(deserializer: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Ordered<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Ordered<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value::<T>()?;
                out.push((key, value));
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Ordered(std::marker::PhantomData))
}
