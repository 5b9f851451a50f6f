/**
 * Shared plumbing for the TypeScript conformance scripts (@hatchet-dev/typescript-sdk 1.33.2).
 *
 * The contract every script keeps, for the Rust integration tests that run it:
 * - configuration comes only from env (HATCHET_CLIENT_TOKEN, HATCHET_CLIENT_TLS_STRATEGY,
 *   optionally HATCHET_CLIENT_NAMESPACE), progress goes to stderr;
 * - stdout carries exactly one line, `ADZE-RESULT <json>`. The SDK logs INFO lines with
 *   console.info (stdout), so console.log/info/debug are sent to stderr here;
 * - exit 0 only if every check passed; a deadline (ADZE_CONFORMANCE_TIMEOUT_S, default 55 s)
 *   ends a script that hangs, with a failing ADZE-RESULT.
 *
 * Run a script as `node_modules/.bin/tsx dag.ts` (or `npx tsx dag.ts`). To stop one early,
 * signal the tsx process itself: `npx` does not pass SIGTERM on and leaves tsx running.
 */
import { writeSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';

import { Hatchet, type BaseWorkflowDeclaration, type Worker } from '@hatchet-dev/typescript-sdk';

type HatchetClient = ReturnType<typeof Hatchet.init>;

const RESULT_PREFIX = 'ADZE-RESULT';
const script = process.argv[1]?.split('/').pop() ?? 'conformance';

// Keep stdout for the result line alone.
/* eslint-disable no-console */
console.log = console.error;
console.info = console.error;
console.debug = console.error;
/* eslint-enable no-console */

export function log(message: string): void {
  process.stderr.write(`[conformance ${script}] ${message}\n`);
}

function describeError(e: unknown): string {
  if (e instanceof Error) {
    return `${e.name}: ${e.message}`;
  }
  return typeof e === 'string' ? e : JSON.stringify(e);
}

/** Named checks and observations; becomes the ADZE-RESULT line. */
export class Checks {
  readonly results: Record<string, boolean> = {};
  readonly failures: string[] = [];
  readonly observed: Record<string, unknown> = {};

  constructor(readonly script: string) {}

  check(name: string, ok: boolean, detail = ''): boolean {
    this.results[name] = ok;
    if (!ok) {
      this.failures.push(detail ? `${name}: ${detail}` : name);
    }
    log(`${ok ? 'PASS' : 'FAIL'} ${name}${ok || !detail ? '' : `: ${detail}`}`);
    return ok;
  }

  expectEqual(name: string, actual: unknown, expected: unknown): boolean {
    return this.check(
      name,
      isDeepStrictEqual(actual, expected),
      `expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`
    );
  }

  observe(key: string, value: unknown): void {
    this.observed[key] = value;
  }

  get ok(): boolean {
    return this.failures.length === 0 && Object.keys(this.results).length > 0;
  }

  /** Print the one ADZE-RESULT line, then exit with 0 or 1. */
  finish(extraFailure?: string): never {
    if (extraFailure) {
      this.failures.push(extraFailure);
    }
    const ok = this.ok;
    const body = {
      ok,
      script: this.script,
      checks: this.results,
      failures: this.failures,
      observed: this.observed,
    };
    log(ok ? 'all checks passed' : `FAILED: ${this.failures.join('; ')}`);
    // Synchronous, so nothing the SDK still has scheduled can come first or get in between.
    writeSync(1, `${RESULT_PREFIX} ${JSON.stringify(body)}\n`);
    process.exit(ok ? 0 : 1);
  }
}

/** End the process with a failing ADZE-RESULT if the script is still running then. */
export function startDeadline(checks: Checks): void {
  const seconds = Number(process.env.ADZE_CONFORMANCE_TIMEOUT_S ?? '55');
  setTimeout(() => {
    checks.finish(`deadline: the script did not finish within ${seconds} s`);
  }, seconds * 1000).unref();
}

/** `Hatchet.init()` from env; a script that cannot even build it fails with a clear line. */
export function connect(checks: Checks): HatchetClient {
  const token = process.env.HATCHET_CLIENT_TOKEN ?? '';
  if (!token) {
    return checks.finish('HATCHET_CLIENT_TOKEN is not set');
  }
  try {
    return Hatchet.init();
  } catch (e) {
    return checks.finish(`cannot configure the Hatchet client from env: ${describeError(e)}`);
  }
}

/**
 * Records the PATCH /api/v1/workers/{id} {"isPaused": true} that `worker.stop()` sends,
 * by wrapping the public `hatchet.workers.pause` the SDK calls (it only logs failures).
 */
export function watchPause(hatchet: HatchetClient): { paused: boolean; error?: string } {
  const seen: { paused: boolean; error?: string } = { paused: false };
  const workers = hatchet.workers;
  const pause = workers.pause.bind(workers);
  workers.pause = async (workerId: string) => {
    try {
      const result = await pause(workerId);
      seen.paused = true;
      return result;
    } catch (e) {
      seen.error = describeError(e);
      throw e;
    }
  };
  return seen;
}

export type RunningWorker = {
  worker: Worker;
  /** Resolves when the worker's action loop ended; never rejects. */
  stopped: Promise<string | undefined>;
};

/** Create the worker, start it, and wait until Dispatcher/Register answered. */
export async function startWorker(
  hatchet: HatchetClient,
  name: string,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  workflows: BaseWorkflowDeclaration<any, any>[],
  slots = 4,
  durableSlots?: number
): Promise<RunningWorker> {
  const worker = await hatchet.worker(name, { workflows, slots, durableSlots });
  const stopped = worker.start().then(
    () => undefined,
    (e: unknown) => describeError(e)
  );
  const failedEarly = stopped.then((error) => {
    throw new Error(`the worker stopped before it registered: ${error ?? 'no error given'}`);
  });
  await Promise.race([worker.waitUntilReady(20_000), failedEarly]);
  failedEarly.catch(() => undefined);
  return { worker, stopped };
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([
    promise,
    new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms).unref()),
  ]);
}

