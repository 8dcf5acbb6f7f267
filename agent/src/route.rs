//! A `prohibit` host route to a vanished replication source, for the length of one STOP
//! SLAVE IO_THREAD, through rtnetlink.
//!
//! A semi-sync replica's STOP first connects to its source to kill its dump thread, and
//! waits `rpl_semi_sync_slave_kill_conn_timeout` (1 s at least) when the source's host is
//! gone: the SYN is never answered. The monitor sends that stop exactly when the source is
//! gone (held down, or failed), and a promotion's catch-up waits for it. With a prohibit
//! route to the source the kernel refuses the connection at once (EACCES) and the stop
//! takes milliseconds. The route lives only while the stop runs; the agent marks its
//! routes with its own protocol number and removes any left by a previous process at start.

use futures::TryStreamExt;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::RouteMessageBuilder;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Marks the routes this agent adds (rtnetlink's protocol field; iproute2 shows it as
/// `proto 109`).
const PROTOCOL: u8 = 109;

/// Bound on one route request.
const TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{op} (needs CAP_NET_ADMIN)")]
    Netlink {
        op: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("{op}: no answer from the kernel within {TIMEOUT:?}")]
    Timeout { op: String },
}

#[derive(Clone)]
pub struct Routes {
    handle: rtnetlink::Handle,
}

fn prohibit_route(ip: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .kind(RouteType::Prohibit)
        .protocol(RouteProtocol::from(PROTOCOL))
        .build()
}

async fn bounded<T>(
    op: String,
    fut: impl std::future::Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, RouteError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Err(_elapsed) => Err(RouteError::Timeout { op }),
        Ok(Err(source)) => Err(RouteError::Netlink {
            op,
            source: Box::new(source),
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn destination(m: &RouteMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

impl Routes {
    pub fn new(netlink: &crate::vip::Netlink) -> Routes {
        Routes {
            handle: netlink.handle(),
        }
    }

    /// Refuses every connection to `ip` from this host until [`Routes::allow`].
    /// `Ok(false)`: a route to exactly `ip/32` exists already (the operator's): it is left
    /// alone, and nothing is to be removed afterwards.
    pub async fn prohibit(&self, ip: Ipv4Addr) -> Result<bool, RouteError> {
        let req = self.handle.route().add(prohibit_route(ip)).execute();
        match bounded(format!("adding a prohibit route to {ip}"), req).await {
            Ok(()) => Ok(true),
            Err(RouteError::Netlink { source, .. }) if errno(&source) == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the prohibit route to `ip`; absent is fine.
    pub async fn allow(&self, ip: Ipv4Addr) -> Result<(), RouteError> {
        let req = self.handle.route().del(prohibit_route(ip)).execute();
        match bounded(format!("removing the prohibit route to {ip}"), req).await {
            Err(RouteError::Netlink { source, .. }) if errno(&source) == Some(libc::ESRCH) => {
                Ok(())
            }
            other => other,
        }
    }

    /// Removes the prohibit routes a previous agent process left (it died during a stop).
    pub async fn clear_stale(&self) -> Result<Vec<Ipv4Addr>, RouteError> {
        let req = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let routes: Vec<RouteMessage> =
            bounded("listing routes".to_string(), req.try_collect()).await?;
        let mut cleared = Vec::new();
        for r in routes {
            if r.header.protocol != RouteProtocol::from(PROTOCOL)
                || r.header.kind != RouteType::Prohibit
            {
                continue;
            }
            if let Some(ip) = destination(&r) {
                self.allow(ip).await?;
                cleared.push(ip);
            }
        }
        Ok(cleared)
    }
}
