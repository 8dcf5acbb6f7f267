//! Start-up checks: what would otherwise surface minutes later, as a refused term, an
//! unsaved lease deadline or a failed VIP step, is refused before the agent serves.
//!
//! An agent that starts and then cannot do its job is worse than one that does not start:
//! a fleet never converges around it, and the operator sees the cause, if at all, in a
//! monitor's refusal long after the deploy. So every condition here is checked once, as
//! the agent will run (after [`crate::caps::restrict`]: a root-started agent has dropped
//! CAP_DAC_OVERRIDE by then, and file access is decided as it will be from then on), and
//! every problem found is reported at once, each on one line with its fix.
//!
//! Degraded but working setups (no gratuitous ARP, no probe under `probe = "auto"`, an
//! unreadable `mysql_pid_file`) are warned about where they are detected, not here.

use crate::caps::{Capability, Held};
use mmm_common::config::{Config, Coordination, Host, Secret, SecretError};
use mmm_common::error_chain;
use mmm_common::etcd::EtcdTlsError;
use mmm_common::types::ProbeMode;
use std::ffi::CStr;
use std::fmt;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The unit file whose settings the fixes point at.
const UNIT: &str = "conf/systemd/mmm-agent.service";

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

/// Who the agent runs as: its effective uid and gid, and the user's name when the system
/// knows it. Permissions are checked against these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub name: Option<String>,
}

impl User {
    pub fn current() -> User {
        // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        User {
            uid,
            gid,
            name: user_name(uid),
        }
    }

    /// The name to give to chown and to the unit's User=.
    fn owner(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("uid {}", self.uid),
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n} (uid {}, gid {})", self.uid, self.gid),
            None => write!(f, "uid {}, gid {}", self.uid, self.gid),
        }
    }
}

/// The name of `uid` from the system's user database (NSS: /etc/passwd, LDAP...).
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data (integers and pointers); all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the size given; getpwuid_r fills `pwd`
    // with pointers into `buf` and sets `found` to `&pwd` or null.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, which is still alive.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

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

/// One reason not to start. Each names what it is about, and [`StartupError::fix`] says
/// what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("CAP_NET_ADMIN is required: without it the agent cannot add or remove VIPs")]
    NoNetAdmin,
    #[error("probe = \"required\" but CAP_BPF and CAP_PERFMON are not both held")]
    ProbeCaps,
    #[error("[agent] state_dir {path}: {step} as {user}")]
    StateDir {
        path: PathBuf,
        step: StateStep,
        user: User,
        #[source]
        source: io::Error,
    },
    #[error("[agent] state_dir {path} is not a directory")]
    StateDirNotDir { path: PathBuf, user: User },
    #[error("state file {path}: opening it to read and write as {user}")]
    StateFile {
        path: PathBuf,
        user: User,
        #[source]
        source: io::Error,
    },
    #[error("{key} as {user}")]
    Secret {
        key: String,
        user: User,
        /// What the agent needs it for.
        needed: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("[coordination] as {user}")]
    EtcdTls {
        user: User,
        #[source]
        source: EtcdTlsError,
    },
    #[error("[agent] mysql_socket {path}: reaching it as {user}")]
    MysqlSocket {
        path: PathBuf,
        user: User,
        #[source]
        source: io::Error,
    },
    #[error("{key} {name:?} does not exist here (interfaces: {}), and every VIP of {} would fail on it", present.join(", "), roles.join(", "))]
    NoInterface {
        key: String,
        name: String,
        /// The interfaces this host has (boxed slices keep every result small).
        present: Box<[String]>,
        /// The roles with VIPs this host may hold.
        roles: Box<[String]>,
        /// The interface that holds the host's own ip, if any.
        holder: Option<(Ipv4Addr, String)>,
    },
    #[error("{key} {name:?} has no Ethernet address: VIP steps look it up and announce by gratuitous ARP")]
    NoEthernet { key: String, name: String },
}

