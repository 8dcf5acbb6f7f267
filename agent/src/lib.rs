//! The mmm agent: one module per kernel interface, each behind a narrow interface
//! (keepalived's split), and the server that applies what the monitor asks.
//!
//! - [`vip`]: addresses on the cluster interface, through rtnetlink
//! - [`garp`]: gratuitous ARP, built purely and sent from a send-only packet socket
//! - [`caps`]: the four capabilities the agent keeps, and what each one enables
//! - [`rst`]: a tc program that answers TCP to a just-released VIP with RST
//! - [`sockdiag`]: resets the connections a dead mysqld leaves behind (SOCK_DESTROY), lists
//!   who listens on a port
//! - [`discover`]: the mysqld listening on mysql_port, for the probe (no pid file needed)
//! - [`reconcile`]: desired state -> ordered steps, and their execution
//! - [`lease`]: lease fencing: who renews, the deadline kept across restarts
//! - [`fence`]: the lease's task (writer VIPs removed through netlink at the deadline,
//!   each request given up at its bound) and the wake task (a hung mysqld made read-only
//!   the moment it answers)
//! - [`reconciler`]: the one task that changes VIPs and read_only, running `reconcile`'s
//!   pure plan; [`status`]: what heartbeats and status reports say; [`actions`]: the
//!   monitor's actions
//! - [`term`]: a monitor fleet's leadership terms: the highest seen, kept across restarts
//! - [`authority`]: whether a monitor may drive this host: its term, etcd's election and
//!   the lease's sessions, admitted and confirmed in one place
//! - [`etcd`]: the agent's own etcd lease, its writer permit in a fleet
//! - [`server`]: the authenticated protocol towards the monitor
//! - [`http`]: read-only health checks for load balancers (`/writer`, `/reader`,
//!   `/health`) and `/metrics`
//! - [`startup`]: what is refused at start rather than minutes later (state_dir, files,
//!   capabilities, the cluster interface)

pub mod actions;
pub mod admission;
pub mod authority;
pub mod caps;
pub mod clock;
pub mod discover;
pub mod election;
pub mod etcd;
pub mod failsafe;
pub mod fence;
pub mod garp;
pub mod http;
pub mod lease;
pub mod mysql;
pub mod probe;
pub mod reconcile;
pub mod reconciler;
pub mod reload;
pub mod route;
pub mod rst;
pub mod server;
pub mod sockdiag;
pub mod startup;
pub mod state_dir;
pub mod status;
pub mod term;
pub mod vip;
pub mod witness;
