// The web player (/) in a real browser: the DOM contract, the feed learning from what is
// watched to the end, the "Why this video?" sheet, keyboard-only use and accessibility
// basics. Environment: FYP_BASE_URL, FYP_KEY, FYP_SCREENSHOTS, FYP_CATALOG (a JSON file:
// {"videos": {video_id: {creator_id, hashtags, duration_ms}}}), FYP_USER (optional).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BASE_URL, KEY, env, log, run, screenshot, sleep, waitLearned } from './harness.mjs';

const USER = env('FYP_USER', 'web-test-1');
const CATALOG = JSON.parse(readFileSync(env('FYP_CATALOG'), 'utf8')).videos;
const WATCH_TARGET = 3; // X's own cards watched to the end
const MAX_CARDS = 30; // cards gone through to find them
const SKIP_AFTER_MS = 300;
const AFTER = 8; // cards looked at after the signal
const CARD_BUTTONS = ['Like', 'Share', 'Follow creator', 'Not interested', 'Report', 'Why this video?'];
const ALL_BUTTONS = [...CARD_BUTTONS, 'Settings', 'Next video', 'Previous video'];

const tag = (t) => String(t).trim().replace(/^#/, '').toLowerCase();

// -- the page's state --------------------------------------------------------------------

async function current(page) {
  return page.evaluate(() => window.fypPlayer.current());
}

/** The card with aria-current="true" (exactly one), as its data attributes say. */
async function currentCard(page) {
  return page.evaluate(() => {
    const cards = [...document.querySelectorAll('#feed article.card[aria-current="true"]')];
    return cards.map((c) => ({
      video_id: c.dataset.videoId,
      creator_id: c.dataset.creatorId,
      hashtags: c.dataset.hashtags,
      duration_ms: c.dataset.durationMs,
    }));
  });
}

/** current() and the aria-current card agree, and with the catalog. */
async function checkCurrent(page) {
  const cur = await current(page);
  assert.ok(cur && cur.video_id, `fypPlayer.current() returned ${JSON.stringify(cur)}`);
  for (const field of ['video_id', 'creator_id', 'hashtags', 'duration_ms', 'source', 'reason']) {
    assert.ok(field in cur, `fypPlayer.current() lacks ${field}: ${JSON.stringify(cur)}`);
  }
  const marked = await currentCard(page);
  assert.equal(marked.length, 1, `expected one card with aria-current="true", found ${marked.length}`);
  const [card] = marked;
  assert.equal(card.video_id, cur.video_id, 'the aria-current card is not fypPlayer.current()');
  assert.equal(card.creator_id, cur.creator_id, 'data-creator-id differs from current().creator_id');
  assert.equal(Number(card.duration_ms), Number(cur.duration_ms), 'data-duration-ms differs');
  const known = CATALOG[cur.video_id];
  assert.ok(known, `the current card ${cur.video_id} is not in the seeded catalog`);
  assert.equal(cur.creator_id, known.creator_id, `creator of ${cur.video_id}`);
  assert.equal(Number(cur.duration_ms), known.duration_ms, `duration of ${cur.video_id}`);
  const attrTags = (card.hashtags || '').split(/\s+/).filter(Boolean);
  assert.ok(attrTags.every((t) => t.startsWith('#')), `data-hashtags="${card.hashtags}" is not "#a #b"`);
  assert.deepEqual(attrTags.map(tag).sort(), known.hashtags.map(tag).sort(), `data-hashtags of ${cur.video_id}`);
  assert.deepEqual([...cur.hashtags].map(tag).sort(), known.hashtags.map(tag).sort(), 'current().hashtags');
  assert.ok(String(cur.reason).trim(), `current().reason is empty for ${cur.video_id}`);
  return cur;
}

/** fypPlayer.sent(): how many events the API acknowledged. */
async function sentCount(page) {
  return page.evaluate(() => window.fypPlayer.sent());
}

async function waitSent(page, timeout = 15_000) {
  await page.waitForFunction(() => window.fypPlayer.pending() === 0, null, { timeout });
}

/** Every event the page POSTed to /v1/events, with the status of its response. */
function recordEvents(page) {
  const wire = [];
  page.on('response', async (resp) => {
    const req = resp.request();
    if (req.method() !== 'POST' || new URL(req.url()).pathname !== '/v1/events') return;
    let events = [];
    try {
      events = JSON.parse(req.postData() || '{}').events || [];
    } catch {
      // not JSON: the assertions below find no events
    }
    wire.push({ status: resp.status(), events });
  });
  return wire;
}

/** The events the API took (200, or the accepted part of a 422). */
const acknowledged = (wire) => wire.filter((w) => w.status === 200).flatMap((w) => w.events);

/** Press ``key`` and wait for the current card to change. */
async function move(page, key = 'ArrowDown') {
  const before = (await current(page)).video_id;
  await page.keyboard.press(key);
  await page
    .waitForFunction((b) => window.fypPlayer.current()?.video_id !== b, before, { timeout: 10_000 })
    .catch(() => {
      throw new Error(`pressing ${key} on ${before} did not change the current card in 10 s`);
    });
  return checkCurrent(page);
}

/** The view events sent for ``videoId`` (after ``from`` events on the wire): once it
 * was left, all of them acknowledged. */
async function viewsOf(page, wire, videoId, from = 0) {
  await waitSent(page);
  await sleep(50); // the response event may trail the page's own bookkeeping
  const views = acknowledged(wire)
    .slice(from)
    .filter((e) => e.type === 'view' && e.video_id === videoId);
  assert.ok(views.length, `no view event was sent (and acknowledged) for ${videoId} after leaving it`);
  for (const v of views) {
    assert.equal(v.user_id, USER, 'the view event is not of the user given in the URL');
    assert.ok(Number.isInteger(v.watch_ms), `view of ${videoId} has watch_ms ${v.watch_ms}`);
    assert.ok(v.request_id, `view of ${videoId} lacks the request_id of the feed it came from`);
  }
  return views;
}

const watchedMs = (views) => views.reduce((sum, v) => sum + v.watch_ms, 0);

// In the page: the tab hidden (as document.visibilityState says), then shown again.
function hideTab() {
  for (const [prop, value] of [['visibilityState', 'hidden'], ['hidden', true]]) {
    Object.defineProperty(document, prop, { configurable: true, get: () => value });
  }
  document.dispatchEvent(new Event('visibilitychange'));
}

function showTab() {
  delete document.visibilityState;
  delete document.hidden;
  document.dispatchEvent(new Event('visibilitychange'));
}

function onTopic(video, x) {
  return video.creator_id === x.creator || video.hashtags.some((t) => x.tags.has(tag(t)));
}

function share(videos, x) {
  return videos.length ? videos.filter((v) => onTopic(v, x)).length / videos.length : 0;
}

// -- accessibility -----------------------------------------------------------------------

/** Every button's accessible name (aria-labelledby, aria-label, text without aria-hidden
 * parts, title); the ones without. */
async function unnamedButtons(page) {
  return page.evaluate(() => {
    const text = (node) => {
      if (node.nodeType === Node.TEXT_NODE) return node.textContent;
      if (node.nodeType !== Node.ELEMENT_NODE || node.getAttribute('aria-hidden') === 'true') return '';
      if (node.tagName === 'IMG') return node.getAttribute('alt') || '';
      return [...node.childNodes].map(text).join('');
    };
    const name = (el) => {
      const by = (el.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean);
      const fromIds = by.map((id) => document.getElementById(id)?.textContent || '').join(' ').trim();
      return fromIds || (el.getAttribute('aria-label') || '').trim() || text(el).trim() || (el.title || '').trim();
    };
    const buttons = [...document.querySelectorAll('button, [role="button"], input[type="button"], input[type="submit"]')];
    return {
      count: buttons.length,
      unnamed: buttons.filter((b) => !(name(b) || b.value)).map((b) => b.outerHTML.slice(0, 160)),
    };
  });
}

/** The contrast ratio of the current card's text (caption, creator, hashtags...) against
 * what is behind it: the translucent layers between the text and the card (its scrim:
 * colours, and linear gradients evaluated at the text's top and bottom), over black and
 * over white, as the video under the scrim could be either; the worst line, worst case.
 * An opaque background between the text and the card is used as it is. */
async function cardTextContrast(page) {
  return page.evaluate(() => {
    const card = document.querySelector('#feed article.card[aria-current="true"]');
    const hiddenFromAT = (e) => e.closest('[aria-hidden="true"]');
    const texts = [...card.querySelectorAll('h1, h2, h3, p, span, figcaption, div')].filter(
      (e) =>
        !hiddenFromAT(e) &&
        !e.closest('button') &&
        [...e.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim()) &&
        e.getClientRects().length,
    );
    if (!texts.length) return { error: 'no text in the current card', html: card.outerHTML.slice(0, 600) };
    const parse = (str) => {
      const m = str.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    };
    const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
    const lum = (c) => {
      const [r, g, b] = c.slice(0, 3).map((v) => {
        const x = v / 255;
        return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => {
      const [l1, l2] = [lum(a), lum(b)].sort((x, y) => y - x);
      return (l1 + 0.05) / (l2 + 0.05);
    };
    // Split at the commas outside parentheses.
    const topLevel = (str) => {
      const out = [];
      let depth = 0;
      let cur = '';
      for (const ch of str) {
        if (ch === '(') depth++;
        if (ch === ')') depth--;
        if (ch === ',' && depth === 0) {
          out.push(cur.trim());
          cur = '';
        } else cur += ch;
      }
      if (cur.trim()) out.push(cur.trim());
      return out;
    };
    const position = (str, size) => {
      if (!str) return null;
      let m = str.match(/^([\d.]+)%$/);
      if (m) return parseFloat(m[1]) / 100;
      m = str.match(/^([\d.]+)px$/);
      if (m) return parseFloat(m[1]) / size;
      m = str.match(/^calc\(([\d.]+)%\s*([+-])\s*([\d.]+)px\)$/);
      if (m) return parseFloat(m[1]) / 100 + (m[2] === '-' ? -1 : 1) * (parseFloat(m[3]) / size);
      return null;
    };
    // The colours of a background-image's linear gradients at heights ys (viewport px);
    // a gradient in another direction gives its most transparent stop (the worst case).
    // Other images (repeating patterns, radial...) are ignored.
    const gradients = (image, owner, ys) => {
      const found = [];
      for (const layer of topLevel(image)) {
        const g = layer.match(/^linear-gradient\((.*)\)$/);
        if (!g) continue;
        const args = topLevel(g[1]);
        let dir = 'down';
        if (!/^rgba?\(/.test(args[0])) {
          const head = args.shift();
          if (/^(to top|0deg|360deg)$/.test(head)) dir = 'up';
          else if (!/^(to bottom|180deg)$/.test(head)) dir = 'other';
        }
        const r = owner.getBoundingClientRect();
        const stops = args.map((a) => {
          const m = a.match(/^(rgba?\([^)]*\))\s*(.*)$/);
          return m ? { color: parse(m[1]), at: position(m[2].trim(), r.height) } : null;
        });
        if (!stops.length || stops.some((x) => !x || !x.color)) continue;
        stops.forEach((x, i) => {
          if (x.at === null) x.at = stops.length === 1 ? 0 : i / (stops.length - 1);
        });
        if (dir === 'other') {
          found.push(stops.reduce((a, b) => (a.color[3] <= b.color[3] ? a : b)).color);
          continue;
        }
        const at = (y) => {
          let t = r.height ? (y - r.top) / r.height : 0.5;
          if (dir === 'up') t = 1 - t;
          t = Math.min(Math.max(t, 0), 1);
          if (t <= stops[0].at) return stops[0].color;
          for (let i = 1; i < stops.length; i++) {
            if (t <= stops[i].at) {
              const [a, b] = [stops[i - 1], stops[i]];
              const f = b.at === a.at ? 1 : (t - a.at) / (b.at - a.at);
              return a.color.map((v, k) => v + (b.color[k] - v) * f);
            }
          }
          return stops[stops.length - 1].color;
        };
        found.push(ys.map(at).reduce((a, b) => (a[3] <= b[3] ? a : b)));
      }
      return found;
    };
    const measure = (el) => {
      const box = el.getBoundingClientRect();
      const ys = [box.top + 1, box.bottom - 1];
      const layers = []; // from the text's own background outwards, to the card
      let opaque = null;
      for (let node = el; node && node !== card; node = node.parentElement) {
        const style = getComputedStyle(node);
        const found = style.backgroundImage !== 'none' ? gradients(style.backgroundImage, node, ys) : [];
        const bg = parse(style.backgroundColor);
        if (bg && bg[3] > 0) found.push(bg);
        const full = found.find((c) => c[3] >= 0.999);
        if (full) {
          opaque = full;
          break;
        }
        for (const c of found) layers.push({ color: c, by: String(node.className || node.tagName) });
      }
      const fg = parse(getComputedStyle(el).color);
      const against = (base) => {
        let c = base;
        for (let i = layers.length - 1; i >= 0; i--) c = over(layers[i].color, c);
        return { ratio: ratio(over(fg, c), c), behind: c.map(Math.round) };
      };
      const bases = opaque ? [opaque] : [[0, 0, 0, 1], [255, 255, 255, 1]];
      const worst = bases.map(against).reduce((a, b) => (a.ratio <= b.ratio ? a : b));
      return {
        ratio: +worst.ratio.toFixed(2),
        text: el.textContent.trim().slice(0, 40),
        element: `${el.tagName.toLowerCase()}.${el.className}`,
        color: fg,
        behind: worst.behind,
        layers: layers.map((l) => `${l.by}: rgba(${l.color.map((v) => +v.toFixed(2)).join(',')})`),
      };
    };
    const all = texts.map(measure);
    return { worst: all.reduce((a, b) => (a.ratio <= b.ratio ? a : b)), all };
  });
}

/** The focused element: its accessible name, whether it can be seen, where it is. */
async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body || el === document.documentElement) return { name: '(body)' };
    const label = el.getAttribute('aria-label');
    const text = [...el.childNodes]
      .filter((n) => !(n.nodeType === Node.ELEMENT_NODE && n.getAttribute('aria-hidden') === 'true'))
      .map((n) => n.textContent)
      .join('')
      .trim();
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    const visible =
      r.width > 0 && r.height > 0 && style.visibility !== 'hidden' && r.bottom > 0 && r.top < innerHeight &&
      r.right > 0 && r.left < innerWidth;
    return {
      name: (label || text || el.title || el.tagName).trim(),
      tag: el.tagName,
      visible,
      x: r.left,
      y: r.top,
      inCard: !!el.closest('article.card'),
      cardCurrent: el.closest('article.card')?.getAttribute('aria-current') === 'true',
    };
  });
}

