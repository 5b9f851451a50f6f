/**
 * Runs the document pipeline (or the smart orchestrator) once and prints its answer.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx trigger.ts [doc-1]
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
 *     npx tsx trigger.ts --orchestrator [doc-1]
 *
 * The first prints build-response's output, the second smart-orchestrator's. A worker
 * (`worker.ts` or examples/python/worker.py) must be running. Exits 1 if the run failed.
 */
import { documentOrchestrator, ORCHESTRATOR_TASK } from './orchestrator';
import { documentPipeline } from './workflow';

/** A failed run rejects with the failed tasks' error strings; TS workers send JSON. */
function describe(error: unknown): string {
  const errors = Array.isArray(error) ? error : [error];
  return errors
    .map((e) => {
      if (typeof e !== 'string') {
        return e instanceof Error ? e.message : String(e);
      }
      try {
        const parsed = JSON.parse(e) as { message?: string };
        return parsed.message ?? e;
      } catch {
        return e.split('\n')[0];
      }
    })
    .map((line) => `  ${line}`)
    .join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const orchestrate = args.includes('--orchestrator');
  const documentId = args.find((a) => a !== '--orchestrator') ?? 'doc-1';
  const name = orchestrate ? documentOrchestrator.name : documentPipeline.name;
  try {
    const answer = orchestrate
      ? (await documentOrchestrator.run({ documentId }))[ORCHESTRATOR_TASK]
      : (await documentPipeline.run({ documentId }))['build-response'];
    console.log(JSON.stringify(answer, null, 2));
    process.exit(0);
  } catch (e) {
    console.error(`${name} failed for ${documentId}:\n${describe(e)}`);
    process.exit(1);
  }
}

if (require.main === module) {
  void main();
}
