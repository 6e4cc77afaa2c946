// Shared by the player and the console: who is calling (key or token, user) and a fetch
// wrapper.
//
// The credential comes in the URL fragment, which browsers never send to the server:
// /#token=... (a user token from POST /v1/tokens: it acts for its one user only, which
// is what a player should hold), or /#key=...&user=... (an API key: the console's, or a
// player for any user). It is moved into sessionStorage (gone when the tab is closed)
// and the fragment is removed from the address bar, so it is not bookmarked, shared or
// kept in the history by accident.

const KEY = "fyp.key";
const TOKEN = "fyp.token";
const USER = "fyp.user"; // sessionStorage: given in the URL
const LOCAL_USER = "fyp.localUser"; // localStorage: made up here, kept across visits

/** Read the credential (and user) from the fragment, store them, clean the address bar. */
export function readAuth() {
  const params = new URLSearchParams(location.hash.slice(1));
  // One credential at a time: the one just given replaces the other kind.
  if (params.get("key")) {
    sessionStorage.setItem(KEY, params.get("key"));
    sessionStorage.removeItem(TOKEN);
  }
  if (params.get("token")) {
    sessionStorage.setItem(TOKEN, params.get("token"));
    sessionStorage.removeItem(KEY);
  }
  if (params.get("user")) sessionStorage.setItem(USER, params.get("user"));
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  // A new #key=… pasted into this open tab changes only the fragment: start over with it.
  addEventListener("hashchange", () => location.reload());
  const token = tokenClaims(sessionStorage.getItem(TOKEN));
  return {
    key: sessionStorage.getItem(KEY),
    token,
    user: token ? token.user : currentUser(),
  };
}

/**
 * What a user token says of itself (its payload is readable; only its signature is the
 * server's): {token, user, expiresAt, renewableUntil}, or null if there is none or it is
 * not one.
 */
export function tokenClaims(token) {
  if (!token || !token.startsWith("fyt_")) return null;
  try {
    const b64 = token.slice(4).split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const [, user, , , expiresAt, renewableUntil] = JSON.parse(json); // (key, user, epoch, born, …)
    if (typeof user !== "string") return null;
    return { token, user, expiresAt, renewableUntil };
  } catch {
    return null;
  }
}

/** Use `token` (a renewed one) for the requests from now on. */
export function setToken(token) {
  sessionStorage.setItem(TOKEN, token);
}

/** The user: the one given in the URL, else the one this browser made up, else a new one. */
export function currentUser() {
  let user = sessionStorage.getItem(USER) || localStorage.getItem(LOCAL_USER);
  if (!user) user = newUser();
  return user;
}

/** Forget the current user and start over as a fresh one (after "Delete my data"). */
export function newUser() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  const user = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.removeItem(USER);
  localStorage.setItem(LOCAL_USER, user);
  return user;
}

/** An API error: the HTTP status and the server's `detail`, as a sentence for the UI. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// What 401/403 mean here, in plain words (the server's detail follows).
const HINTS = {
  401: "The API key or token is missing, wrong, expired or revoked.",
  403: "Not allowed with this API key or token.",
  421: "This user belongs to another region's deployment.",
  429: "Too many requests; slowing down.",
};

/** FastAPI's `detail`: a string, or a list of validation errors. */
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return detail == null ? "" : JSON.stringify(detail);
}

/**
 * fetch() for the API: adds the key, sends/reads JSON, throws ApiError on 4xx/5xx.
 * options: {method, body (an object, sent as JSON), keepalive, raw (return the Response)}.
 * Partial successes (422 with a body, e.g. some events rejected) are errors carrying
 * `.body` so the caller can read what was accepted.
 */
export async function api(path, { method = "GET", body, keepalive = false, raw = false } = {}) {
  const credential = sessionStorage.getItem(TOKEN) || sessionStorage.getItem(KEY);
  const headers = { Accept: "application/json" };
  if (credential) headers.Authorization = `Bearer ${credential}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      keepalive,
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, `Network error: ${err.message}`);
  }
  if (res.ok && raw) return res;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    let detail = describe(data && data.detail) || res.statusText;
    detail = detail.charAt(0).toUpperCase() + detail.slice(1);
    const hint = HINTS[res.status] ? `${HINTS[res.status]} ` : "";
    const err = new ApiError(res.status, `${res.status}: ${hint}${detail}`);
    err.body = data;
    throw err;
  }
  return data;
}

/**
 * The message shown when there is no key: where to get one. `address` is the page's
 * own address with a key (or, `token`, a user token) in its fragment, as typed (it is
 * escaped here).
 */
export function noKeyHelp(address, token = false) {
  const code = address.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const what = token ? "A user token is needed" : "An API key is needed";
  const make = token
    ? "An app's backend gets one from <code>POST /v1/tokens</code> (with a key that has the scope <code>tokens:issue</code>)."
    : "Make one with <code>fyp keys create --data-dir D --scopes all</code>.";
  return `
  <h2>${what}</h2>
  <p>Open this page with it in the address, after <code>#</code>:
  <code>${code}</code>. It stays in this tab; it is never
  part of a request to this page.</p>
  <p>${make} Or use the address <code>make run</code> prints.</p>`;
}

/** Text for display: missing values as an em dash. */
export function show(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value === "number" && digits !== undefined) return value.toFixed(digits);
  if (typeof value === "number") return value.toLocaleString("en");
  return String(value);
}

/** Create an element: el("p", {class: "x", text: "hi"}, child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** A small toast in a live region: el must be a role="status" element. */
export function toaster(region) {
  let timer;
  return (message, isError = false) => {
    // An open modal <dialog> is in the top layer, above everything else: show the
    // toast inside it so it stays visible.
    const host = document.querySelector("dialog[open]") || document.body;
    if (region.parentNode !== host) host.append(region);
    region.textContent = message;
    region.classList.toggle("error", isError);
    region.classList.add("shown");
    clearTimeout(timer);
    timer = setTimeout(() => region.classList.remove("shown"), isError ? 6000 : 2500);
  };
}
