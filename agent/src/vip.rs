//! Virtual IPs on the cluster interface, through rtnetlink (never by running `ip`).
//!
//! VIPs are /32 addresses: they must not add a prefix route or change which source
//! address the host picks. Adding an address that is present is success; removing one
//! that is absent is success. Every request is bounded by a timeout.

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::LinkAttribute;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub use crate::garp::Mac;

/// Bound on one netlink request; the kernel answers in microseconds when healthy.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("opening the rtnetlink socket")]
    Connect {
        #[source]
        source: std::io::Error,
    },
    #[error("interface {name:?} does not exist")]
    NoSuchInterface { name: String },
    #[error("interface {name:?} has no Ethernet address")]
    NoMac { name: String },
    #[error("{op} on {interface}{}", errno_text(*errno))]
    Netlink {
        op: String,
        interface: String,
        /// The kernel's errno, when it gave one (EPERM without CAP_NET_ADMIN).
        errno: Option<i32>,
        /// Boxed: rtnetlink's error carries a whole netlink message.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("{op} on {interface}: no answer from the kernel within {timeout:?}")]
    Timeout {
        op: String,
        interface: String,
        timeout: Duration,
    },
}

fn errno_text(errno: Option<i32>) -> String {
    match errno {
        Some(e) => format!(": {}", std::io::Error::from_raw_os_error(e)),
        None => String::new(),
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// An interface as the agent needs it: its index and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: Mac,
}

/// A handle on the kernel's address table of this network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens the rtnetlink socket; its driver runs as a task on the current runtime.
    pub fn connect() -> Result<Netlink, VipError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| VipError::Connect { source })?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The same rtnetlink connection, for the route table (crate::route).
    pub fn handle(&self) -> rtnetlink::Handle {
        self.handle.clone()
    }

    async fn bounded<T>(
        op: impl Into<String>,
        interface: &str,
        fut: impl std::future::Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<T, VipError> {
        let op = op.into();
        match tokio::time::timeout(NETLINK_TIMEOUT, fut).await {
            Err(_elapsed) => Err(VipError::Timeout {
                op,
                interface: interface.into(),
                timeout: NETLINK_TIMEOUT,
            }),
            Ok(Err(source)) => Err(VipError::Netlink {
                op,
                interface: interface.into(),
                errno: errno_of(&source),
                source: Box::new(source),
            }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Looks up an interface by name.
    pub async fn link(&self, name: &str) -> Result<Link, VipError> {
        let mut req = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match Self::bounded("looking up the interface", name, req.try_next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(VipError::NoSuchInterface { name: name.into() }),
            Err(VipError::Netlink {
                errno: Some(libc::ENODEV),
                ..
            }) => return Err(VipError::NoSuchInterface { name: name.into() }),
            Err(e) => return Err(e),
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) if b.len() == 6 => <Mac>::try_from(b.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| VipError::NoMac { name: name.into() })?;
        Ok(Link {
            index: msg.header.index,
            mac,
        })
    }

    async fn messages(&self, index: u32, interface: &str) -> Result<Vec<AddressMessage>, VipError> {
        let req = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        Self::bounded("listing addresses", interface, req.try_collect::<Vec<_>>()).await
    }

    /// The IPv4 addresses on an interface, with their prefix lengths.
    pub async fn addresses(
        &self,
        index: u32,
        interface: &str,
    ) -> Result<Vec<(Ipv4Addr, u8)>, VipError> {
        Ok(self
            .messages(index, interface)
            .await?
            .iter()
            .filter_map(|m| ipv4_of(m).map(|ip| (ip, m.header.prefix_len)))
            .collect())
    }

    /// Adds `ip/32`; `Ok(false)` when it was already there.
    pub async fn add(&self, index: u32, interface: &str, ip: Ipv4Addr) -> Result<bool, VipError> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), 32)
            .execute();
        match Self::bounded(format!("adding {ip}/32"), interface, req).await {
            Ok(()) => Ok(true),
            Err(VipError::Netlink {
                errno: Some(libc::EEXIST),
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes every instance of `ip` from the interface; `Ok(false)` when it was absent.
    pub async fn remove(
        &self,
        index: u32,
        interface: &str,
        ip: Ipv4Addr,
    ) -> Result<bool, VipError> {
        let mut removed = false;
        for msg in self.messages(index, interface).await? {
            if ipv4_of(&msg) == Some(ip) {
                let req = self.handle.address().del(msg).execute();
                match Self::bounded(format!("removing {ip}"), interface, req).await {
                    Ok(()) => removed = true,
                    Err(VipError::Netlink {
                        errno: Some(libc::EADDRNOTAVAIL),
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}

fn ipv4_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on p2p links.
    let pick = |want_local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) if want_local => Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) if !want_local => Some(*ip),
            _ => None,
        })
    };
    pick(true).or_else(|| pick(false))
}
