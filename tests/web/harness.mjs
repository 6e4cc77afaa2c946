// Shared by the browser scenarios (player.spec.mjs, console.spec.mjs): the browser,
// the environment they are given, the API from Node, and failing with a clear message.
// Driven by tests/web/test_browser.py; runnable by hand against any `fyp serve`:
//   FYP_BASE_URL=http://127.0.0.1:8000 FYP_KEY=... FYP_SCREENSHOTS=/tmp/shots node tests/web/player.spec.mjs
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.FYP_CHROMIUM || '/usr/bin/chromium';

export function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') fail(`the environment variable ${name} is not set`);
  return value;
}

export const BASE_URL = env('FYP_BASE_URL').replace(/\/$/, '');
export const KEY = env('FYP_KEY');
export const SHOTS = env('FYP_SCREENSHOTS', fileURLToPath(new URL('./output', import.meta.url)));
mkdirSync(SHOTS, { recursive: true });

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

export function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

/** Chromium headless, every request not to 127.0.0.1 aborted (nothing may be fetched from
 * outside: a font, an analytics script... would be a bug of the page, and is logged). */
export async function openBrowser(viewport = { width: 420, height: 820 }) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox'],
  });
  const context = await browser.newContext({ viewport });
  const blocked = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === '127.0.0.1' || url.protocol === 'data:' || url.protocol === 'blob:') {
      return route.continue();
    }
    blocked.push(url.href);
    return route.abort('blockedbyclient');
  });
  const pageErrors = [];
  context.on('page', (page) => {
    page.on('pageerror', (err) => {
      pageErrors.push(String(err));
      log('page error:', String(err));
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error') log('console error:', msg.text());
    });
  });
  return { browser, context, blocked, pageErrors };
}

export async function screenshot(page, name, options = {}) {
  const path = join(SHOTS, name);
  await page.screenshot({ path, ...options });
  log('screenshot', path);
  return path;
}

/** The API from Node (not through the page), with the key. */
export async function api(method, path, body) {
  const resp = await fetch(BASE_URL + path, {
    method,
    headers: {
      Authorization: `Bearer ${KEY}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: resp.status, json, text };
}

/** Until the server has learned from every event logged (``learning_lag`` 0). */
export async function waitLearned(timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await api('GET', '/healthz');
    if (last.status === 200 && last.json?.learning_lag === 0) return;
    await sleep(100);
  }
  fail(`the server did not catch up with its event log in ${timeoutMs} ms: ${last?.text}`);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs the scenario; any exception (an assertion, a timeout) is a clear failure, with a
 * screenshot of where the page was. */
export async function run(name, scenario, viewport) {
  const started = Date.now();
  const { browser, context, blocked, pageErrors } = await openBrowser(viewport);
  let page;
  try {
    page = await context.newPage();
    await scenario(page, { context, blocked, pageErrors });
    if (pageErrors.length) throw new Error(`uncaught errors in the page: ${pageErrors.join(' | ')}`);
    log(`${name}: passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    if (page) {
      try {
        await screenshot(page, `${name}-failure.png`);
      } catch {
        // the page may be gone
      }
    }
    if (blocked.length) log('requests blocked (not to 127.0.0.1):', blocked.join(', '));
    await browser.close();
    fail(`${name}: ${err?.stack || err}`);
  }
  if (blocked.length) log('requests blocked (not to 127.0.0.1):', blocked.join(', '));
  await browser.close();
}
