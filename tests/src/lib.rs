//! Helpers shared by the integration tests: the built binaries, private temp dirs,
//! network namespaces and real MariaDB servers.

pub mod agent_lab;
pub mod assert;
pub mod bench;
pub mod browser;
pub mod client;
pub mod costs;
pub mod dist;
pub mod etcd;
pub mod etcd_events;
pub mod failover;
pub mod fleet_lab;
pub mod handover;
pub mod haproxy;
pub mod lab;
pub mod mariadb;
pub mod netns;
pub mod pki;
pub mod release;
pub mod vipwatch;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's target directory (respects CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// A built binary of the workspace. `cargo xtask test` builds them before the tests run;
/// benchmarks set MMM_BIN_PROFILE=release to measure optimised binaries.
pub fn bin(name: &str) -> PathBuf {
    let profile = std::env::var("MMM_BIN_PROFILE").unwrap_or_else(|_unset| "debug".into());
    let path = target_dir().join(profile).join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (cargo xtask test does)",
        path.display()
    );
    path
}

/// Runs a binary and returns its output, whatever its exit status.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

/// Runs a binary that must exit by itself (a refusal to start) after `prefix` (setpriv
/// and its options, or nothing), ended by `timeout` after `secs` if it keeps running:
/// then its status is 124.
pub fn run_to_exit(prefix: &[&str], name: &str, args: &[&str], secs: u32) -> Output {
    let binary = bin(name);
    Command::new("timeout")
        .args(["--kill-after=5", &secs.to_string()])
        .args(prefix)
        .arg(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {name} under timeout: {e}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a terminal shows of a command: stdout, then stderr. mmm-control prints the
/// monitor's answers on stdout and its refusals (`ERROR: ...`) on stderr.
pub fn shown(o: &Output) -> String {
    let mut text = stdout(o);
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    text
}

/// A private (0700) directory removed on drop, even when the test panics.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mmm-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .expect("chmod temp dir");
        // Removed by its drop, or by netns::cleanup_everything on Ctrl-C (mmm-lab).
        netns::register_dir(&path);
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file with the given mode.
    pub fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        netns::unregister_dir(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// conf/lab.toml with a fresh key file in `dir`, both mode 0600.
pub fn lab_config(dir: &TempDir) -> PathBuf {
    let key = stdout(&run("mmm-control", &["gen-key"]));
    let key_path = dir.write("cluster.key", &key, 0o600);
    let text =
        std::fs::read_to_string(workspace_root().join("conf/lab.toml")).expect("conf/lab.toml");
    dir.write(
        "lab.toml",
        &text.replace(
            "/tmp/mmm-lab/cluster.key",
            key_path.to_str().expect("UTF-8 temp path"),
        ),
        0o600,
    )
}

/// A free loopback port for a server a test starts (etcd members, a monitor's
/// listeners). Not one the kernel hands out itself (bind to port
/// 0): that port is back in the ephemeral range (32768-60999) the moment it is released,
/// and any connect() on the machine may take it before etcd binds it ("address already in
/// use", seen in CI). These come from below that range, never twice in one process, from
/// an offset per process so parallel test processes rarely meet; a port found taken is
/// skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 15_000;
    const SPAN: u32 = 15_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 150) * 100;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}
