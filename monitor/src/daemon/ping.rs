//! ICMP echo, as the ping check and the network guard need it: an unprivileged ICMP
//! datagram socket where net.ipv4.ping_group_range allows it, a raw socket (CAP_NET_RAW)
//! otherwise. Every wait is bounded by the caller's timeout.
//!
//! One socket serves every check of the monitor. The kernel hands a copy of every ICMP
//! packet to every raw socket, so a socket per host made each reply cost work in all of
//! them: with 500 hosts that fan-out alone took more than a core. Here one receiver task
//! reads the replies and wakes the ping waiting for that (address, sequence).

use pnet_packet::icmp::echo_reply::EchoReplyPacket;
use pnet_packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet_packet::icmp::{self, IcmpPacket, IcmpTypes};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::Packet;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("opening an ICMP socket (neither ping_group_range nor CAP_NET_RAW allow it)")]
    Open {
        #[source]
        source: std::io::Error,
    },
    #[error("sending an echo request to {ip}")]
    Send {
        ip: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("no echo reply from {ip} within {timeout:?}")]
    Timeout { ip: Ipv4Addr, timeout: Duration },
    #[error("receiving from {ip}: the ICMP socket failed and is reopened for the next ping")]
    Recv { ip: Ipv4Addr },
}

/// Who waits for which reply: (sender, sequence) -> the ping's waker.
type Waiting = Mutex<HashMap<(Ipv4Addr, u16), oneshot::Sender<Instant>>>;

/// The open socket and its receiver.
struct Socket {
    fd: AsyncFd<OwnedFd>,
    raw: bool,
    ident: u16,
    seq: AtomicU16,
    waiting: Waiting,
}

struct Open {
    socket: Arc<Socket>,
    receiver: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    open: Mutex<Option<Open>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(o) = self.open.get_mut().ok().and_then(Option::take) {
            o.receiver.abort();
        }
    }
}

/// A handle on the monitor's one ICMP socket, cheap to clone; the socket is opened on the
/// first ping (inside the runtime) and reopened after a receive failure.
#[derive(Clone, Default)]
pub struct Pinger(Arc<Shared>);

