/**
 * Conformance: durable tasks with the TypeScript SDK (the DurableTask stream, engine >= v0.80).
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx durable.ts
 *
 * The worker has one durable slot (`durableSlots: 1`) and the default eviction policy, so a
 * durable task that waits 10 s or more is evicted (capacity eviction) and re-dispatched with a
 * higher invocation count once what it waits for is done. Workflows:
 * - `conf-ts-dchild` (input `{i, delay, family}`): sleeps `delay` ms, returns `{i, sq}`;
 * - `conf-ts-orchestrator` (durable): `n = 2 + seconds % 3` from the memoized `ctx.now()`,
 *   `ctx.spawnChildren(...)` of n children, returns the sum of squares and its invocation;
 * - `conf-ts-race` (durable): `Promise.race` of two `ctx.spawnChild(...)`;
 * - `conf-ts-nap` (durable): `ctx.sleepFor('2s')`;
 * - `conf-ts-listener` (durable): `ctx.waitForEvent('conf-ts-go:<family>', 'input.ok == true')`;
 * - `conf-ts-shifty` (durable, one retry): invocation 1 sleeps 1 s and throws; its retry
 *   takes another path, a memoized `ctx.now()` where the log has the sleep.
 *
 * 1. Orchestrator: completes with n children's squares summed; n child runs ran, each once.
 * 2. Race: the fast child wins.
 * 3. Sleep: about 2 s, as the SDK reports it.
 * 4. Event: an event the expression refuses does not wake it; the matching one does.
 * 5. Non-determinism: the retry of `conf-ts-shifty` fails with the engine's non-determinism
 *    error (its node 1 is not the logged call) instead of returning.
 * 6. Eviction: an orchestrator whose children sleep 13 s is evicted after 10 s, then restored
 *    and replayed: it completes on invocation 2 with the same `now`, no child spawned twice.
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

type Child = { i: number; delay: number; family: string };
type Family = { family: string; delay?: number };
type Seen = { invocation: number; now?: string; n?: number; listening?: boolean; slept?: boolean };

const NONCE = randomUUID().slice(0, 8);
/** family -> child run id -> how many times it ran. */
const children = new Map<string, Map<string, number>>();
/** family -> what each invocation of the durable task saw. */
const invocations = new Map<string, Seen[]>();

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function note(family: string, seen: Seen): void {
  const list = invocations.get(family) ?? [];
  list.push(seen);
  invocations.set(family, list);
}

function ranCounts(family: string): number[] {
  return [...(children.get(family) ?? new Map<string, number>()).values()].sort();
}

async function waitUntil(predicate: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) {
      return true;
    }
    await sleep(100);
  }
  return predicate();
}

