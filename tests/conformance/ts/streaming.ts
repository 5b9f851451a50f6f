/**
 * Conformance: streaming (`ctx.putStream`, read with `hatchet.runs.subscribeToStream`) and
 * task logs (`ctx.logger.*`, read with `hatchet.logs.list`) with the TypeScript SDK.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx streaming.ts
 *
 * Workflow `conf-ts-stream`, task `talk`: streams 50 chunks with `await ctx.putStream(...)`,
 * holding the last 45 back until the script has read the first five (its gate), and logs
 * lines of every level around them, one with metadata.
 * - `subscribeToStream(runId)` gives the first five chunks while the run is not done (the
 *   task cannot finish before the script opens its gate), and the task's first lines are
 *   listed while it runs; then every chunk once, in order, and the iteration ends, by which
 *   time the run is done (COMPLETED). Subscribing after the end gives all the chunks again.
 * - `logs.list(taskRunId)` gives the lines oldest first with their levels, retry count 0,
 *   attempt 1, the task's id, and the metadata (`{}` when none); `levels` (repeated),
 *   `orderByDirection`, `search`, `limit` and `attempt` filter and order them.
 * Prints one `ADZE-RESULT <json>` line.
 */
import { V1LogLineLevel, V1LogLineOrderByDirection } from '@hatchet-dev/typescript-sdk';

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

const WORKFLOW = 'conf-ts-stream';
const FIRST = 5;
const TOTAL = 50;
/** How long the task waits for the script to read its first chunks. */
const GATE_TIMEOUT_MS = 25_000;

type Gate = { opened: Promise<void>; open: () => void };
/** workflow run id -> the gate that lets its task stream the rest */
const gates = new Map<string, Gate>();

function gate(runId: string): Gate {
  let g = gates.get(runId);
  if (!g) {
    let open = (): void => undefined;
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    g = { opened, open };
    gates.set(runId, g);
  }
  return g;
}

const chunk = (i: number): string => `ts-${String(i).padStart(2, '0')}`;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** `promise`, or 'timeout' after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([promise, sleep(ms).then(() => 'timeout' as const)]);
}

