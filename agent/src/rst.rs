//! The RST answer for a released VIP: a tc ingress program (agent-ebpf/src/rst.bpf.c) on
//! the cluster interface, and the map of VIPs this host gave up.
//!
//! Between this host removing a VIP and the new owner's gratuitous ARP, clients still send
//! to our MAC; the kernel drops those packets silently and a client's SYN waits for its
//! 1 s retransmission. With the VIP in the map the program answers a SYN with RST+ACK and
//! a segment of an old session with RST, until 100 ms after the new owner's ARP for the VIP
//! is seen (the program shortens the entry's deadline: clients processing the same
//! broadcast a moment later are still answered) or `BOUND` passes.
//!
//! The same map parks a writer VIP on the host that takes over from a writer that vanished
//! (its host lost, its lease run out): nobody answers for the VIP then, and a client's SYN
//! to the dead host's MAC waits a whole connect timeout. Parked, the VIP is answered here
//! with RST (the address is not added: nothing else of this host answers for it), and the
//! agent announces it, so clients retry at once and land here the moment this host takes
//! the VIP for real. A parked entry lives `PARK_BOUND` unless the agent refreshes it, so a
//! dead agent's program stops answering soon.
//!
//! Without a writer VIP (`ips = []`) the same map holds this host's own address while
//! its mysqld hangs and may wake up writable ([`Rst::hold`]): nothing else stands between
//! that server and its clients then. Connections from this host itself arrive through
//! loopback, not the interface, and pass.
//!
//! Loaded and attached once at start, while the agent still holds CAP_BPF and
//! CAP_NET_ADMIN; afterwards only map updates through the descriptor it keeps, which need
//! no capability.

use aya::maps::{HashMap, MapData};
use aya::programs::{tc, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rst.bpf.o"));

/// How long a released VIP is answered with RST at most: long enough for the new owner's
/// takeover and ARP burst (a failover needs well under a second), short enough that a VIP
/// nobody took over is soon silent again.
pub const BOUND: Duration = Duration::from_secs(3);

/// How long a parked VIP is answered without a refresh (a task of its own refreshes it
/// every PARK_REFRESH while the monitor wants it parked).
pub const PARK_BOUND: Duration = Duration::from_secs(2);
pub const PARK_REFRESH: Duration = Duration::from_millis(500);

/// A parking, as this agent knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parking {
    /// Answered; the deadline last written to the map (the program only ever shortens it).
    Answered { until_ns: u64 },
    /// An owner announced the VIP (the program shortened the entry): not answered, and
    /// not parked again until the monitor stops asking for it (a re-sent desired state
    /// would otherwise pull the owner's clients away every time).
    OwnerAnnounced,
}

/// Mirror of `struct rst_key` in agent-ebpf/include/rst.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstKey {
    /// Network byte order.
    pub addr: u32,
}

/// Mirror of `struct rst_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstValue {
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub until_ns: u64,
}

const _: () = {
    assert!(std::mem::size_of::<RstKey>() == 4);
    assert!(std::mem::offset_of!(RstKey, addr) == 0);
    assert!(std::mem::size_of::<RstValue>() == 8);
    assert!(std::mem::offset_of!(RstValue, until_ns) == 0);
};

// SAFETY: both are #[repr(C)] plain integers without padding (checked above): any bit
// pattern is a valid value, as aya's Pod requires.
unsafe impl aya::Pod for RstKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RstValue {}

