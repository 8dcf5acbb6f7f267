//! The monitor fleet's coordination against a real 3-member etcd cluster (started by the
//! test on loopback): one leader at a time, terms that only grow, writes that fail for a
//! deposed leader, a planned handover without waiting for the TTL, and no leader while
//! etcd has lost its majority.

use mmm_common::config::Coordination;
use mmm_common::config::EtcdTls;
use mmm_monitor::etcd::{Fleet, FleetError};
use mmm_tests::etcd::{EtcdCluster, TlsFiles};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn coordination(etcd: &EtcdCluster, prefix: &str) -> Coordination {
    Coordination {
        etcd: etcd.endpoints(),
        prefix: prefix.into(),
        session_ttl: Duration::from_secs(1),
        etcd_election_timeout: Duration::from_millis(500),
        etcd_heartbeat_interval: Duration::from_millis(50),
        tls: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn one_leader_terms_grow_and_a_deposed_leader_cannot_write() {
    let etcd = EtcdCluster::start("fleet1", 3);
    let c = coordination(&etcd, "/mmm/test1");
    runtime().block_on(async {
        let mut a = Fleet::connect(&c, T).await.expect("monitor a connects");
        let mut b = Fleet::connect(&c, T).await.expect("monitor b connects");
        let mut sa = a.session().await.expect("a's session");
        let lead_a = a.campaign(&mut sa, "mon-a").await.expect("a leads");
        assert_eq!(
            b.leader().await.unwrap(),
            Some(("mon-a".into(), lead_a.term))
        );
        a.put_as_leader(&lead_a, &a.keys().status(), "from a")
            .await
            .expect("the leader writes");

        // b campaigns: it waits while a leads.
        let mut sb = b.session().await.expect("b's session");
        let mut b2 = b.clone();
        let contender =
            tokio::spawn(async move { b2.campaign(&mut sb, "mon-b").await.map(|l| (l, sb)) });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!contender.is_finished(), "b was elected while a leads");

        // a dies (its session ends; a crash is the same a TTL later): b leads, later term.
        a.end(sa).await.expect("a's session ends");
        let (lead_b, _sb) = tokio::time::timeout(T, contender)
            .await
            .expect("b elected within 5 s")
            .expect("campaign task")
            .expect("b leads");
        assert!(
            lead_b.term > lead_a.term,
            "terms grow: {} then {}",
            lead_a.term,
            lead_b.term
        );
        assert_eq!(
            a.leader().await.unwrap(),
            Some(("mon-b".into(), lead_b.term))
        );

        // a wakes up believing it leads: etcd refuses its write.
        match a.put_as_leader(&lead_a, &a.keys().status(), "stale").await {
            Err(FleetError::Deposed { term }) => assert_eq!(term, lead_a.term),
            other => panic!("a deposed leader wrote: {other:?}"),
        }
        assert_eq!(
            b.get(&b.keys().status()).await.unwrap().as_deref(),
            Some(&b"from a"[..])
        );
        b.put_as_leader(&lead_b, &b.keys().status(), "from b")
            .await
            .expect("b writes");
    });
}

#[test]
fn a_resigning_leader_hands_over_at_once() {
    let etcd = EtcdCluster::start("fleet2", 3);
    let c = coordination(&etcd, "/mmm/test2");
    runtime().block_on(async {
        let mut a = Fleet::connect(&c, T).await.unwrap();
        let mut b = Fleet::connect(&c, T).await.unwrap();
        let mut sa = a.session().await.unwrap();
        let lead_a = a.campaign(&mut sa, "mon-a").await.unwrap();
        let mut sb = b.session().await.unwrap();
        let mut b2 = b.clone();
        let contender =
            tokio::spawn(async move { b2.campaign(&mut sb, "mon-b").await.map(|l| (l, sb)) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resigned = std::time::Instant::now();
        a.resign(lead_a.clone()).await.expect("a resigns");
        let (lead_b, _sb) = tokio::time::timeout(T, contender)
            .await
            .expect("b elected")
            .unwrap()
            .unwrap();
        // Not a timing assertion: the handover did not need the session to expire, which
        // the log line shows for whoever reads it.
        eprintln!("handover after resign: {:?}", resigned.elapsed());
        assert!(lead_b.term > lead_a.term);
        assert!(
            sa.alive(),
            "a's session lives on: it resigned, it did not die"
        );
        assert!(matches!(
            a.put_as_leader(&lead_a, &a.keys().status(), "x").await,
            Err(FleetError::Deposed { .. })
        ));
        let _ = b;
    });
}

#[test]
fn without_a_majority_nobody_is_elected_and_sessions_are_lost() {
    let mut etcd = EtcdCluster::start("fleet3", 3);
    let c = coordination(&etcd, "/mmm/test3");
    runtime().block_on(async {
        let mut a = Fleet::connect(&c, T).await.unwrap();
        let mut sa = a.session().await.unwrap();
        let _lead = a.campaign(&mut sa, "mon-a").await.unwrap();
        etcd.kill("m1");
        etcd.kill("m2");
        // The session cannot be renewed: a leader must stop acting, which it learns here.
        tokio::time::timeout(Duration::from_secs(10), sa.lost())
            .await
            .expect("the session is reported lost without etcd's majority");
        // No member answers with a leader: connecting fails, naming each member's failure.
        match Fleet::connect(&c, T).await {
            Err(e) => {
                let text = mmm_monitor::error_chain(&e);
                assert!(
                    text.contains("no etcd member answers with a leader")
                        && etcd.endpoints().iter().all(|ep| text.contains(ep.as_str())),
                    "{text}"
                );
            }
            Ok(mut b) => {
                let campaign = async {
                    let mut sb = b.session().await?;
                    b.campaign(&mut sb, "mon-b").await
                };
                let elected = tokio::time::timeout(Duration::from_secs(3), campaign).await;
                assert!(
                    !matches!(elected, Ok(Ok(_))),
                    "a leader was elected without etcd's majority"
                );
            }
        }
    });
}

/// TLS to etcd: with the CA and a client certificate a monitor leads and writes; with
/// another CA, or without a client certificate where etcd requires one, it cannot even
/// start a session.
#[test]
fn tls_to_etcd_with_a_client_certificate() {
    let certs_dir = mmm_tests::TempDir::new("fleet-tls-certs");
    let tls = TlsFiles::generate(certs_dir.path());
    let etcd = EtcdCluster::start_with("fleet-tls", 1, Some(&tls));
    let with = |ca: &std::path::Path, client: bool| Coordination {
        tls: Some(EtcdTls {
            ca_file: ca.to_path_buf(),
            client: client.then(|| (tls.client_cert.clone(), tls.client_key.clone())),
        }),
        ..coordination(&etcd, "/mmm/tls")
    };
    runtime().block_on(async {
        let good = with(&tls.ca, true);
        let mut a = Fleet::connect(&good, T).await.expect("connects over TLS");
        let mut sa = a.session().await.expect("a session over TLS");
        let lead = a.campaign(&mut sa, "mon-a").await.expect("leads over TLS");
        a.put_as_leader(&lead, &a.keys().status(), "{}")
            .await
            .expect("a guarded write over TLS");
        for (what, c) in [
            ("another CA", with(&tls.other_ca, true)),
            ("no client certificate", with(&tls.ca, false)),
        ] {
            let attempt = async {
                let mut f = Fleet::connect(&c, T).await?;
                f.session().await
            };
            let refused = tokio::time::timeout(Duration::from_secs(10), attempt).await;
            assert!(
                !matches!(refused, Ok(Ok(_))),
                "{what}: a session was granted"
            );
        }
    });
}

/// A monitor counts its session lost when one renewal is late (an etcd leader election
/// is enough), while etcd still keeps the lease a TTL longer (and extends it when its
/// own leader changes). Rejoining at once under its name must not be refused as a
/// duplicate (the daemon then exits: one etcd election could stop every monitor); a real
/// duplicate still is.
#[test]
fn a_monitor_whose_session_was_lost_rejoins_under_its_name() {
    let etcd = EtcdCluster::start("fleetrejoin", 1);
    let c = coordination(&etcd, "/mmm/rejoin");
    runtime().block_on(async {
        let mut fleet = Fleet::connect(&c, T).await.expect("connects");
        let first = fleet.session().await.expect("first session");
        fleet
            .join(&first, "mon1", "mon1", &[])
            .await
            .expect("joins");
        let lost = first.lease;
        // Counted lost: the keeper stops; etcd still holds the lease and the name.
        drop(first);
        let mut again = Fleet::connect(&c, T).await.expect("connects again");
        let second = again.session().await.expect("second session");
        let refused = again.join(&second, "mon1", "mon1", &[]).await;
        assert!(
            matches!(refused, Err(FleetError::NameTaken { .. })),
            "without its earlier session a live name is a duplicate: {refused:?}"
        );
        again
            .join(&second, "mon1", "mon1", &[lost])
            .await
            .expect("this monitor's own earlier session does not make it a duplicate");
        let mut other = Fleet::connect(&c, T).await.expect("another monitor");
        let third = other.session().await.expect("its session");
        assert!(matches!(
            other.join(&third, "mon1", "mon1", &[]).await,
            Err(FleetError::NameTaken { .. })
        ));
    });
}

/// `Fleet::lease_alive` backs `Fleet::revoke`'s "already gone" answer: a lease that etcd
/// still keeps, renewed all along, must read as alive, whatever fraction of a second its
/// TTL has left.
#[test]
fn a_renewed_lease_reads_as_alive() {
    let etcd = EtcdCluster::start("fleetalive", 1);
    let c = coordination(&etcd, "/mmm/alive");
    runtime().block_on(async {
        let mut fleet = Fleet::connect(&c, T).await.expect("connects");
        let session = fleet
            .session()
            .await
            .expect("a session, renewed in the background");
        let mut dead = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(70)).await;
            assert!(session.alive(), "the session itself was lost");
            if !fleet.lease_alive(session.lease).await.expect("asked") {
                dead += 1;
            }
        }
        assert_eq!(dead, 0, "a renewed lease read as gone {dead} times of 20");
        let lease = session.lease;
        fleet.end(session).await.expect("revoked");
        assert!(
            !fleet.lease_alive(lease).await.expect("asked"),
            "a revoked lease"
        );
        fleet
            .revoke(lease)
            .await
            .expect("revoking a gone lease is no error");
    });
}

/// Any member lost, the raft leader included and first in the list: a leader's session
/// is not lost, its guarded writes go on through another member, and a monitor that
/// starts with the dead member first in its list connects at once. The session TTL is
/// the one the rule derives from the cluster's election timeout (500 ms here: 4 s).
#[test]
fn a_lost_etcd_member_ends_no_session() {
    for (tag, signal) in [("fleet-member-kill", "KILL"), ("fleet-member-stop", "STOP")] {
        let etcd = EtcdCluster::start(tag, 3);
        let leader = etcd.wait_raft_leader(Duration::from_secs(10));
        // The raft leader first in the list: the member every client would use first.
        let mut endpoints = etcd.endpoints();
        let at = etcd.members.iter().position(|m| m.name == leader).unwrap();
        let first = endpoints.remove(at);
        endpoints.insert(0, first);
        let c = Coordination {
            etcd: endpoints,
            session_ttl: Duration::from_secs(4),
            ..coordination(&etcd, "/mmm/members")
        };
        assert!(
            c.session_ttl >= c.min_session_ttl(),
            "the test's TTL follows the rule"
        );
        runtime().block_on(async {
            let mut a = Fleet::connect(&c, T).await.expect("a connects");
            let mut sa = a.session().await.expect("a's session");
            let lead = a.campaign(&mut sa, "mon-a").await.expect("a leads");
            etcd.signal(&leader, signal);
            let writes = async {
                for i in 0..20 {
                    let mut attempts = 0;
                    loop {
                        match a.put_as_leader(&lead, &a.keys().status(), format!("{i}")).await {
                            Ok(()) => break,
                            Err(FleetError::Deposed { .. }) => panic!("{signal}: deposed"),
                            Err(e) if attempts < 50 => {
                                attempts += 1;
                                let _ = e;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => panic!("{signal}: write {i} kept failing: {e}"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = writes => {}
                _ = sa.lost() => panic!("{signal} of the raft leader ended the session:\n{}", etcd.logs()),
            }
            assert!(sa.alive(), "{signal}: the session is alive");
            // A monitor started now, the dead member first in its list, connects.
            let mut b = tokio::time::timeout(Duration::from_secs(5), Fleet::connect(&c, T))
                .await
                .expect("b connects in time")
                .expect("b connects past the dead member");
            assert_eq!(
                b.leader().await.expect("b reads the leader").map(|(n, _)| n),
                Some("mon-a".to_string())
            );
        });
        if signal == "STOP" {
            etcd.signal(&leader, "CONT");
        }
    }
}

/// A member of another etcd cluster in the list (a copy-paste, a test cluster), first in
/// it: the cluster a majority of the list answers for is pinned when connecting; the
/// other member is never used, not even when a member of the right cluster fails, and
/// nothing of the fleet's is written there. A list whose answers split with no majority
/// is refused, naming each endpoint's cluster.
#[test]
fn a_member_of_another_cluster_in_the_list_is_never_used() {
    let right = EtcdCluster::start("fleet-right", 3);
    let wrong = EtcdCluster::start("fleet-wrong", 1);
    let mut endpoints = wrong.endpoints();
    endpoints.extend(right.endpoints());
    let prefix = "/mmm/wrongmember";
    let c = Coordination {
        etcd: endpoints,
        session_ttl: Duration::from_secs(4),
        ..coordination(&right, prefix)
    };
    let leader = right.wait_raft_leader(Duration::from_secs(10));
    runtime().block_on(async {
        let mut a = Fleet::connect(&c, T)
            .await
            .expect("connects to the right cluster");
        let mut sa = a.session().await.expect("a session");
        let lead = a.campaign(&mut sa, "mon-a").await.expect("leads");
        right.signal(&leader, "KILL");
        for i in 0..20 {
            let mut attempts = 0;
            loop {
                match a
                    .put_as_leader(&lead, &a.keys().status(), format!("{i}"))
                    .await
                {
                    Ok(()) => break,
                    Err(e) if attempts < 50 => {
                        attempts += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("write {i} kept failing: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Two endpoints, one per cluster: no majority, refused with both named.
        let alive = right
            .members
            .iter()
            .position(|m| m.name != leader)
            .expect("a live member");
        let split = Coordination {
            etcd: vec![
                wrong.endpoints()[0].clone(),
                right.endpoints()[alive].clone(),
            ],
            ..c.clone()
        };
        match mmm_common::etcd::Members::connect(&split, T).await {
            Err(e @ mmm_common::etcd::MembersError::Split { .. }) => {
                let text = e.to_string();
                assert!(text.contains("different clusters"), "{text}");
            }
            Err(e) => panic!("expected a split, got: {e}"),
            Ok(_) => panic!("connected to a list split between two clusters"),
        }
    });
    let keys = |etcd: &EtcdCluster| {
        let out = etcd.etcdctl(&["get", "--prefix", prefix, "--keys-only"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        keys(&right).contains("/status"),
        "the fleet's keys are in the right cluster"
    );
    assert_eq!(
        keys(&wrong),
        "",
        "nothing of the fleet's is in the other cluster"
    );
}
