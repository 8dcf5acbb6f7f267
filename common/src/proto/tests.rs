use super::*;
use crate::config::ClusterKey;
use crate::types::HostState;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn key(byte: u8) -> ClusterKey {
    ClusterKey::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
}

fn frames(bytes: &[u8]) -> Vec<RawFrame> {
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = fb.next_frame().unwrap() {
        out.push(f);
    }
    fb.finish().unwrap();
    out
}

fn one(bytes: &[u8]) -> RawFrame {
    let mut f = frames(bytes);
    assert_eq!(f.len(), 1, "expected exactly one frame");
    f.remove(0)
}

/// Runs a full handshake; returns (monitor session, agent session).
fn connect(
    monitor_key: &ClusterKey,
    agent_key: &ClusterKey,
) -> Result<(Session, Session), FrameError> {
    let (mh, hello) = MonitorHandshake::start(monitor_key, "mon", "db1", Term::NONE, [1; 16])?;
    let mut ah = AgentHandshake::new(agent_key, "db1", [2; 16]);
    let challenge = ah.on_hello(&one(&hello))?;
    let (mut monitor, auth) = mh.on_challenge(&one(&challenge))?;
    let (agent, welcome) = ah.on_auth(&one(&auth), "0.1.0")?;
    match monitor.opener.open(&one(&welcome))? {
        Message::Welcome(w) => assert_eq!(w.agent_version, "0.1.0"),
        other => panic!("expected Welcome, got {other:?}"),
    }
    assert_eq!(monitor.peer, "db1");
    assert_eq!(agent.peer, "mon");
    Ok((monitor, agent))
}

fn all_messages() -> Vec<Message> {
    let ip = Ipv4Addr::new(10, 0, 0, 100);
    vec![
        Message::Heartbeat(Heartbeat { epoch: 7 }),
        Message::AgentHeartbeat(AgentHeartbeat {
            applied_epoch: 7,
            uptime_s: 86_400,
            flags: hb_flags::READ_ONLY
                | hb_flags::IO_RUNNING
                | hb_flags::SQL_RUNNING
                | hb_flags::MYSQL_UP,
            probe: ProbeState::Watching,
            source: Some((Ipv4Addr::new(10, 0, 0, 11), 3306)),
            held_vips: vec![ip, Ipv4Addr::new(10, 0, 0, 101)],
        }),
        Message::Consent(Consent {
            echo: 42,
            known: Term {
                epoch: 9,
                rev: 1234,
            },
            vouch: Term::NONE,
            roster: vec![],
        }),
        Message::Consent(Consent {
            echo: u32::MAX,
            known: Term {
                epoch: 9,
                rev: 1234,
            },
            vouch: Term {
                epoch: 9,
                rev: 1234,
            },
            roster: vec!["mon1".into(), "mon2".into(), "mon3".into()],
        }),
        Message::DesiredState(DesiredState {
            epoch: 8,
            state: HostState::Online,
            active_master: "db1".into(),
            writable: true,
            roles: vec![
                ("writer".into(), ip),
                ("reader".into(), Ipv4Addr::new(10, 0, 0, 101)),
            ],
            parked: vec![],
        }),
        Message::DesiredState(DesiredState {
            epoch: 9,
            state: HostState::Online,
            active_master: String::new(),
            writable: false,
            roles: vec![("reader".into(), Ipv4Addr::new(10, 0, 0, 102))],
            parked: vec![ip],
        }),
        Message::Applied(Applied {
            epoch: 8,
            failures: vec!["adding 10.0.0.100/32 to eth9: No such device (os error 19)".into()],
        }),
        Message::StatusQuery,
        Message::StatusReport(StatusReport {
            applied_epoch: 8,
            uptime_s: 5,
            server: ServerKind::MariaDb,
            mysql_up: true,
            read_only: false,
            held_vips: vec![ip],
            replication: Some(Replication {
                source_host: "10.0.0.12".into(),
                source_port: 3306,
                io_running: true,
                sql_running: false,
                seconds_behind: None,
                last_error: "Error 1062: Duplicate entry".into(),
            }),
            gtid_executed: "0-1-100,1-2-5".into(),
            gtid_unreadable: String::new(),
            binlog: Some(("mysql-bin.000003".into(), 4567)),
            probe: ProbeState::Searching,
            fenced_reason: String::new(),
        }),
        Message::Action(ActionRequest {
            action: Action::SetReadOnly { on: true },
            deadline_ms: 1000,
        }),
        Message::Action(ActionRequest {
            action: Action::KillSessions,
            deadline_ms: 1000,
        }),
        Message::Action(ActionRequest {
            action: Action::CatchUp { target: None },
            deadline_ms: 10_000,
        }),
        Message::Action(ActionRequest {
            action: Action::CatchUp {
                target: Some(Position::Gtid("0-1-100".into())),
            },
            deadline_ms: 10_000,
        }),
        Message::Action(ActionRequest {
            action: Action::StopReplication,
            deadline_ms: 2000,
        }),
        Message::Action(ActionRequest {
            action: Action::StartReplication,
            deadline_ms: 2000,
        }),
        Message::Action(ActionRequest {
            action: Action::ChangeMaster {
                host: Ipv4Addr::new(10, 0, 0, 12),
                port: 3306,
                position: Position::FilePos {
                    file: "mysql-bin.000009".into(),
                    pos: 120,
                },
            },
            deadline_ms: 2000,
        }),
        Message::Action(ActionRequest {
            action: Action::ChangeMaster {
                host: Ipv4Addr::new(10, 0, 0, 11),
                port: 3306,
                position: Position::GtidSlavePos,
            },
            deadline_ms: 2000,
        }),
        Message::Action(ActionRequest {
            action: Action::StopIoThread {
                source: Ipv4Addr::new(10, 0, 0, 11),
            },
            deadline_ms: 2000,
        }),
        Message::Action(ActionRequest {
            action: Action::Demote,
            deadline_ms: 2000,
        }),
        Message::ActionResult(ActionResult {
            outcome: ActionOutcome::TimedOut,
            detail: "MASTER_GTID_WAIT('0-1-100', 10) returned -1".into(),
            position: Some(Position::Gtid("0-2-7".into())),
        }),
        Message::ProbeEvent(ProbeEvent {
            kind: ProbeEventKind::ProcessExit,
            tgid: 4242,
            port: 3306,
            ktime_ns: 123_456_789_000,
        }),
        Message::Error(ErrorMessage {
            message: "desired state names interface eth9, which does not exist".into(),
        }),
    ]
}