#[derive(Debug, thiserror::Error)]
pub enum RstError {
    #[error("loading the RST program (needs CAP_BPF)")]
    Load(#[source] aya::EbpfError),
    #[error("the RST object lacks {0}")]
    Missing(&'static str),
    #[error("attaching the RST program to {interface} ingress (needs CAP_NET_ADMIN and CAP_BPF)")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("using the released-VIP map")]
    Map(#[source] aya::maps::MapError),
}

pub struct Rst {
    _ebpf: Ebpf,
    state: Mutex<State>,
}

struct State {
    map: HashMap<MapData, RstKey, RstValue>,
    /// VIPs parked here, as opposed to released (answered until BOUND).
    parked: std::collections::BTreeMap<Ipv4Addr, Parking>,
    /// This host's own addresses held ([`Rst::hold`]).
    held: BTreeSet<Ipv4Addr>,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn deadline(after: Duration) -> RstValue {
    RstValue {
        until_ns: monotonic_ns() + after.as_nanos() as u64,
    }
}

fn key(vip: Ipv4Addr) -> RstKey {
    RstKey {
        addr: u32::from_ne_bytes(vip.octets()),
    }
}

impl Rst {
    /// Loads the program and attaches it to `interface`'s ingress; TCP to `mysql_port` only.
    pub fn load(interface: &str, mysql_port: u16) -> Result<Rst, RstError> {
        let port = u32::from(mysql_port);
        let mut ebpf = EbpfLoader::new()
            .override_global("mysql_port", &port, true)
            .load(PROGRAM)
            .map_err(RstError::Load)?;
        let attach = |source| RstError::Attach {
            interface: interface.to_string(),
            source,
        };
        // Already there (another program, or a previous agent): fine, we add a filter.
        let _ = tc::qdisc_add_clsact(interface);
        let program: &mut SchedClassifier = ebpf
            .program_mut("rst_released")
            .ok_or(RstError::Missing("rst_released"))?
            .try_into()
            .map_err(attach)?;
        program.load().map_err(attach)?;
        program
            .attach(interface, TcAttachType::Ingress)
            .map_err(attach)?;
        let map = ebpf
            .take_map("released")
            .ok_or(RstError::Missing("released"))?;
        let released = HashMap::try_from(map).map_err(RstError::Map)?;
        Ok(Rst {
            _ebpf: ebpf,
            state: Mutex::new(State {
                map: released,
                parked: Default::default(),
                held: Default::default(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `vip` is about to be removed, or parked no more: answer TCP to it with RST for at
    /// most BOUND. Call before the removal, so no packet falls between the two.
    pub fn release(&self, vip: Ipv4Addr) {
        let mut state = self.state();
        state.parked.remove(&vip);
        if let Err(e) = state.map.insert(key(vip), deadline(BOUND), 0) {
            tracing::warn!(%vip, error = %e, "clients of the released VIP will wait for their retransmission: not in the RST map");
        }
    }

    /// `vip` is ours again: nothing may answer for it but the kernel. Call once it is added
    /// (until then the RST answers a client, who retries at once).
    pub fn reclaim(&self, vip: Ipv4Addr) {
        let mut state = self.state();
        state.parked.remove(&vip);
        // Not there is the usual case (and an error from the kernel, ENOENT).
        if state.map.get(&key(vip), 0).is_err() {
            return;
        }
        if let Err(e) = state.map.remove(&key(vip)) {
            tracing::warn!(%vip, error = %e, "removing a reclaimed VIP from the RST map");
        }
    }

    /// Answers TCP to `vip` with RST until it is released or reclaimed (refreshed by
    /// [`Rst::refresh_parked`]). Call before announcing it. `Ok(false)`: its owner
    /// announced it since the monitor asked for this parking; nothing done.
    pub fn park(&self, vip: Ipv4Addr) -> Result<bool, RstError> {
        let mut state = self.state();
        if state.parked.get(&vip) == Some(&Parking::OwnerAnnounced) {
            return Ok(false);
        }
        let value = deadline(PARK_BOUND);
        state
            .map
            .insert(key(vip), value, 0)
            .map_err(RstError::Map)?;
        state.parked.insert(
            vip,
            Parking::Answered {
                until_ns: value.until_ns,
            },
        );
        Ok(true)
    }

    /// The VIPs parked here, answered or ended by their owner's announcement.
    pub fn parked(&self) -> BTreeSet<Ipv4Addr> {
        self.state().parked.keys().copied().collect()
    }

    /// The monitor no longer parks `vip` here: answered with RST until the owner's ARP
    /// (as a released VIP), unless its owner announced it already.
    pub fn unpark(&self, vip: Ipv4Addr) {
        let parking = self.state().parked.remove(&vip);
        if let Some(Parking::Answered { .. }) = parking {
            self.release(vip);
        }
    }

    /// Answers TCP to `ip` (this host's own address) with RST until [`Rst::unhold`]; the
    /// entry lives PARK_BOUND unless refreshed with the parked VIPs, so a dead agent's
    /// program soon lets clients through again.
    pub fn hold(&self, ip: Ipv4Addr) -> Result<(), RstError> {
        let mut state = self.state();
        state
            .map
            .insert(key(ip), deadline(PARK_BOUND), 0)
            .map_err(RstError::Map)?;
        state.held.insert(ip);
        Ok(())
    }

    /// `ip` is answered by the kernel again.
    pub fn unhold(&self, ip: Ipv4Addr) {
        let mut state = self.state();
        if !state.held.remove(&ip) {
            return;
        }
        if let Err(e) = state.map.remove(&key(ip)) {
            tracing::warn!(%ip, error = %e, "clients are answered with RST until the entry runs out: not removed from the RST map");
        }
    }

    /// Pushes every answered parking's deadline PARK_BOUND ahead. One whose entry the
    /// program shortened (an owner's ARP) is answered no more; one that merely ran out (the
    /// refresh came late) is answered again.
    pub fn refresh_parked(&self) {
        let mut state = self.state();
        for ip in state.held.clone() {
            if let Err(e) = state.map.insert(key(ip), deadline(PARK_BOUND), 0) {
                tracing::warn!(%ip, error = %e, "refreshing a held address");
            }
        }
        for (vip, parking) in state.parked.clone() {
            let Parking::Answered { until_ns } = parking else {
                continue;
            };
            // Missing before our deadline: shortened, then deleted by the program when a
            // straggler's packet came after the shortened deadline.
            let shortened = match state.map.get(&key(vip), 0) {
                Ok(v) => v.until_ns < until_ns,
                Err(_) => monotonic_ns() < until_ns,
            };
            if shortened {
                state.parked.insert(vip, Parking::OwnerAnnounced);
                tracing::info!(%vip, "parked VIP announced by its owner: parked no more");
                continue;
            }
            let value = deadline(PARK_BOUND);
            match state.map.insert(key(vip), value, 0) {
                Ok(()) => {
                    state.parked.insert(
                        vip,
                        Parking::Answered {
                            until_ns: value.until_ns,
                        },
                    );
                }
                Err(e) => tracing::warn!(%vip, error = %e, "refreshing a parked VIP"),
            }
        }
    }
}
