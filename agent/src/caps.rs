//! Least privilege: the agent starts with CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and
//! CAP_PERFMON, drops every other capability at once, and says which feature a missing one
//! disables; once the probe is loaded and the ARP socket is open it keeps CAP_NET_ADMIN
//! alone ([`drop_after_start`]).

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

/// What each capability we keep is for.
pub const KEPT: &[(Capability, &str)] = &[
    (
        Capability::CAP_NET_ADMIN,
        "adding and removing VIPs (rtnetlink)",
    ),
    (Capability::CAP_NET_RAW, "gratuitous ARP (packet socket)"),
    (
        Capability::CAP_BPF,
        "the eBPF liveness probe (loading programs)",
    ),
    (
        Capability::CAP_PERFMON,
        "the eBPF liveness probe (tracing attach)",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("{op} the {set:?} capability set")]
    Set {
        op: &'static str,
        set: CapSet,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The capabilities this process holds after [`restrict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held(pub CapsHashSet);

impl Held {
    pub fn has(&self, cap: Capability) -> bool {
        self.0.contains(&cap)
    }

    /// One line per kept capability that is missing, naming the feature it disables.
    pub fn missing(&self) -> Vec<String> {
        KEPT.iter()
            .filter(|(c, _)| !self.has(*c))
            .map(|(c, what)| format!("{c} missing: {what} unavailable"))
            .collect()
    }

    pub fn names(&self) -> String {
        let mut v: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        v.sort();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// Reduces every capability set to (at most) the four we keep. The bounding set can only
/// be reduced with CAP_SETPCAP; without it (an unprivileged start with ambient
/// capabilities) it is already what the service manager gave us.
pub fn restrict() -> Result<Held, CapsError> {
    let keep: CapsHashSet = KEPT.iter().map(|(c, _)| *c).collect();
    let permitted = caps::read(None, CapSet::Permitted).map_err(|source| CapsError::Set {
        op: "reading",
        set: CapSet::Permitted,
        source,
    })?;
    let held: CapsHashSet = permitted.intersection(&keep).copied().collect();
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding).unwrap_or_default() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapsError::Set {
                    op: "dropping from",
                    set: CapSet::Bounding,
                    source,
                })?;
            }
        }
    }
    // The agent starts no program that needs a capability: nothing is passed on.
    caps::clear(None, CapSet::Ambient).map_err(|source| CapsError::Set {
        op: "clearing",
        set: CapSet::Ambient,
        source,
    })?;
    for (set, value) in [
        (CapSet::Inheritable, CapsHashSet::new()),
        (CapSet::Effective, held.clone()),
        (CapSet::Permitted, held.clone()),
    ] {
        caps::set(None, set, &value).map_err(|source| CapsError::Set {
            op: "setting",
            set,
            source,
        })?;
    }
    Ok(Held(held))
}

/// What stays once the probe is loaded and the ARP socket is open: CAP_NET_ADMIN alone
/// (VIPs are added and removed for as long as the agent runs). An open packet socket
/// sends without CAP_NET_RAW, and attached programs and their maps need CAP_BPF and
/// CAP_PERFMON no more. Capabilities are per thread: call this before any other thread
/// exists (the async runtime's threads then start with the reduced sets).
pub fn drop_after_start(held: &Held) -> Result<Held, CapsError> {
    let keep: CapsHashSet = held
        .0
        .iter()
        .copied()
        .filter(|c| *c == Capability::CAP_NET_ADMIN)
        .collect();
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(|source| CapsError::Set {
            op: "setting",
            set,
            source,
        })?;
    }
    Ok(Held(keep))
}