async function main(): Promise<void> {
  const checks = new Checks('ts/durable.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const child = hatchet.workflow<Child, { dchild: { i: number; sq: number } }>({
    name: 'conf-ts-dchild',
  });
  child.task({
    name: 'dchild',
    executionTimeout: '60s',
    fn: async (input, ctx) => {
      const runs = children.get(input.family) ?? new Map<string, number>();
      children.set(input.family, runs);
      runs.set(ctx.workflowRunId(), (runs.get(ctx.workflowRunId()) ?? 0) + 1);
      await sleep(input.delay);
      return { i: input.i, sq: input.i * input.i };
    },
  });

  const squareOf = (o: unknown): number => {
    const r = o as { sq?: number; dchild?: { sq: number } };
    return r.dchild?.sq ?? r.sq ?? 0;
  };

  const orchestrator = hatchet.durableTask({
    name: 'conf-ts-orchestrator',
    executionTimeout: '60s',
    fn: async (input: Family, ctx) => {
      const now = await ctx.now();
      const n = 2 + (now.getUTCSeconds() % 3);
      note(input.family, { invocation: ctx.invocationCount, now: now.toISOString(), n });
      const outputs = await ctx.spawnChildren(
        Array.from({ length: n }, (_, i) => ({
          workflow: child,
          input: { i, delay: input.delay ?? 300, family: input.family },
        }))
      );
      return {
        n,
        sumSq: outputs.map(squareOf).reduce((a, b) => a + b, 0),
        invocation: ctx.invocationCount,
      };
    },
  });

  const race = hatchet.durableTask({
    name: 'conf-ts-race',
    fn: async (input: Family, ctx) => {
      const winner = await Promise.race([
        ctx.spawnChild(child, { i: 1, delay: 500, family: input.family }),
        ctx.spawnChild(child, { i: 2, delay: 4000, family: input.family }),
      ]);
      const w = winner as { i?: number; dchild?: { i: number } };
      return { winner: w.dchild?.i ?? w.i ?? -1 };
    },
  });

  const nap = hatchet.durableTask({
    name: 'conf-ts-nap',
    fn: async (_input: Family, ctx) => {
      const started = Date.now();
      await ctx.sleepFor('2s');
      return { wallMs: Date.now() - started };
    },
  });

  const listener = hatchet.durableTask({
    name: 'conf-ts-listener',
    fn: async (input: Family, ctx) => {
      note(input.family, { invocation: ctx.invocationCount, listening: true });
      const event = await ctx.waitForEvent(`conf-ts-go:${input.family}`, 'input.ok == true');
      return { event };
    },
  });

  const shifty = hatchet.durableTask({
    name: 'conf-ts-shifty',
    retries: 1,
    fn: async (input: Family, ctx) => {
      if (ctx.invocationCount === 1) {
        await ctx.sleepFor('1s');
        note(input.family, { invocation: 1, slept: true });
        throw new Error('the first invocation fails after its sleep, to be retried');
      }
      note(input.family, { invocation: ctx.invocationCount });
      // The retry's code has changed: node 1 is now a memo, not the logged sleep.
      const now = await ctx.now();
      return { now: now.toISOString() };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(
      hatchet,
      'conf-ts-durable-worker',
      [child, orchestrator, race, nap, listener, shifty],
      10,
      1
    );
    checks.observe('workerId', running.worker._internal.workerId);
    checks.check('worker registered', true);

    const orchFamily = `orch-${NONCE}`;
    log('conf-ts-orchestrator: n children decided at runtime');
    try {
      const result = await orchestrator.run({ family: orchFamily });
      checks.observe('orchestrator', result);
      const n = result.n;
      checks.check('orchestrator: n decided at runtime (2 to 4)', n >= 2 && n <= 4, `${n}`);
      checks.expectEqual(
        "orchestrator: the sum of its children's squares",
        result.sumSq,
        Array.from({ length: n }, (_, i) => i * i).reduce((a, b) => a + b, 0)
      );
      await sleep(1000);
      checks.expectEqual(
        'orchestrator: n child runs ran, each once',
        ranCounts(orchFamily),
        Array.from({ length: n }, () => 1)
      );
    } catch (e) {
      checks.check('orchestrator: the run completes', false, describeError(e));
    }

    try {
      checks.expectEqual(
        'race: the fast child wins',
        await race.run({ family: `race-${NONCE}` }),
        { winner: 1 }
      );
    } catch (e) {
      checks.check('race: the run completes', false, describeError(e));
    }

    try {
      const slept = await nap.run({ family: `nap-${NONCE}` });
      checks.check(
        'sleep: it slept at least 2 s and not much longer',
        slept.wallMs >= 1950 && slept.wallMs < 6000,
        `${slept.wallMs} ms`
      );
    } catch (e) {
      checks.check('sleep: the run completes', false, describeError(e));
    }

    const evFamily = `event-${NONCE}`;
    const ref = await listener.runNoWait({ family: evFamily });
    const runId = await ref.getWorkflowRunId();
    checks.check(
      'event: the task runs and listens',
      await waitUntil(() => (invocations.get(evFamily) ?? []).some((s) => s.listening), 15_000),
      JSON.stringify(invocations.get(evFamily))
    );
    await sleep(1000);
    const key = `conf-ts-go:${evFamily}`;
    await hatchet.events.push(key, { ok: false, n: 1 });
    await sleep(1500);
    const before = await hatchet.runs.getDetails(runId);
    checks.check(
      'event: an event the expression refuses does not wake it',
      !before.done,
      `status ${before.status}`
    );
    await hatchet.events.push(key, { ok: true, n: 2 });
    try {
      checks.expectEqual(
        "event: the task gets the matching event's payload",
        await ref.output,
        { event: { ok: true, n: 2 } }
      );
    } catch (e) {
      checks.check('event: the run completes', false, describeError(e));
    }

    const ndeFamily = `nde-${NONCE}`;
    try {
      const result = await shifty.run({ family: ndeFamily });
      checks.check('nondeterminism: the changed retry fails', false, `it returned ${JSON.stringify(result)}`);
    } catch (e) {
      const text = describeError(e);
      checks.observe('nondeterminismError', text);
      checks.check(
        'nondeterminism: the changed code fails with the non-determinism error',
        text.toLowerCase().includes('determinism'),
        text
      );
    }
    checks.expectEqual(
      'nondeterminism: invocation 1 slept, then its retry, invocation 2, ran',
      invocations.get(ndeFamily) ?? [],
      [{ invocation: 1, slept: true }, { invocation: 2 }]
    );

    const evictFamily = `evict-${NONCE}`;
    log('conf-ts-orchestrator with 13 s children: evicted after 10 s, then replayed');
    const evictRef = await orchestrator.runNoWait({ family: evictFamily, delay: 13_000 });
    const evictRun = await evictRef.getWorkflowRunId();
    const evicted = await waitUntil(async () => {
      const d = await hatchet.runs.getDetails(evictRun);
      return Object.values(d.taskRuns).some((t) => t.isEvicted);
    }, 20_000);
    checks.check('eviction: the waiting orchestrator is evicted', evicted, '');
    try {
      const result = await evictRef.output;
      const seen = invocations.get(evictFamily) ?? [];
      checks.observe('evictionInvocations', seen);
      checks.expectEqual('eviction: it completed on invocation 2', result.invocation, 2);
      checks.check(
        'eviction: invocation 2 replayed with the same memoized now and n',
        seen.length === 2 && seen[0].now === seen[1].now && seen[0].n === seen[1].n,
        JSON.stringify(seen)
      );
      await sleep(1000);
      checks.expectEqual(
        'eviction: no child was spawned twice (n child runs ran, each once)',
        ranCounts(evictFamily),
        Array.from({ length: seen[0]?.n ?? 0 }, () => 1)
      );
    } catch (e) {
      checks.check('eviction: the run completes after its children', false, describeError(e));
    }
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
