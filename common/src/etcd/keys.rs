//! Every key mmm keeps in etcd, in one place: the monitors of a fleet and the agents meet
//! only here, so none of them spells a key of its own.
//!
//! Each key is under the cluster's `[coordination] prefix`. Three kinds of writes:
//! - bound to a monitor's *session*: an etcd lease the monitor renews (`session_ttl`);
//!   the key goes when the monitor dies or is cut off from etcd;
//! - bound to an agent's *permit*: the etcd lease the agent renews itself, its permit to
//!   hold the writer role; the key goes when the permit ends;
//! - *guarded*: written by the leader in a transaction that succeeds only while its term
//!   still leads (its election key's create revision is the term), so a deposed leader
//!   writes nothing; such keys have no lease and outlive every monitor.

/// The etcd keys of one cluster, under its `[coordination] prefix` (an absolute key path
/// without a trailing `/`, as config validation requires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/leader`: the name of the monitors' election, given to etcd's election
    /// API, which campaigns under it (see [`Keys::candidates`]).
    pub fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// `<prefix>/leader/`: every campaign's key, `<prefix>/leader/<session lease, hex>` =
    /// the monitor's name ([`Keys::candidate`]). Written by etcd's election for each
    /// monitor that campaigns, bound to that monitor's session. The key with the lowest
    /// create revision leads, and that revision is its term. Read by the monitors (who
    /// leads: `show`, a standby before it forwards a command; every guarded write compares
    /// the leader's own key) and by every agent, which obeys only the term etcd says leads.
    pub fn candidates(&self) -> String {
        format!("{}/leader/", self.prefix)
    }

    /// `<prefix>/leader/<session lease, hex>`: the campaign key of the monitor whose
    /// session is `session` (see [`Keys::candidates`]).
    pub fn candidate(&self, session: i64) -> String {
        format!("{}{session:x}", self.candidates())
    }

    /// `<prefix>/cluster`: which cluster owns the prefix (a digest of the cluster key), so
    /// two clusters given the same prefix by mistake are told apart. Written once, guarded,
    /// by the first leader that finds it absent; no lease. Read by every monitor as it is
    /// elected: a value of another cluster makes it refuse to run.
    pub fn cluster(&self) -> String {
        format!("{}/cluster", self.prefix)
    }

    /// `<prefix>/roster`: the monitors that may lead, sealed with the cluster key, one name
    /// a line. Written by the leader, guarded, when the registered monitors change; no
    /// lease. A monitor campaigns only while it is listed (or no roster exists yet), and
    /// the writer's failsafe needs the consent of every monitor listed
    /// (monitor/src/daemon/seat/roster.rs).
    pub fn roster(&self) -> String {
        format!("{}/roster", self.prefix)
    }

    /// `<prefix>/status`: the status record (JSON), what a monitor alone keeps in its
    /// status file. Written by the leader, guarded, whenever the record changes; no lease.
    /// Read by each newly elected leader, which resumes from it.
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<prefix>/writer`: the writer now, `{"host","ip","port","term"}` (all null but the
    /// term when there is none). Written by the leader, guarded, on each change; no lease.
    /// Read by no part of mmm: by clients and tools that want the writer without asking a
    /// monitor.
    pub fn writer(&self) -> String {
        format!("{}/writer", self.prefix)
    }

    /// `<prefix>/agents/`: every agent's key ([`Keys::agent`]).
    pub fn agents(&self) -> String {
        format!("{}/agents/", self.prefix)
    }

    /// `<prefix>/agents/<host>` = `{"host":"<host>","lease":<id>}`. Written by `host`'s
    /// agent, bound to its permit, whose id it names. Read (watched) by the leader: before
    /// another host may become the writer, it waits for that lease to end or revokes it.
    pub fn agent(&self, host: &str) -> String {
        format!("{}{host}", self.agents())
    }

    /// `<prefix>/revoked/<host>` = the id of the permit the leader revoked. Written by the
    /// leader, guarded, before it revokes `host`'s permit (so a deposed leader cannot);
    /// no lease. Read by the leaders that fence `host` later: a permit gone by a revoke is
    /// counted over a whole TTL after it, one that expired is over already.
    pub fn revoked(&self, host: &str) -> String {
        format!("{}/revoked/{host}", self.prefix)
    }

    /// `<prefix>/monitors/`: every monitor's key ([`Keys::monitor`]).
    pub fn monitors(&self) -> String {
        format!("{}/monitors/", self.prefix)
    }

    /// `<prefix>/monitors/<name>` = `name`. Written by each monitor as it joins the fleet,
    /// bound to its session. Read by the leader (the standbys `show` lists) and by a
    /// monitor joining under the same name, refused while another's session holds it.
    pub fn monitor(&self, name: &str) -> String {
        format!("{}{name}", self.monitors())
    }

    /// `<prefix>/commands/`: every forwarded command ([`Keys::command`]).
    pub fn commands(&self) -> String {
        format!("{}/commands/", self.prefix)
    }

    /// `<prefix>/commands/<id>` = an operator's command line, MACed with the cluster key.
    /// Written by the standby whose control socket was given it, bound to its session (a
    /// standby that dies leaves nothing to run). Read (watched) by the leader, which runs
    /// it, answers at [`Keys::reply`] and deletes it; so does the standby once answered.
    pub fn command(&self, id: &str) -> String {
        format!("{}{id}", self.commands())
    }

    /// `<prefix>/replies/<id>` = the leader's answer to command `id`, MACed. Written by the
    /// leader, bound to its session. Read (polled) by the standby that forwarded the
    /// command, which deletes it.
    pub fn reply(&self, id: &str) -> String {
        format!("{}/replies/{id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    /// The layout is part of the product: operators, tools and older monitors or agents
    /// of a rolling upgrade read these keys.
    #[test]
    fn the_layout_under_a_prefix() {
        let k = Keys::new("/mmm/main");
        assert_eq!(k.prefix(), "/mmm/main");
        assert_eq!(k.election(), "/mmm/main/leader");
        assert_eq!(k.candidates(), "/mmm/main/leader/");
        assert_eq!(k.candidate(0x694d7a), "/mmm/main/leader/694d7a");
        assert_eq!(k.cluster(), "/mmm/main/cluster");
        assert_eq!(k.status(), "/mmm/main/status");
        assert_eq!(k.writer(), "/mmm/main/writer");
        assert_eq!(k.agents(), "/mmm/main/agents/");
        assert_eq!(k.agent("db1"), "/mmm/main/agents/db1");
        assert_eq!(k.revoked("db1"), "/mmm/main/revoked/db1");
        assert_eq!(k.monitors(), "/mmm/main/monitors/");
        assert_eq!(k.roster(), "/mmm/main/roster");
        assert_eq!(k.monitor("mon1"), "/mmm/main/monitors/mon1");
        assert_eq!(k.commands(), "/mmm/main/commands/");
        assert_eq!(k.command("mon2-1-1-100"), "/mmm/main/commands/mon2-1-1-100");
        assert_eq!(k.reply("mon2-1-1-100"), "/mmm/main/replies/mon2-1-1-100");
    }
}