async function main(): Promise<void> {
  const checks = new Checks('ts/streaming.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const wf = hatchet.workflow<Record<string, never>, { talk: { chunks: number } }>({
    name: WORKFLOW,
  });
  wf.task({
    name: 'talk',
    fn: async (_input, ctx) => {
      await ctx.logger.info('talk: starting');
      for (let i = 0; i < FIRST; i += 1) {
        await ctx.putStream(chunk(i));
      }
      await ctx.logger.debug('talk: first chunks sent');
      const released = await within(gate(ctx.workflowRunId()).opened, GATE_TIMEOUT_MS);
      if (released === 'timeout') {
        throw new Error('the script never read the first chunks');
      }
      await ctx.logger.warn('talk: released');
      for (let i = FIRST; i < TOTAL; i += 1) {
        await ctx.putStream(chunk(i));
      }
      await ctx.logger.error('talk: an error line');
      await ctx.logger.info('talk: done', { chunks: TOTAL });
      return { chunks: TOTAL };
    },
  });

  const expectedChunks = Array.from({ length: TOTAL }, (_, i) => chunk(i));
  const expectedLines: [string, string][] = [
    ['talk: starting', 'INFO'],
    ['talk: first chunks sent', 'DEBUG'],
    ['talk: released', 'WARN'],
    ['talk: an error line', 'ERROR'],
    ['talk: done', 'INFO'],
  ];

  const listMessages = async (
    taskRunId: string,
    opts: Parameters<typeof hatchet.logs.list>[1] = {}
  ): Promise<string[]> =>
    ((await hatchet.logs.list(taskRunId, opts)).rows ?? []).map((r) => r.message);

  /** The task's lines once there are at least `n`. */
  const waitLines = async (taskRunId: string, n: number): Promise<string[]> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const messages = await listMessages(taskRunId);
      if (messages.length >= n || Date.now() > deadline) {
        return messages;
      }
      await sleep(200);
    }
  };

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, `${WORKFLOW}-worker`, [wf]);
    checks.observe('workerId', running.worker._internal.workerId);

    const ref = await wf.runNoWait({});
    const runId = await ref.getWorkflowRunId();
    log(`run ${runId}`);
    let taskRunId: string | undefined;
    const chunks: string[] = [];

    const whileRunning = async (): Promise<void> => {
      const details = await hatchet.runs.getDetails(runId);
      checks.check(
        `the first ${FIRST} chunks are read while the run is not done`,
        !details.done,
        `status ${details.status}`
      );
      taskRunId = details.taskRuns.talk?.externalId;
      if (!checks.check('GetRunDetails names the task', taskRunId !== undefined, '')) {
        return;
      }
      checks.expectEqual(
        "logs.list gives the task's first lines while it runs",
        await waitLines(taskRunId as string, 2),
        ['talk: starting', 'talk: first chunks sent']
      );
      const still = await hatchet.runs.getDetails(runId);
      checks.check('... and the run is still not done', !still.done, `status ${still.status}`);
    };

    const consume = async (): Promise<void> => {
      for await (const c of hatchet.runs.subscribeToStream(runId)) {
        chunks.push(c);
        if (chunks.length === FIRST) {
          try {
            await whileRunning();
          } finally {
            gate(runId).open();
          }
        }
      }
    };
    const ended = (await within(consume(), 25_000)) !== 'timeout';
    checks.check("the stream's iteration ends", ended, `${chunks.length} chunks read`);
    if (ended) {
      const details = await hatchet.runs.getDetails(runId);
      checks.check(
        'when the iteration ended the run was done (COMPLETED)',
        details.done && details.status === 'COMPLETED',
        `done=${details.done} status=${details.status}`
      );
    }
    gate(runId).open();
    // Apart from the order, which the next check adds: the TS SDK sends each chunk without
    // waiting for the one before (its putStream does not await the call), so they can reach
    // the engine out of order; each carries its eventIndex, by which Hatchet's engine
    // orders a run's stream.
    checks.expectEqual('every chunk arrives once', [...chunks].sort(), expectedChunks);
    checks.expectEqual('every chunk once, in order', chunks, expectedChunks);
    checks.expectEqual('the run completed', await ref.output, { talk: { chunks: TOTAL } });

    const late = async (): Promise<string[]> => {
      const all: string[] = [];
      for await (const c of hatchet.runs.subscribeToStream(runId)) {
        all.push(c);
      }
      return all;
    };
    checks.expectEqual(
      'subscribing after the end gives every chunk, then ends',
      await within(late(), 15_000),
      expectedChunks
    );

    if (taskRunId !== undefined) {
      const id = taskRunId;
      await waitLines(id, expectedLines.length);
      const list = await hatchet.logs.list(id);
      const rows = list.rows ?? [];
      checks.expectEqual(
        "logs.list gives the task's lines oldest first, with their levels",
        rows.map((r) => [r.message, r.level]),
        expectedLines
      );
      checks.expectEqual(
        'each line names the task, retry count 0, attempt 1',
        rows.map((r) => [r.taskExternalId, r.retryCount, r.attempt]),
        rows.map(() => [id, 0, 1])
      );
      checks.expectEqual(
        'metadata: {} when none, the object given otherwise',
        rows.map((r) => r.metadata),
        [{}, {}, {}, {}, { chunks: TOTAL }]
      );
      checks.expectEqual(
        'logs.list with levels WARN and ERROR',
        await listMessages(id, { levels: [V1LogLineLevel.WARN, V1LogLineLevel.ERROR] }),
        ['talk: released', 'talk: an error line']
      );
      checks.expectEqual(
        'logs.list newest first',
        await listMessages(id, { orderByDirection: V1LogLineOrderByDirection.DESC }),
        expectedLines.map(([m]) => m).reverse()
      );
      checks.expectEqual(
        'logs.list, limit 10, levels INFO and ERROR, oldest first (as the fact sheet observed)',
        await listMessages(id, {
          limit: 10,
          levels: [V1LogLineLevel.INFO, V1LogLineLevel.ERROR],
          orderByDirection: V1LogLineOrderByDirection.ASC,
        }),
        ['talk: starting', 'talk: an error line', 'talk: done']
      );
      checks.expectEqual(
        'logs.list searching "DONE" (case ignored)',
        await listMessages(id, { search: 'DONE' }),
        ['talk: done']
      );
      checks.expectEqual('logs.list limit 2', await listMessages(id, { limit: 2 }), [
        'talk: starting',
        'talk: first chunks sent',
      ]);
      checks.expectEqual(
        'logs.list attempt 1 gives them all, attempt 2 none',
        [
          (await listMessages(id, { attempt: 1 })).length,
          (await listMessages(id, { attempt: 2 })).length,
        ],
        [expectedLines.length, 0]
      );
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