#[test]
fn every_message_round_trips_both_ways_through_an_authenticated_session() {
    let k = key(0xab);
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    for (i, msg) in all_messages().into_iter().enumerate() {
        let bytes = monitor.sealer.seal(&msg, i as u32, 0).unwrap();
        let f = one(&bytes);
        assert_eq!(f.header.request_id, i as u32);
        assert_eq!(agent.opener.open(&f).unwrap(), msg);
        let bytes = agent.sealer.seal(&msg, i as u32, FLAG_RESPONSE).unwrap();
        let f = one(&bytes);
        assert_eq!(f.header.flags, FLAG_RESPONSE);
        assert_eq!(monitor.opener.open(&f).unwrap(), msg);
    }
}

#[test]
fn heartbeats_fit_in_64_bytes_on_the_wire() {
    let k = key(1);
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    let to_agent = monitor
        .sealer
        .seal(&Message::Heartbeat(Heartbeat { epoch: u32::MAX }), 0, 0)
        .unwrap();
    assert!(
        to_agent.len() <= 64,
        "monitor heartbeat is {} bytes",
        to_agent.len()
    );
    let reply = Message::AgentHeartbeat(AgentHeartbeat {
        applied_epoch: u32::MAX,
        uptime_s: u32::MAX,
        flags: hb_flags::ALL,
        probe: ProbeState::Watching,
        source: Some((Ipv4Addr::new(10, 0, 0, 11), 3306)),
        // A master holding the writer VIP and two reader VIPs.
        held_vips: vec![
            Ipv4Addr::new(10, 0, 0, 100),
            Ipv4Addr::new(10, 0, 0, 101),
            Ipv4Addr::new(10, 0, 0, 102),
        ],
    });
    let to_monitor = agent.sealer.seal(&reply, 0, FLAG_RESPONSE).unwrap();
    assert!(
        to_monitor.len() <= 64,
        "agent heartbeat is {} bytes",
        to_monitor.len()
    );
}

#[test]
fn a_wrong_key_is_detected_at_the_first_frame_by_each_side() {
    let (_, hello) = MonitorHandshake::start(&key(1), "mon", "db1", Term::NONE, [1; 16]).unwrap();
    let mut agent = AgentHandshake::new(&key(2), "db1", [2; 16]);
    assert_eq!(agent.on_hello(&one(&hello)), Err(FrameError::WrongKey));

    // An impostor agent (wrong key) answering a real monitor.
    let (mh, hello) = MonitorHandshake::start(&key(1), "mon", "db1", Term::NONE, [1; 16]).unwrap();
    let hello = one(&hello);
    let mut impostor = AgentHandshake::new(&key(2), "db1", [2; 16]);
    // It cannot verify the Hello; even answering blindly it fails at the monitor.
    let _ = impostor.on_hello(&hello);
    let forged_challenge = {
        let mut fake = AgentHandshake::new(&key(2), "db1", [2; 16]);
        let (_, fake_hello) =
            MonitorHandshake::start(&key(2), "mon", "db1", Term::NONE, [1; 16]).unwrap();
        fake.on_hello(&one(&fake_hello)).unwrap()
    };
    assert_eq!(
        mh.on_challenge(&one(&forged_challenge)).unwrap_err(),
        FrameError::WrongKey
    );
}

