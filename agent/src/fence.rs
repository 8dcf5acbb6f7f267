//! The lease task's netlink steps when the deadline passes: read which writer VIPs this
//! host holds, then remove them. Each request is given up after [`FENCE_STEP`], so a
//! kernel that does not answer holds neither the other VIPs' removal nor the read_only and
//! session kill the reconciler does next; a removal given up is logged as an error, and the
//! reconciler's plan for the fenced desired state removes the address again (and every
//! refresh after it, while the kernel still shows it).
//!
//! The steps are generic over the request so that their bounds can be tested without a
//! kernel that hangs.

use crate::reconcile::error_chain;
use crate::vip::{Netlink, VipError};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Bound on one netlink request of the fence.
pub const FENCE_STEP: Duration = Duration::from_millis(500);

/// The writer VIPs on the interface now; if the kernel cannot be asked, the ones the last
/// refresh saw (removing one not held is harmless, fencing a host that held none is not:
/// it would close every monitor session for nothing).
pub async fn held_writer_vips(
    netlink: &Netlink,
    interface: &str,
    writer: &BTreeSet<Ipv4Addr>,
    last_seen: &[Ipv4Addr],
) -> Vec<Ipv4Addr> {
    let read = async {
        let link = netlink.link(interface).await?;
        let addrs = netlink.addresses(link.index, interface).await?;
        Ok(addrs.into_iter().map(|(ip, _)| ip).collect())
    };
    held_of(read, writer, last_seen).await
}

async fn held_of(
    read: impl Future<Output = Result<Vec<Ipv4Addr>, VipError>>,
    writer: &BTreeSet<Ipv4Addr>,
    last_seen: &[Ipv4Addr],
) -> Vec<Ipv4Addr> {
    let held = match tokio::time::timeout(FENCE_STEP, read).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "reading addresses for the fence: using the last refresh's");
            last_seen.to_vec()
        }
        Err(_elapsed) => {
            tracing::warn!("reading addresses for the fence timed out: using the last refresh's");
            last_seen.to_vec()
        }
    };
    held.into_iter().filter(|ip| writer.contains(ip)).collect()
}

/// Removes `vips` from the interface, each request bounded by [`FENCE_STEP`].
pub async fn remove_vips(netlink: &Netlink, interface: &str, vips: &[Ipv4Addr]) {
    let link = match tokio::time::timeout(FENCE_STEP, netlink.link(interface)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "fence: the cluster interface cannot be read; writer VIPs not removed");
            return;
        }
        Err(_elapsed) => {
            tracing::error!(
                "fence: reading the cluster interface timed out; writer VIPs not removed"
            );
            return;
        }
    };
    remove_each(vips, |ip| netlink.remove(link.index, interface, ip)).await;
}

async fn remove_each<T, F: Future<Output = Result<T, VipError>>>(
    vips: &[Ipv4Addr],
    mut remove: impl FnMut(Ipv4Addr) -> F,
) {
    for ip in vips {
        match tokio::time::timeout(FENCE_STEP, remove(*ip)).await {
            Ok(Ok(_)) => tracing::info!(%ip, "fence: writer VIP removed"),
            Ok(Err(e)) => {
                tracing::error!(%ip, error = %error_chain(&e), "fence: removing the writer VIP failed")
            }
            Err(_elapsed) => tracing::error!(%ip, "fence: removing the writer VIP timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    /// Whatever the kernel does, the step returns: the test gives it many bounds' worth.
    async fn returns<T>(step: impl Future<Output = T>) -> T {
        tokio::time::timeout(FENCE_STEP * 10, step)
            .await
            .expect("a fence step waited past its bound")
    }

    /// A kernel that does not answer the address dump: the fence goes on with the writer
    /// VIPs the last refresh saw rather than waiting, or fencing nothing.
    #[tokio::test]
    async fn an_address_read_that_hangs_falls_back_to_the_last_refresh() {
        let writer = BTreeSet::from([ip(100)]);
        let hung = std::future::pending::<Result<Vec<Ipv4Addr>, VipError>>();
        let held = returns(held_of(hung, &writer, &[ip(100), ip(101)])).await;
        assert_eq!(held, vec![ip(100)], "the reader VIP is no writer VIP");
        let answered = async { Ok(vec![ip(101), ip(100)]) };
        let held = returns(held_of(answered, &writer, &[])).await;
        assert_eq!(held, vec![ip(100)]);
    }

    /// A removal the kernel never answers is given up at its bound, and the next writer
    /// VIP is still removed.
    #[tokio::test]
    async fn a_removal_that_hangs_is_given_up_and_the_next_vip_still_goes() {
        let removed = Mutex::new(Vec::new());
        let remove = |vip: Ipv4Addr| {
            let removed = &removed;
            async move {
                if vip == ip(100) {
                    std::future::pending::<()>().await;
                }
                removed.lock().unwrap().push(vip);
                Ok::<(), VipError>(())
            }
        };
        returns(remove_each(&[ip(100), ip(102)], remove)).await;
        assert_eq!(*removed.lock().unwrap(), vec![ip(102)]);
    }
}
