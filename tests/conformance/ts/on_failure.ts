/**
 * Conformance: an onFailure task runs once after a run fails, with `ctx.errors()`.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx on_failure.ts
 *
 * - `conf-ts-on-failure`: task `explode` throws; the workflow's onFailure task runs
 *   exactly once, after the failure, and `ctx.errors()` holds explode's error; the run
 *   fails. With `{calm: true}` the run succeeds and onFailure never runs.
 * - `conf-ts-replay`: a DAG first → flaky → last whose `flaky` fails the first time it
 *   runs for a run; the run fails and `last` never runs. `hatchet.runs.replay({ids})`
 *   runs flaky again and then last, with flaky's new output; first does not run again.
 * Prints one `ADZE-RESULT <json>` line.
 */
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

type Mood = { calm: boolean };

/** The onFailure handler's calls: run id → errors it saw. */
const handled = new Map<string, Record<string, string>[]>();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  const checks = new Checks('ts/on_failure.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const wf = hatchet.workflow<Mood>({ name: 'conf-ts-on-failure' });
  wf.task({
    name: 'explode',
    retries: 0,
    fn: (input) => {
      if (input.calm) return { exploded: false };
      throw new Error('conformance: explode on purpose');
    },
  });
  wf.onFailure({
    name: 'handle',
    fn: (_input, ctx) => {
      const runId = ctx.workflowRunId();
      const seen = handled.get(runId) ?? [];
      seen.push(ctx.errors());
      handled.set(runId, seen);
      return { handled: true };
    },
  });

  // conf-ts-replay: calls per task name and run id.
  const replayCalls = new Map<string, number>();
  const called = (task: string, runId: string): number => {
    const n = (replayCalls.get(`${task}:${runId}`) ?? 0) + 1;
    replayCalls.set(`${task}:${runId}`, n);
    return n;
  };
  const callCount = (task: string, runId: string) => replayCalls.get(`${task}:${runId}`) ?? 0;
  const lastSaw = new Map<string, unknown>();
  const dag = hatchet.workflow({ name: 'conf-ts-replay' });
  const first = dag.task({
    name: 'first',
    fn: (_input, ctx) => ({ n: called('first', ctx.workflowRunId()) }),
  });
  const flaky = dag.task({
    name: 'flaky',
    parents: [first],
    retries: 0,
    fn: (_input, ctx) => {
      const n = called('flaky', ctx.workflowRunId());
      if (n === 1) throw new Error('conformance: flaky fails its first time');
      return { attempt: n };
    },
  });
  dag.task({
    name: 'last',
    parents: [flaky],
    fn: async (_input, ctx) => {
      const runId = ctx.workflowRunId();
      called('last', runId);
      lastSaw.set(runId, await ctx.parentOutput(flaky));
      return { done: true };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, 'conf-ts-on-failure-worker', [wf, dag]);
    checks.check('worker registered', true);

    log('running conf-ts-on-failure (explode throws)');
    const failing = await wf.runNoWait({ calm: false });
    const failingId = await failing.getWorkflowRunId();
    let rejection: unknown;
    try {
      await failing.output;
    } catch (e) {
      rejection = e;
    }
    const messages = rejection === undefined ? [] : errorMessages(rejection);
    checks.check(
      'the run fails with explode\'s error',
      messages.some((m) => m.includes('explode on purpose')),
      JSON.stringify(messages)
    );
    const calls = handled.get(failingId) ?? [];
    checks.observe('onFailureErrors', calls);
    checks.expectEqual('onFailure ran once, before the run ended', calls.length, 1);
    checks.check(
      'ctx.errors() holds explode\'s error',
      (calls[0]?.explode ?? '').includes('explode on purpose'),
      JSON.stringify(calls[0])
    );
    await sleep(1000);
    checks.expectEqual('still once', (handled.get(failingId) ?? []).length, 1);

    log('running conf-ts-on-failure calmly');
    const calm = await wf.runNoWait({ calm: true });
    const calmId = await calm.getWorkflowRunId();
    await calm.output;
    checks.expectEqual('no onFailure for a run that succeeded', handled.get(calmId), undefined);

    log('running conf-ts-replay (flaky fails once), then replaying it');
    const replayed = await dag.runNoWait({});
    const replayedId = await replayed.getWorkflowRunId();
    let failure: unknown;
    try {
      await replayed.output;
    } catch (e) {
      failure = e;
    }
    checks.check('the DAG run fails at flaky', failure !== undefined, describeError(failure));
    checks.expectEqual('last did not run', callCount('last', replayedId), 0);
    await hatchet.runs.replay({ ids: [replayedId] });
    for (let i = 0; i < 200 && callCount('last', replayedId) === 0; i++) await sleep(100);
    checks.expectEqual('after the replay, last ran once', callCount('last', replayedId), 1);
    checks.expectEqual('flaky ran twice', callCount('flaky', replayedId), 2);
    checks.expectEqual('first did not run again', callCount('first', replayedId), 1);
    checks.expectEqual(
      "last read the replayed flaky's output",
      lastSaw.get(replayedId),
      { attempt: 2 }
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
