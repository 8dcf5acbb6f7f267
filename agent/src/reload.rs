//! SIGHUP: the agent re-reads the config file it started with, refuses an invalid one
//! (and says so in `/metrics`), and names each changed key it reads as needing a restart:
//! it applies none at run time yet (`mmm_common::config::reload::AGENT_RELOADS`).

use mmm_common::config::reload::{self, Daemon, LoadState};
use mmm_common::config::Config;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use tokio::signal::unix::{signal, SignalKind};

/// One agent per process: its loads are the process's, and `/metrics` reads them here
/// rather than through the agent's state, which knows nothing of its config file.
static LOADS: LazyLock<Mutex<LoadState>> = LazyLock::new(Default::default);

/// The outcome of the config's loads so far, for `/metrics`.
pub fn load_state() -> LoadState {
    *LOADS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handles SIGHUP from now on, comparing each read of `path` with `running`. A handler
/// that cannot be installed is logged: SIGHUP would then stop the agent (its VIPs and
/// read_only left as they are, as on SIGTERM).
pub fn spawn(path: PathBuf, running: Config) {
    // From start: the timestamp is the start's load, not the first scrape's.
    let _ = load_state();
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "installing the SIGHUP handler: the config cannot be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(path = %path.display(), "SIGHUP: reloading the config");
            let mut state = load_state();
            // Nothing is applied: the running config stays the one compared against, so
            // each reload names every key still waiting for the restart.
            let _ = reload::reread(Daemon::Agent, &path, &running, &mut state);
            *LOADS.lock().unwrap_or_else(|p| p.into_inner()) = state;
        }
    });
}
