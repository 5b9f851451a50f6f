// What the peers' measurements share: the clock, the pacing of the latency run, the
// figures each one prints, and reading the command line.

import { performance } from 'node:perf_hooks';

export const now = () => performance.now();

/** CPU seconds this process has used since `mark` (a `process.cpuUsage()`). */
export const cpuSince = (mark) => {
  const d = process.cpuUsage(mark);
  return (d.user + d.system) / 1e6;
};

/** Nearest-rank percentile of `values` (ms), rounded to 0.01 ms; null when empty. */
export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return Math.round(sorted[rank - 1] * 100) / 100;
}

/** The command line: `<measurement> [--name value]...`, every value a number. */
export function parseArgs(argv) {
  const [measurement, ...rest] = argv;
  const opts = {};
  for (let i = 0; i < rest.length; i += 2) {
    const name = rest[i];
    const value = Number(rest[i + 1]);
    if (!name?.startsWith('--') || !Number.isFinite(value)) {
      throw new Error(`expected --name <number>, got ${rest.slice(i, i + 2).join(' ')}`);
    }
    opts[name.slice(2)] = value;
  }
  if (!['noop', 'dag3', 'latency'].includes(measurement)) {
    throw new Error(`measurement must be noop, dag3 or latency, not ${measurement}`);
  }
  return { measurement, opts };
}

/** Splits `count` items into batches of `size` and calls `send(batch)` with at most
 * `inFlight` calls outstanding. */
export async function inBatches(count, size, inFlight, send) {
  const pending = new Set();
  for (let first = 0; first < count; first += size) {
    const seqs = [];
    for (let s = first; s < Math.min(first + size, count); s++) seqs.push(s);
    const call = send(seqs).finally(() => pending.delete(call));
    pending.add(call);
    if (pending.size >= inFlight) await Promise.race(pending);
  }
  await Promise.all(pending);
}

/** Offers `rate`/s for `secs` seconds: `send(seq, at)` for each one due, on a 1 ms
 * ticker, never waiting for an answer. Returns how many were sent. */
export async function paced(rate, secs, send) {
  const total = Math.round(rate * secs);
  const t0 = now();
  let seq = 0;
  while (seq < total) {
    const due = Math.min(total, Math.floor(((now() - t0) / 1000) * rate) + 1);
    for (; seq < due; seq++) send(seq, now());
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return total;
}

/** Resolves when `done()` is true; rejects after `timeoutMs` without it. */
export async function until(done, timeoutMs, what) {
  const deadline = now() + timeoutMs;
  while (!done()) {
    if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Start latencies (ms) of a paced run: handler start minus send time, per seq. */
export class Starts {
  constructor(total) {
    this.sent = new Float64Array(total);
    this.started = new Float64Array(total);
    this.count = 0;
  }
  send(seq, at) {
    this.sent[seq] = at;
  }
  start(seq) {
    if (this.started[seq] === 0) {
      this.started[seq] = now();
      this.count++;
    }
  }
  figures() {
    const lat = [];
    for (let i = 0; i < this.sent.length; i++) {
      if (this.started[i] > 0) lat.push(this.started[i] - this.sent[i]);
    }
    return { started: lat.length, start_p50_ms: percentile(lat, 50), start_p99_ms: percentile(lat, 99) };
  }
}

/** Prints one JSON line with `system`, the measurement and its figures, and exits. */
export function report(system, measurement, figures) {
  process.stdout.write(`${JSON.stringify({ system, measurement, ...figures })}\n`);
}

/** The measurements' defaults (the peers' usual definitions); the command line's options
 * go on top. */
const DEFAULTS = {
  common: { batch: 1000, 'in-flight': 4, concurrency: 100, 'batch-size': 20, rate: 200, secs: 15 },
  noop: { n: 10_000 },
  dag3: { n: 3000 },
  latency: {},
};

/** Runs the measurement the command line names with `measurements[name](options)`,
 * printing its figures as one JSON line, or `error` with exit status 1. */
export function run(system, measurements) {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  const { measurement, opts } = parsed;
  const options = { ...DEFAULTS.common, ...DEFAULTS[measurement], ...opts };
  measurements[measurement](options).then(
    (figures) => {
      report(system, measurement, { options, ...figures });
      process.exit(0);
    },
    (e) => {
      report(system, measurement, { options, error: String(e?.stack ?? e) });
      process.exit(1);
    },
  );
}
