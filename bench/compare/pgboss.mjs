// pg-boss's side of scripts/bench.sh compare: `node pgboss.mjs <noop|dag3|latency> [--n N]
// [--batch B] [--in-flight F] [--batch-size S] [--local-concurrency L] [--rate R] [--secs S]`.
//
// Queues are notify-enabled (LISTEN/NOTIFY wakes the workers; polling is the backstop) and
// workers fetch `--batch-size` jobs at a time, fetching again at once while batches come
// back full.
// noop: N no-op jobs inserted in bulk (insert of B, F calls at a time); tasks/s from the
// first insert to the moment the database holds N completed jobs.
// dag3: N three-step chains, each step's handler inserting the next step's jobs for its
// batch before it returns (pg-boss has no DAGs; this is its usual chaining); runs/s from
// the first insert to N completed step 3 jobs.
// latency: single jobs sent one by one at R/s for S s (never awaiting a send); trigger →
// handler start p50/p99.
//
// PG_URL names the database (its schema pgboss is dropped at the end).

import pg from 'pg';
import { PgBoss } from 'pg-boss';

import { Starts, cpuSince, inBatches, now, paced, run, until } from './common.mjs';

const url = process.env.PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const schema = 'pgboss';

async function open(queues) {
  const boss = new PgBoss({ connectionString: url, schema, useListenNotify: true, max: 10 });
  boss.on('error', (e) => process.stderr.write(`pg-boss: ${e.message}\n`));
  await boss.start();
  for (const q of queues) await boss.createQueue(q, { notify: true });
  return boss;
}

async function close(boss) {
  await boss.stop({ graceful: false, close: true });
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
}

const workOptions = (o) => ({
  batchSize: o['batch-size'],
  localConcurrency: o['local-concurrency'] ?? 1,
  burstWhenBatchFull: true,
  pollingIntervalSeconds: 0.5,
});

/** The moment the database holds `n` completed jobs of `queue`, read every 2 ms once
 * `ready()` says every handler has returned. */
async function completedAt(queue, n, ready) {
  await until(ready, 600_000, `${n} handlers of ${queue}`);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    for (;;) {
      const { rows } = await client.query(
        `SELECT count(*)::int AS n FROM ${schema}.job WHERE name = $1 AND state = 'completed'`,
        [queue],
      );
      if (rows[0].n >= n) return now();
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  } finally {
    await client.end();
  }
}

async function noop(o) {
  const boss = await open(['noop']);
  let handled = 0;
  await boss.work('noop', workOptions(o), async (jobs) => {
    handled += jobs.length;
  });
  const cpu = process.cpuUsage();
  const t0 = now();
  await inBatches(o.n, o.batch, o['in-flight'], (seqs) =>
    boss.insert(
      'noop',
      seqs.map((seq) => ({ data: { seq } })),
    ),
  );
  const t1 = await completedAt('noop', o.n, () => handled >= o.n);
  const cpu_s = cpuSince(cpu);
  await close(boss);
  const s = (t1 - t0) / 1000;
  return { count: o.n, window_s: s, tasks_per_s: o.n / s, cpu_s };
}

async function dag3(o) {
  const steps = ['step1', 'step2', 'step3'];
  const boss = await open(steps);
  let finished = 0;
  for (const [i, step] of steps.entries()) {
    const next = steps[i + 1];
    await boss.work(step, workOptions(o), async (jobs) => {
      if (next) {
        await boss.insert(
          next,
          jobs.map((job) => ({ data: { seq: job.data.seq, from: step } })),
        );
      } else {
        finished += jobs.length;
      }
    });
  }
  const cpu = process.cpuUsage();
  const t0 = now();
  await inBatches(o.n, o.batch, o['in-flight'], (seqs) =>
    boss.insert(
      'step1',
      seqs.map((seq) => ({ data: { seq } })),
    ),
  );
  const t1 = await completedAt('step3', o.n, () => finished >= o.n);
  const cpu_s = cpuSince(cpu);
  await close(boss);
  const s = (t1 - t0) / 1000;
  return { count: o.n, window_s: s, runs_per_s: o.n / s, cpu_s };
}

async function latency(o) {
  const total = Math.round(o.rate * o.secs);
  const starts = new Starts(total);
  const boss = await open(['latency']);
  await boss.work('latency', workOptions(o), async (jobs) => {
    for (const job of jobs) if (job.data.seq >= 0) starts.start(job.data.seq);
  });
  // A warm-up: the first job proves the path before anything is timed.
  await boss.send('latency', { seq: -1 });
  let failed = 0;
  const cpu = process.cpuUsage();
  await paced(o.rate, o.secs, (seq, at) => {
    starts.send(seq, at);
    boss.send('latency', { seq }).catch(() => failed++);
  });
  await until(() => starts.count + failed >= total, 60_000, `${total} starts`);
  const cpu_s = cpuSince(cpu);
  await close(boss);
  return { rate: o.rate, secs: o.secs, failed, cpu_s, ...starts.figures() };
}

run('pg-boss', { noop, dag3, latency });
