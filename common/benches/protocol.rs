//! Protocol figures: bytes on the wire of one heartbeat each way (target <= 64) and
//! frames encoded + decoded + authenticated per second on one core (target >= 1,000,000).
//! Measures and prints; asserts nothing about time. `cargo bench -p mmm-common --bench protocol`
//! (or `cargo xtask bench protocol`).

use mmm_common::config::ClusterKey;
use mmm_common::proto::*;
use std::net::Ipv4Addr;
use std::time::Instant;

fn one(bytes: &[u8]) -> RawFrame {
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    fb.push(bytes);
    fb.next_frame()
        .expect("valid frame")
        .expect("complete frame")
}

fn main() {
    let key = ClusterKey::from_hex(&"5a".repeat(32)).expect("key");
    let (mh, hello) =
        MonitorHandshake::start(&key, "mon", "db1", Term::NONE, [1; 16]).expect("hello");
    let mut ah = AgentHandshake::new(&key, "db1", [2; 16]);
    let challenge = ah.on_hello(&one(&hello)).expect("challenge");
    let (mut monitor, auth) = mh.on_challenge(&one(&challenge)).expect("auth");
    let (mut agent, welcome) = ah.on_auth(&one(&auth), "bench").expect("welcome");
    monitor.opener.open(&one(&welcome)).expect("welcome opens");

    let hb = Message::Heartbeat(Heartbeat { epoch: 42 });
    let reply = Message::AgentHeartbeat(AgentHeartbeat {
        applied_epoch: 42,
        uptime_s: 3600,
        flags: hb_flags::READ_ONLY
            | hb_flags::MYSQL_UP
            | hb_flags::IO_RUNNING
            | hb_flags::SQL_RUNNING,
        probe: ProbeState::Watching,
        source: Some((Ipv4Addr::new(10, 0, 0, 11), 3306)),
        held_vips: vec![Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 101)],
    });
    let m2a = monitor.sealer.seal(&hb, 0, 0).expect("seal");
    let a2m = agent.sealer.seal(&reply, 0, FLAG_RESPONSE).expect("seal");
    agent.opener.open(&one(&m2a)).expect("open");
    monitor.opener.open(&one(&a2m)).expect("open");
    println!(
        "heartbeat monitor->agent: {} bytes on the wire (target <= 64)",
        m2a.len()
    );
    println!(
        "heartbeat agent->monitor: {} bytes on the wire, 2 VIPs held (target <= 64)",
        a2m.len()
    );

    let rounds: u32 = std::env::var("MMM_BENCH_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let mut fb = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    let mut buf = Vec::with_capacity(128);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..rounds {
            buf.clear();
            agent
                .sealer
                .seal_into(&reply, 0, FLAG_RESPONSE, &mut buf)
                .expect("seal");
            fb.push(&buf);
            let f = fb.next_frame().expect("frame").expect("complete");
            std::hint::black_box(monitor.opener.open(&f).expect("open"));
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "agent heartbeat encode+decode+authenticate: {:.0} frames/s on one core, {:.0} ns/frame (best of 3 x {rounds}; target >= 1,000,000/s)",
        f64::from(rounds) / best,
        best * 1e9 / f64::from(rounds)
    );
}
