//! Resets the TCP connections a dead mysqld leaves behind (NETLINK_SOCK_DIAG,
//! SOCK_DESTROY; CAP_NET_ADMIN, kernel CONFIG_INET_DIAG_DESTROY).
//!
//! Why: a SIGKILLed mysqld's sockets outlive its process by up to ~200 ms (the kernel
//! closes a process's files only after tearing down its threads and memory). Meanwhile its
//! listener still completes handshakes nobody will answer, and its clients' requests are
//! acknowledged and never answered: a client in the middle of a COMMIT waits for the
//! close, then for TCP's retransmission. Destroying the sockets the moment the probe saw
//! the process exit sends every client an RST at once: it reconnects while the writer
//! VIP moves.
//!
//! It also lists who listens on a port ([`listeners`]): the probe finds an already
//! running mysqld from its listening socket's inode.
//!
//! The requests and the parsing are pure and tested byte for byte; [`dump_port`] and
//! [`reset`] are the only functions that talk to the kernel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::{
    DefaultNla, Emitable, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, Parseable, ParseableParametrized, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::{
    SockDiagDestroy, SockDiagMessage, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY,
};

const NETLINK_SOCK_DIAG: libc::c_int = libc::NETLINK_SOCK_DIAG;
/// nlmsghdr (16) + inet_diag_req_v2 (56).
const REQ_LEN: usize = 72;
/// Every TCP state, the bits of states yet to come included.
const ALL_STATES: u32 = 0xffff_ffff;
/// The request's attribute carrying a filter program (linux/inet_diag.h); the crate
/// builds requests without attributes and knows nothing of the programs.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// The program's comparison "source port equals" (linux/inet_diag.h).
const INET_DIAG_BC_S_EQ: u8 = 11;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("opening a NETLINK_SOCK_DIAG socket")]
    Open {
        #[source]
        source: std::io::Error,
    },
    #[error("{op} on the sock_diag socket")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused to list TCP sockets (errno {errno})")]
    Dump { errno: i32 },
}

/// One socket as inet_diag names it: enough to name it again in SOCK_DESTROY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockId {
    pub family: u8,
    pub state: u8,
    /// inet_diag_sockid, as the kernel sent it (ports big-endian, addresses, interface,
    /// cookie).
    pub id: [u8; 48],
    /// The socket's owner (the fsuid of whoever created it) and its inode, as
    /// /proc/PID/fd names it (`socket:[INODE]`); 0 where a record was too short.
    pub uid: u32,
    pub inode: u32,
}

/// TCP_LISTEN in the kernel's numbering (inet_diag's `state`).
pub const TCP_LISTEN: u8 = netlink_packet_sock_diag::TCP_LISTEN;

impl SockId {
    pub fn local_port(&self) -> u16 {
        u16::from_be_bytes([self.id[0], self.id[1]])
    }
}

/// A TCP request of `family` for the sockets in `states`, named by `id`.
fn inet_request(family: u8, states: u32, id: SocketId) -> InetRequest {
    InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        // Retained as given: the crate names only the states it knows.
        states: StateFlags::from_bits_retain(states),
        socket_id: id,
    }
}

/// `payload` framed as one netlink request, its length and type filled in.
fn serialize<I: NetlinkSerializable, const N: usize>(payload: I, flags: u16, seq: u32) -> [u8; N] {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    // nlmsg_pid 0: the kernel.
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut b = [0u8; N];
    msg.serialize(&mut b);
    b
}

/// A dump of every TCP socket of `family` (AF_INET or AF_INET6).
pub fn dump_request(family: u8, seq: u32) -> [u8; REQ_LEN] {
    // The id is all zeros for either family: nothing of it filters a dump.
    let request = inet_request(family, ALL_STATES, SocketId::new_v6());
    serialize(
        SockDiagMessage::InetRequest(request),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    )
}

/// A dump request followed by its filter program, which the crate's request cannot carry.
struct FilteredDump {
    request: InetRequest,
    program: DefaultNla,
}

