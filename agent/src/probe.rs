//! The eBPF liveness probe: loads agent-ebpf's programs with aya, tells them the mysql
//! port, the agent's network namespace and mysqld's process (from mysql_pid_file, or the
//! process found listening on mysql_port: [`crate::discover`]), and forwards every event
//! to the monitor connections the moment the ring buffer has it.
//!
//! A probe that watches no mysqld while one runs is blind to its death: while it
//! watches nothing, it looks again every [`RESCAN`] (mysqld started before the agent, a
//! race at start, a restart the programs did not see), and each reason it finds none
//! is logged once.

use aya::maps::{Array, MapData, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use mmm_common::proto::{ProbeEvent, ProbeEventKind, ProbeState};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tokio::io::unix::AsyncFd;

/// The compiled programs (agent/build.rs).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe.bpf.o"));

/// Mirror of `struct probe_event` in agent-ebpf/include/probe.h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProbeEventRaw {
    pub ktime_ns: u64,
    pub tgid: u32,
    pub kind: u16,
    pub port: u16,
}

const _: () = {
    assert!(std::mem::size_of::<ProbeEventRaw>() == 16);
    assert!(std::mem::offset_of!(ProbeEventRaw, ktime_ns) == 0);
    assert!(std::mem::offset_of!(ProbeEventRaw, tgid) == 8);
    assert!(std::mem::offset_of!(ProbeEventRaw, kind) == 12);
    assert!(std::mem::offset_of!(ProbeEventRaw, port) == 14);
};

