// A newcomer in the web player who watches one hashtag's videos to the end and skips every
// other card after about a second, liking nothing (issue 20's test, by a person's hand):
// within 20 cards the feed must lean to that hashtag. A control newcomer who skips every
// card sees the hashtag about as often as the catalog holds it.
// Environment: FYP_BASE_URL, FYP_KEY, FYP_SCREENSHOTS, FYP_CATALOG (a JSON file:
// {"videos": {video_id: {creator_id, hashtags, duration_ms}}}), FYP_USER, FYP_HASHTAG.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BASE_URL, KEY, env, log, run, screenshot, sleep } from './harness.mjs';

const USER = env('FYP_USER', 'web-lean-1');
const HASHTAG = env('FYP_HASHTAG', 'chess');
const CATALOG = JSON.parse(readFileSync(env('FYP_CATALOG'), 'utf8')).videos;
const CARDS = 20;
const SKIP_AFTER_MS = 1_000;

const tag = (t) => String(t).trim().replace(/^#/, '').toLowerCase();
const onTaste = (card) => card.hashtags.some((t) => tag(t) === HASHTAG);

async function open(page, user) {
  await page.goto(`${BASE_URL}/#key=${encodeURIComponent(KEY)}&user=${encodeURIComponent(user)}`);
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 20_000 });
}

const current = (page) => page.evaluate(() => window.fypPlayer.current());

/** Go through ``CARDS`` cards as the person would; returns, per card, whether it
 * carried the hashtag. ``watches``: whether on-taste cards are watched to the end (the
 * control skips every card, after half a second: it only has to see what comes). */
async function session(page, watches) {
  const hits = [];
  let cur = await current(page);
  while (hits.length < CARDS) {
    const hit = onTaste(cur);
    hits.push(hit);
    // To its end, as the page measures it (time on screen); else a second's look.
    await sleep(!watches ? SKIP_AFTER_MS / 2 : hit ? Number(cur.duration_ms) + 400 : SKIP_AFTER_MS);
    if (hits.length === CARDS) break;
    const now = await current(page);
    if (now.video_id === cur.video_id) {
      await page.keyboard.press('ArrowDown');
      await page.waitForFunction((b) => window.fypPlayer.current()?.video_id !== b, cur.video_id, {
        timeout: 10_000,
      });
    }
    cur = await current(page); // (or the player moved on by itself at the end)
  }
  await page.waitForFunction(() => window.fypPlayer.pending() === 0, null, { timeout: 15_000 });
  return hits;
}

const count = (hits, a, b) => hits.slice(a, b).filter(Boolean).length;
const strip = (hits) => hits.map((h) => (h ? '#' : '.')).join('');

run('player-lean', async (page) => {
  const videos = Object.values(CATALOG);
  const chance = videos.filter((v) => v.hashtags.some((t) => tag(t) === HASHTAG)).length / videos.length;

  await open(page, USER);
  const hits = await session(page, true);
  await screenshot(page, 'player-lean.png');
  log(`#${HASHTAG} watched to the end, the rest skipped after ${SKIP_AFTER_MS} ms: ${strip(hits)}`);

  await open(page, `${USER}-control`);
  const control = await session(page, false);
  log(`control, every card skipped after ${SKIP_AFTER_MS / 2} ms:               ${strip(control)}`);

  // The lean: at least half of cards 11-20 carry the hashtag (the catalog: one in
  // eight), three more than the control's cards 11-20.
  const late = count(hits, 10, 20);
  log(`cards 11-20 on #${HASHTAG}: ${late} of 10 (cards 1-10: ${count(hits, 0, 10)}; control: ` +
    `${count(control, 10, 20)}; the catalog: ${(10 * chance).toFixed(1)} of 10)`);
  assert.ok(
    late >= 5 && late >= count(control, 10, 20) + 3,
    `no clear lean to #${HASHTAG} within ${CARDS} cards: ${strip(hits)} (control ${strip(control)})`,
  );
});