impl NetlinkSerializable for FilteredDump {
    fn message_type(&self) -> u16 {
        SOCK_DIAG_BY_FAMILY
    }

    fn buffer_len(&self) -> usize {
        self.request.buffer_len() + self.program.buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let (request, program) = buffer.split_at_mut(self.request.buffer_len());
        self.request.emit(request);
        self.program.emit(program);
    }
}

/// The dump of `family`'s TCP sockets whose local port is `port`, filtered by the kernel
/// (an INET_DIAG_REQ_BYTECODE program: "sport == port"), so a host with thousands of
/// connections answers with only mysqld's.
pub fn dump_request_for_port(family: u8, seq: u32, port: u16) -> [u8; REQ_LEN + 12] {
    // op 0: INET_DIAG_BC_S_EQ; yes: jump 8 (past the end: accept); no: jump 12 (beyond
    // it: reject). op 1 carries the port, in host order, in its `no` field.
    let mut program = vec![INET_DIAG_BC_S_EQ, 8];
    program.extend_from_slice(&12u16.to_ne_bytes());
    program.extend_from_slice(&[0, 0]);
    program.extend_from_slice(&port.to_ne_bytes());
    let dump = FilteredDump {
        request: inet_request(family, ALL_STATES, SocketId::new_v6()),
        program: DefaultNla::new(INET_DIAG_REQ_BYTECODE, program),
    };
    serialize(dump, NLM_F_REQUEST | NLM_F_DUMP, seq)
}