// -- the scenario -------------------------------------------------------------------------

run('player', async (page) => {
  const wire = recordEvents(page);
  const calls = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.pathname.startsWith('/v1/')) calls.push(`${req.method()} ${url.pathname}`);
  });
  await page.goto(`${BASE_URL}/#key=${encodeURIComponent(KEY)}&user=${encodeURIComponent(USER)}`);
  await page
    .waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 20_000 })
    .catch(async () => {
      const status = await page.evaluate(() => document.querySelector('#feed')?.innerText?.slice(0, 300));
      throw new Error(`the player never set body[data-ready="true"] (in 20 s); the feed says: ${status}`);
    });
  log('ready');
  const put = calls.indexOf(`PUT /v1/users/${USER}`);
  const feed = calls.indexOf('GET /v1/feed');
  assert.ok(put >= 0 && put < feed, `the player did not create its user before its first feed: ${calls}`);

  // The page's basics.
  assert.ok(await page.evaluate(() => document.documentElement.lang.trim()), 'html[lang] is not set');
  assert.equal(await page.locator('main#feed').count(), 1, 'no <main id="feed">');
  const first = await checkCurrent(page);
  const firstPage = await page.evaluate(() =>
    [...document.querySelectorAll('#feed article.card')].map((c) => c.dataset.videoId),
  );
  assert.ok(firstPage.length >= 1, 'no cards in #feed');
  for (const name of ALL_BUTTONS) {
    const n = await page.getByRole('button', { name, exact: true }).filter({ visible: true }).count();
    assert.equal(n, 1, `expected one visible button named "${name}", found ${n}`);
  }
  const buttons = await unnamedButtons(page);
  assert.deepEqual(buttons.unnamed, [], `buttons without an accessible name (of ${buttons.count})`);
  const contrast = await cardTextContrast(page);
  assert.ok(!contrast.error, `${contrast.error}: ${contrast.html}`);
  log('card text contrast:', contrast.all.map((c) => `${c.element} ${c.ratio}`).join(', '));
  assert.ok(contrast.all.some((c) => /caption/.test(c.element)), 'no caption text found on the card');
  assert.ok(
    contrast.worst.ratio >= 4.5,
    `text on the card has a contrast of ${contrast.worst.ratio}:1, under 4.5:1 ` +
      `(worst case over a black or white video): ${JSON.stringify(contrast.worst)}`,
  );
  await screenshot(page, 'player.png');

  // X: the first card's creator; X's topics: its hashtags.
  const x = { creator: first.creator_id, tags: new Set(first.hashtags.map(tag)) };
  const baseline = firstPage.map((v) => CATALOG[v]).filter(Boolean);
  const baselineShare = share(baseline, x);
  const total = Object.values(CATALOG);
  const chance = share(total, x);
  log(`X = ${x.creator} (${[...x.tags].join(' ')}); first page ${firstPage.length} cards,`,
    `on X's topics ${baselineShare.toFixed(2)}; in the catalog ${chance.toFixed(2)}`);

  // The signal: every card on X's topics (by X, or sharing one of its hashtags) watched
  // to the end, every other card skipped after ~300 ms; until three of X's own were.
  const watched = [];
  const skipped = [];
  const ownWatched = () => watched.filter((c) => c.creator_id === x.creator).length;
  let cur = first;
  for (let i = 0; i < MAX_CARDS && ownWatched() < WATCH_TARGET; i++) {
    if (onTopic(cur, x)) {
      // Until its progress completes, as the page measures it (time on screen).
      await sleep(Number(cur.duration_ms) + 500);
      watched.push(cur);
    } else {
      await sleep(SKIP_AFTER_MS);
      skipped.push(cur);
    }
    if ((await current(page)).video_id === cur.video_id) cur = await move(page);
    else cur = await checkCurrent(page); // the player moved on by itself at the end
  }
  log(`watched ${watched.length} cards on X's topics to the end (${ownWatched()} of X's), skipped ${skipped.length}`);
  assert.ok(
    ownWatched() >= WATCH_TARGET,
    `only ${ownWatched()} of ${x.creator}'s cards came up in ${MAX_CARDS} cards, though ` +
      `${watched.length} cards on its topics were watched to the end and ${skipped.length} others skipped`,
  );
  await waitSent(page);
  for (const v of watched) {
    const ms = watchedMs(await viewsOf(page, wire, v.video_id));
    assert.ok(
      ms >= 0.95 * Number(v.duration_ms),
      `${v.video_id} was on screen past its end (${v.duration_ms} ms) but its views say watch_ms ${ms}`,
    );
  }
  for (const v of skipped.slice(0, 5)) {
    const ms = watchedMs(await viewsOf(page, wire, v.video_id));
    assert.ok(
      ms >= 100 && ms < 2_000,
      `${v.video_id} was skipped after ~${SKIP_AFTER_MS} ms but its views say watch_ms ${ms}`,
    );
  }
  const onWire = acknowledged(wire).length;
  const counted = await sentCount(page);
  assert.equal(counted, onWire, `fypPlayer.sent() says ${counted}; the API acknowledged ${onWire} events`);

  // After the signal: a fresh page of the feed (the same user, kept by the tab) leans to X.
  await waitLearned();
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 20_000 });
  const afterCards = [await checkCurrent(page)];
  while (afterCards.length < AFTER) {
    await sleep(150);
    afterCards.push(await move(page));
  }
  const afterVideos = afterCards.map((c) => CATALOG[c.video_id]);
  const afterShare = share(afterVideos, x);
  const seen = new Set([...watched, ...skipped].map((c) => c.video_id));
  const again = afterCards.filter((c) => seen.has(c.video_id)).map((c) => c.video_id);
  log(`after the signal: ${afterCards.map((c) => `${c.creator_id}:${c.source}`).join(' ')}`);
  log(`on X's topics: ${afterShare.toFixed(2)} (first page ${baselineShare.toFixed(2)}, catalog ${chance.toFixed(2)})`);
  assert.deepEqual(again, [], 'cards already viewed were served again');
  // A random feed has ~chance of its cards on X's topics: needing twice that and more than
  // the first page (which already had X's card) fails it most of the time.
  assert.ok(
    afterShare > baselineShare && afterShare >= 2 * chance,
    `the feed did not lean to ${x.creator}'s topics after ${watched.length} cards on them were ` +
      `watched to the end and ${skipped.length} others skipped: ${afterShare.toFixed(2)} of the next ` +
      `${AFTER} cards are, vs ${baselineShare.toFixed(2)} of the first page and ${chance.toFixed(2)} of the catalog`,
  );

  // "Why this video?": a dialog with the reason; Escape closes it, focus back on the button.
  const whyButton = page.getByRole('button', { name: 'Why this video?', exact: true }).filter({ visible: true });
  await whyButton.click();
  const why = page.getByRole('dialog', { name: 'Why this video?' });
  await why.waitFor({ state: 'visible', timeout: 5_000 });
  await page.waitForFunction(() => document.querySelector('#why-reason')?.textContent.trim(), null, { timeout: 5_000 });
  const reason = await page.locator('#why-reason').innerText();
  log('why:', reason);
  assert.ok(await why.locator('#why-reason').count(), '#why-reason is not inside the "Why this video?" dialog');
  await screenshot(page, 'player-why.png');
  await page.keyboard.press('Escape');
  await why.waitFor({ state: 'hidden', timeout: 3_000 });
  // The focus comes back with the dialog's "close" event, a moment after it is hidden.
  let back = await focused(page);
  for (let i = 0; back.name !== 'Why this video?' && i < 50; i++) {
    await page.waitForTimeout(20);
    back = await focused(page);
  }
  assert.equal(back.name, 'Why this video?', `after Escape the focus is on ${JSON.stringify(back)}, not the button`);

  // Settings: a dialog; Escape closes it.
  await page.getByRole('button', { name: 'Settings', exact: true }).click();
  const settings = page.getByRole('dialog', { name: 'Settings' });
  await settings.waitFor({ state: 'visible', timeout: 5_000 });
  await page.keyboard.press('Escape');
  await settings.waitFor({ state: 'hidden', timeout: 3_000 });
  // The dialog's "close" event, which gives the focus back to the Settings button, comes
  // a moment after it is hidden: wait for it, or the first Tab below races it.
  for (let i = 0; (await focused(page)).name !== 'Settings'; i++) {
    assert.ok(i < 50, `after Escape the focus is on ${JSON.stringify(await focused(page))}, not Settings`);
    await page.waitForTimeout(20);
  }

  // Keyboard only: Tab round the page; every stop visible, the card's buttons in the order
  // they are seen; then Enter on "Next video", ArrowDown/ArrowUp and j/k.
  const tabRound = async () => {
    const seen = [];
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press('Tab');
      const f = await focused(page);
      if (seen.length && f.name === seen[0].name && f.x === seen[0].x && f.y === seen[0].y) break;
      seen.push(f);
    }
    // A round is a cycle from wherever the focus was: read it from the document's start
    // (the stop after the body), so a round begun mid-card is in page order too.
    const body = seen.findIndex((s) => s.name === '(body)');
    return body < 0 ? seen : [...seen.slice(body + 1), ...seen.slice(0, body + 1)];
  };
  let stops = await tabRound();
  if (!CARD_BUTTONS.every((name) => stops.some((s) => s.name === name))) {
    // Seen once in CI (not understood yet): a round right after the Settings dialog
    // closed found only "Like → Settings". Logged, and the round taken again once.
    log('tab order, first round (incomplete):', stops.map((s) => s.name).join(' → '));
    await page.waitForTimeout(500);
    stops = await tabRound();
  }
  log('tab order:', stops.map((s) => s.name).join(' → '));
  const hiddenStops = stops.filter((s) => s.name !== '(body)' && !s.visible);
  assert.deepEqual(hiddenStops, [], 'Tab stops on elements that cannot be seen');
  const offCard = stops.filter((s) => s.inCard && !s.cardCurrent);
  assert.deepEqual(offCard, [], "Tab stops on the buttons of cards that are not the current one");
  const cardStops = stops.filter((s) => CARD_BUTTONS.includes(s.name));
  assert.deepEqual(
    [...cardStops.map((s) => s.name)].sort(),
    [...CARD_BUTTONS].sort(),
    'Tab does not visit each of the card buttons exactly once',
  );
  const visual = [...cardStops].sort((a, b) => (Math.abs(a.y - b.y) > 8 ? a.y - b.y : a.x - b.x));
  assert.deepEqual(
    cardStops.map((s) => s.name),
    visual.map((s) => s.name),
    'the Tab order of the card buttons is not the order they appear in (top to bottom, left to right)',
  );
  for (const name of ['Settings', 'Next video', 'Previous video']) {
    assert.ok(stops.some((s) => s.name === name), `Tab never reaches "${name}"`);
  }
  for (let i = 0; i < 60 && (await focused(page)).name !== 'Next video'; i++) await page.keyboard.press('Tab');
  assert.equal((await focused(page)).name, 'Next video', 'could not Tab to "Next video"');
  const beforeEnter = (await current(page)).video_id;
  await page.keyboard.press('Enter');
  await page.waitForFunction((b) => window.fypPlayer.current()?.video_id !== b, beforeEnter, { timeout: 10_000 });
  const afterEnter = await checkCurrent(page);
  const down = await move(page, 'ArrowDown');
  const up = await move(page, 'ArrowUp');
  assert.equal(up.video_id, afterEnter.video_id, 'ArrowUp after ArrowDown did not come back to the card');
  const j = await move(page, 'j');
  assert.equal(j.video_id, down.video_id, 'j did not move to the next card');
  const k = await move(page, 'k');
  assert.equal(k.video_id, afterEnter.video_id, 'k did not move to the previous card');

  // The watch time is time on screen with the tab visible: ~0.5 s visible, 1.5 s hidden,
  // 0.3 s visible again.
  await move(page, 'ArrowDown');
  await waitSent(page);
  const visitFrom = acknowledged(wire).length;
  const hiddenCard = await move(page, 'ArrowDown');
  await sleep(500);
  await page.evaluate(hideTab);
  await sleep(1_500);
  await page.evaluate(showTab);
  await sleep(300);
  await move(page, 'ArrowDown');
  const hiddenViews = await viewsOf(page, wire, hiddenCard.video_id, visitFrom);
  const hiddenMs = watchedMs(hiddenViews);
  log(`a card on screen ~2.3 s, 1.5 s of it with the tab hidden: watch_ms ${hiddenViews.map((v) => v.watch_ms)}`);
  assert.ok(
    hiddenMs >= 600 && hiddenMs <= 1_800,
    `watch_ms ${hiddenMs} in all for ~0.8 s visible of ~2.3 s on screen: is hidden time counted?`,
  );

  // A card made current while the tab is hidden: its view starts when the tab is shown
  // (~0.5 s visible), not when it became current.
  await waitSent(page);
  const shownFrom = acknowledged(wire).length;
  await page.evaluate(hideTab);
  const shownCard = await move(page, 'ArrowDown');
  await sleep(1_000);
  await page.evaluate(showTab);
  await sleep(500);
  await move(page, 'ArrowDown');
  const shownMs = watchedMs(await viewsOf(page, wire, shownCard.video_id, shownFrom));
  log(`a card made current with the tab hidden, then ~0.5 s visible: watch_ms ${shownMs}`);
  assert.ok(
    shownMs >= 300 && shownMs <= 1_200,
    `watch_ms ${shownMs} for ~0.5 s visible after it became current with the tab hidden`,
  );

  // The card's buttons act on the current card: each sends its event, of that card;
  // "Not interested" also moves on.
  const acted = await current(page);
  const actions = [
    ['Like', 'like'],
    ['Share', 'share'],
    ['Follow creator', 'follow'],
    ['Report', 'report'],
    ['Not interested', 'not_interested'],
  ];
  await waitSent(page);
  const actFrom = acknowledged(wire).length;
  for (const [name, type] of actions) {
    await page.getByRole('button', { name, exact: true }).filter({ visible: true }).click();
    await waitSent(page);
    await sleep(50);
    const got = acknowledged(wire)
      .slice(actFrom)
      .filter((e) => e.type === type);
    assert.deepEqual(
      got.map((e) => e.video_id),
      [acted.video_id],
      `clicking "${name}" should send one ${type} event, of the current card ${acted.video_id}`,
    );
  }
  await page
    .waitForFunction((v) => window.fypPlayer.current()?.video_id !== v, acted.video_id, { timeout: 10_000 })
    .catch(() => {
      throw new Error('"Not interested" did not move on from the card');
    });
  await waitSent(page);
});
