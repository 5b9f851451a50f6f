/**
 * Conformance: DAG task conditions (waitFor, skipIf, cancelIf) with the TypeScript SDK.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx conditions.ts
 *
 * Workflow `conf-ts-conditions` (input `n`):
 * - `start` returns `{n}`;
 * - `big` / `small`: skipIf `output.n > 50` / `output.n <= 50` on `start` (one runs);
 * - `joined`: child of both, returns what `parentOutput` gives for each;
 * - `approved`: waitFor Or(a 30 s sleep, the event `conf-ts:approve` with
 *   `input.ok == true`), returns `ctx.triggers()`.
 * Workflow `conf-ts-cancel-if`: `check` returns `{stop: true}`; `guarded` cancelIf
 * `output.stop == true` on `check`.
 *
 * 1. n = 75: `big` is skipped (`{skipped: true}`), `small` runs, `joined` reads `big` as
 *    skipped; `approved` waits for `conf-ts:approve` (one with ok false is ignored) and
 *    reads its payload under the event key.
 * 2. The cancelIf run ends CANCELLED and `guarded` never runs.
 * Prints one `ADZE-RESULT <json>` line.
 */
import { Or } from '@hatchet-dev/typescript-sdk';

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

type In = { n: number };

const ran = new Set<string>();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

async function main(): Promise<void> {
  const checks = new Checks('ts/conditions.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const wf = hatchet.workflow<In>({ name: 'conf-ts-conditions' });
  const start = wf.task({
    name: 'start',
    fn: async (input) => ({ n: input.n }),
  });
  const big = wf.task({
    name: 'big',
    parents: [start],
    skipIf: [{ parent: start, expression: 'output.n > 50' }],
    fn: async (_input, ctx) => {
      ran.add(`${ctx.workflowRunId()}:big`);
      return { ran: 'big' };
    },
  });
  const small = wf.task({
    name: 'small',
    parents: [start],
    skipIf: [{ parent: start, expression: 'output.n <= 50' }],
    fn: async (_input, ctx) => {
      ran.add(`${ctx.workflowRunId()}:small`);
      return { ran: 'small' };
    },
  });
  wf.task({
    name: 'joined',
    parents: [big, small],
    fn: async (_input, ctx) => ({
      big: await ctx.parentOutput(big),
      small: await ctx.parentOutput(small),
    }),
  });
  wf.task({
    name: 'approved',
    parents: [start],
    waitFor: Or({ sleepFor: '30s' }, { eventKey: 'conf-ts:approve', expression: 'input.ok == true' }),
    fn: async (_input, ctx) => {
      ran.add(`${ctx.workflowRunId()}:approved`);
      return { triggers: ctx.triggers() };
    },
  });

  const cancelWf = hatchet.workflow<In>({ name: 'conf-ts-cancel-if' });
  const check = cancelWf.task({ name: 'check', fn: async () => ({ stop: true }) });
  cancelWf.task({
    name: 'guarded',
    parents: [check],
    cancelIf: [{ parent: check, expression: 'output.stop == true' }],
    fn: async (_input, ctx) => {
      ran.add(`${ctx.workflowRunId()}:guarded`);
      return {};
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-conditions', [wf, cancelWf], 8);

    log('n = 75');
    const ref = await wf.runNoWait({ n: 75 });
    const runId = await ref.getWorkflowRunId();
    const startDone = async (): Promise<boolean> => {
      for (let i = 0; i < 100; i += 1) {
        const d = await hatchet.runs.getDetails(runId);
        if (d.taskRuns.start?.status === 'COMPLETED') {
          return true;
        }
        await sleep(200);
      }
      return false;
    };
    checks.check('start completes', await startDone());
    await sleep(1000);
    checks.check('approved waits for its event', !ran.has(`${runId}:approved`));
    await hatchet.events.push('conf-ts:approve', { ok: false });
    await sleep(1500);
    checks.check('an event whose expression is false does not count', !ran.has(`${runId}:approved`));
    await hatchet.events.push('conf-ts:approve', { ok: true, by: 'bo' });
    const out = (await ref.output) as Record<string, unknown>;
    checks.expectEqual('big is skipped', out.big, { skipped: true });
    checks.expectEqual('small runs', out.small, { ran: 'small' });
    checks.expectEqual('joined reads big as skipped', out.joined, {
      big: { skipped: true },
      small: { ran: 'small' },
    });
    checks.expectEqual('approved reads the payload under the event key', out.approved, {
      triggers: { 'conf-ts:approve': { ok: true, by: 'bo' } },
    });
    checks.check('the skipped task never ran', !ran.has(`${runId}:big`));

    log('cancelIf');
    const cref = await cancelWf.runNoWait({ n: 0 });
    const cid = await cref.getWorkflowRunId();
    let status = '';
    for (let i = 0; i < 100; i += 1) {
      const d = await hatchet.runs.getDetails(cid);
      if (d.done) {
        status = d.status;
        break;
      }
      await sleep(200);
    }
    checks.expectEqual('cancelIf: the run ends CANCELLED', status, 'CANCELLED');
    checks.check('cancelIf: the guarded task never ran', !ran.has(`${cid}:guarded`));
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
