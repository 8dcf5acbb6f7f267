//! Any byte stream into the frame splitter, the handshake and every payload decoder:
//! nothing may panic, loop or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmm_common::config::ClusterKey;
use mmm_common::proto::{AgentHandshake, FrameBuffer, Message, MessageType, DEFAULT_MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    if let Some((&t, payload)) = data.split_first() {
        if let Some(mt) = MessageType::from_u8(t) {
            let _ = Message::decode_payload(mt, payload);
        }
    }
    let key = ClusterKey::from_hex(&"11".repeat(32)).expect("static key");
    let mut agent = AgentHandshake::new(&key, "db1", [0; 16]);
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    for chunk in data.chunks(7) {
        fb.push(chunk);
        while let Ok(Some(frame)) = fb.next_frame() {
            let _ = agent.on_hello(&frame);
        }
    }
    let _ = fb.finish();
});
