/**
 * Runs the document pipeline's tasks with the unmodified Hatchet TypeScript SDK.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
 *     ADZE_DATABASE_URL=postgres://... npx tsx worker.ts
 *
 * Creates the `documents` table if needed, serves the built-in documents on 127.0.0.1
 * unless ADZE_DOCSTORE_URL points at another store, and runs until Ctrl-C / SIGTERM, on
 * which the SDK pauses the worker on the engine and lets running tasks finish.
 */
import { documentPipeline, ensureSchema, hatchet, startDocStore } from './workflow';

async function main(): Promise<void> {
  try {
    await ensureSchema();
  } catch (e) {
    console.error(`cannot prepare the documents table: ${(e as Error).message}`);
    process.exit(1);
  }

  if (!process.env.ADZE_DOCSTORE_URL) {
    const store = await startDocStore();
    process.env.ADZE_DOCSTORE_URL = store.url;
    console.error(`document store: serving doc-1, doc-2, doc-3 at ${store.url}`);
  }

  const worker = await hatchet.worker('document-pipeline-worker-ts', {
    workflows: [documentPipeline],
    slots: 4,
  });
  await worker.start();
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
