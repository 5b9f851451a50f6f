// BullMQ's side of scripts/bench.sh compare: `node bullmq.mjs <noop|dag3|latency> [--n N]
// [--batch B] [--in-flight F] [--concurrency C] [--rate R] [--secs S]`.
//
// noop: N no-op jobs added in bulk (addBulk of B, F calls at a time) to one queue, one
// worker of concurrency C; tasks/s from the first add to the last `completed` event.
// dag3: N three-step chains as BullMQ flows (step 3 the parent of step 2, the parent of
// step 1: a parent runs when its child has completed), one worker of concurrency C per
// step's queue; runs/s from the first add to the last step 3 completed.
// latency: single jobs added one by one at R/s for S s (never awaiting an add); trigger →
// handler start p50/p99.
//
// REDIS_URL names the Redis (default redis://127.0.0.1:6379); COMPARE_PREFIX the key
// prefix, whose keys are deleted at the end.

import { FlowProducer, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

import { Starts, cpuSince, inBatches, now, paced, run, until } from './common.mjs';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = process.env.COMPARE_PREFIX ?? `adzecmp${process.pid}`;
const connection = () => new Redis(url, { maxRetriesPerRequest: null });

async function cleanUp(queues) {
  for (const q of queues) await q.obliterate({ force: true }).catch(() => {});
  const redis = connection();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  await redis.quit();
}

async function noop(o) {
  const queue = new Queue('noop', { connection: connection(), prefix });
  let done = 0;
  let last = 0;
  const worker = new Worker('noop', async () => null, {
    connection: connection(),
    prefix,
    concurrency: o.concurrency,
  });
  worker.on('completed', () => {
    done++;
    last = now();
  });
  await worker.waitUntilReady();
  const cpu = process.cpuUsage();
  const t0 = now();
  await inBatches(o.n, o.batch, o['in-flight'], (seqs) =>
    queue.addBulk(seqs.map((seq) => ({ name: 'noop', data: { seq } }))),
  );
  await until(() => done >= o.n, 600_000, `${o.n} completions`);
  const cpu_s = cpuSince(cpu);
  await worker.close();
  await cleanUp([queue]);
  const s = (last - t0) / 1000;
  return { count: o.n, window_s: s, tasks_per_s: o.n / s, cpu_s };
}

async function dag3(o) {
  const names = ['step1', 'step2', 'step3'];
  const queues = names.map((n) => new Queue(n, { connection: connection(), prefix }));
  let done = 0;
  let last = 0;
  const workers = names.map(
    (n) =>
      new Worker(n, async (job) => ({ step: n, seq: job.data.seq }), {
        connection: connection(),
        prefix,
        concurrency: o.concurrency,
      }),
  );
  workers[2].on('completed', () => {
    done++;
    last = now();
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  const flows = new FlowProducer({ connection: connection(), prefix });
  const chain = (seq) => ({
    name: 'step3',
    queueName: 'step3',
    data: { seq },
    children: [
      {
        name: 'step2',
        queueName: 'step2',
        data: { seq },
        children: [{ name: 'step1', queueName: 'step1', data: { seq } }],
      },
    ],
  });
  const cpu = process.cpuUsage();
  const t0 = now();
  await inBatches(o.n, o.batch, o['in-flight'], (seqs) => flows.addBulk(seqs.map(chain)));
  await until(() => done >= o.n, 600_000, `${o.n} step 3 completions`);
  const cpu_s = cpuSince(cpu);
  await Promise.all(workers.map((w) => w.close()));
  await flows.close();
  await cleanUp(queues);
  const s = (last - t0) / 1000;
  return { count: o.n, window_s: s, runs_per_s: o.n / s, cpu_s };
}

async function latency(o) {
  const total = Math.round(o.rate * o.secs);
  const starts = new Starts(total);
  const queue = new Queue('latency', { connection: connection(), prefix });
  const worker = new Worker(
    'latency',
    async (job) => {
      starts.start(job.data.seq);
      return null;
    },
    { connection: connection(), prefix, concurrency: o.concurrency },
  );
  await worker.waitUntilReady();
  // A warm-up: the first job proves the path before anything is timed.
  await queue.add('warm', { seq: -1 });
  let failed = 0;
  const cpu = process.cpuUsage();
  await paced(o.rate, o.secs, (seq, at) => {
    starts.send(seq, at);
    queue.add('latency', { seq }).catch(() => failed++);
  });
  await until(() => starts.count + failed >= total, 60_000, `${total} starts`);
  const cpu_s = cpuSince(cpu);
  await worker.close();
  await cleanUp([queue]);
  return { rate: o.rate, secs: o.secs, failed, cpu_s, ...starts.figures() };
}

run('bullmq', { noop, dag3, latency });
