// Drives the dashboard in headless Chromium against a running fleet, as a person would:
// signs in, filters the runs list (status, workflow, metadata, creation time), cancels
// and replays a selection of runs and cancels every run matching the filters, reads a
// DAG run's page, watches a run complete without reloading, replays a failed run and
// reads its task's input, output and logs, cancels a queued run, visits every page
// (pausing the worker, reading the concurrency key and rate limit, the crons and
// scheduled runs and deleting one, making and revoking an API token on the settings
// page), signs out, and signs in as another tenant. Each action is checked in the page
// and in the engine over REST. Each step writes a screenshot to $ADZE_SHOTS. Any failed
// expectation exits 1 with what was expected and what the page showed.
// tests/tests/dashboard_browser.rs prepares the runs and checks the outcome in Postgres.
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL = env('ADZE_URL');
const SHOTS = env('ADZE_SHOTS');
const [TOKEN_A, TOKEN_B] = [env('TOKEN_A'), env('TOKEN_B')];
const [DAG_RUN, QUEUED_RUN, SLOW_WORKFLOW, TENANT_A] = [env('DAG_RUN'), env('QUEUED_RUN'), env('SLOW_WORKFLOW'), env('TENANT_A')];
const DURABLE_RUN = env('DURABLE_RUN');
const [SELECTED, WIDE] = [env('SELECTED_RUNS').split(','), env('WIDE_RUNS').split(',')];
const FAILED_RUN = env('FAILED_RUN');
const [SCHEDULED_LATER, SCHEDULED_FIRED] = [env('SCHEDULED_LATER'), env('SCHEDULED_FIRED')];

function expect(cond, what) {
  if (!cond) throw new Error('expected ' + what);
  console.log('ok ' + what);
}

