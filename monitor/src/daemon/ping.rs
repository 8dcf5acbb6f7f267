//! ICMP echo, as the ping check and the network guard need it: an unprivileged ICMP
//! datagram socket where net.ipv4.ping_group_range allows it, a raw socket (CAP_NET_RAW)
//! otherwise. Every wait is bounded by the caller's timeout.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

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
    #[error("receiving from {ip}")]
    Recv {
        ip: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
}

/// One ICMP socket, reused for every echo to one address.
pub struct Pinger {
    fd: AsyncFd<OwnedFd>,
    raw: bool,
    ident: u16,
    seq: u16,
}

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

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pinger {
    pub fn new() -> Result<Pinger, PingError> {
        let (fd, raw) = match open(libc::SOCK_DGRAM) {
            Ok(fd) => (fd, false),
            Err(_) => (
                open(libc::SOCK_RAW).map_err(|source| PingError::Open { source })?,
                true,
            ),
        };
        // SAFETY: `fd` is an OwnedFd: it stays open, and refers to the same socket, for as
        // long as the AsyncFd owns it.
        let fd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| PingError::Open { source: e.into() })?;
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
        let ident =
            (std::process::id() as u16) ^ NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Pinger {
            fd,
            raw,
            ident,
            seq: 0,
        })
    }

    /// Sends one echo request and waits for its reply; returns the round-trip time.
    pub async fn ping(&mut self, ip: Ipv4Addr, timeout: Duration) -> Result<Duration, PingError> {
        self.seq = self.seq.wrapping_add(1);
        let mut pkt = [0u8; 16];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&self.ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&self.seq.to_be_bytes());
        pkt[8..16].copy_from_slice(b"mmmping!");
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: sockaddr_in is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
        let start = tokio::time::Instant::now();
        // SAFETY: pkt and addr outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(PingError::Send {
                ip,
                source: std::io::Error::last_os_error(),
            });
        }
        let deadline = start + timeout;
        loop {
            let guard = tokio::time::timeout_at(deadline, self.fd.readable())
                .await
                .map_err(|_elapsed| PingError::Timeout { ip, timeout })?
                .map_err(|source| PingError::Recv { ip, source })?;
            let mut buf = [0u8; 256];
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
                    let mut guard = guard;
                    guard.clear_ready();
                    continue;
                }
                return Err(PingError::Recv { ip, source: e });
            }
            drop(guard);
            let n = n as usize;
            // Raw sockets hand us the IP header too.
            let icmp = if self.raw {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if n < ihl + 8 {
                    continue;
                }
                &buf[ihl..n]
            } else {
                &buf[..n]
            };
            // A short or foreign datagram is not our echo reply; never index past it.
            if icmp.len() < 8 {
                continue;
            }
            let from_ip = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
            let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
            // Datagram sockets rewrite the identifier; match on sequence and sender.
            let ident_ok = !self.raw || u16::from_be_bytes([icmp[4], icmp[5]]) == self.ident;
            if icmp[0] == 0 && from_ip == ip && seq == self.seq && ident_ok {
                return Ok(start.elapsed());
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

    #[tokio::test]
    async fn pings_loopback() {
        let Ok(mut p) = Pinger::new() else {
            eprintln!("SKIPPED pings_loopback: no ICMP socket allowed here (ping_group_range and no CAP_NET_RAW)");
            return;
        };
        let rtt = p
            .ping(Ipv4Addr::LOCALHOST, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(rtt < Duration::from_secs(2));
    }
}
