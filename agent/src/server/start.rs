//! Wiring: the agent's state built from the config, and its tasks started.

use crate::authority::Authority;
use crate::fence::{lease_task, wake_task};
use crate::lease::{Lease, Renewal};
use crate::mysql::{Mysql, SemiSyncHold};
use crate::reconcile::{error_chain, Executor, Scope};
use crate::reconciler::reconciler;
use crate::status::Status;
use crate::term::Terms;
use mmm_common::config::{ClusterKey, Config};
use mmm_common::mysql::Target;
use mmm_common::timing::Timing;
use mmm_common::types::Fencing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::Instrument;

use super::{Agent, Resources, StartError};

impl Agent {
    /// Binds the listener and starts the reconciler; `serve` then accepts monitors.
    pub async fn start(
        config: Config,
        host_name: &str,
        key: ClusterKey,
        resources: Resources,
    ) -> Result<(Arc<Agent>, TcpListener), StartError> {
        let host = config
            .host(host_name)
            .cloned()
            .ok_or_else(|| StartError::UnknownHost(host_name.into()))?;
        let scope = Scope::new(&config, &host);
        let agent_password = host.agent_password.reveal()?;
        let timeout = config.checks.mysql.timeout.max(Duration::from_millis(500));
        // Its own server at the host's ip (or socket), as MMM's agent reached it: grants
        // like 'mmm_agent'@'10.0.0.%' and a bind-address of the host's ip keep working.
        let target = match config.agent.mysql_socket.as_deref() {
            Some(socket) => Target::socket(socket, &host.agent_user, &agent_password),
            None => Target::tcp(&host, &host.agent_user, &agent_password),
        };
        let mysql = |t| Mysql::new(target.clone(), t);
        let (commands, rx) = mpsc::channel(16);
        let addr = SocketAddr::from((host.ip, host.agent_port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let semi_sync = SemiSyncHold::persisted(&config.agent.state_dir, &host.name);
        let timing = Timing::from_config(&config);
        // In a fleet the permit is the agent's own etcd lease of session_ttl, renewed by
        // the agent itself (crate::etcd); without one, the monitor renews `agent.lease`.
        let (length, renewal) = match timing.etcd {
            Some(e) => (e.ttl, Renewal::Etcd),
            None => (timing.lease, Renewal::Monitor),
        };
        // A frame that waited through a freeze renews nothing (Lease::with_freeze_detection):
        // a gap under the monitor's slack over the agent's deadline is harmless.
        let freeze_gap = timing.freeze_gap;
        let lease = Arc::new(
            Lease::new(
                length,
                config.agent.fencing == Fencing::Lease,
                renewal,
                &config.agent.state_dir,
                &host.name,
            )
            .with_freeze_detection(freeze_gap),
        );
        Lease::watch_freezes(lease.clone());
        let terms = Terms::load(
            config.coordination.is_some(),
            &config.agent.state_dir,
            &host.name,
        );
        let election = config.coordination.as_ref().map(|c| {
            let e = Arc::new(crate::election::Election::new(
                c,
                &key,
                config.monitor.agent_timeout,
            ));
            tokio::spawn(e.clone().run().instrument(tracing::info_span!("election")));
            e
        });
        if let Some(c) = &config.coordination {
            let keeper =
                crate::etcd::Keeper::new(c, &config.agent.state_dir, &host.name, lease.clone());
            tokio::spawn(keeper.run().instrument(tracing::info_span!("etcd")));
        }
        let lease_netlink = resources.netlink.clone();
        let routes = crate::route::Routes::new(&resources.netlink);
        match routes.clear_stale().await {
            Ok(cleared) if !cleared.is_empty() => {
                tracing::warn!(?cleared, "removed prohibit routes a previous agent left")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %error_chain(&e), "stale prohibit routes not checked"),
        }
        let guards = crate::reconcile::VipGuards {
            rst: resources.rst.map(Arc::new),
            garp: resources
                .garp
                .map(|g| Arc::new(crate::garp::Announcer::new(g))),
            host: scope
                .writer_vips()
                .is_empty()
                .then_some((host.ip, host.mysql_port)),
            host_fenced: Default::default(),
        };
        let mysqld_exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let grants = Arc::new(crate::mysql::Grants::default());
        let executor = Executor {
            lease: lease.clone(),
            grants: grants.clone(),
            writer_vips: scope.writer_vips(),
            guards: guards.clone(),
            mysqld_exited: mysqld_exited.clone(),
            netlink: resources.netlink,
            interface: host.cluster_interface.clone(),
            garp_count: config.agent.garp_count,
            garp_interval: config.agent.garp_interval,
            mysql: Arc::new(mysql(timeout)),
            mysql_port: host.mysql_port,
            max_kill_retries: config.agent.max_kill_retries,
            spare_users: vec![host.agent_user.clone(), host.monitor_user.clone()],
            block_users: config.agent.block_users.clone(),
            never_blocked: vec![
                host.agent_user.clone(),
                host.monitor_user.clone(),
                host.replication_user.clone(),
            ],
            semi_sync: semi_sync.clone(),
        };
        let wake_mysql = mysql(timeout);
        let agent = Arc::new(Agent {
            actions_mysql: mysql(timeout),
            status_mysql: mysql(timeout),
            config,
            timing,
            host,
            key,
            scope,
            status: watch::Sender::new(Status::default()),
            authority: Authority::new(terms, election, lease.clone()),
            lease,
            mysqld_exited,
            grants,
            followed: std::sync::Mutex::new(None),
            commands,
            probe_events: broadcast::channel(64).0,
            semi_sync,
            replication_changes: tokio::sync::Mutex::new(()),
            routes,
            failsafe: Default::default(),
            counters: Default::default(),
        });
        let woken = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(
            reconciler(agent.clone(), executor, rx, woken.clone())
                .instrument(tracing::info_span!("reconcile")),
        );
        // Its own connection: the reconciler's may be stuck behind a hung statement.
        tokio::spawn(
            wake_task(agent.clone(), wake_mysql, woken).instrument(tracing::info_span!("wake")),
        );
        // Parked VIPs live only as long as they are refreshed (a dead agent's program soon
        // stops answering for them), by a task of their own: a reconcile pass can take
        // longer than their bound.
        if let Some(rst) = guards.rst.clone() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::rst::PARK_REFRESH);
                loop {
                    tick.tick().await;
                    rst.refresh_parked();
                }
            });
        }
        tokio::spawn(
            lease_task(agent.clone(), lease_netlink, guards)
                .instrument(tracing::info_span!("lease")),
        );
        Ok((agent, listener))
    }
}
