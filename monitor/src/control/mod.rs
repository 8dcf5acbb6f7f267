//! The control protocol between `mmm-control` and the monitor: one command line in,
//! MMM's text lines out, then the monitor closes the connection.

pub mod auth;
pub mod client;
pub mod command;

pub use command::{CommandError, ControlCommand};
