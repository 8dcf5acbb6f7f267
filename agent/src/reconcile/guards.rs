//! What must happen around a writer VIP's address whoever adds or removes it: the RST
//! program, the gratuitous ARP sender and the host fence.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::StepError;
use crate::garp::{Announcer, Ticket};
use mmm_common::error_chain;

/// What must happen around a VIP's address on this host, whoever adds or removes it (the
/// reconciler, or the lease's own fence): the RST program and the gratuitous ARP sender
/// must agree with the address at every moment.
#[derive(Clone)]
pub struct VipGuards {
    /// Answers clients of a VIP this host releases (None: the program could not load).
    pub rst: Option<Arc<crate::rst::Rst>>,
    /// None: no CAP_NET_RAW.
    pub garp: Option<Arc<Announcer>>,
    /// Without a writer VIP (`ips = []`): this host's address and mysql_port, which
    /// [`VipGuards::raise_host_fence`] closes to the network while a hung server may wake
    /// up writable. None when the writer role has VIPs (their removal is the fence).
    pub host: Option<(Ipv4Addr, u16)>,
    pub host_fenced: Arc<std::sync::atomic::AtomicBool>,
}

impl VipGuards {
    /// Before the address is added: the returned ticket announces it unless it is
    /// released meanwhile.
    pub fn before_add(&self, ip: Ipv4Addr) -> Option<Ticket> {
        self.garp.as_ref().map(|g| g.claim(ip))
    }

    /// Once the address is added: its packets pass to the kernel again. Not before: a SYN
    /// between the two would find neither the program nor the address and wait for its
    /// retransmission, and clients retrying on RST (a parked VIP) send one every moment.
    pub fn after_add(&self, ip: Ipv4Addr) {
        if let Some(rst) = &self.rst {
            rst.reclaim(ip);
        }
    }

    /// Before the address is removed: no announcement of it leaves any more (a burst
    /// still running stops), and its clients are answered with RST.
    pub fn before_remove(&self, ip: Ipv4Addr) {
        if let Some(garp) = &self.garp {
            garp.withdraw(ip);
        }
        if let Some(rst) = &self.rst {
            rst.release(ip);
        }
    }

    /// Parks `ip`: answered with RST from now on; the returned ticket announces it.
    /// `Ok(None)`: its owner announced it since the monitor asked; left alone.
    pub fn park(&self, ip: Ipv4Addr) -> Result<Option<Ticket>, StepError> {
        let Some(rst) = &self.rst else {
            return Err(StepError::NoRstProgram { ip });
        };
        if !rst
            .park(ip)
            .map_err(|source| StepError::Park { ip, source })?
        {
            tracing::info!(%ip, "not parked again: its owner announced it");
            return Ok(None);
        }
        match &self.garp {
            Some(g) => Ok(Some(g.claim(ip))),
            None => Err(StepError::NoArpSocket { ip: Some(ip) }),
        }
    }

    /// Parked no more: no announcement of it leaves, and it is answered as released.
    pub fn unpark(&self, ip: Ipv4Addr) {
        if let Some(garp) = &self.garp {
            garp.withdraw(ip);
        }
        if let Some(rst) = &self.rst {
            rst.unpark(ip);
        }
    }

    /// Without a writer VIP nothing stands between a hung server that may wake up
    /// writable and its clients: TCP from the network to mysql_port on this host's address
    /// is answered with RST from now on (new connections and packets of old ones), and
    /// the sessions already open are reset, so a reply the server sends when it wakes up
    /// finds no socket. Connections from this host itself (the agent's) pass. True when it
    /// holds: the RST program is loaded and took the address.
    pub fn raise_host_fence(&self) -> bool {
        use std::sync::atomic::Ordering;
        let (Some((ip, port)), Some(rst)) = (self.host, &self.rst) else {
            return false;
        };
        if self.host_fenced.load(Ordering::SeqCst) {
            return true;
        }
        if let Err(e) = rst.hold(ip) {
            tracing::error!(%ip, error = %error_chain(&e), "a hung mysqld that may wake up writable is not fenced from the network");
            return false;
        }
        self.host_fenced.store(true, Ordering::SeqCst);
        match crate::sockdiag::reset_remote_connections_to(ip, port) {
            Ok(n) => {
                tracing::warn!(%ip, port, sessions = n, "mysqld hangs and may wake up writable, and no writer VIP stands before it: TCP from the network to it is refused until it answers read-only; open sessions reset")
            }
            Err(e) => {
                tracing::error!(%ip, error = %error_chain(&e), "open sessions to a hung mysqld not reset: a reply it sends when it wakes up may reach them")
            }
        }
        true
    }

    /// The server answered read-only (or is to be the writer): its clients reach it again.
    pub fn lower_host_fence(&self) {
        let Some((ip, _)) = self.host else {
            return;
        };
        if self
            .host_fenced
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            if let Some(rst) = &self.rst {
                rst.unhold(ip);
            }
            tracing::info!(%ip, "mysqld answers read-only: TCP from the network reaches it again");
        }
    }

    pub fn host_fence_raised(&self) -> bool {
        self.host_fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What parked VIPs the RST program answers for.
    pub fn parked(&self) -> BTreeSet<Ipv4Addr> {
        self.rst.as_ref().map(|r| r.parked()).unwrap_or_default()
    }
}
