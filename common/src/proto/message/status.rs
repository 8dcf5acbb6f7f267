//! The status report: the full picture of a server the monitor asks for before a vote or
//! a promotion decision.

use super::{Message, ProbeState};
use crate::gtid::{GtidError, GtidSet};
use crate::proto::frame::{FrameError, MAX_MESSAGE};
use crate::proto::wire::{Reader, Writer};
use std::net::Ipv4Addr;

wire_enum!(
    /// Which server family the agent talks to; decides GTID flavour and read-only knobs.
    ServerKind {
        Unknown = 0,
        MariaDb = 1,
        MySql = 2,
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub source_host: String,
    pub source_port: u16,
    pub io_running: bool,
    pub sql_running: bool,
    /// `None` is MySQL's NULL (SQL thread stopped or IO thread disconnected).
    pub seconds_behind: Option<u32>,
    pub last_error: String,
}

/// agent -> monitor: the full picture, on request (start-up vote, promotion decisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub applied_epoch: u32,
    pub uptime_s: u32,
    pub server: ServerKind,
    pub mysql_up: bool,
    pub read_only: bool,
    pub held_vips: Vec<Ipv4Addr>,
    pub replication: Option<Replication>,
    /// Executed GTID set as the server prints it (MariaDB gtid_current_pos / MySQL
    /// gtid_executed); empty without GTID. The monitor parses it: text that is not a
    /// GTID set is refused there, never taken for an empty set.
    pub gtid_executed: String,
    /// Why the agent could not read the GTID set (a failed query), empty when it could.
    /// When set, `gtid_executed` means nothing: the set is unknown, not empty, and every
    /// check that compares sets must refuse (see [`StatusReport::gtid_set`]).
    pub gtid_unreadable: String,
    /// Binary log position of this server (file, pos), for non-GTID re-pointing.
    pub binlog: Option<(String, u64)>,
    pub probe: ProbeState,
    /// Why the agent fenced itself, empty if it did not.
    pub fenced_reason: String,
}

impl StatusReport {
    /// The executed GTID set, or why it cannot be compared with another: the agent could
    /// not read it, or the text is not a GTID set. Never an empty set in place of an
    /// unknown one, so errant-transaction and "slave ahead" checks fail closed.
    pub fn gtid_set(&self) -> Result<GtidSet, GtidError> {
        if !self.gtid_unreadable.is_empty() {
            return Err(GtidError::Unreadable {
                reason: self.gtid_unreadable.clone(),
            });
        }
        GtidSet::parse(&self.gtid_executed)
    }

    /// Makes the report fit one message ([`MAX_MESSAGE`], however many frames it takes):
    /// a GTID set too large even for that becomes unknown, with `gtid_unreadable` saying
    /// why, so the status reply still goes out (and the monitor refuses what needs the
    /// set, naming the cause) instead of the link failing.
    pub fn fit_message(&mut self) {
        let mut scratch = Vec::new();
        let len = match Message::StatusReport(self.clone())
            .encode_payload(crate::proto::frame::VERSION, &mut scratch)
        {
            Ok(()) if scratch.len() <= MAX_MESSAGE => return,
            Ok(()) => scratch.len(),
            // Only the set can outgrow its length bound: count it whole.
            Err(_) => scratch.len() + self.gtid_executed.len(),
        };
        self.gtid_unreadable = format!(
            "the status report with a GTID set of {} bytes is {len} bytes, over the message limit of {MAX_MESSAGE}",
            self.gtid_executed.len()
        );
        self.gtid_executed.clear();
    }
}

impl StatusReport {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.applied_epoch);
        w.u32(self.uptime_s);
        w.u8(self.server as u8);
        w.bool(self.mysql_up);
        w.bool(self.read_only);
        w.count8("held_vips", self.held_vips.len())?;
        for ip in &self.held_vips {
            w.ipv4(*ip);
        }
        match &self.replication {
            None => w.u8(0),
            Some(r) => {
                w.u8(1);
                w.str8("source_host", &r.source_host)?;
                w.u16(r.source_port);
                w.bool(r.io_running);
                w.bool(r.sql_running);
                w.u32(r.seconds_behind.unwrap_or(u32::MAX));
                w.str16("last_error", &r.last_error)?;
            }
        }
        w.str32("gtid_executed", &self.gtid_executed)?;
        w.str16("gtid_unreadable", &self.gtid_unreadable)?;
        match &self.binlog {
            None => w.u8(0),
            Some((file, pos)) => {
                w.u8(1);
                w.str8("binlog file", file)?;
                w.u64(*pos);
            }
        }
        w.u8(self.probe as u8);
        w.str16("fenced_reason", &self.fenced_reason)?;
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let applied_epoch = r.u32("applied_epoch")?;
        let uptime_s = r.u32("uptime_s")?;
        let code = r.u8("server")?;
        let server = ServerKind::from_u8(code)
            .ok_or_else(|| r.malformed(format!("unknown server kind {code}")))?;
        let mysql_up = r.bool("mysql_up")?;
        let read_only = r.bool("read_only")?;
        let held_vips = r.ipv4_list("held_vips")?;
        let replication = match r.u8("replication")? {
            0 => None,
            1 => Some(Replication {
                source_host: r.str8("source_host")?,
                source_port: r.u16("source_port")?,
                io_running: r.bool("io_running")?,
                sql_running: r.bool("sql_running")?,
                seconds_behind: Some(r.u32("seconds_behind")?).filter(|s| *s != u32::MAX),
                last_error: r.str16("last_error")?,
            }),
            v => return Err(r.malformed(format!("replication tag {v}"))),
        };
        let gtid_executed = r.str32("gtid_executed")?;
        let gtid_unreadable = r.str16("gtid_unreadable")?;
        let binlog = match r.u8("binlog")? {
            0 => None,
            1 => Some((r.str8("binlog file")?, r.u64("binlog pos")?)),
            v => return Err(r.malformed(format!("binlog tag {v}"))),
        };
        let probe = ProbeState::decode(r)?;
        let fenced_reason = r.str16("fenced_reason")?;
        Ok(StatusReport {
            applied_epoch,
            uptime_s,
            server,
            mysql_up,
            read_only,
            held_vips,
            replication,
            gtid_executed,
            gtid_unreadable,
            binlog,
            probe,
            fenced_reason,
        })
    }
}
