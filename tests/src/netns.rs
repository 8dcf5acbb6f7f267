//! Network namespaces for tests: a bridge namespace and one namespace per node, linked
//! by veth pairs. Everything is removed on drop, also when the test panics: namespaces
//! deleted, every process started through [`Net::spawn`] ended by its PID.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether this process may create namespaces. Outside CI a test that cannot prints why
/// and returns; in CI (CI=true) it fails, so the integration suite is never skipped there.
pub fn require_root(test: &str) -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (network namespaces) and CI must run it: run the suite as root");
    }
    eprintln!(
        "SKIPPED {test}: needs root to create network namespaces (run `cargo xtask test` as root)"
    );
    false
}

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Every namespace and process the harness made in this process, so that a Ctrl-C
/// handler can remove them even though no destructor runs then.
static REGISTRY: Mutex<(Vec<String>, Vec<u32>)> = Mutex::new((Vec::new(), Vec::new()));
static DIRS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// Registers a directory for removal by [`cleanup_everything`].
pub fn register_dir(path: &Path) {
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

/// A directory removed normally (by its owner): nothing left to do on a signal.
pub fn unregister_dir(path: &Path) {
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| d != path);
}

fn register_ns(name: &str) {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .0
        .push(name.to_string());
}

fn register_pid(pid: u32) {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .1
        .push(pid);
}

/// Sends a signal by name (TERM, KILL, STOP, CONT, INT, HUP) to a process, without needing
/// procps' `kill` on the machine.
pub fn send_signal(pid: u32, name: &str) -> std::io::Result<()> {
    let sig = match name {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        other => return Err(std::io::Error::other(format!("unknown signal {other}"))),
    };
    // SAFETY: kill() takes no pointers; the pid belongs to a process this harness started.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Ends every process and deletes every namespace this process made (for signal
/// handlers; a normal end cleans up through `Net`'s destructor).
pub fn cleanup_everything() {
    let (names, pids) = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|p| p.into_inner()));
    for pid in &pids {
        let _ = send_signal(*pid, "KILL");
    }
    for n in names.iter().rev() {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
    }
    for d in std::mem::take(&mut *DIRS.lock().unwrap_or_else(|p| p.into_inner())) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A namespace name prefix unique on the machine (namespace names are global): the tag,
