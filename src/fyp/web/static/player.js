// The For You player: one card at a time, real watch time, events batched to the API.
import {
  api as request, ApiError, readAuth, newUser, noKeyHelp, el, toaster, setToken, tokenClaims,
} from "/static/api.js";

// A few cards are kept ready after the current one (a swipe never waits on a request),
// and on every new card the rest is asked for again with what was just learned:
// GET /v1/feed?after=<the last page's request_id>&shown=<its cards shown> withdraws the
// cards not shown yet and answers better ones, so the view of card n shapes card n+2. A
// page of ten fetched three cards before its end committed a person to cards chosen
// before most of their last page's views were known.
const PAGE = 4; // cards kept ready after the current one
const EVENTS_WAIT_MS = 300; // a page waits this long at most for the views sent before it
const SURFACE = "for_you";
const DEFAULT_DURATION_MS = 15000; // when the catalog entry is missing
const MAX_BATCH = 200;

const $ = (id) => document.getElementById(id);
const feedEl = $("feed");
const toast = toaster($("toast"));
const enc = encodeURIComponent;

// With a user token (/#token=…, what `fyp demo` prints), the player acts for the
// token's user only; with a key (/#key=…&user=…), for the user given or made up here.
let { key, token, user } = readAuth();
let ended = false; // the token expired or was revoked: nothing more is asked
let items = []; // feed items, each {…feed item, request_id, video, card, liked…}
let index = -1; // the current card
let loading = null; // the feed request in flight (a promise)
let generation = 0; // bumped when the user changes: pages asked for before are ignored
let page = null; // the last page served: {request_id, first: its first card's index}
let furthest = -1; // the furthest card shown: the cards after it are not shown yet
let unlearned = 0; // events tracked since the last feed request

// ------------------------------------------------------------------------ the token
// A user token lasts minutes: it is renewed halfway to its expiry, for as long as its
// issuer allowed (renewableUntil). After that, or when it was revoked, the server
// refuses it (401) and the player says the session has ended.

let renewTimer = null;

function scheduleRenewal() {
  clearTimeout(renewTimer);
  const left = token.expiresAt - Date.now();
  // Not renewable any more: ask once it has expired, and the server says so.
  const delay = Date.now() < token.renewableUntil ? left / 2 : left + 1000;
  renewTimer = setTimeout(renew, Math.max(1000, delay));
}

async function renew() {
  try {
    const res = await request("/v1/tokens/renew", { method: "POST" });
    setToken(res.token);
    token = tokenClaims(res.token);
    scheduleRenewal();
  } catch (err) {
    if (err.status === 401) return sessionEnded(err.message);
    if (err.status === 403) token.renewableUntil = 0; // its session is over: use it up
    scheduleRenewal(); // a network error, a 5xx: again, sooner as the expiry nears
  }
}

function sessionEnded(detail) {
  if (ended) return;
  ended = true;
  clearTimeout(renewTimer);
  for (const id of ["settings-open", "prev", "next"]) $(id).hidden = true;
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  document.body.dataset.session = "ended";
  feedEl.replaceChildren(el("div", { class: "placeholder", id: "feed-status", role: "alert" },
    el("h2", { text: "Your session has ended" }),
    el("p", { text: "Open the player again from your app to go on watching (with fyp demo: " +
      "run it again for a new address)." }),
    el("p", { class: "hint", text: detail })));
}

/** The API; with a token, a 401 (expired, revoked) ends the session: nothing more is
 * sent (events not yet acknowledged stay in the tab, unsent). */
async function api(path, options) {
  if (ended) throw new ApiError(401, "Your session has ended.");
  try {
    return await request(path, options);
  } catch (err) {
    if (token && err.status === 401) sessionEnded(err.message);
    throw err;
  }
}

// ------------------------------------------------------------------------ events

const queue = []; // events not yet sent
let inFlight = 0; // events in requests not yet answered
let sending = null; // the (non-keepalive) request in flight
let acked = 0; // events the API acknowledged (accepted or already stored)
let retryTimer = null;
let retryDelay = 1000;
let held = false; // refused (401/403): the queue waits for the next card change

// crypto.randomUUID exists only in secure contexts (https, localhost); a self-hoster
// may serve plain http on a LAN address, so build a v4 UUID from getRandomValues.
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function track(type, item, extra = {}) {
  unlearned++;
  queue.push({
    event_id: uuid(),
    user_id: user,
    video_id: item.video_id,
    type,
    ts: Date.now(),
    request_id: item.request_id,
    surface: SURFACE,
    ...extra,
  });
}

