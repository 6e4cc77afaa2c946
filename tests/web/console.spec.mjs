// The operator console (/console) in a real browser: its three sections, live figures,
// the moderation queue with a reported video, and "Limit" with a reason (checked through
// the API). Environment: FYP_BASE_URL, FYP_KEY, FYP_SCREENSHOTS, FYP_REPORTED_VIDEO.
import assert from 'node:assert/strict';
import { BASE_URL, KEY, api, env, log, run, screenshot, sleep } from './harness.mjs';

const REPORTED = env('FYP_REPORTED_VIDEO');
const REASON = 'web test: limited pending review of the reports';

async function queueItem(videoId) {
  const resp = await api('GET', '/v1/moderation/queue?limit=1000');
  assert.equal(resp.status, 200, `GET /v1/moderation/queue: ${resp.status} ${resp.text}`);
  return resp.json.items.find((i) => i.video_id === videoId);
}

/** The <dl id=...> tiles as {label: value}. */
async function tileValues(page, id) {
  return page.evaluate((dl) => {
    const out = {};
    for (const tile of document.querySelectorAll(`#${dl} .tile`)) {
      out[tile.querySelector('dt').textContent.trim()] = tile.querySelector('dd').textContent.trim();
    }
    return out;
  }, id);
}

run('console', async (page) => {
  const before = await queueItem(REPORTED);
  assert.ok(before, `${REPORTED} is not in the moderation queue before the test`);
  assert.notEqual(before.state, 'limited', `${REPORTED} is already limited`);
  // Some traffic for the live figures.
  assert.ok([200, 201].includes((await api('PUT', '/v1/users/console-traffic', {})).status));
  for (let i = 0; i < 3; i++) {
    const feed = await api('GET', '/v1/feed?user_id=console-traffic&count=5');
    assert.equal(feed.status, 200, `GET /v1/feed: ${feed.text}`);
  }

  await page.goto(`${BASE_URL}/console#key=${encodeURIComponent(KEY)}`);
  await page
    .waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 20_000 })
    .catch(async () => {
      const text = await page.evaluate(() => document.body.innerText.slice(0, 400));
      throw new Error(`the console never set body[data-ready="true"] (in 20 s); it shows: ${text}`);
    });
  log('ready');
  assert.ok(await page.evaluate(() => document.documentElement.lang.trim()), 'html[lang] is not set');
  assert.equal(await page.locator('main#console').count(), 1, 'no <main id="console">');
  for (const name of ['Live', 'Audit', 'Moderation queue']) {
    const n = await page.getByRole('heading', { name, exact: true }).filter({ visible: true }).count();
    assert.equal(n, 1, `expected one visible heading "${name}", found ${n}`);
  }

  // The live figures: numbers, not placeholders, and no error.
  const liveStatus = await page.evaluate(() => {
    const st = document.getElementById('live-status');
    return { text: st.textContent.trim(), error: st.classList.contains('error') };
  });
  assert.ok(!liveStatus.error && !liveStatus.text, `the Live section shows an error: ${JSON.stringify(liveStatus)}`);
  const live = await tileValues(page, 'tiles');
  log('live:', JSON.stringify(live));
  for (const name of ['Videos', 'Users', 'Events, total']) {
    assert.match(live[name] ?? '', /^\d/, `the Live tile "${name}" shows no figure: ${JSON.stringify(live)}`);
  }
  assert.ok(!/NaN|undefined|null|\[object/.test(Object.values(live).join(' ')), `the Live tiles show junk: ${JSON.stringify(live)}`);

  // The audit section shows its report (figures), not an error: wait for it to load.
  await page
    .waitForFunction(
      () =>
        document.querySelectorAll('#audit-tiles dd').length > 0 ||
        document.getElementById('audit-status').classList.contains('error'),
      null,
      { timeout: 20_000 },
    )
    .catch(() => {
      throw new Error('the audit report neither loaded nor failed in 20 s');
    });
  const auditStatus = await page.evaluate(() => {
    const st = document.getElementById('audit-status');
    return { text: st.textContent.trim(), error: st.classList.contains('error') };
  });
  assert.ok(!auditStatus.error && !auditStatus.text, `the Audit section shows an error: ${JSON.stringify(auditStatus)}`);
  const audit = await tileValues(page, 'audit-tiles');
  log('audit:', JSON.stringify(audit));
  for (const name of ['Impressions', 'Users', 'Videos']) {
    assert.match(audit[name] ?? '', /^\d/, `the Audit tile "${name}" shows no figure: ${JSON.stringify(audit)}`);
  }
  assert.ok(!/NaN|undefined|null|\[object/.test(Object.values(audit).join(' ')), `the Audit tiles show junk: ${JSON.stringify(audit)}`);

  // Buttons all named.
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll('button')]
      .filter((b) => !((b.getAttribute('aria-label') || '').trim() || b.textContent.trim() || b.title))
      .map((b) => b.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unnamed, [], 'console buttons without an accessible name');

  // The queue: the reported video's row, with its actions.
  const row = page.locator(`tr[data-video-id="${REPORTED}"]`);
  await row.waitFor({ state: 'visible', timeout: 10_000 }).catch(async () => {
    const rows = await page.locator('tr[data-video-id]').evaluateAll((rs) => rs.map((r) => r.dataset.videoId));
    throw new Error(`no queue row tr[data-video-id="${REPORTED}"]; rows: ${JSON.stringify(rows)}`);
  });
  for (const name of ['Approve', 'Limit', 'Remove']) {
    assert.equal(
      await row.getByRole('button', { name, exact: true }).count(),
      1,
      `the queue row of ${REPORTED} has no "${name}" button`,
    );
  }
  await screenshot(page, 'console.png', { fullPage: true });

  // Limit, with a reason: the row's Reason field.
  const reason = row.getByLabel('Reason', { exact: true });
  assert.equal(await reason.count(), 1, `the queue row of ${REPORTED} has no field labelled "Reason"`);
  await reason.fill(REASON);
  await row.getByRole('button', { name: 'Limit', exact: true }).click();

  const deadline = Date.now() + 10_000;
  let after = await queueItem(REPORTED);
  while (after?.state !== 'limited' && Date.now() < deadline) {
    await sleep(200);
    after = await queueItem(REPORTED);
  }
  assert.equal(after?.state, 'limited', `${REPORTED} after "Limit": ${JSON.stringify(after)}`);
  assert.equal(after.last_reason, REASON, 'the reason given is not the one the moderation kept');
  // The row says so (or has left the queue's view).
  await page
    .waitForFunction(
      (v) => {
        const r = document.querySelector(`tr[data-video-id="${v}"]`);
        return !r || /limited/i.test(r.innerText);
      },
      REPORTED,
      { timeout: 10_000 },
    )
    .catch(() => {
      throw new Error(`the queue row of ${REPORTED} does not show it limited`);
    });
  // The moderation is in the audit log.
  const records = await api('GET', '/v1/audit?limit=10000');
  assert.ok(
    records.json.records.some(
      (r) => r.action === 'moderation' && r.details?.video_id === REPORTED && r.details?.state === 'limited',
    ),
    `no "moderation" audit record of ${REPORTED} limited`,
  );
  await screenshot(page, 'console-after.png', { fullPage: true });

  // Narrow (a phone): the console still fits its width (reflow), within 1 px of rounding.
  await page.setViewportSize({ width: 400, height: 800 });
  await sleep(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
  log(`at 400 px wide the console is ${overflow > 0 ? `${overflow} px too wide` : 'within the width'}`);
  assert.ok(overflow <= 1, `at 400 px wide the console is ${overflow} px wider than the screen`);
}, { width: 1280, height: 900 });