#[test]
fn wrong_peer_and_stale_nonce_are_refused() {
    let k = key(3);
    let (_, hello) = MonitorHandshake::start(&k, "mon", "db2", Term::NONE, [1; 16]).unwrap();
    let mut agent = AgentHandshake::new(&k, "db1", [2; 16]);
    assert_eq!(
        agent.on_hello(&one(&hello)),
        Err(FrameError::WrongPeer {
            expected: "db1".into(),
            found: "db2".into()
        })
    );

    // A Challenge recorded from an earlier handshake echoes an old nonce.
    let (_, old_hello) = MonitorHandshake::start(&k, "mon", "db1", Term::NONE, [9; 16]).unwrap();
    let mut agent = AgentHandshake::new(&k, "db1", [2; 16]);
    let old_challenge = agent.on_hello(&one(&old_hello)).unwrap();
    let (mh, _) = MonitorHandshake::start(&k, "mon", "db1", Term::NONE, [1; 16]).unwrap();
    assert_eq!(
        mh.on_challenge(&one(&old_challenge)).unwrap_err(),
        FrameError::StaleNonce
    );
}

#[test]
fn forged_replayed_and_reordered_frames_are_told_apart() {
    let k = key(4);
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    let hb = |epoch| Message::Heartbeat(Heartbeat { epoch });
    let f1 = one(&monitor.sealer.seal(&hb(1), 0, 0).unwrap());
    let f2 = one(&monitor.sealer.seal(&hb(2), 0, 0).unwrap());
    let f3 = one(&monitor.sealer.seal(&hb(3), 0, 0).unwrap());

    let mut forged = f1.clone();
    let n = forged.bytes.len();
    forged.bytes[n - MAC_LEN - 1] ^= 0x01; // flip a payload bit
    assert_eq!(
        agent.opener.open(&forged),
        Err(FrameError::Forged { seq: f1.header.seq })
    );

    assert_eq!(agent.opener.open(&f1), Ok(hb(1)));
    assert_eq!(
        agent.opener.open(&f1),
        Err(FrameError::Replayed {
            seq: f1.header.seq,
            expected: f2.header.seq
        })
    );
    assert_eq!(
        agent.opener.open(&f3),
        Err(FrameError::Reordered {
            seq: f3.header.seq,
            expected: f2.header.seq
        })
    );
    assert_eq!(agent.opener.open(&f2), Ok(hb(2)));
}

#[test]
fn frames_of_an_earlier_connection_do_not_verify_in_a_new_one() {
    let k = key(5);
    let (mut old_monitor, _) = connect(&k, &k).unwrap();
    let old = one(&old_monitor
        .sealer
        .seal(&Message::Heartbeat(Heartbeat { epoch: 1 }), 0, 0)
        .unwrap());
    // A new connection with fresh nonces on both sides.
    let (mh, hello) = MonitorHandshake::start(&k, "mon", "db1", Term::NONE, [7; 16]).unwrap();
    let mut ah = AgentHandshake::new(&k, "db1", [8; 16]);
    let challenge = ah.on_hello(&one(&hello)).unwrap();
    let (_, auth) = mh.on_challenge(&one(&challenge)).unwrap();
    let (mut agent, _) = ah.on_auth(&one(&auth), "0.1.0").unwrap();
    assert!(matches!(
        agent.opener.open(&old),
        Err(FrameError::Forged { .. })
    ));
}

#[test]
fn header_errors_are_distinct_and_come_before_the_payload_is_read() {
    let k = key(6);
    let (mut monitor, _) = connect(&k, &k).unwrap();
    let good = monitor
        .sealer
        .seal(&Message::Heartbeat(Heartbeat { epoch: 1 }), 0, 0)
        .unwrap();
    let first_error = |bytes: &[u8]| {
        let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        fb.push(&bytes[..frame::HEADER_LEN]);
        fb.next_frame().unwrap_err()
    };
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(
        first_error(&b),
        FrameError::BadMagic {
            found: [b'X', b'M']
        }
    );
    let mut b = good.clone();
    b[2] = 9;
    assert_eq!(
        first_error(&b),
        FrameError::UnsupportedVersion {
            found: 9,
            supported: crate::proto::frame::VERSION
        }
    );
    let mut b = good.clone();
    b[3] = 0x66;
    assert_eq!(first_error(&b), FrameError::UnknownType { found: 0x66 });
    let mut b = good.clone();
    b[4] = 0x80;
    assert_eq!(
        first_error(&b),
        FrameError::ReservedBits {
            flags: 0x80,
            reserved: 0
        }
    );
    // Every length the header can carry is within the shared limit; a receiver with a
    // tighter bound of its own refuses a longer frame at its header.
    let mut b = good.clone();
    b[6..8].copy_from_slice(&60_000u16.to_be_bytes());
    let mut fb = FrameBuffer::new(1024);
    fb.push(&b[..frame::HEADER_LEN]);
    assert_eq!(
        fb.next_frame().unwrap_err(),
        FrameError::Oversized {
            len: 60_000,
            max: 1024
        }
    );
}

