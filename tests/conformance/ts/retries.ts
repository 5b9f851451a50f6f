/**
 * Conformance: a retried task, and a NonRetryableError that is never retried.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx retries.ts
 *
 * - `conf-ts-retries`: task `flaky` (retries: 2) fails its first attempt and succeeds on
 *   the second; the run succeeds and the task saw retryCount 0, then 1.
 * - `conf-ts-non-retryable`: task `permanent` (retries: 2) throws NonRetryableError; the
 *   run fails after exactly one attempt and `run()` rejects with the error's message.
 * Calls are counted in this process, per workflow run. Prints one `ADZE-RESULT <json>` line.
 */
import { NonRetryableError } from '@hatchet-dev/typescript-sdk';

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

const RETRIES_WORKFLOW = 'conf-ts-retries';
const NON_RETRYABLE_WORKFLOW = 'conf-ts-non-retryable';
const PERMANENT_MESSAGE = 'conformance: permanent failure, do not retry';

/** Every call of a task, per workflow run: the retryCount it saw. */
const calls = new Map<string, number[]>();

function recordCall(runId: string, retryCount: number): number[] {
  const seen = calls.get(runId) ?? [];
  seen.push(retryCount);
  calls.set(runId, seen);
  return seen;
}

type NoInput = Record<string, never>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  const checks = new Checks('ts/retries.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const retriesWf = hatchet.workflow<NoInput, { flaky: { retryCount: number; calls: number } }>({
    name: RETRIES_WORKFLOW,
  });
  retriesWf.task({
    name: 'flaky',
    retries: 2,
    fn: (_input, ctx) => {
      const seen = recordCall(ctx.workflowRunId(), ctx.retryCount());
      if (ctx.retryCount() === 0) {
        throw new Error('conformance: planned failure on the first attempt');
      }
      return { retryCount: ctx.retryCount(), calls: seen.length };
    },
  });

  const nonRetryableWf = hatchet.workflow<NoInput, { permanent: { unreachable: boolean } }>({
    name: NON_RETRYABLE_WORKFLOW,
  });
  nonRetryableWf.task({
    name: 'permanent',
    retries: 2,
    fn: (_input, ctx) => {
      recordCall(ctx.workflowRunId(), ctx.retryCount());
      throw new NonRetryableError(PERMANENT_MESSAGE);
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-retries-worker', [retriesWf, nonRetryableWf]);
    checks.observe('workerId', running.worker._internal.workerId);
    checks.check('worker registered', true);

    log('running conf-ts-retries (fails once, then succeeds)');
    const retried = await retriesWf.runNoWait({});
    const retriedId = await retried.getWorkflowRunId();
    const result = await retried.output;
    checks.observe('retriesResult', result);
    checks.observe('retriesRetryCountsSeen', calls.get(retriedId));
    checks.expectEqual('retried run succeeds on the 2nd attempt', result.flaky, {
      retryCount: 1,
      calls: 2,
    });
    checks.expectEqual('the engine sent retryCount 0, then 1', calls.get(retriedId), [0, 1]);

    log('running conf-ts-non-retryable');
    const failing = await nonRetryableWf.runNoWait({});
    const failingId = await failing.getWorkflowRunId();
    let rejection: unknown;
    let resolved: unknown;
    try {
      resolved = await failing.output;
    } catch (e) {
      rejection = e;
    }
    if (rejection === undefined) {
      checks.check('the non-retryable run fails', false, `it resolved: ${JSON.stringify(resolved)}`);
    } else {
      const messages = errorMessages(rejection);
      checks.observe('nonRetryableErrors', messages.map((m) => m.slice(0, 300)));
      checks.check('the non-retryable run fails', true);
      checks.check(
        'run() rejects with the NonRetryableError message',
        messages.some((m) => m.includes(PERMANENT_MESSAGE)),
        `errors seen: ${JSON.stringify(messages)}`
      );
    }
    // A wrongly scheduled retry would come later; give it that long before counting.
    await sleep(1500);
    checks.observe('nonRetryableCalls', calls.get(failingId));
    checks.expectEqual(
      'a NonRetryableError is attempted exactly once',
      calls.get(failingId)?.length ?? 0,
      1
    );
  } catch (e) {
    log(e instanceof Error ? (e.stack ?? e.message) : describeError(e));
    checks.check('no unexpected error', false, describeError(e));
  } finally {
    log('stopping the worker');
    await stopAndCheck(checks, running, pause);
  }
  checks.finish();
}

void main();
