//! The monitor: the pure decision core and the IO shell around it (checks, agent links,
//! control socket, status file), plus what `mmm-control` shares with the daemon.

pub mod agents;
pub mod control;
pub mod core;
pub mod daemon;
pub mod etcd;
pub mod preflight;
pub mod replica;
pub mod witness;

pub use mmm_common::error_chain;
