//! The RST answer for a released VIP, packet level, in namespaces: after db1 releases the
//! writer VIP, a client's SYN to it is refused at once (not left to its 1 s
//! retransmission), an open session through it is reset on its next segment, db1's own
//! address and other ports are untouched, and once the new owner's gratuitous ARP has been
//! seen nothing of db1's answers for the VIP any more. Needs root; in CI it must run.

use mmm_tests::lab::{desired, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const VIP: &str = "192.0.2.100";

fn apply_ok(lab: &Lab, host: &str, d: mmm_common::proto::DesiredState) {
    let applied = lab
        .with_link(host, move |mut l| async move { l.apply(d, T).await })
        .unwrap_or_else(|e| panic!("applying on {host}: {e}"));
    assert!(
        applied.failures.is_empty(),
        "{host}: {:?}",
        applied.failures
    );
}

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
    let text = std::fs::read_to_string(&lab.config).unwrap().replacen(
        "fencing = \"lease\"",
        "fencing = \"none\"",
        1,
    );
    std::fs::write(&lab.config, text).unwrap();
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
