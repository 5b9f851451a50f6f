/**
 * Runs the document pipeline's and the smart orchestrator's tasks with the unmodified
 * Hatchet TypeScript SDK.
 *
 *     HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
 *     ADZE_DATABASE_URL=postgres://... npx tsx worker.ts
 *
 * Creates the `documents` and `orchestrated_documents` tables if needed, serves the built-in
 * documents on 127.0.0.1 unless ADZE_DOCSTORE_URL points at another store, and runs until Ctrl-C / SIGTERM, on
 * which the SDK pauses the worker on the engine and lets running tasks finish.
 */
import { documentOrchestrator, ensureOrchestratorSchema, parsePage } from './orchestrator';
import { documentPipeline, ensureSchema, hatchet, startDocStore } from './workflow';

async function main(): Promise<void> {
  try {
    await ensureSchema();
    await ensureOrchestratorSchema();
  } catch (e) {
    console.error(`cannot prepare the document tables: ${(e as Error).message}`);
    process.exit(1);
  }

  if (!process.env.ADZE_DOCSTORE_URL) {
    const store = await startDocStore();
    process.env.ADZE_DOCSTORE_URL = store.url;
    console.error(`document store: serving doc-1, doc-2, doc-3 at ${store.url}`);
  }

  const worker = await hatchet.worker('document-pipeline-worker-ts', {
    workflows: [documentPipeline, parsePage, documentOrchestrator],
    slots: 4,
    // The orchestrators run on durable slots, apart from the 4 slots of the other tasks.
    durableSlots: 4,
  });
  await worker.start();
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
