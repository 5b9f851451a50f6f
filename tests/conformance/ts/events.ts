/**
 * Conformance: events as triggers with the TypeScript SDK (`hatchet.events.push` / `bulkPush`).
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx events.ts
 *
 * Workflow `conf-ts-on-event`, `on: { event: ['user:create', 'subscription:*'] }`: task `echo`
 * returns its input and notes what it saw (input, `ctx.additionalMetadata()`).
 * - `user:create` pushed with additional metadata starts one run (per `hatchet.events.list`
 *   and its `triggeredRuns`): it completes with the payload as its input, and the run
 *   (GetRunDetails) and the task carry the metadata;
 * - `subscription:renewed` starts one through the wildcard;
 * - `user:created` and `nobody:listens` start nothing;
 * - `bulkPush` of two `subscription:bulk` events, each with its own metadata: answered in
 *   order, each starts its run with its own payload and metadata;
 * - the listing by key shows the run summary and the metadata.
 * Prints one `ADZE-RESULT <json>` line.
 */
import type { JsonObject } from '@hatchet-dev/typescript-sdk';

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

type Payload = JsonObject;
type Seen = { input: Payload; metadata: Record<string, unknown> };

const WORKFLOW = 'conf-ts-on-event';
const seen = new Map<string, Seen>();

function contains(actual: unknown, expected: Record<string, string>): boolean {
  if (typeof actual !== 'object' || actual === null) {
    return false;
  }
  const record = actual as Record<string, unknown>;
  return Object.entries(expected).every(([k, v]) => record[k] === v);
}

async function main(): Promise<void> {
  const checks = new Checks('ts/events.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const onEvent = hatchet.workflow<Payload, { echo: Payload }>({
    name: WORKFLOW,
    on: { event: ['user:create', 'subscription:*'] },
  });
  onEvent.task({
    name: 'echo',
    fn: (input, ctx) => {
      seen.set(ctx.workflowRunId(), { input, metadata: ctx.additionalMetadata() });
      return input;
    },
  });

  /** The runs an event started, per GET /api/v1/stable/tenants/{tenant}/events. */
  const triggered = async (eventId: string): Promise<string[]> => {
    const list = await hatchet.events.list({ eventIds: [eventId] });
    const row = (list.rows ?? []).find((r) => r.metadata.id === eventId);
    if (!row) {
      throw new Error(`event ${eventId} is not listed`);
    }
    return (row.triggeredRuns ?? []).map((r) => r.workflowRunId);
  };

  const oneRun = async (name: string, eventId: string): Promise<string | undefined> => {
    const runs = await triggered(eventId);
    const ok = checks.expectEqual(`${name}: the event started one run`, runs.length, 1);
    return ok ? runs[0] : undefined;
  };

  const checkRun = async (
    name: string,
    runId: string | undefined,
    payload: Payload,
    metadata?: Record<string, string>
  ): Promise<void> => {
    if (!runId) {
      return;
    }
    const output = await hatchet.runs.runRef<{ echo: Payload }>(runId).output;
    checks.expectEqual(`${name}: the run completed with the payload as its input`, output, {
      echo: payload,
    });
    const details = await hatchet.runs.getDetails(runId);
    checks.expectEqual(`${name}: GetRunDetails input is the payload`, details.input, payload);
    const saw = seen.get(runId);
    checks.expectEqual(`${name}: the task received the payload`, saw?.input, payload);
    if (metadata) {
      checks.check(
        `${name}: the run carries the event's additional metadata`,
        contains(details.additionalMetadata, metadata),
        `expected ${JSON.stringify(metadata)} within ${JSON.stringify(details.additionalMetadata)}`
      );
      checks.check(
        `${name}: the task saw the event's additional metadata`,
        contains(saw?.metadata, metadata),
        `expected ${JSON.stringify(metadata)} within ${JSON.stringify(saw?.metadata)}`
      );
    }
  };

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, `${WORKFLOW}-worker`, [onEvent]);
    checks.observe('workerId', running.worker._internal.workerId);

    log('user:create with additional metadata');
    const created = await hatchet.events.push(
      'user:create',
      { user: 'anna' },
      { additionalMetadata: { source: 'signup-form' } }
    );
    checks.expectEqual('push answers with the key', created.key, 'user:create');
    const createdRun = await oneRun('user:create', created.eventId);

    log('subscription:renewed (the wildcard)');
    const renewed = await hatchet.events.push('subscription:renewed', { plan: 'pro' });
    const renewedRun = await oneRun('subscription:renewed (wildcard)', renewed.eventId);

    log('keys no one listens to');
    const near = await hatchet.events.push('user:created', { user: 'bo' });
    const nobody = await hatchet.events.push('nobody:listens', { x: 1 });
    checks.expectEqual(
      'user:created (not an exact match) starts nothing',
      await triggered(near.eventId),
      []
    );
    checks.expectEqual('nobody:listens starts nothing', await triggered(nobody.eventId), []);

    log('bulkPush of two subscription:bulk events');
    const bulk = await hatchet.events.bulkPush('subscription:bulk', [
      { payload: { n: 1 }, additionalMetadata: { i: '1' } },
      { payload: { n: 2 }, additionalMetadata: { i: '2' } },
    ]);
    checks.expectEqual(
      'bulkPush answers every event in order',
      bulk.events.map((e) => [e.key, JSON.parse(e.payload)]),
      [
        ['subscription:bulk', { n: 1 }],
        ['subscription:bulk', { n: 2 }],
      ]
    );
    const bulkRuns: (string | undefined)[] = [];
    for (const [i, e] of bulk.events.entries()) {
      bulkRuns.push(await oneRun(`bulkPush event ${i + 1}`, e.eventId));
    }

    await checkRun('user:create', createdRun, { user: 'anna' }, { source: 'signup-form' });
    await checkRun('subscription:renewed (wildcard)', renewedRun, { plan: 'pro' });
    for (const [i, runId] of bulkRuns.entries()) {
      await checkRun(`bulkPush event ${i + 1}`, runId, { n: i + 1 }, { i: String(i + 1) });
    }

    const listed = await hatchet.events.list({ keys: ['user:create'] });
    const row = (listed.rows ?? []).find((r) => r.metadata.id === created.eventId);
    const found = row !== undefined;
    if (checks.check('events.list by key finds user:create', found, JSON.stringify(listed.rows))) {
      checks.expectEqual('its additional metadata', row?.additionalMetadata, {
        source: 'signup-form',
      });
      checks.expectEqual('its payload', row?.payload, { user: 'anna' });
      checks.expectEqual(
        'its triggered runs',
        (row?.triggeredRuns ?? []).map((r) => r.workflowRunId),
        [createdRun]
      );
      checks.expectEqual(
        'its run summary counts one succeeded',
        row?.workflowRunSummary.succeeded,
        1
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
