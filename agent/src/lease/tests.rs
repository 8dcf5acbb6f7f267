use super::*;
use std::path::PathBuf;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmm-lease-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_fresh_agent_starts_expired_and_only_the_controlling_session_renews() {
    let d = dir("fresh");
    let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    assert!(
        lease.left().is_none(),
        "a fresh agent must not grant itself a lease"
    );
    let (a, _) = lease.new_session(0).unwrap();
    let (b, _) = lease.new_session(0).unwrap();
    assert!(
        !lease.on_heartbeat(a),
        "a heartbeat before any desired state renews nothing"
    );
    assert_eq!(lease.on_desired(a, false).map(|f| f.lifted), Ok(false));
    assert!(lease.left().is_some());
    assert!(lease.on_heartbeat(a));
    assert!(
        !lease.on_heartbeat(b),
        "another session's heartbeat must not renew"
    );
}

#[test]
fn a_restarted_agent_resumes_its_deadline_instead_of_a_fresh_one() {
    let d = dir("restart");
    let first = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    let (s, _) = first.new_session(0).unwrap();
    first.on_desired(s, false).unwrap();
    let left_before = first.left().unwrap();
    drop(first);
    let second = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    let left_after = second.left().expect("the saved deadline holds");
    assert!(
        left_after <= left_before,
        "{left_after:?} > {left_before:?}"
    );
    // Another boot's deadline means nothing.
    std::fs::write(path(&d, "db1"), "another-boot 99999999999999999999\n").unwrap();
    let third = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    assert!(third.left().is_none());
}

#[test]
fn a_fence_is_lifted_only_by_a_session_made_after_it() {
    let d = dir("fence");
    let lease = Lease::new(Duration::from_millis(40), true, Renewal::Monitor, &d, "db1");
    let (old, kicked) = lease.new_session(0).unwrap();
    lease.on_desired(old, false).unwrap();
    assert!(
        lease.try_fence(|| "test".into()).is_none(),
        "not expired yet"
    );
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        lease
            .try_fence(|| "expired".into())
            .map(|(r, _)| r)
            .as_deref(),
        Some("expired")
    );
    assert!(
        kicked.has_changed().unwrap(),
        "every session is told to close"
    );
    assert!(
        lease.try_fence(|| "again".into()).is_none(),
        "one fence at a time"
    );
    assert!(
        !lease.on_heartbeat(old),
        "a heartbeat contradicting the fence renews nothing"
    );
    assert!(
        lease.on_desired(old, false).is_err(),
        "a frame from before the fence lifts nothing"
    );
    let (new, _) = lease.new_session(0).unwrap();
    assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(true));
    assert!(lease.fenced().is_none() && lease.left().is_some());
}

#[test]
fn a_renewal_read_after_the_deadline_waits_for_the_lease_task() {
    let d = dir("thaw");
    let lease = Lease::new(Duration::from_millis(40), true, Renewal::Monitor, &d, "db1");
    let (session, _) = lease.new_session(0).unwrap();
    lease.on_desired(session, false).unwrap();
    // Frozen past the deadline with a heartbeat waiting in the socket: read at the
    // thaw, it must not renew before the lease task had its say.
    std::thread::sleep(Duration::from_millis(60));
    assert!(!lease.on_heartbeat(session), "renewed an unjudged expiry");
    assert_eq!(lease.on_desired(session, false), Err(NotFollowed::Stale));
    assert!(lease.left().is_none());
    // The lease task found nothing to fence (no writer VIP, read-only): the open
    // session is told to close and renews nothing more (what waits in it may be from
    // before the freeze); a new one renews.
    let Verdict::Fence { expiries } = lease.judge(Boot::now()) else {
        panic!("a passed deadline is not judged for a fence");
    };
    lease.mark_judged(expiries);
    assert!(!lease.on_heartbeat(session));
    assert_eq!(lease.on_desired(session, false), Err(NotFollowed::Stale));
    assert!(lease.left().is_none());
    let (new, _) = lease.new_session(0).unwrap();
    assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(false));
    assert!(lease.left().is_some());
}

