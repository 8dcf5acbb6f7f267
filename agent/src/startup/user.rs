//! Who the agent runs as: permissions are checked, and fixes worded, for this user.

use std::ffi::CStr;
use std::fmt;

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
    pub(super) fn owner(&self) -> String {
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
