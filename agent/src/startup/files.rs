//! The files the agent reads and writes: state_dir and the state files in it, the secrets,
//! etcd's TLS files and the MySQL socket, each checked with the access the agent will use.

use mmm_common::config::{Coordination, Host, Secret};
use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use super::{StartupError, User};

/// The files the agent keeps in `state_dir` for `host`, as suffixes of `<host>.`; the
/// `.tmp` ones are left only by a crash between writing a replacement and renaming it.
const STATE_FILES: &[&str] = &[
    "lease",
    "monitors",
    "monitors.tmp",
    "term",
    "term.tmp",
    "etcd-lease",
    "etcd-lease.tmp",
    "semisync-held",
];

/// What the state_dir check was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStep {
    LookUp,
    Create,
    CreateFile,
    Write,
    Sync,
    Rename,
    Remove,
}

impl fmt::Display for StateStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateStep::LookUp => "looking it up",
            StateStep::Create => "creating it",
            StateStep::CreateFile => "creating a file in it",
            StateStep::Write => "writing a file in it",
            StateStep::Sync => "syncing a file in it",
            StateStep::Rename => "renaming a file in it",
            StateStep::Remove => "removing a file from it",
        })
    }
}

/// `dir` exists or can be created, is a directory, and the agent can create, write, sync,
/// rename and remove a file in it: everything the lease, the term and the etcd lease id
/// need (a deadline that cannot be saved fences a restarted writer; a term that cannot
/// be saved is refused, so a fleet never converges).
pub fn state_dir(dir: &Path, host: &str, user: &User) -> Result<(), StartupError> {
    let fail = |step, source| StartupError::StateDir {
        path: dir.to_path_buf(),
        step,
        user: user.clone(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(StartupError::StateDirNotDir {
                path: dir.to_path_buf(),
                user: user.clone(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| fail(StateStep::Create, source))?
        }
        Err(source) => return Err(fail(StateStep::LookUp, source)),
    }
    // Named for the host and the process: two agents sharing the directory never meet.
    let first = dir.join(format!(".{host}.start-check.{}", std::process::id()));
    let second = dir.join(format!(
        ".{host}.start-check.{}.renamed",
        std::process::id()
    ));
    let result = write_sync_rename_remove(&first, &second);
    if result.is_err() {
        // Best effort: the step that failed already says why the directory is unusable.
        for leftover in [&first, &second] {
            let _ = std::fs::remove_file(leftover);
        }
    }
    result.map_err(|(step, source)| fail(step, source))
}

fn write_sync_rename_remove(first: &Path, second: &Path) -> Result<(), (StateStep, io::Error)> {
    // Truncating, not exclusive: a file left by a crashed agent of the same pid is ours.
    let mut f = std::fs::File::create(first).map_err(|e| (StateStep::CreateFile, e))?;
    f.write_all(b"mmm-agent start-up check\n")
        .map_err(|e| (StateStep::Write, e))?;
    f.sync_all().map_err(|e| (StateStep::Sync, e))?;
    drop(f);
    std::fs::rename(first, second).map_err(|e| (StateStep::Rename, e))?;
    std::fs::remove_file(second).map_err(|e| (StateStep::Remove, e))
}

/// The state files of `host` already in `dir` must be readable and writable: the lease
/// deadline is rewritten in place, and one the agent cannot open is not kept at all.
pub fn state_files(dir: &Path, host: &str, user: &User) -> Vec<StartupError> {
    STATE_FILES
        .iter()
        .map(|suffix| dir.join(format!("{host}.{suffix}")))
        .filter_map(|path| {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => Some(StartupError::StateFile {
                    path,
                    user: user.clone(),
                    source,
                }),
            }
        })
        .collect()
}

/// The passwords the agent reads: its own (every SQL statement) and the replication
/// user's, which it reads only when the monitor re-points this server, perhaps in the
/// middle of a failover.
pub(super) fn secrets(host: &Host, user: &User) -> Vec<StartupError> {
    let wanted = [
        (
            &host.agent_password,
            "agent_password_file",
            "for every SQL statement",
        ),
        (
            &host.replication_password,
            "replication_password_file",
            "to point replication at a new source (in a failover)",
        ),
    ];
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for (secret, key, needed) in wanted {
        if let Secret::File(path) = secret {
            if seen.contains(&path) {
                continue;
            }
            seen.push(path);
            if let Err(source) = secret.reveal() {
                found.push(StartupError::Secret {
                    key: format!("hosts.{}.{key}", host.name),
                    user: user.clone(),
                    needed,
                    source,
                });
            }
        }
    }
    found
}

/// The TLS files to etcd are read at every connection: read them once now.
pub(super) fn etcd_tls(c: &Coordination, user: &User) -> Option<StartupError> {
    let timeout = std::time::Duration::from_secs(1);
    mmm_common::etcd::connect_options(c, None, timeout)
        .err()
        .map(|source| StartupError::EtcdTls {
            user: user.clone(),
            source,
        })
}

/// Connecting to a unix socket needs search permission on its directories and write
/// permission on the socket. mysqld may well be down now, so a missing socket is no
/// refusal; a permission denied now is one at every SQL statement later.
pub(super) fn mysql_socket(path: &Path, user: &User) -> Option<StartupError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_path` is a NUL-terminated string alive for the call. AT_EACCESS: checked
    // with the effective ids and capabilities, as connect(2) will be.
    let rc = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS,
        )
    };
    if rc == 0 {
        return None;
    }
    let source = io::Error::last_os_error();
    (source.kind() == io::ErrorKind::PermissionDenied).then(|| StartupError::MysqlSocket {
        path: path.to_path_buf(),
        user: user.clone(),
        source,
    })
}
