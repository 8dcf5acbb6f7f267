//! Version negotiation, byte for byte: this release and the previous one (protocol 8,
//! tag v0.1.0) must understand each other in both roles, and a later monitor's Hello
//! (its layout is frozen) must be answered. A child of `session`, so that a test can seal
//! a frame in any version, as a peer of another release would.

use super::*;
use crate::proto::frame::{FrameBuffer, DEFAULT_MAX_PAYLOAD, MIN_VERSION, VERSION};
use crate::proto::message::{Applied, Heartbeat, Hello};
use crate::proto::FLAG_RESPONSE;

fn key(byte: u8) -> ClusterKey {
    ClusterKey::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
}

fn one(bytes: &[u8]) -> RawFrame {
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(bytes);
    let frame = fb.next_frame().unwrap().expect("a whole frame");
    assert_eq!(fb.buffered(), 0, "expected exactly one frame");
    frame
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One handshake and one exchange of release 0.1.0 (protocol 8), recorded from its code
/// with the key 0x42.., the monitor's nonce 0x01.., the agent's 0x02.., term (epoch 3,
/// revision 7): the monitor's Heartbeat{epoch 5} as request 1 and the agent's
/// Applied{epoch 5} answering it.
mod release_0_1_0 {
    pub const HELLO: &str = "4d4d080100000028000000000000000001010101010101010101010101010101036d6f6e03646231000000000000000700000000000000030585f9863598a35449ff64d34016b4a6";
    pub const CHALLENGE: &str = "4d4d08020000002400000000000000000101010101010101010101010101010102020202020202020202020202020202036462319ea0d3cc6737b0e0722883c701b75417";
    pub const AUTH: &str = "4d4d080300000010000000000000000102020202020202020202020202020202b7ad14fa2241181972812f648e3dcb2a";
    pub const WELCOME: &str =
        "4d4d080400000006000000000000000105302e312e30cb93bbd3db0d69fbf51f587a7b5f04c5";
    pub const HEARTBEAT: &str =
        "4d4d081000000004000000010000000200000005f7fb3204e9300c6bee9485e3b9ce1657";
    pub const APPLIED: &str =
        "4d4d08210100000500000001000000020000000500b2470713981af61645860c959b2cb99e";
}

const TERM: Term = Term { epoch: 3, rev: 7 };

fn heartbeat() -> Message {
    Message::Heartbeat(Heartbeat { epoch: 5 })
}

fn applied() -> Message {
    Message::Applied(Applied {
        epoch: 5,
        failures: vec![],
    })
}

/// This release's monitor, retrying in version 8, against the previous release's agent:
/// every frame it sends is the old monitor's, byte for byte, and it reads every frame the
/// old agent sent. The first Hello, in version 9, is what the old agent drops: it refuses
/// a header whose version is not 8.
#[test]
fn a_monitor_of_this_release_speaks_8_with_an_agent_of_the_previous_one() {
    use release_0_1_0 as old;
    let k = key(0x42);
    let (_, first) = MonitorHandshake::start(&k, "mon", "db1", TERM, [1; 16]).unwrap();
    assert_eq!(first[2], VERSION);
    assert_ne!(
        first[2], 8,
        "the old agent must drop it, so that the monitor retries"
    );

    let (mh, hello) =
        MonitorHandshake::start_in(&k, "mon", "db1", TERM, [1; 16], VERSION - 1).unwrap();
    assert_eq!(hello, unhex(old::HELLO));
    let (mut monitor, auth) = mh.on_challenge(&one(&unhex(old::CHALLENGE))).unwrap();
    assert_eq!(auth, unhex(old::AUTH));
    assert_eq!(monitor.version, 8);
    assert_eq!(
        monitor.opener.open(&one(&unhex(old::WELCOME))).unwrap(),
        Message::Welcome(Welcome {
            agent_version: "0.1.0".into()
        })
    );
    assert_eq!(
        monitor.sealer.seal(&heartbeat(), 1, 0).unwrap(),
        unhex(old::HEARTBEAT)
    );
    assert_eq!(
        monitor.opener.open(&one(&unhex(old::APPLIED))).unwrap(),
        applied()
    );
}

/// This release's agent answers the previous release's monitor (a Hello of version 8)
/// in version 8: every frame is the old agent's, byte for byte.
#[test]
fn an_agent_of_this_release_answers_a_version_8_hello_in_8() {
    use release_0_1_0 as old;
    let mut ah = AgentHandshake::new(&key(0x42), "db1", [2; 16]);
    let challenge = ah.on_hello(&one(&unhex(old::HELLO))).unwrap();
    assert_eq!(challenge, unhex(old::CHALLENGE));
    assert_eq!(ah.peer(), Some(("mon", TERM)));
    let (mut agent, welcome) = ah.on_auth(&one(&unhex(old::AUTH)), "0.1.0").unwrap();
    assert_eq!(welcome, unhex(old::WELCOME));
    assert_eq!(agent.version, 8);
    assert_eq!(
        agent.opener.open(&one(&unhex(old::HEARTBEAT))).unwrap(),
        heartbeat()
    );
    assert_eq!(
        agent.sealer.seal(&applied(), 1, FLAG_RESPONSE).unwrap(),
        unhex(old::APPLIED)
    );
}

/// Both of this release: version 9 from the Hello on. An agent standing in for one that
/// speaks only 8 answers the same Hello in 8, and the monitor follows.
#[test]
fn the_session_speaks_the_lower_of_the_two_versions() {
    let k = key(1);
    for (agent_max, expected) in [(VERSION, VERSION), (MIN_VERSION, MIN_VERSION)] {
        let (mh, hello) = MonitorHandshake::start(&k, "mon", "db1", TERM, [1; 16]).unwrap();
        let mut ah = AgentHandshake::speaking(&k, "db1", [2; 16], agent_max);
        let challenge = ah.on_hello(&one(&hello)).unwrap();
        assert_eq!(challenge[2], expected);
        let (mut monitor, auth) = mh.on_challenge(&one(&challenge)).unwrap();
        assert_eq!(auth[2], expected);
        let (mut agent, welcome) = ah.on_auth(&one(&auth), "0.2.0").unwrap();
        assert_eq!((monitor.version, agent.version), (expected, expected));
        assert!(matches!(
            monitor.opener.open(&one(&welcome)),
            Ok(Message::Welcome(_))
        ));
        let hb = monitor.sealer.seal(&heartbeat(), 1, 0).unwrap();
        assert_eq!(hb[2], expected);
        assert_eq!(agent.opener.open(&one(&hb)).unwrap(), heartbeat());
    }
}

/// A monitor of a later release (version 10) sends a Hello of the frozen layout: the
/// frame passes the header checks, and the agent answers in its own newest version.
/// Any other frame of version 10 is refused at its header.
#[test]
fn a_later_hello_is_answered_in_this_sides_newest_version() {
    let k = key(2);
    let later = VERSION + 1;
    let (mut mh, _) = MonitorHandshake::start(&k, "mon", "db1", TERM, [1; 16]).unwrap();
    mh.version = later;
    let hello = Sealer::new(derive(HS_M2A, &k, None), later)
        .seal(
            &Message::Hello(Hello {
                nonce: [1; 16],
                monitor: "mon".into(),
                agent: "db1".into(),
                term: TERM,
            }),
            0,
            0,
        )
        .unwrap();
    let hello = one(&hello);
    assert_eq!(hello.header.version, later);
    let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
    let challenge = ah.on_hello(&hello).unwrap();
    assert_eq!(challenge[2], VERSION);
    let (monitor, auth) = mh.on_challenge(&one(&challenge)).unwrap();
    assert_eq!(monitor.version, VERSION);
    let (agent, _) = ah.on_auth(&one(&auth), "0.2.0").unwrap();
    assert_eq!(agent.version, VERSION);

    let mut not_a_hello = Sealer::new(derive(HS_A2M, &k, None), later)
        .seal(&heartbeat(), 0, 0)
        .unwrap();
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(&not_a_hello);
    assert_eq!(
        fb.next_frame().unwrap_err(),
        FrameError::UnsupportedVersion {
            found: later,
            min: MIN_VERSION,
            max: VERSION
        }
    );
    // Nor is a Hello older than the oldest version spoken read.
    not_a_hello[2] = MIN_VERSION - 1;
    not_a_hello[3] = MessageType::Hello as u8;
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(&not_a_hello);
    assert!(matches!(
        fb.next_frame(),
        Err(FrameError::UnsupportedVersion { .. })
    ));
}

/// Every frame of a session carries the session's version: one sealed in another
/// (the MAC verifies: the sender chose it) is refused, in both directions, and so is a
/// Challenge in a version above the Hello's.
#[test]
fn a_frame_of_another_version_is_refused() {
    let k = key(3);
    let (mh, hello) = MonitorHandshake::start(&k, "mon", "db1", TERM, [1; 16]).unwrap();
    let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
    let challenge = ah.on_hello(&one(&hello)).unwrap();
    let (mut monitor, auth) = mh.on_challenge(&one(&challenge)).unwrap();
    let (mut agent, _) = ah.on_auth(&one(&auth), "0.2.0").unwrap();
    monitor.sealer.version = MIN_VERSION;
    let old = monitor.sealer.seal(&heartbeat(), 1, 0).unwrap();
    assert_eq!(
        agent.opener.open(&one(&old)),
        Err(FrameError::VersionMismatch {
            found: MIN_VERSION,
            expected: VERSION
        })
    );
    agent.sealer.version = MIN_VERSION;
    let old = agent.sealer.seal(&applied(), 1, FLAG_RESPONSE).unwrap();
    assert_eq!(
        monitor.opener.open(&one(&old)),
        Err(FrameError::VersionMismatch {
            found: MIN_VERSION,
            expected: VERSION
        })
    );

    // The monitor offered 8; an answer in 9 is not one it can speak.
    let (mh8, _) =
        MonitorHandshake::start_in(&k, "mon", "db1", TERM, [1; 16], MIN_VERSION).unwrap();
    let mut ah = AgentHandshake::new(&k, "db1", [2; 16]);
    let challenge9 = ah.on_hello(&one(&hello)).unwrap();
    assert_eq!(
        mh8.on_challenge(&one(&challenge9)).unwrap_err(),
        FrameError::VersionMismatch {
            found: VERSION,
            expected: MIN_VERSION
        }
    );
}

/// A refusal answers in the Hello's version, so a monitor of the previous release reads
/// the reason rather than an unsupported version.
#[test]
fn a_refusal_goes_out_in_the_hellos_version() {
    let k = key(4);
    let (mh, hello) =
        MonitorHandshake::start_in(&k, "mon", "db1", TERM, [1; 16], MIN_VERSION).unwrap();
    let mut ah = AgentHandshake::new(&k, "db2", [2; 16]);
    let err = ah.on_hello(&one(&hello)).unwrap_err();
    let refusal = ah.reject(&err.to_string()).unwrap();
    assert_eq!(refusal[2], MIN_VERSION);
    match mh.on_challenge(&one(&refusal)) {
        Err(FrameError::PeerRejected { message }) => assert!(message.contains("db2"), "{message}"),
        other => panic!("expected the refusal, got {other:?}"),
    }
}
