//! GTID sets of both server families, for the questions the monitor asks: does host A
//! have every transaction host B has (errant transactions, a slave ahead of the
//! candidate)?
//!
//! MariaDB: `domain-server-seq` entries. Compared as a binlog *state* (one entry per
//! domain and server, what `@@gtid_binlog_state` prints): A contains B when for every
//! (domain, server) of B, A has that pair with a sequence number at least as high. Under
//! gtid_strict_mode sequence numbers grow within a domain, so this is exact; a plain
//! position (one entry per domain) is compared the same way.
//! MySQL: `uuid:1-5:7,uuid2:1-3` interval sets, compared by interval containment. MySQL
//! 8.3+ tags transactions: `uuid:1-5:domain_1:1-3:11` holds untagged 1-5 and tagged
//! `domain_1` 1-3 and 11 of the same server; a tag is a source of its own (compared
//! separately), case-insensitive, and printed lower-case after the untagged intervals.
//!
//! Parsing fails closed: text that is not a set of one family is an error naming it,
//! never an empty set, because an empty set is contained in every other and would pass
//! the errant-transaction check silently.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GtidSet {
    #[default]
    Empty,
    /// (domain, server) -> highest sequence number.
    MariaDb(BTreeMap<(u32, u32), u64>),
    /// (uuid, tag) -> sorted, disjoint, inclusive intervals; the tag is empty for
    /// untagged transactions.
    MySql(BTreeMap<(String, String), Vec<(u64, u64)>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidError {
    /// The text is not a GTID set of either family.
    #[error("{input:?} is not a GTID set: {reason}")]
    Syntax { input: String, reason: String },
    /// The agent could not read the server's set: it is unknown, not empty.
    #[error("the GTID set is unknown: the agent could not read it: {reason}")]
    Unreadable { reason: String },
}

/// MySQL's tag syntax: a letter or underscore, then letters, digits and underscores, at
/// most 32 in all.
fn is_tag(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A server UUID as MySQL prints it: 8-4-4-4-12 hexadecimal digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl GtidSet {
    pub fn parse(text: &str) -> Result<GtidSet, GtidError> {
        let text = text.trim();
        let err = |reason: String| GtidError::Syntax {
            input: text.into(),
            reason,
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
            let mut sets: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
            for p in parts {
                let mut fields = p.split(':');
                let uuid = fields.next().unwrap_or_default().to_ascii_lowercase();
                if !is_uuid(&uuid) {
                    return Err(err(format!("{p:?} does not start with a server UUID")));
                }
                let mut tag = String::new();
                // Whether the current source (untagged, or the last tag) has an interval.
                let mut has_interval = false;
                for field in fields {
                    if field.starts_with(|c: char| c.is_ascii_digit()) {
                        let (a, b) = match field.split_once('-') {
                            Some((a, b)) => (a.parse(), b.parse()),
                            None => (field.parse(), field.parse()),
                        };
                        match (a, b) {
                            (Ok(a), Ok(b)) if a >= 1 && a <= b => sets
                                .entry((uuid.clone(), tag.clone()))
                                .or_default()
                                .push((a, b)),
                            _ => {
                                return Err(err(format!(
                                    "{field:?} is not an interval N or N-M with 1 <= N <= M"
                                )))
                            }
                        }
                        has_interval = true;
                    } else if is_tag(field) {
                        if !tag.is_empty() && !has_interval {
                            return Err(err(format!("tag {tag:?} has no interval")));
                        }
                        tag = field.to_ascii_lowercase();
                        has_interval = false;
                    } else {
                        return Err(err(format!(
                            "{field:?} is neither an interval nor a tag (a letter or _, then letters, digits or _, at most 32)"
                        )));
                    }
                }
                if !has_interval {
                    return Err(err(format!("{p:?} ends without an interval")));
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
                    return Err(err(format!(
                        "{p:?} is not a MariaDB GTID domain-server-sequence"
                    )));
                };
                let (Ok(d), Ok(s), Ok(n)) = (d.parse(), s.parse(), n.parse::<u64>()) else {
                    return Err(err(format!(
                        "{p:?} is not three unsigned numbers (domain and server 32-bit, sequence 64-bit)"
                    )));
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
            (GtidSet::MySql(a), GtidSet::MySql(b)) => b.iter().all(|(source, ivs)| {
                let mine = a.get(source).map(Vec::as_slice).unwrap_or(&[]);
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
                // MySQL's own notation: one entry per UUID, untagged intervals first (the
                // empty tag sorts first), then each tag with its intervals.
                let mut entries: Vec<String> = Vec::new();
                let mut last_uuid: Option<&str> = None;
                for ((uuid, tag), ivs) in m {
                    let mut entry = String::new();
                    if last_uuid != Some(uuid.as_str()) {
                        entry.push_str(uuid);
                        entries.push(String::new());
                        last_uuid = Some(uuid);
                    }
                    if !tag.is_empty() {
                        entry.push(':');
                        entry.push_str(tag);
                    }
                    for (a, b) in ivs {
                        if a == b {
                            entry.push_str(&format!(":{a}"));
                        } else {
                            entry.push_str(&format!(":{a}-{b}"));
                        }
                    }
                    if let Some(last) = entries.last_mut() {
                        last.push_str(&entry);
                    }
                }
                f.write_str(&entries.join(","))
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

    /// Examples from the MySQL 8.4 manual (GTID Format and Storage, gtid_executed) and
    /// from a server's own output for a tagged set.
    #[test]
    fn mysql_manual_examples_parse_and_print_in_mysql_notation() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        // A single GTID, a range, a set with gaps: as written in the manual (upper case).
        assert_eq!(
            g("3E11FA47-71CA-11E1-9E33-C80AA9429562:23").to_string(),
            format!("{u}:23")
        );
        assert_eq!(
            g("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5").to_string(),
            format!("{u}:1-5")
        );
        let gaps = g("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-3:11:47-49");
        assert_eq!(gaps.to_string(), format!("{u}:1-3:11:47-49"));
        assert!(gaps.contains(&g(&format!("{u}:2:48-49"))));
        assert!(!gaps.contains(&g(&format!("{u}:4"))));
        // Several servers, as gtid_executed prints them (comma and newline).
        let two = g(
            "2174b383-5441-11e8-b90a-c80aa9429562:1-3,\n224da167-0c0c-11e8-8442-00059a3c7b00:1-19",
        );
        assert_eq!(
            two.to_string(),
            "2174b383-5441-11e8-b90a-c80aa9429562:1-3,224da167-0c0c-11e8-8442-00059a3c7b00:1-19"
        );
    }

    #[test]
    fn mysql_tagged_sets_compare_each_tag_as_its_own_source() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        // The manual writes one entry per tag; the server prints them merged under one
        // UUID, tags lower-cased, untagged intervals first.
        let written = g("3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_1:1-3:15-21, 3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_2:8-52");
        let printed = g(&format!("{u}:domain_1:1-3:15-21:domain_2:8-52"));
        assert_eq!(written, printed);
        assert_eq!(
            printed.to_string(),
            format!("{u}:domain_1:1-3:15-21:domain_2:8-52")
        );
        assert_eq!(
            g(&format!("{u}:tag:1-5")).to_string(),
            format!("{u}:tag:1-5")
        );
        let mixed = g(&format!(
            "{u}:1-5:11-18:domain_1:1-3:11:47-49:domain_2:8-52"
        ));
        assert_eq!(mixed, g(&mixed.to_string()), "printing round-trips");
        assert!(mixed.contains(&g(&format!("{u}:2-4:DOMAIN_1:2"))));
        // The same numbers under another tag (or none) are other transactions.
        assert!(!mixed.contains(&g(&format!("{u}:domain_2:1"))));
        assert!(!g(&format!("{u}:tag:1-5")).contains(&g(&format!("{u}:1-5"))));
        assert!(!g(&format!("{u}:1-5")).contains(&g(&format!("{u}:tag:1-5"))));
        assert_eq!(
            g(&format!("{u}:1-5:tag:1-5")).missing_from(&g(&format!("{u}:1-5"))),
            format!("{u}:1-5:tag:1-5")
        );
    }

    #[test]
    fn bad_tags_are_refused() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        for bad in [
            format!("{u}:tag"),
            format!("{u}:tag:"),
            format!("{u}:a:b:1"),
            format!("{u}:bad-tag:1"),
            format!("{u}:{}:1", "t".repeat(33)),
            format!("{u}:1-5:tag"),
        ] {
            let e = GtidSet::parse(&bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{:?}", bad.trim())), "{e}");
        }
        assert!(GtidSet::parse(&format!("{u}:_t9:1")).is_ok());
        assert!(GtidSet::parse(&format!("{u}:{}:1", "t".repeat(32))).is_ok());
    }

    #[test]
    fn bad_sets_are_refused_with_a_reason() {
        assert!(GtidSet::parse("0-1").is_err());
        assert!(GtidSet::parse("x-1-2").is_err());
        assert!(GtidSet::parse("not-a-uuid:1-2").is_err());
        assert!(GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-2").is_err());
        assert!(GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:0").is_err());
        assert!(GtidSet::parse("3e11fa4771ca-11e1-9e33-c80aa9429562-:1").is_err());
        // Mixed families and half-written entries are errors, not partial sets.
        assert!(GtidSet::parse("0-1-5,3e11fa47-71ca-11e1-9e33-c80aa9429562:1").is_err());
        assert!(GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:1,0-1-5").is_err());
        assert!(GtidSet::parse("0-1-5,garbage").is_err());
        assert!(GtidSet::parse("0-1-99999999999999999999").is_err());
        let e = GtidSet::parse("0-1-5,x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"0-1-5,x\" is not a GTID set: \"x\" is not a MariaDB GTID domain-server-sequence"
        );
        assert_eq!(GtidSet::parse("  ").unwrap(), GtidSet::Empty);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn uuid() -> impl Strategy<Value = String> {
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        }

        fn mysql_set() -> impl Strategy<Value = GtidSet> {
            let source = (
                uuid(),
                prop_oneof![Just(String::new()), "[a-z_][a-z0-9_]{0,31}"],
            );
            let ivs = proptest::collection::vec((1u64..1000, 0u64..50), 1..4)
                .prop_map(|v| v.into_iter().map(|(a, n)| (a, a + n)).collect::<Vec<_>>());
            proptest::collection::btree_map(source, ivs, 1..5).prop_map(|mut m| {
                for list in m.values_mut() {
                    normalise(list);
                }
                GtidSet::MySql(m)
            })
        }

        fn mariadb_set() -> impl Strategy<Value = GtidSet> {
            proptest::collection::btree_map((any::<u32>(), any::<u32>()), any::<u64>(), 1..8)
                .prop_map(GtidSet::MariaDb)
        }

        proptest! {
            #[test]
            fn printed_sets_parse_back_to_themselves(set in prop_oneof![mysql_set(), mariadb_set()]) {
                prop_assert_eq!(GtidSet::parse(&set.to_string()).unwrap(), set.clone());
                prop_assert!(set.contains(&set));
            }

            #[test]
            fn arbitrary_text_parses_or_is_refused_never_panics(text in ".{0,80}") {
                if let Ok(set) = GtidSet::parse(&text) {
                    // Whatever parses prints as a set that parses to the same.
                    prop_assert_eq!(GtidSet::parse(&set.to_string()).unwrap(), set);
                }
            }

            #[test]
            fn gtid_like_text_never_panics(text in "[0-9a-fA-F:,_ -]{0,120}") {
                let _ = GtidSet::parse(&text);
            }
        }
    }
}