const browser = await chromium.launch({
  executablePath: env('ADZE_CHROMIUM'),
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
const elsewhere = [];
const origin = new globalThis.URL(URL).origin;
page.on('request', (r) => {
  if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) elsewhere.push(r.url());
});
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
// Changes the page asked for and the server refused (shown when the script fails).
const refusedChanges = [];
page.on('response', (r) => {
  if (r.status() >= 400 && r.request().method() !== 'GET') refusedChanges.push(`${r.status()} ${r.request().method()} ${r.url()}`);
});
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
const count = (sel) => page.locator(sel).count();

// What the engine says over REST (tenant A's token, not the page's session).
const rest = (path) => page.evaluate(async ([p, t]) => {
  const r = await fetch(p, { headers: { authorization: 'Bearer ' + t }, credentials: 'omit' });
  return { status: r.status, body: await r.json().catch(() => null) };
}, [path, TOKEN_A]);
const engineStatuses = (runs) => Promise.all(runs.map(async (id) => (await rest(`/api/v1/stable/workflow-runs/${id}/status`)).body));
// The runs the list shows; waiting until it shows exactly `want` (`id STATUS` each).
const listed = () => page.$$eval('[data-run-id]', (rows) => rows.map((r) => r.dataset.runId));
async function listShows(want, what) {
  await page.waitForFunction((w) => {
    const rows = [...document.querySelectorAll('[data-run-id]')].map((r) => `${r.dataset.runId} ${r.dataset.status}`);
    return rows.length === w.length && w.every((x) => rows.includes(x));
  }, want, { timeout: 20000 }).catch(async () => {
    throw new Error(`${what}: the list shows ${JSON.stringify(await page.$$eval('[data-run-id]', (rows) => rows.map((r) => `${r.dataset.runId} ${r.dataset.status}`)))}, not ${JSON.stringify(want)}`);
  });
}
const rowsOf = (ids, status) => ids.map((id) => `${id} ${status}`);
// A datetime-local value `minutes` from now, in the browser's time zone.
const localIn = (minutes) => page.evaluate((m) => {
  const d = new Date(Date.now() + m * 60000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}, minutes);
// Clicks `button` and confirms, after checking the confirmation says `says`.
async function confirmWith(button, says) {
  await page.click(button);
  await page.waitForSelector('dialog#confirm[open]');
  const text = await page.textContent('#confirm-text');
  if (!says.test(text)) throw new Error(`the confirmation of ${button} says ${JSON.stringify(text)}, not ${says}`);
  await page.click('#confirm-ok');
}

async function signIn(token) {
  await page.goto(URL + '/');
  await page.waitForSelector('[data-testid=token]');
  await page.fill('[data-testid=token]', token);
  await page.click('[data-testid=sign-in]');
}

try {
  // Signing in: a wrong token is refused, saying so; the right one opens the runs list.
  await signIn('not-a-token');
  await page.waitForFunction(() => document.querySelector('[data-testid=login-error]')?.textContent.length > 0);
  expect(/credential|token/i.test(await page.textContent('[data-testid=login-error]')), 'a wrong token is refused with a reason');
  await shot('01-login-refused');
  await signIn(TOKEN_A);
  await page.waitForSelector('[data-testid=runs-table]');
  await page.waitForSelector(`[data-run-id="${DAG_RUN}"]`);
  expect(true, 'the runs list shows the DAG run');
  await page.waitForSelector('[data-count=COMPLETED] b');
  const completed = Number(await page.textContent('[data-count=COMPLETED] b'));
  expect(completed >= 1, `the COMPLETED count is at least 1 (${completed})`);
  await shot('02-runs');
  // A status count filters the list.
  await page.click('[data-count=QUEUED]');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('[data-run-id]')];
    return rows.length > 0 && rows.every((r) => r.dataset.status === 'QUEUED');
  });
  expect((await count(`[data-run-id="${QUEUED_RUN}"]`)) === 1 && (await count(`[data-run-id="${DAG_RUN}"]`)) === 0, 'the QUEUED count filters the list to the queued run');

  // The list's other filters, from its controls: a workflow, a metadata pair, and the
  // creation time (between two times, and a range).
  await page.goto(`${URL}/#/runs`);
  await page.waitForSelector(`[data-run-id="${DAG_RUN}"]`);
  await page.selectOption('[data-testid=workflow-filter]', { label: 'orphan' });
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('[data-run-id]')];
    return rows.length > 0 && rows.every((r) => r.dataset.workflow === 'orphan');
  });
  const orphans = await listed();
  expect([QUEUED_RUN, ...SELECTED, ...WIDE].every((id) => orphans.includes(id)) && !orphans.includes(DAG_RUN),
    `the workflow filter lists the orphan runs only (${orphans.length})`);
  await page.fill('[data-testid=meta-filter]', 'batch:sel');
  await page.press('[data-testid=meta-filter]', 'Enter');
  await listShows(rowsOf(SELECTED, 'QUEUED'), 'the metadata filter');
  expect(true, 'the metadata filter lists the three runs of batch sel');
  await page.selectOption('[data-testid=range-filter]', 'custom');
  await page.waitForSelector('[data-testid=from-filter]');
  await page.fill('[data-testid=from-filter]', await localIn(2));
  await page.waitForSelector('[data-testid=runs-table] .empty');
  expect((await count('[data-run-id]')) === 0, 'created from two minutes ahead: no run');
  await page.fill('[data-testid=from-filter]', await localIn(-30));
  await listShows(rowsOf(SELECTED, 'QUEUED'), 'created from 30 minutes ago');
  await page.fill('[data-testid=to-filter]', await localIn(-20));
  await page.waitForSelector('[data-testid=runs-table] .empty');
  expect((await count('[data-run-id]')) === 0, 'created between 30 and 20 minutes ago: no run');
  await page.selectOption('[data-testid=range-filter]', '1h');
  await listShows(rowsOf(SELECTED, 'QUEUED'), 'created in the last hour');
  expect(true, 'the time filters bound the list (between two times, and the last hour)');
  await shot('02b-filtered');

  // A selection: two of the three runs cancelled, then replayed; the third untouched.
  const [one, two, three] = SELECTED;
  const select = async (ids) => { for (const id of ids) await page.check(`[data-run-id="${id}"] input[type=checkbox]`); };
  await select([one, two]);
  await confirmWith('[data-testid=cancel-selected]', /Cancel 2 selected/);
  await listShows([...rowsOf([one, two], 'CANCELLED'), `${three} QUEUED`], 'after cancelling the selection');
  expect(JSON.stringify(await engineStatuses(SELECTED)) === JSON.stringify(['CANCELLED', 'CANCELLED', 'QUEUED']),
    'the engine has the two selected runs cancelled, the third queued');
  await shot('02c-selection');
  await select([one, two]);
  await confirmWith('[data-testid=replay-selected]', /Replay 2 selected/);
  await listShows(rowsOf(SELECTED, 'QUEUED'), 'after replaying the selection');
  const replayed = await Promise.all([one, two].map((id) => rest(`/api/v1/stable/workflow-runs/${id}`)));
  expect(replayed.every((r) => r.body.run.status === 'QUEUED' && r.body.tasks[0].retryCount === 1),
    'the engine has the selection queued again, as a new attempt');

  // Every run matching the filters (workflow orphan, batch wide, the last hour).
  await page.fill('[data-testid=meta-filter]', 'batch:wide');
  await page.press('[data-testid=meta-filter]', 'Enter');
  await listShows(rowsOf(WIDE, 'QUEUED'), 'the wide batch');
  await confirmWith('[data-testid=cancel-matching]', /every run matching/);
  await listShows(rowsOf(WIDE, 'CANCELLED'), 'after cancelling every matching run');
  expect(JSON.stringify(await engineStatuses([...WIDE, ...SELECTED])) === JSON.stringify(['CANCELLED', 'CANCELLED', 'QUEUED', 'QUEUED', 'QUEUED']),
    'the engine has the matching runs cancelled and no other');
  await shot('02d-filter-cancelled');
  await page.goto(`${URL}/#/runs`);
  await page.waitForSelector(`[data-run-id="${DAG_RUN}"]`);

  // The DAG run's page: two nodes, one edge, the retried task's two attempts.
  await page.click(`[data-run-id="${DAG_RUN}"] a`);
  await page.waitForSelector('[data-testid=dag] [data-node]');
  expect((await count('[data-testid=dag] [data-node]')) === 2, 'the graph draws 2 tasks');
  expect((await count('[data-testid=dag] [data-edge]')) === 1, 'the graph draws 1 edge');
  expect((await count('[data-edge="first->second"]')) === 1, 'the edge runs from first to second');
  expect((await page.getAttribute('[data-node=second]', 'data-status')) === 'COMPLETED', 'second is drawn completed');
  const attempts = page.locator('[data-task=second] [data-testid=attempts] tbody tr');
  expect((await attempts.count()) === 2, 'second shows 2 attempts');
  expect((await attempts.nth(0).getAttribute('data-status')) === 'FAILED', 'its first attempt failed');
  expect((await attempts.nth(1).getAttribute('data-status')) === 'COMPLETED', 'its second attempt completed');
  expect(/the first try fails/.test(await attempts.nth(0).textContent()), 'the first attempt shows its error');
  expect((await count('[data-attempt-bar]')) === 3, 'the timeline has a bar per attempt (3)');
  expect(/^[0-9a-f]{32}$/.test((await page.textContent('[data-testid=trace-id]')).trim()), 'the trace id is shown');
  await page.click('[data-task=second] > summary');
  await shot('03-dag-run');

  // Live: a run triggered now appears in the list, then turns from running to
  // completed on its page, without a reload.
  await page.goto(`${URL}/#/runs`);
  await page.waitForSelector('#live[data-live="1"]', { timeout: 10000 });
  await page.evaluate(() => { window.__listDocument = true; });
  const slow = await page.evaluate(async ([tenant, workflow]) => {
    const r = await fetch(`/api/v1/stable/tenants/${tenant}/workflow-runs/trigger`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-adze-dashboard': '1' },
      body: JSON.stringify({ workflowName: workflow, input: {} }),
    });
    return (await r.json()).run.metadata.id;
  }, [TENANT_A, SLOW_WORKFLOW]);
  await page.waitForSelector(`[data-run-id="${slow}"]`, { timeout: 10000 });
  expect(await page.evaluate(() => window.__listDocument === true), 'the new run appeared in the list without a reload');
  await page.goto(`${URL}/#/runs/${slow}`);
  await page.waitForSelector('[data-node=nap][data-status=RUNNING]', { timeout: 15000 });
  expect(true, 'the slow run is drawn running');
  await page.waitForSelector('#live[data-live="1"]', { timeout: 10000 });
  await page.evaluate(() => { window.__sameDocument = true; });
  await shot('04-live-running');
  await page.waitForSelector('[data-node=nap][data-status=COMPLETED]', { timeout: 30000 });
  expect(await page.evaluate(() => window.__sameDocument === true), 'it turned completed without a reload');
  await shot('05-live-completed');

  // A durable orchestrator: its event log (the memo, the children it spawned) and its
  // three child runs, each a link to its own page.
  await page.goto(`${URL}/#/runs/${DURABLE_RUN}`);
  await page.waitForSelector('[data-node=orchestrate][data-status=COMPLETED]');
  await page.click('[data-task=orchestrate] > summary');
  await page.waitForSelector('[data-testid=durable-log] table tbody tr');
  const kinds = await page.locator('[data-testid=durable-log] tbody tr td:nth-child(2)').allTextContents();
  expect(kinds.includes('MEMO') && kinds.includes('RUN'), `the durable event log shows the memo and the spawn (${kinds.join(', ')})`);
  await page.waitForSelector('[data-child-run]');
  expect((await count('[data-child-run]')) === 3, 'the orchestrator lists its 3 child runs');
  await shot('06-durable');
  await page.click('[data-child-run] a');
  await page.waitForSelector('[data-node=count][data-status=COMPLETED]');
  expect(/Spawned by task/.test(await page.textContent('main')), 'a child run page says which task spawned it');

  // A failed run replayed from its page: it completes on a second attempt, and its
  // task shows its input, its output and the log lines of both attempts.
  await page.goto(`${URL}/#/runs/${FAILED_RUN}`);
  await page.waitForSelector('[data-testid=run-title] [data-status=FAILED]');
  expect(await page.isDisabled('[data-testid=cancel-run]'), 'a failed run cannot be cancelled');
  await confirmWith('[data-testid=replay-run]', /Replay run/);
  await page.waitForSelector('[data-testid=run-title] [data-status=COMPLETED]', { timeout: 30000 });
  expect(true, 'the replayed run is shown completed');
  const engineRun = (await rest(`/api/v1/stable/workflow-runs/${FAILED_RUN}`)).body;
  expect(engineRun.run.status === 'COMPLETED' && engineRun.attempts.map((a) => a.status).join() === 'FAILED,COMPLETED',
    `the engine has the run completed on its second attempt (${engineRun.attempts.map((a) => a.status)})`);
  // The log lines are stored apart from the run: wait until the engine has both, then
  // open the task (which reads them).
  const logsPath = `/api/v1/stable/tasks/${engineRun.tasks[0].taskExternalId}/logs`;
  for (let i = 0; i < 50 && ((await rest(logsPath)).body.rows || []).length < 2; i += 1) await new Promise((r) => setTimeout(r, 200));
  await page.click('[data-task=add] > summary');
  const tries = page.locator('[data-task=add] [data-testid=attempts] tbody tr');
  expect((await tries.count()) === 2 && /the first call fails/.test(await tries.nth(0).textContent()), 'the task shows both attempts, the first with its error');
  expect(/"label": "replay-me"/.test(await page.textContent('[data-task=add] [data-testid=input]')), 'the task shows its input');
  expect(/"sum": 42/.test(await page.textContent('[data-task=add] [data-testid=output]')), 'the task shows its output');
  await page.waitForFunction(() => /call 2/.test(document.querySelector('[data-task=add] [data-testid=logs]')?.textContent || ''), null, { timeout: 10000 });
  const logs = await page.textContent('[data-task=add] [data-testid=logs]');
  expect(/\[1\] adding for "replay-me", call 1/.test(logs) && /\[2\] adding for "replay-me", call 2/.test(logs), `the task shows the log lines of both attempts (${logs.trim()})`);
  await shot('06b-replayed');

  // A queued run says why it waits, and is cancelled from the page after confirming.
  await page.goto(`${URL}/#/runs/${QUEUED_RUN}`);
  await page.waitForSelector('[data-testid=wait-reason]');
  const reason = await page.textContent('[data-testid=wait-reason]');
  expect(/worker/.test(reason), `the queued task says why it waits (${reason})`);
  await shot('07-queued');
  await page.click('[data-testid=cancel-run]');
  await page.waitForSelector('dialog#confirm[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector('[data-testid=run-title] [data-status=CANCELLED]', { timeout: 20000 });
  expect(true, 'the cancelled run is shown cancelled');
  await shot('08-cancelled');

  // The other pages draw.
  await page.goto(`${URL}/#/workers`);
  await page.waitForSelector('[data-testid=workers-table] [data-worker]');
  expect((await count('[data-testid=workers-table] [data-worker]')) >= 1, 'the workers page lists the worker');
  const accepted = (await page.textContent('[data-testid=workers-table] [data-worker] td:nth-child(7)')).trim();
  expect(/ago$/.test(accepted), `the workers page says when the worker last took a task (${accepted})`);
  await shot('09-workers');
  await page.click('[data-testid=pause-worker]');
  await page.waitForSelector('dialog#confirm[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector('[data-testid=workers-table] [data-worker][data-status=PAUSED]', { timeout: 10000 });
  expect(true, 'the worker paused from the page is shown paused');
  await page.goto(`${URL}/#/flow`);
  await page.waitForSelector('[data-testid=rate-limits-table] [data-limit]');
  expect((await page.textContent('[data-limit=parser-api]')).includes('100'), 'the flow-control page shows the rate limit and its units');
  await page.waitForSelector('[data-testid=concurrency-table] [data-key=team-blue]');
  const key = await page.locator('[data-testid=concurrency-table] [data-key=team-blue] td').allTextContents();
  expect(key[1] === 'limited' && key[2] === 'input.group' && key[4] === '1' && key[5] === '1' && key[6] === '1',
    `the flow-control page shows the concurrency key held by one run and waited for by another (${key.join(' | ')})`);
  await shot('10-flow');
  await page.goto(`${URL}/#/timers`);
  await page.waitForSelector('[data-testid=crons-table] [data-cron]');
  expect(/nightly.*pipeline.*0 3 \* \* \*/.test(await page.textContent('[data-testid=crons-table] [data-cron]')), 'the crons page shows the cron');
  expect((await page.locator('[data-testid=crons-table] [data-cron] td').nth(3).textContent()) === 'yes', 'the cron is shown enabled');
  const later = page.locator(`[data-testid=scheduled-table] [data-scheduled="${SCHEDULED_LATER}"]`);
  expect(/leaf.*2099.*not yet/.test(await later.textContent()), `the scheduled run ahead is shown not fired yet (${await later.textContent()})`);
  await page.waitForSelector(`[data-testid=scheduled-table] [data-scheduled="${SCHEDULED_FIRED}"] a`, { timeout: 20000 });
  const fired = await page.getAttribute(`[data-scheduled="${SCHEDULED_FIRED}"] a`, 'href');
  const firedRun = (await rest(`/api/v1/tenants/${TENANT_A}/workflows/scheduled/${SCHEDULED_FIRED}`)).body.workflowRunId;
  expect(fired === `#/runs/${firedRun}`, 'the scheduled run that fired links to the run it started');
  await shot('11-timers');
  await later.locator('button').click();
  await page.waitForSelector('dialog#confirm[open]');
  await page.click('#confirm-ok');
  await later.waitFor({ state: 'detached', timeout: 10000 });
  expect((await rest(`/api/v1/tenants/${TENANT_A}/workflows/scheduled/${SCHEDULED_LATER}`)).status === 404, 'the scheduled run deleted on the page is gone from the engine');
  // Settings: a token made on the page is shown once, works, is listed, and once
  // revoked there is refused.
  await page.goto(`${URL}/#/settings`);
  await page.waitForSelector('[data-testid=tokens-table] [data-token]');
  await page.fill('[data-testid=token-name]', 'made-in-browser');
  await page.selectOption('[data-testid=token-lifetime]', '');
  await page.click('[data-testid=create-token]');
  await page.waitForSelector('[data-testid=new-token-value]');
  const made = await page.inputValue('[data-testid=new-token-value]');
  expect(made.startsWith('ey'), 'a new token is shown once');
  const tokensPath = `/api/v1/tenants/${TENANT_A}/api-tokens`;
  const statusWith = (token) => page.evaluate(async ([path, t]) => (await fetch(path, { headers: { authorization: 'Bearer ' + t }, credentials: 'omit' })).status, [tokensPath, token]);
  expect((await statusWith(made)) === 200, 'the new token works');
  const row = page.locator('[data-testid=tokens-table] tr', { hasText: 'made-in-browser' });
  await row.waitFor();
  await shot('11b-settings');
  await row.locator('[data-testid=revoke-token]').click();
  await page.waitForSelector('dialog#confirm[open]');
  await page.click('#confirm-ok');
  await row.waitFor({ state: 'detached', timeout: 10000 });
  let refused = 0;
  for (let i = 0; i < 20 && refused !== 403; i += 1) {
    refused = await statusWith(made);
    if (refused !== 403) await new Promise((r) => setTimeout(r, 100));
  }
  expect(refused === 403, 'the token revoked on the page is refused');

  // Signing out, and tenant B sees none of tenant A's runs.
  await page.click('#logout');
  await page.waitForSelector('[data-testid=token]');
  expect(true, 'signing out returns to the sign-in page');
  await signIn(TOKEN_B);
  await page.waitForSelector('[data-testid=runs-table] .empty');
  expect((await count('[data-run-id]')) === 0, "tenant B's list shows no run of tenant A");
  await shot('12-tenant-b');
  await page.goto(`${URL}/#/runs/${DAG_RUN}`);
  await page.waitForSelector('[data-testid=run-error]');
  expect(true, "tenant B is told tenant A's run is not found");
  await shot('13-tenant-b-run');

  expect(elsewhere.length === 0, `no request left the server's origin (${elsewhere.join(', ')})`);
  expect(pageErrors.length === 0, `no script error on any page (${pageErrors.join('; ')})`);
} catch (e) {
  await shot('failure').catch(() => {});
  console.error('FAILED: ' + e.message);
  console.error('page: ' + page.url());
  console.error('script errors: ' + pageErrors.join('; '));
  console.error('changes refused: ' + refusedChanges.join('; '));
  await browser.close();
  process.exit(1);
}
await browser.close();
