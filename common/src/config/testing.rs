//! A typed builder of test configurations, so that tests state only what they change
//! instead of carrying near copies of one TOML file. For tests only: compiled into this
//! crate's unit tests, and into other crates' tests through the `testing` feature (a
//! dev-dependency feature, so no release binary carries it).
//!
//! [`ConfigBuilder::new`] is the smallest valid cluster: masters db1 and db2 peered to
//! each other, an exclusive writer role with one VIP, a `[monitor]` pinging one address
//! and an inline cluster key. The setters write the keys of the file format
//! (conf/mmm.toml, docs/configuration.md); [`ConfigBuilder::toml`] renders the text for
//! tests that need a file and [`ConfigBuilder::build`] parses it as the daemons do.

use super::{Config, ConfigError};
use crate::duration::format_duration;
use crate::types::{HostMode, RoleMode};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use toml::{Table, Value};

/// The inline cluster key of [`ConfigBuilder::new`]: valid, and obviously not a secret.
pub const TEST_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    /// The file as TOML tables; table and key order is the order of insertion, so host
    /// order (which breaks role ties) is the order of the `host` calls.
    root: Table,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder::new()
    }
}

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        let mut b = ConfigBuilder { root: Table::new() };
        b.set("defaults.agent_password", "a")
            .set("defaults.monitor_password", "m")
            .set("defaults.replication_password", "r")
            .master("db1", Ipv4Addr::new(10, 0, 0, 11), "db2")
            .master("db2", Ipv4Addr::new(10, 0, 0, 12), "db1")
            .role(
                "writer",
                RoleMode::Exclusive,
                &["db1", "db2"],
                &[Ipv4Addr::new(10, 0, 0, 100)],
            )
            .ping_ips(&[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))])
            .key(TEST_KEY);
        b
    }

    /// `[hosts.NAME]` with its ip and mode, after the hosts already there.
    pub fn host(&mut self, name: &str, mode: HostMode, ip: Ipv4Addr) -> &mut Self {
        self.set(&format!("hosts.{name}.ip"), ip.to_string())
            .set(&format!("hosts.{name}.mode"), mode.as_str())
    }

    /// A master host and the name of its peer.
    pub fn master(&mut self, name: &str, ip: Ipv4Addr, peer: &str) -> &mut Self {
        self.host(name, HostMode::Master, ip)
            .set(&format!("hosts.{name}.peer"), peer)
    }

    pub fn without_host(&mut self, name: &str) -> &mut Self {
        self.remove(&format!("hosts.{name}"))
    }

    /// `[roles.NAME]`, replacing a role of that name.
    pub fn role(
        &mut self,
        name: &str,
        mode: RoleMode,
        hosts: &[&str],
        ips: &[Ipv4Addr],
    ) -> &mut Self {
        let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        self.remove(&format!("roles.{name}"))
            .set(&format!("roles.{name}.mode"), mode.as_str())
            .set(&format!("roles.{name}.hosts"), hosts.to_vec())
            .set(&format!("roles.{name}.ips"), ips)
    }

    /// The balanced `reader` role.
    pub fn reader(&mut self, hosts: &[&str], ips: &[Ipv4Addr]) -> &mut Self {
        self.role("reader", RoleMode::Balanced, hosts, ips)
    }

    /// `[coordination]` with its etcd client URLs and key prefix.
    pub fn coordination(&mut self, etcd: &[&str], prefix: &str) -> &mut Self {
        self.set("coordination.etcd", etcd.to_vec())
            .set("coordination.prefix", prefix)
    }

    pub fn session_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.duration("coordination.session_ttl", ttl)
    }

    /// `agent.lease`.
    pub fn lease(&mut self, lease: Duration) -> &mut Self {
        self.duration("agent.lease", lease)
    }

    pub fn heartbeat_interval(&mut self, d: Duration) -> &mut Self {
        self.duration("monitor.heartbeat_interval", d)
    }

    pub fn agent_timeout(&mut self, d: Duration) -> &mut Self {
        self.duration("monitor.agent_timeout", d)
    }

    pub fn ping_ips(&mut self, ips: &[IpAddr]) -> &mut Self {
        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        self.set("monitor.ping_ips", ips)
    }

    /// An inline `security.key` (hex), in place of any key or key file.
    pub fn key(&mut self, hex: &str) -> &mut Self {
        self.remove("security.key_file").set("security.key", hex)
    }

    /// `security.key_file`, in place of any key or key file.
    pub fn key_file(&mut self, path: &Path) -> &mut Self {
        let path = path.to_str().expect("a UTF-8 path");
        self.remove("security.key").set("security.key_file", path)
    }

    /// Any key by its dotted path (`"hosts.db1.agent_port"`), tables created as needed:
    /// for the keys no typed setter covers, and for values a test wants wrong.
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        let (table, key) = self.parent(path);
        table.insert(key.to_string(), value.into());
        self
    }

    /// A duration key, written as the config writes durations (microseconds at most:
    /// finer parts are not part of the format).
    pub fn duration(&mut self, path: &str, d: Duration) -> &mut Self {
        self.set(path, written(d))
    }

    /// Removes a key or a whole table; a path that is not there is no error.
    pub fn remove(&mut self, path: &str) -> &mut Self {
        let (table, key) = self.parent(path);
        table.remove(key);
        self
    }

    /// The configuration file's text.
    pub fn toml(&self) -> String {
        toml::to_string(&self.root).expect("a TOML table renders")
    }

    /// Parses [`ConfigBuilder::toml`] as the daemons do.
    pub fn parse(&self) -> Result<Config, ConfigError> {
        Config::parse(&self.toml(), Path::new("test.toml"))
    }

    /// The parsed configuration; panics with every problem if it is not valid.
    #[track_caller]
    pub fn build(&self) -> Config {
        self.parse().unwrap_or_else(|e| {
            panic!(
                "the test config is invalid:\n{}\n{}",
                e.lines().join("\n"),
                self.toml()
            )
        })
    }

    /// The table that holds the last component of `path`, created as needed, and that
    /// component.
    fn parent<'a>(&mut self, path: &'a str) -> (&mut Table, &'a str) {
        let (tables, key) = path.rsplit_once('.').unwrap_or(("", path));
        let mut table = &mut self.root;
        for name in tables.split('.').filter(|n| !n.is_empty()) {
            table = table
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{name} in {path} is a value, not a table"));
        }
        (table, key)
    }
}

