//! The whole handshake with fuzzer-chosen bytes at one step: the first byte picks the
//! step (Hello, Challenge, Auth, Welcome) and how the genuine frame is disturbed
//! (replaced, one byte XORed, cut short, bytes appended); the rest is the data. Nothing
//! may panic, and a disturbed handshake must never complete: only the key holder can
//! produce a frame that verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmm_common::config::ClusterKey;
use mmm_common::proto::{
    AgentHandshake, FrameBuffer, Message, MonitorHandshake, RawFrame, DEFAULT_MAX_PAYLOAD,
};

fn first_frame(bytes: &[u8]) -> Option<RawFrame> {
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(bytes);
    fb.next_frame().ok().flatten()
}

/// Applies the disturbance `how` with `data` to a genuine frame.
fn disturb(frame: Vec<u8>, how: u8, data: &[u8]) -> Vec<u8> {
    match how % 4 {
        0 => data.to_vec(),
        1 => {
            let mut f = frame;
            let (i, x) = match data {
                [a, b, x, ..] => (usize::from(u16::from_be_bytes([*a, *b])), *x | 1),
                _ => (0, 1),
            };
            let i = i % f.len();
            f[i] ^= x;
            f
        }
        2 => {
            let mut f = frame;
            let keep = data.first().map_or(0, |&n| usize::from(n)) % f.len();
            f.truncate(keep);
            f
        }
        _ => {
            // Trailing bytes after a genuine frame: the frame itself must still verify,
            // so this one may complete; it is the only disturbance that may.
            let mut f = frame;
            f.extend_from_slice(data);
            f
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let step = selector & 0x03;
    let how = selector >> 2;
    let harmless = how % 4 == 3;
    let key = ClusterKey::from_hex(&"11".repeat(32)).expect("static key");
    let (mh, hello) = MonitorHandshake::start(&key, "mon", "db1", [1; 16]).expect("hello");
    let mut ah = AgentHandshake::new(&key, "db1", [2; 16]);
    let pick = |s: u8, f: Vec<u8>| if s == step { disturb(f, how, data) } else { f };

    let completed = (|| {
        let challenge = ah.on_hello(&first_frame(&pick(0, hello))?).ok()?;
        let (mut monitor, auth) = mh.on_challenge(&first_frame(&pick(1, challenge))?).ok()?;
        let (_, welcome) = ah.on_auth(&first_frame(&pick(2, auth))?, "0").ok()?;
        match monitor.opener.open(&first_frame(&pick(3, welcome))?) {
            Ok(Message::Welcome(_)) => Some(()),
            _ => None,
        }
    })()
    .is_some();
    assert!(
        harmless || !completed,
        "a disturbed handshake completed (step {step}, how {how})"
    );
});
