/**
 * Conformance: crons and scheduled runs with the TypeScript SDK, whose scheduling path is
 * REST (`WorkflowDeclaration.schedule` / `delay` create a scheduled run over P3-4).
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx timers.ts
 *
 * Workflows (one task each, noting the input and metadata it saw):
 * - `conf-ts-declared`, `on: {cron: '* * * * * *'}` (every second, seconds first);
 * - `conf-ts-timed`, no trigger of its own.
 *
 * 1. The declared cron is listed (`crons.list({workflow})`, method DEFAULT) and starts runs.
 * 2. `wf.cron(name, '* * * * * *', input, {additionalMetadata})`: method API; `crons.get` and
 *    `crons.list({cronName})` find it; its runs carry its input and metadata; a bad expression
 *    is refused; once `crons.delete`d it starts nothing more.
 * 3. `wf.schedule(date)` and `wf.delay(1)`: each starts one run with its input;
 *    `scheduled.get` then names the run; `scheduled.list({statuses: ['SCHEDULED']})` lists one
 *    an hour ahead, which `scheduled.update` moves and `scheduled.delete` removes.
 * Prints one `ADZE-RESULT <json>` line.
 */
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

type Input = { from?: string };

/** Runs the tasks saw: [workflow, input, metadata]. */
const seen = new Map<string, [string, Input, Record<string, unknown>]>();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

async function waitUntil(what: string, condition: () => boolean, ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (condition()) {
      return true;
    }
    await sleep(200);
  }
  log(`gave up waiting for ${what}`);
  return false;
}

const runsWith = (from: string): string[] =>
  [...seen.entries()].filter(([, [wf, input]]) => wf === 'timed' && input.from === from).map(([id]) => id);

async function refused(call: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await call();
  } catch (e) {
    return describeError(e);
  }
  return undefined;
}

async function main(): Promise<void> {
  const checks = new Checks('ts/timers.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const declared = hatchet.workflow<Input>({ name: 'conf-ts-declared', on: { cron: '* * * * * *' } });
  declared.task({
    name: 'tick',
    fn: async (input, ctx) => {
      seen.set(ctx.workflowRunId(), ['declared', input, ctx.additionalMetadata()]);
      return {};
    },
  });
  const timed = hatchet.workflow<Input>({ name: 'conf-ts-timed' });
  timed.task({
    name: 'echo',
    fn: async (input, ctx) => {
      seen.set(ctx.workflowRunId(), ['timed', input, ctx.additionalMetadata()]);
      return { from: input.from ?? null };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-timers', [declared, timed], 8);

    log('declared cron');
    const listed = (await hatchet.crons.list({ workflow: declared })).rows ?? [];
    checks.expectEqual(
      'the declared cron is listed with method DEFAULT',
      listed.map((c) => [c.cron, c.method]),
      [['* * * * * *', 'DEFAULT']]
    );
    const declaredRuns = (): number => [...seen.values()].filter(([wf]) => wf === 'declared').length;
    checks.check(
      'the declared cron starts runs',
      await waitUntil('declared runs', () => declaredRuns() >= 2, 10_000),
      `${declaredRuns()} runs`
    );

    log('cron over REST');
    const cron = await timed.cron('ts-every-second', '* * * * * *', { from: 'cron' }, {
      additionalMetadata: { origin: 'ts-cron' },
    });
    checks.expectEqual('wf.cron answers the cron', [cron.name, cron.cron, cron.method, cron.enabled], [
      'ts-every-second',
      '* * * * * *',
      'API',
      true,
    ]);
    checks.expectEqual('crons.get finds it', (await hatchet.crons.get(cron.metadata.id)).metadata.id, cron.metadata.id);
    const byName = (await hatchet.crons.list({ cronName: 'ts-every-second' })).rows ?? [];
    checks.expectEqual('crons.list by name', byName.map((c) => c.metadata.id), [cron.metadata.id]);
    checks.check(
      "the cron's runs carry its input",
      await waitUntil('cron runs', () => runsWith('cron').length >= 2, 10_000),
      `${runsWith('cron').length} runs`
    );
    const metas = runsWith('cron').map((id) => seen.get(id)?.[2] ?? {});
    checks.check(
      '... and its metadata',
      metas.length > 0 && metas.every((m) => m.origin === 'ts-cron'),
      JSON.stringify(metas.slice(0, 3))
    );
    const bad = await refused(() => timed.cron('ts-bad', '61 * * * *', {}));
    checks.check('a bad expression is refused, naming it', bad !== undefined && bad.includes('61 * * * *'), `${bad}`);
    await hatchet.crons.delete(cron.metadata.id);
    await sleep(1500);
    const settled = runsWith('cron').length;
    await sleep(2000);
    checks.expectEqual('a deleted cron starts nothing more', runsWith('cron').length, settled);

    log('schedule and delay');
    const at = new Date(Date.now() + 1500);
    const scheduled = await timed.schedule(at, { from: 'schedule' });
    checks.expectEqual(
      'wf.schedule answers the schedule at its time',
      [scheduled.method, new Date(scheduled.triggerAt).getTime()],
      ['API', at.getTime()]
    );
    await timed.delay(1, { from: 'delay' });
    checks.check(
      'wf.schedule starts one run with its input',
      await waitUntil('the scheduled run', () => runsWith('schedule').length === 1)
    );
    checks.check(
      'wf.delay starts one run with its input',
      await waitUntil('the delayed run', () => runsWith('delay').length === 1)
    );
    const fired = await hatchet.scheduled.get(scheduled.metadata.id);
    checks.expectEqual('scheduled.get names the run it started', fired.workflowRunId, runsWith('schedule')[0]);

    const later = await timed.schedule(new Date(Date.now() + 3_600_000), { from: 'later' });
    const pending = (await hatchet.scheduled.list({ workflow: timed, statuses: ['SCHEDULED' as never] })).rows ?? [];
    checks.expectEqual(
      'scheduled.list SCHEDULED lists the pending one',
      pending.map((s) => s.metadata.id),
      [later.metadata.id]
    );
    const moved = new Date(Date.now() + 7_200_000);
    const updated = await hatchet.scheduled.update(later.metadata.id, { triggerAt: moved });
    checks.expectEqual('scheduled.update moves it', new Date(updated.triggerAt).getTime(), moved.getTime());
    await hatchet.scheduled.delete(later.metadata.id);
    checks.check(
      'scheduled.get of a deleted schedule fails',
      (await refused(() => hatchet.scheduled.get(later.metadata.id))) !== undefined
    );
    await sleep(1000);
    checks.expectEqual(
      'each schedule started one run',
      [runsWith('schedule').length, runsWith('delay').length, runsWith('later').length],
      [1, 1, 0]
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
