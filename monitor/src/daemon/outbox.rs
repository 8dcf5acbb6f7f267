//! A link's outbox: its events for the core, waiting while the core's channel is full,
//! so that a core far behind never holds up the link's heartbeats (daemon/links.rs).

use crate::core::Event;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// A link's events for the core, in order, sent as the core's channel has room: a core
/// that falls behind (the start-up of a thousand hosts, every one of them news) must not
/// hold up this link's heartbeats, which renew the agent's lease whatever the core is
/// doing. A view waiting there is replaced by a newer one; nothing else is merged.
#[derive(Default)]
pub(super) struct Outbox {
    waiting: VecDeque<Event>,
    /// This link's place in the queue for room in the core's channel, kept across the
    /// link's loop: a reservation made anew on each pass would join the back of the queue
    /// each time, and in a long overload some links (a probe's "mysqld died") would wait
    /// while others got through again and again.
    room: Option<Room>,
}

type Room = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<mpsc::OwnedPermit<Event>, mpsc::error::SendError<()>>,
            > + Send,
    >,
>;

impl Outbox {
    pub(super) fn post(&mut self, ev: Event) {
        if let (Event::AgentHeartbeat { .. }, Some(last @ Event::AgentHeartbeat { .. })) =
            (&ev, self.waiting.back_mut())
        {
            *last = ev;
            return;
        }
        self.waiting.push_back(ev);
    }

    /// Hands the first waiting event to the core once its channel has room; never
    /// returns while nothing waits. Cancel-safe: cancelled, it keeps its place in the
    /// queue for the next call. Err: the core is gone (the daemon is stopping).
    pub(super) async fn deliver(
        &mut self,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), mpsc::error::SendError<()>> {
        if self.waiting.is_empty() {
            return std::future::pending().await;
        }
        let room = self
            .room
            .get_or_insert_with(|| Box::pin(events.clone().reserve_owned()));
        let granted = room.as_mut().await;
        self.room = None;
        let permit = granted?;
        if let Some(ev) = self.waiting.pop_front() {
            permit.send(ev);
        }
        Ok(())
    }

    /// Everything still waiting, for the link's last sends before it reports its end
    /// (its place in the channel's queue is given up: those sends wait their turn).
    pub(super) fn take_all(&mut self) -> VecDeque<Event> {
        self.room = None;
        std::mem::take(&mut self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::Outbox;
    use crate::core::{AgentView, Event};
    use mmm_common::proto::*;

    fn view(epoch: u32) -> Event {
        Event::AgentHeartbeat {
            host: "db1".into(),
            view: AgentView::from_heartbeat(&heartbeat(epoch)),
        }
    }

    fn heartbeat(applied_epoch: u32) -> AgentHeartbeat {
        AgentHeartbeat {
            applied_epoch,
            uptime_s: 1,
            flags: hb_flags::READ_ONLY | hb_flags::MYSQL_UP,
            probe: ProbeState::Off,
            source: None,
            held_vips: vec![],
        }
    }

    #[test]
    fn a_waiting_view_is_replaced_by_a_newer_one_and_nothing_else_is_merged() {
        let mut outbox = Outbox::default();
        outbox.post(view(1));
        outbox.post(view(2));
        outbox.post(Event::Probe {
            host: "db1".into(),
            kind: ProbeEventKind::ProcessExit,
        });
        outbox.post(view(3));
        outbox.post(view(4));
        let epochs: Vec<Option<u32>> = outbox
            .waiting
            .iter()
            .map(|e| match e {
                Event::AgentHeartbeat { view, .. } => Some(view.applied_epoch),
                _ => None,
            })
            .collect();
        assert_eq!(epochs, [Some(2), None, Some(4)]);
    }
}
