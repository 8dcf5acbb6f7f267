//! The agent in a monitor fleet (`[coordination]`), against a real etcd member running in
//! the lab and the real agent binary: its own etcd lease is its writer permit (no monitor
//! needed to keep it, a revoke or a lost etcd takes it away), and monitor terms only grow,
//! even across an agent restart. Needs root; in CI it must run (see `require_root`).
//! Timings are never asserted: only the order of outcomes, with generous waits.

use mmm_common::epoch::{fresh_epoch, EpochRecord};
use mmm_common::etcd::Keys;
use mmm_common::proto::*;
use mmm_monitor::agents::client::{AgentLink, LinkError};
use mmm_tests::agent_lab::holds;
use mmm_tests::etcd::EtcdCluster;
use mmm_tests::lab::{desired, Lab};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
/// Generous bound on the agent reacting to a lost lease (session_ttl is 1 s).
const REACT: Duration = Duration::from_secs(10);
const PREFIX: &str = "/mmm/test";

fn keys() -> Keys {
    Keys::new(PREFIX)
}

/// A lab with one etcd member on node `etcd1` (192.0.2.31) and `[coordination]` in the
/// config. The etcd cluster is declared last so it is ended before the lab's namespaces.
fn fleet_lab(tag: &str, session_ttl: &str) -> (Lab, EtcdCluster) {
    let lab = fleet_lab_without_etcd(tag, session_ttl);
    let etcd = EtcdCluster::start_in(&lab.net, tag, &["etcd1"]);
    (lab, etcd)
}

/// The lab of [`fleet_lab`], etcd not started yet.
fn fleet_lab_without_etcd(tag: &str, session_ttl: &str) -> Lab {
    let extra = format!("[coordination]\netcd = [\"http://192.0.2.31:2379\"]\nprefix = \"{PREFIX}\"\nsession_ttl = \"{session_ttl}\"\n");
    Lab::with_nodes(tag, &extra, &[("etcd1", 31)])
}

/// Runs `f` with a link to `host`'s agent in `term`, from the monitor's namespace; the
/// connect's error is handed over, not unwrapped.
fn with_term_link<R: Send + 'static, Fut: std::future::Future<Output = R>>(
    lab: &Lab,
    host: &str,
    term: Term,
    f: impl FnOnce(Result<AgentLink, LinkError>) -> Fut + Send + 'static,
) -> R {
    let (addr, key, host) = (lab.agent_addr(host), lab.key.clone(), host.to_string());
    block_on_in(&lab.net.node("mon").ns.clone(), move || async move {
        f(AgentLink::connect_in_term(addr, &key, "mon", &host, term, T).await).await
    })
}

/// The connect error's text in `term`, or None when the agent accepted it.
fn refusal(lab: &Lab, host: &str, term: Term) -> Option<String> {
    with_term_link(lab, host, term, |r| async move {
        r.err().map(|e| format!("{:#}", anyhow::Error::from(e)))
    })
}