/**
 * Send the queued events. At most one request is in flight; `keepalive` (the page is
 * going away) sends the rest at once regardless, since nothing may come after it.
 * Sending an event twice is harmless: the API ignores a known event_id.
 */
function flush({ keepalive = false } = {}) {
  if (ended || !queue.length || (sending && !keepalive)) return sending;
  const batch = queue.splice(0, keepalive ? queue.length : MAX_BATCH);
  inFlight += batch.length;
  const request = sendBatch(batch, keepalive).finally(() => {
    inFlight -= batch.length;
    if (sending === request) sending = null;
    if (queue.length && !retryTimer && !held) flush();
  });
  if (!keepalive) sending = request;
  return request;
}

async function sendBatch(batch, keepalive) {
  try {
    const res = await api("/v1/events", { method: "POST", body: { events: batch }, keepalive });
    acked += res.accepted + res.duplicates;
    retryDelay = 1000;
    held = false;
  } catch (err) {
    const body = err.body;
    if (err.status === 422 && body && Array.isArray(body.rejected)) {
      // Some events were invalid: the others are stored; retrying changes nothing.
      acked += (body.accepted || 0) + (body.duplicates || 0);
      toast(`Some events were rejected: ${body.rejected[0].reason}`, true);
    } else if (err.status === 0 || err.status === 408 || err.status === 429 || err.status >= 500) {
      queue.unshift(...batch); // retry, backing off
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => ((retryTimer = null), flush()), retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    } else if (err.status === 401 || err.status === 403) {
      queue.unshift(...batch); // kept: tried again at the next card change, not at once
      held = true;
      if (!ended) toast(err.message, true); // else the session's end says it
    } else {
      toast(`Events not recorded: ${err.message}`, true);
    }
  }
}

// ------------------------------------------------------------------------ watch time
// A view runs while its card is the current one and the tab is visible. It ends when
// the user moves on, or when the tab is hidden (it may be closing: send now, with
// keepalive); coming back to the tab starts a new view of the same card. A card made
// current while the tab is hidden starts its view when the tab is shown.

const watch = { since: null }; // performance.now() when the running view began; null: none

function beginView() {
  if (document.visibilityState === "visible") watch.since = performance.now();
}

function endView() {
  if (watch.since === null) return;
  const ms = performance.now() - watch.since;
  watch.since = null;
  if (items[index]) track("view", items[index], { watch_ms: Math.round(ms) });
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") {
    endView();
    flush({ keepalive: true });
  } else if (index >= 0 && watch.since === null) {
    beginView();
  }
});
addEventListener("pagehide", () => {
  endView();
  flush({ keepalive: true });
});

// ------------------------------------------------------------------------ cards

