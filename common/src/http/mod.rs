//! The read-only HTTP/1.x the agent (`agent.http`: `/writer`, `/reader`, `/health`,
//! `/metrics`) and the monitor (`monitor.http`: the live page and its API) serve: what a
//! handler sees of a request ([`request`]), the responses ([`response`]) and one bounded
//! listener on hyper ([`serve`]). Each program routes on its own; nothing served here
//! changes state: that stays on the keyed control protocol.

pub mod request;
pub mod response;
pub mod serve;

pub use request::{BadRequest, Request};
pub use response::{Response, JSON};
pub use serve::{accepted, serve, Limits};

/// What is wrong with a metric family's name under Prometheus' naming conventions, if
/// anything: our `mmm_` prefix, snake case (no colons: those are for recording rules),
/// `_total` exactly on counters, base units (seconds, not milliseconds or minutes), and
/// none of the suffixes histograms and summaries reserve.
pub fn metric_name_problem(name: &str, kind: &str) -> Option<String> {
    let snake = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let words: Vec<&str> = name.split('_').collect();
    let problem = if !name.starts_with("mmm_") {
        "does not start with mmm_"
    } else if !snake {
        "is not lower snake case"
    } else if (kind == "counter") != name.ends_with("_total") {
        "must end in _total exactly when it is a counter"
    } else if words
        .iter()
        .any(|w| ["ms", "millis", "milliseconds", "minutes", "hours", "days"].contains(w))
    {
        "uses a unit other than seconds"
    } else if ["_count", "_sum", "_bucket"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        "ends in a suffix histograms and summaries reserve"
    } else {
        return None;
    };
    Some(format!("metric {name} ({kind}) {problem}"))
}
