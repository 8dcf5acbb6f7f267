//! Replacing a file the agent keeps in its state_dir (`<host>.term`, `.monitors`,
//! `.etcd-lease`, `.semisync-held`): a crash or power loss leaves the old content or
//! the new one, never a torn or empty file. The lease deadline is the exception: it is
//! rewritten in place at a fixed width on every renewal, under the lease's lock, where
//! a rename and two fsyncs per heartbeat would cost more than a lost deadline does (a
//! restart then starts expired, which is safe).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What [`replace`] was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceStep {
    CreateDir,
    CreateTemp,
    Write,
    Sync,
    Rename,
    SyncDir,
}

impl fmt::Display for ReplaceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplaceStep::CreateDir => "creating the directory of",
            ReplaceStep::CreateTemp => "creating the temporary file for",
            ReplaceStep::Write => "writing the temporary file for",
            ReplaceStep::Sync => "syncing the temporary file for",
            ReplaceStep::Rename => "renaming the temporary file over",
            ReplaceStep::SyncDir => "syncing the directory of",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("replacing a state file: {step} {}", path.display())]
pub struct ReplaceError {
    pub path: PathBuf,
    pub step: ReplaceStep,
    #[source]
    pub source: io::Error,
}

/// The temporary file [`replace`] writes before renaming it over `path`: `<path>.tmp`,
/// in the same directory so the rename is atomic (the start-up checks know these names).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes `text` to `<path>.tmp`, syncs it, renames it over `path` and syncs the
/// directory, so the rename itself survives a power loss.
pub fn replace(path: &Path, text: &[u8]) -> Result<(), ReplaceError> {
    let fail = |step| {
        move |source| ReplaceError {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(fail(ReplaceStep::CreateDir))?;
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(fail(ReplaceStep::CreateTemp))?;
    f.write_all(text).map_err(fail(ReplaceStep::Write))?;
    f.sync_all().map_err(fail(ReplaceStep::Sync))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail(ReplaceStep::Rename))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail(ReplaceStep::SyncDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmm-state-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_content_is_replaced_whole_and_no_temporary_file_is_left() {
        let d = dir("replace");
        let path = d.join("db1.term");
        replace(&path, b"12345 00000000000000ff\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"12345 00000000000000ff\n");
        // A shorter content leaves no tail of the longer one behind.
        replace(&path, b"7\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"7\n");
        assert_eq!(entries(&d), ["db1.term"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stale_temporary_file_from_a_crash_is_overwritten() {
        let d = dir("stale");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("db1.monitors");
        std::fs::write(temp_path(&path), "half a wri").unwrap();
        replace(&path, b"10.0.0.1\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"10.0.0.1\n");
        assert_eq!(entries(&d), ["db1.monitors"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failure_names_the_step_and_the_path() {
        let d = dir("fail");
        std::fs::create_dir_all(&d).unwrap();
        // A directory where the file should go: the rename over it fails.
        let path = d.join("db1.term");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        let e = replace(&path, b"1\n").unwrap_err();
        assert_eq!(e.step, ReplaceStep::Rename);
        assert_eq!(e.path, path);
        assert!(e.to_string().ends_with("db1.term"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