#[test]
fn a_stream_cut_inside_a_frame_is_truncated_and_split_reads_reassemble() {
    let k = key(7);
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    let mut stream = Vec::new();
    for epoch in 0..3 {
        monitor
            .sealer
            .seal_into(&Message::Heartbeat(Heartbeat { epoch }), 0, 0, &mut stream)
            .unwrap();
    }
    // Byte-at-a-time delivery yields the same frames.
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    let mut got = Vec::new();
    for b in &stream {
        fb.push(std::slice::from_ref(b));
        while let Some(f) = fb.next_frame().unwrap() {
            got.push(agent.opener.open(&f).unwrap());
        }
    }
    assert_eq!(got.len(), 3);
    assert_eq!(fb.finish(), Ok(()));

    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(&stream[..stream.len() - 5]);
    while fb.next_frame().unwrap().is_some() {}
    let frame_len = stream.len() / 3;
    assert_eq!(
        fb.finish(),
        Err(FrameError::Truncated {
            needed: frame_len,
            have: frame_len - 5
        })
    );
}

#[test]
fn messages_out_of_protocol_order_are_refused() {
    let k = key(8);
    let (mut monitor, _) = connect(&k, &k).unwrap();
    let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
    // A session frame presented as the opening Hello: wrong key (handshake key differs).
    let hb = monitor
        .sealer
        .seal(&Message::Heartbeat(Heartbeat { epoch: 1 }), 0, 0)
        .unwrap();
    assert_eq!(ah.on_hello(&one(&hb)), Err(FrameError::WrongKey));
}

#[test]
fn encoding_refuses_what_does_not_fit_and_leaves_the_buffer_clean() {
    let k = key(9);
    let (mut monitor, _) = connect(&k, &k).unwrap();
    let mut out = vec![1, 2, 3];
    let msg = Message::DesiredState(DesiredState {
        epoch: 1,
        state: HostState::Online,
        active_master: "x".repeat(300),
        writable: false,
        roles: vec![],
        parked: vec![],
    });
    let err = monitor.sealer.seal_into(&msg, 0, 0, &mut out).unwrap_err();
    assert!(
        err.to_string().contains("active_master is 300 bytes"),
        "{err}"
    );
    assert_eq!(out, [1, 2, 3]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let k = key(10);
        let mut agent = AgentHandshake::new(&k, "db1", [2; 16]);
        let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        fb.push(&bytes);
        while let Ok(Some(f)) = fb.next_frame() {
            let _ = agent.on_hello(&f);
        }
        let _ = fb.finish();
    }

    #[test]
    fn arbitrary_payloads_never_panic_any_message_decoder(t in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Some(mt) = MessageType::from_u8(t) {
            let _ = Message::decode_payload(mt, &payload);
        }
    }

    #[test]
    fn mutated_valid_frames_are_rejected_or_decoded_never_panic(index in 0usize..64, bit in 0u8..8, which in 0usize..19) {
        let k = key(11);
        let (mut monitor, mut agent) = connect(&k, &k).unwrap();
        let msgs = all_messages();
        let msg = &msgs[which % msgs.len()];
        let mut bytes = monitor.sealer.seal(msg, 1, 0).unwrap();
        let i = index % bytes.len();
        bytes[i] ^= 1 << bit;
        let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        fb.push(&bytes);
        // Any single bit flip must be caught: by the header checks, or by the MAC.
        match fb.next_frame() {
            Err(_) | Ok(None) => {}
            Ok(Some(f)) => prop_assert!(agent.opener.open(&f).is_err()),
        }
    }

    #[test]
    fn agent_heartbeats_round_trip(epoch in any::<u32>(), uptime in any::<u32>(), flags in 0u8..=hb_flags::ALL,
                                   ip in any::<[u8; 4]>(), port in any::<u16>(), vips in proptest::collection::vec(any::<[u8; 4]>(), 0..8)) {
        let k = key(12);
        let (mut monitor, mut agent) = connect(&k, &k).unwrap();
        let ip = Ipv4Addr::from(ip);
        let msg = Message::AgentHeartbeat(AgentHeartbeat {
            applied_epoch: epoch,
            uptime_s: uptime,
            flags,
            probe: ProbeState::Off,
            source: (!ip.is_unspecified()).then_some((ip, port)),
            held_vips: vips.into_iter().map(Ipv4Addr::from).collect(),
        });
        let f = one(&agent.sealer.seal(&msg, 0, FLAG_RESPONSE).unwrap());
        prop_assert_eq!(monitor.opener.open(&f).unwrap(), msg);
    }
}

