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

/// `Ok(None)` when there is no status file yet (a first start).
pub fn read(path: &Path) -> Result<Option<StatusRecord>, PersistError> {
    match std::fs::read_to_string(path) {
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