#[test]
fn after_a_freeze_only_a_new_session_renews() {
    let d = dir("freeze");
    let lease = Lease::new(Duration::from_secs(4), true, Renewal::Monitor, &d, "db1")
        .with_freeze_detection(Duration::from_millis(100));
    let (session, kicked) = lease.new_session(0).unwrap();
    lease.on_desired(session, false).unwrap();
    assert!(lease.on_heartbeat(session), "running: heartbeats renew");
    // Not running for 150 ms (no watch thread here): the next frame read is taken for
    // one that waited through a freeze, though the deadline has not passed.
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        !lease.on_heartbeat(session),
        "a frame read after a freeze renewed"
    );
    assert!(
        kicked.has_changed().unwrap(),
        "the open session is told to close"
    );
    assert_eq!(lease.on_desired(session, false), Err(NotFollowed::Stale));
    let (new, _) = lease.new_session(0).unwrap();
    assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(false));
    assert!(lease.on_heartbeat(new));
}

#[test]
fn fencing_none_never_expires_or_fences() {
    let lease = Lease::new(
        Duration::from_millis(1),
        false,
        Renewal::Monitor,
        &dir("none"),
        "db1",
    );
    assert!(lease.left().is_some());
    assert!(lease.try_fence(|| "x".into()).is_none());
}

#[test]
fn in_a_fleet_only_the_etcd_lease_renews_and_a_fence_voids_its_renewals() {
    let d = dir("etcd");
    let lease = Lease::new(Duration::from_secs(1), true, Renewal::Etcd, &d, "db1");
    let (a, _) = lease.new_session(7).unwrap();
    assert_eq!(
        lease.on_desired(a, false).map(|f| f.lifted),
        Ok(false),
        "it still controls"
    );
    assert!(lease.left().is_none(), "a desired state renews nothing");
    assert!(!lease.on_heartbeat(a), "a heartbeat renews nothing");
    let before = lease.fences();
    assert!(lease.renew_until(Boot::now().after(Duration::from_millis(40)), before));
    assert!(lease.left().is_some());
    let expiry = lease.expire_now();
    assert!(
        lease.left().is_none(),
        "a lost etcd lease ends the permit at once"
    );
    assert!(lease.try_fence(|| "lost".into()).is_some());
    // As the lease task does once it has fenced.
    lease.mark_judged(expiry);
    assert!(
        !lease.renew_until(Boot::now().after(Duration::from_secs(1)), before),
        "the lease from before the fence renews nothing"
    );
    assert!(lease.left().is_none());
    assert!(lease.renew_until(Boot::now().after(Duration::from_secs(1)), lease.fences()));
}

#[test]
fn a_higher_term_closes_the_sessions_of_lower_ones_and_not_its_own() {
    let d = dir("term");
    let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    let (old, old_kick) = lease.new_session(3).unwrap();
    lease.on_desired(old, false).unwrap();
    lease.enter_term(4);
    let (new, new_kick) = lease.new_session(4).unwrap();
    assert!(
        old_kick.has_changed().unwrap(),
        "the term-3 session is told to close"
    );
    assert!(!new_kick.has_changed().unwrap(), "the term-4 session stays");
    assert!(!lease.on_heartbeat(old));
    assert_eq!(lease.on_desired(old, false), Err(NotFollowed::TermOver));
    assert!(
        lease.new_session(3).is_none(),
        "a late term-3 handshake is refused"
    );
    assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(false));
    lease.enter_term(2);
    assert!(
        !new_kick.has_changed().unwrap(),
        "a lower term changes nothing"
    );
}

#[test]
fn the_etcd_permit_ends_before_etcd_expires_the_lease() {
    let sent = Boot(10_000_000_000);
    let ttl = Duration::from_secs(1);
    let until = etcd_permit_until(sent, ttl);
    assert!(until < sent.after(ttl));
    assert_eq!(until, Boot(10_750_000_000));
}

