//! Gratuitous ARP: announcing that a VIP now lives at this host's MAC.
//!
//! We send the *request* form with the target MAC equal to the sender MAC. Linux always
//! accepts it and updates an existing neighbour entry at once; the reply form with a
//! broadcast target MAC (what MMM sent) is ignored within the 1 s neighbour locktime, so
//! clients kept the old MAC for ~40 s (measured in the namespace lab).
//!
//! The sender is an AF_PACKET socket opened with protocol 0: it can send but is bound to
//! no protocol, so it never receives (pnet's layer-2 channel binds ETH_P_ALL and would be
//! handed a copy of every frame on a busy database interface) and is never promiscuous.
//!
//! An announcement must never outlive the address: a burst still running when the VIP is
//! removed (a fast move, or a host frozen mid-burst and resumed after its lease fenced it)
//! would point every client back at a host that no longer answers for the VIP, until the
//! new owner's next announcement or the clients' ARP entries expire. [`Announcer`] counts
//! each VIP's withdrawals; an announcement decided before one is never sent.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use pnet_base::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::MutablePacket;

pub const ETH_P_ARP: u16 = EtherTypes::Arp.0;
/// Ethernet's minimum frame size without the FCS; shorter frames are padded.
pub const FRAME_LEN: usize = 60;

pub type Mac = [u8; 6];

/// Builds the gratuitous ARP request announcing `ip` at `mac`, padded to 60 bytes.
pub fn build_garp(mac: Mac, ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    let src = MacAddr::from(mac);
    let mut eth = MutableEthernetPacket::new(&mut f).expect("60 bytes hold an Ethernet header");
    eth.set_destination(MacAddr::broadcast());
    eth.set_source(src);
    eth.set_ethertype(EtherTypes::Arp);
    let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("46 bytes hold an ARP packet");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(src);
    arp.set_sender_proto_addr(ip);
    // Target = sender, MAC included: the request form Linux always accepts (module docs).
    arp.set_target_hw_addr(src);
    arp.set_target_proto_addr(ip);
    // The rest of the 60 bytes stays zero: Ethernet's padding.
    f
}

