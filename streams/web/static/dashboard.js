// meterguard live dashboard: polls /api/dashboard (?team=<team> when a team is chosen; an
// empty value is the unassigned team) and /api/identities/<id> when one is selected, every
// 2 s, and redraws.
//
// Every identity, summary and evidence value comes from metering events, i.e. from anyone who
// can send one. Data only ever reaches the page as text nodes (el() below, textContent) or
// as SVG geometry computed from numbers; never through innerHTML or an attribute that
// parses markup or URLs.
"use strict";

(() => {
  const POLL_MS = 2000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  // selected: the identity shown in detail; team: the team shown (null: none, "": unassigned)
  const state = { selected: null, detailKey: null, team: null };

  // -- DOM helpers ---------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    applyProps(node, props);
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function applyProps(node, props) {
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, String(v));
    }
  }

  function svgTitle(text) {
    const t = svg("title");
    t.textContent = text;
    return t;
  }

  // -- formatting ----------------------------------------------------------------------------
  const intFmt = new Intl.NumberFormat("en-US");
  const compactFmt = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

  function fmtInt(n) { return intFmt.format(Math.round(n || 0)); }
  function fmtCompact(n) { return compactFmt.format(n || 0); }
  function fmtUsd(v) {
    const n = v || 0;
    const digits = n === 0 ? 2 : n < 0.01 ? 5 : n < 1 ? 4 : 2;
    return new Intl.NumberFormat("en-US", {
      style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: digits,
    }).format(n);
  }
  function fmtScore(s) { return (s || 0).toFixed(2); }
  function utcTime(ms) { return new Date(ms).toISOString().slice(11, 16); }
  function utcDateTime(ms) {
    const iso = new Date(ms).toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  }
  function minuteMs(minute) { return minute * 60000; }
  function isoText(iso) { return String(iso).slice(0, 16).replace("T", " "); } // "…Z" -> "YYYY-MM-DD HH:MM"
  function relative(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  function fmtLimits(limits) {
    const parts = [];
    if (limits && limits.requests_per_minute != null) parts.push(`${fmtInt(limits.requests_per_minute)} req/min`);
    if (limits && limits.tokens_per_minute != null) parts.push(`${fmtCompact(limits.tokens_per_minute)} tok/min`);
    return parts.length ? parts.join(" · ") : "no limits";
  }
  function fmtEvidence(key, value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") {
      if (key === "minute" || key.endsWith("_minute")) return `${utcDateTime(minuteMs(value))}`;
      if (key.includes("cost")) return fmtUsd(value);
      return Number.isInteger(value) ? fmtInt(value) : value.toLocaleString("en-US", { maximumFractionDigits: 3 });
    }
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // -- small widgets -------------------------------------------------------------------------
  function badge(text, kind) { return el("span", { class: `badge badge-${kind}` }, text); }

  function identityButton(identity) {
    return el("button", {
      class: "id-link", type: "button", title: identity, dataset: { identity },
      onclick: () => select(identity),
    }, identity);
  }

  function teamButton(value, label) {
    return el("button", {
      class: "id-link team-link", type: "button", title: label, dataset: { team: value },
      onclick: () => selectTeam(value),
    }, label);
  }

  function sparkline(values, kind) {
    const w = 140, h = 30, pad = 2;
    const root = svg("svg", { class: `spark spark-${kind}`, width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
    if (!values.length) return root;
    const max = Math.max(...values, 0) || 1;
    const step = values.length > 1 ? (w - 2 * pad) / (values.length - 1) : 0;
    const pts = values.map((v, i) => [pad + i * step, h - pad - (v / max) * (h - 2 * pad)]);
    const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    root.append(svg("polygon", { class: "area", points: `${pad},${h - pad} ${line} ${pts[pts.length - 1][0].toFixed(1)},${h - pad}` }));
    root.append(svg("polyline", { class: "line", points: line }));
    const [lx, ly] = pts[pts.length - 1];
    root.append(svg("circle", { class: "dot", cx: lx.toFixed(1), cy: ly.toFixed(1), r: 2.2 }));
    return root;
  }

  function table(headers, rows, emptyText) {
    if (!rows.length) return el("div", { class: "empty" }, emptyText);
    const head = el("tr", null, ...headers.map((h) => el("th", { class: h.cls || "" }, h.label)));
    return el("table", null, el("thead", null, head), el("tbody", null, ...rows));
  }

  // -- panels --------------------------------------------------------------------------------
  function renderStats(stats) {
    const items = [
      ["events", stats.events_new], ["duplicates", stats.events_duplicate],
      ["late", stats.events_late], ["dead-lettered", stats.events_dead_lettered],
      ["minutes scored", stats.minutes_scored],
      ["firing", stats.alerts_firing], ["throttled", stats.throttles_active],
    ];
    const nodes = [];
    for (const [label, value] of items) {
      const tone = !value ? "" : label === "firing" ? " hot" : label === "throttled" ? " warm" : "";
      nodes.push(el("div", { class: `stat${tone}` },
        el("dt", null, label), el("dd", null, fmtCompact(value || 0))));
    }
    document.getElementById("stats").replaceChildren(...nodes);
  }

  function renderFiring(alerts) {
    document.getElementById("firing-count").textContent = alerts.length ? String(alerts.length) : "";
    const rows = alerts.map((a) => {
      const start = a.evidence && a.evidence.episode_start_minute;
      return el("tr", { class: `sev-${a.severity}`, dataset: { identity: a.identity, detector: a.detector } },
        el("td", null, badge(a.severity, a.severity)),
        el("td", { class: "ident" }, identityButton(a.identity), el("span", { class: "sub" }, a.detector)),
        el("td", { class: "num" }, fmtScore(a.score)),
        el("td", { class: "num nowrap" }, start != null ? `${utcTime(minuteMs(start))} UTC` : "—"),
        el("td", { class: "summary", title: a.summary }, a.summary));
    });
    document.getElementById("firing").replaceChildren(table(
      [{ label: "severity" }, { label: "identity · detector" }, { label: "score", cls: "num" },
        { label: "since", cls: "num" }, { label: "summary" }],
      rows, "✓ Nothing firing."));
  }

  function throttleBadge(c) { return badge(c.action, c.action === "block" ? "critical" : "throttle"); }

  function renderThrottles(commands) {
    document.getElementById("throttles-count").textContent = commands.length ? String(commands.length) : "";
    const rows = commands.map((c) => el("tr", { dataset: { identity: c.identity } },
      el("td", null, throttleBadge(c)),
      el("td", { class: "ident" }, identityButton(c.identity), el("span", { class: "sub", title: c.reason }, c.reason)),
      el("td", { class: "nowrap" }, fmtLimits(c.limits)),
      el("td", { class: "num nowrap" }, `${utcTime(Date.parse(c.expires_at))} UTC`,
        el("span", { class: "sub" }, `in ${relative(c.seconds_left)}`))));
    document.getElementById("throttles").replaceChildren(table(
      [{ label: "action" }, { label: "identity · reason" }, { label: "limits" }, { label: "expires", cls: "num" }],
      rows, "No identity is throttled."));
  }

  function renderTop(id, entries, kind) {
    const total = kind === "cost" ? fmtUsd : fmtCompact;
    const rows = entries.map((e, i) => el("tr", { dataset: { identity: e.identity } },
      el("td", { class: "rank" }, String(i + 1)),
      el("td", { class: "ident" }, identityButton(e.identity)),
      el("td", { class: "num", title: kind === "cost" ? String(e.total) : fmtInt(e.total) }, total(e.total)),
      el("td", { class: "spark-cell" }, sparkline(e.series, kind)),
      el("td", { class: "num muted nowrap" }, e.watermark_ms != null ? `${utcTime(e.watermark_ms)} UTC` : "—")));
    document.getElementById(id).replaceChildren(table(
      [{ label: "#" }, { label: "identity" }, { label: kind === "cost" ? "cost" : "tokens", cls: "num" },
        { label: "last 30 min" }, { label: "last event", cls: "num" }],
      rows, "No traffic yet."));
  }

  // -- spend: teams, root agents, one team ----------------------------------------------------
  function spendCells(u) {
    return [
      el("td", { class: "num" }, fmtInt(u.calls)),
      el("td", { class: "num", title: fmtInt(u.tokens) }, fmtCompact(u.tokens)),
      el("td", { class: "num cost", title: `${u.cost_nano_usd} nano-USD` }, fmtUsd(u.cost_usd)),
      el("td", { class: "num" }, fmtInt(u.errors)),
      el("td", { class: "num late", title: `${fmtInt(u.late_calls)} late calls` }, fmtUsd(u.late_cost_usd)),
    ];
  }
  const SPEND_HEADERS = [{ label: "calls", cls: "num" }, { label: "tokens", cls: "num" },
    { label: "cost", cls: "num" }, { label: "errors", cls: "num" }, { label: "late cost", cls: "num" }];

  function periodText(p) {
    if (!p) return "last 24 event-time hours";
    return `last ${p.hours} event-time hours · ${isoText(p.from)} – ${isoText(p.to)} UTC`;
  }

  function renderSpend(data) {
    document.getElementById("spend-period").textContent = periodText(data.spend_period);
    const rows = data.spend_by_team.map((t) => el("tr",
      { class: t.value === state.team ? "selected" : "", dataset: { team: t.value } },
      el("td", { class: "ident" }, teamButton(t.value, t.team)), ...spendCells(t)));
    if (rows.length > 1 && data.spend_totals) {
      rows.push(el("tr", { class: "total" }, el("td", null, "all teams"), ...spendCells(data.spend_totals)));
    }
    document.getElementById("spend-teams").replaceChildren(table(
      [{ label: "team" }, ...SPEND_HEADERS], rows, "No spend in the last 24 event-time hours."));
  }

  function renderRootAgents(entries) {
    const rows = entries.map((r, i) => el("tr", { dataset: { identity: r.identity } },
      el("td", { class: "rank" }, String(i + 1)),
      el("td", { class: "ident" }, identityButton(r.identity)),
      el("td", { class: "num driven", title: `${r.driven.cost_nano_usd} nano-USD · ${fmtInt(r.driven.calls)} calls` }, fmtUsd(r.driven.cost_usd)),
      el("td", { class: "num" }, fmtInt(r.driven.calls)),
      el("td", { class: "num own", title: `${r.own.cost_nano_usd} nano-USD` }, fmtUsd(r.own.cost_usd)),
      el("td", { class: "num muted" }, r.driven_per_own != null ? `${r.driven_per_own.toFixed(1)}×` : "—")));
    document.getElementById("root-agents").replaceChildren(table(
      [{ label: "#" }, { label: "root identity" }, { label: "cost driven", cls: "num" },
        { label: "calls driven", cls: "num" }, { label: "own cost", cls: "num" }, { label: "driven / own", cls: "num" }],
      rows, "No traced calls credited to a root in the last 24 event-time hours."));
  }

  function budgetBox(b) {
    if (!b) return el("div", { class: "muted" }, "no group budget");
    const parts = [];
    if (b.limit_usd != null) parts.push(`${fmtUsd(b.spent_usd)} / ${fmtUsd(b.limit_usd)}`);
    if (b.limit_tokens != null) parts.push(`${fmtCompact(b.spent_tokens)} / ${fmtCompact(b.limit_tokens)} tokens`);
    const meter = el("meter", { min: 0, max: 1, low: 0.8, high: 0.95, optimum: 0, value: Math.min(b.fraction, 1) });
    return el("div", { class: `budget-box${b.fraction >= 1 ? " at-cap" : ""}` },
      el("div", null, el("span", { class: "muted" }, `${b.period} budget `),
        el("span", { class: "spent" }, parts.join(" · ")), " ",
        el("span", { class: "fraction" }, `${(b.fraction * 100).toFixed(1)} %`)),
      meter,
      el("div", { class: "muted" }, `${isoText(b.from)} – ${isoText(b.to)} UTC`));
  }

  function renderTeam(t) {
    const panel = document.getElementById("team");
    panel.hidden = state.team === null;
    if (state.team === null || !t || t.value !== state.team) return;
    document.getElementById("team-name").textContent = t.team;
    document.getElementById("team-meta").textContent =
      `${fmtInt(t.members_count)} members · ${fmtUsd(t.cost_usd)} · ${fmtInt(t.calls)} calls · ` +
      `${fmtCompact(t.tokens)} tokens · ${fmtInt(t.errors)} errors in the last 24 event-time hours`;
    document.getElementById("team-budget").replaceChildren(budgetBox(t.budget));
    const rows = t.members.map((m) => el("tr", { dataset: { identity: m.identity } },
      el("td", { class: "ident" }, identityButton(m.identity)), ...spendCells(m)));
    const more = t.members_count > t.members.length
      ? el("div", { class: "muted" }, `… and ${fmtInt(t.members_count - t.members.length)} more`) : null;
    document.getElementById("team-members").replaceChildren(table(
      [{ label: "identity" }, ...SPEND_HEADERS], rows, "No identity seen in this team."), ...(more ? [more] : []));
  }

  // -- identity detail -----------------------------------------------------------------------
  function chart(minutes, alerts) {
    const w = 960, h = 220, left = 56, right = 12, top = 18, bottom = 28;
    const root = svg("svg", { class: "minute-chart", viewBox: `0 0 ${w} ${h}`, role: "img", preserveAspectRatio: "none" });
    if (!minutes.length) return root;
    const max = Math.max(...minutes.map((m) => m.tokens), 1);
    const plotW = w - left - right, plotH = h - top - bottom;
    const slot = plotW / minutes.length, barW = Math.max(1, slot * 0.78);
    for (const frac of [0, 0.5, 1]) {
      const y = top + plotH * (1 - frac);
      root.append(svg("line", { class: "grid", x1: left, x2: w - right, y1: y, y2: y }));
      const label = svg("text", { class: "axis", x: left - 6, y: y + 4, "text-anchor": "end" });
      label.textContent = fmtCompact(max * frac);
      root.append(label);
    }
    const alertMinutes = new Map();
    for (const a of alerts) {
      const m = a.evidence && a.evidence.minute;
      if (typeof m === "number" && !alertMinutes.has(m)) alertMinutes.set(m, a);
    }
    minutes.forEach((m, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      const bh = (m.tokens / max) * plotH;
      const cls = ["bar", m.errors ? "has-errors" : "", m.open ? "open" : "", alertMinutes.has(m.minute) ? "alerted" : ""].join(" ");
      const bar = svg("rect", { class: cls, x: x.toFixed(1), y: (top + plotH - bh).toFixed(1), width: barW.toFixed(1), height: Math.max(bh, 0.5).toFixed(1) });
      bar.append(svgTitle(`${utcDateTime(minuteMs(m.minute))}${m.open ? " (open)" : ""}\n` +
        `${fmtInt(m.tokens)} tokens · ${fmtInt(m.calls)} calls · ${fmtUsd(m.cost_usd)} · ${fmtInt(m.errors)} errors`));
      root.append(bar);
      const alert = alertMinutes.get(m.minute);
      if (alert) {
        const cx = x + barW / 2, ty = top + plotH - bh - 4;
        const mark = svg("polygon", { class: `marker sev-${alert.severity}`, points: `${cx - 5},${ty - 8} ${cx + 5},${ty - 8} ${cx},${ty}` });
        mark.append(svgTitle(`${alert.status}: ${alert.title}`));
        root.append(mark);
      }
      if (m.minute % 10 === 0) {
        const label = svg("text", { class: "axis", x: (x + barW / 2).toFixed(1), y: h - 8, "text-anchor": "middle" });
        label.textContent = utcTime(minuteMs(m.minute));
        root.append(label);
      }
    });
    return root;
  }

  function alertCard(a) {
    const evidence = Object.entries(a.evidence || {});
    const span = `${utcTime(Date.parse(a.window_start))}–${utcTime(Date.parse(a.window_end))} UTC`;
    return el("article", { class: `alert-card sev-${a.severity} status-${a.status}`, dataset: { alertId: a.alert_id } },
      el("header", null,
        badge(a.severity, a.severity), badge(a.status, a.status === "firing" ? "firing" : "resolved"),
        el("span", { class: "alert-title" }, a.title),
        el("span", { class: "muted nowrap" }, `${a.detector} · score ${fmtScore(a.score)} · ${span}`)),
      el("p", { class: "alert-summary" }, a.summary),
      el("dl", { class: "evidence" }, ...evidence.map(([k, v]) =>
        el("div", null, el("dt", null, k), el("dd", null, fmtEvidence(k, v))))));
  }

  function renderDetail(d) {
    document.getElementById("detail-identity").textContent = d.identity;
    const ev = d.events || {};
    document.getElementById("detail-meta").textContent =
      `${fmtInt(ev.new)} events · ${fmtInt(ev.dup)} duplicates · ${fmtInt(ev.late)} late` +
      (d.watermark_ms != null ? ` · newest event ${utcDateTime(d.watermark_ms)}` : "");
    const t = d.throttle;
    document.getElementById("detail-throttle").replaceChildren(t
      ? el("div", { class: "throttle-box" }, throttleBadge(t), ` ${fmtLimits(t.limits)} until ${utcTime(Date.parse(t.expires_at))} UTC`,
        el("span", { class: "muted" }, ` (in ${relative(t.seconds_left)})`))
      : el("div", { class: "muted" }, "not throttled"));
    // Redraw the chart and cards only when they changed, so hover titles survive polls.
    const key = JSON.stringify([d.minutes, d.alerts]);
    if (key === state.detailKey) return;
    state.detailKey = key;
    document.getElementById("detail-chart").replaceChildren(chart(d.minutes, d.alerts));
    document.getElementById("detail-alerts").replaceChildren(...(d.alerts.length
      ? d.alerts.map(alertCard) : [el("div", { class: "empty" }, "No alerts for this identity.")]));
  }

  function renderDetailMissing(identity) {
    document.getElementById("detail-identity").textContent = identity;
    document.getElementById("detail-meta").textContent = "no data for this identity (yet)";
    document.getElementById("detail-throttle").replaceChildren();
    document.getElementById("detail-chart").replaceChildren();
    document.getElementById("detail-alerts").replaceChildren();
    state.detailKey = null;
  }

  function pageUrl() {
    const parts = [];
    if (state.team !== null) parts.push(`team=${encodeURIComponent(state.team)}`);
    if (state.selected !== null) parts.push(`identity=${encodeURIComponent(state.selected)}`);
    return parts.length ? `?${parts.join("&")}` : location.pathname;
  }

  function selectTeam(team, push = true) {
    state.team = team;
    if (push) history.pushState({ team, identity: state.selected }, "", pageUrl());
    document.getElementById("team").hidden = team === null;
    if (team !== null) {
      document.getElementById("team-name").textContent = team === "" ? "(unassigned)" : team;
      document.getElementById("team-meta").textContent = "loading…";
      document.getElementById("team-budget").replaceChildren();
      document.getElementById("team-members").replaceChildren();
      if (push) window.scrollTo({ top: 0, behavior: "smooth" }); // the team panel sits at the top
    }
  }

  function select(identity, push = true) {
    state.selected = identity;
    state.detailKey = null;
    const panel = document.getElementById("detail");
    panel.hidden = identity === null;
    if (push) history.pushState({ identity, team: state.team }, "", pageUrl());
    if (identity !== null) {
      renderDetailMissing(identity);
      document.getElementById("detail-meta").textContent = "loading…";
      refreshDetail();
      window.scrollTo({ top: 0, behavior: "smooth" }); // the detail panel sits at the top
    }
  }

  // -- polling -------------------------------------------------------------------------------
  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  async function refreshDetail() {
    const identity = state.selected;
    if (identity === null) return;
    const detail = await getJson(`/api/identities/${encodeURIComponent(identity)}`);
    if (identity !== state.selected) return; // the user moved on meanwhile
    if (detail === null) renderDetailMissing(identity); else renderDetail(detail);
  }

  function setConnection(ok, text) {
    document.getElementById("conn-dot").className = ok ? "dot ok" : "dot down";
    document.getElementById("updated").textContent = text;
  }

  async function tick() {
    try {
      const team = state.team;
      const data = await getJson(team === null ? "/api/dashboard" : `/api/dashboard?team=${encodeURIComponent(team)}`);
      if (team !== state.team) return; // the user chose another team meanwhile (finally polls again)
      renderStats(data.stats);
      renderFiring(data.firing);
      renderThrottles(data.throttles);
      renderTop("top-tokens", data.top_tokens, "tokens");
      renderTop("top-cost", data.top_cost, "cost");
      renderSpend(data);
      renderRootAgents(data.top_driven);
      renderTeam(data.team);
      await refreshDetail();
      setConnection(true, `updated ${new Date(data.server_time).toISOString().slice(11, 19)} UTC`);
      document.body.dataset.loaded = "true";
    } catch (err) {
      setConnection(false, `disconnected — retrying (${err.message})`);
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    selectTeam(params.get("team"), false); // null: no team; "": the unassigned team
    const identity = params.get("identity");
    if (identity || state.selected !== null) select(identity || null, false);
  }

  document.getElementById("detail-close").addEventListener("click", () => select(null));
  document.getElementById("team-close").addEventListener("click", () => selectTeam(null));
  window.addEventListener("popstate", fromUrl);
  fromUrl();
  tick();
})();
