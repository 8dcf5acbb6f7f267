//! The cluster interface: present, and fit for the VIPs and gratuitous ARP that will use it.

use mmm_common::config::{Config, Host};
use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;

use super::StartupError;

/// An interface of this host: its name, whether it has an Ethernet address, and its IPv4
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub ethernet: bool,
    pub ipv4: Vec<Ipv4Addr>,
}

/// The interfaces of this network namespace (getifaddrs: every link, up or down).
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list it allocated in `head`; freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: Vec<Interface> = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let i = match out.iter().position(|i| i.name == name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name,
                    ..Interface::default()
                });
                out.len() - 1
            }
        };
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a socket address whose family field comes first; the
        // reads below are of the structure that family names, unaligned to be safe.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                let sin =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_in) };
                out[i]
                    .ipv4
                    .push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            libc::AF_PACKET => {
                let sll =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_ll) };
                out[i].ethernet = sll.sll_halen == 6;
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs; nothing borrowed from the list outlives this.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// `host`'s cluster_interface must exist and have an Ethernet address when the host may
/// hold a role with VIPs (every VIP step looks it up). A host that never holds a VIP never
/// uses it: the default "eth0" must not stop such an agent on a host without one.
pub fn interface(config: &Config, host: &Host, present: &[Interface]) -> Option<StartupError> {
    let roles: Vec<String> = config
        .roles
        .iter()
        .filter(|r| !r.ips.is_empty() && r.hosts.contains(&host.name))
        .map(|r| format!("role {}", r.name))
        .collect();
    if roles.is_empty() {
        return None;
    }
    let key = format!("hosts.{}.cluster_interface", host.name);
    let name = &host.cluster_interface;
    match present.iter().find(|i| i.name == *name) {
        Some(i) if i.ethernet => None,
        Some(_) => Some(StartupError::NoEthernet {
            key,
            name: name.clone(),
        }),
        None => Some(StartupError::NoInterface {
            key,
            name: name.clone(),
            present: present.iter().map(|i| i.name.clone()).collect(),
            roles: roles.into_boxed_slice(),
            holder: present
                .iter()
                .find(|i| i.ipv4.contains(&host.ip))
                .map(|i| (host.ip, i.name.clone())),
        }),
    }
}