#[derive(Debug, thiserror::Error)]
pub enum GarpError {
    #[error("opening the packet socket for gratuitous ARP (needs CAP_NET_RAW)")]
    Open {
        #[source]
        source: std::io::Error,
    },
    #[error("sending gratuitous ARP for {ip} on interface index {ifindex}")]
    Send {
        ip: Ipv4Addr,
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A send-only packet socket, opened once and kept: opening costs ~25 ms.
#[derive(Debug)]
pub struct GarpSender {
    fd: OwnedFd,
}

impl GarpSender {
    pub fn open() -> Result<GarpSender, GarpError> {
        // SAFETY: socket() takes no pointers; a non-negative return is a new descriptor
        // that we own from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(GarpError::Open {
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a valid descriptor just returned by socket() and owned by nobody else.
        Ok(GarpSender {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends one announcement of `ip` at `mac` out of interface `ifindex`.
    pub fn send(&self, ifindex: u32, mac: Mac, ip: Ipv4Addr) -> Result<(), GarpError> {
        let frame = build_garp(mac, ip);
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: frame and addr live across the call, and the lengths passed are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(GarpError::Send {
                ip,
                ifindex,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// Per VIP, how many times it was withdrawn, and whether it is withdrawn now (from its
/// withdrawal until it is claimed again, before its address is added back). Pure: the
/// lock and the socket live in [`Announcer`].
#[derive(Debug, Default)]
pub struct Withdrawals(HashMap<Ipv4Addr, (u64, bool)>);

/// Leave to announce `ip`, valid until its next withdrawal. A ticket taken while the VIP
/// is withdrawn is void from the start: between a fence's withdrawal and its removal of
/// the address, the address still shows in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub ip: Ipv4Addr,
    withdrawals: u64,
    void: bool,
}

impl Withdrawals {
    pub fn ticket(&self, ip: Ipv4Addr) -> Ticket {
        let (withdrawals, void) = self.0.get(&ip).copied().unwrap_or((0, false));
        Ticket {
            ip,
            withdrawals,
            void,
        }
    }

    /// The VIP is about to be added: announcing it is allowed again.
    pub fn claim(&mut self, ip: Ipv4Addr) -> Ticket {
        self.0.entry(ip).or_insert((0, false)).1 = false;
        self.ticket(ip)
    }

    pub fn withdraw(&mut self, ip: Ipv4Addr) {
        let e = self.0.entry(ip).or_insert((0, false));
        *e = (e.0 + 1, true);
    }

    pub fn valid(&self, ticket: Ticket) -> bool {
        !ticket.void && self.ticket(ticket.ip) == ticket
    }
}

/// The gratuitous ARP sender with the rule that nothing is announced after its VIP was
/// withdrawn. [`Announcer::claim`] *before* adding the address (or take a ticket before
/// reading that it is there), and [`Announcer::withdraw`] *before* removing it: then a
/// ticket that is still valid at the send means the address was ours when it was taken
/// and has not been given up since.
#[derive(Debug)]
pub struct Announcer {
    sender: GarpSender,
    withdrawals: Mutex<Withdrawals>,
}

impl Announcer {
    pub fn new(sender: GarpSender) -> Announcer {
        Announcer {
            sender,
            withdrawals: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Withdrawals> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.withdrawals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn ticket(&self, ip: Ipv4Addr) -> Ticket {
        self.lock().ticket(ip)
    }

    pub fn claim(&self, ip: Ipv4Addr) -> Ticket {
        self.lock().claim(ip)
    }

    /// No announcement of `ip` on an older ticket leaves after this returns.
    pub fn withdraw(&self, ip: Ipv4Addr) {
        self.lock().withdraw(ip);
    }

    /// Sends one announcement if `ticket` is still valid: `Ok(false)` when the VIP was
    /// withdrawn since. The check and the send hold the lock together, so a withdrawal
    /// cannot fall between them.
    pub fn send(&self, ticket: Ticket, ifindex: u32, mac: Mac) -> Result<bool, GarpError> {
        let withdrawals = self.lock();
        if !withdrawals.valid(ticket) {
            return Ok(false);
        }
        self.sender.send(ifindex, mac, ticket.ip)?;
        drop(withdrawals);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_from_before_a_withdrawal_is_void_and_a_new_one_is_not() {
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101));
        let mut w = Withdrawals::default();
        let (ta, tb) = (w.ticket(a), w.ticket(b));
        assert!(w.valid(ta) && w.valid(tb));
        w.withdraw(a);
        assert!(!w.valid(ta), "announcing a withdrawn VIP");
        assert!(
            w.valid(tb),
            "another VIP's withdrawal voids nothing of this one"
        );
        assert!(
            !w.valid(w.ticket(a)),
            "a ticket taken between the withdrawal and the removal (the address still shows)"
        );
        let again = w.claim(a);
        assert!(w.valid(again), "a VIP claimed back is announced again");
        assert!(w.valid(w.ticket(a)));
        w.withdraw(a);
        assert!(!w.valid(again) && !w.valid(ta));
    }

    #[test]
    fn garp_request_form_byte_for_byte() {
        let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
        let f = build_garp(mac, Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,             // dst: broadcast
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,             // src: our MAC
            0x08, 0x06,                                     // ethertype ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04,             // Ethernet, IPv4, hlen 6, plen 4
            0x00, 0x01,                                     // request
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,             // sender MAC
            192, 0, 2, 100,                                 // sender IP
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,             // target MAC = sender MAC
            192, 0, 2, 100,                                 // target IP = sender IP
        ];
        assert_eq!(&f[..42], &expected[..]);
        assert_eq!(&f[42..], &[0u8; 18][..], "padded with zeros to 60 bytes");
    }
}