// A stable 32-bit hash of the video id, for its colours and pattern: FNV-1a, then
// murmur3's finaliser so that ids differing in one character differ in every bit.
function hash(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

const tagText = (t) => (t.startsWith("#") ? t : `#${t}`);
const topicOf = (t) => t.replace(/^#+/, "").trim().toLowerCase();

function clock(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// One card's markup. Buttons carry data-action; a single listener on #feed handles them.
function buildCard(item, n) {
  const v = item.video;
  const h = hash(item.video_id);
  const tags = (v.hashtags || []).map(tagText);
  const duration = v.duration_ms > 0 ? v.duration_ms : DEFAULT_DURATION_MS;
  const creator = v.creator_id || "unknown";
  const capId = `caption-${n}`;
  // The accessible name is the visible label, or contains it ("Follow" → "Follow creator").
  const button = (action, icon, label, name) =>
    el("button", { type: "button", "data-action": action, "aria-label": name },
      el("span", { class: "icon", "aria-hidden": "true", text: icon }),
      el("span", { class: "label", text: label }));
  const card = el("article", {
      class: `card pattern-${h >>> 30}`, "data-video-id": item.video_id,
      "data-creator-id": v.creator_id || "", "data-hashtags": tags.join(" "),
      "data-duration-ms": String(duration), "aria-labelledby": capId, hidden: true },
    el("div", { class: "poster", "aria-hidden": "true", text: creator.slice(0, 1).toUpperCase() }),
    el("div", { class: "progress", "aria-hidden": "true" }, el("span")),
    el("div", { class: "info" },
      el("p", { class: "creator", text: `@${creator}` }),
      el("h2", { class: "caption", id: capId, text: v.caption || "(no caption)" }),
      tags.length ? el("p", { class: "tags", text: tags.join(" ") }) : null,
      el("p", { class: "sound", text: `♪ ${v.sound_id || "original sound"} · ${clock(duration)}` })),
    el("div", { class: "rail" },
      button("like", "♥", "Like"), button("share", "↗", "Share"),
      button("follow", "+", "Follow", "Follow creator"),
      button("not_interested", "⊘", "Not interested"), button("report", "⚑", "Report"),
      button("why", "?", "Why", "Why this video?")));
  // Colours from the hash: two hues at moderate lightness; the text sits on a dark
  // scrim (see player.css), so contrast holds whatever the hues.
  card.style.setProperty("--h1", String(h % 360));
  card.style.setProperty("--h2", String((h >>> 9) % 360));
  card.style.setProperty("--angle", `${(h >>> 18) % 180}deg`);
  card.style.setProperty("--duration", `${duration}ms`);
  return card;
}

async function videosOf(ids) {
  const meta = new Map();
  try {
    const res = await api(`/v1/videos?ids=${ids.map(enc).join(",")}`);
    for (const v of res.videos || []) meta.set(v.video_id, v);
  } catch (err) {
    console.warn("video details unavailable:", err.message); // cards show the id only
  }
  return meta;
}

function status(message, retry) {
  if (ended) return; // the session's end stays on screen
  const again = retry && el("button", { type: "button", onclick: retry, text: "Try again" });
  feedEl.replaceChildren(el("div", { class: "placeholder", id: "feed-status" },
    el("p", { text: message }), again));
}

/** The cards after the furthest one shown, asked for again (the first time: a first
 * page): with `after`, the server withdraws the last page's cards not shown yet and
 * answers PAGE cards in their place. Resolves to how many cards there are now after
 * the furthest one. */
function refill() {
  if (loading) return loading;
  const gen = generation;
  const at = furthest;
  const last = page;
  unlearned = 0;
  const request = (async () => {
    // The views just sent first (they are what the page should learn from), unless
    // they are slow: a feed never waits long on them.
    if (sending) await Promise.race([sending, new Promise((r) => setTimeout(r, EVENTS_WAIT_MS))]);
    const path = `/v1/feed?user_id=${enc(user)}&count=${PAGE}&surface=${SURFACE}`;
    let feed;
    try {
      feed = await api(last ? `${path}&after=${enc(last.request_id)}&shown=${at + 1 - last.first}` : path);
    } catch (err) {
      // That page is unknown now (its impressions expired): a page of its own.
      if (!last || err.status !== 404) throw err;
      feed = await api(path);
    }
    const fresh = feed.items || [];
    // Details of the cards already known are kept; only the new ones are looked up.
    const known = new Map(items.map((it) => [it.video_id, it.video]));
    const missing = fresh.map((i) => i.video_id).filter((v) => !known.has(v));
    const meta = missing.length ? await videosOf(missing) : new Map();
    if (gen !== generation) return 0;
    if (index < 0) feedEl.replaceChildren(); // the loading message
    for (const it of items.splice(at + 1)) it.card.remove(); // withdrawn by this page
    page = { request_id: feed.request_id, first: items.length };
    for (const it of fresh) {
      const item = { ...it, request_id: feed.request_id };
      item.video = meta.get(it.video_id) || known.get(it.video_id) || { video_id: it.video_id };
      item.card = buildCard(item, items.length);
      items.push(item);
      feedEl.append(item.card);
    }
    return fresh.length;
  })()
    .catch((err) => {
      if (index < 0) status(`The feed could not be loaded. ${err.message}`, start);
      else toast(err.message, true);
      return 0;
    })
    .finally(() => loading === request && (loading = null));
  loading = request;
  return request;
}

/** Wait out the feed request in flight, if any (it may replace the next cards). */
async function settled() {
  while (loading) await loading;
}

/** Make card i the current one; `from` ("below"/"above") picks the slide-in direction. */
function showCard(i, from) {
  if (i < 0 || i >= items.length || i === index) return;
  const old = items[index];
  const focused = old && old.card.contains(document.activeElement) && document.activeElement;
  endView();
  if (old) {
    old.card.hidden = true;
    old.card.removeAttribute("aria-current");
  }
  index = i;
  const card = items[i].card;
  card.classList.remove("from-below", "from-above");
  if (from) card.classList.add(`from-${from}`);
  card.hidden = false;
  card.setAttribute("aria-current", "true");
  beginView();
  // Keep the keyboard user's place: the same button on the new card.
  if (focused && focused.dataset.action) {
    card.querySelector(`[data-action="${focused.dataset.action}"]`).focus();
  }
  held = false;
  flush();
  // A new card, and something learned since the cards after it were chosen: they are
  // chosen again (the view just ended is sent first).
  if (i > furthest) {
    furthest = i;
    if (unlearned > 0 || furthest + 1 >= items.length) refill();
  }
  document.body.dataset.ready = "true";
}

async function next() {
  // A swipe made while the next cards are being chosen again waits for them: the ones
  // on screen now are withdrawn by that request (their impressions deleted).
  await settled();
  if (index + 1 < items.length) return showCard(index + 1, "below");
  if ((await refill()) && index + 1 < items.length) showCard(index + 1, "below");
  else toast("No more videos right now.");
}

function prev() {
  if (index > 0) showCard(index - 1, "above");
  else toast("This is the first video.");
}

/** Choose the cards not shown yet again (settings changed), once the request in
 * flight, asked for under the old settings, is answered. */
async function dropUpcoming() {
  await settled();
  await refill();
}

// ------------------------------------------------------------------------ actions

const current = () => items[index];

// Like and Report count once per card (there is no "unlike" event); Follow marks every
// card of the creator.
const ONCE = { like: "Already liked.", report: "Already reported." };
const press = (it, action) =>
  it.card.querySelector(`[data-action="${action}"]`).setAttribute("aria-pressed", "true");

async function act(action) {
  const item = current();
  if (!item) return;
  if (action === "why") return openWhy(item);
  const creator = item.video.creator_id;
  if (ONCE[action]) {
    if (item[action]) return toast(ONCE[action]);
    item[action] = true;
    if (action === "like") press(item, "like");
  }
  if (action === "follow") {
    if (!creator) return toast("This video's creator is unknown.", true);
    if (item.card.querySelector('[data-action="follow"][aria-pressed]')) {
      return toast(`Already following @${creator}.`);
    }
    for (const it of items) if (it.video.creator_id === creator) press(it, "follow");
  }
  track(action, item);
  toast({ like: "Liked.", share: "Shared.", follow: `Following @${creator}.`,
    not_interested: "Got it: fewer videos like this.",
    report: "Reported. Moderators will review it." }[action]);
  flush();
  if (action === "not_interested") await next();
}

feedEl.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-action]");
  if (button) act(button.dataset.action);
});
$("next").addEventListener("click", next);
$("prev").addEventListener("click", prev);

