/**
 * Runs the document pipeline once and prints build-response's output.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none npx tsx trigger.ts [doc-1]
 *
 * A worker (`worker.ts` or examples/python/worker.py) must be running. Exits 1 if the run
 * failed.
 */
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
  const documentId = process.argv[2] ?? 'doc-1';
  try {
    const outputs = await documentPipeline.run({ documentId });
    console.log(JSON.stringify(outputs['build-response'], null, 2));
    process.exit(0);
  } catch (e) {
    console.error(`document-pipeline failed for ${documentId}:\n${describe(e)}`);
    process.exit(1);
  }
}

if (require.main === module) {
  void main();
}
