// The operator console: live figures (GET /v1/stats every 2 s), the audit report, and
// the moderation queue. Needs a key with audit:read and moderation:write.
import { api, readAuth, noKeyHelp, el, show, toaster } from "/static/api.js";

const POLL_MS = 2000;
const POINTS = 90; // sparkline history: 3 minutes
const LABELS = ["misinformation", "unverified_claim", "graphic", "mature", "creator_under_16"];
const STATES = { approve: "approved", limit: "limited", remove: "removed" };
// The report's source order (fyp.audit.report.KNOWN_SOURCES), each with its colour.
const SOURCE_COLOURS = {
  followed: "#4e79a7", co_engagement: "#f28e2b", topics: "#59a14f", tastes: "#d4a6c8",
  trending: "#e15759", fresh: "#76b7b2", explore: "#edc948", discover: "#fabfd2",
  repeat: "#b07aa1", two_tower: "#ff9da7", non_personalised: "#9c755f",
};
const EXTRA_COLOURS = ["#bab0ac", "#86bcb6", "#d37295", "#a0cbe8", "#8cd17d"];

const $ = (id) => document.getElementById(id);
const { key } = readAuth();
const toast = toaster($("toast"));
const pct = (v) => (typeof v === "number" ? `${(100 * v).toFixed(1)}%` : "—");
const get = (obj, path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);

function colourOf(source) {
  if (SOURCE_COLOURS[source]) return SOURCE_COLOURS[source];
  let h = 0;
  for (const c of source) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return EXTRA_COLOURS[h % EXTRA_COLOURS.length];
}

function setStatus(node, message, isError = false) {
  node.textContent = message;
  node.classList.toggle("error", isError);
}

/** <dl> tiles from [label, value] pairs. */
function tiles(node, pairs) {
  node.replaceChildren(...pairs.map(([label, value]) =>
    el("div", { class: "tile" }, el("dt", { text: label }), el("dd", { text: value }))));
}

