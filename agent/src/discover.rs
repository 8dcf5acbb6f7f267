//! Finds the mysqld that listens on `mysql_port` in the agent's network namespace, so the
//! probe watches a server that was already running when the agent started (or that it
//! lost track of) without `mysql_pid_file`.
//!
//! Why not only the pid file: it is optional, and MariaDB writes it 0660, so an agent
//! whose user is not in mysqld's group cannot read it. The listening socket is public:
//! sock_diag lists it with its inode to anyone ([`crate::sockdiag::listeners`]).
//!
//! Who holds that inode is told by `/proc/PID/fd`, which only root with CAP_SYS_PTRACE
//! or mysqld's own user may read: the agent drops CAP_SYS_PTRACE, so it usually cannot.
//! Then the agent takes the one process named mysqld or mariadbd whose network namespace
//! holds the socket (`/proc/PID/net/tcp{,6}`, readable by anyone, list the namespace's
//! sockets with their inodes). Two such processes in one namespace (several instances
//! on other ports, not readable) are ambiguous: the agent says so and names
//! `mysql_pid_file` as the fix. The probe checks the process it is given once more
//! (uid, executable) before watching it.
//!
//! [`find`] reads /proc once: call it at start and when the probe watches nothing, not
//! in a hot loop.

use crate::sockdiag::{self, SockDiagError};
use std::collections::BTreeSet;
use std::path::Path;

/// How the owner was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// `/proc/PID/fd` holds the listening socket.
    Descriptor,
    /// The only mysqld in the socket's network namespace (its descriptors unreadable).
    OnlyMysqldInNamespace,
}

/// The mysqld found listening on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub proof: Proof,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("nothing listens on port {port} in this network namespace (mysqld down?)")]
    NoListener { port: u16 },
    #[error("listing the sockets on port {port}")]
    SockDiag {
        port: u16,
        #[source]
        source: SockDiagError,
    },
    #[error("reading /proc")]
    Proc(#[source] std::io::Error),
    #[error("port {port} is listened on (socket inodes {inodes:?}), but by no process named mysqld or mariadbd that this agent can see; set mysql_pid_file")]
    NoMysqld { port: u16, inodes: Vec<u32> },
    #[error("port {port} is listened on by {owner}, not by mysqld or mariadbd")]
    NotMysqld { port: u16, owner: String },
    #[error("processes {pids:?} are each a mysqld in the network namespace of port {port}'s listener, and this agent may not read their descriptors to tell which listens (it drops CAP_SYS_PTRACE); set mysql_pid_file")]
    Ambiguous { port: u16, pids: Vec<u32> },
}

/// The mysqld listening on `port` in this network namespace, if one can be told.
pub fn find(port: u16) -> Result<Found, DiscoverError> {
    let inodes: BTreeSet<u32> = sockdiag::listeners(port)
        .map_err(|source| DiscoverError::SockDiag { port, source })?
        .into_iter()
        .map(|s| s.inode)
        .filter(|i| *i != 0)
        .collect();
    if inodes.is_empty() {
        return Err(DiscoverError::NoListener { port });
    }
    let mut proven = Vec::new();
    let mut in_namespace = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(DiscoverError::Proc)? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        else {
            continue;
        };
        // The name first (cheap, readable by anyone), then the executable where this
        // agent may read it: a local user's process that calls itself mysqld is no
        // mysqld (the probe's own check, crate::probe::is_mysqld).
        let mysqld = is_named_mysqld(pid) && crate::probe::is_mysqld(pid, None).is_ok();
        // A SIGKILLed mysqld holds its socket for up to ~200 ms after the probe reported
        // its exit: never take it back.
        if !alive(pid) {
            continue;
        }
        match holds_socket(pid, &inodes) {
            Holds::Yes if mysqld => proven.push(pid),
            Holds::Yes => others.push(format!("process {pid} ({})", comm(pid).unwrap_or_default())),
            Holds::Unreadable if mysqld && namespace_lists(pid, &inodes) => in_namespace.push(pid),
            // Another socket's owner, or a process that exited meanwhile.
            Holds::No | Holds::Unreadable => {}
        }
    }
    decide(port, &inodes, proven, in_namespace, others)
}

/// What the descriptors of one process say.
#[derive(Debug, PartialEq, Eq)]
enum Holds {
    Yes,
    No,
    /// Not ours to read (another user's process without CAP_SYS_PTRACE), or gone.
    Unreadable,
}

/// The decision, apart from the reading: a mysqld proven to hold the socket wins; else
/// the only mysqld of the namespace; other owners (a local user listening beside
/// mysqld, on [::] with IPV6_V6ONLY say) only explain why none was found.
fn decide(
    port: u16,
    inodes: &BTreeSet<u32>,
    proven: Vec<u32>,
    in_namespace: Vec<u32>,
    others: Vec<String>,
) -> Result<Found, DiscoverError> {
    // Several proven owners share one socket (a forked child): the oldest is mysqld.
    if let Some(pid) = proven.iter().min() {
        return Ok(Found {
            pid: *pid,
            proof: Proof::Descriptor,
        });
    }
    match in_namespace.as_slice() {
        [pid] => Ok(Found {
            pid: *pid,
            proof: Proof::OnlyMysqldInNamespace,
        }),
        [] if !others.is_empty() => Err(DiscoverError::NotMysqld {
            port,
            owner: others.join(", "),
        }),
        [] => Err(DiscoverError::NoMysqld {
            port,
            inodes: inodes.iter().copied().collect(),
        }),
        pids => Err(DiscoverError::Ambiguous {
            port,
            pids: pids.to_vec(),
        }),
    }
}

