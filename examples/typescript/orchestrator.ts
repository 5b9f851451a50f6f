/**
 * The seed's smart orchestrator (strategy 2, durable tasks), for the unmodified Hatchet
 * TypeScript SDK.
 *
 *     document-orchestrator / smart-orchestrator (durable, input {documentId})
 *         fetch the document -> cut it into pages -> one parse-page run per page
 *         -> wait for them all -> save the totals -> {status, parsedPages, words}
 *
 * How many pages a document has is known only once it is fetched, so the children are
 * spawned at runtime, all at once (`ctx.spawnChildren`). The orchestrator's spawns and waits
 * are kept in its event log on the engine: while it waits for the pages its worker may evict
 * it, and when it runs again it gets the same page runs back instead of spawning new ones.
 *
 * A page starts at every heading outside a code fence and runs to the next one (text before
 * the first heading is a page too, unless blank). `parse-page` counts the words of one page
 * with workflow.ts's `parseText`, so the pages' words add up to the document's. The totals
 * are upserted into `orchestrated_documents` (`ADZE_DATABASE_URL`): saving twice, as a retry
 * does, leaves one row. `worker.ts` serves these workflows; `trigger.ts --orchestrator` runs
 * one. examples/python/orchestrator.py is the same for the Python SDK.
 */
import { DocumentInput, HEADING, db, fetchContent, hatchet, parseText } from './workflow';

export const WORKFLOW_NAME = 'document-orchestrator';
export const ORCHESTRATOR_TASK = 'smart-orchestrator';
export const PAGE_WORKFLOW = 'parse-page';

// The same statement is in examples/rust/src/db.rs and examples/python/orchestrator.py.
const CREATE_ORCHESTRATED_TABLE = `
CREATE TABLE IF NOT EXISTS orchestrated_documents (
    id       text PRIMARY KEY,
    pages    int NOT NULL,
    words    int NOT NULL,
    saved_at timestamptz NOT NULL
)`;

const UPSERT_ORCHESTRATED = `
INSERT INTO orchestrated_documents (id, pages, words, saved_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (id) DO UPDATE
    SET pages = EXCLUDED.pages,
        words = EXCLUDED.words,
        saved_at = EXCLUDED.saved_at`;

export type PageInput = { documentId: string; page: number; text: string };
export type ParsedPage = { page: number; title: string; words: number };
export type OrchestratorResult = { status: 'success'; parsedPages: number; words: number };

/** What `documentOrchestrator.run(...)` resolves to. */
export type OrchestratorOutput = { 'smart-orchestrator': OrchestratorResult };

export async function ensureOrchestratorSchema(): Promise<void> {
  await db().query(CREATE_ORCHESTRATED_TABLE);
}

const FENCES = ['```', '~~~'];

/** Pages of markdown text: a new one at every heading outside a code fence. */
export function splitPages(content: string): string[] {
  const pages: string[] = [];
  let page = '';
  let fence: string | undefined;
  for (const line of content.match(/[^\n]*\n|[^\n]+$/g) ?? []) {
    const trimmed = line.trim();
    const marker = FENCES.find((m) => trimmed.startsWith(m));
    if (marker !== undefined) {
      if (fence === undefined) {
        fence = marker;
      } else if (fence === marker) {
        fence = undefined;
      }
    } else if (fence === undefined && HEADING.test(trimmed) && page.trim() !== '') {
      pages.push(page);
      page = '';
    }
    page += line;
  }
  if (page.trim() !== '') {
    pages.push(page);
  }
  return pages;
}

export const parsePage = hatchet.task({
  name: PAGE_WORKFLOW,
  fn: async (input: PageInput): Promise<ParsedPage> => {
    const parsed = parseText(input.documentId, input.text);
    return { page: input.page, title: parsed.title, words: parsed.wordCount };
  },
});

/** A child's result: the task's output, or `{"parse-page": output}` from older engines. */
function pageOf(output: ParsedPage | { [PAGE_WORKFLOW]: ParsedPage }): ParsedPage {
  return PAGE_WORKFLOW in output ? output[PAGE_WORKFLOW] : output;
}

export const documentOrchestrator = hatchet.workflow<DocumentInput, OrchestratorOutput>({
  name: WORKFLOW_NAME,
});

documentOrchestrator.durableTask({
  name: ORCHESTRATOR_TASK,
  retries: 1,
  executionTimeout: '2m',
  fn: async (input, ctx) => {
    // Not in the event log (the SDK's memo is private): each invocation of this task, after
    // an eviction or a retry, fetches the document again. The built-in documents never
    // change, so a replay cuts the same pages and gets the same page runs back; with a store
    // whose documents change, a replay could ask for other children than the log holds and
    // fail as non-deterministic.
    const content = await fetchContent(input.documentId, ctx.abortController.signal);
    const pages = splitPages(content);

    // All pages at once; the spawns and the waits go to the event log.
    const outputs = await ctx.spawnChildren(
      pages.map((text, page) => ({
        workflow: parsePage,
        input: { documentId: input.documentId, page, text },
      }))
    );
    const parsed = outputs.map(pageOf);
    const words = parsed.reduce((sum, p) => sum + p.words, 0);

    // An upsert: saving again on a retry is harmless.
    await db().query(UPSERT_ORCHESTRATED, [input.documentId, parsed.length, words]);
    return { status: 'success' as const, parsedPages: parsed.length, words };
  },
});
