//! The deadline kept across restarts in `<state_dir>/<host>.lease`, with the boot id
//! (CLOCK_BOOTTIME restarts at boot).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::clock::Boot;

/// The deadline on disk: `<boot id> <CLOCK_BOOTTIME ns>`, rewritten in place.
pub(super) struct Store {
    file: File,
    boot_id: String,
    failed: std::sync::atomic::AtomicBool,
}

impl Store {
    pub(super) fn open(path: &Path) -> io::Result<(Store, Option<Boot>)> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
            .trim()
            .to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let previous = std::fs::read_to_string(path).ok();
        let deadline = previous.as_deref().and_then(|text| {
            let (boot, ns) = text.trim().split_once(' ')?;
            (boot == boot_id).then(|| ns.parse().ok().map(Boot))?
        });
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok((
            Store {
                file,
                boot_id,
                failed: false.into(),
            },
            deadline,
        ))
    }

    /// Fixed width, so an in-place rewrite never leaves a longer old tail behind.
    pub(super) fn save(&self, deadline: Boot) {
        let line = format!("{} {:020}\n", self.boot_id, deadline.0);
        if let Err(e) = self.file.write_all_at(line.as_bytes(), 0) {
            if !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, "lease deadline not saved: a restart will start expired");
            }
        }
    }
}

/// The file name of `host`'s lease in `state_dir` (for tests and docs).
pub fn path(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join(format!("{host}.lease"))
}
