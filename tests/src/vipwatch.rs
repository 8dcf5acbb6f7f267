//! Who holds an address, from the kernel's own events: `ip -ts monitor address` in each
//! namespace, started before the window and read after it. Sampling `ip addr` would miss
//! a VIP held twice for less than a sample's period (a stale addition undone 10 ms later
//! was the bug this watches for); the kernel reports every change, each stamped with the
//! one wall clock all namespaces share.

use crate::lab::Lab;
use crate::netns::wait_for;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// A change of holder: (seconds since the epoch, node, held after it).
pub type Change = (f64, String, bool);

pub struct VipWatch {
    ip: Ipv4Addr,
    /// (node, its monitor's pid, its log)
    watchers: Vec<(String, u32, PathBuf)>,
    /// Nodes holding the address once every monitor was listening.
    initial: BTreeSet<String>,
    /// When `initial` was read.
    since: f64,
}

impl VipWatch {
    /// Watches `ip` on each of `nodes`' eth0 from now on.
    pub fn start(lab: &Lab, nodes: &[&str], ip: Ipv4Addr, tag: &str) -> VipWatch {
        let watchers: Vec<(String, u32, PathBuf)> = nodes
            .iter()
            .map(|n| {
                let log = lab.dir.path().join(format!("vipwatch-{tag}-{n}.log"));
                let pid = lab.net.spawn(n, &["ip", "-ts", "monitor", "address"], &log);
                (n.to_string(), pid, log)
            })
            .collect();
        // Listening once its netlink socket is bound; reading the holders after that
        // misses no change (one seen both ways is applied twice, to the same effect).
        let listening = wait_for(Duration::from_secs(5), || {
            watchers
                .iter()
                .all(|(_, pid, _)| netlink_sockets(*pid) > 0)
                .then_some(())
        });
        assert!(listening.is_some(), "ip monitor did not start");
        let since = now();
        let needle = format!("{ip}/");
        let initial = nodes
            .iter()
            .filter(|n| lab.net.addresses(n).iter().any(|a| a.starts_with(&needle)))
            .map(|n| n.to_string())
            .collect();
        VipWatch {
            ip,
            watchers,
            initial,
            since,
        }
    }

    /// Stops watching; every change seen, in time order.
    pub fn stop(self, lab: &Lab) -> Watched {
        // Changes already made are in the logs once the monitors have read them.
        std::thread::sleep(Duration::from_millis(100));
        let mut changes = Vec::new();
        for (node, pid, log) in &self.watchers {
            lab.net.signal(*pid, "TERM");
            lab.net.wait_exit(*pid, Duration::from_secs(5));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            changes.extend(
                parse(&text, self.ip)
                    .into_iter()
                    .map(|(t, held)| (t, node.clone(), held)),
            );
        }
        changes.sort_by(|a, b| a.0.total_cmp(&b.0));
        Watched {
            initial: self.initial,
            since: self.since,
            changes,
        }
    }
}

pub struct Watched {
    pub initial: BTreeSet<String>,
    pub since: f64,
    pub changes: Vec<Change>,
}

impl Watched {
    /// Every span (start, length in seconds, holders) during which two or more nodes held
    /// the address.
    pub fn doubly_held(&self) -> Vec<(f64, f64, BTreeSet<String>)> {
        let mut held = self.initial.clone();
        let mut spans = Vec::new();
        let mut open: Option<(f64, BTreeSet<String>)> = None;
        let mut t_last = self.since;
        for (t, node, on) in &self.changes {
            if *on {
                held.insert(node.clone());
            } else {
                held.remove(node);
            }
            t_last = *t;
            match (&mut open, held.len() > 1) {
                (None, true) => open = Some((*t, held.clone())),
                (Some((_, who)), true) => who.extend(held.iter().cloned()),
                (Some((start, who)), false) => {
                    spans.push((*start, *t - *start, who.clone()));
                    open = None;
                }
                (None, false) => {}
            }
        }
        if let Some((start, who)) = open {
            spans.push((start, t_last.max(now()) - start, who));
        }
        if self.initial.len() > 1 {
            spans.insert(0, (self.since, 0.0, self.initial.clone()));
        }
        spans
    }

    /// Nodes holding the address after the last change.
    pub fn holders(&self) -> BTreeSet<String> {
        let mut held = self.initial.clone();
        for (_, node, on) in &self.changes {
            if *on {
                held.insert(node.clone());
            } else {
                held.remove(node);
            }
        }
        held
    }

    /// The changes as lines, for a failure message.
    pub fn describe(&self) -> String {
        let mut s = format!("held at the start by {:?}\n", self.initial);
        for (t, node, on) in &self.changes {
            s.push_str(&format!(
                "{:.6} {node} {}\n",
                t - self.since,
                if *on { "added" } else { "removed" }
            ));
        }
        s
    }
}

/// Netlink sockets a process holds (its monitor subscribes through one).
fn netlink_sockets(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: BTreeSet<String> = entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    // /proc/net/netlink of the process's own namespace lists its sockets' inodes last.
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .last()
                .is_some_and(|i| inodes.contains(i))
        })
        .count()
}

/// Wall-clock seconds now, as `ip -ts` stamps them (local time: the offset cancels out
/// in every difference, and the lab's namespaces share the host's zone).
fn now() -> f64 {
    let out = std::process::Command::new("date")
        .arg("+%Y-%m-%dT%H:%M:%S.%6N")
        .output()
        .expect("running date");
    stamp(String::from_utf8_lossy(&out.stdout).trim()).expect("date's own format")
}

/// `2026-12-07T07:08:26.667145` as seconds since 1970-01-01 of the same zone.
fn stamp(s: &str) -> Option<f64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

/// (time, held after it) for each change of `ip` in an `ip -ts monitor address` log.
fn parse(text: &str, ip: Ipv4Addr) -> Vec<(f64, bool)> {
    let needle = format!(" {ip}/");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let (ts, event) = rest.split_once(']')?;
            if !event.contains(&needle) || !event.contains("inet ") {
                return None;
            }
            Some((stamp(ts)?, !event.trim_start().starts_with("Deleted")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_read_into_changes_and_spans() {
        let log = "[2026-12-07T07:08:26.667145] 3: eth0    inet 192.0.2.100/32 scope global eth0\n       valid_lft forever preferred_lft forever\n[2026-12-07T07:08:26.780715] Deleted 3: eth0    inet 192.0.2.100/32 scope global eth0\n[2026-12-07T07:08:26.790000] 3: eth0    inet 192.0.2.101/32 scope global eth0\n";
        let changes = parse(log, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(changes.len(), 2);
        assert!(changes[0].1 && !changes[1].1);
        assert!((changes[1].0 - changes[0].0 - 0.11357).abs() < 1e-6);
        let base = stamp("2026-12-07T07:08:26.600000").unwrap();
        let w = Watched {
            initial: ["db2".to_string()].into(),
            since: base,
            changes: changes
                .into_iter()
                .map(|(t, on)| (t, "db1".to_string(), on))
                .collect(),
        };
        let spans = w.doubly_held();
        assert_eq!(spans.len(), 1);
        assert!((spans[0].1 - 0.11357).abs() < 1e-6);
        assert_eq!(w.holders(), ["db2".to_string()].into());
        assert_eq!(stamp("1970-01-02T00:00:01.5"), Some(86_401.5));
    }
}
