//! The agent's files in `agent.state_dir`, one set per host, each owned by the module
//! that names it:
//!
//! - `<host>.term`: the highest monitor term accepted (`term`);
//! - `<host>.lease`: the writer permit's deadline with the boot id (`lease::store`),
//!   rewritten in place at a fixed width, the one file not replaced through [`replace`]:
//!   it is written at every renewal;
//! - `<host>.etcd-lease`: the agent's own etcd lease in a fleet (`etcd`);
//! - `<host>.monitors`: the addresses that completed a handshake (`admission`);
//! - `<host>.semisync-held`: a marker, present while a semi-sync wait is suspended
//!   (`mysql::semi_sync`).
//!
//! The start-up checks (`startup::files`) make sure the directory and the files already
//! there are writable by the agent's user before anything depends on them.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `text` to a temporary file beside `path`, syncs it and renames it over `path`:
/// a crash leaves the old content or the new one, never a torn file. The directory is
/// not synced: these files matter across an agent restart, not across a power loss
/// (state_dir is a tmpfs by default), and a directory fsync on a runtime thread stalled
/// the agent's timers under load.
pub(crate) fn replace(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::replace;

    #[test]
    fn replace_leaves_the_new_text_and_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("mmm-state-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("db1.term");
        replace(&path, "5\n").unwrap();
        replace(&path, "7 00000000000000aa\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "7 00000000000000aa\n"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("db1.term")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
