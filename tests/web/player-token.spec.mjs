// The web player with a user token (/#token=…, as `fyp demo` prints it) in a real
// browser: every request carries the token, never the key; the player does not create
// its user (the app did) and offers no erasure; it renews its token before it expires;
// once its key revokes its tokens, it says the session has ended.
// Environment: FYP_BASE_URL, FYP_KEY (to issue and revoke), FYP_SCREENSHOTS, FYP_USER.
import assert from 'node:assert/strict';
import { BASE_URL, KEY, api, env, log, run, screenshot, sleep } from './harness.mjs';

const USER = env('FYP_USER', 'web-token-1');
const TTL_S = 4; // renewed halfway: about 2 s after the page opens

run('player-token', async (page) => {
  assert.ok([200, 201].includes((await api('PUT', `/v1/users/${USER}`, {})).status));
  const issued = await api('POST', '/v1/tokens', { user_id: USER, ttl_s: TTL_S });
  assert.equal(issued.status, 200, `POST /v1/tokens: ${issued.text}`);
  const first = issued.json.token;

  const calls = [];
  page.on('response', (resp) => {
    const req = resp.request();
    const url = new URL(req.url());
    if (!url.pathname.startsWith('/v1/')) return;
    const auth = (req.headers().authorization || '').replace(/^Bearer /, '');
    calls.push({ call: `${req.method()} ${url.pathname}`, status: resp.status(), auth });
  });
  await page.goto(`${BASE_URL}/#token=${encodeURIComponent(first)}`);
  await page
    .waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 20_000 })
    .catch(async () => {
      const status = await page.evaluate(() => document.querySelector('#feed')?.innerText?.slice(0, 300));
      throw new Error(`the player never set body[data-ready="true"] (in 20 s); the feed says: ${status}`);
    });
  log('ready');
  assert.ok(calls.some((c) => c.call === 'GET /v1/feed' && c.status === 200), JSON.stringify(calls));
  assert.ok(!calls.some((c) => c.call.startsWith('PUT ')), `the player made its user: ${JSON.stringify(calls)}`);
  assert.ok(calls.every((c) => c.auth.startsWith('fyt_') && c.auth !== KEY), 'a request without the token');
  assert.ok(await page.locator('#delete-data').isHidden(), 'a token player offers "Delete my data"');

  // Past the first token's expiry the player still works: it renewed the token.
  await sleep(TTL_S * 1000 + 1000);
  const renewals = calls.filter((c) => c.call === 'POST /v1/tokens/renew');
  assert.ok(renewals.length >= 1 && renewals.every((c) => c.status === 200), `renewals: ${JSON.stringify(renewals)}`);
  const sent = calls.length;
  await page.keyboard.press('ArrowDown'); // ends a view: an events POST
  await page.waitForFunction(() => window.fypPlayer.pending() === 0, null, { timeout: 10_000 });
  const after = calls.slice(sent).filter((c) => c.call === 'POST /v1/events');
  assert.ok(after.length && after.every((c) => c.status === 200 && c.auth !== first),
    `events after the first token expired: ${JSON.stringify(after)}`);
  log(`renewed ${renewals.length} time(s); events sent with the renewed token`);

  // The key revokes its tokens: the next request is refused and the player says so.
  assert.equal((await api('DELETE', '/v1/tokens')).status, 200);
  await page.keyboard.press('ArrowDown');
  await page.waitForFunction(() => document.body.dataset.session === 'ended', null, { timeout: 10_000 });
  const heading = page.getByRole('heading', { name: 'Your session has ended' });
  assert.ok(await heading.isVisible(), 'no visible "Your session has ended"');
  const text = await page.locator('#feed-status').innerText();
  assert.match(text, /revoked/, `the message does not say why: ${text}`);
  await screenshot(page, 'player-token-ended.png');
});
