/**
 * Conformance: idempotent triggers (a workflow's `idempotency`) with the TypeScript SDK.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx idempotency.ts
 *
 * Workflows, each one task returning `{order: input.order}` and noting the run it ran in:
 * - `conf-ts-idem-ttl`: `idempotency: {strategy: 'ttl', expression: 'input.order', ttlMs: 600000}`;
 * - `conf-ts-idem-status`: `idempotency: {strategy: 'status', expression: 'input.order',
 *   fallbackTtlMs: 600000}`; its task waits until the script lets it finish.
 *
 * v1/client/admin.js `runWorkflow` turns any ALREADY_EXISTS into an `IdempotencyCollisionError`
 * whose `existingRunExternalId` is read from the `v1.IdempotencyCollisionError` detail (empty
 * when there is none); `runWorkflows` throws a `BulkTriggerIdempotencyCollisionError` only when
 * the `v1.BulkTriggerIdempotencyCollisionError` detail is there, a HatchetError otherwise.
 *
 * 1. `runNoWait` twice with one key: the second throws naming the first run; another key is
 *    another run; the first run completes.
 * 2. Eight concurrent `runNoWait` with one new key: exactly one run, every other throws naming it.
 * 3. `runNoWait([held, b, held, c, b])`: throws with b's and c's runs (in request order, per their
 *    outputs) and the collisions [held, held, b's run]; `runManyNoWait` with new keys answers
 *    the runs in order.
 * 4. STATUS: while the run is running its key is held; once it finished (the worker ran it) the
 *    key is free at once and the next run completes.
 * 5. The tasks ran exactly the runs that were created, each once.
 * Prints one `ADZE-RESULT <json>` line.
 */
import { randomUUID } from 'node:crypto';

import {
  BulkTriggerIdempotencyCollisionError,
  IdempotencyCollisionError,
} from '@hatchet-dev/typescript-sdk';

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

type Order = { order: string };

const TTL_WF = 'conf-ts-idem-ttl';
const STATUS_WF = 'conf-ts-idem-status';
// A fresh suffix, so keys held by an earlier run of this script (same tenant) do not collide.
const NONCE = randomUUID().slice(0, 8);
const key = (name: string): string => `${name}-${NONCE}`;

/** Every run a task ran in: run id -> [workflow, order] per execution. */
const executed = new Map<string, [string, string][]>();
/** Every run this script created: run id -> [workflow, order]. */
const created = new Map<string, [string, string]>();

