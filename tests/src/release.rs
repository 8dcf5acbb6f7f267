//! The previous release's binaries, built from its git tag: what the upgrade test runs
//! against this revision's. Releases are tagged `vX.Y.Z`; the previous one is the newest
//! tag reachable from HEAD whose version is not this revision's.

use crate::{target_dir, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn git(dir: &Path, args: &[&str]) -> Result<Output, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("running git {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The newest `vX.Y.Z` tag reachable from HEAD that is not this revision's version.
pub fn previous_tag() -> Result<String, String> {
    let root = workspace_root();
    let tags = git(
        &root,
        &[
            "tag",
            "--list",
            "v*",
            "--merged",
            "HEAD",
            "--sort=-v:refname",
        ],
    )?;
    let this = format!("v{}", env!("CARGO_PKG_VERSION"));
    text(&tags)
        .lines()
        .find(|t| *t != this)
        .map(str::to_string)
        .ok_or_else(|| format!("no release tag v* other than {this} is reachable from HEAD"))
}

/// Extracts the previous release's tag under target/ (`git archive`: nothing is
/// registered in the repository; reused when it is there already) and builds its binaries
/// with their own target dir, target/prev-release, so that a rerun is incremental. The
/// error says why there is no previous release to build (no git, no tag); a build that
/// fails panics.
pub fn previous() -> Result<Release, String> {
    let tag = previous_tag()?;
    let root = workspace_root();
    let commit = text(&git(&root, &["rev-parse", &format!("{tag}^{{commit}}")])?);
    let src = target_dir().join("prev-release-src").join(&tag);
    let marker = src.join(".mmm-release-commit");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(commit.as_str()) {
        // A tree left half-extracted is extracted again.
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).map_err(|e| format!("creating {}: {e}", src.display()))?;
        let archive = git(&root, &["archive", "--format=tar", &commit])?;
        let mut tar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(&src)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("running tar: {e}"))?;
        {
            use std::io::Write;
            let mut stdin = tar.stdin.take().expect("piped stdin");
            stdin
                .write_all(&archive.stdout)
                .map_err(|e| format!("extracting {tag}: {e}"))?;
        }
        let status = tar.wait().map_err(|e| format!("running tar: {e}"))?;
        if !status.success() {
            return Err(format!("extracting {tag} with tar failed"));
        }
        std::fs::write(&marker, &commit)
            .map_err(|e| format!("writing {}: {e}", marker.display()))?;
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