// ------------------------------------------------------------------------ gestures

const anyOpen = () => document.querySelector("dialog[open]");

document.addEventListener("keydown", (e) => {
  if (anyOpen() || e.altKey || e.ctrlKey || e.metaKey || e.target.closest("input, textarea, select"))
    return;
  const go = { ArrowDown: next, j: next, PageDown: next, ArrowUp: prev, k: prev, PageUp: prev }[e.key];
  if (go) {
    e.preventDefault();
    go();
  }
});

// Wheel and trackpads fire many events per gesture: add them up, then pause briefly.
let wheelSum = 0;
let wheelLock = 0;
document.addEventListener(
  "wheel",
  (e) => {
    if (anyOpen()) return; // let the sheet scroll
    e.preventDefault();
    if (performance.now() < wheelLock) return;
    wheelSum += e.deltaY;
    if (Math.abs(wheelSum) < 40) return;
    wheelSum > 0 ? next() : prev();
    wheelSum = 0;
    wheelLock = performance.now() + 600;
  },
  { passive: false },
);

// Swipe: a mostly vertical drag of 50px or more (touch-action: none on the feed).
let swipe = null;
feedEl.addEventListener("pointerdown", (e) => {
  swipe = { x: e.clientX, y: e.clientY, id: e.pointerId };
});
feedEl.addEventListener("pointerup", (e) => {
  if (!swipe || swipe.id !== e.pointerId) return;
  const dx = e.clientX - swipe.x;
  const dy = e.clientY - swipe.y;
  swipe = null;
  if (Math.abs(dy) >= 50 && Math.abs(dy) > Math.abs(dx)) dy < 0 ? next() : prev();
});
feedEl.addEventListener("pointercancel", () => (swipe = null));