function note(runId: string, workflow: string, input: Order): Order {
  const list = executed.get(runId) ?? [];
  list.push([workflow, input.order]);
  executed.set(runId, list);
  return { order: input.order };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  const checks = new Checks('ts/idempotency.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const ttl = hatchet.workflow<Order, { ship: Order }>({
    name: TTL_WF,
    idempotency: { strategy: 'ttl', expression: 'input.order', ttlMs: 600_000 },
  });
  ttl.task({ name: 'ship', fn: (input, ctx) => note(ctx.workflowRunId(), TTL_WF, input) });

  let markStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => {
    markStarted = resolve;
  });
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const status = hatchet.workflow<Order, { gated: Order }>({
    name: STATUS_WF,
    idempotency: { strategy: 'status', expression: 'input.order', fallbackTtlMs: 600_000 },
  });
  status.task({
    name: 'gated',
    fn: async (input, ctx) => {
      markStarted();
      await Promise.race([released, sleep(30_000)]);
      return note(ctx.workflowRunId(), STATUS_WF, input);
    },
  });

  const outputOf = <T extends Record<string, unknown>>(runId: string): Promise<T> =>
    hatchet.runs.runRef<T>(runId).output;

  /** A trigger that must create a run; its id. */
  const createdRun = async (
    name: string,
    call: () => Promise<{ getWorkflowRunId(): Promise<string> }>,
    workflow: string,
    order: string
  ): Promise<string | undefined> => {
    try {
      const runId = await (await call()).getWorkflowRunId();
      checks.check(`${name}: creates a run`, Boolean(runId), JSON.stringify(runId));
      created.set(runId, [workflow, order]);
      return runId;
    } catch (e) {
      checks.check(`${name}: creates a run`, false, describeError(e));
      return undefined;
    }
  };

  /** A trigger that must throw IdempotencyCollisionError naming `holder`. */
  const collides = async (
    name: string,
    call: () => Promise<{ getWorkflowRunId(): Promise<string> }>,
    holder: string | undefined
  ): Promise<void> => {
    let runId: string;
    try {
      runId = await (await call()).getWorkflowRunId();
    } catch (e) {
      if (e instanceof IdempotencyCollisionError) {
        checks.expectEqual(
          `${name}: IdempotencyCollisionError names the holding run`,
          e.existingRunExternalId,
          holder
        );
      } else {
        checks.check(`${name}: throws IdempotencyCollisionError`, false, describeError(e));
      }
      return;
    }
    created.set(runId, ['?', name]);
    checks.check(
      `${name}: throws IdempotencyCollisionError`,
      false,
      `created run ${runId} instead`
    );
  };

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-idempotency-worker', [ttl, status], 10);
    checks.observe('workerId', running.worker._internal.workerId);

    const [k1, k2, k4] = [key('o-1'), key('o-2'), key('o-4')];
    log(`runNoWait twice with key ${k1}`);
    const first = await createdRun(
      'runNoWait (key o-1)',
      () => ttl.runNoWait({ order: k1 }),
      TTL_WF,
      k1
    );
    await collides('runNoWait again (key o-1)', () => ttl.runNoWait({ order: k1 }), first);
    const second = await createdRun(
      'runNoWait with another key (o-2)',
      () => ttl.runNoWait({ order: k2 }),
      TTL_WF,
      k2
    );
    checks.check('another key: another run', second !== first, `${second} === ${first}`);
    if (first) {
      checks.expectEqual(
        'the first run (key o-1) completes normally',
        await outputOf<{ ship: Order }>(first),
        { ship: { order: k1 } }
      );
    }

    const n = 8;
    log(`${n} concurrent runNoWait with key ${k4}`);
    const answers = await Promise.allSettled(
      Array.from({ length: n }, async () =>
        (await ttl.runNoWait({ order: k4 })).getWorkflowRunId()
      )
    );
    const runs: string[] = [];
    const holders: string[] = [];
    const others: string[] = [];
    for (const a of answers) {
      if (a.status === 'fulfilled') {
        runs.push(a.value);
        created.set(a.value, [TTL_WF, k4]);
      } else if (a.reason instanceof IdempotencyCollisionError) {
        holders.push(a.reason.existingRunExternalId);
      } else {
        others.push(describeError(a.reason));
      }
    }
    checks.observe('concurrent', { created: runs.length, collisions: holders.length });
    checks.expectEqual(`${n} concurrent triggers, one key: no other error`, others, []);
    checks.expectEqual(`${n} concurrent triggers, one key: exactly one run`, runs.length, 1);
    checks.expectEqual(
      `${n} concurrent triggers, one key: every collision names the run`,
      holders,
      Array.from({ length: n - 1 }, () => runs[0])
    );

    const [kb, kc, kd, ke] = [key('b'), key('c'), key('d'), key('e')];
    log(`runNoWait([${k1} (held), b, ${k1}, c, b])`);
    try {
      const refs = await ttl.runNoWait([k1, kb, k1, kc, kb].map((order) => ({ order })));
      const ids = await Promise.all(refs.map((r) => r.getWorkflowRunId()));
      ids.forEach((id) => created.set(id, ['?', 'bulk']));
      checks.check(
        'bulk runNoWait: throws BulkTriggerIdempotencyCollisionError',
        false,
        `created ${JSON.stringify(ids)} instead`
      );
    } catch (e) {
      if (!(e instanceof BulkTriggerIdempotencyCollisionError)) {
        checks.check(
          'bulk runNoWait: throws BulkTriggerIdempotencyCollisionError',
          false,
          describeError(e)
        );
      } else {
        const ids = e.successfulWorkflowRunExternalIds;
        checks.observe('bulkCollision', { successful: ids, collisions: e.collisions.length });
        if (checks.expectEqual('bulk runNoWait: the runs of b and c created', ids.length, 2)) {
          const [bRun, cRun] = ids;
          created.set(bRun, [TTL_WF, kb]);
          created.set(cRun, [TTL_WF, kc]);
          checks.expectEqual(
            'bulk runNoWait: the collisions in request order name their holders ' +
              "(o-1's run twice, then b's run created in this call)",
            e.collisions.map((c) => c.existingRunExternalId),
            [first, first, bRun]
          );
          checks.check(
            'bulk runNoWait: each collision is an IdempotencyCollisionError',
            e.collisions.every((c) => c instanceof IdempotencyCollisionError),
            JSON.stringify(e.collisions.map((c) => c.constructor.name))
          );
          checks.expectEqual(
            "bulk runNoWait: the created ids are b's run then c's",
            [
              (await outputOf<{ ship: Order }>(bRun)).ship,
              (await outputOf<{ ship: Order }>(cRun)).ship,
            ],
            [{ order: kb }, { order: kc }]
          );
          await collides(
            'runNoWait (key b) after the bulk',
            () => ttl.runNoWait({ order: kb }),
            bRun
          );
        } else {
          ids.forEach((id) => created.set(id, ['?', 'bulk']));
        }
      }
    }

    log('runManyNoWait with new keys');
    try {
      const refs = await ttl.runManyNoWait([{ input: { order: kd } }, { input: { order: ke } }]);
      const ids = await Promise.all(refs.map((r) => r.getWorkflowRunId()));
      ids.forEach((id, i) => created.set(id, [TTL_WF, [kd, ke][i] ?? '?']));
      checks.expectEqual('runManyNoWait, new keys: two runs', new Set(ids).size, 2);
      checks.expectEqual(
        'runManyNoWait, new keys: the runs in request order',
        await Promise.all(ids.map(async (id) => (await outputOf<{ ship: Order }>(id)).ship)),
        [{ order: kd }, { order: ke }]
      );
    } catch (e) {
      checks.check('runManyNoWait, new keys: creates the runs', false, describeError(e));
    }

    const ks = key('s');
    log(`STATUS: a run with key ${ks}, held while it runs`);
    const firstStatus = await createdRun(
      'STATUS: runNoWait',
      () => status.runNoWait({ order: ks }),
      STATUS_WF,
      ks
    );
    if (firstStatus) {
      const ran = await Promise.race([started.then(() => true), sleep(15_000).then(() => false)]);
      if (checks.check('STATUS: the worker started the run', ran, 'not within 15 s')) {
        await collides(
          'STATUS: runNoWait while the run is running',
          () => status.runNoWait({ order: ks }),
          firstStatus
        );
      }
      release();
      checks.expectEqual(
        'STATUS: the first run completes normally',
        await outputOf<{ gated: Order }>(firstStatus),
        { gated: { order: ks } }
      );
      log('STATUS: the run finished, the key is free');
      const secondStatus = await createdRun(
        'STATUS: runNoWait once the run finished',
        () => status.runNoWait({ order: ks }),
        STATUS_WF,
        ks
      );
      if (secondStatus) {
        checks.check('STATUS: another run', secondStatus !== firstStatus, secondStatus);
        checks.expectEqual(
          'STATUS: the second run completes',
          await outputOf<{ gated: Order }>(secondStatus),
          { gated: { order: ks } }
        );
      }
    }
    release();

    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && [...created.keys()].some((id) => !executed.has(id))) {
      await sleep(200);
    }
    // Give a run nobody asked for (a collision that created one anyway) time to show up.
    await sleep(1_500);
    const expected = Object.fromEntries([...created].map(([id, what]) => [id, [what]]));
    checks.observe('runsCreated', created.size);
    checks.expectEqual(
      'the tasks ran exactly the runs created, each once, with its key',
      Object.fromEntries(executed),
      expected
    );
  } catch (e) {
    log(e instanceof Error ? (e.stack ?? e.message) : describeError(e));
    checks.check('no unexpected error', false, describeError(e));
  } finally {
    release();
    log('stopping the worker');
    await stopAndCheck(checks, running, pause);
  }
  checks.finish();
}

void main();
