//! The monitor daemon: the IO shell around the pure core. One task owns the `Cluster`
//! and feeds it every event (checks, agent links, control commands, ticks); the actions
//! it returns are dispatched to agent links, the seat (the status file, or a fleet's
//! etcd: seat/), kill_host_bin and logs.

pub mod checks;
mod clock;
pub mod control_socket;
mod event_loop;
pub mod http;
mod lead;
pub mod links;
mod localtime;
pub mod metrics;
pub mod notify;
mod outbox;
pub mod persist;
pub mod ping;
pub mod reload;
pub mod seat;
mod shell;

pub use clock::Clock;
pub use lead::lead;

use mmm_common::config::{ClusterKey, Config};
use mmm_common::timing::Timing;
use seat::Place;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("reading the monitor user's password for host {host}")]
    Secret {
        host: String,
        #[source]
        source: mmm_common::config::SecretError,
    },
    #[error("claiming the status file")]
    Lock(#[from] persist::LockError),
    #[error("the monitor fleet on etcd")]
    Fleet(#[source] crate::etcd::FleetError),
    #[error("etcd key {key} belongs to another cluster (another cluster key under the same prefix): give each cluster its own [coordination] prefix")]
    ForeignPrefix { key: String },
    #[error("the fleet's epoch")]
    Epoch(#[source] mmm_common::epoch::RandomError),
    #[error("starting the HTTP listener")]
    Http(#[from] http::StartError),
    #[error("starting the control socket on {addr}")]
    Control {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`lead`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadEnded {
    /// SIGTERM (or the control socket is gone).
    Shutdown,
    /// The fleet's leadership was lost: nothing may be decided any more.
    Deposed,
    /// A fleet's leader that reaches no agent gives way to a monitor that may.
    SteppedDown,
}

/// What stays for the life of the process, whatever the monitor acts as.
pub struct Process {
    pub config: Arc<Config>,
    /// The fencing bounds, derived from `config` once.
    pub timing: Timing,
    pub key: ClusterKey,
    pub metrics: metrics::Shared,
    pub control: mpsc::Receiver<control_socket::Request>,
    pub life: Life,
    /// Held while this process drives the agents: the HTTP listener asks the event loop
    /// then, and serves a standby's own view otherwise.
    pub driving: http::Driving,
    /// Each config reloaded on SIGHUP ([`reload`]).
    pub reloads: tokio::sync::watch::Receiver<Arc<Config>>,
}

/// What ends the process.
pub struct Life {
    /// The control socket's task: it ends only when the socket could not be bound.
    listener: tokio::task::JoinHandle<std::io::Result<()>>,
    control_addr: String,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Life {
    /// Resolves when the monitor must stop: SIGTERM, or the control socket could not be
    /// bound (an operator could not reach us).
    async fn stopped(&mut self) -> Result<(), DaemonError> {
        tokio::select! {
            _ = self.stop.wait_for(|s| *s) => Ok(()),
            ended = &mut self.listener => match ended {
                Ok(Err(source)) => Err(DaemonError::Control { addr: self.control_addr.clone(), source }),
                _ => Ok(()),
            },
        }
    }
}

/// Runs the monitor until `shutdown` resolves. Alone, it claims the status file and
/// drives the agents; in a fleet (`[coordination]`) it stands by until etcd elects it.
pub async fn run(
    config: Config,
    path: std::path::PathBuf,
    key: ClusterKey,
    name: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let place = Place::claim(&config)?;
    let (ctl_tx, control) = mpsc::channel::<control_socket::Request>(64);
    let control_key = config.monitor.control.keyed().then(|| key.clone());
    let reply_timeout = config.monitor.promotion_timeout * 3 + Duration::from_secs(10);
    let ctl_addr = config.monitor.control.clone();
    let listener = tokio::spawn(control_socket::serve(
        ctl_addr.clone(),
        control_key,
        reply_timeout,
        ctl_tx.clone(),
    ));
    let metrics: metrics::Shared = Default::default();
    let driving = http::Driving::default();
    http::start(&config, &name, ctl_tx, metrics.clone(), driving.clone()).await?;
    let reloads = reload::spawn(path, config.clone(), metrics.clone());
    let mut process = Process {
        config: config.clone(),
        timing: Timing::from_config(&config),
        key,
        metrics,
        control,
        life: Life {
            listener,
            control_addr: ctl_addr.to_string(),
            stop,
        },
        driving,
        reloads,
    };
    place.run(&mut process, name).await
}

/// This host's name: a monitor's default `--name`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_unreadable| "mmm-monitor".into())
}
