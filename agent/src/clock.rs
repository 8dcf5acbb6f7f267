//! The one clock of the agent's fencing: CLOCK_BOOTTIME, read by [`Boot::now`] and
//! waited on by [`BootTimer`].
//!
//! Why not tokio's timers: they run on CLOCK_MONOTONIC, which stops while the host is
//! suspended. A lease deadline kept on CLOCK_BOOTTIME but waited for with a monotonic
//! sleep fires late by the whole suspension: the host wakes up still holding the writer
//! VIP while the monitor, whose clock did not stop, has long counted it fenced and made
//! another writer. A timerfd armed with the absolute deadline on CLOCK_BOOTTIME fires the
//! moment that deadline is reached, suspended time included.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Nanoseconds of CLOCK_BOOTTIME: monotonic, counts suspended time, shared by every
/// process of this boot (an agent's successor reads the same clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Boot(pub(crate) u64);

impl Boot {
    #[cfg(test)]
    pub const ZERO: Boot = Boot(0);

    pub fn now() -> Boot {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed
        // `ts`; CLOCK_BOOTTIME exists on every kernel this agent supports.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME)");
        Boot(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    pub fn after(self, d: Duration) -> Boot {
        Boot(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    pub fn before(self, d: Duration) -> Boot {
        Boot(
            self.0
                .saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    /// Time left until `self`, or None once it has passed.
    pub fn left(self, now: Boot) -> Option<Duration> {
        (self.0 > now.0).then(|| Duration::from_nanos(self.0 - now.0))
    }

    fn timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: (self.0 / 1_000_000_000) as libc::time_t,
            tv_nsec: (self.0 % 1_000_000_000) as libc::c_long,
        }
    }
}

/// Setting up or waiting on the CLOCK_BOOTTIME timer failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} (CLOCK_BOOTTIME timerfd)")]
pub struct TimerError {
    op: &'static str,
    #[source]
    source: io::Error,
}

fn failed(op: &'static str) -> impl FnOnce(io::Error) -> TimerError {
    move |source| TimerError { op, source }
}

/// A timer on CLOCK_BOOTTIME, re-armed for each wait: one file descriptor for the life of
/// the task that waits on it. Should the kernel refuse the timerfd (it never has on the
/// kernels we support), the error is logged once and the wait falls back to tokio's
/// monotonic timer: late by a suspension, but never never.
pub struct BootTimer {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Default for BootTimer {
    fn default() -> BootTimer {
        BootTimer::new()
    }
}

impl BootTimer {
    pub fn new() -> BootTimer {
        match timerfd() {
            Ok(fd) => BootTimer { fd: Some(fd) },
            Err(e) => {
                Self::fall_back(&e);
                BootTimer { fd: None }
            }
        }
    }

    fn fall_back(e: &TimerError) {
        tracing::error!(
            error = %mmm_common::error_chain(e),
            "the lease's CLOCK_BOOTTIME timer failed: waiting on the monotonic clock instead, which a host suspend makes late"
        );
    }

    /// Returns once CLOCK_BOOTTIME reaches `deadline` (at once if it has).
    pub async fn wait_until(&mut self, deadline: Boot) {
        if let Some(fd) = &self.fd {
            match wait_on(fd, deadline).await {
                Ok(()) => return,
                Err(e) => {
                    Self::fall_back(&e);
                    self.fd = None;
                }
            }
        }
        if let Some(left) = deadline.left(Boot::now()) {
            tokio::time::sleep(left).await;
        }
    }

    #[cfg(test)]
    fn uses_the_boot_clock(&self) -> bool {
        self.fd.is_some()
    }
}

fn timerfd() -> Result<AsyncFd<OwnedFd>, TimerError> {
    // SAFETY: timerfd_create takes no pointers; a non-negative return is a new file
    // descriptor that nothing else owns, handed to OwnedFd at once.
    let raw = unsafe {
        libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
    };
    if raw < 0 {
        return Err(failed("creating the timer")(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a valid descriptor returned above and owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the OwnedFd keeps the timerfd open for as long as the AsyncFd holds it, and
    // always answers the same descriptor.
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
        .map_err(|e| failed("registering the timer with the runtime")(e.into()))
}

async fn wait_on(fd: &AsyncFd<OwnedFd>, deadline: Boot) -> Result<(), TimerError> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        // An all-zero it_value disarms the timer: a deadline at 0 is one that passed.
        it_value: deadline.max(Boot(1)).timespec(),
    };
    // SAFETY: the descriptor is a timerfd owned by `fd`; `spec` is a valid itimerspec
    // borrowed for the call; the old value is not asked for (null).
    let rc = unsafe {
        libc::timerfd_settime(
            fd.get_ref().as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(failed("arming the timer")(io::Error::last_os_error()));
    }
    loop {
        let mut guard = fd
            .readable()
            .await
            .map_err(failed("waiting for the timer"))?;
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into the valid, exclusively borrowed buffer from
        // the timerfd owned by `fd`.
        let n = unsafe {
            libc::read(
                fd.get_ref().as_raw_fd(),
                expirations.as_mut_ptr().cast(),
                expirations.len(),
            )
        };
        if n == 8 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            // Re-armed since the last expiry was flagged, or a spurious wakeup: wait on.
            guard.clear_ready();
            continue;
        }
        return Err(failed("reading the timer")(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timer_fires_at_its_deadline_on_the_boot_clock() {
        let mut timer = BootTimer::new();
        assert!(timer.uses_the_boot_clock());
        let deadline = Boot::now().after(Duration::from_millis(30));
        timer.wait_until(deadline).await;
        assert!(Boot::now() >= deadline, "fired before its deadline");
    }

    #[tokio::test]
    async fn a_passed_deadline_returns_at_once_and_a_rearm_replaces_the_last() {
        let mut timer = BootTimer::new();
        assert!(timer.uses_the_boot_clock());
        timer
            .wait_until(Boot::now().before(Duration::from_secs(1)))
            .await;
        // Armed far away, then re-armed near: the near one is what is waited for.
        let far = Boot::now().after(Duration::from_secs(3600));
        let waited = tokio::time::timeout(Duration::from_millis(20), timer.wait_until(far)).await;
        assert!(waited.is_err(), "a deadline an hour away fired");
        let near = Boot::now().after(Duration::from_millis(10));
        tokio::time::timeout(Duration::from_secs(60), timer.wait_until(near))
            .await
            .expect("the re-armed timer never fired");
        assert!(Boot::now() >= near);
    }

    #[test]
    fn the_deadline_converts_to_a_timespec_exactly() {
        let ts = Boot(12_345_678_901).timespec();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (12, 345_678_901));
    }
}