/** `worker.stop()` as on SIGTERM, and the checks on how it went. */
export async function stopAndCheck(
  checks: Checks,
  running: RunningWorker | undefined,
  pause: { paused: boolean; error?: string }
): Promise<void> {
  if (!running) {
    return;
  }
  const started = Date.now();
  let stopError: string | undefined;
  try {
    await running.worker.stop();
  } catch (e) {
    stopError = describeError(e);
  }
  const loopEnd = await within(running.stopped, 10_000);
  checks.observe('stop', {
    stopSeconds: (Date.now() - started) / 1000,
    stopError,
    actionLoop: loopEnd === 'timeout' ? 'still running' : (loopEnd ?? 'ended'),
  });
  checks.check(
    'worker paused on the engine at shutdown (PATCH /api/v1/workers/{id})',
    pause.paused,
    pause.error ?? 'worker.stop() never paused the worker'
  );
  checks.check(
    'worker stopped cleanly',
    stopError === undefined && loopEnd === undefined,
    stopError ?? (loopEnd === 'timeout' ? 'the action loop still ran 10 s after stop()' : `${loopEnd}`)
  );
}

/**
 * A failed run rejects with the failed tasks' error strings. TS workers send
 * `{"message", "stack"}` JSON; Python workers send `<Type>: <message>\n<traceback>`.
 */
export function errorMessages(rejection: unknown): string[] {
  const errors = Array.isArray(rejection) ? rejection : [rejection];
  return errors.map((e) => {
    if (typeof e !== 'string') {
      return describeError(e);
    }
    try {
      const parsed = JSON.parse(e) as { message?: unknown };
      return typeof parsed.message === 'string' ? parsed.message : e;
    } catch {
      return e;
    }
  });
}

export { describeError };