#[tokio::test]
async fn a_forced_expiry_is_waited_for_until_the_lease_task_judged_it() {
    let d = dir("judged");
    let lease = Lease::new(Duration::from_secs(1), true, Renewal::Etcd, &d, "db1");
    let expiry = lease.expire_now();
    assert!(
        !lease.judged(expiry, Duration::from_millis(20)).await,
        "nothing judged it yet"
    );
    assert_eq!(
        lease.judge(Boot::now()),
        Verdict::Fence { expiries: expiry }
    );
    lease.mark_judged(expiry);
    assert!(lease.judged(expiry, Duration::from_millis(20)).await);
    let unenforced = Lease::new(Duration::from_secs(1), false, Renewal::Etcd, &d, "db2");
    let e = unenforced.expire_now();
    assert!(
        unenforced.judged(e, Duration::ZERO).await,
        "without fencing nothing waits"
    );
}

#[tokio::test]
async fn a_plan_dies_with_its_desired_state() {
    let d = dir("generation");
    let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    let (session, _) = lease.new_session(0).unwrap();
    let writer = lease.on_desired(session, false).unwrap().stamp;
    assert!(lease.current(writer));
    assert!(lease.permit(writer).await.is_ok());
    // The monitor sends another desired state (a demotion): the writer plan is over,
    // though the lease holds and no fence was decided.
    let demotion = lease.on_desired(session, false).unwrap().stamp;
    assert!(!lease.current(writer), "a superseded plan went on");
    assert_eq!(
        lease.permit(writer).await.err(),
        Some(Refused::Superseded),
        "a writer step of a superseded desired state was admitted"
    );
    assert!(lease.permit(demotion).await.is_ok());
    // An order that takes the writer role away supersedes too.
    lease.supersede_for(session).unwrap();
    assert!(!lease.current(demotion));
}

#[tokio::test]
async fn a_step_planned_before_a_fence_never_runs_after_it() {
    // Issue 22: the writer's plan waited on a hung mysqld; meanwhile the lease ran
    // out, the fence removed the VIP, and the monitor's demotion on a new session
    // lifted the fence and renewed the lease. The old plan's AddVip then found a
    // valid lease and no fence, and took the VIP back.
    let d = dir("fence-gen");
    let lease = Lease::new(Duration::from_millis(40), true, Renewal::Monitor, &d, "db1");
    let (old, _) = lease.new_session(0).unwrap();
    let writer = lease.on_desired(old, false).unwrap().stamp;
    std::thread::sleep(Duration::from_millis(60));
    let (_, fence) = lease.try_fence(|| "expired".into()).unwrap();
    assert!(!lease.current(writer));
    assert_eq!(lease.permit(writer).await.err(), Some(Refused::Superseded));
    let (new, _) = lease.new_session(0).unwrap();
    let demotion = lease.on_desired(new, false).unwrap();
    assert!(demotion.lifted && lease.left().is_some() && lease.fenced().is_none());
    assert!(demotion.stamp.generation > fence.generation);
    assert_eq!(
        lease.permit(writer).await.err(),
        Some(Refused::Superseded),
        "the plan from before the fence took a writer step after the fence was lifted"
    );
    assert!(lease.permit(demotion.stamp).await.is_ok());
}

#[tokio::test]
async fn a_later_term_stops_the_writer_steps_of_an_earlier_one() {
    let d = dir("term-gen");
    let lease = Lease::new(Duration::from_secs(1), true, Renewal::Etcd, &d, "db1");
    lease.enter_term(3);
    let (session, _) = lease.new_session(3).unwrap();
    assert!(lease.renew_until(Boot::now().after(Duration::from_secs(1)), lease.fences()));
    let writer = lease.on_desired(session, false).unwrap().stamp;
    assert_eq!(writer.term, 3);
    lease.set_wanted(Some(writer));
    assert!(lease.writer_wanted());
    lease.enter_term(4);
    // The etcd permit still runs: only the term says the order is over.
    assert!(lease.left().is_some());
    assert_eq!(lease.permit(writer).await.err(), Some(Refused::TermOver));
    assert!(!lease.writer_wanted());
}

