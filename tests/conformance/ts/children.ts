/**
 * Conformance: child runs (a task running other workflows) with the TypeScript SDK.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx children.ts
 *
 * Inside a task, `workflow.run(...)` / `workflow.runNoWait(...)` (v1/declaration.js) and
 * `ctx.runNoWaitChild(...)` (v1/client/worker/context.js) send `parentId` (the task's workflow
 * run), `parentTaskRunExternalId` and `childIndex` from the parent-run context the worker opens
 * for each task execution (v1/client/worker/worker-internal.js: `childIndex: 0` per attempt, so
 * a retry counts from 0 again), shared by both APIs; `childKey` (`key` for `ctx.*Child`) is sent
 * as given.
 *
 * Workflows:
 * - `conf-ts-child-double` (input `{n, family}`): task `double` notes the run it ran in,
 *   returns `{twice: 2n}`;
 * - `conf-ts-fan-out`: task `fanOut` runs five `double` children with `double.run([...])` (one
 *   BulkTriggerWorkflow) and sums their outputs;
 * - `conf-ts-spawn-retry` (retries: 1): task `spawn` starts two children with
 *   `double.runNoWait`, one with `ctx.runNoWaitChild` and one with `ctx.runNoWaitChild(...,
 *   {key: 'ten'})`, throws on its first attempt, and on its retry spawns the same four again
 *   and sums their outputs.
 *
 * 1. Fan-out: the parent's output is the sum of the five children, in request order; five child
 *    runs ran, each once.
 * 2. Retry: the parent fails its first attempt after spawning and succeeds on its retry, with
 *    the same four child run ids (in order) both times; exactly four child runs ran, each once
 *    (not eight).
 * Prints one `ADZE-RESULT <json>` line.
 */
import { randomUUID } from 'node:crypto';

import {
  Checks,
  connect,
  describeError,
  log,
  type RunningWorker,
  startDeadline,
  startWorker,
  stopAndCheck,
  watchPause,
} from './_harness';

type Family = { family: string };
type Num = { n: number; family: string };
type Seen = {
  n: number;
  parentWorkflowRunId: string | undefined;
  childIndex: number | undefined;
  childKey: string | undefined;
};

const FAN_OUT = 5;
// A fresh suffix, so runs of an earlier run of this script (same tenant) are told apart.
const NONCE = randomUUID().slice(0, 8);

/** family -> child run id -> what `double` saw, once per execution. */
const doubled = new Map<string, Map<string, Seen[]>>();
/** The retried parent's attempts: what each one spawned. */
const attempts: { retryCount: number; children: string[] }[] = [];

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function familyRuns(family: string): Record<string, Seen[]> {
  return Object.fromEntries(doubled.get(family) ?? new Map<string, Seen[]>());
}

/** The family's child runs once `expected` ran, and a moment more for any extra one. */
async function settle(family: string, expected: number): Promise<Record<string, Seen[]>> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && Object.keys(familyRuns(family)).length < expected) {
    await sleep(100);
  }
  await sleep(1500);
  return familyRuns(family);
}

/** [executions, n] per child run, sorted: each child run once per input. */
function shape(runs: Record<string, Seen[]>): [number, number][] {
  return Object.values(runs)
    .map((seen): [number, number] => [seen.length, seen[0]?.n ?? -1])
    .sort((a, b) => a[1] - b[1] || a[0] - b[0]);
}

