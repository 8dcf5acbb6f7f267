//! Control commands given to a standby, run by the leader: `mmm-control` works from any
//! monitor host. The standby puts the command at `<prefix>/commands/<id>` and waits for
//! the answer at `<prefix>/replies/<id>`. Both are MACed with the cluster key over the
//! id, which carries the leader's term the standby forwarded to and the issue time:
//! write access to etcd does not make anyone an operator. The leader runs a command only
//! if its MAC verifies, it was forwarded to this leader's term (a copy put back for a
//! later leader is refused), it is less than a minute old and it was not run before, and
//! MACs its answer the same way.

use crate::control::Command;
use crate::daemon::{DaemonError, Process};
use crate::etcd::{DirChange, Fleet};
use mmm_common::config::ClusterKey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A command a standby forwarded, for the leader to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub id: String,
    pub line: String,
}

/// How old a forwarded command may be (its id carries when it was issued, wall clock).
const FORWARD_WINDOW_MS: u64 = 60_000;

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A forwarded command as stored in etcd: `MMM-AUTH <mac(id, command, line)>\n<line>`.
fn sign_command(key: &ClusterKey, id: &str, line: &str) -> String {
    let mac = crate::control::auth::mac(key, id, crate::control::auth::Part::Command, line);
    format!("{}{mac}\n{line}", crate::control::auth::AUTH)
}

/// An answer as stored in etcd: `MMM-MAC <mac(id, answer, text)>\n<text>`.
fn sign_answer(key: &ClusterKey, id: &str, text: &str) -> String {
    let mac = crate::control::auth::mac(key, id, crate::control::auth::Part::Answer, text);
    format!("{}{mac}\n{text}", crate::control::auth::ANSWER_MAC)
}

/// A forwarded command's id: the standby, its process, a count, the leader's term it was
/// forwarded to, and the issue time (wall clock, ms).
fn command_id(standby: &str, n: u64, term: u64, issued_ms: u64) -> String {
    format!("{standby}-{}-{n}-t{term}-{issued_ms}", std::process::id())
}

/// The leader's term and the issue time a command id carries.
fn id_term_and_time(id: &str) -> Option<(u64, u64)> {
    let mut parts = id.rsplit('-');
    let issued = parts.next()?.parse().ok()?;
    let term = parts.next()?.strip_prefix('t')?.parse().ok()?;
    Some((term, issued))
}

/// The text of a signed value, if its MAC verifies for `id` and `part`.
fn verified(
    key: &ClusterKey,
    id: &str,
    part: crate::control::auth::Part,
    value: &str,
) -> Option<String> {
    let prefix = match part {
        crate::control::auth::Part::Command => crate::control::auth::AUTH,
        crate::control::auth::Part::Answer => crate::control::auth::ANSWER_MAC,
    };
    let (head, text) = value.split_once('\n')?;
    let claimed = head.strip_prefix(prefix)?;
    crate::control::auth::verify(key, id, part, text, claimed).then(|| text.to_string())
}

/// The leader's side: the commands standbys forward, and their answers.
pub struct Inbox {
    fleet: Fleet,
    /// The leader's session: its answers go with it.
    session_lease: i64,
    /// Forwarded commands and answers are MACed with the cluster key: anyone who can
    /// write to etcd is not thereby an operator.
    key: ClusterKey,
    /// Forwarded command ids already run (with their issue time), against replays.
    seen: Mutex<HashMap<String, u64>>,
    /// This leader's term (the election key's revision): a command forwarded to another
    /// is not run.
    term: u64,
    /// Commands given to standbys, once heard ([`Inbox::hear`]).
    commands: Option<mpsc::Receiver<Forwarded>>,
}

impl Inbox {
    pub fn new(fleet: Fleet, session_lease: i64, key: ClusterKey, term: u64) -> Inbox {
        Inbox {
            fleet,
            session_lease,
            key,
            term,
            seen: Mutex::new(HashMap::new()),
            commands: None,
        }
    }

    /// From now on, hears the commands given to standbys.
    pub async fn hear(&mut self) {
        self.commands = Some(self.forwarded_commands().await);
    }