/// A status report with every optional part filled, around the given GTID set.
fn status_with_gtid(gtid: String) -> Message {
    Message::StatusReport(StatusReport {
        applied_epoch: 1,
        uptime_s: 1,
        server: ServerKind::MariaDb,
        mysql_up: true,
        read_only: true,
        held_vips: vec![Ipv4Addr::new(10, 0, 0, 101); 16],
        replication: Some(Replication {
            source_host: "10.0.0.11".into(),
            source_port: 3306,
            io_running: true,
            sql_running: true,
            seconds_behind: Some(0),
            last_error: String::new(),
        }),
        gtid_executed: gtid,
        gtid_unreadable: String::new(),
        binlog: Some(("mysql-bin.000123".into(), 123_456_789)),
        probe: ProbeState::Watching,
        fenced_reason: String::new(),
    })
}

#[test]
fn a_200_domain_gtid_set_round_trips_a_larger_one_is_carried_and_only_an_oversized_one_refused() {
    let k = key(13);
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    // A binlog state: 200 domains, written by each of four servers in turn, 12-digit
    // sequence numbers.
    let set: Vec<String> = (0..200u32)
        .flat_map(|d| {
            (1..=4u32)
                .map(move |s| format!("{d}-{}-{}", 1000 + s, 123_456_789_012u64 + u64::from(d)))
        })
        .collect();
    let gtid = set.join(",");
    assert!(
        gtid.len() > 16 * 1024,
        "the old receive limit would drop it"
    );
    crate::gtid::GtidSet::parse(&gtid).unwrap();
    let msg = status_with_gtid(gtid);
    let f = one(&agent.sealer.seal(&msg, 3, FLAG_RESPONSE).unwrap());
    assert_eq!(monitor.opener.open(&f).unwrap(), msg);

    // A set larger than one frame (issue 22: a server that went through thousands of
    // failovers) is carried in several frames, the first ones flagged CONTINUED, and
    // comes out whole with the last; a heartbeat sealed after it still verifies.
    let set = "0-1-1,".repeat(30_000);
    let huge = status_with_gtid(set.clone());
    let bytes = agent.sealer.seal(&huge, 4, FLAG_RESPONSE).unwrap();
    let parts = frames(&bytes);
    assert_eq!(parts.len(), 3, "180 KB in frames of at most 64 KiB");
    for (i, f) in parts.iter().enumerate() {
        assert_eq!(f.header.msg_type, MessageType::StatusReport);
        assert_eq!(f.header.request_id, 4);
        let continued = if i < 2 { FLAG_CONTINUED } else { 0 };
        assert_eq!(f.header.flags, FLAG_RESPONSE | continued, "frame {i}");
        assert!(f.payload().len() <= MAX_PAYLOAD);
    }
    assert_eq!(monitor.opener.open_part(&parts[0]).unwrap(), None);
    assert_eq!(monitor.opener.open_part(&parts[1]).unwrap(), None);
    assert_eq!(monitor.opener.open_part(&parts[2]).unwrap(), Some(huge));
    let next = one(&agent.sealer.seal(&hb(9), 5, 0).unwrap());
    assert_eq!(monitor.opener.open_part(&next).unwrap(), Some(hb(9)));

    // A set over the message limit: refused where it is sealed, naming the message and
    // its size, and no sequence number is used up (the next frame still verifies).
    let giant = status_with_gtid("0-1-1,".repeat(MAX_MESSAGE / 6 + 1));
    let Err(err) = agent.sealer.seal(&giant, 6, FLAG_RESPONSE) else {
        panic!("a message over the limit was sealed");
    };
    match &err {
        FrameError::TooLarge {
            msg_type: MessageType::StatusReport,
            max: MAX_MESSAGE,
            ..
        }
        | FrameError::Encode {
            msg_type: MessageType::StatusReport,
            ..
        } => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("StatusReport"), "{err}");
    let next = one(&agent.sealer.seal(&hb(10), 7, 0).unwrap());
    assert_eq!(monitor.opener.open(&next).unwrap(), hb(10));

    // What an agent sends instead: the same report with the set marked unknown, which
    // the monitor refuses to compare, naming the size.
    let Message::StatusReport(mut fitted) = giant else {
        unreachable!()
    };
    fitted.fit_message();
    assert!(fitted.gtid_executed.is_empty());
    let why = fitted.gtid_set().unwrap_err().to_string();
    assert!(why.contains("over the message limit"), "{why}");
    let fitted = Message::StatusReport(fitted);
    let f = one(&agent.sealer.seal(&fitted, 8, FLAG_RESPONSE).unwrap());
    assert_eq!(monitor.opener.open(&f).unwrap(), fitted);
    // A report that fits, even in several frames, is left alone.
    let Message::StatusReport(mut big) = status_with_gtid(set) else {
        unreachable!()
    };
    let before = big.clone();
    big.fit_message();
    assert_eq!(big, before);
}

