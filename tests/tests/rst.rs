//! The RST answer for a released VIP, packet level, in namespaces: after db1 releases the
//! writer VIP, a client's SYN to it is refused at once (not left to its 1 s
//! retransmission), an open session through it is reset on its next segment, db1's own
//! address and other ports are untouched, and once the new owner's gratuitous ARP has been
//! seen nothing of db1's answers for the VIP any more. Needs root; in CI it must run.

use mmm_tests::agent_lab::apply_ok;
use mmm_tests::lab::{desired, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const VIP: &str = "192.0.2.100";

/// Connects from the client's namespace; the socket stays there when returned.
fn connect(lab: &Lab, addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let ns = lab.net.node("client").ns.clone();
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not IP:PORT: {e}"));
    let stream = block_on_in(&ns, move || async move {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(r) => r.and_then(|s| s.into_std()),
            Err(_elapsed) => Err(std::io::Error::new(ErrorKind::TimedOut, "no answer")),
        }
    })?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Makes the client send to db1's MAC for the VIP, whatever ARP said: what db1 alone does.
fn pin_vip_to_db1(lab: &Lab) {
    let mac = lab.net.node("db1").mac.clone();
    let args = [
        "ip",
        "neigh",
        "replace",
        VIP,
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ];
    lab.net.exec("client", &args);
}

#[test]
fn a_released_vip_is_answered_with_rst_until_the_new_owner_announces_it() {
    if !require_root("a_released_vip_is_answered_with_rst_until_the_new_owner_announces_it") {
        return;
    }
    let lab = Lab::new("rst", "");
    // Driven by single desired states here, without a monitor's heartbeats.
    lab.without_lease();
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    lab.agent("db2", "agent-db2.log");
    let log = lab.log("agent-db1.log");
    assert!(log.contains("RST program attached"), "{log}");

    apply_ok(&lab, "db1", desired(1, true, &[("writer", 100)]));
    let session = |what: &str| {
        let mut s = connect(&lab, &format!("{VIP}:3306"), T)
            .unwrap_or_else(|e| panic!("{what}: a session through the VIP: {e}"));
        // MariaDB greets first: read that now, so the next read is about the reset.
        s.set_read_timeout(Some(T)).unwrap();
        let mut greeting = [0u8; 512];
        assert!(s.read(&mut greeting).unwrap() > 0, "{what}: no greeting");
        s
    };
    // db1 gives the VIP up. The agent resets the VIP's sessions just before, while the
    // address can carry the RSTs: an open session learns at once.
    let mut first = session("reset at the release");
    apply_ok(&lab, "db1", desired(2, false, &[]));
    let mut buf = [0u8; 16];
    let read = first.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the session was not reset at the release: {read:?}"
    );

    // Again, but this session's RST is lost on the way (the client's link is down
    // meanwhile), as when a reset cannot leave: the RST program answers its next segment.
    apply_ok(&lab, "db1", desired(3, true, &[("writer", 100)]));
    let mut session = session("reset by the RST program");
    let client_link = |state: &str| {
        lab.net
            .exec("client", &["ip", "link", "set", "eth0", state])
    };
    client_link("down");
    apply_ok(&lab, "db1", desired(4, false, &[]));
    client_link("up");
    // The link's neighbour entries went with it: the client still believes db1 has the
    // VIP (nobody has announced it elsewhere yet).
    pin_vip_to_db1(&lab);
    let refused = connect(&lab, &format!("{VIP}:3306"), T);
    assert_eq!(
        refused.as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::ConnectionRefused),
        "a SYN to the released VIP was not answered with RST: {refused:?}"
    );
    // The open session learns on its next segment that it is gone.
    let _ = session.write_all(b"select 1");
    let read = session.read(&mut buf);
    assert_eq!(
        read.as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::ConnectionReset),
        "the old session was not reset: {read:?}"
    );
    // db1's own address is untouched; another port of the VIP is not answered by us.
    assert!(
        connect(&lab, "192.0.2.11:3306", T).is_ok(),
        "db1's own address was touched"
    );
    let other = connect(&lab, &format!("{VIP}:3307"), Duration::from_secs(1));
    assert_ne!(
        other.as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::ConnectionRefused),
        "another port of the VIP was answered"
    );

    // The new owner takes the VIP and announces it: db1 stops answering for it. The client
    // is pinned to db1's MAC to see what db1 alone does now.
    // (db2 runs no MariaDB here: only its VIP and its gratuitous ARP matter.)
    lab.net
        .exec("client", &["ip", "neigh", "del", VIP, "dev", "eth0"]);
    let d = desired(5, true, &[("writer", 100)]);
    let _ = lab.with_link("db2", move |mut l| async move { l.apply(d, T).await });
    assert!(
        lab.net.addresses("db2").iter().any(|a| a.starts_with(VIP)),
        "db2 did not take the VIP:\n{}",
        lab.log("agent-db2.log")
    );
    // The old owner answers a little longer (clients processing the same broadcast a
    // moment later are covered), then nothing of ours answers for the VIP.
    std::thread::sleep(Duration::from_millis(300));
    pin_vip_to_db1(&lab);
    let after = connect(&lab, &format!("{VIP}:3306"), Duration::from_secs(1));
    lab.net
        .exec("client", &["ip", "neigh", "del", VIP, "dev", "eth0"]);
    assert_eq!(
        after.as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::TimedOut),
        "db1 still answered for the VIP after the new owner's ARP: {after:?}"
    );
}