    /// The next forwarded command to run, and its id; a refused one is answered here.
    /// Never resolves before [`Inbox::hear`], nor once the feed has ended.
    pub async fn next(&mut self) -> (Command, String) {
        loop {
            let next = match self.commands.as_mut() {
                Some(commands) => commands.recv().await,
                None => None,
            };
            // The feed ended with its watch: no more forwarded commands this term.
            let Some(f) = next else {
                return std::future::pending().await;
            };
            match self.parse_forwarded(&f) {
                Some(Ok(command)) => return (command, f.id),
                Some(Err(text)) => self.reply(f.id, text),
                None => {}
            }
        }
    }

    /// Where the answer to command `id` goes: it is written once the core has answered.
    pub fn answer_to(&self, id: String) -> oneshot::Sender<String> {
        let (tx, rx) = oneshot::channel();
        self.reply_when(id, rx);
        tx
    }

    /// Commands given to standbys: those waiting now, then each new one.
    async fn forwarded_commands(&self) -> mpsc::Receiver<Forwarded> {
        let (tx, rx) = mpsc::channel(16);
        let mut fleet = self.fleet.clone();
        tokio::spawn(async move {
            let (pending, mut changes) = match fleet.watch_dir(&fleet.keys().commands()).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "forwarded commands cannot be read: standbys' commands go unanswered");
                    return;
                }
            };
            let as_forwarded = |e: crate::etcd::DirEntry| Forwarded {
                id: e.name,
                line: String::from_utf8_lossy(&e.value).into_owned(),
            };
            for e in pending {
                if tx.send(as_forwarded(e)).await.is_err() {
                    return;
                }
            }
            while let Some(change) = changes.recv().await {
                if let DirChange::Put(e) = change {
                    if tx.send(as_forwarded(e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }

    /// A forwarded line as a command, or the refusal to send back.
    /// Refused (None, logged) unless its MAC verifies under the cluster key, it was
    /// issued within the last minute and it was not run before.
    fn parse_forwarded(&self, f: &Forwarded) -> Option<Result<crate::control::Command, String>> {
        let Some(line) = verified(
            &self.key,
            &f.id,
            crate::control::auth::Part::Command,
            &f.line,
        ) else {
            tracing::warn!(id = %f.id, "a command under the fleet's prefix without a valid MAC: not run (it was not put by a monitor holding the cluster key)");
            return None;
        };
        let Some((term, issued)) = id_term_and_time(&f.id) else {
            tracing::warn!(id = %f.id, "a forwarded command without a term in its id: not run");
            return None;
        };
        if term != self.term {
            tracing::warn!(id = %f.id, term, leader_term = self.term, "a command forwarded to another term of the fleet's leader: not run (a copy put back for a later leader, or the leader changed meanwhile)");
            return Some(Err(format!("ERROR: The fleet's leader changed while the command was forwarded (term {term}, now {}): nothing was done; run it again.", self.term)));
        }
        let now = wall_ms();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, t| now.saturating_sub(*t) <= FORWARD_WINDOW_MS);
        if now.abs_diff(issued) > FORWARD_WINDOW_MS || seen.insert(f.id.clone(), issued).is_some() {
            tracing::warn!(id = %f.id, "a forwarded command replayed or too old: not run");
            return None;
        }
        Some(crate::daemon::control_socket::parse_line(&line))
    }

    /// Answers a forwarded command (the reply lives in this leader's session).
    fn reply(&self, id: String, text: String) {
        let (mut fleet, lease) = (self.fleet.clone(), self.session_lease);
        let text = sign_answer(&self.key, &id, &text);
        tokio::spawn(async move {
            if let Err(e) = fleet
                .put_in_session(lease, &fleet.keys().reply(&id), text)
                .await
            {
                tracing::warn!(%id, error = %crate::error_chain(&e), "a forwarded command's answer was not written");
            }
            let _ = fleet.delete(&fleet.keys().command(&id)).await;
        });
    }

    /// Answers a forwarded command once the core has.
    fn reply_when(&self, id: String, answer: oneshot::Receiver<String>) {
        let (mut fleet, lease, key) = (self.fleet.clone(), self.session_lease, self.key.clone());
        tokio::spawn(async move {
            let text = answer
                .await
                .unwrap_or_else(|_dropped| "ERROR: The monitor is shutting down.".to_string());
            let text = sign_answer(&key, &id, &text);
            if let Err(e) = fleet
                .put_in_session(lease, &fleet.keys().reply(&id), text)
                .await
            {
                tracing::warn!(%id, error = %crate::error_chain(&e), "a forwarded command's answer was not written");
            }
            let _ = fleet.delete(&fleet.keys().command(&id)).await;
        });
    }
}

/// What a standby needs to hand its control socket's commands to the leader.
pub struct Forwarder {
    pub key: ClusterKey,
    pub fleet: Fleet,
    pub session_lease: i64,
    pub name: String,
    pub timeout: Duration,
}

/// Answers control commands while standing by: `ping` here, everything else by the
/// leader. Returns when the monitor must stop.
pub async fn serve_standby(process: &mut Process, s: &Forwarder) -> Result<(), DaemonError> {
    let mut n: u64 = 0;
    loop {
        let (command, reply) = tokio::select! {
            stopped = process.life.stopped() => return stopped,
            Some(r) = process.control.recv() => r,
        };
        if command == crate::control::Command::Ping {
            let _ = reply.send("OK: Pinged successfully!".to_string());
            continue;
        }
        n += 1;
        let (mut fleet, lease, timeout) = (s.fleet.clone(), s.session_lease, s.timeout);
        let (key, name) = (s.key.clone(), s.name.clone());
        tokio::spawn(async move {
            // Without a leader nobody would answer: say so now rather than after the wait.
            // The id names the leader's term and ends with the issue time: the leader
            // refuses one of another term, an old one and a replayed one.
            let id = match fleet.leader().await {
                Ok(Some((_, term))) => command_id(&name, n, term, wall_ms()),
                Ok(None) => {
                    let _ = reply.send("ERROR: No monitor leads the fleet at the moment (an election is under way, or etcd has lost its majority); this one stands by.".to_string());
                    return;
                }
                Err(e) => {
                    let _ = reply.send(format!(
                        "ERROR: This monitor stands by and cannot ask etcd who leads: {}",
                        crate::error_chain(&e)
                    ));
                    return;
                }
            };
            let signed = sign_command(&key, &id, &command.to_string());
            let text = match fleet
                .forward(lease, &id, &signed, timeout)
                .await
            {
                Ok(answer) => verified(&key, &id, crate::control::auth::Part::Answer, &answer)
                    .unwrap_or_else(|| {
                        tracing::warn!(%id, "an answer under the fleet's prefix without a valid MAC: ignored");
                        "ERROR: The answer from the fleet's leader could not be verified with the cluster key.".to_string()
                    }),
                Err(e) => format!(
                    "ERROR: This monitor stands by and the fleet's leader did not answer: {}",
                    crate::error_chain(&e)
                ),
            };
            let _ = reply.send(text);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The term a command was forwarded to is part of its MACed id: a copy put back for a
    /// later leader names the old term, and changing it breaks the MAC.
    #[test]
    fn a_command_id_names_its_leaders_term() {
        use crate::control::auth::Part;
        let id = command_id("mon-2", 3, 41, 1_700_000_000_000);
        assert_eq!(id_term_and_time(&id), Some((41, 1_700_000_000_000)));
        assert_eq!(id_term_and_time("mon2-1-1-100"), None, "no term: refused");
        let key = ClusterKey::from_hex(&"ab".repeat(32)).expect("a key");
        let signed = sign_command(&key, &id, "move_role writer db2");
        let later = id.replace("-t41-", "-t42-");
        assert_eq!(verified(&key, &later, Part::Command, &signed), None);
    }

    #[test]
    fn forwarded_commands_and_answers_verify_only_with_the_key_and_their_id() {
        use crate::control::auth::Part;
        let key = ClusterKey::from_hex(&"ab".repeat(32)).expect("a key");
        let other = ClusterKey::from_hex(&"cd".repeat(32)).expect("a key");
        let signed = sign_command(&key, "mon2-1-1-100", "move_role writer db2");
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Command, &signed).as_deref(),
            Some("move_role writer db2")
        );
        assert_eq!(
            verified(&other, "mon2-1-1-100", Part::Command, &signed),
            None
        );
        assert_eq!(
            verified(&key, "mon2-1-2-100", Part::Command, &signed),
            None,
            "moved to another id"
        );
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Answer, &signed),
            None,
            "a command is no answer"
        );
        let changed = signed.replace("db2", "db3");
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Command, &changed),
            None
        );
        assert_eq!(
            verified(&key, "x", Part::Command, "move_role writer db2"),
            None,
            "unsigned"
        );
        let answer = sign_answer(&key, "mon2-1-1-100", "OK: done\nsecond line");
        assert_eq!(
            verified(&key, "mon2-1-1-100", Part::Answer, &answer).as_deref(),
            Some("OK: done\nsecond line")
        );
    }
}