/// The lease id the agent published under its key, once it has.
fn published_lease(etcd: &EtcdCluster) -> Option<i64> {
    let out = etcd.etcdctl(&["get", &keys().agent("db1"), "--print-value-only"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    assert_eq!(v["host"], "db1", "{text}");
    v["lease"].as_i64()
}

fn wait_published(lab: &Lab, etcd: &EtcdCluster, log: &str) -> i64 {
    wait_for(REACT, || published_lease(etcd)).unwrap_or_else(|| {
        panic!(
            "the agent published no etcd lease:\n{}\n{}",
            lab.log(log),
            etcd.logs()
        )
    })
}

/// A monitor's leadership as etcd's election records it: a campaign key under the
/// prefix's election, bound to a lease of its own, and the fresh epoch a leader writes;
/// returns the term (the epoch and the key's revision). The agent obeys a term only
/// while it leads.
fn lead(lab: &Lab, etcd: &EtcdCluster, name: &str) -> Term {
    let session = etcdctl_lease(etcd, "600");
    elected(lab, etcd, name, session)
}

/// A campaign in `session` and the epoch its leader writes: the term.
fn elected(lab: &Lab, etcd: &EtcdCluster, name: &str, session: i64) -> Term {
    let rev = campaign_key(etcd, name, session);
    let epoch = fresh_epoch().expect("random");
    write_epoch(lab, etcd, epoch, rev);
    Term { epoch, rev }
}

/// Writes the epoch record a leader of term `first` writes at `<prefix>/cluster`, MACed
/// with the lab's cluster key.
fn write_epoch(lab: &Lab, etcd: &EtcdCluster, epoch: u64, first: u64) {
    let value = mmm_common::epoch::seal(&lab.key, PREFIX, EpochRecord { epoch, term: first });
    let out = etcd.etcdctl(&["put", &format!("{PREFIX}/cluster"), &value]);
    assert!(out.status.success(), "{out:?}");
}

/// Makes db1 the writer through a link in `term`, then drops the link. Asked again while
/// the agent has no writer permit yet (its lease is being granted).
fn make_writer(lab: &Lab, term: Term) {
    let mut last = Vec::new();
    let done = wait_for(REACT, || {
        let applied = with_term_link(lab, "db1", term, |link| async move {
            let mut link = link.expect("link in the term");
            link.apply(desired(1, true, &[("writer", 100), ("reader", 101)]), T)
                .await
        })
        .expect("desired state answered");
        last = applied.failures;
        if last.is_empty() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    assert!(
        done.is_some(),
        "db1 did not become the writer: {last:?}\n{}",
        lab.log("agent-db1.log")
    );
}

#[test]
fn the_agents_etcd_lease_keeps_the_writer_without_a_monitor_and_a_revoke_fences_it() {
    if !require_root(
        "the_agents_etcd_lease_keeps_the_writer_without_a_monitor_and_a_revoke_fences_it",
    ) {
        return;
    }
    let (lab, etcd) = fleet_lab("fleetag1", "1s");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let first = wait_published(&lab, &etcd, "agent-db1.log");
    let term = lead(&lab, &etcd, "m");
    make_writer(&lab, term);
    assert!(holds(&lab, "db1", "192.0.2.100") && !db1.read_only());
    // No monitor talks to the agent for several session_ttl: its own lease keeps it.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        holds(&lab, "db1", "192.0.2.100") && !db1.read_only(),
        "the writer was given up while its etcd lease lives:\n{}",
        lab.log("agent-db1.log")
    );
    assert_eq!(
        published_lease(&etcd),
        Some(first),
        "the same lease all along"
    );

    // A monitor revokes the lease: the agent drops the writer VIP and goes read_only.
    let revoked = etcd.etcdctl(&["lease", "revoke", &format!("{first:x}")]);
    assert!(revoked.status.success(), "{revoked:?}");
    let fenced = wait_for(REACT, || {
        (!holds(&lab, "db1", "192.0.2.100") && db1.read_only()).then_some(())
    });
    let log = lab.log("agent-db1.log");
    assert!(
        fenced.is_some(),
        "the agent kept the writer after its lease was revoked:\n{log}"
    );
    assert!(holds(&lab, "db1", "192.0.2.101"), "reader VIP stays");
    assert!(log.contains("etcd lease lost"), "{log}");
    // It grants and publishes a new lease, and a new session of the term lifts the fence.
    let second = wait_for(REACT, || published_lease(&etcd).filter(|l| *l != first))
        .unwrap_or_else(|| panic!("no new lease published:\n{}", lab.log("agent-db1.log")));
    assert_ne!(second, first);
    make_writer(&lab, term);
    assert!(
        holds(&lab, "db1", "192.0.2.100"),
        "writer back under the new lease"
    );
}

#[test]
fn an_agent_that_loses_etcd_fences_itself() {
    if !require_root("an_agent_that_loses_etcd_fences_itself") {
        return;
    }
    let (lab, mut etcd) = fleet_lab("fleetag2", "1s");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    wait_published(&lab, &etcd, "agent-db1.log");
    let term = lead(&lab, &etcd, "m");
    make_writer(&lab, term);
    assert!(holds(&lab, "db1", "192.0.2.100"));
    etcd.kill("etcd1");
    let fenced = wait_for(REACT, || {
        (!holds(&lab, "db1", "192.0.2.100") && db1.read_only()).then_some(())
    });
    let log = lab.log("agent-db1.log");
    assert!(
        fenced.is_some(),
        "the agent kept the writer without etcd:\n{log}"
    );
    assert!(
        log.contains("etcd does not renew") && log.contains("fence: writer VIP removed"),
        "{log}"
    );
    // It keeps serving: a monitor still connects and reads its state.
    let hb = with_term_link(&lab, "db1", term, |l| async move {
        l.expect("link without etcd").heartbeat(0, T).await
    })
    .expect("heartbeat without etcd");
    assert_eq!(hb.flags & hb_flags::SELF_FENCED, hb_flags::SELF_FENCED);
    // And no new session gets the writer back while etcd is gone.
    let applied = with_term_link(&lab, "db1", term, |l| async move {
        l.unwrap()
            .apply(desired(2, true, &[("writer", 100), ("reader", 101)]), T)
            .await
    })
    .expect("answered");
    assert!(!applied.failures.is_empty(), "writer taken without a lease");
    assert!(!holds(&lab, "db1", "192.0.2.100"));
}

#[test]
fn monitor_terms_only_grow_term_0_is_refused_and_the_term_survives_a_restart() {
    if !require_root("monitor_terms_only_grow_term_0_is_refused_and_the_term_survives_a_restart") {
        return;
    }
    let (lab, etcd) = fleet_lab("fleetag3", "1s");
    let agent = lab.agent("db1", "agent-db1.log");
    let no_term = refusal(&lab, "db1", Term::NONE).expect("term 0 refused in a fleet");
    assert!(no_term.contains("monitor fleet"), "{no_term}");

    // `five` leads; `three` is an earlier revision of its epoch, `seven` a later one.
    let five = lead(&lab, &etcd, "m");
    assert!(five.rev > 1, "{five}");
    let t = move |rev| Term {
        epoch: five.epoch,
        rev,
    };
    let (three, six, seven) = (t(five.rev - 1), t(five.rev + 1), t(five.rev + 2));
    // A `five` session is open while a `three` monitor tries, twice, then `seven` comes.
    let (addr, key) = (lab.agent_addr("db1"), lab.key.clone());
    let (stale, stale_again, old_session) =
        with_term_link(&lab, "db1", five, move |l| async move {
            let mut five = l.expect("term five accepted");
            five.heartbeat(0, T).await.expect("term five works");
            let text = |r: Result<AgentLink, LinkError>| {
                r.err().map(|e| format!("{:#}", anyhow::Error::from(e)))
            };
            let stale = text(AgentLink::connect_in_term(addr, &key, "old", "db1", three, T).await);
            let again = text(AgentLink::connect_in_term(addr, &key, "old", "db1", three, T).await);
            let mut seven = AgentLink::connect_in_term(addr, &key, "new", "db1", seven, T)
                .await
                .expect("term seven accepted");
            // The higher term closes the `five` session, not its own.
            let mut closed = false;
            for _ in 0..50 {
                if five.heartbeat(0, T).await.is_err() {
                    closed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seven
                .heartbeat(0, T)
                .await
                .expect("the term-seven session stays");
            (stale, again, closed)
        });
    let stale = stale.expect("term three refused after term five");
    assert!(
        stale.contains(&format!("term {three} is over")) && stale.contains(&format!("term {five}")),
        "{stale}"
    );
    assert!(stale_again.is_some(), "term three refused again");
    assert!(
        old_session,
        "the term-five session stayed open after term seven"
    );
    let log = lab.log("agent-db1.log");
    assert_eq!(
        log.matches(&format!("term {three} is over")).count(),
        1,
        "one warning per refused term:\n{log}"
    );
    assert!(
        log.contains(&format!("monitor new leads in term {seven} (was {five})")),
        "{log}"
    );

    // A restarted agent remembers term seven.
    lab.net.signal(agent, "KILL");
    assert!(lab.net.wait_exit(agent, T));
    lab.agent("db1", "agent-db1-2.log");
    let after = refusal(&lab, "db1", six).expect("term six refused after a restart");
    assert!(
        after.contains(&format!("term {six}")) && after.contains(&format!("term {seven}")),
        "{after}"
    );
    assert!(
        refusal(&lab, "db1", seven).is_none(),
        "term seven still accepted"
    );
}

/// etcd wiped and re-created: its revisions start again and the new leader's term is
/// lower than the agent has seen. The agent takes it once its own read of etcd shows the
/// new epoch's record, verified with the cluster key, and that term leading the election;
/// from then on the old epoch's leader is refused, whatever its revision, even with its
/// record put back, and so is a lower revision of the new epoch. A record without the
/// key's MAC (anyone who can write to etcd) is named in one log line and never accepted.
#[test]
fn a_lower_term_of_a_new_epoch_is_taken_only_when_the_agents_etcd_shows_it() {
    if !require_root("a_lower_term_of_a_new_epoch_is_taken_only_when_the_agents_etcd_shows_it") {
        return;
    }
    let (lab, mut etcd) = fleet_lab("fleetag8", "1s");
    lab.agent("db1", "agent-db1.log");
    for i in 0..30 {
        let put = etcd.etcdctl(&["put", "/filler", &i.to_string()]);
        assert!(put.status.success(), "{put:?}");
    }
    let old = lead(&lab, &etcd, "m1");
    assert!(refusal(&lab, "db1", old).is_none(), "the old etcd's leader");
    etcd.wipe_and_recreate_in(&lab.net);
    let session = etcdctl_lease(&etcd, "600");
    let rev = campaign_key(&etcd, "m2", session);
    let new = Term {
        epoch: fresh_epoch().expect("random"),
        rev,
    };
    assert!(1 < new.rev && new.rev < old.rev, "{old} then {new}");
    let unshown = refusal(&lab, "db1", new).expect("an epoch etcd does not show");
    assert!(
        unshown.contains("cannot confirm") && unshown.contains("is missing"),
        "{unshown}"
    );
    // A valid record of the new epoch, its term changed by someone without the key, then
    // one written with another key: neither is this cluster's leader.
    let valid = mmm_common::epoch::seal(
        &lab.key,
        PREFIX,
        EpochRecord {
            epoch: new.epoch,
            term: new.rev + 1,
        },
    );
    let forged = valid.replace(
        &format!(" term={} ", new.rev + 1),
        &format!(" term={} ", new.rev),
    );
    assert_ne!(forged, valid);
    let other = mmm_common::epoch::seal(
        &mmm_common::config::ClusterKey::from_hex(&"77".repeat(32)).expect("a key"),
        PREFIX,
        EpochRecord {
            epoch: new.epoch,
            term: new.rev,
        },
    );
    for (value, why) in [
        (&forged, "its MAC does not verify with this cluster key"),
        (&other, "it names another cluster"),
    ] {
        let put = etcd.etcdctl(&["put", &format!("{PREFIX}/cluster"), value]);
        assert!(put.status.success(), "{put:?}");
        for _ in 0..3 {
            let refused = refusal(&lab, "db1", new).expect("a record that does not verify");
            assert!(
                refused.contains("cannot confirm") && refused.contains(why),
                "{refused}"
            );
        }
        let log = lab.log("agent-db1.log");
        assert_eq!(
            log.matches(&format!("etcd key {PREFIX}/cluster is not accepted: {why}"))
                .count(),
            1,
            "named once:\n{log}"
        );
    }
    // The new leader writes its epoch: the lower term is taken, the old one refused.
    write_epoch(&lab, &etcd, new.epoch, new.rev);
    assert!(refusal(&lab, "db1", new).is_none(), "the new epoch's term");
    let deposed = refusal(&lab, "db1", old).expect("the old epoch after the new one");
    assert!(
        deposed.contains("is not of the epoch etcd shows"),
        "{deposed}"
    );
    let lower = refusal(
        &lab,
        "db1",
        Term {
            rev: new.rev - 1,
            ..new
        },
    )
    .expect("a lower revision");
    assert!(lower.contains("is over"), "{lower}");
    let log = lab.log("agent-db1.log");
    assert!(
        log.contains(&format!(
            "leads in term {new}, of the epoch etcd shows (was {old})"
        )),
        "{log}"
    );
    // The old record put back (anyone who can write to etcd may have kept it): its
    // leader still does not lead the election.
    write_epoch(&lab, &etcd, old.epoch, old.rev);
    let replayed = refusal(&lab, "db1", old).expect("the old leader with its record back");
    assert!(
        replayed.contains("does not lead the election"),
        "{replayed}"
    );
}

#[test]
fn a_restarted_agent_resumes_a_live_etcd_lease_and_not_a_dead_one() {
    if !require_root("a_restarted_agent_resumes_a_live_etcd_lease_and_not_a_dead_one") {
        return;
    }
    // A TTL well above an agent's restart time: the resumed deadline outlives the restart.
    let (lab, etcd) = fleet_lab("fleetag4", "5s");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let agent = lab.agent("db1", "agent-db1.log");
    let first = wait_published(&lab, &etcd, "agent-db1.log");
    let term = lead(&lab, &etcd, "m");
    make_writer(&lab, term);
    assert!(holds(&lab, "db1", "192.0.2.100"));

    // Restarted at once: the lease still lives in etcd, the agent goes on with it.
    lab.net.signal(agent, "KILL");
    assert!(lab.net.wait_exit(agent, T));
    let agent = lab.agent("db1", "agent-db1-2.log");
    let resumed = wait_for(REACT, || {
        lab.log("agent-db1-2.log")
            .contains("etcd lease resumed")
            .then_some(())
    });
    assert!(resumed.is_some(), "{}", lab.log("agent-db1-2.log"));
    assert_eq!(published_lease(&etcd), Some(first));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        holds(&lab, "db1", "192.0.2.100") && !db1.read_only(),
        "the writer was given up across a restart within its lease:\n{}",
        lab.log("agent-db1-2.log")
    );

    // Down for longer than the TTL: etcd expired the lease; the successor fences first.
    lab.net.signal(agent, "KILL");
    assert!(lab.net.wait_exit(agent, T));
    let gone = wait_for(Duration::from_secs(15), || {
        published_lease(&etcd).is_none().then_some(())
    });
    assert!(gone.is_some(), "etcd never expired the dead agent's lease");
    assert!(holds(&lab, "db1", "192.0.2.100"), "VIPs outlive the agent");
    lab.agent("db1", "agent-db1-3.log");
    let fenced = wait_for(REACT, || {
        (!holds(&lab, "db1", "192.0.2.100") && db1.read_only()).then_some(())
    });
    let log = lab.log("agent-db1-3.log");
    assert!(
        fenced.is_some(),
        "a restarted agent kept the writer on a dead lease:\n{log}"
    );
    // Whether the fence or etcd's answer about the saved lease comes first is a race;
    // either way the dead lease is never resumed.
    assert!(
        !log.contains("etcd lease resumed")
            && (log.contains("the saved etcd lease is gone")
                || log.contains("etcd lease not revoked after the fence")),
        "{log}"
    );
    let second = wait_for(REACT, || published_lease(&etcd)).expect("a new lease published");
    assert_ne!(second, first);
}

#[test]
fn an_agent_cut_off_from_etcd_fences_and_comes_back_on_a_new_lease() {
    if !require_root("an_agent_cut_off_from_etcd_fences_and_comes_back_on_a_new_lease") {
        return;
    }
    let (lab, etcd) = fleet_lab("fleetag5", "1s");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let first = wait_published(&lab, &etcd, "agent-db1.log");
    let term = lead(&lab, &etcd, "m");
    make_writer(&lab, term);
    // Only db1's way to etcd is cut: etcd itself and the monitor's link stay.
    let cut = ["ip", "route", "add", "blackhole", "192.0.2.31/32"];
    lab.net.exec("db1", &cut);
    let fenced = wait_for(REACT, || {
        (!holds(&lab, "db1", "192.0.2.100") && db1.read_only()).then_some(())
    });
    assert!(
        fenced.is_some(),
        "the agent kept the writer cut off from etcd:\n{}",
        lab.log("agent-db1.log")
    );
    lab.net
        .exec("db1", &["ip", "route", "del", "blackhole", "192.0.2.31/32"]);
    // Back in touch: the old lease is never renewed again, a new one is published.
    let second = wait_for(REACT, || published_lease(&etcd).filter(|l| *l != first))
        .unwrap_or_else(|| panic!("no new lease:\n{}", lab.log("agent-db1.log")));
    assert_ne!(second, first);
    make_writer(&lab, term);
    assert!(
        holds(&lab, "db1", "192.0.2.100") && !db1.read_only(),
        "a new session of the term gives the writer back under the new lease"
    );
}

#[test]
fn an_agent_starting_without_etcd_serves_read_only_and_writes_once_etcd_answers() {
    if !require_root("an_agent_starting_without_etcd_serves_read_only_and_writes_once_etcd_answers")
    {
        return;
    }
    let lab = fleet_lab_without_etcd("fleetag6", "1s");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    // No etcd: the reader role is taken, the writer role refused, reports answered.
    // A fresh agent follows no epoch yet: with etcd silent, the first term is taken.
    let first = Term { epoch: 1, rev: 1 };
    let (reader_only, writer) = with_term_link(&lab, "db1", first, |l| async move {
        let mut l = l.expect("link without etcd");
        let reader = l.apply(desired(1, false, &[("reader", 101)]), T).await;
        let writer = l
            .apply(desired(2, true, &[("writer", 100), ("reader", 101)]), T)
            .await;
        (reader, writer)
    });
    assert!(reader_only.expect("answered").failures.is_empty());
    let writer = writer.expect("answered");
    assert!(!writer.failures.is_empty(), "writer taken without a lease");
    assert!(holds(&lab, "db1", "192.0.2.101") && !holds(&lab, "db1", "192.0.2.100"));
    assert!(db1.read_only());
    let said = wait_for(REACT, || {
        lab.log("agent-db1.log")
            .contains("etcd does not renew")
            .then_some(())
    });
    assert!(said.is_some(), "{}", lab.log("agent-db1.log"));
    // Several retries later, still the one line.
    std::thread::sleep(Duration::from_secs(2));
    let log = lab.log("agent-db1.log");
    assert_eq!(
        log.matches("etcd does not renew").count(),
        1,
        "one line while etcd is unreachable:\n{log}"
    );
    // etcd comes up: the agent grants and publishes a lease, and the writer role follows.
    let etcd = EtcdCluster::start_in(&lab.net, "fleetag6", &["etcd1"]);
    wait_published(&lab, &etcd, "agent-db1.log");
    let term = lead(&lab, &etcd, "m");
    make_writer(&lab, term);
    assert!(holds(&lab, "db1", "192.0.2.100") && !db1.read_only());
}

/// An etcd lease granted with `etcdctl` (as a monitor's session), by id.
fn etcdctl_lease(etcd: &EtcdCluster, ttl: &str) -> i64 {
    let out = etcd.etcdctl(&["lease", "grant", ttl]);
    let text = String::from_utf8_lossy(&out.stdout);
    // "lease 694d7a... granted with TTL(60s)"
    let hex = text.split_whitespace().nth(1).expect("lease id");
    i64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Campaigns as etcd's election does (a key under `<prefix>/leader/` bound to the
/// session's lease); the term is the key's create revision.
fn campaign_key(etcd: &EtcdCluster, name: &str, session: i64) -> u64 {
    let key = keys().candidate(session);
    let out = etcd.etcdctl(&[
        "put",
        &key,
        name,
        &format!("--lease={session:x}"),
        "-w",
        "json",
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    v["header"]["revision"].as_u64().expect("revision")
}

/// Finding (fleet review): the leader of term t1 is frozen (SIGSTOP, a VM pause) with
/// db1 its writer. Its session expires and m2 is elected in t2, but m2 cannot reach db1's
/// agent (db1 still reaches etcd): m2 fences db1 by revoking its etcd lease, waits
/// session_ttl and promotes another host. db1 fences itself and grants a new lease. The
/// t1 leader thaws: its link reconnects (db1 has never seen t2, so t1 is still the
/// highest term) and sends its desired state, db1 the writer, before its etcd keeper
/// learns the session is gone. The agent lifts the fence (a session made after it) and,
/// holding a live etcd lease of its own, becomes the writer again: two writers, and no
/// monitor will ever fence db1 again (m2 counts it fenced and cannot reach it). The same
/// holds without a reconnect when db1 was not the writer at the revoke (no fence, so the
/// t1 session is never closed) and the frozen leader had a promotion of db1 queued.
/// The agent holds the permit from etcd but never asks etcd whether the term that
/// drives it still leads.
#[test]
fn a_deposed_leaders_term_cannot_make_a_host_writer_again_after_the_new_leader_revoked_its_lease() {
    if !require_root("a_deposed_leaders_term_cannot_make_a_host_writer_again_after_the_new_leader_revoked_its_lease") {
        return;
    }
    let (lab, etcd) = fleet_lab("fleetag7", "1s");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let first = wait_published(&lab, &etcd, "agent-db1.log");
    // m1 leads in t1 and makes db1 the writer.
    let m1 = etcdctl_lease(&etcd, "60");
    let t1 = elected(&lab, &etcd, "m1", m1);
    make_writer(&lab, t1);
    assert!(holds(&lab, "db1", "192.0.2.100") && !db1.read_only());
    // m1 is frozen; its session ends in etcd; m2 is elected in t2 and never reaches db1.
    assert!(etcd
        .etcdctl(&["lease", "revoke", &format!("{m1:x}")])
        .status
        .success());
    let m2 = etcdctl_lease(&etcd, "60");
    let t2 = elected(&lab, &etcd, "m2", m2);
    assert!(t2.rev > t1.rev);
    // m2 fences db1 through its lease.
    assert!(etcd
        .etcdctl(&["lease", "revoke", &format!("{first:x}")])
        .status
        .success());
    let fenced = wait_for(REACT, || {
        (!holds(&lab, "db1", "192.0.2.100") && db1.read_only()).then_some(())
    });
    assert!(fenced.is_some(), "{}", lab.log("agent-db1.log"));
    wait_for(REACT, || published_lease(&etcd).filter(|l| *l != first))
        .expect("a new lease published");
    // m2 now counts db1 fenced (a TTL after the revoke) and promotes another host.
    std::thread::sleep(Duration::from_millis(1100));
    // m1 thaws: a new link in t1 with its desired state.
    let answered = with_term_link(&lab, "db1", t1, |link| async move {
        match link {
            Ok(mut l) => l
                .apply(desired(1, true, &[("writer", 100), ("reader", 101)]), T)
                .await
                .ok(),
            Err(_) => None,
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !holds(&lab, "db1", "192.0.2.100") && db1.read_only(),
        "the deposed t{t1} leader made db1 the writer again after t{t2} fenced it ({answered:?}):\n{}",
        lab.log("agent-db1.log")
    );
}