/// this process's id and a counter shared by [`Net`] and [`Pair`].
fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmmt-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Node {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

pub struct Net {
    pub prefix: String,
    pub bridge: String,
    nodes: Vec<Node>,
    children: Mutex<Vec<(String, Child)>>,
}

impl Net {
    /// A bridge namespace with nothing attached yet. Names are unique on the machine:
    /// namespace names are global.
    pub fn new(tag: &str) -> Net {
        let prefix = unique_prefix(tag);
        let bridge = format!("{prefix}-br");
        let net = Net {
            prefix,
            bridge,
            nodes: Vec::new(),
            children: Mutex::new(Vec::new()),
        };
        sh(&["ip", "netns", "add", &net.bridge]);
        register_ns(&net.bridge);
        sh(&[
            "ip",
            "-n",
            &net.bridge,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        sh(&["ip", "-n", &net.bridge, "link", "set", "br0", "up"]);
        net
    }

    /// Adds a node namespace with `eth0` (given MAC, `ip/24`) on the bridge, and lo up.
    pub fn add_node(&mut self, name: &str, ip: Ipv4Addr, mac: &str) -> &Node {
        let ns = format!("{}-{name}", self.prefix);
        let peer = format!("v{}", self.nodes.len());
        sh(&["ip", "netns", "add", &ns]);
        register_ns(&ns);
        self.nodes.push(Node {
            name: name.into(),
            ns: ns.clone(),
            ip,
            mac: mac.into(),
        });
        sh(&[
            "ip",
            "-n",
            &ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.bridge,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "address", mac]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "set",
            &peer,
            "master",
            "br0",
            "up",
        ]);
        self.nodes.last().expect("just pushed")
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Runs a command inside a node's namespace; panics when it fails.
    pub fn exec(&self, node: &str, args: &[&str]) -> Output {
        let ns = &self.node(node).ns;
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Like [`exec`](Self::exec) but returns the output whatever the exit status.
    pub fn try_exec(&self, node: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.node(node).ns])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("starting {args:?} in {node}: {e}"))
    }

    /// Starts a long-running process in a node's namespace; stdout and stderr go to
    /// `log`. `ip netns exec` execs the command, so the PID is the program's own.
    pub fn spawn(&self, node: &str, args: &[&str], log: &Path) -> u32 {
        let file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node(node).ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {node}: {e}"));
        let pid = child.id();
        register_pid(pid);
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((format!("{node}: {}", args.join(" ")), child));
        pid
    }

    /// Sends `signal` to a process this Net started, by PID.
    pub fn signal(&self, pid: u32, signal: &str) {
        let owned = self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(_, c)| c.id() == pid);
        assert!(owned, "pid {pid} was not started by this test");
        send_signal(pid, signal).unwrap_or_else(|e| panic!("signal {signal} to {pid}: {e}"));
    }

    /// Waits (bounded) for a process this Net started to exit; returns whether it did.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = children.iter().position(|(_, c)| c.id() == pid) {
                    if let Ok(Some(_)) = children[i].1.try_wait() {
                        children.remove(i);
                        return true;
                    }
                } else {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The MAC a node's neighbour table holds for `ip`, if any.
    pub fn neigh_mac(&self, node: &str, ip: Ipv4Addr) -> Option<String> {
        let out = self.try_exec(
            node,
            &["ip", "neigh", "show", &ip.to_string(), "dev", "eth0"],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    }

    /// The IPv4 addresses on a node's eth0.
    pub fn addresses(&self, node: &str) -> Vec<String> {
        let out = self.exec(node, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, c) in children.iter_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = send_signal(c.id(), "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (what, c) in children.iter_mut() {
            while let Ok(None) = c.try_wait() {
                if Instant::now() > deadline {
                    eprintln!(
                        "teardown: {what} (pid {}) ignored SIGTERM; killing it",
                        c.id()
                    );
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for n in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge])
            .status();
    }
}

/// Polls `f` every 10 ms until it returns Some or `timeout` passes. For waiting on
/// asynchronous effects; the bound is generous and never a measured claim.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` on a thread inside namespace `ns` with a current-thread tokio runtime, so
/// every socket it opens lives there (setns changes only the calling thread).
pub fn block_on_in<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    in_ns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
}

/// Moves the calling thread into namespace `ns`: sockets it opens from now on live there,
/// as do those of the threads it starts afterwards (they inherit it).
pub fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call; setns only changes
    // this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {path}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread of its own inside namespace `ns`.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Two namespaces joined by one veth pair, `eth0` in each (`10.76.0.1/30` in `near`,
/// `10.76.0.2/30` in `far`), lo up in both; removed on drop, also on panic.
///
/// Each end receives in its own NAPI thread (GRO on, threaded NAPI), as a NIC's receive
/// runs apart from the sending process. On loopback and on a plain veth the kernel does
/// the receiver's whole TCP work inside the sender's system call, so a process talking
/// to many peers there pays for their side too.
pub struct Pair {
    pub near: String,
    pub far: String,
}

/// `SIOCETHTOOL`, `ETHTOOL_STSO` and `ETHTOOL_SGRO` (linux/sockios.h, linux/ethtool.h):
/// the legacy ethtool calls for TSO and GRO; no ethtool binary needed.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _rest: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<IfReqData>() == 40);

/// Sets one legacy ethtool feature of `dev` in `ns` on or off.
fn ethtool_set(ns: &str, dev: &str, cmd: u32, on: bool) {
    in_ns(ns, || {
        // SAFETY: socket() takes no pointers; the result is checked and closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut value = EthtoolValue {
            cmd,
            data: u32::from(on),
        };
        let mut req = IfReqData {
            name: [0; libc::IFNAMSIZ],
            data: &mut value,
            _rest: [0; 16],
        };
        req.name[..dev.len()].copy_from_slice(dev.as_bytes());
        // SAFETY: req names a device and points at `value`, both alive for the call.
        let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
        let err = std::io::Error::last_os_error();
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        assert_eq!(
            rc, 0,
            "ethtool command {cmd:#x} = {on} on {dev} in {ns}: {err}"
        );
    });
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let prefix = unique_prefix(tag);
        let pair = Pair {
            near: format!("{prefix}-n"),
            far: format!("{prefix}-f"),
        };
        for ns in [&pair.near, &pair.far] {
            sh(&["ip", "netns", "add", ns]);
            register_ns(ns);
        }
        sh(&[
            "ip", "-n", &pair.near, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", &pair.far,
        ]);
        for (ns, ip) in [(&pair.near, "10.76.0.1/30"), (&pair.far, "10.76.0.2/30")] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            // veth hands a packet to the peer's NAPI only when GRO is on there and the
            // packet is not a TSO one.
            ethtool_set(ns, "eth0", ETHTOOL_STSO, false);
            ethtool_set(ns, "eth0", ETHTOOL_SGRO, true);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 1 > /sys/class/net/eth0/threaded",
            ]);
        }
        pair
    }

    /// Runs `ip -n <ns> -batch` over `lines` (one ip command each, without `ip`).
    pub fn ip_batch(&self, ns: &str, lines: &[String]) {
        let file = std::env::temp_dir().join(format!("{ns}.batch"));
        std::fs::write(&file, lines.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        let path = file.to_str().expect("a UTF-8 temporary directory");
        sh(&["ip", "-n", ns, "-batch", path]);
        let _ = std::fs::remove_file(&file);
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.near, &self.far] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
