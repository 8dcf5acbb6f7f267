//! A directory of the prefix read, then followed change by change across member losses.

use super::{Fleet, FleetError, RETRY};
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::time::Duration;

/// How long a directory's watch that ended may take to resume before its feed ends.
const RESUME_WITHIN: Duration = Duration::from_secs(5);

/// A key under a directory of the prefix, with the lease it is bound to (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// A change seen by [`Fleet::watch_dir`]; a deletion says which lease the key had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChange {
    Put(DirEntry),
    Deleted { name: String, lease: i64 },
}

impl Fleet {
    /// Every key under `dir` (a directory of [`Keys`], ending in `/`) now, named by the
    /// rest of its key, then each change as it happens (the watch
    /// starts right after the read, so nothing falls in between). The feed ends when the
    /// watch does (etcd unreachable): the receiver then sees the channel closed.
    pub async fn watch_dir(
        &mut self,
        dir: &str,
    ) -> Result<(Vec<DirEntry>, tokio::sync::mpsc::Receiver<DirChange>), FleetError> {
        let prefix = dir.to_string();
        let now = {
            let (mut c, failed) = self.bounded("reading a directory");
            c.get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(failed)
        }?;
        let from = now.header().map_or(0, |h| h.revision()) + 1;
        let mut watching = self.members.current().generation;
        let mut stream = {
            let (mut c, failed) = self.waiting("watching a directory");
            c.watch(
                prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_prev_key()
                        .with_start_revision(from),
                ),
            )
            .await
            .map_err(failed)
        }?;
        let name = {
            let prefix = prefix.clone();
            move |kv: &etcd_client::KeyValue| {
                String::from_utf8_lossy(kv.key())
                    .trim_start_matches(prefix.as_str())
                    .to_string()
            }
        };
        let entries = now
            .kvs()
            .iter()
            .map(|kv| DirEntry {
                name: name(kv),
                value: kv.value().to_vec(),
                lease: kv.lease(),
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let fleet = self.clone();
        tokio::spawn(async move {
            // Where the feed stands: a watch that ends (its member died, was cut off or
            // lost its leader) is resumed from here on the member now in use, so no
            // change falls in between and a lost member ends no term. The feed ends only
            // when the watch cannot be resumed within RESUME_WITHIN (etcd compacted past
            // it, or no member answers): the receiver then sees the channel closed.
            let mut next = from;
            loop {
                loop {
                    let r = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) | Err(_) => break,
                    };
                    if r.canceled() || r.compact_revision() > 0 {
                        return;
                    }
                    for e in r.events() {
                        let Some(kv) = e.kv() else { continue };
                        next = next.max(kv.mod_revision() + 1);
                        let change = match e.event_type() {
                            EventType::Put => DirChange::Put(DirEntry {
                                name: name(kv),
                                value: kv.value().to_vec(),
                                lease: kv.lease(),
                            }),
                            EventType::Delete => DirChange::Deleted {
                                name: name(kv),
                                lease: e.prev_kv().map_or(0, |p| p.lease()),
                            },
                        };
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                }
                fleet.members.move_off(watching, "a watch ended").await;
                let resumed = tokio::time::timeout(RESUME_WITHIN, async {
                    loop {
                        watching = fleet.members.current().generation;
                        let (mut c, failed) = fleet.waiting("resuming a directory's watch");
                        let options = WatchOptions::new()
                            .with_prefix()
                            .with_prev_key()
                            .with_start_revision(next);
                        match c.watch(prefix.clone(), Some(options)).await.map_err(failed) {
                            Ok(s) => return s,
                            Err(e) => {
                                tracing::debug!(error = %crate::error_chain(&e), "resuming a watch failed; retrying");
                                tokio::time::sleep(RETRY).await;
                            }
                        }
                    }
                })
                .await;
                match resumed {
                    Ok(s) => stream = s,
                    Err(_elapsed) => return,
                }
            }
        });
        Ok((entries, rx))
    }
}
