//! Shared parts of mmm: the configuration schema and its validation, the import of
//! MySQL-MMM 2.2.1 configurations, the authenticated wire protocol between monitor and
//! agents, and the enums every crate agrees on.

pub mod config;
pub mod duration;
pub mod gtid;
pub mod legacy;
pub mod proto;
pub mod types;
