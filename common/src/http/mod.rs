//! The read-only HTTP/1.x the agent (`agent.http`: `/writer`, `/reader`, `/health`,
//! `/metrics`) and the monitor (`monitor.http`: the live page and its API) serve: the
//! request head parsed without IO ([`request`]), the responses ([`response`]) and one
//! bounded listener ([`serve`]). Each program routes on its own; nothing served here
//! changes state: that stays on the keyed control protocol.

pub mod request;
pub mod response;
pub mod serve;

pub use request::{BadRequest, Request};
pub use response::{Response, JSON};
pub use serve::{accepted, serve, Limits};
