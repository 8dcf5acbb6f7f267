//! The previous release's binaries, built from its source archive: what the upgrade test
//! runs against this revision's.
//!
//! Each release's source (`git archive` of its tag, docs left out) is kept in the
//! repository as `tests/releases/vX.Y.Z.tar.xz`, so the test needs neither git history nor
//! tags: a CI checkout is often shallow and tagless. The previous release is the newest
//! archive whose version is not this revision's. Making one at a release is in the README
//! ("Releases").

use crate::{target_dir, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A release's `mmm-agent`, `mmm-monitor` and `mmm-control`.
#[derive(Debug, Clone)]
pub struct Release {
    pub tag: String,
    pub bin_dir: PathBuf,
}

impl Release {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// `vX.Y.Z` as numbers, for ordering archives by version rather than by name.
fn version(tag: &str) -> Option<(u64, u64, u64)> {
    let mut parts = tag.strip_prefix('v')?.split('.').map(|p| p.parse().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

/// The newest `tests/releases/vX.Y.Z.tar.xz` that is not this revision's version, with
/// its tag.
pub fn previous_archive() -> Result<(String, PathBuf), String> {
    let dir = workspace_root().join("tests/releases");
    let this = format!("v{}", env!("CARGO_PKG_VERSION"));
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let tag = name.strip_suffix(".tar.xz")?.to_string();
            Some((version(&tag)?, tag, e.path()))
        })
        .filter(|(_, tag, _)| *tag != this)
        .max_by_key(|(v, _, _)| *v)
        .map(|(_, tag, path)| (tag, path))
        .ok_or_else(|| {
            format!(
                "no release archive vX.Y.Z.tar.xz other than {this} in {}",
                dir.display()
            )
        })
}

/// A fingerprint of the archive's bytes: a changed archive is extracted again.
fn fingerprint(path: &Path) -> Result<String, String> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Ok(format!("{} {:016x}", bytes.len(), h.finish()))
}

/// Extracts the previous release's archive under target/ (reused when it is there
/// already) and builds its binaries with their own target dir, target/prev-release, so
/// that a rerun is incremental. The error says why there is no previous release to build
/// (no archive); an extraction or a build that fails panics.
pub fn previous() -> Result<Release, String> {
    let (tag, archive) = previous_archive()?;
    let src = target_dir().join("prev-release-src").join(&tag);
    let marker = src.join(".mmm-release-archive");
    let print = fingerprint(&archive)?;
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(print.as_str()) {
        // A tree left half-extracted is extracted again.
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("creating {}: {e}", src.display()));
        let status = Command::new("tar")
            .arg("-xJf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running tar -xJf {}: {e}", archive.display()));
        assert!(
            status.success(),
            "extracting {} with tar failed ({status})",
            archive.display()
        );
        std::fs::write(&marker, &print)
            .unwrap_or_else(|e| panic!("writing {}: {e}", marker.display()));
    }
    let bin_target = target_dir().join("prev-release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building release {tag} in {} (target dir {})",
        src.display(),
        bin_target.display()
    );
    let out = Command::new("nice")
        .args(["-n", "10"])
        .arg(&cargo)
        .args(["build", "--locked", "--bins"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &bin_target)
        // Disk is what a second build costs most: no debug info beyond line tables and no
        // incremental caches (the fingerprints still make a rerun a no-op).
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .unwrap_or_else(|e| panic!("running cargo build for {tag}: {e}"));
    assert!(
        out.status.success(),
        "cargo build --bins of {tag} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let release = Release {
        tag,
        bin_dir: bin_target.join("debug"),
    };
    for name in ["mmm-agent", "mmm-monitor", "mmm-control"] {
        let path = release.bin(name);
        assert!(path.is_file(), "{} was not built", path.display());
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_number() {
        assert_eq!(version("v0.10.2"), Some((0, 10, 2)));
        assert!(version("v0.10.2") > version("v0.9.9"));
        assert_eq!(version("v1.2"), None);
        assert_eq!(version("1.2.3"), None);
        assert_eq!(version("v1.2.3.4"), None);
    }

    #[test]
    fn the_previous_release_has_an_archive() {
        let (tag, path) = previous_archive().expect("a previous release archive");
        assert_ne!(tag, format!("v{}", env!("CARGO_PKG_VERSION")));
        assert!(path.is_file());
    }
}