// ------------------------------------------------------------------------ sheets

let opener = null;

function openSheet(dialog) {
  opener = document.activeElement;
  dialog.showModal(); // Escape closes it; the page behind is inert
  dialog.querySelector("[data-close]").focus();
}

for (const dialog of document.querySelectorAll("dialog")) {
  dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => opener && opener.focus());
  // A click on the backdrop (outside the sheet's box) closes it too.
  dialog.addEventListener("click", (e) => {
    const r = dialog.getBoundingClientRect();
    const out = e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom;
    if (e.target === dialog && out && e.detail > 0) dialog.close();
  });
}

const whySheet = $("why-sheet");

function fillWhy(rec, note) {
  $("why-reason").textContent = rec.reason || "No reason was recorded.";
  $("why-source").textContent = rec.source || "—";
  $("why-score").textContent = typeof rec.score === "number" ? rec.score.toFixed(3) : "—";
  $("why-served").textContent = rec.served_at ? new Date(rec.served_at).toLocaleString() : "—";
  const signals = rec.signals || [];
  const top = Math.max(1e-9, ...signals.map((s) => Math.abs(s.weight)));
  $("why-signals").replaceChildren(
    ...signals.map((s) => {
      const bar = el("span", { class: s.weight < 0 ? "bar neg" : "bar" });
      bar.style.width = `${Math.round((100 * Math.abs(s.weight)) / top)}%`;
      return el("li", {}, el("span", { class: "name", text: s.name.replaceAll("_", " ") }),
        el("span", { class: "track", "aria-hidden": "true" }, bar),
        el("span", { class: "weight", text: s.weight.toFixed(3) }));
    }),
  );
  if (!signals.length) $("why-signals").append(el("li", { text: "No signals were recorded." }));
  $("why-note").textContent = note;
}

async function openWhy(item) {
  fillWhy(item, "From the feed response; looking up the served record…");
  openSheet(whySheet);
  try {
    const rec = await api(`/v1/users/${enc(user)}/why/${enc(item.video_id)}`);
    if (current() === item) fillWhy(rec, "As recorded when this video was served to you.");
  } catch (err) {
    const note = err.status === 404 ? "No served record was found" : err.message;
    if (current() === item) $("why-note").textContent = `${note}; showing the feed's own explanation.`;
  }
}

// Settings: mutes, topics, personalisation, refresh, and the user's data.
const settings = $("settings-sheet");
let controls = null;
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

async function setControls(change, done) {
  try {
    const res = await api(`/v1/users/${enc(user)}/controls`, { method: "POST", body: change });
    controls = { ...controls, ...res };
    toast(done);
    return true;
  } catch (err) {
    toast(err.message, true);
    return false;
  }
}

function renderTopics() {
  const seen = new Set(Object.keys((controls && controls.topics) || {}));
  for (const it of items.slice(Math.max(0, index - 19), index + 1).reverse()) {
    for (const t of it.video.hashtags || []) {
      const topic = topicOf(t);
      if (topic) seen.add(topic);
    }
  }
  const box = $("topics");
  box.querySelectorAll(".topic").forEach((n) => n.remove());
  $("topics-empty").hidden = seen.size > 0;
  [...seen].slice(0, 12).forEach((topic, n) => {
    const pref = (controls && controls.topics && controls.topics[topic]) || "neutral";
    const radio = (value, label) => el("label", {},
      el("input", { type: "radio", name: `topic-${n}`, value, checked: pref === value }), ` ${label}`);
    const row = el("div", { class: "topic", role: "radiogroup", "aria-labelledby": `topic-${n}-name` },
      el("span", { id: `topic-${n}-name`, class: "name", text: `#${topic}` }),
      radio("more", "More"), radio("neutral", "Neutral"), radio("less", "Less"));
    row.addEventListener("change", (e) => {
      const what = { more: "More", less: "Less", neutral: "No preference for" }[e.target.value];
      setControls({ topics: { [topic]: e.target.value } }, `${what} #${topic}.`);
    });
    box.append(row);
  });
}