impl StartupError {
    /// What to change so the agent starts.
    pub fn fix(&self) -> String {
        match self {
            StartupError::NoNetAdmin | StartupError::ProbeCaps => format!(
                "grant it (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON, as {UNIT} does){}",
                if matches!(self, StartupError::ProbeCaps) {
                    ", or set probe = \"auto\""
                } else {
                    ""
                }
            ),
            StartupError::StateDir { user, source, .. } => {
                let mut fix = state_dir_fix(user);
                if source.kind() == io::ErrorKind::ReadOnlyFilesystem {
                    fix.push_str(
                        " (systemd's ProtectSystem=strict leaves only RuntimeDirectory= and ReadWritePaths= writable)",
                    );
                }
                fix
            }
            StartupError::StateDirNotDir { user, .. } => state_dir_fix(user),
            StartupError::StateFile { user, .. } => format!(
                "chown it to {} (an agent started as another user left it?), or remove it (a removed lease makes a restarted writer give its role up)",
                user.owner()
            ),
            StartupError::Secret { user, needed, .. } => format!(
                "make it readable by {} (owned by it, mode 0600): the agent needs it {needed}",
                user.owner()
            ),
            StartupError::EtcdTls { user, .. } => format!(
                "make it readable by {}: without it the agent never holds its etcd lease, the writer permit",
                user.owner()
            ),
            StartupError::MysqlSocket { user, .. } => format!(
                "let {} reach it (the socket's directories searchable, the socket writable; MariaDB's /run/mysqld is 0755 and the socket 0777), or leave mysql_socket empty (the host's ip:mysql_port)",
                user.owner()
            ),
            StartupError::NoInterface { holder, .. } => match holder {
                Some((ip, iface)) => {
                    format!("{ip}, this host's ip, is on {iface:?}: set cluster_interface = {iface:?}")
                }
                None => "set cluster_interface to the interface on the cluster's network".into(),
            },
            StartupError::NoEthernet { .. } => {
                "set cluster_interface to the Ethernet interface on the cluster's network".into()
            }
        }
    }
}

fn state_dir_fix(user: &User) -> String {
    format!(
        "create it owned by {} (systemd: RuntimeDirectory=mmm in the unit, as {UNIT} does), or set [agent] state_dir",
        user.owner()
    )
}

/// Every reason not to start, one line each: what failed, the system's reason, the fix.
#[derive(Debug, thiserror::Error)]
pub struct Refusals(pub Vec<StartupError>);

impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}; fix: {}", error_chain(e), e.fix())?;
        }
        Ok(())
    }
}