async function main(): Promise<void> {
  const checks = new Checks('ts/children.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const double = hatchet.workflow<Num, { double: { twice: number } }>({
    name: 'conf-ts-child-double',
  });
  double.task({
    name: 'double',
    fn: (input, ctx) => {
      const runs = doubled.get(input.family) ?? new Map<string, Seen[]>();
      doubled.set(input.family, runs);
      const seen = runs.get(ctx.workflowRunId()) ?? [];
      seen.push({
        n: input.n,
        // From AssignedAction.parent_workflow_run_id / child_workflow_index / _key: observed only.
        parentWorkflowRunId: ctx.parentWorkflowRunId(),
        childIndex: ctx.childIndex(),
        childKey: ctx.childKey(),
      });
      runs.set(ctx.workflowRunId(), seen);
      return { twice: 2 * input.n };
    },
  });

  const fanOut = hatchet.workflow<Family, { fanOut: { sum: number; outputs: number[] } }>({
    name: 'conf-ts-fan-out',
  });
  fanOut.task({
    name: 'fanOut',
    executionTimeout: '40s',
    fn: async (input) => {
      const inputs = Array.from({ length: FAN_OUT }, (_, n) => ({ n, family: input.family }));
      const outputs = await double.run(inputs);
      const twice = outputs.map((o) => o.double.twice);
      return { sum: twice.reduce((a, b) => a + b, 0), outputs: twice };
    },
  });

  const retried = hatchet.workflow<Family, { spawn: { sum: number; children: string[] } }>({
    name: 'conf-ts-spawn-retry',
  });
  retried.task({
    name: 'spawn',
    retries: 1,
    executionTimeout: '40s',
    fn: async (input, ctx) => {
      const family = input.family;
      const refs = [
        await double.runNoWait({ n: 0, family }),
        await double.runNoWait({ n: 1, family }),
        await ctx.runNoWaitChild(double, { n: 2, family }),
        await ctx.runNoWaitChild(double, { n: 10, family }, { key: 'ten' }),
      ];
      const children = await Promise.all(refs.map((r) => r.getWorkflowRunId()));
      attempts.push({ retryCount: ctx.retryCount(), children });
      if (ctx.retryCount() === 0) {
        throw new Error(`conformance: planned failure after spawning ${children.join(', ')}`);
      }
      const outputs = await Promise.all(refs.map((r) => r.output));
      return { sum: outputs.reduce((a, o) => a + o.double.twice, 0), children };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(
      hatchet,
      'conf-ts-children-worker',
      [double, fanOut, retried],
      10
    );
    checks.observe('workerId', running.worker._internal.workerId);
    checks.check('worker registered', true);

    const fan = `fan-${NONCE}`;
    log(`conf-ts-fan-out: ${FAN_OUT} children with double.run([...])`);
    try {
      const result = await fanOut.run({ family: fan });
      const expected = Array.from({ length: FAN_OUT }, (_, n) => 2 * n);
      checks.expectEqual(
        "fan-out: the parent's output sums its children's, in request order",
        result.fanOut,
        { sum: expected.reduce((a, b) => a + b, 0), outputs: expected }
      );
    } catch (e) {
      checks.check('fan-out: the parent completes', false, describeError(e));
    }
    const fanRuns = await settle(fan, FAN_OUT);
    checks.observe('fanOutChildren', fanRuns);
    checks.expectEqual(
      `fan-out: ${FAN_OUT} child runs ran, each once, one per input`,
      shape(fanRuns),
      Array.from({ length: FAN_OUT }, (_, n) => [1, n])
    );

    const family = `retry-${NONCE}`;
    log('conf-ts-spawn-retry: spawns four children, fails, spawns them again on its retry');
    let result: { sum: number; children: string[] } | undefined;
    try {
      result = (await retried.run({ family })).spawn;
    } catch (e) {
      checks.check('retry: the parent succeeds on its retry', false, describeError(e));
    }
    checks.observe('retryAttempts', attempts);
    checks.expectEqual(
      'retry: the parent ran twice (retryCount 0, then 1)',
      attempts.map((a) => a.retryCount),
      [0, 1]
    );
    const first = attempts[0]?.children ?? [];
    if (attempts.length === 2) {
      checks.check(
        'retry: the first attempt got four distinct child runs',
        new Set(first).size === 4,
        JSON.stringify(first)
      );
      checks.expectEqual(
        'retry: the retry got the same child run ids back, in order',
        attempts[1].children,
        first
      );
    }
    if (result !== undefined) {
      checks.expectEqual("retry: the parent's output sums the four children", result.sum, 26);
      checks.expectEqual(
        "retry: the output names the first attempt's children",
        result.children,
        first
      );
    }
    const runs = await settle(family, 4);
    checks.observe('retryChildren', runs);
    checks.expectEqual('retry: four child runs ran (not eight), each once', shape(runs), [
      [1, 0],
      [1, 1],
      [1, 2],
      [1, 10],
    ]);
    checks.expectEqual(
      'retry: the child runs that ran are the ones the parent got',
      Object.keys(runs).sort(),
      [...first].sort()
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