async function openSettings() {
  $("delete-confirm").hidden = true;
  $("delete-data").setAttribute("aria-expanded", "false");
  $("whoami").textContent = `You are “${user}” on this device.`;
  renderTopics();
  openSheet(settings);
  try {
    controls = (await api(`/v1/users/${enc(user)}`)).controls;
    $("mute-words").value = (controls.mute_keywords || []).join(", ");
    $("mute-tags").value = (controls.mute_hashtags || []).join(", ");
    $("non-personalised").checked = controls.personalized === false;
    renderTopics();
  } catch (err) {
    toast(`Your settings could not be loaded. ${err.message}`, true);
  }
}

$("settings-open").addEventListener("click", openSettings);

$("mutes").addEventListener("submit", async (e) => {
  e.preventDefault();
  const change = { mute_keywords: list($("mute-words").value), mute_hashtags: list($("mute-tags").value) };
  if (await setControls(change, "Muted words and hashtags saved.")) dropUpcoming();
});

$("non-personalised").addEventListener("change", async (e) => {
  const off = e.target.checked;
  const done = off ? "Non-personalised feed on." : "Personalised feed on.";
  if (await setControls({ personalized: !off }, done)) dropUpcoming();
  else e.target.checked = !off;
});

$("refresh-feed").addEventListener("click", async () => {
  if (await setControls({ refresh: true }, "Your feed starts fresh.")) dropUpcoming();
});

$("download-data").addEventListener("click", async () => {
  try {
    const res = await api(`/v1/users/${enc(user)}/export`, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: "my-fyp-data.json", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast("Downloaded my-fyp-data.json.");
  } catch (err) {
    toast(`Download failed. ${err.message}`, true);
  }
});

// Deleting is two clicks: "Delete my data" shows the confirming button.
$("delete-data").addEventListener("click", () => {
  const confirm = $("delete-confirm");
  confirm.hidden = !confirm.hidden;
  $("delete-data").setAttribute("aria-expanded", String(!confirm.hidden));
  if (!confirm.hidden) confirm.focus();
});

$("delete-confirm").addEventListener("click", async () => {
  queue.length = 0; // what is not yet sent is not sent: it is the data being deleted
  await sending;
  try {
    await api(`/v1/users/${enc(user)}`, { method: "DELETE" });
  } catch (err) {
    return toast(`Your data was not deleted. ${err.message}`, true);
  }
  settings.close();
  watch.since = null; // the view of the deleted user's card is not sent
  user = newUser();
  generation++;
  loading = null;
  items = [];
  index = -1;
  page = null;
  furthest = -1;
  delete document.body.dataset.ready;
  status("Your data was deleted. Starting over as a new user…");
  toast("Your data was deleted. You are starting over as a new user.");
  start();
});

// ------------------------------------------------------------------------ start

window.fypPlayer = {
  current() {
    const it = current();
    if (!it) return null;
    const v = it.video;
    return { video_id: it.video_id, creator_id: v.creator_id ?? null,
      hashtags: (v.hashtags || []).map(tagText), duration_ms: v.duration_ms ?? null,
      source: it.source, reason: it.reason };
  },
  sent: () => acked,
  pending: () => queue.length + inFlight,
  next,
  prev,
};

async function start() {
  status("Loading your feed…");
  try {
    // With a token the app made the user before issuing it (and a token may not: the
    // profile is the app's to set).
    if (!token) await api(`/v1/users/${enc(user)}`, { method: "PUT", body: {} }); // 200 or 201
  } catch (err) {
    if (err.status === 401 || err.status === 403 || err.status === 421) {
      return status(`Could not start the feed. ${err.message}`, start);
    }
    toast(err.message, true); // the feed may still work
  }
  if ((await refill()) > 0) showCard(0);
  else if (index < 0 && !feedEl.querySelector("button"))
    status("No videos to show yet. Add some to the catalog (POST /v1/videos).", start);
}

if (!key && !token) {
  for (const id of ["settings-open", "prev", "next"]) $(id).hidden = true; // nothing to act on
  feedEl.replaceChildren(el("div", { class: "placeholder" }));
  feedEl.firstChild.innerHTML = noKeyHelp("/#token=fyt_…", true); // static text, no user input
} else {
  if (token) {
    // Erasure takes the app (a token cannot erase: a stolen one must not be able to).
    $("delete-data").hidden = true;
    $("delete-note").hidden = false;
    scheduleRenewal();
  }
  start();
}