/// A duration in the config's syntax, keeping the microseconds the parser keeps.
fn written(d: Duration) -> String {
    assert_eq!(
        d.subsec_nanos() % 1000,
        0,
        "{d:?}: the config format stops at microseconds"
    );
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format_duration(d)
    } else {
        format!("{}.{:03}ms", us / 1000, us % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_valid_two_master_cluster() {
        let c = ConfigBuilder::new().build();
        let names: Vec<_> = c.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1", "db2"]);
        assert_eq!(c.host("db1").unwrap().peer.as_deref(), Some("db2"));
        assert_eq!(c.roles.len(), 1);
        assert_eq!(c.coordination, None);
    }

    #[test]
    fn setters_reach_the_parsed_config_in_file_order() {
        let c = ConfigBuilder::new()
            .host("db3", HostMode::Slave, Ipv4Addr::new(10, 0, 0, 13))
            .reader(&["db1", "db2", "db3"], &[Ipv4Addr::new(10, 0, 0, 101)])
            .coordination(&["http://10.0.0.5:2379"], "/mmm/t")
            .session_ttl(Duration::from_secs(5))
            .lease(Duration::from_micros(1_234_567))
            .set("active_master_role", "writer")
            .build();
        assert_eq!(c.hosts[2].name, "db3");
        assert_eq!(c.role("reader").unwrap().hosts.len(), 3);
        assert_eq!(c.agent.lease, Duration::from_micros(1_234_567));
        let co = c.coordination.expect("coordination");
        assert_eq!(co.session_ttl, Duration::from_secs(5));
        assert_eq!(co.prefix, "/mmm/t");
    }

    #[test]
    fn durations_are_written_as_the_config_writes_them() {
        assert_eq!(written(Duration::from_millis(1500)), "1500ms");
        assert_eq!(written(Duration::from_secs(120)), "2m");
        assert_eq!(written(Duration::from_micros(1_234)), "1.234ms");
        assert_eq!(written(Duration::from_micros(5)), "0.005ms");
    }
}