#[test]
fn a_continued_message_is_never_mixed_with_another() {
    let k = key(14);
    // The handshake's nonces are fixed here, so two connections share their keys: the
    // second one's frames verify in the first, which lets a test put a well-sealed frame
    // of another message where the rest of a continued one belongs.
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    let (_, mut other) = connect(&k, &k).unwrap();
    let big = status_with_gtid("0-1-1,".repeat(12_000));
    let parts = frames(&agent.sealer.seal(&big, 4, FLAG_RESPONSE).unwrap());
    assert_eq!(parts.len(), 2);
    let _first = other.sealer.seal(&hb(1), 5, 0).unwrap();
    let intruder = one(&other.sealer.seal(&hb(2), 6, 0).unwrap());
    assert_eq!(monitor.opener.open_part(&parts[0]).unwrap(), None);
    let err = monitor.opener.open_part(&intruder).unwrap_err();
    assert!(
        matches!(&err, FrameError::Malformed { reason, .. } if reason.contains("came inside")),
        "{err:?}"
    );
    // The handshake's `open` takes no message in pieces.
    let (mut monitor, mut agent) = connect(&k, &k).unwrap();
    let parts = frames(&agent.sealer.seal(&big, 4, FLAG_RESPONSE).unwrap());
    let err = monitor.opener.open(&parts[0]).unwrap_err();
    assert!(matches!(err, FrameError::Unexpected { .. }), "{err:?}");
}

fn hb(epoch: u32) -> Message {
    Message::Heartbeat(Heartbeat { epoch })
}

/// The frames of one handshake between a monitor and an agent sharing key `k`.
struct HandshakeFrames {
    hello: Vec<u8>,
    challenge: Vec<u8>,
    auth: Vec<u8>,
    welcome: Vec<u8>,
}

fn handshake_frames(k: &ClusterKey) -> HandshakeFrames {
    let (mh, hello) = MonitorHandshake::start(k, "mon", "db1", Term::NONE, [1; 16]).unwrap();
    let mut ah = AgentHandshake::new(k, "db1", [2; 16]);
    let challenge = ah.on_hello(&one(&hello)).unwrap();
    let (_, auth) = mh.on_challenge(&one(&challenge)).unwrap();
    let (_, welcome) = ah.on_auth(&one(&auth), "0.1.0").unwrap();
    HandshakeFrames {
        hello,
        challenge,
        auth,
        welcome,
    }
}

/// Feeds `bytes` to a fresh frame splitter: the frames it yields before the first error.
fn split(bytes: &[u8]) -> Vec<RawFrame> {
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = fb.next_frame() {
        out.push(f);
    }
    let _ = fb.finish();
    out
}

/// Which handshake step a property test disturbs.
#[derive(Debug, Clone, Copy)]
enum Step {
    Hello,
    Challenge,
    Auth,
    Welcome,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Hello),
        Just(Step::Challenge),
        Just(Step::Auth),
        Just(Step::Welcome)
    ]
}

/// Runs one handshake in which the frame of `step` is replaced by `replace(frame)`;
/// every other frame is the genuine one. Returns whether the handshake completed.
/// Never panics on any input: that is the property.
fn handshake_with(step: Step, replace: impl FnOnce(Vec<u8>) -> Vec<u8>) -> bool {
    let k = key(14);
    let (mh, hello) = MonitorHandshake::start(&k, "mon", "db1", Term::NONE, [1; 16]).unwrap();
    let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
    let mut replace = Some(replace);
    let mut at = |s: Step, bytes: Vec<u8>| -> Vec<RawFrame> {
        if std::mem::discriminant(&s) == std::mem::discriminant(&step) {
            split(&(replace.take().expect("one step"))(bytes))
        } else {
            split(&bytes)
        }
    };
    // Each side must act on the first frame it receives and refuse anything it cannot
    // verify; a stream that yields no frame leaves the handshake unfinished.
    let Some(f) = at(Step::Hello, hello).into_iter().next() else {
        return false;
    };
    let Ok(challenge) = ah.on_hello(&f) else {
        return false;
    };
    let Some(f) = at(Step::Challenge, challenge).into_iter().next() else {
        return false;
    };
    let Ok((mut monitor, auth)) = mh.on_challenge(&f) else {
        return false;
    };
    let Some(f) = at(Step::Auth, auth).into_iter().next() else {
        return false;
    };
    let Ok((_, welcome)) = ah.on_auth(&f, "0.1.0") else {
        return false;
    };
    let Some(f) = at(Step::Welcome, welcome).into_iter().next() else {
        return false;
    };
    matches!(monitor.opener.open(&f), Ok(Message::Welcome(_)))
}

