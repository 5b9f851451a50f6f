/**
 * Conformance: execution timeouts and cancellation, with the handler's in-flight
 * `fetch` aborted through `ctx.abortController.signal`.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx timeouts.ts
 *
 * A local HTTP server in this process accepts requests and never answers them, so a
 * task's `fetch` to it stays in flight until something aborts it.
 * - `conf-ts-timeout`: task `hang` (executionTimeout '1s', retries: 1) fetches the
 *   silent server. At each deadline the engine sends CANCEL_STEP_RUN, the SDK aborts
 *   the signal, the fetch rejects and the server sees the connection close; the run
 *   fails with a timeout error after two attempts.
 * - `conf-ts-cancel`: the same task without a short timeout, cancelled from outside with
 *   `hatchet.runs.cancel({ids})`, and `conf-ts-self-cancel`, whose task calls
 *   `ctx.cancel()`: both runs end cancelled and their fetches are aborted.
 * - `conf-ts-refresh`: task `extend` (executionTimeout '1s') calls
 *   `ctx.refreshTimeout('2s')` after 0.5 s and finishes at 1.7 s: the run succeeds.
 * Prints one `ADZE-RESULT <json>` line.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

import {
  Checks,
  connect,
  describeError,
  errorMessages,
  log,
  type RunningWorker,
  startDeadline,
  startWorker,
  stopAndCheck,
  watchPause,
} from './_harness';

type NoInput = Record<string, never>;

/** What each run's task did: 'started', 'aborted', 'answered'. */
const notes = new Map<string, string[]>();
function note(runId: string, what: string): void {
  const seen = notes.get(runId) ?? [];
  seen.push(what);
  notes.set(runId, seen);
}
const count = (runId: string, what: string) =>
  (notes.get(runId) ?? []).filter((n) => n === what).length;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(predicate: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (predicate()) return true;
    await sleep(50);
  }
  return predicate();
}

async function main(): Promise<void> {
  const checks = new Checks('ts/timeouts.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  // Requests that are never answered; their connections closing is counted.
  let closedByClient = 0;
  const silent = http.createServer((req) => {
    req.socket.on('close', () => {
      closedByClient += 1;
    });
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/hang`;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const hang = async (ctx: any): Promise<{ answered: boolean }> => {
    const runId = ctx.workflowRunId();
    note(runId, 'started');
    try {
      await fetch(url, { signal: ctx.abortController.signal });
    } catch (e) {
      note(runId, 'aborted');
      throw e;
    }
    note(runId, 'answered');
    return { answered: true };
  };

  const timeoutWf = hatchet.workflow<NoInput>({ name: 'conf-ts-timeout' });
  timeoutWf.task({ name: 'hang', retries: 1, executionTimeout: '1s', fn: (_i, ctx) => hang(ctx) });
  const cancelWf = hatchet.workflow<NoInput>({ name: 'conf-ts-cancel' });
  cancelWf.task({ name: 'hang', executionTimeout: '60s', fn: (_i, ctx) => hang(ctx) });
  const selfCancelWf = hatchet.workflow<NoInput>({ name: 'conf-ts-self-cancel' });
  selfCancelWf.task({
    name: 'quit',
    executionTimeout: '60s',
    fn: async (_i, ctx) => {
      const pending = hang(ctx);
      await ctx.cancel();
      return pending;
    },
  });

  const refreshWf = hatchet.workflow<NoInput>({ name: 'conf-ts-refresh' });
  refreshWf.task({
    name: 'extend',
    executionTimeout: '1s',
    fn: async (_i, ctx) => {
      await sleep(500);
      await ctx.refreshTimeout('2s');
      await sleep(1200);
      return { aborted: ctx.abortController.signal.aborted };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-timeouts-worker', [
      timeoutWf,
      cancelWf,
      selfCancelWf,
      refreshWf,
    ]);
    checks.check('worker registered', true);

    log('running conf-ts-timeout (its fetch outlives a 1 s timeout, twice)');
    const timed = await timeoutWf.runNoWait({});
    const timedId = await timed.getWorkflowRunId();
    let rejection: unknown;
    try {
      await timed.output;
    } catch (e) {
      rejection = e;
    }
    const messages = rejection === undefined ? [] : errorMessages(rejection);
    checks.observe('timeoutErrors', messages.map((m) => m.slice(0, 300)));
    checks.check(
      'the timed-out run fails with a timeout error',
      messages.some((m) => m.includes('timed out')),
      `errors seen: ${JSON.stringify(messages)}`
    );
    await waitUntil(() => count(timedId, 'aborted') === 2, 5_000);
    checks.observe('timeoutNotes', notes.get(timedId));
    checks.expectEqual('the task was attempted twice (one retry)', count(timedId, 'started'), 2);
    checks.expectEqual('both in-flight fetches were aborted', count(timedId, 'aborted'), 2);
    checks.check(
      'the silent server saw both connections closed',
      await waitUntil(() => closedByClient >= 2, 5_000),
      `closed: ${closedByClient}`
    );

    log('running conf-ts-cancel and cancelling it with hatchet.runs.cancel');
    const cancelled = await cancelWf.runNoWait({});
    const cancelledId = await cancelled.getWorkflowRunId();
    checks.check('the task started', await waitUntil(() => count(cancelledId, 'started') === 1, 20_000));
    await hatchet.runs.cancel({ ids: [cancelledId] });
    checks.check(
      'the cancelled task\'s fetch was aborted',
      await waitUntil(() => count(cancelledId, 'aborted') === 1, 10_000),
      JSON.stringify(notes.get(cancelledId))
    );
    let cancelRejection: unknown;
    try {
      await cancelled.output;
    } catch (e) {
      cancelRejection = e;
    }
    checks.check(
      'the cancelled run does not succeed',
      cancelRejection !== undefined,
      'its output resolved'
    );

    log('running conf-ts-self-cancel (ctx.cancel())');
    const quitter = await selfCancelWf.runNoWait({});
    const quitterId = await quitter.getWorkflowRunId();
    checks.check(
      'a task that cancels itself has its fetch aborted',
      await waitUntil(() => count(quitterId, 'aborted') === 1, 15_000),
      JSON.stringify(notes.get(quitterId))
    );
    checks.expectEqual(
      'no fetch was ever answered',
      [timedId, cancelledId, quitterId].map((id) => count(id, 'answered')),
      [0, 0, 0]
    );
    checks.check(
      'the silent server saw every connection closed by its client',
      await waitUntil(() => closedByClient >= 4, 5_000),
      `closed: ${closedByClient}`
    );

    log('running conf-ts-refresh (refreshes its 1 s timeout, finishes at 1.7 s)');
    const refreshed = await refreshWf.runNoWait({});
    let refreshResult: unknown;
    try {
      refreshResult = await refreshed.output;
    } catch (e) {
      refreshResult = { rejected: errorMessages(e) };
    }
    checks.expectEqual(
      'a task that refreshed its timeout outlives its first deadline',
      refreshResult,
      { extend: { aborted: false } }
    );
  } catch (e) {
    log(e instanceof Error ? (e.stack ?? e.message) : describeError(e));
    checks.check('no unexpected error', false, describeError(e));
  } finally {
    log('stopping the worker');
    await stopAndCheck(checks, running, pause);
    silent.closeAllConnections();
    silent.close();
  }
  checks.finish();
}

void main();
