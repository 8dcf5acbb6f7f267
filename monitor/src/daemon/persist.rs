//! The status file: written atomically (temp file, fsync, rename, fsync of the
//! directory) whenever the core says the record changed, read once at start.

use crate::core::status::{RestoreError, StatusRecord};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("writing the status file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the status file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the MMM status file {path} cannot be taken over")]
    Mmm {
        path: PathBuf,
        #[source]
        source: mmm_common::legacy::status::StatusError,
    },
    #[error("the status file {path} is corrupt or truncated")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: RestoreError,
    },
}

pub fn write_atomic(path: &Path, record: &StatusRecord) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.into(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(record.to_json().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

/// The status file's writer, off the event loop: each write is two fsyncs, milliseconds
/// on a busy disk, and the core must not wait for them. The newest record wins: records
/// that arrive while one is written replace each other, and only the last is written.
pub struct Writer {
    latest: tokio::sync::watch::Sender<Option<StatusRecord>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(path: PathBuf) -> Writer {
        let (latest, mut rx) = tokio::sync::watch::channel::<Option<StatusRecord>>(None);
        let task = tokio::spawn(async move {
            // Ends when the sender is dropped, after writing what it last sent.
            while rx.changed().await.is_ok() {
                let Some(record) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                let written =
                    tokio::task::spawn_blocking(move || write_atomic(&path, &record)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %crate::error_chain(&e), "status not saved")
                    }
                    Err(e) => tracing::error!(error = %e, "the status writer failed"),
                }
            }
        });
        Writer { latest, task }
    }

    /// Queues `record`; returns at once.
    pub fn save(&self, record: StatusRecord) {
        self.latest.send_replace(Some(record));
    }

    /// Writes `record` as the last one and waits until it is on disk.
    /// Bounded: a disk that no longer answers must not keep the monitor from stopping.
    pub async fn finish(self, record: StatusRecord) {
        const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
        self.latest.send_replace(Some(record));
        drop(self.latest);
        if tokio::time::timeout(BOUND, self.task).await.is_err() {
            tracing::error!(
                "the status file was not written within {BOUND:?}: stopping without it"
            );
        }
    }
}

/// `Ok(None)` when there is no status file yet (a first start). An MMM 2.2.1 status file
/// (`host|STATE|role(ip),...` lines) at the same place is taken over: states and roles as
/// MMM left them, each since `now`.
pub fn read(path: &Path, now: crate::core::Millis) -> Result<Option<StatusRecord>, PersistError> {
    match std::fs::read_to_string(path) {
        Ok(text) if mmm_common::legacy::status::looks_like_mmm_status(&text) => {
            from_mmm(&text, now)
                .map(Some)
                .map_err(|source| PersistError::Mmm {
                    path: path.into(),
                    source,
                })
        }
        Ok(text) => {
            StatusRecord::from_json(&text)
                .map(Some)
                .map_err(|source| PersistError::Corrupt {
                    path: path.into(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// The monitor's claim on its status file: an exclusive `flock` on `<status>.lock`, held
/// for the process's life. A second monitor on the same status file (started by mistake)
/// would drive the same agents with a second opinion; it refuses to start instead.
pub struct StatusLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("opening the lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another monitor already runs with this status file (it holds {path}{holder}); two monitors must never drive the same agents")]
    Held { path: PathBuf, holder: String },
}

impl StatusLock {
    pub fn acquire(status: &Path) -> Result<StatusLock, LockError> {
        use std::os::fd::AsRawFd;
        let path = status.with_extension("lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock takes a descriptor we own (open for as long as `file`) and flags.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(|pid| format!(", pid {pid}"))
                .unwrap_or_default();
            return Err(LockError::Held { path, holder });
        }
        // Who holds it, for the message above (best effort).
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(StatusLock { _file: file })
    }
}

/// MMM's status lines as our record: hosts in MMM's UNKNOWN state are left out (the
/// monitor decides for them as for a first start), roles keep their holders.
fn from_mmm(
    text: &str,
    now: crate::core::Millis,
) -> Result<StatusRecord, mmm_common::legacy::status::StatusError> {
    use crate::core::status::HostRecord;
    let hosts = mmm_common::legacy::status::parse(text)?;
    let mut record = StatusRecord {
        version: 1,
        written_at: now,
        mode: String::new(),
        hosts: Default::default(),
        roles: Default::default(),
    };
    for h in hosts {
        let Some(state) = h.state else { continue };
        record.hosts.insert(
            h.host.clone(),
            HostRecord {
                state: state.to_string(),
                since: now,
                reason: "taken over from MMM's status file".into(),
                flap_departures: Vec::new(),
                flapping: false,
                errant: None,
                gtid: None,
            },
        );
        for (role, ip) in h.roles {
            record
                .roles
                .entry(role)
                .or_default()
                .push((ip.to_string(), Some(h.host.clone())));
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mmm_status_file_is_taken_over_not_treated_as_corrupt() {
        let dir = std::env::temp_dir().join(format!("mmm-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mmm_mond.status");
        std::fs::write(
            &path,
            "db1|ONLINE|reader(10.0.0.101),writer(10.0.0.100)\ndb2|ONLINE|reader(10.0.0.102)\ndb3|HARD_OFFLINE|\n",
        )
        .unwrap();
        let record = read(&path, 42).unwrap().expect("a record");
        assert_eq!(record.hosts["db1"].state, "ONLINE");
        assert_eq!(record.hosts["db3"].state, "HARD_OFFLINE");
        assert_eq!(
            record.roles["writer"],
            vec![("10.0.0.100".to_string(), Some("db1".to_string()))]
        );
        std::fs::write(&path, "db1|NONSENSE|\n").unwrap();
        let err = read(&path, 42).unwrap_err();
        assert!(matches!(err, PersistError::Mmm { .. }), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
