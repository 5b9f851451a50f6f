/**
 * Conformance: the TypeScript SDK's run-inspection calls over REST.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx runs_api.ts
 *
 * Workflow `conf-ts-runs`: `first` returns {value: n * 2}; `second` (parent: first) returns
 * {sum: first.value + 1}. After a run with metadata completes, the script reads it back with
 * `runs.get`, `runs.get_status`, `runs.getTaskExternalId` and `runs.list` (by workflow name,
 * metadata and status, runs and tasks). Prints one `ADZE-RESULT <json>` line on stdout and
 * exits 0 only if every check passed.
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

const WORKFLOW = 'conf-ts-runs';

type RunsInput = { n: number };
type RunsOutput = { first: { value: number }; second: { sum: number } };

async function main(): Promise<void> {
  const checks = new Checks('ts/runs_api.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const dag = hatchet.workflow<RunsInput, RunsOutput>({ name: WORKFLOW });
  const first = dag.task({
    name: 'first',
    fn: (input) => ({ value: input.n * 2 }),
  });
  dag.task({
    name: 'second',
    parents: [first],
    fn: async (_input, ctx) => {
      const parent = await ctx.parentOutput(first);
      return { sum: parent.value + 1 };
    },
  });

  const pause = watchPause(hatchet);
  let running: RunningWorker | undefined;
  try {
    running = await startWorker(hatchet, `${WORKFLOW}-worker`, [dag]);
    checks.check('worker registered', true);

    const ref = await dag.runNoWait({ n: 4 }, { additionalMetadata: { suite: 'runs' } });
    const runId = await ref.getWorkflowRunId();
    checks.observe('runId', runId);
    const result = await ref.output;
    checks.expectEqual("the run's result", result, { first: { value: 8 }, second: { sum: 9 } });

    const details = await hatchet.runs.get(runId);
    checks.expectEqual("runs.get: the run's id", details.run.metadata.id, runId);
    checks.expectEqual('runs.get: COMPLETED', details.run.status, 'COMPLETED');
    checks.expectEqual('runs.get: its output', details.run.output, { sum: 9 });
    checks.expectEqual(
      'runs.get: its two tasks',
      details.tasks.map((t) => t.displayName).sort(),
      ['first', 'second'],
    );
    checks.expectEqual('runs.get_status', await hatchet.runs.get_status(runId), 'COMPLETED');
    const taskId = await hatchet.runs.getTaskExternalId(runId);
    checks.check(
      'runs.getTaskExternalId names one of its tasks',
      details.tasks.some((t) => t.taskExternalId === taskId),
      taskId,
    );

    const listed = await hatchet.runs.list({
      workflowNames: [WORKFLOW],
      additionalMetadata: { suite: 'runs' },
      onlyTasks: false,
    });
    checks.expectEqual(
      'runs.list by workflow name and metadata',
      listed.rows.map((r) => r.metadata.id),
      [runId],
    );
    const tasks = await hatchet.runs.list({ workflowNames: [WORKFLOW], onlyTasks: true });
    checks.expectEqual('runs.list onlyTasks: two tasks', tasks.rows.length, 2);
    const failed = await hatchet.runs.list({
      workflowNames: [WORKFLOW],
      statuses: ['FAILED' as never],
      onlyTasks: false,
    });
    checks.expectEqual('runs.list statuses FAILED: none', failed.rows, []);
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
