//! The monitor fleet's coordination on etcd (`[coordination]`): a session (an etcd lease
//! kept alive), leadership by etcd's election, and writes that succeed only while the
//! writer still leads.
//!
//! The term is the create revision of the leader's election key: etcd's revision only
//! grows, and every campaign creates a new key, so a later leader always has a larger
//! term. A write is a transaction that compares that key's create revision with the term:
//! once the leader's session has expired, or it resigned, the key is gone (or another's)
//! and the write fails as [`FleetError::Deposed`], whatever the deposed monitor believes.
//!
//! This module is the etcd side only; it knows nothing of the cluster it coordinates.
//! One module per use of etcd: the session, the election and the writes it guards, the
//! registered monitors, the agents' permits, plain keys, and directory watches.

mod election;
mod kv;
mod monitors;
mod permits;
mod session;
mod watch;

pub use election::Leadership;
pub use monitors::FleetView;
pub use session::Session;
pub use watch::{DirChange, DirEntry};

use etcd_client::Client;
use mmm_common::config::Coordination;
use mmm_common::etcd::{Keys, Members};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{op}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{op}: etcd answered without a leader key")]
    NoLeaderKey { op: &'static str },
    #[error("term {term} is over: another monitor leads, or etcd expired this monitor's session")]
    Deposed { term: u64 },
    #[error("a monitor named '{name}' is already in this fleet (key {key}): give each monitor its own --name")]
    NameTaken { name: String, key: String },
    #[error("connecting to etcd")]
    Members(#[source] mmm_common::etcd::MembersError),
    #[error("the session was lost while campaigning")]
    SessionLost,
    #[error("no answer from the leading monitor within {timeout:?}")]
    NoReply { timeout: std::time::Duration },
}

/// How soon a failed session renewal is retried (on another member if the last failed).
const RETRY: Duration = Duration::from_millis(100);

/// A connection to the etcd cluster under one prefix, through one member at a time
/// (moved off as soon as a request fails the way a lost member fails).
#[derive(Clone)]
pub struct Fleet {
    members: Members,
    keys: Keys,
    ttl: Duration,
}

impl Fleet {
    /// Connects (bounded by `timeout`); every later request is bounded by it too.
    pub async fn connect(c: &Coordination, timeout: Duration) -> Result<Fleet, FleetError> {
        let members = Members::connect(c, timeout)
            .await
            .map_err(FleetError::Members)?;
        Ok(Fleet {
            members,
            keys: Keys::new(c.prefix.as_str()),
            ttl: c.session_ttl,
        })
    }

    /// The last recent failure of an etcd member, for `show`.
    pub fn etcd_trouble(&self) -> Option<String> {
        self.members.trouble()
    }

    /// The member in use, each request bounded by the connect timeout, and the mapping of
    /// its errors, which moves off that member when it failed.
    fn bounded(&self, op: &'static str) -> (Client, impl FnOnce(etcd_client::Error) -> FleetError) {
        let conn = self.members.current();
        (conn.bounded, self.failed(conn.generation, op))
    }

    /// As [`Fleet::bounded`], for requests that wait by design (a campaign, a watch).
    fn waiting(&self, op: &'static str) -> (Client, impl FnOnce(etcd_client::Error) -> FleetError) {
        let conn = self.members.current();
        (conn.waiting, self.failed(conn.generation, op))
    }

    fn failed(
        &self,
        generation: u64,
        op: &'static str,
    ) -> impl FnOnce(etcd_client::Error) -> FleetError {
        let members = self.members.clone();
        move |source| {
            members.spawn_failed(generation, &source);
            FleetError::Etcd { op, source }
        }
    }

    /// The keys of this fleet's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}