/// SOCK_DESTROY of one socket, named as the dump named it.
pub fn destroy_request(sock: &SockId, seq: u32) -> [u8; REQ_LEN] {
    // Read as AF_INET6, whose addresses fill all 16 bytes: the id goes back to the kernel
    // exactly as it came, whatever the family (an AF_INET address is in the first 4).
    let id = SocketId::parse_with_param(&sock.id[..], AF_INET6)
        .expect("48 bytes are an inet_diag_sockid");
    let request = inet_request(sock.family, 1u32 << sock.state, id);
    serialize(
        SockDiagDestroy::new(SockDiagMessage::InetRequest(request)),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// What one datagram of a dump said.
#[derive(Debug, PartialEq, Eq)]
pub enum DumpPart {
    Sockets(Vec<SockId>),
    Done,
    Error(i32),
}

impl From<&InetResponseHeader> for SockId {
    fn from(h: &InetResponseHeader) -> SockId {
        let mut id = [0u8; 48];
        h.socket_id.emit(&mut id);
        SockId {
            family: h.family,
            state: h.state,
            id,
            uid: h.uid,
            inode: h.inode,
        }
    }
}

/// Parses one datagram of a dump: inet_diag_msg records, then NLMSG_DONE. Truncated or
/// foreign messages are skipped, never read past. Only each record's fixed part is read:
/// attributes the kernel adds (and we never asked for) cannot hide a socket.
pub fn parse_dump(datagram: &[u8]) -> DumpPart {
    let mut socks = Vec::new();
    let mut at = 0;
    // A length claiming more than the datagram ends the walk.
    while let Some(Ok(msg)) = datagram.get(at..).map(NetlinkBuffer::new_checked) {
        match msg.message_type() {
            NLMSG_DONE => return DumpPart::Done,
            NLMSG_ERROR => {
                let errno = ErrorBuffer::new_checked(msg.payload())
                    .ok()
                    .and_then(|e| e.code())
                    .map_or(0, |c| c.get());
                return DumpPart::Error(-errno);
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Ok(h) = InetResponseHeader::parse(msg.payload()) {
                    socks.push(SockId::from(&h));
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned.
        at += (msg.length() as usize + 3) & !3;
    }
    DumpPart::Sockets(socks)
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> SockDiagError {
    move |source| SockDiagError::Io { op, source }
}

fn send(fd: &OwnedFd, buf: &[u8]) -> std::io::Result<()> {
    // SAFETY: buf is valid for reads of its length for the call.
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is valid for writes of its length for the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl SockId {
    /// The local IPv4 address: an AF_INET socket's, or an AF_INET6 socket's v4-mapped
    /// one (mysqld listening on [::] accepts IPv4 clients as ::ffff:a.b.c.d).
    pub fn local_v4(&self) -> Option<std::net::Ipv4Addr> {
        self.v4_at(4)
    }

    /// The peer's IPv4 address, as [`SockId::local_v4`] reads the local one.
    pub fn remote_v4(&self) -> Option<std::net::Ipv4Addr> {
        self.v4_at(20)
    }

    fn v4_at(&self, at: usize) -> Option<std::net::Ipv4Addr> {
        let src = &self.id[at..at + 16];
        let v4 = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        match self.family as i32 {
            libc::AF_INET => Some(v4(&src[0..4])),
            libc::AF_INET6 if src[..10].iter().all(|b| *b == 0) && src[10..12] == [0xff, 0xff] => {
                Some(v4(&src[12..16]))
            }
            _ => None,
        }
    }
}

/// Resets every TCP socket whose local port is `port` (the listener and every client
/// connection of the dead mysqld, IPv4 and IPv6); returns how many. Blocking, and quick:
/// call it from a blocking thread.
pub fn reset_port(port: u16) -> Result<usize, SockDiagError> {
    reset(port, |_| true)
}

/// Resets the connections clients made to `ip:port` (a VIP about to be released): their
/// RSTs can leave only while the address is still ours, so this runs just before its
/// removal. The listener (bound to any address) is left alone.
pub fn reset_connections_to(ip: std::net::Ipv4Addr, port: u16) -> Result<usize, SockDiagError> {
    reset(port, |s| s.local_v4() == Some(ip))
}

/// Resets the connections peers on the network made to `ip:port` (this host's own
/// address, when no writer VIP stands between a hung server and its clients). The
/// listener and connections from this host itself (the agent's own, through loopback or
/// its own address) are left alone.
pub fn reset_remote_connections_to(
    ip: std::net::Ipv4Addr,
    port: u16,
) -> Result<usize, SockDiagError> {
    reset(port, |s| {
        s.local_v4() == Some(ip)
            && s.remote_v4()
                .is_some_and(|r| r != ip && !r.is_loopback() && !r.is_unspecified())
    })
}

/// The sockets listening on `port` in this network namespace (IPv4 and IPv6): who
/// owns them and their inodes. Needs no privilege.
pub fn listeners(port: u16) -> Result<Vec<SockId>, SockDiagError> {
    let (_fd, socks) = dump_port(port)?;
    Ok(socks
        .into_iter()
        .filter(|s| s.state == TCP_LISTEN)
        .collect())
}

/// Every TCP socket on local `port`, IPv4 and IPv6, with the sock_diag socket that
/// listed them (to name them again in SOCK_DESTROY).
fn dump_port(port: u16) -> Result<(OwnedFd, Vec<SockId>), SockDiagError> {
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(SockDiagError::Open {
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: raw is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A kernel that does not answer must not hang the agent's thread.
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: timeout is a valid timeval for the call; the length is its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut found = Vec::new();
    for (seq, family) in [(1, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        send(&fd, &dump_request_for_port(family, seq, port))
            .map_err(io("asking for TCP sockets"))?;
        loop {
            let n = recv(&fd, &mut buf).map_err(io("reading TCP sockets"))?;
            match parse_dump(&buf[..n]) {
                // The kernel filtered by port; checked again, cheaply, in case a kernel
                // ignored the program.
                DumpPart::Sockets(s) => {
                    found.extend(s.into_iter().filter(|s| s.local_port() == port))
                }
                DumpPart::Done => break,
                DumpPart::Error(errno) => return Err(SockDiagError::Dump { errno }),
            }
        }
    }
    Ok((fd, found))
}

/// Resets the sockets on local `port` that `wanted` picks.
fn reset(port: u16, wanted: impl Fn(&SockId) -> bool) -> Result<usize, SockDiagError> {
    let (fd, socks) = dump_port(port)?;
    let targets: Vec<SockId> = socks.into_iter().filter(|s| wanted(s)).collect();
    let mut buf = vec![0u8; 4096];
    let mut reset = 0;
    for (i, sock) in targets.iter().enumerate() {
        send(&fd, &destroy_request(sock, 100 + i as u32)).map_err(io("destroying a socket"))?;
        let n = recv(&fd, &mut buf).map_err(io("reading the kernel's answer"))?;
        // An ack is an NLMSG_ERROR with errno 0; a socket that went away meanwhile
        // (ENOENT) is what we wanted anyway.
        if matches!(parse_dump(&buf[..n]), DumpPart::Error(0)) {
            reset += 1;
        }
    }
    Ok(reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_request_asks_for_every_tcp_socket_of_a_family() {
        let b = dump_request(libc::AF_INET as u8, 7);
        assert_eq!(&b[0..4], &72u32.to_ne_bytes());
        assert_eq!(&b[4..6], &20u16.to_ne_bytes());
        assert_eq!(&b[6..8], &0x301u16.to_ne_bytes());
        assert_eq!(&b[8..12], &7u32.to_ne_bytes());
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(&b[16..20], &[2, 6, 0, 0]);
        assert_eq!(&b[20..24], &[0xff; 4]);
        assert!(b[24..].iter().all(|x| *x == 0));
    }

    #[test]
    fn a_port_filtered_dump_carries_the_bytecode_program() {
        let b = dump_request_for_port(libc::AF_INET as u8, 7, 3306);
        assert_eq!(&b[0..4], &84u32.to_ne_bytes());
        assert_eq!(&b[4..72], &dump_request(libc::AF_INET as u8, 7)[4..]);
        assert_eq!(
            &b[72..76],
            &[12u16.to_ne_bytes(), 1u16.to_ne_bytes()].concat()[..]
        );
        assert_eq!(
            &b[76..80],
            &[&[11u8, 8][..], &12u16.to_ne_bytes()[..]].concat()[..]
        );
        assert_eq!(
            &b[80..84],
            &[&[0u8, 0][..], &3306u16.to_ne_bytes()[..]].concat()[..]
        );
    }

    #[test]
    fn a_destroy_request_names_the_socket_as_the_dump_did() {
        let mut id = [0u8; 48];
        id[0..2].copy_from_slice(&3306u16.to_be_bytes());
        id[47] = 9;
        let sock = SockId {
            family: libc::AF_INET6 as u8,
            state: 10, // LISTEN
            id,
            uid: 0,
            inode: 0,
        };
        let b = destroy_request(&sock, 3);
        assert_eq!(&b[4..6], &21u16.to_ne_bytes());
        assert_eq!(&b[6..8], &5u16.to_ne_bytes());
        assert_eq!(&b[16..18], &[10, 6]);
        assert_eq!(&b[20..24], &(1u32 << 10).to_ne_bytes());
        assert_eq!(&b[24..72], &id);
    }

    /// Against the kernel: a listener and an established connection on one port are
    /// reset; a connection on another port is left alone.
    #[test]
    fn reset_port_resets_the_listener_and_its_connections_only() {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED reset_port test: SOCK_DESTROY needs CAP_NET_ADMIN (run as root)");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut bystander = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let (_b, _) = other.accept().unwrap();

        let n = reset_port(port).expect("reset_port");
        assert!(
            n >= 2,
            "the listener and the server side of the connection: {n}"
        );
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = client.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
                || matches!(read, Ok(0)),
            "the client learns at once: {read:?}"
        );
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nobody listens on the port any more"
        );
        bystander
            .write_all(b"x")
            .expect("another port's connection is untouched");
    }

    #[test]
    fn the_local_address_is_read_for_ipv4_and_v4_mapped_ipv6() {
        let mut id = [0u8; 48];
        id[4..8].copy_from_slice(&[192, 0, 2, 100]);
        let v4 = SockId {
            family: libc::AF_INET as u8,
            state: 1,
            id,
            uid: 0,
            inode: 0,
        };
        assert_eq!(v4.local_v4(), Some(std::net::Ipv4Addr::new(192, 0, 2, 100)));
        let mut id6 = [0u8; 48];
        id6[14..16].copy_from_slice(&[0xff, 0xff]);
        id6[16..20].copy_from_slice(&[192, 0, 2, 100]);
        let mapped = SockId {
            family: libc::AF_INET6 as u8,
            state: 1,
            id: id6,
            uid: 0,
            inode: 0,
        };
        assert_eq!(
            mapped.local_v4(),
            Some(std::net::Ipv4Addr::new(192, 0, 2, 100))
        );
        id6[4] = 0x20; // a real IPv6 address
        let native = SockId { id: id6, ..mapped };
        assert_eq!(native.local_v4(), None);
        let mut id = [0u8; 48];
        id[20..24].copy_from_slice(&[192, 0, 2, 50]);
        let peer = SockId {
            family: libc::AF_INET as u8,
            state: 1,
            id,
            uid: 0,
            inode: 0,
        };
        assert_eq!(
            peer.remote_v4(),
            Some(std::net::Ipv4Addr::new(192, 0, 2, 50))
        );
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn a_dump_is_parsed_and_nothing_is_read_past_its_end() {
        let mut msg = vec![2u8, 1, 0, 0];
        let mut id = [0u8; 48];
        id[0..2].copy_from_slice(&3306u16.to_be_bytes());
        msg.extend_from_slice(&id);
        // expires, rqueue, wqueue, then the owner's uid and the inode.
        msg.extend_from_slice(&[0; 12]);
        msg.extend_from_slice(&105u32.to_ne_bytes());
        msg.extend_from_slice(&424_242u32.to_ne_bytes());
        let mut d = message(20, &msg);
        d.extend(message(20, &msg));
        assert_eq!(
            parse_dump(&d),
            DumpPart::Sockets(vec![
                SockId {
                    family: 2,
                    state: 1,
                    id,
                    uid: 105,
                    inode: 424_242,
                };
                2
            ])
        );
        assert_eq!(parse_dump(&message(3, &[0; 4])), DumpPart::Done);
        assert_eq!(
            parse_dump(&message(2, &(-1i32).to_ne_bytes())),
            DumpPart::Error(1)
        );
        // A length claiming more than the datagram, a short record, nothing at all.
        let mut cut = message(20, &msg);
        cut.truncate(40);
        assert_eq!(parse_dump(&cut), DumpPart::Sockets(vec![]));
        assert_eq!(parse_dump(&message(20, &[1, 2])), DumpPart::Sockets(vec![]));
        assert_eq!(parse_dump(&[]), DumpPart::Sockets(vec![]));
    }
}
#[cfg(test)]
mod kernel_filter {
    use super::*;

    /// A listener is listed with the inode /proc/self/fd names it by (needs no privilege).
    #[test]
    fn listeners_names_the_socket_by_its_inode() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let found = listeners(port).expect("listing listeners");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            link.to_str().unwrap(),
            format!("socket:[{}]", found[0].inode)
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(found[0].uid, unsafe { libc::geteuid() });
    }

    /// The kernel runs the port program: a dump for a port nobody uses returns nothing,
    /// while an unfiltered one lists the sockets that exist (dumping needs no privilege).
    #[test]
    fn the_kernel_filters_the_dump_by_port() {
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: socket() takes no pointers; the result is checked and owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        assert!(raw >= 0, "NETLINK_SOCK_DIAG socket");
        // SAFETY: raw is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut buf = vec![0u8; 65536];
        let mut count = |req: &[u8]| {
            send(&fd, req).unwrap();
            let mut found = 0;
            loop {
                let n = recv(&fd, &mut buf).unwrap();
                match parse_dump(&buf[..n]) {
                    DumpPart::Sockets(s) => found += s.len(),
                    DumpPart::Done => return found,
                    DumpPart::Error(e) => panic!("the kernel refused the dump: errno {e}"),
                }
            }
        };
        let all = count(&dump_request(libc::AF_INET as u8, 1));
        let port_1 = count(&dump_request_for_port(libc::AF_INET as u8, 2, 1));
        assert!(all > 0, "no TCP socket listed, though one listens");
        assert_eq!(port_1, 0, "the port program was not applied");
    }
}
