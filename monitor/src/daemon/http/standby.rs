//! A fleet's standby drives nothing and has no hosts to show: its HTTP answers say so and
//! who leads, read from etcd on a client of its own (the seat's is busy campaigning), at
//! most once a second however many requests come.

use crate::etcd::{Fleet, FleetView};
use mmm_common::config::Coordination;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long one read of the fleet answers requests.
const FRESH: Duration = Duration::from_secs(1);

pub struct View {
    coordination: Coordination,
    name: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    fleet: Option<Fleet>,
    last: Option<(Instant, Result<FleetView, String>)>,
}

impl View {
    pub fn new(coordination: Coordination, name: String) -> View {
        View {
            coordination,
            name,
            state: Mutex::new(State::default()),
        }
    }

    /// The standby's `/status`: the shape of `show --json`, with no host, and a
    /// `monitor` object saying that it stands by and who leads.
    pub async fn document(&self) -> serde_json::Value {
        let view = self.fleet_view().await;
        let (fleet, note) = match &view {
            Ok(FleetView {
                leader: Some((leader, term)),
                members,
                ..
            }) => (
                serde_json::json!({
                    "leader": leader,
                    "term": term,
                    "standby": members.iter().filter(|m| *m != leader).collect::<Vec<_>>(),
                }),
                format!("{leader} leads the fleet and drives the hosts: its page shows them"),
            ),
            Ok(FleetView { members, .. }) => (
                serde_json::json!({"leader": null, "term": null, "standby": members}),
                "no monitor leads the fleet at the moment (an election is under way, or etcd has lost its majority)".to_string(),
            ),
            Err(e) => (
                serde_json::Value::Null,
                format!("this monitor cannot ask etcd who leads: {e}"),
            ),
        };
        serde_json::json!({
            "monitor": {"name": self.name, "role": "standby", "note": note},
            "mode": null,
            "active_master": null,
            "writer": null,
            "network_ok": null,
            "fleet": fleet,
            "promotion": null,
            "hosts": [],
            "transitions": [],
            "failovers": [],
        })
    }

    async fn fleet_view(&self) -> Result<FleetView, String> {
        let mut state = self.state.lock().await;
        if let Some((at, view)) = &state.last {
            if at.elapsed() < FRESH {
                return view.clone();
            }
        }
        let view = self.read(&mut state).await;
        state.last = Some((Instant::now(), view.clone()));
        view
    }

    async fn read(&self, state: &mut State) -> Result<FleetView, String> {
        let fleet = match &mut state.fleet {
            Some(f) => f,
            None => {
                let f = Fleet::connect(&self.coordination, Duration::from_secs(1))
                    .await
                    .map_err(|e| crate::error_chain(&e))?;
                state.fleet.insert(f)
            }
        };
        fleet.view().await.map_err(|e| crate::error_chain(&e))
    }
}

/// The sentence of a standby document that says who leads.
pub fn who_leads(doc: &serde_json::Value) -> String {
    doc["monitor"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