/** Horizontal CSS bars: rows of [label, value, text]; widths relative to `max`. */
function bars(node, rows, { max, colour } = {}) {
  const top = max ?? Math.max(1e-9, ...rows.map((r) => r[1]));
  if (!rows.length) return node.replaceChildren(el("li", { class: "muted", text: "Nothing yet." }));
  node.replaceChildren(...rows.map(([label, value, text]) => {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(100, (100 * value) / top))}%`;
    if (colour) fill.style.background = colour(label);
    return el("li", {}, el("span", { class: "label", text: label }),
      el("span", { class: "track", "aria-hidden": "true" }, fill), el("span", { class: "value", text }));
  }));
}

// ------------------------------------------------------------------------ live

const series = { eps: [], p99: [] };

/** A sparkline of `values` (null: a gap), the newest at the right edge. */
function sparkline(canvas, values, colour) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const finite = values.filter((v) => typeof v === "number");
  const max = Math.max(1e-9, ...finite) * 1.15;
  const pad = 4;
  const x = (i) => w - pad - ((values.length - 1 - i) * (w - 2 * pad)) / (POINTS - 1);
  const y = (v) => h - pad - (v / max) * (h - 2 * pad - 12);
  ctx.strokeStyle = "#d6d9e0";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(pad, h - pad + 0.5);
  ctx.lineTo(w - pad, h - pad + 0.5);
  ctx.stroke();
  // One path per run of values without a gap: the line, then the area under it.
  ctx.lineWidth = 2;
  ctx.strokeStyle = colour;
  let run = [];
  const draw = () => {
    if (!run.length) return;
    ctx.beginPath();
    run.forEach(([i, v], k) => (k ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
    ctx.lineTo(x(run.at(-1)[0]), h - pad);
    ctx.lineTo(x(run[0][0]), h - pad);
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = colour;
    ctx.fill();
    ctx.globalAlpha = 1;
    run = [];
  };
  values.forEach((v, i) => (typeof v === "number" ? run.push([i, v]) : draw()));
  draw();
  ctx.fillStyle = "#4a4f5c";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`max ${show(Math.max(...finite, 0), 1)}`, pad + 2, 12);
}

function renderLive(s) {
  $("region").textContent = `Region ${show(s.region)}`;
  const lat = s.feed_latency_ms || {};
  const ms = (v) => (typeof v === "number" ? `${v.toFixed(1)} ms` : "—");
  tiles($("tiles"), [
    ["Videos", show(s.videos)],
    ["Users", show(s.users)],
    ["Events, total", show(s.events_total)],
    ["Events / s", show(s.events_per_s, 2)],
    ["Feed requests / s", show(s.feed_requests_per_s, 2)],
    ["Feed p50", ms(lat.p50)],
    ["Feed p95", ms(lat.p95)],
    ["Feed p99", ms(lat.p99)],
    ["Learning lag, events", show(s.learning_lag)],
    ["Oldest unlearned event waited", typeof s.freshness_ms === "number" ? `${(s.freshness_ms / 1000).toFixed(1)} s` : "—"],
    ["Updated", s.ts ? new Date(s.ts).toLocaleTimeString() : "—"],
  ]);
  for (const [name, value] of [["eps", s.events_per_s], ["p99", lat.p99]]) {
    series[name].push(typeof value === "number" ? value : null);
    if (series[name].length > POINTS) series[name].shift();
  }
  sparkline($("eps-chart"), series.eps, "#2f6fde");
  sparkline($("p99-chart"), series.p99, "#c2410c");
  $("eps-now").textContent = `now ${show(s.events_per_s, 2)}`;
  $("p99-now").textContent = `now ${ms(lat.p99)}`;
  $("eps-chart").setAttribute("aria-label", `Events per second over the last minutes; now ${show(s.events_per_s, 2)}`);
  $("p99-chart").setAttribute("aria-label", `Feed latency p99 over the last minutes; now ${ms(lat.p99)}`);
  const mix = Object.entries(s.source_mix || {}).sort((a, b) => b[1] - a[1]);
  bars($("live-mix"), mix.map(([k, v]) => [k, v, pct(v)]), { max: 1, colour: colourOf });
  const rules = Object.entries(s.filtered_by_rule || {}).sort((a, b) => b[1] - a[1]);
  bars($("live-filters"), rules.slice(0, 12).map(([k, v]) => [k, v, show(v)]));
}

function authHelp(err) {
  if (!key || (err.status !== 401 && err.status !== 403)) return; // no key: its help stays
  const box = $("auth-help");
  box.hidden = false;
  box.textContent =
    err.status === 401
      ? "The API key is missing, wrong or revoked. Open /console#key=… with a valid key."
      : "This key lacks a scope the console needs: audit:read for Live and Audit, " +
        "moderation:write for the queue. Make one with: fyp keys create --data-dir D --scopes all";
}

async function poll() {
  let wait = POLL_MS;
  try {
    renderLive(await api("/v1/stats"));
    setStatus($("live-status"), "");
  } catch (err) {
    setStatus($("live-status"), `Live figures unavailable. ${err.message}`, true);
    authHelp(err);
    if (err.status === 401 || err.status === 403) wait = 5 * POLL_MS; // no point hurrying
  }
  document.body.dataset.ready = "true"; // the first poll's outcome is on screen
  setTimeout(poll, wait);
}

// ------------------------------------------------------------------------ audit

async function loadAudit(e) {
  if (e) e.preventDefault();
  const days = $("audit-days").value;
  setStatus($("audit-status"), "Building the report…");
  try {
    renderAudit(await api(`/v1/audit/report?days=${days}`));
    setStatus($("audit-status"), "");
  } catch (err) {
    setStatus($("audit-status"), `The audit report could not be loaded. ${err.message}`, true);
    authHelp(err);
  }
}

// The shape is AuditReport.to_dict() (src/fyp/audit/report.py); every field is
// read defensively, so a missing one shows as "—".
function renderAudit(r) {
  const since = get(r, "period.since");
  const until = get(r, "period.until");
  $("audit-period").textContent = since ? `${since} to ${until} (UTC, end excluded)` : "";
  const tc = r.top_creators || {};
  tiles($("audit-tiles"), [
    ["Impressions", show(get(r, "totals.impressions"))],
    ["Users", show(get(r, "totals.users"))],
    ["Videos", show(get(r, "totals.videos"))],
    ["Creators", show(get(r, "totals.creators"))],
    ["Exploration share", pct(r.exploration_share)],
    ["Non-personalised share", pct(get(r, "non_personalised.share"))],
    ["Creator Gini", show(get(r, "concentration.creator_gini"), 3)],
    ["Topic Gini", show(get(r, "concentration.topic_gini"), 3)],
    ["Creator entropy, bits", show(get(r, "concentration.creator_entropy_bits"), 2)],
    ["Topic entropy, bits", show(get(r, "concentration.topic_entropy_bits"), 2)],
    ["Filtered candidates", show(get(r, "filters.total"))],
    ["Moderation actions", show(get(r, "moderation.actions"))],
  ]);

  // Source mix per day: one stacked bar per day, a segment per source.
  const days = Array.isArray(r.days) ? r.days : [];
  const counts = get(r, "source_mix.counts") || {};
  const sources = Object.keys(counts).filter((s) => counts[s] > 0);
  $("audit-legend").replaceChildren(...sources.map((s) => {
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = colourOf(s);
    return el("li", {}, swatch, `${s} ${pct(get(r, `source_mix.shares.${s}`))}`);
  }));
  $("audit-days-chart").replaceChildren(
    ...(days.length ? [] : [el("p", { class: "muted", text: "No impressions in this period." })]),
    ...days.map((d) => {
      const shares = d.source_shares || {};
      const bar = el("span", { class: "stack", "aria-hidden": "true" });
      for (const s of sources) {
        if (!shares[s]) continue;
        const seg = el("span", { title: `${s} ${pct(shares[s])}` });
        seg.style.width = `${100 * shares[s]}%`;
        seg.style.background = colourOf(s);
        bar.append(seg);
      }
      const summary = sources.filter((s) => shares[s]).map((s) => `${s} ${pct(shares[s])}`).join(", ");
      return el("div", { class: "day" }, el("span", { class: "label", text: d.day }), bar,
        el("span", { class: "value", text: show(d.impressions) }),
        el("span", { class: "sr-only", text: summary }));
    }),
  );

  // Exposure: the top creators' shares, and the top 1 / 10 / 1% of creators.
  const creatorRows = [
    ["top creator", tc.top1_share, pct(tc.top1_share)],
    ["top 10 creators", tc.top10_share, pct(tc.top10_share)],
    [`top 1% (${show(tc.top1pct_creators)} of ${show(tc.creators)})`, tc.top1pct_share, pct(tc.top1pct_share)],
    ...(tc.top || []).map((c) => [`@${c.creator_id}`, c.share, `${pct(c.share)} · ${show(c.impressions)}`]),
  ].filter((row) => typeof row[1] === "number");
  bars($("audit-creators"), creatorRows, { max: 1 });

  const rules = get(r, "filters.by_rule") || [];
  bars($("audit-filters"), rules.slice(0, 15).map((x) => [`${x.filter}/${x.rule}`, x.count, show(x.count)]));

  const rows = [];
  for (const [kind, cohorts] of Object.entries(r.cohorts || {})) {
    for (const [name, c] of Object.entries(cohorts || {})) {
      rows.push([`${kind}: ${name}`, show(c.users), show(c.impressions), pct(c.exploration_share),
        pct(c.non_personalised_share), show(get(c, "concentration.creator_gini"), 3)]);
    }
  }
  const head = ["Cohort", "Users", "Impressions", "Exploration", "Non-personalised", "Creator Gini"];
  $("audit-cohorts").replaceChildren(
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((c) => el("td", { text: c }))))),
  );
  const states = Object.entries(get(r, "moderation.by_state") || {});
  bars($("audit-moderation"), states.map(([k, v]) => [k, v, show(v)]));
}

// ------------------------------------------------------------------------ queue

async function loadQueue() {
  setStatus($("queue-status"), "Loading…");
  try {
    const { items = [] } = await api("/v1/moderation/queue?limit=50");
    $("queue").tBodies[0].replaceChildren(...items.map(queueRow));
    setStatus($("queue-status"), items.length ? `${items.length} videos` : "The queue is empty.");
  } catch (err) {
    setStatus($("queue-status"), `The queue could not be loaded. ${err.message}`, true);
    authHelp(err);
  }
}

function queueRow(item) {
  const id = item.video_id;
  const safe = id.replace(/[^A-Za-z0-9_-]/g, "_"); // for element ids
  const state = el("td", { class: `state ${item.state}`, text: item.state });
  const labels = new Set(item.labels || []);
  const boxes = LABELS.map((label) =>
    el("label", {}, el("input", { type: "checkbox", value: label, checked: labels.has(label) }), ` ${label}`),
  );
  const others = [...labels].filter((l) => !LABELS.includes(l)); // e.g. sensitive:*, kept
  const reason = el("input", { id: `reason-${safe}`, class: "reason", autocomplete: "off",
    placeholder: "why (kept with the decision)" });
  const button = (act, text, cls) => el("button", { type: "button", "data-act": act, class: cls, text });
  const row = el("tr", { "data-video-id": id },
    el("td", {}, el("strong", { text: id }), el("span", { class: "muted", text: ` @${item.creator_id}` }),
      el("p", { class: "caption", text: item.caption || "(no caption)" }),
      item.last_reason ? el("p", { class: "muted", text: `Last: ${item.last_reason}` }) : null),
    state,
    el("td", { text: `${show(item.reporters)} · weight ${show(item.report_weight, 2)}` }),
    el("td", {}, el("fieldset", { class: "labels" },
      el("legend", { class: "sr-only", text: `Labels of ${id}` }), ...boxes,
      others.length ? el("p", { class: "muted", text: `also: ${others.join(", ")}` }) : null,
      button("labels", "Save labels"))),
    el("td", { class: "decide" }, el("label", { for: `reason-${safe}`, text: "Reason" }), reason,
      el("div", { class: "buttons" }, button("approve", "Approve"), button("limit", "Limit"),
        button("remove", "Remove", "danger"))));
  row.addEventListener("click", async (e) => {
    const act = e.target.closest("button[data-act]")?.dataset.act;
    if (!act) return;
    // Every decision is kept with a reason; an empty field gets a plain default.
    const body = { video_id: id, reason: reason.value.trim() };
    if (act === "labels") {
      body.labels = [...others, ...boxes.map((b) => b.firstChild).filter((b) => b.checked).map((b) => b.value)];
      body.reason ||= "labels set in the operator console";
    } else {
      body.state = STATES[act];
      body.reason ||= `${body.state} in the operator console`;
    }
    try {
      const done = await api("/v1/moderation", { method: "POST", body });
      state.textContent = done.state;
      state.className = `state ${done.state}`;
      toast(`${id}: ${done.state}${act === "labels" ? `, labels ${done.labels.join(", ") || "none"}` : ""}.`);
    } catch (err) {
      toast(`${id}: not changed. ${err.message}`, true);
    }
  });
  return row;
}

// ------------------------------------------------------------------------ start

if (!key) {
  const help = $("auth-help");
  help.hidden = false;
  help.innerHTML = noKeyHelp("/console#key=fyp_k_…"); // static text
}
$("audit-form").addEventListener("submit", loadAudit);
$("queue-refresh").addEventListener("click", loadQueue);
poll();
loadAudit();
loadQueue();
