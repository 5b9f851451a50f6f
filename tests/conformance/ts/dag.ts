/**
 * Conformance: a two-task DAG run with the TypeScript SDK's `workflow.run(...)`.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx dag.ts
 *
 * Workflow `conf-ts-dag`: `first` returns {value: n * 2}; `second` (parent: first) returns
 * {sum: first.value + 1}. `run()` triggers with WorkflowService/TriggerWorkflow and waits on
 * Dispatcher/SubscribeToWorkflowRuns. Prints one `ADZE-RESULT <json>` line on stdout and
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

const WORKFLOW = 'conf-ts-dag';

type DagInput = { n: number };
type DagOutput = { first: { value: number }; second: { sum: number } };

async function main(): Promise<void> {
  const checks = new Checks('ts/dag.ts');
  startDeadline(checks);
  const hatchet = connect(checks);

  const dag = hatchet.workflow<DagInput, DagOutput>({ name: WORKFLOW });
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
    checks.observe('workerId', running.worker._internal.workerId);
    checks.check('worker registered', true);

    const n = 5;
    log(`run() with n=${n}`);
    const result = await dag.run({ n });
    checks.observe('result', result);
    checks.expectEqual("run() returns every task's output", result, {
      first: { value: n * 2 },
      second: { sum: n * 2 + 1 },
    });
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