/// PF_EXITING in /proc/PID/stat's flags: the process is in its exit path.
const PF_EXITING: u64 = 0x4;

/// Is `pid` a process that is not exiting, dead or a zombie (/proc/PID/stat, readable
/// by anyone)?
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| stat_alive(&s))
}

/// Has `pid` ended (no such process, or a zombie)? An exiting one has not yet: its
/// exit event may be on its way.
pub fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        stat_state(&s).is_none_or(|st| matches!(st, "Z" | "X" | "x"))
    })
}

fn stat_state(stat: &str) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().next()
}

fn stat_alive(stat: &str) -> bool {
    // After the command's closing parenthesis: state, ppid, pgrp, session, tty_nr,
    // tpgid, flags.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state_ok = fields
        .first()
        .is_some_and(|s| !matches!(*s, "Z" | "X" | "x"));
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    state_ok && flags & PF_EXITING == 0
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// The process's name as the kernel keeps it (readable by anyone).
fn is_named_mysqld(pid: u32) -> bool {
    matches!(comm(pid).as_deref(), Some("mysqld" | "mariadbd"))
}

fn holds_socket(pid: u32, inodes: &BTreeSet<u32>) -> Holds {
    let dir = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(d) => d,
        Err(_unreadable_or_gone) => return Holds::Unreadable,
    };
    for fd in dir.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            if socket_inode(&target).is_some_and(|i| inodes.contains(&i)) {
                return Holds::Yes;
            }
        }
    }
    Holds::No
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &Path) -> Option<u32> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Does the network namespace of `pid` list one of `inodes` (/proc/PID/net/tcp, tcp6)?
fn namespace_lists(pid: u32, inodes: &BTreeSet<u32>) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .is_ok_and(|text| table_inodes(&text).any(|i| inodes.contains(&i)))
    })
}

/// The inode column of a /proc/net/tcp table (the tenth; the header line has none).
fn table_inodes(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_socket_links_and_tcp_tables() {
        assert_eq!(socket_inode(Path::new("socket:[424242]")), Some(424_242));
        assert_eq!(socket_inode(Path::new("pipe:[424242]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                     0: 00000000:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 31337 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(table_inodes(table).collect::<Vec<_>>(), vec![31337]);
    }

    #[test]
    fn exiting_and_zombie_processes_are_not_alive() {
        let line = |state: &str, flags: u64| {
            format!("4242 (mariadbd) {state} 1 4242 4242 0 -1 {flags} 0 0 0 0")
        };
        assert!(stat_alive(&line("S", 0x400100)));
        assert!(!stat_alive(&line("R", 0x400104)));
        assert!(!stat_alive(&line("Z", 0x400100)));
        assert!(!stat_alive("garbage"));
        assert!(alive(std::process::id()));
        assert!(!ended(std::process::id()));
        assert_eq!(stat_state(&line("Z", 0)), Some("Z"));
    }

    #[test]
    fn a_proven_owner_wins_and_two_unproven_are_ambiguous() {
        let inodes: BTreeSet<u32> = [7].into();
        let found = decide(3306, &inodes, vec![40, 30], vec![50], vec![]).unwrap();
        assert_eq!(
            found,
            Found {
                pid: 30,
                proof: Proof::Descriptor
            }
        );
        // A local user's listener beside mysqld's does not hide mysqld.
        let found = decide(
            3306,
            &inodes,
            vec![],
            vec![50],
            vec!["process 9 (python3)".into()],
        )
        .unwrap();
        assert_eq!(found.proof, Proof::OnlyMysqldInNamespace);
        let err = decide(3306, &inodes, vec![], vec![50, 60], vec![]).unwrap_err();
        assert!(err.to_string().contains("set mysql_pid_file"), "{err}");
        assert!(matches!(
            decide(3306, &inodes, vec![], vec![], vec![]),
            Err(DiscoverError::NoMysqld { .. })
        ));
        let err = decide(
            3306,
            &inodes,
            vec![],
            vec![],
            vec!["process 9 (python3)".into()],
        );
        assert!(
            matches!(err, Err(DiscoverError::NotMysqld { .. })),
            "{err:?}"
        );
    }

    /// Against the kernel: this test process listens, and is found as the owner (its
    /// own descriptors are readable) but refused, since it is not mysqld.
    #[test]
    fn finds_the_owner_of_a_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        match find(port) {
            Err(DiscoverError::NotMysqld { owner, .. }) => {
                assert!(owner.contains(&std::process::id().to_string()), "{owner}")
            }
            other => panic!("{other:?}"),
        }
        drop(listener);
        assert!(matches!(find(port), Err(DiscoverError::NoListener { .. })));
    }
}
