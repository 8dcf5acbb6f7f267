//! SIGHUP: the monitor re-reads the config file it started with. What can change safely
//! (`mmm_common::config::reload::MONITOR_RELOADS`) reaches the core and the shell through
//! a watch channel the event loop listens to; the rest is named in the log and waits for a
//! restart; an invalid file changes nothing.

use super::shell::Shell;
use super::{metrics, seat::Seat};
use crate::core::Cluster;
use mmm_common::config::reload::{self, Daemon};
use mmm_common::config::Config;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Handles SIGHUP from now on; the receiver sees each config to run on. A handler that
/// cannot be installed is logged: SIGHUP would then stop the monitor, as it does any
/// program without one.
pub fn spawn(
    path: PathBuf,
    running: Arc<Config>,
    metrics: metrics::Shared,
) -> watch::Receiver<Arc<Config>> {
    let (tx, rx) = watch::channel(running.clone());
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "installing the SIGHUP handler: the config cannot be reloaded");
            return rx;
        }
    };
    tokio::spawn(async move {
        let mut running = running;
        while hup.recv().await.is_some() {
            tracing::info!(path = %path.display(), "SIGHUP: reloading the config");
            let mut state = metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .config_load;
            // Off the daemon's one thread: the file and every PEM and secret it names are
            // read synchronously, and a slow disk must not hold the heartbeats back.
            let (file, was) = (path.clone(), running.clone());
            let read = tokio::task::spawn_blocking(move || {
                let next = reload::reread(Daemon::Monitor, &file, &was, &mut state);
                (next, state)
            })
            .await;
            let (next, state) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reloading the config: the reading task failed; the running config stays");
                    continue;
                }
            };
            metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .config_load = state;
            if let Some(next) = next {
                running = Arc::new(next);
                tx.send_replace(running.clone());
            }
        }
    });
    rx
}

/// Applies a reloaded config in the event loop: the core reads its thresholds at each
/// use, the shell runs the new kill_host_bin and notify_command from the next event on.
pub(super) fn apply<S: Seat>(config: Arc<Config>, cluster: &mut Cluster, shell: &mut Shell<S>) {
    shell
        .kill_host_bin
        .clone_from(&config.monitor.kill_host_bin);
    // The old notifier's task ends once the notices queued to it have run.
    shell.notifier = config
        .monitor
        .notify_command
        .clone()
        .map(super::notify::Notifier::start);
    cluster.reload(config);
}