#[tokio::test]
async fn a_permit_holds_the_fence_off_and_says_how_long_the_lease_runs() {
    let d = dir("permit");
    let lease = Lease::new(Duration::from_secs(4), true, Renewal::Monitor, &d, "db1");
    let (session, _) = lease.new_session(0).unwrap();
    let stamp = lease.on_desired(session, false).unwrap().stamp;
    let permit = lease.permit(stamp).await.unwrap();
    assert!(permit.left <= Duration::from_secs(3) && permit.left > Duration::from_secs(2));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), lease.gate.lock())
            .await
            .is_err(),
        "the fence could decide during a writer step"
    );
    drop(permit);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), lease.gate.lock())
            .await
            .is_ok()
    );
    // Expired: refused as a missing permit (reported as self-fenced), not as stale.
    let short = Lease::new(Duration::from_millis(20), true, Renewal::Monitor, &d, "db2");
    let (s, _) = short.new_session(0).unwrap();
    let stamp = short.on_desired(s, false).unwrap().stamp;
    std::thread::sleep(Duration::from_millis(30));
    let refused = short.permit(stamp).await.err().unwrap();
    assert_eq!(refused, Refused::Expired);
    assert!(refused.is_permit() && !Refused::Superseded.is_permit());
}

#[tokio::test]
async fn a_re_sent_desired_state_keeps_its_plan_and_nothing_else_does() {
    let d = dir("resend");
    let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    let (session, _) = lease.new_session(0).unwrap();
    let first = lease.on_desired(session, false).unwrap().stamp;
    // The monitor re-sends the same state: the plan under way for it goes on.
    assert_eq!(lease.on_desired(session, true).unwrap().stamp, first);
    assert!(lease.current(first));
    // Anything stamped since makes even the same state a new order.
    lease.supersede_for(session).unwrap();
    let again = lease.on_desired(session, true).unwrap().stamp;
    assert_ne!(again, first);
    assert_eq!(lease.permit(first).await.err(), Some(Refused::Superseded));
    assert!(lease.permit(again).await.is_ok());
}

#[tokio::test]
async fn an_order_queued_in_a_deposed_terms_session_never_runs() {
    // Issue 22 item 3: an order that waited in a deposed monitor's socket is read
    // after a later term connected. It is refused, and a stamp taken before the term
    // changed admits no writer step after it.
    let d = dir("queued-order");
    let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
    let (old, _) = lease.new_session(1).unwrap();
    lease.on_desired(old, false).unwrap();
    let lift = lease.supersede_for(old).unwrap();
    assert!(lease.term_leads(old));
    lease.enter_term(2);
    let (new, _) = lease.new_session(2).unwrap();
    assert!(
        !lease.term_leads(old),
        "a deposed term's session still leads"
    );
    assert_eq!(lease.supersede_for(old), Err(NotFollowed::TermOver));
    assert_eq!(lease.permit(lift).await.err(), Some(Refused::TermOver));
    assert!(lease.term_leads(new) && lease.supersede_for(new).is_ok());
}

#[tokio::test]
async fn no_etcd_permit_while_a_lost_ones_fence_is_pending() {
    // Issue 22 item 3: etcd says the lease is gone (a monitor revoked it and counts
    // this host fenced). Until the lease task has judged that, no renewal counts: a
    // new lease's permit would otherwise extend the deadline past the fence.
    let d = dir("pending-fence");
    let lease = Lease::new(Duration::from_secs(5), true, Renewal::Etcd, &d, "db1");
    let fences = lease.fences();
    assert!(lease.renew_until(Boot::now().after(Duration::from_secs(3)), fences));
    let expiry = lease.expire_now();
    assert!(lease.expiry_pending());
    assert!(
        !lease.renew_until(Boot::now().after(Duration::from_secs(3)), fences),
        "a permit was granted while the lost one's fence was pending"
    );
    assert_eq!(
        lease.judge(Boot::now()),
        Verdict::Fence { expiries: expiry }
    );
    let settled = tokio::time::timeout(Duration::from_millis(50), lease.settled()).await;
    assert!(
        settled.is_err(),
        "settled before the lease task judged the loss"
    );
    // The lease task judges (nothing held here, so no fence): renewals count again.
    lease.mark_judged(expiry);
    lease.settled().await;
    assert!(!lease.expiry_pending());
    assert!(lease.renew_until(Boot::now().after(Duration::from_secs(3)), fences));
    assert!(matches!(lease.judge(Boot::now()), Verdict::Keep { .. }));
}