impl ProbeEventRaw {
    /// Parses a ring-buffer record; `None` for a short record or an unknown kind.
    pub fn parse(bytes: &[u8]) -> Option<ProbeEvent> {
        if bytes.len() < std::mem::size_of::<ProbeEventRaw>() {
            return None;
        }
        let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_ne_bytes(bytes[o..o + 2].try_into().expect("2 bytes"));
        let kind = match u16_at(12) {
            1 => ProbeEventKind::ProcessExit,
            2 => ProbeEventKind::ListenClose,
            3 => ProbeEventKind::ListenOpen,
            _ => return None,
        };
        Some(ProbeEvent {
            kind,
            tgid: u32_at(8),
            port: u16_at(14),
            ktime_ns: u64_at(0),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("reading this process's network namespace")]
    Netns(#[source] std::io::Error),
    #[error("loading the BPF programs (needs CAP_BPF and CAP_PERFMON)")]
    Load(#[source] aya::EbpfError),
    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")]
    Btf(#[source] aya::BtfError),
    #[error("the BPF object lacks {0}")]
    Missing(&'static str),
    #[error("attaching {program} to {tracepoint}")]
    Attach {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("using the BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("polling the ring buffer")]
    Poll(#[source] std::io::Error),
}

/// `mysqld_uid` for the BPF filter when the agent cannot tell (agent-ebpf/include/probe.h).
const ANY_UID: u32 = u32::MAX;

/// Who mysqld is, as the agent checks it: its uid, and (once known) its process.
#[derive(Debug, Clone)]
struct Identity {
    uid: Option<u32>,
    tgid: Option<u32>,
    /// The watched process was seen ended at the last rescan.
    ended_seen: bool,
}

/// The real uid of a live process, from /proc.
fn proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Is `pid` a mysqld (or mariadbd) of the expected uid? The uid comes from /proc and no
/// process can fake it. The executable's name too, where the agent may read
/// /proc/PID/exe (root, or the same user); an unprivileged agent may not (ptrace access),
/// and then the process's name is what it has, which only mysqld's own user could set
/// anyway once the uid matches.
pub(crate) fn is_mysqld(pid: u32, uid: Option<u32>) -> Result<(), String> {
    if let Some(want) = uid {
        match proc_uid(pid) {
            Some(got) if got == want => {}
            Some(got) => return Err(format!("it runs as uid {got}, mysqld as {want}")),
            None => return Err(format!("/proc/{pid}/status is unreadable (gone?)")),
        }
    }
    let name = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .trim_end_matches(" (deleted)")
            .to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_err(|e| format!("reading /proc/{pid}/comm: {e}"))?
                .trim()
                .to_string()
        }
        Err(e) => return Err(format!("reading /proc/{pid}/exe: {e}")),
    };
    if name != "mysqld" && name != "mariadbd" {
        return Err(format!("it is {name:?}"));
    }
    Ok(())
}

/// mysqld's uid: its running process's, else the owner of its pid file, else of the pid
/// file's directory (created for mysqld's user, as /run/mysqld is).
fn mysqld_uid(pid: Option<u32>, pid_file: Option<&Path>) -> Option<u32> {
    pid.and_then(proc_uid).or_else(|| {
        let f = pid_file?;
        let dir = f.parent().filter(|d| !d.as_os_str().is_empty())?;
        std::fs::metadata(f)
            .or_else(|_missing| std::fs::metadata(dir))
            .ok()
            .map(|m| m.uid())
    })
}

/// What the probe tells the rest of the agent, and nothing else it could reach: the
/// agent implements it, a test can record it.
pub trait ProbeSink: Send + Sync {
    /// To the monitor at once (an event nobody listens for is dropped).
    fn event(&self, event: ProbeEvent);
    /// The probe's state, for heartbeats and status reports.
    fn probe_state(&self, state: ProbeState);
    /// mysqld's process exited (true), or a new mysqld listens (false).
    fn mysqld_exited(&self, exited: bool);
}

/// The loaded probe; its programs stay attached while it lives. Loading needs CAP_BPF
/// and CAP_PERFMON and no async runtime, so the agent loads it first and then drops both
/// (capabilities are per thread: the runtime's threads must start without them).
pub struct Probe {
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    /// The programs' `watched` map: mysqld's tgid, 0 for none.
    watched: Array<MapData, u32>,
    mysql_port: u16,
    mysqld: Identity,
}

/// How often a probe that watches nothing looks for mysqld again: one sock_diag dump
/// (a /proc scan only while something listens on the port), so cheap.
pub const RESCAN: std::time::Duration = std::time::Duration::from_secs(2);

/// mysqld's process when the agent starts: from the pid file when one is configured and
/// readable, else the process found listening on the port.
fn running_mysqld(mysql_port: u16, pid_file: Option<&Path>) -> Option<u32> {
    if let Some(pid) = pid_file.and_then(pid_from_file) {
        return Some(pid);
    }
    match crate::discover::find(mysql_port) {
        Ok(found) => {
            tracing::info!(pid = found.pid, proof = ?found.proof, port = mysql_port, "mysqld found listening on mysql_port");
            Some(found.pid)
        }
        Err(e) => {
            tracing::warn!(
                "probe: no mysqld to watch yet: {}",
                mmm_common::error_chain(&e)
            );
            None
        }
    }
}

/// mysqld's process id from its pid file, if it names a live process.
fn pid_from_file(path: &Path) -> Option<u32> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            // MariaDB writes it 0660: the agent's user must be in mysqld's group.
            tracing::warn!(
                path = %path.display(),
                "cannot read mysql_pid_file ({e}): the probe learns mysqld only when it next starts \
                 listening; put the agent's user in mysqld's group (SupplementaryGroups=mysql)"
            );
            return None;
        }
    };
    let pid: u32 = text.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

impl Probe {
    pub fn load(mysql_port: u16, pid_file: Option<&Path>) -> Result<(Probe, bool), ProbeError> {
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map_err(ProbeError::Netns)?
            .ino() as u32;
        let port = u32::from(mysql_port);
        let running = running_mysqld(mysql_port, pid_file);
        let uid = mysqld_uid(running, pid_file);
        if uid.is_none() {
            tracing::info!("mysqld's uid is unknown (it is not running, and no mysql_pid_file names it): the probe learns mysqld from any process named mysqld or mariadbd");
        }
        let filter_uid = uid.unwrap_or(ANY_UID);
        let mut ebpf = EbpfLoader::new()
            .override_global("mysql_port", &port, true)
            .override_global("netns_ino", &netns, true)
            .override_global("mysqld_uid", &filter_uid, true)
            .load(PROGRAMS)
            .map_err(ProbeError::Load)?;
        let btf = Btf::from_sys_fs().map_err(ProbeError::Btf)?;
        for (program, tracepoint) in [
            ("on_process_exit", "sched_process_exit"),
            ("on_sock_state", "inet_sock_set_state"),
        ] {
            let attach = |source| ProbeError::Attach {
                program,
                tracepoint,
                source,
            };
            let p: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or(ProbeError::Missing(program))?
                .try_into()
                .map_err(attach)?;
            p.load(tracepoint, &btf).map_err(attach)?;
            p.attach().map_err(attach)?;
        }
        // mysqld already running: learn it here (a restart is learned from its LISTEN
        // by the program itself).
        let running = running.filter(|pid| match is_mysqld(*pid, uid) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(pid, "process {pid} is not mysqld ({why}): not watched");
                false
            }
        });
        let map = ebpf
            .take_map("watched")
            .ok_or(ProbeError::Missing("watched"))?;
        let mut watched: Array<_, u32> =
            Array::try_from(map).map_err(|source| ProbeError::Map {
                name: "watched",
                source,
            })?;
        if let Some(pid) = running {
            watch(&mut watched, pid)?;
            tracing::info!(pid, "probe watches mysqld");
        }
        let map = ebpf
            .take_map("events")
            .ok_or(ProbeError::Missing("events"))?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "events",
            source,
        })?;
        let mysqld = Identity {
            uid,
            tgid: running,
            ended_seen: false,
        };
        Ok((
            Probe {
                _ebpf: ebpf,
                ring,
                watched,
                mysql_port,
                mysqld,
            },
            running.is_some(),
        ))
    }

    /// Forwards events until the agent stops; keeps the probe state up to date.
    pub async fn run(self, sink: &dyn ProbeSink) -> Result<(), ProbeError> {
        let Probe {
            _ebpf,
            ring,
            mut watched,
            mysql_port,
            mut mysqld,
        } = self;
        // SAFETY: the RingBuf owns its map's descriptor, which stays open and the same for
        // as long as the AsyncFd owns the RingBuf.
        let mut ring =
            unsafe { AsyncFd::register(ring) }.map_err(|e| ProbeError::Poll(e.into()))?;
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_miss = String::new();
        loop {
            let mut guard = tokio::select! {
                ready = ring.readable_mut() => ready.map_err(ProbeError::Poll)?,
                _ = rescan.tick() => {
                    match mysqld.rescan(mysql_port, &mut last_miss).await {
                        Rescan::Unchanged => {}
                        Rescan::Forget => {
                            // 0: the programs learn the next mysqld from its LISTEN.
                            watch(&mut watched, 0)?;
                            sink.probe_state(ProbeState::Searching);
                        }
                        Rescan::Watch(pid) => {
                            watch(&mut watched, pid)?;
                            sink.probe_state(ProbeState::Watching);
                            sink.mysqld_exited(false);
                            tracing::info!(pid, "probe watches mysqld (found listening on mysql_port)");
                        }
                    }
                    continue;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                let Some(event) = ProbeEventRaw::parse(&item) else {
                    tracing::warn!(len = item.len(), "unreadable probe record");
                    continue;
                };
                if let Err(why) = mysqld.admit(&event) {
                    tracing::warn!(kind = ?event.kind, tgid = event.tgid, "probe event ignored: {why}");
                    continue;
                }
                // A dead mysqld's sockets outlive it by up to ~200 ms: they are reset
                // before the monitor hears of it, while the VIP is still here to send the
                // RSTs from (once it is removed, they could not leave). Well under 1 ms.
                if event.kind == ProbeEventKind::ProcessExit {
                    match crate::sockdiag::reset_port(mysql_port) {
                        Ok(n) => {
                            tracing::info!(sockets = n, "connections of the dead mysqld reset")
                        }
                        Err(e) => {
                            tracing::warn!(error = %mmm_common::error_chain(&e), "the dead mysqld's connections were not reset")
                        }
                    }
                }
                // Then at once to the monitor, before anything is logged.
                sink.event(event);
                let state = match event.kind {
                    ProbeEventKind::ListenOpen => ProbeState::Watching,
                    ProbeEventKind::ProcessExit | ProbeEventKind::ListenClose => {
                        ProbeState::Searching
                    }
                };
                sink.probe_state(state);
                match event.kind {
                    ProbeEventKind::ProcessExit => sink.mysqld_exited(true),
                    ProbeEventKind::ListenOpen => sink.mysqld_exited(false),
                    ProbeEventKind::ListenClose => {}
                }
                tracing::warn!(kind = ?event.kind, tgid = event.tgid, port = event.port, "probe event");
            }
            guard.clear_ready();
        }
    }
}

/// Tells the programs which process is mysqld.
fn watch(watched: &mut Array<MapData, u32>, pid: u32) -> Result<(), ProbeError> {
    watched.set(0, pid, 0).map_err(|source| ProbeError::Map {
        name: "watched",
        source,
    })
}

/// What a rescan changes in the programs' `watched` entry.
#[derive(Debug, PartialEq, Eq)]
enum Rescan {
    Unchanged,
    /// The watched process ended without an exit event reaching us (it died between
    /// the agent's look and its note to the programs): watch nothing.
    Forget,
    /// mysqld found listening on the port.
    Watch(u32),
}

impl Identity {
    /// While no mysqld is watched, looks for the one listening on the port; also
    /// notices a watched process that ended unseen. Each new reason for finding none is
    /// logged once.
    async fn rescan(&mut self, port: u16, last_miss: &mut String) -> Rescan {
        if let Some(pid) = self.tgid {
            if !crate::discover::ended(pid) {
                self.ended_seen = false;
                return Rescan::Unchanged;
            }
            // Its exit event may still be in the ring buffer: wait one more round
            // before forgetting it (the event, once read, forgets it itself).
            if !self.ended_seen {
                self.ended_seen = true;
                return Rescan::Unchanged;
            }
            tracing::warn!(pid, "the watched mysqld ended without an exit event");
            self.tgid = None;
            self.ended_seen = false;
            return Rescan::Forget;
        }
        let uid = self.uid;
        // /proc reads: off the runtime's workers.
        let found = tokio::task::spawn_blocking(move || {
            let found = crate::discover::find(port).map_err(|e| mmm_common::error_chain(&e))?;
            is_mysqld(found.pid, uid)
                .map(|()| found.pid)
                .map_err(|why| format!("process {} is not mysqld: {why}", found.pid))
        })
        .await
        .unwrap_or_else(|join| Err(format!("the search task failed: {join}")));
        match found {
            Ok(pid) => {
                last_miss.clear();
                self.tgid = Some(pid);
                Rescan::Watch(pid)
            }
            Err(why) => {
                if *last_miss != why {
                    tracing::warn!("probe watches no mysqld: {why}");
                    *last_miss = why;
                }
                Rescan::Unchanged
            }
        }
    }

    /// Only events of the mysqld the agent identified move anything: a ListenOpen must
    /// come from a process that /proc shows is mysqld; a close or an exit must be the
    /// watched process's.
    fn admit(&mut self, event: &ProbeEvent) -> Result<(), String> {
        match event.kind {
            ProbeEventKind::ListenOpen => {
                if self.tgid.is_some_and(|t| t != event.tgid) {
                    return Err(format!("mysqld is {}", self.tgid.unwrap_or(0)));
                }
                is_mysqld(event.tgid, self.uid)
                    .map_err(|why| format!("process {} is not mysqld: {why}", event.tgid))?;
                self.tgid = Some(event.tgid);
                Ok(())
            }
            ProbeEventKind::ListenClose | ProbeEventKind::ProcessExit => {
                if self.tgid != Some(event.tgid) {
                    return Err(format!(
                        "process {} is not the watched mysqld ({:?})",
                        event.tgid, self.tgid
                    ));
                }
                if event.kind == ProbeEventKind::ProcessExit {
                    self.tgid = None;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_identified_mysqld_moves_anything() {
        let me = std::process::id();
        let mut id = Identity {
            uid: proc_uid(me),
            tgid: Some(4242),
            ended_seen: false,
        };
        let ev = |kind, tgid| ProbeEvent {
            kind,
            tgid,
            port: 3306,
            ktime_ns: 0,
        };
        assert!(id.admit(&ev(ProbeEventKind::ListenClose, me)).is_err());
        assert!(id.admit(&ev(ProbeEventKind::ListenOpen, me)).is_err());
        assert!(id.admit(&ev(ProbeEventKind::ListenClose, 4242)).is_ok());
        assert!(id.admit(&ev(ProbeEventKind::ProcessExit, 4242)).is_ok());
        // Not watching anything now: this test binary is not mysqld either.
        let err = id.admit(&ev(ProbeEventKind::ListenOpen, me)).unwrap_err();
        assert!(err.contains("not mysqld"), "{err}");
        assert_eq!(id.tgid, None);
    }

    /// A watched process that ended unseen is forgotten at the second look (its exit
    /// event may still be queued at the first); a live one stays watched.
    #[tokio::test]
    async fn a_watched_process_that_ended_unseen_is_forgotten_at_the_second_look() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let mut id = Identity {
            uid: None,
            tgid: Some(std::process::id()),
            ended_seen: false,
        };
        let mut miss = String::new();
        assert_eq!(id.rescan(1, &mut miss).await, Rescan::Unchanged);
        id.tgid = Some(gone);
        assert_eq!(id.rescan(1, &mut miss).await, Rescan::Unchanged);
        assert_eq!(id.rescan(1, &mut miss).await, Rescan::Forget);
        assert_eq!(id.tgid, None);
    }

    #[test]
    fn parses_records_as_probe_h_lays_them_out() {
        let mut b = Vec::new();
        b.extend_from_slice(&123_456u64.to_ne_bytes());
        b.extend_from_slice(&4242u32.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&3306u16.to_ne_bytes());
        let e = ProbeEventRaw::parse(&b).unwrap();
        assert_eq!(
            (e.kind, e.tgid, e.port, e.ktime_ns),
            (ProbeEventKind::ProcessExit, 4242, 3306, 123_456)
        );
        assert!(ProbeEventRaw::parse(&b[..10]).is_none());
        b[12] = 9;
        assert!(ProbeEventRaw::parse(&b).is_none());
    }
}
