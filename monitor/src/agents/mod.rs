//! The monitor's side of the agent protocol.

pub mod client;
