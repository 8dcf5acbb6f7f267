// The live page: polls /status (the monitor's `show --json`) twice a second and redraws.
// Read-only: nothing here sends anything but GET. No framework: the DOM is built with
// createElement and textContent (never innerHTML), so no value from the monitor is markup.
"use strict";

const POLL_MS = 500;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function clock(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function ago(ms, now) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function replace(id, ...children) {
  document.getElementById(id).replaceChildren(...children.flat());
}

function hostRow(h, now) {
  const checks = Object.entries(h.checks || {}).map(([name, c]) =>
    el("span", { class: "check " + (c.ok ? "ok" : "bad"), title: c.message || "ok", "data-check": name },
      name, c.ok ? "" : ": " + c.message));
  const vips = (h.vips || []).map(v => el("span", { class: "role role-" + v.role }, v.role, v.ip ? " " + v.ip : " (no VIP)"));
  const a = h.agent;
  const agent = !h.agent_reachable ? el("span", { class: "bad" }, "unreachable")
    : a && !a.mysql_up ? el("span", { class: "bad" }, "mysqld down")
    : el("span", { class: "ok" }, a && a.read_only === false ? "writable" : "read-only",
        a && a.self_fenced ? ", self-fenced" : "");
  return el("tr", { id: "host-" + h.name, "data-host": h.name, "data-state": h.state, "data-roles": (h.roles || []).join(" ") },
    el("td", {}, el("b", {}, h.name), el("div", { class: "sub" }, h.ip + " · " + h.mode)),
    el("td", {}, el("span", { class: "state state-" + h.state }, h.state),
      el("div", { class: "sub" }, (h.reason || "") + (h.state_since_ms ? " · " + ago(h.state_since_ms, now) : "")),
      h.errant ? el("div", { class: "bad" }, "errant: " + h.errant) : null,
      h.flapping ? el("div", { class: "bad" }, "flapping") : null),
    el("td", { class: "roles" }, vips.length ? vips : el("span", { class: "sub" }, "none")),
    el("td", {}, agent),
    el("td", { class: "sub" }, h.probe),
    el("td", { class: "checks" }, checks));
}

// Who replicates from whom: the active master at the root, each server under its source;
// a master-master pair's link back is shown on the passive master's line.
function tree(status) {
  const hosts = status.hosts || [];
  const byName = new Map(hosts.map(h => [h.name, h]));
  const source = h => (h.replication && h.replication.source) || null;
  const children = new Map();
  for (const h of hosts) {
    const s = source(h);
    if (s && byName.has(s)) {
      if (!children.has(s)) children.set(s, []);
      children.get(s).push(h);
    }
  }
  const placed = new Set();
  const node = h => {
    placed.add(h.name);
    const r = h.replication;
    let repl = [];
    if (r && r.error) repl.push(el("span", { class: "bad" }, "replica status unreadable: " + r.error));
    else if (r && r.source_host) {
      const io = r.io_running || "?", sql = r.sql_running || "?";
      repl.push(el("span", { class: "thread " + (io === "Yes" ? "ok" : "bad") }, "IO " + io),
        el("span", { class: "thread " + (sql === "Yes" ? "ok" : "bad") }, "SQL " + sql),
        el("span", { class: "lag" }, r.lag_s === null || r.lag_s === undefined ? "lag –" : "lag " + r.lag_s + " s"),
        el("span", { class: "sub" }, "from " + (r.source || r.source_host) + (r.source_port ? ":" + r.source_port : "")));
      if (r.last_error) repl.push(el("div", { class: "bad" }, r.last_error));
    } else if (r) repl.push(el("span", { class: "sub" }, "replicates from nobody"));
    const gtid = r && !r.error ? (r.executed_gtids || r.received_gtids || "(none yet)") : null;
    const kids = (children.get(h.name) || []).filter(k => !placed.has(k.name));
    return el("li", { "data-host": h.name, "data-source": source(h) || "" },
      el("span", { class: "state state-" + h.state }, h.name),
      status.active_master === h.name ? el("span", { class: "role role-writer" }, "writer") : null,
      " ", repl,
      gtid ? el("div", { class: "gtid", title: "executed GTIDs" + (r.received_gtids ? "; received " + r.received_gtids : "") }, "GTID " + gtid) : null,
      kids.length ? el("ul", {}, kids.map(node)) : null);
  };
  const roots = [];
  const first = byName.get(status.active_master);
  if (first) roots.push(node(first));
  for (const h of hosts) if (!placed.has(h.name) && !byName.has(source(h))) roots.push(node(h));
  for (const h of hosts) if (!placed.has(h.name)) roots.push(node(h));
  return roots;
}

function timeline(f, cls) {
  const total = Math.max(1, f.total_ms || (f.steps.length ? f.steps[f.steps.length - 1].offset_ms : 1));
  return el("article", { class: "failover " + cls, "data-to": f.to, "data-from": f.from || "", "data-outcome": f.outcome || "running" },
    el("h3", {}, (f.from ? f.from + " → " : "→ ") + f.to,
      el("span", { class: "outcome" }, f.outcome === "promoted" ? " promoted in " + f.total_ms + " ms"
        : f.outcome === "refused" ? " refused after " + f.total_ms + " ms" : " under way")),
    el("div", { class: "cause" }, "cause: " + (f.cause || f.reason || ""), el("span", { class: "sub" }, " · " + clock(f.started_ms))),
    f.refusal ? el("div", { class: "bad" }, "refused: " + f.refusal) : null,
    el("ol", { class: "steps" }, (f.steps || []).map(s =>
      el("li", { "data-offset": s.offset_ms },
        el("span", { class: "offset" }, "+" + s.offset_ms + " ms"),
        el("span", { class: "bar", style: "width:" + Math.max(2, Math.round(200 * s.offset_ms / total)) + "px" }),
        el("span", {}, s.what)))));
}

function fleet(status) {
  const m = status.monitor;
  const f = status.fleet;
  if (m && m.role === "standby") {
    return el("div", { "data-role": "standby" }, el("b", {}, "This monitor (" + m.name + ") stands by. "), m.note,
      f ? el("div", {}, "leader " + (f.leader || "none") + (f.term ? " (term " + f.term + ")" : "") + "; standby " + ((f.standby || []).join(", ") || "none")) : null);
  }
  if (!f) return el("div", { "data-role": "alone" }, "no fleet: this monitor runs alone");
  return el("div", { "data-role": "leader" }, "leader ", el("b", {}, f.leader), " (term " + f.term + ", epoch " + f.epoch + ") — this monitor; standby ",
    (f.standby || []).join(", ") || "none", f.etcd ? el("div", { class: "bad" }, "etcd: " + f.etcd) : null);
}

let lastWriter;
function render(status) {
  const now = Date.now();
  const writer = status.active_master || "none";
  replace("writer", writer);
  document.getElementById("writer").dataset.host = writer;
  replace("mode", status.mode || "standby");
  replace("network", status.network_ok === false ? el("b", { class: "bad" }, "network down") : "");
  replace("monitor", status.monitor ? "standby " + status.monitor.name : "");
  replace("fleet", fleet(status));
  document.querySelector("#hosts tbody").replaceChildren(...(status.hosts || []).map(h => hostRow(h, now)));
  replace("tree", tree(status));
  replace("promotion", status.promotion ? timeline(status.promotion, "running") : []);
  const failovers = (status.failovers || []).slice().reverse();
  replace("failovers", failovers.length ? failovers.map(f => timeline(f, f.outcome)) : el("p", { class: "none" }, "none since this monitor started"));
  replace("transitions", (status.transitions || []).slice().reverse().slice(0, 20).map(t =>
    el("li", { "data-host": t.host, "data-to": t.to }, el("span", { class: "sub" }, clock(t.at_ms) + " "),
      el("b", {}, t.host), " " + t.from + " → ", el("span", { class: "state state-" + t.to }, t.to), t.reason ? " (" + t.reason + ")" : "")));
  if (writer !== lastWriter) {
    lastWriter = writer;
    document.getElementById("seen").append(el("li", { "data-writer": writer }, clock(now) + " writer " + writer));
  }
}

async function poll() {
  const live = document.getElementById("live");
  try {
    const r = await fetch("status", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.status);
    render(body);
    live.dataset.state = "live";
    live.textContent = "live · " + clock(Date.now());
  } catch (e) {
    live.dataset.state = "error";
    live.textContent = "no answer: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}

poll();
