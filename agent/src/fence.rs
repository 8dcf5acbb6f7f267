//! The fence: the lease's own task, which removes the writer VIPs through netlink at the
//! deadline before any SQL, and the wake task, which makes a hung mysqld that may be
//! writable read-only the moment it answers (docs/fencing.md, "A hung mysqld that wakes
//! up").
//!
//! The lease task's netlink steps when the deadline passes: read which writer VIPs this
//! host holds, then remove them. Each request is given up after [`FENCE_STEP`], so a
//! kernel that does not answer holds neither the other VIPs' removal nor the read_only and
//! session kill the reconciler does next; a removal given up is logged as an error, and the
//! reconciler's plan for the fenced desired state removes the address again (and every
//! refresh after it, while the kernel still shows it).
//!
//! The steps are generic over the request so that their bounds can be tested without a
//! kernel that hangs.

use crate::clock::Boot;
use crate::mysql::Mysql;
use crate::reconcile::error_chain;
use crate::reconciler::ReconcilerCommand;
use crate::server::Agent;
use crate::vip::{Netlink, VipError};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// The lease's own task: at the deadline it removes the writer VIPs through netlink, before
/// any SQL, and then hands read_only and the session kill to the reconciler.
pub(crate) async fn lease_task(
    agent: Arc<Agent>,
    netlink: Netlink,
    guards: crate::reconcile::VipGuards,
) {
    let lease = agent.lease.clone();
    if !lease.enforced() {
        return;
    }
    let writer = agent.scope.writer_vips();
    let interface = agent.host.cluster_interface.clone();
    let timing = agent.timing;
    // Expired with nothing to fence: look again now and then. The executor adds no writer
    // VIP without the lease, so this only catches one added by hand or a writable server.
    let idle = lease.length().max(Duration::from_millis(100));
    // The deadline is on CLOCK_BOOTTIME, and so is its timer (crate::clock): a suspended
    // host fences the moment it wakes, not a suspension later.
    let mut timer = crate::clock::BootTimer::new();
    loop {
        let judgement = match lease.judgement(Boot::now()).await {
            Ok(judgement) => judgement,
            Err(until) => {
                tokio::select! {
                    _ = timer.wait_until(until) => {}
                    _ = lease.changed() => {}
                }
                continue;
            }
        };
        if judgement.may_fence() {
            let last_seen = agent.status.borrow().held_vips.clone();
            let held = held_writer_vips(&netlink, &interface, &writer, &last_seen).await;
            // Possibly writable counts: a server that said read_only = 0 and then hung
            // may run anything when it wakes up.
            let writable = agent.status.borrow().possibly_writable || agent.grants.may_still_run();
            let fence = (!held.is_empty() || writable)
                .then(|| {
                    judgement.fence(|| match timing.etcd {
                        Some(e) => format!(
                            "the agent's etcd lease was not renewed in time, or is gone (session_ttl {:?}, given up {:?} early): writer role given up",
                            e.ttl, e.margin
                        ),
                        None => format!(
                            "no renewal from the monitor within the lease ({:?}, given up {:?} early): writer role given up",
                            timing.lease, timing.margin
                        ),
                    })
                })
                .flatten();
            if let Some((reason, stamp)) = fence {
                tracing::warn!(%reason, ?held, "lease expired: fencing myself");
                agent.status.send_modify(|s| s.fenced_reason = reason);
                for ip in &held {
                    guards.before_remove(*ip);
                    // As the reconciler's removal does: an RST can leave only while the
                    // address is ours, and a session through it must not wait for a reply
                    // a hung server may send when it wakes up.
                    if !agent
                        .mysqld_exited
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        if let Err(e) =
                            crate::sockdiag::reset_connections_to(*ip, agent.host.mysql_port)
                        {
                            tracing::warn!(%ip, error = %error_chain(&e), "fence: client connections to the VIP not reset");
                        }
                    }
                }
                remove_vips(&netlink, &interface, &held).await;
                judgement.done();
                if agent
                    .commands
                    .send(ReconcilerCommand::Fenced(stamp))
                    .await
                    .is_err()
                {
                    tracing::error!("the reconciler stopped: read_only not set after the fence");
                }
                continue;
            }
        }
        judgement.done();
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = lease.changed() => {}
        }
    }
}

/// How long one connection attempt waits for a hung server's greeting before it is made
/// again (nothing is lost by waiting: the attempt completes the moment the server wakes).
pub(crate) const WAKE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a killed thread may take to end before the kill is sent again.
pub(crate) const THREAD_END: Duration = Duration::from_secs(1);

/// What happens the moment a hung mysqld answers again, on a connection of its own (the
/// reconciler's may wait behind a statement the server has not read).
///
/// While mysqld does not answer and may be writable (it said read_only = 0 before it
/// hung, or a lift of read_only got no answer), a connection attempt waits for its
/// greeting, which comes the moment the server wakes up. Then, before anything it held
/// can do harm for long: the unanswered lift's thread is killed and waited out (so it
/// cannot run after what follows); unless the current desired state wants this host
/// writable with a valid permit, read_only is set, the application's accounts locked and
/// client sessions killed (statements queued in a hung server run when it wakes up, the
/// old writer's clients' included). Only then does the reconciler report it (read_only
/// read back), which is what confirms a demotion to the monitor.
pub(crate) async fn wake_task(agent: Arc<Agent>, mysql: Mysql, woken: Arc<tokio::sync::Notify>) {
    let grants = agent.grants.clone();
    let spare = [
        agent.host.agent_user.clone(),
        agent.host.monitor_user.clone(),
    ];
    let never_blocked = [
        agent.host.agent_user.clone(),
        agent.host.monitor_user.clone(),
        agent.host.replication_user.clone(),
    ];
    loop {
        grants.wanted().await;
        if let Err(e) = mysql.answer(WAKE_PATIENCE).await {
            if !matches!(e, crate::mysql::MysqlError::Timeout { .. }) {
                // Refused, or the connection broke: not an answer; ask again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        }
        let serial = grants.serial().await;
        if let Some(grant) = grants.unresolved() {
            match mysql.end_thread(grant.connection, THREAD_END).await {
                Ok(true) => {
                    tracing::warn!(
                        connection = grant.connection,
                        "mysqld answers again: the unanswered lift of read_only is killed and gone"
                    );
                    grants.resolve(grant);
                }
                Ok(false) => {
                    tracing::warn!(connection = grant.connection, "the unanswered lift of read_only is still running after its kill: killing it again");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "killing the unanswered lift of read_only failed: trying again");
                    drop(serial);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        if !agent.lease.writer_wanted() {
            match mysql.read_only().await {
                Ok(true) => {}
                Ok(false) => {
                    let done = async {
                        mysql.make_read_only().await?;
                        mysql
                            .lock_accounts(&agent.config.agent.block_users, &never_blocked, true)
                            .await?;
                        mysql
                            .kill_sessions(agent.config.agent.max_kill_retries, &spare)
                            .await
                    };
                    match done.await {
                        Ok(killed) => tracing::warn!(
                            killed,
                            "mysqld answers again, writable while this host is not to write: read_only set, client sessions killed"
                        ),
                        // A commit waiting for its semi-sync acknowledgement holds up
                        // read_only = 1 until rpl_semi_sync_master_timeout.
                        Err(e) => {
                            tracing::error!(error = %error_chain(&e), "a woken server may still be writable: trying again");
                            drop(serial);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "reading read_only of a woken server failed: trying again");
                    drop(serial);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        drop(serial);
        grants.set_hung_writable(false);
        woken.notify_one();
        // The reconciler's report of the hang may still be on its way: not a new one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
