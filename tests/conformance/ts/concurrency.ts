/**
 * Conformance: the seed's "max 5 runs per user", and the documented default strategy.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx concurrency.ts
 *
 * - `conf-ts-per-user` (concurrency `input.userId`, maxRuns 5, GROUP_ROUND_ROBIN): task
 *   `process` sleeps 1.2 s, counting its user's runs in it at once. Alice triggers 10
 *   runs, bob 5, on a worker with 20 slots: alice has at most (and exactly) 5 at once,
 *   all of bob's run at once, all 15 complete.
 * - `conf-ts-latest` (concurrency `input.doc`, maxRuns 1, no limitStrategy: the SDK
 *   documents CANCEL_IN_PROGRESS as the default): two runs 0.3 s apart, each sleeping
 *   2 s; the first ends cancelled, the second completes.
 * Prints one `ADZE-RESULT <json>` line.
 */
import { ConcurrencyLimitStrategy } from '@hatchet-dev/typescript-sdk';

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

type UserInput = { userId: string };
type DocInput = { doc: string; n: number };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const inFlight = new Map<string, number>();
const most = new Map<string, number>();
const finishedDocs: number[] = [];

async function main(): Promise<void> {
  const checks = new Checks('ts/concurrency.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const perUser = hatchet.workflow<UserInput, { process: { user: string } }>({
    name: 'conf-ts-per-user',
    concurrency: {
      expression: 'input.userId',
      maxRuns: 5,
      limitStrategy: ConcurrencyLimitStrategy.GROUP_ROUND_ROBIN,
    },
  });
  perUser.task({
    name: 'process',
    fn: async (input) => {
      const now = (inFlight.get(input.userId) ?? 0) + 1;
      inFlight.set(input.userId, now);
      most.set(input.userId, Math.max(most.get(input.userId) ?? 0, now));
      try {
        await sleep(1200);
      } finally {
        inFlight.set(input.userId, (inFlight.get(input.userId) ?? 1) - 1);
      }
      return { user: input.userId };
    },
  });

  const latest = hatchet.workflow<DocInput, { render: { n: number } }>({
    name: 'conf-ts-latest',
    concurrency: { expression: 'input.doc', maxRuns: 1 },
  });
  latest.task({
    name: 'render',
    fn: async (input, ctx) => {
      await sleep(2000);
      if (!ctx.abortController.signal.aborted) {
        finishedDocs.push(input.n);
      }
      return { n: input.n };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-concurrency-worker', [perUser, latest], 20);
    checks.check('worker registered', true);

    log('alice triggers 10 runs of conf-ts-per-user, bob 5');
    const alice = await perUser.runNoWait(Array.from({ length: 10 }, () => ({ userId: 'alice' })));
    const bob = await perUser.runNoWait(Array.from({ length: 5 }, () => ({ userId: 'bob' })));
    const results = await Promise.all([...alice, ...bob].map((ref) => ref.output));
    checks.observe('mostAtOnce', Object.fromEntries(most));
    checks.expectEqual('all 15 runs completed', results.length, 15);
    checks.check('alice never had more than 5 at once', (most.get('alice') ?? 0) <= 5);
    checks.expectEqual('alice ran 5 at a time', most.get('alice'), 5);
    checks.expectEqual("all of bob's runs ran at once", most.get('bob'), 5);

    log('two renders of one doc, 0.3 s apart (default strategy)');
    const first = await latest.runNoWait({ doc: 'd1', n: 1 });
    await sleep(300);
    const second = await latest.runNoWait({ doc: 'd1', n: 2 });
    const outcomes: string[] = [];
    for (const ref of [first, second]) {
      try {
        await ref.output;
        outcomes.push('completed');
      } catch (e) {
        const text = errorMessages(e).join(' ').toLowerCase();
        outcomes.push(text.includes('cancel') ? 'cancelled' : `error: ${text.slice(0, 200)}`);
      }
    }
    checks.observe('latestOutcomes', outcomes);
    checks.expectEqual('the newer render replaced the older', outcomes, ['cancelled', 'completed']);
    await sleep(500);
    checks.expectEqual('only the newer render ran to its end', finishedDocs, [2]);
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