#[test]
fn the_genuine_handshake_completes_through_the_property_harness() {
    for s in [Step::Hello, Step::Challenge, Step::Auth, Step::Welcome] {
        assert!(handshake_with(s, |b| b));
    }
}

#[test]
fn handshake_frames_replayed_at_another_step_are_refused() {
    let k = key(14);
    let f = handshake_frames(&k);
    // Each genuine frame of the same connection, presented where another is expected.
    for (s, other) in [
        (Step::Hello, &f.challenge),
        (Step::Hello, &f.auth),
        (Step::Challenge, &f.hello),
        (Step::Challenge, &f.welcome),
        (Step::Auth, &f.hello),
        (Step::Auth, &f.challenge),
        (Step::Welcome, &f.auth),
        (Step::Welcome, &f.challenge),
    ] {
        assert!(!handshake_with(s, |_| other.clone()), "{s:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_at_any_handshake_step_never_panic_nor_complete(
        s in step(),
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        // Without the key no byte string can stand in for a handshake frame.
        prop_assert!(!handshake_with(s, |_| bytes));
    }

    #[test]
    fn a_header_then_arbitrary_bytes_at_any_handshake_step_never_complete(
        s in step(),
        t in prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(4u8), Just(0x7f)],
        body in proptest::collection::vec(any::<u8>(), 0..200),
        seq in 0u32..3,
    ) {
        // A well-formed header, so the bytes reach the MAC check and the decoders.
        let len = body.len().saturating_sub(MAC_LEN) as u16;
        let header = Header { msg_type: MessageType::from_u8(t).unwrap(), flags: 0, len, request_id: 0, seq };
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(&body);
        prop_assert!(!handshake_with(s, |_| frame));
    }

    #[test]
    fn a_tampered_byte_in_any_handshake_frame_is_always_rejected(
        s in step(),
        index in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let completed = handshake_with(s, |mut b| {
            let i = index % b.len();
            b[i] ^= xor;
            b
        });
        prop_assert!(!completed);
    }

    #[test]
    fn handshake_frames_cut_short_never_complete(s in step(), keep in any::<usize>()) {
        let completed = handshake_with(s, |mut b| {
            b.truncate(keep % b.len());
            b
        });
        prop_assert!(!completed);
    }

    #[test]
    fn a_hello_under_the_right_key_with_any_names_never_panics(
        monitor in ".{0,40}",
        agent in prop_oneof![Just("db1".to_string()), ".{0,40}"],
        nonce in any::<[u8; 16]>(),
    ) {
        let k = key(15);
        let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
        match MonitorHandshake::start(&k, &monitor, &agent, Term::NONE, nonce) {
            // Names that do not fit are refused by the sender.
            Err(e) => prop_assert!(matches!(e, FrameError::Encode { .. }), "{e}"),
            Ok((_, hello)) => {
                let r = ah.on_hello(&one(&hello));
                if agent == "db1" {
                    prop_assert!(r.is_ok());
                } else {
                    prop_assert!(matches!(r, Err(FrameError::WrongPeer { .. })), "{r:?}");
                }
            }
        }
    }
}

/// The term travels in the Hello and is part of the session keys: the agent learns it
/// before answering, and a frame sealed in one term's session does not open in another's,
/// nor in a session of the same revision in another epoch (a wiped etcd counts revisions
/// again from 1: the revision alone would let a frame cross over).
#[test]
fn the_term_reaches_the_agent_and_binds_every_frame() {
    let k = key(1);
    let run = |term: Term| {
        let (mh, hello) = MonitorHandshake::start(&k, "mon", "db1", term, [1; 16]).unwrap();
        let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
        let challenge = ah.on_hello(&one(&hello)).unwrap();
        assert_eq!(ah.peer(), Some(("mon", term)));
        let (monitor, auth) = mh.on_challenge(&one(&challenge)).unwrap();
        let (agent, _) = ah.on_auth(&one(&auth), "0.1.0").unwrap();
        assert_eq!((monitor.term, agent.term), (term, term));
        (monitor, agent)
    };
    let t = |epoch, rev| Term { epoch, rev };
    let (mut m7, _) = run(t(1, 7));
    let frame = m7
        .sealer
        .seal(&Message::Heartbeat(Heartbeat { epoch: 1 }), 0, 0)
        .unwrap();
    let (_, mut a8) = run(t(1, 8));
    assert!(
        a8.opener.open(&one(&frame)).is_err(),
        "a frame of term 7 must not verify in a session of term 8 (same nonces)"
    );
    let (_, mut other_epoch) = run(t(2, 7));
    assert!(
        other_epoch.opener.open(&one(&frame)).is_err(),
        "a frame of term 7 must not verify in a session of term 7 of another epoch"
    );
    let (_, mut same) = run(t(1, 7));
    assert!(same.opener.open(&one(&frame)).is_ok(), "the same term");
}

