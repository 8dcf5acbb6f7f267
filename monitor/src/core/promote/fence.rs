//! The promotion's first phase: every host that may still write is fenced, confirmed by
//! its own heartbeat, by its lease running out (counted by the monitor, or ended in etcd
//! in a fleet), or by kill_host_bin.

use super::{ms, KillState, Phase};
use crate::core::{Cluster, CoreAction, FencingMethod, Millis};
use mmm_common::proto;
use mmm_common::types::CheckKind;
use std::time::Duration;

impl Cluster {
    /// When the old writer is dead, its slaves' IO threads only retry a vanished host, and
    /// a STOP SLAVE waits for them: stop them once it is fenced (never before: while it may
    /// still commit, a stopped replica lets semi-sync fall back to async and the old writer
    /// acknowledges writes no replica has), before catch-up, so that re-pointing them
    /// later is quick. Their SQL threads go on applying what they
    /// received (the survey compares what they applied). The candidate's too: the
    /// catch-up waits for what its IO thread received, which cannot grow any more. With
    /// semi-sync, MariaDB's STOP of an IO thread first connects to the master to kill its
    /// dump thread, bounded by rpl_semi_sync_slave_kill_conn_timeout (~2 s measured when
    /// the master's host is gone), which the agent's prohibit route to the vanished source
    /// cuts short. Not done in a switchover.
    pub(super) fn stop_slaves_of_dead_master(
        &mut self,
        from: Option<&str>,
        now: Millis,
        out: &mut Vec<CoreAction>,
    ) {
        let Some(old) = from.and_then(|f| self.host(f)).cloned() else {
            return;
        };
        if self.alive(&old, now) {
            return;
        }
        // Stopped early already (the writer was isolated): the promotion re-points them.
        self.isolation.forget_early_stopped();
        self.stop_io_threads_of(&old.name, out);
    }

    /// STOP SLAVE IO_THREAD on every reachable replica of `master`; returns their names.
    pub(crate) fn stop_io_threads_of(
        &mut self,
        master: &str,
        out: &mut Vec<CoreAction>,
    ) -> Vec<String> {
        let Some(old) = self.host(master).cloned() else {
            return Vec::new();
        };
        let deadline = Duration::from_millis(self.promotion_timeout());
        let slaves: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.name != old.name && h.agent_up)
            .filter(|h| {
                h.view
                    .as_ref()
                    .is_some_and(|v| v.source == Some((old.ip, old.mysql_port)))
            })
            .map(|h| h.name.clone())
            .collect();
        for s in &slaves {
            let id = self.next_id();
            out.push(CoreAction::AgentAction {
                host: s.clone(),
                id,
                action: proto::Action::StopIoThread { source: old.ip },
                deadline,
            });
        }
        slaves
    }

    pub(super) fn fence_by_lease(&mut self, now: Millis, target: &str, out: &mut Vec<CoreAction>) {
        let lease = ms(self.timing.monitor_counts_lease_over);
        // The Disconnect below turns the hold into the link's usual lease-long stay-away.
        let isolated = self.host_mut(target).and_then(|h| h.isolated_since.take());
        let fencing = self.fencing;
        let ping_ok = self
            .host(target)
            .is_some_and(|h| self.check_ok(h, CheckKind::Ping, now));
        let fleet = fencing == FencingMethod::EtcdLease;
        let Some(mut t) = self.fencing_target(target) else {
            return;
        };
        let f = &mut *t.fence;
        if f.lease_until.is_some() || f.confirmed {
            return;
        }
        // Held down since its agent and ping fell silent: nothing renewed its lease since.
        let since = isolated.unwrap_or(now);
        out.push(CoreAction::Disconnect {
            host: target.to_string(),
        });
        // In a fleet the agent's permit is its own etcd lease, which no monitor renews:
        // counting from here proves nothing. The daemon ends it and reports LeaseEnded.
        f.lease_until = Some(if fencing == FencingMethod::MonitorLease {
            since + lease
        } else {
            Millis::MAX
        });
        f.awaiting_etcd = fleet;
        if fleet {
            out.push(CoreAction::EndLease {
                host: target.to_string(),
            });
        }
        if f.kill == KillState::NotNeeded {
            f.kill = KillState::Running;
            out.push(CoreAction::KillHost {
                host: target.to_string(),
                ping_ok,
            });
        }
        t.step(
            now,
            format!(
                "'{target}' cannot confirm its demotion: connection dropped, waiting for its lease"
            ),
        );
    }

    /// In a fleet: the target's etcd lease is over (the agent gave the writer up before).
    pub(crate) fn promotion_on_lease_ended(
        &mut self,
        now: Millis,
        host: &str,
        out: &mut Vec<CoreAction>,
    ) {
        let Some(mut t) = self.fencing_target(host) else {
            return;
        };
        if std::mem::take(&mut t.fence.awaiting_etcd) {
            t.fence.lease_until = Some(now);
            t.step(
                now,
                format!("'{host}' holds no writer permit: its etcd lease ended"),
            );
        }
        self.fencing_progress(now, out);
    }

    /// Moves on to catch-up once every target is fenced; reports targets that cannot be.
    pub(super) fn fencing_progress(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let fencing = self.fencing;
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        let Phase::Fencing { targets, .. } = &mut p.phase else {
            return;
        };
        if targets.values().all(|f| f.done(now, fencing)) {
            p.step(now, "every possible writer is fenced");
            let from = p.from.clone();
            self.stop_slaves_of_dead_master(from.as_deref(), now, out);
            self.begin_catch_up(now, out);
            return;
        }
        for (t, f) in targets.iter_mut() {
            if fencing == FencingMethod::None
                && f.lease_until.is_some()
                && f.kill == KillState::NotConfigured
                && !f.stuck_reported
            {
                f.stuck_reported = true;
                out.push(CoreAction::Notify {
                    host: Some(t.clone()),
                    message: format!("Cannot fence '{t}': its agent is unreachable, fencing = \"none\" and no kill_host_bin; not promoting while it may still write"),
                });
            }
        }
    }

    /// A fencing target's heartbeat may confirm it is fenced.
    pub(crate) fn promotion_on_heartbeat(
        &mut self,
        now: Millis,
        host: &str,
        out: &mut Vec<CoreAction>,
    ) {
        let writer_ip = self.roles.writer_ip();
        let Some(view) = self.host(host).and_then(|h| h.view.clone()) else {
            return;
        };
        let Some(mut t) = self.fencing_target(host) else {
            return;
        };
        let vip_gone = !writer_ip.is_some_and(|ip| view.held_vips.contains(&ip));
        // MYSQL_UP clear is not "mysqld cannot be reached": the agent keeps it set while
        // the server may be writable (it last said read_only = 0, a lift may still run,
        // or it never answered), so clear means read_only = 1 read back before the
        // silence, or the process gone.
        if !t.fence.confirmed && vip_gone && (view.read_only || !view.mysql_up || view.self_fenced)
        {
            t.fence.confirmed = true;
            t.step(
                now,
                format!("'{host}' confirmed demoted (writer VIP removed, read-only)"),
            );
            self.fencing_progress(now, out);
        }
    }

    pub(crate) fn promotion_on_kill_host(
        &mut self,
        now: Millis,
        host: &str,
        ok: bool,
        out: &mut Vec<CoreAction>,
    ) {
        if let Some(mut t) = self.fencing_target(host) {
            t.fence.kill = KillState::Done { ok };
            t.step(
                now,
                format!(
                    "kill_host_bin ran for '{host}' ({})",
                    if ok { "ok" } else { "failed" }
                ),
            );
        }
        self.fencing_progress(now, out);
    }
}