/// The host that takes over from a vanished writer parks the VIP first: it answers TCP to
/// it with RST and announces it, without taking the address, so a client whose ARP entry
/// names the dead host's MAC is moved over and refused at once instead of waiting out its
/// connect timeout; taking the VIP for real ends the parking; an owner's announcement ends
/// it at the agent too.
#[test]
fn a_parked_vip_is_answered_with_rst_and_taking_it_ends_the_parking() {
    if !require_root("a_parked_vip_is_answered_with_rst_and_taking_it_ends_the_parking") {
        return;
    }
    let lab = Lab::new("park", "");
    lab.without_lease();
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let _db2 = Mariadb::start(&lab.net, "db2", 2, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    lab.agent("db2", "agent-db2.log");
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    let db2_mac = lab.net.node("db2").mac.clone();

    // The writer vanished: the client's entry for the VIP names a MAC nobody answers for.
    lab.net.exec(
        "client",
        &[
            "ip",
            "neigh",
            "replace",
            VIP,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "stale",
        ],
    );
    let lost = connect(&lab, &format!("{VIP}:3306"), Duration::from_millis(300));
    assert_eq!(
        lost.as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::TimedOut),
        "the vanished writer answered: {lost:?}"
    );

    // db2 parks it: its announcement moves the client, whose SYN is refused at once.
    let mut parked = desired(1, false, &[]);
    parked.parked = vec![vip];
    apply_ok(&lab, "db2", parked.clone());
    let moved = mmm_tests::netns::wait_for(T, || {
        (lab.net.neigh_mac("client", vip).as_deref() == Some(db2_mac.as_str())).then_some(())
    });
    assert!(
        moved.is_some(),
        "db2's announcement of the parked VIP did not reach the client"
    );
    let refused = connect(&lab, &format!("{VIP}:3306"), T);
    assert_eq!(
        refused.as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::ConnectionRefused),
        "a SYN to the parked VIP was not answered with RST: {refused:?}"
    );
    assert!(
        !lab.net.addresses("db2").iter().any(|a| a.starts_with(VIP)),
        "parking added the address"
    );
    // db2's own address is untouched.
    assert!(
        connect(&lab, "192.0.2.12:3306", T).is_ok(),
        "db2's own address was touched"
    );

    // db2 takes the VIP: the kernel answers for it, MariaDB greets through it.
    apply_ok(&lab, "db2", desired(2, true, &[("writer", 100)]));
    let mut s = connect(&lab, &format!("{VIP}:3306"), T)
        .unwrap_or_else(|e| panic!("no session through the VIP db2 took from parking: {e}"));
    s.set_read_timeout(Some(T)).unwrap();
    let mut greeting = [0u8; 512];
    assert!(
        s.read(&mut greeting).unwrap_or(0) > 0,
        "no greeting through the VIP"
    );
    drop(s);

    // Parked again (db2 gave the VIP back), then db1 takes it and announces it: db2's
    // agent sees the owner's ARP and parks it no more, though the desired state still says so.
    let mut again = desired(3, false, &[]);
    again.parked = vec![vip];
    apply_ok(&lab, "db2", again.clone());
    apply_ok(&lab, "db1", desired(4, true, &[("writer", 100)]));
    let ended = mmm_tests::netns::wait_for(T, || {
        lab.log("agent-db2.log")
            .contains("parked VIP announced by its owner")
            .then_some(())
    });
    assert!(
        ended.is_some(),
        "db2 went on parking the VIP db1 announced:\n{}",
        lab.log("agent-db2.log")
    );
    // The monitor's link re-sends the same desired state now and then: it parks nothing
    // again, and the client stays with the owner.
    apply_ok(&lab, "db2", again);
    std::thread::sleep(Duration::from_millis(200));
    let db1_mac = lab.net.node("db1").mac.clone();
    assert_eq!(
        lab.net.neigh_mac("client", vip).as_deref(),
        Some(db1_mac.as_str()),
        "a re-sent parking pulled the owner's clients away"
    );
    let mut s = connect(&lab, &format!("{VIP}:3306"), T)
        .unwrap_or_else(|e| panic!("no session through the VIP db1 took: {e}"));
    s.set_read_timeout(Some(T)).unwrap();
    assert!(
        s.read(&mut greeting).unwrap_or(0) > 0,
        "no greeting from db1"
    );
}