/// Runs every start-up check for `host` as the agent runs now (`held` after
/// [`crate::caps::restrict`]).
pub fn check(config: &Config, host: &Host, held: &Held, user: &User) -> Result<(), Refusals> {
    let mut found = Vec::new();
    if !held.has(Capability::CAP_NET_ADMIN) {
        found.push(StartupError::NoNetAdmin);
    }
    if config.agent.probe == ProbeMode::Required
        && !(held.has(Capability::CAP_BPF) && held.has(Capability::CAP_PERFMON))
    {
        found.push(StartupError::ProbeCaps);
    }
    match state_dir(&config.agent.state_dir, &host.name, user) {
        // The files in it are only worth checking in a directory the agent can use.
        Ok(()) => found.extend(state_files(&config.agent.state_dir, &host.name, user)),
        Err(e) => found.push(e),
    }
    found.extend(secrets(host, user));
    if let Some(c) = &config.coordination {
        found.extend(etcd_tls(c, user));
    }
    if let Some(socket) = &config.agent.mysql_socket {
        found.extend(mysql_socket(socket, user));
    }
    match interfaces() {
        Ok(present) => found.extend(interface(config, host, &present)),
        // Not a reason to refuse: the VIP steps name a missing interface themselves.
        Err(e) => {
            tracing::warn!(error = %e, "interfaces not listed: cluster_interface not checked")
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Refusals(found))
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
fn secrets(host: &Host, user: &User) -> Vec<StartupError> {
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
fn etcd_tls(c: &Coordination, user: &User) -> Option<StartupError> {
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
fn mysql_socket(path: &Path, user: &User) -> Option<StartupError> {
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

/// An interface of this host: its name, whether it has an Ethernet address, and its IPv4
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub ethernet: bool,
    pub ipv4: Vec<Ipv4Addr>,
}

/// The interfaces of this network namespace (getifaddrs: every link, up or down).
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list it allocated in `head`; freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: Vec<Interface> = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let i = match out.iter().position(|i| i.name == name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name,
                    ..Interface::default()
                });
                out.len() - 1
            }
        };
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a socket address whose family field comes first; the
        // reads below are of the structure that family names, unaligned to be safe.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                let sin =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_in) };
                out[i]
                    .ipv4
                    .push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            libc::AF_PACKET => {
                let sll =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_ll) };
                out[i].ethernet = sll.sll_halen == 6;
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs; nothing borrowed from the list outlives this.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// `host`'s cluster_interface must exist and have an Ethernet address when the host may
/// hold a role with VIPs (every VIP step looks it up). A host that never holds a VIP never
/// uses it: the default "eth0" must not stop such an agent on a host without one.
pub fn interface(config: &Config, host: &Host, present: &[Interface]) -> Option<StartupError> {
    let roles: Vec<String> = config
        .roles
        .iter()
        .filter(|r| !r.ips.is_empty() && r.hosts.contains(&host.name))
        .map(|r| format!("role {}", r.name))
        .collect();
    if roles.is_empty() {
        return None;
    }
    let key = format!("hosts.{}.cluster_interface", host.name);
    let name = &host.cluster_interface;
    match present.iter().find(|i| i.name == *name) {
        Some(i) if i.ethernet => None,
        Some(_) => Some(StartupError::NoEthernet {
            key,
            name: name.clone(),
        }),
        None => Some(StartupError::NoInterface {
            key,
            name: name.clone(),
            present: present.iter().map(|i| i.name.clone()).collect(),
            roles: roles.into_boxed_slice(),
            holder: present
                .iter()
                .find(|i| i.ipv4.contains(&host.ip))
                .map(|i| (host.ip, i.name.clone())),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmm-startup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn user() -> User {
        User {
            uid: 998,
            gid: 997,
            name: Some("mmm".into()),
        }
    }

    fn line(e: StartupError) -> String {
        Refusals(vec![e]).to_string()
    }

    #[test]
    fn a_usable_state_dir_is_created_and_the_check_leaves_nothing_behind() {
        let d = dir("ok").join("nested");
        state_dir(&d, "db1", &user()).unwrap();
        assert!(d.is_dir(), "a missing state_dir is created");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert!(left.is_empty(), "the check left {left:?}");
        // Existing state files the agent can open are fine.
        std::fs::write(d.join("db1.lease"), "x").unwrap();
        std::fs::write(d.join("db1.term"), "3\n").unwrap();
        assert!(state_files(&d, "db1", &user()).is_empty());
        let _ = std::fs::remove_dir_all(d.parent().unwrap());
    }

    #[test]
    fn a_state_dir_under_a_file_is_refused_naming_the_path_the_user_and_the_fix() {
        let d = dir("under-file");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("file"), "").unwrap();
        let state = d.join("file").join("mmm");
        let e = state_dir(&state, "db1", &user()).unwrap_err();
        assert!(
            matches!(&e, StartupError::StateDir { step: StateStep::LookUp, source, .. } if source.raw_os_error() == Some(libc::ENOTDIR)),
            "{e:?}"
        );
        let text = line(e);
        for needle in [
            state.to_str().unwrap(),
            "mmm (uid 998, gid 997)",
            "Not a directory",
            "create it owned by mmm (systemd: RuntimeDirectory=mmm in the unit, as conf/systemd/mmm-agent.service does), or set [agent] state_dir",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert!(!text.contains('\n'), "one line: {text}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_where_the_state_dir_should_be_is_refused() {
        let d = dir("is-file");
        std::fs::create_dir_all(&d).unwrap();
        let state = d.join("mmm");
        std::fs::write(&state, "").unwrap();
        let e = state_dir(&state, "db1", &user()).unwrap_err();
        assert!(matches!(e, StartupError::StateDirNotDir { .. }), "{e:?}");
        assert!(line(e).contains("is not a directory; fix: create it owned by mmm"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_state_file_the_agent_cannot_open_is_refused() {
        let d = dir("files");
        // A directory where the term file should be: its replacement could never be
        // renamed over it.
        std::fs::create_dir_all(d.join("db1.term")).unwrap();
        std::fs::create_dir_all(d.join("db2.term")).unwrap();
        let found = state_files(&d, "db1", &user());
        assert_eq!(found.len(), 1, "{found:?}");
        let text = line(found.into_iter().next().unwrap());
        assert!(
            text.contains(d.join("db1.term").to_str().unwrap())
                && text.contains("as mmm (uid 998, gid 997)")
                && text.contains("chown it to mmm"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_running_user_is_named() {
        let me = User::current();
        let proc_uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1)?.parse::<u32>().ok());
        assert_eq!(Some(me.uid), proc_uid);
        if me.uid == 0 {
            assert_eq!(me.name.as_deref(), Some("root"));
        }
        assert!(me.to_string().contains(&format!("uid {}", me.uid)));
        let nameless = User {
            uid: 4242,
            gid: 4242,
            name: None,
        };
        assert_eq!(nameless.to_string(), "uid 4242, gid 4242");
        assert!(state_dir_fix(&nameless).starts_with("create it owned by uid 4242 "));
    }

    #[test]
    fn interfaces_lists_loopback_with_its_address() {
        let all = interfaces().unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.ipv4.contains(&Ipv4Addr::LOCALHOST), "{lo:?}");
    }

    /// `reader`: db1 and db2 may hold a reader VIP; without it no host holds any VIP.
    fn config(interface: &str, reader: bool) -> Config {
        let reader = if reader {
            "[roles.reader]\nmode = \"balanced\"\nhosts = [\"db1\", \"db2\"]\nips = [\"10.0.0.101\"]"
        } else {
            ""
        };
        let text = format!(
            r#"
[defaults]
cluster_interface = "{interface}"
agent_password = "a"
monitor_password = "m"
replication_password = "r"
[hosts.db1]
ip = "10.0.0.11"
mode = "master"
peer = "db2"
[hosts.db2]
ip = "10.0.0.12"
mode = "master"
peer = "db1"
[roles.writer]
mode = "exclusive"
hosts = ["db1", "db2"]
ips = []
{reader}
[monitor]
ping_ips = ["10.0.0.1"]
[security]
key = "{}"
"#,
            "ab".repeat(32)
        );
        Config::parse(&text, Path::new("test.toml")).unwrap()
    }

    fn iface(name: &str, ethernet: bool, ipv4: &[Ipv4Addr]) -> Interface {
        Interface {
            name: name.into(),
            ethernet,
            ipv4: ipv4.to_vec(),
        }
    }

    #[test]
    fn a_missing_cluster_interface_is_refused_only_where_vips_would_use_it() {
        let here = [
            iface("lo", true, &[Ipv4Addr::LOCALHOST]),
            iface("ens3", true, &[Ipv4Addr::new(10, 0, 0, 11)]),
            iface("wg0", false, &[]),
        ];
        let c = config("eth0", true);
        let e = interface(&c, c.host("db1").unwrap(), &here).expect("refused");
        let text = line(e);
        assert!(
            text.contains("hosts.db1.cluster_interface \"eth0\" does not exist here (interfaces: lo, ens3, wg0), and every VIP of role reader would fail on it")
                && text.contains("fix: 10.0.0.11, this host's ip, is on \"ens3\": set cluster_interface = \"ens3\""),
            "{text}"
        );
        // The host's ip elsewhere: no interface to suggest.
        let e = interface(&c, c.host("db2").unwrap(), &here).expect("refused");
        assert!(line(e).contains("fix: set cluster_interface to the interface"));
        // No role with VIPs: the interface is never used, the default must not stop it.
        let c = config("eth0", false);
        assert!(interface(&c, c.host("db1").unwrap(), &here).is_none());
        let c = config("ens3", true);
        assert!(interface(&c, c.host("db1").unwrap(), &here).is_none());
        let c = config("wg0", true);
        assert!(matches!(
            interface(&c, c.host("db1").unwrap(), &here),
            Some(StartupError::NoEthernet { .. })
        ));
    }

    #[test]
    fn an_unreadable_replication_password_is_refused_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("secret");
        std::fs::create_dir_all(&d).unwrap();
        // Private, so only the read itself fails.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = config("eth0", false);
        let mut host = c.hosts.remove(0);
        // A directory cannot be read as a file, whoever the agent runs as.
        host.replication_password = Secret::File(d.clone());
        let found = secrets(&host, &user());
        assert_eq!(found.len(), 1, "{found:?}");
        let text = line(found.into_iter().next().unwrap());
        assert!(
            text.starts_with("hosts.db1.replication_password_file as mmm (uid 998, gid 997): reading secret file")
                && text.contains("make it readable by mmm"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_capabilities_keep_the_words_operators_grep_for() {
        let text = line(StartupError::NoNetAdmin);
        assert!(
            text.starts_with("CAP_NET_ADMIN is required") && text.contains("AmbientCapabilities="),
            "{text}"
        );
        assert!(line(StartupError::ProbeCaps).ends_with("or set probe = \"auto\""));
    }
}