/// The Hello byte for byte (protocol version 8; its layout is version 6's): an agent and a monitor built apart agree
/// on where the term's revision and epoch are, and a version-5 peer is refused by the
/// version byte, never misread.
#[test]
fn the_hello_is_laid_out_byte_for_byte() {
    let term = Term {
        epoch: 0x0102_0304_0506_0708,
        rev: 0x1112_1314_1516_1718,
    };
    let (_, hello) = MonitorHandshake::start(&key(1), "mon", "db1", term, [0xaa; 16]).unwrap();
    let mut expected = vec![b'M', b'M', 8, MessageType::Hello as u8, 0, 0];
    let payload_len = 16 + 1 + 3 + 1 + 3 + 8 + 8;
    expected.extend_from_slice(&(payload_len as u16).to_be_bytes());
    expected.extend_from_slice(&[0, 0, 0, 0]); // request id
    expected.extend_from_slice(&[0, 0, 0, 0]); // seq
    expected.extend_from_slice(&[0xaa; 16]);
    expected.extend_from_slice(&[3, b'm', b'o', b'n', 3, b'd', b'b', b'1']);
    expected.extend_from_slice(&[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(hello.len(), expected.len() + MAC_LEN);
    assert_eq!(&hello[..expected.len()], &expected[..]);
    let mut ah = AgentHandshake::new(&key(1), "db1", [2; 16]);
    ah.on_hello(&one(&hello)).unwrap();
    assert_eq!(ah.peer(), Some(("mon", term)));
    // A Hello one byte shorter (a version-5 Hello with the version byte patched) is
    // malformed, not a term without an epoch.
    let short = Message::decode_payload(
        MessageType::Hello,
        &expected[HEADER_LEN..expected.len() - 8],
    );
    assert!(short.is_err(), "{short:?}");
}

/// A refusal decided after the Hello (the agent judged the term) still reaches the
/// monitor as the reason, not as a reordered frame.
#[test]
fn a_reject_after_the_hello_is_read_as_the_reason() {
    let k = key(1);
    let (mh, hello) =
        MonitorHandshake::start(&k, "mon", "db1", Term { epoch: 1, rev: 3 }, [1; 16]).unwrap();
    let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
    let _challenge_never_sent = ah.on_hello(&one(&hello)).unwrap();
    let refusal = ah.reject("term 3 is over").unwrap();
    match mh.on_challenge(&one(&refusal)) {
        Err(FrameError::PeerRejected { message }) => assert_eq!(message, "term 3 is over"),
        other => panic!("expected the refusal, got {other:?}"),
    }
}

/// A Consent byte for byte (protocol version 7): the echoed heartbeat request id, the
/// term the monitor knows and the vouching term (revision, epoch each) and the roster,
/// each name with its length.
#[test]
fn a_consent_is_laid_out_byte_for_byte() {
    let m = Message::Consent(Consent {
        echo: 0x0a0b_0c0d,
        known: Term {
            epoch: 0x2122_2324_2526_2728,
            rev: 0x3132_3334_3536_3738,
        },
        vouch: Term {
            epoch: 0x0102_0304_0506_0708,
            rev: 0x1112_1314_1516_1718,
        },
        roster: vec!["m1".into(), "mon2".into()],
    });
    let mut payload = Vec::new();
    m.encode_payload(&mut payload).unwrap();
    let mut expected = vec![0x0a, 0x0b, 0x0c, 0x0d];
    expected.extend_from_slice(&[0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38]);
    expected.extend_from_slice(&[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]);
    expected.extend_from_slice(&[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expected.extend_from_slice(&[2, 2, b'm', b'1', 4, b'm', b'o', b'n', b'2']);
    assert_eq!(payload, expected);
    assert_eq!(
        Message::decode_payload(MessageType::Consent, &payload).unwrap(),
        m
    );
    // A witness is never a term an agent could enter.
    assert!(Term::WITNESS.is_witness() && !Term::NONE.is_witness());
    // Cut anywhere, it is malformed, never a shorter roster.
    for cut in 0..expected.len() {
        assert!(Message::decode_payload(MessageType::Consent, &expected[..cut]).is_err());
    }
}