fn open(kind: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ICMP_FILTER` (linux/icmp.h), an option of raw ICMP sockets at level `SOL_RAW`: a mask
/// of the ICMP types the kernel keeps off the socket. Not in the libc crate.
const ICMP_FILTER: libc::c_int = 1;
/// `SO_RCVBUFFORCE` (asm-generic/socket.h): `SO_RCVBUF` past `net.core.rmem_max`, for a
/// process with CAP_NET_ADMIN. Not in the libc crate for this target.
const SO_RCVBUFFORCE: libc::c_int = 33;
/// Room for the replies of one check period's pings arriving at once (a few hundred
/// bytes of kernel memory each): every host's check starts in the same instant, so
/// their replies come in bursts of as many as there are hosts.
const RECEIVE_BUFFER: libc::c_int = 2 << 20;

/// A raw ICMP socket gets a copy of every ICMP packet the host receives: on loopback each
/// echo request too, elsewhere whatever else arrives. Those only fill the receive buffer,
/// where they pushed out replies (with 500 hosts, thousands a second: false ping
/// failures). Without the filter pinging still works, with that risk: warned once.
fn only_echo_replies(fd: &OwnedFd) {
    let mask: u32 = !(1u32 << u32::from(IcmpTypes::EchoReply.0));
    // SAFETY: `mask` outlives the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_RAW,
            ICMP_FILTER,
            (&mask as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "setting ICMP_FILTER on the raw ICMP socket: other ICMP packets share its buffer with the echo replies");
    }
}

/// A receive buffer for a burst of replies: forced past `net.core.rmem_max` where the
/// process may (CAP_NET_ADMIN), else as large as rmem_max allows.
fn room_for_a_burst(fd: &OwnedFd) {
    let set = |option: libc::c_int| {
        // SAFETY: the value outlives the call and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&RECEIVE_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    };
    if !set(SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "enlarging the ICMP socket's receive buffer: a burst of replies may overflow it");
    }
}

/// The one's-complement sum over the whole of `data`, checksum field included: 0 for a
/// packet that carries its checksum.
#[cfg(test)]
fn checksum(data: &[u8]) -> u16 {
    // No 16-bit word is beyond every packet: nothing is skipped.
    pnet_packet::util::checksum(data, usize::MAX)
}

/// An echo request: type 8, our identifier and sequence, a fixed payload.
fn echo_request(ident: u16, seq: u16) -> [u8; 16] {
    let mut pkt = [0u8; 16];
    let mut req = MutableEchoRequestPacket::new(&mut pkt).expect("16 bytes hold an echo request");
    req.set_icmp_type(IcmpTypes::EchoRequest);
    req.set_identifier(ident);
    req.set_sequence_number(seq);
    req.set_payload(b"mmmping!");
    let sum = icmp::checksum(&IcmpPacket::new(req.packet()).expect("an echo request is ICMP"));
    req.set_checksum(sum);
    pkt
}

/// The sequence of an echo reply meant for us, or None for anything else. A raw socket
/// hands us the IP header too and every host's ICMP; a datagram socket rewrites the
/// identifier (the kernel demultiplexes on it), so only a raw one checks it.
fn echo_reply_seq(datagram: &[u8], raw: bool, ident: u16) -> Option<u16> {
    let icmp = if raw {
        // Only the header length is read: the raw socket's total length is not relied on.
        let ihl = usize::from(Ipv4Packet::new(datagram)?.get_header_length()) * 4;
        datagram.get(ihl..)?
    } else {
        datagram
    };
    // The parser refuses a datagram shorter than the echo header: never read past it.
    let reply = EchoReplyPacket::new(icmp)?;
    if reply.get_icmp_type() != IcmpTypes::EchoReply {
        return None;
    }
    if raw && reply.get_identifier() != ident {
        return None;
    }
    Some(reply.get_sequence_number())
}

impl Socket {
    fn new() -> Result<Socket, PingError> {
        let (fd, raw) = match open(libc::SOCK_DGRAM) {
            Ok(fd) => (fd, false),
            Err(_) => (
                open(libc::SOCK_RAW).map_err(|source| PingError::Open { source })?,
                true,
            ),
        };
        if raw {
            only_echo_replies(&fd);
        }
        room_for_a_burst(&fd);
        // SAFETY: `fd` is an OwnedFd: it stays open, and refers to the same socket, for as
        // long as the AsyncFd owns it.
        let fd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| PingError::Open { source: e.into() })?;
        Ok(Socket {
            fd,
            raw,
            ident: std::process::id() as u16,
            seq: AtomicU16::new(0),
            waiting: Mutex::default(),
        })
    }

    /// Reads replies until the socket fails; each wakes the ping it answers.
    async fn receive(self: Arc<Socket>) {
        let mut buf = [0u8; 256];
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "the ICMP socket failed: it is reopened by the next ping");
                    break;
                }
            };
            // SAFETY: sockaddr_in is plain old data; all-zero is valid.
            let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            // SAFETY: buf and from are valid for writes of the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_in).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                tracing::warn!(error = %e, "receiving on the ICMP socket failed: it is reopened by the next ping");
                break;
            }
            let at = Instant::now();
            // Readiness takes nothing from tokio's budget: without this a flood of ICMP
            // would keep this loop, and every heartbeat on the monitor's one thread, waiting.
            tokio::task::coop::consume_budget().await;
            let Some(seq) = echo_reply_seq(&buf[..n as usize], self.raw, self.ident) else {
                continue;
            };
            let ip = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
            let waiter = self.lock().remove(&(ip, seq));
            if let Some(w) = waiter {
                // The ping may have timed out in between: nobody to tell then.
                let _ = w.send(at);
            }
        }
        // Dropping the waiters tells every pending ping that no answer will come.
        self.lock().clear();
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(Ipv4Addr, u16), oneshot::Sender<Instant>>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Pinger {
    pub fn new() -> Pinger {
        Pinger::default()
    }

    /// The open socket, opening it (and starting its receiver) when there is none or the
    /// last one failed.
    fn socket(&self) -> Result<Arc<Socket>, PingError> {
        let mut open = self
            .0
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(o) = open.as_ref().filter(|o| !o.receiver.is_finished()) {
            return Ok(o.socket.clone());
        }
        let socket = Arc::new(Socket::new()?);
        let receiver = tokio::spawn(socket.clone().receive());
        *open = Some(Open {
            socket: socket.clone(),
            receiver,
        });
        Ok(socket)
    }

    /// Sends one echo request and waits for its reply; returns the round-trip time.
    pub async fn ping(&self, ip: Ipv4Addr, timeout: Duration) -> Result<Duration, PingError> {
        let socket = self.socket()?;
        let seq = socket.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        socket.lock().insert((ip, seq), tx);
        let pkt = echo_request(socket.ident, seq);
        // SAFETY: sockaddr_in is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
        let start = Instant::now();
        // SAFETY: pkt and addr outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                socket.fd.get_ref().as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            let source = std::io::Error::last_os_error();
            socket.lock().remove(&(ip, seq));
            return Err(PingError::Send { ip, source });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(at)) => Ok(at.saturating_duration_since(start)),
            Ok(Err(_closed)) => Err(PingError::Recv { ip }),
            Err(_elapsed) => {
                socket.lock().remove(&(ip, seq));
                Err(PingError::Timeout { ip, timeout })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum_of_a_known_packet() {
        // Echo request, id 1, seq 1, no payload: checksum 0xf7fd.
        let pkt = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&pkt), 0xf7fd);
    }

    #[test]
    fn echo_request_bytes() {
        let pkt = echo_request(0x1234, 7);
        assert_eq!(&pkt[..8], &[8, 0, 0x3a, 0x57, 0x12, 0x34, 0, 7]);
        assert_eq!(checksum(&pkt), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn replies_are_told_apart_from_everything_else() {
        let mut reply = echo_request(0x1234, 9);
        reply[0] = 0;
        assert_eq!(echo_reply_seq(&reply, false, 0), Some(9));
        // Raw: behind a 20-byte IP header, and only with our identifier.
        let mut raw = vec![0x45u8; 1];
        raw.extend_from_slice(&[0; 19]);
        raw.extend_from_slice(&reply);
        assert_eq!(echo_reply_seq(&raw, true, 0x1234), Some(9));
        assert_eq!(echo_reply_seq(&raw, true, 0x4321), None);
        // Requests, short and empty datagrams, headers claiming more than there is.
        assert_eq!(echo_reply_seq(&echo_request(1, 1), false, 1), None);
        assert_eq!(echo_reply_seq(&reply[..7], false, 0), None);
        assert_eq!(echo_reply_seq(&[], true, 0), None);
        assert_eq!(echo_reply_seq(&[0x4f, 0, 0], true, 0), None);
    }

    /// Every host's ping check starts in the same instant, so their replies arrive
    /// together: a thousand replies at once must all wait in the socket for the receiver
    /// (before the filter and the buffer, a raw socket also queued each echo request seen
    /// on loopback and kept ~300 packets: false ping failures from 500 hosts up).
    #[tokio::test]
    async fn a_burst_of_a_thousand_replies_is_kept_whole() {
        const BURST: u16 = 1000;
        let socket = match Socket::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("SKIPPED a_burst_of_replies: no ICMP socket allowed here ({e})");
                return;
            }
        };
        let fd = socket.fd.get_ref().as_raw_fd();
        let mut buffer: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: buffer and len are valid for writes of the size passed.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut buffer as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt SO_RCVBUF");
        if buffer < RECEIVE_BUFFER {
            eprintln!("SKIPPED a_burst_of_replies: the receive buffer is {buffer} bytes (no CAP_NET_ADMIN to pass net.core.rmem_max)");
            return;
        }
        if socket.raw {
            let mut mask: u32 = 0;
            let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
            // SAFETY: mask and len are valid for writes of the size passed.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_RAW,
                    ICMP_FILTER,
                    (&mut mask as *mut u32).cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0, "getsockopt ICMP_FILTER");
            assert_eq!(mask, !1, "only echo replies (type 0) reach the raw socket");
        }
        for seq in 0..BURST {
            let pkt = echo_request(socket.ident, seq);
            let ip = Ipv4Addr::new(127, 0, (seq / 250) as u8, (seq % 250 + 1) as u8);
            // SAFETY: sockaddr_in is plain old data; all-zero is valid.
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
            // SAFETY: pkt and addr outlive the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(n, pkt.len() as isize, "sendto {ip}");
        }
        // Loopback answers within the sendto; the pause only makes sure.
        std::thread::sleep(Duration::from_millis(200));
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: buf is valid for writes of its length; no address is asked for.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                break;
            }
            if let Some(seq) = echo_reply_seq(&buf[..n as usize], socket.raw, socket.ident) {
                seen.insert(seq);
            }
        }
        assert_eq!(
            seen.len(),
            usize::from(BURST),
            "every reply of the burst was kept"
        );
    }

    #[tokio::test]
    async fn pings_loopback_many_at_once_on_one_socket() {
        let p = Pinger::new();
        if let Err(e) = p.ping(Ipv4Addr::LOCALHOST, Duration::from_secs(2)).await {
            if matches!(e, PingError::Open { .. }) {
                eprintln!("SKIPPED pings_loopback: no ICMP socket allowed here (ping_group_range and no CAP_NET_RAW)");
                return;
            }
            panic!("ping 127.0.0.1: {e}");
        }
        let mut all = tokio::task::JoinSet::new();
        for i in 0..50u8 {
            let p = p.clone();
            all.spawn(async move {
                p.ping(Ipv4Addr::new(127, 0, 0, 1 + i % 3), Duration::from_secs(5))
                    .await
            });
        }
        while let Some(r) = all.join_next().await {
            r.expect("ping task")
                .expect("every concurrent ping is answered");
        }
    }
}
