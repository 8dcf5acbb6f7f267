//! Plain keys: writes bound to this monitor's session, reads, deletes, and a standby's
//! command forwarded to the leader through them.

use super::{Fleet, FleetError};
use etcd_client::PutOptions;
use std::time::Duration;

impl Fleet {
    /// Puts `value` at `key`, bound to `session` (it goes with it).
    pub async fn put_in_session(
        &mut self,
        session_lease: i64,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), FleetError> {
        {
            let (mut c, failed) = self.bounded("writing to etcd");
            c.put(
                key,
                value,
                Some(PutOptions::new().with_lease(session_lease)),
            )
            .await
            .map_err(failed)
        }?;
        Ok(())
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &str) -> Result<(), FleetError> {
        {
            let (mut c, failed) = self.bounded("deleting from etcd");
            c.delete(key, None).await.map_err(failed)
        }?;
        Ok(())
    }

    /// Reads `key`.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
        let r = {
            let (mut c, failed) = self.bounded("reading from etcd");
            c.get(key, None).await.map_err(failed)
        }?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// A standby hands an operator's command line to the leader and waits (at most
    /// `timeout`) for its answer. The command key lives in this monitor's session: a
    /// standby that dies leaves nothing for a later leader to run.
    pub async fn forward(
        &mut self,
        session_lease: i64,
        id: &str,
        line: &str,
        timeout: Duration,
    ) -> Result<String, FleetError> {
        let reply_key = self.keys.reply(id);
        self.put_in_session(session_lease, &self.keys.command(id), line)
            .await?;
        let start = tokio::time::Instant::now();
        let answer = loop {
            if let Some(text) = self.get(&reply_key).await? {
                break Ok(String::from_utf8_lossy(&text).into_owned());
            }
            if start.elapsed() >= timeout {
                break Err(FleetError::NoReply { timeout });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = self.delete(&self.keys.command(id)).await;
        let _ = self.delete(&reply_key).await;
        answer
    }
}
