//! GTID sets of both server families, for the questions the monitor asks: does host A
//! have every transaction host B has (errant transactions, a slave ahead of the
//! candidate)?
//!
//! MariaDB: `domain-server-seq` entries. Compared as a binlog *state* (one entry per
//! domain and server, what `@@gtid_binlog_state` prints): A contains B when for every
//! (domain, server) of B, A has that pair with a sequence number at least as high. Under
//! gtid_strict_mode sequence numbers grow within a domain, so this is exact; a plain
//! position (one entry per domain) is compared the same way.
//! MySQL: `uuid:1-5:7,uuid2:1-3` interval sets, compared by interval containment.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GtidSet {
    #[default]
    Empty,
    /// (domain, server) -> highest sequence number.
    MariaDb(BTreeMap<(u32, u32), u64>),
    /// uuid -> sorted, disjoint, inclusive intervals.
    MySql(BTreeMap<String, Vec<(u64, u64)>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a GTID set: {reason}")]
pub struct GtidError {
    pub input: String,
    pub reason: String,
}

impl GtidSet {
    pub fn parse(text: &str) -> Result<GtidSet, GtidError> {
        let text = text.trim();
        let err = |reason: &str| GtidError {
            input: text.into(),
            reason: reason.into(),
        };
        let parts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Ok(GtidSet::Empty);
        }
        if parts[0].contains(':') {
            let mut sets: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
            for p in parts {
                let mut fields = p.split(':');
                let uuid = fields.next().unwrap_or_default().to_ascii_lowercase();
                if uuid.len() != 36 || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Err(err("a MySQL GTID set entry needs a server UUID"));
                }
                let list = sets.entry(uuid).or_default();
                for iv in fields {
                    let (a, b) = match iv.split_once('-') {
                        Some((a, b)) => (a.parse(), b.parse()),
                        None => (iv.parse(), iv.parse()),
                    };
                    match (a, b) {
                        (Ok(a), Ok(b)) if a >= 1 && a <= b => list.push((a, b)),
                        _ => return Err(err("an interval is not N or N-M with 1 <= N <= M")),
                    }
                }
            }
            for list in sets.values_mut() {
                normalise(list);
            }
            Ok(GtidSet::MySql(sets))
        } else {
            let mut map = BTreeMap::new();
            for p in parts {
                let nums: Vec<&str> = p.split('-').collect();
                let [d, s, n] = nums.as_slice() else {
                    return Err(err("a MariaDB GTID is domain-server-sequence"));
                };
                let (Ok(d), Ok(s), Ok(n)) = (d.parse(), s.parse(), n.parse::<u64>()) else {
                    return Err(err("a MariaDB GTID is three unsigned numbers"));
                };
                let e = map.entry((d, s)).or_insert(n);
                *e = (*e).max(n);
            }
            Ok(GtidSet::MariaDb(map))
        }
    }

    /// Whether every transaction in `other` is in `self`.
    pub fn contains(&self, other: &GtidSet) -> bool {
        match (self, other) {
            (_, GtidSet::Empty) => true,
            (GtidSet::Empty, _) => false,
            (GtidSet::MariaDb(a), GtidSet::MariaDb(b)) => {
                b.iter().all(|(k, n)| a.get(k).is_some_and(|m| m >= n))
            }
            (GtidSet::MySql(a), GtidSet::MySql(b)) => b.iter().all(|(uuid, ivs)| {
                let mine = a.get(uuid).map(Vec::as_slice).unwrap_or(&[]);
                ivs.iter()
                    .all(|&(lo, hi)| mine.iter().any(|&(x, y)| x <= lo && hi <= y))
            }),
            // Different families: nothing can be said to be contained.
            _ => false,
        }
    }

    /// The transactions of `self` that `other` lacks, in the set's own notation (empty
    /// when none): what an operator must look at before a host rejoins.
    pub fn missing_from(&self, other: &GtidSet) -> String {
        match (self, other) {
            (GtidSet::MariaDb(a), GtidSet::MariaDb(b)) => a
                .iter()
                .filter(|(k, n)| b.get(k).is_none_or(|m| m < n))
                .map(|((d, s), n)| match b.get(&(*d, *s)) {
                    Some(m) => format!("{d}-{s}-{}..{n}", m + 1),
                    None => format!("{d}-{s}-..{n}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            (a, b) if b.contains(a) => String::new(),
            (a, _) => a.to_string(),
        }
    }

    /// A position with one GTID per domain (what MASTER_GTID_WAIT takes), for MariaDB;
    /// the set itself for MySQL.
    pub fn position(&self) -> String {
        match self {
            GtidSet::MariaDb(map) => {
                let mut best: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
                for ((d, s), n) in map {
                    let e = best.entry(*d).or_insert((*n, *s));
                    if *n > e.0 {
                        *e = (*n, *s);
                    }
                }
                best.iter()
                    .map(|(d, (n, s))| format!("{d}-{s}-{n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            other => other.to_string(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GtidSet::Empty => true,
            GtidSet::MariaDb(m) => m.is_empty(),
            GtidSet::MySql(m) => m.is_empty(),
        }
    }
}

fn normalise(list: &mut Vec<(u64, u64)>) {
    list.sort();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(list.len());
    for &(a, b) in list.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *list = out;
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::Empty => Ok(()),
            GtidSet::MariaDb(m) => {
                let v: Vec<String> = m.iter().map(|((d, s), n)| format!("{d}-{s}-{n}")).collect();
                f.write_str(&v.join(","))
            }
            GtidSet::MySql(m) => {
                let v: Vec<String> = m
                    .iter()
                    .map(|(u, ivs)| {
                        let parts: Vec<String> = ivs
                            .iter()
                            .map(|(a, b)| {
                                if a == b {
                                    a.to_string()
                                } else {
                                    format!("{a}-{b}")
                                }
                            })
                            .collect();
                        format!("{u}:{}", parts.join(":"))
                    })
                    .collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> GtidSet {
        GtidSet::parse(s).unwrap()
    }

    #[test]
    fn mariadb_binlog_states_detect_errant_transactions() {
        // db1 wrote 0-1-101..105 that never reached db2; db2 then wrote 0-2-101..110.
        let db1 = g("0-1-105");
        let db2 = g("0-1-100,0-2-110");
        assert!(!db2.contains(&db1), "db1 has transactions db2 lacks");
        assert_eq!(db1.missing_from(&db2), "0-1-101..105");
        // A caught-up slave of db2 has nothing db2 lacks.
        assert!(db2.contains(&g("0-1-100,0-2-108")));
        assert!(g("0-1-100,0-2-110").contains(&GtidSet::Empty));
        assert!(!GtidSet::Empty.contains(&db1));
        assert_eq!(db2.position(), "0-2-110");
        assert_eq!(g("0-1-5,1-2-7").position(), "0-1-5,1-2-7");
    }

    #[test]
    fn mysql_sets_compare_by_intervals() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let a = g(&format!("{u}:1-10:12-20"));
        assert!(a.contains(&g(&format!("{u}:2-5:13"))));
        assert!(!a.contains(&g(&format!("{u}:11"))));
        assert!(!a.contains(&g("4e11fa47-71ca-11e1-9e33-c80aa9429562:1")));
        assert_eq!(g(&format!("{u}:1-3:4-6")).to_string(), format!("{u}:1-6"));
    }

    #[test]
    fn bad_sets_are_refused_with_a_reason() {
        assert!(GtidSet::parse("0-1").is_err());
        assert!(GtidSet::parse("x-1-2").is_err());
        assert!(GtidSet::parse("not-a-uuid:1-2").is_err());
        assert!(GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-2").is_err());
        assert_eq!(GtidSet::parse("  ").unwrap(), GtidSet::Empty);
    }
}
