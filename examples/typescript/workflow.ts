/**
 * The seed's document pipeline, written against the unmodified Hatchet TypeScript SDK.
 *
 *     fetch-document -> parse-document -> save-state -> build-response
 *
 * `worker.ts` runs these tasks and `trigger.ts` runs the workflow; both import this module.
 *
 * - fetch-document GETs `${ADZE_DOCSTORE_URL}/docs/<documentId>`. A 404 is permanent
 *   (NonRetryableError); anything else that goes wrong is retried (3 retries, exponential
 *   backoff), and one attempt may take at most 30 s.
 * - parse-document extracts the title, the word count and the headings of the text.
 * - save-state upserts the parsed document into the Postgres table `documents`
 *   (`ADZE_DATABASE_URL`). The upsert makes a retried save harmless.
 * - build-response reads its grandparent's output (parse-document) and the save time.
 *
 * `startDocStore` is the small HTTP document store a worker serves when `ADZE_DOCSTORE_URL`
 * is unset. `doc-3` is flaky on purpose: its first request in each store answers 503, so its
 * fetch-document succeeds on the second attempt and shows a retry.
 *
 * examples/python/pipeline.py is the same pipeline for the Python SDK; orchestrator.ts
 * parses the same documents page by page with a durable task.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { Hatchet, NonRetryableError } from '@hatchet-dev/typescript-sdk';
import { Pool } from 'pg';

export const WORKFLOW_NAME = 'document-pipeline';

// The same statement is in examples/python/pipeline.py: both workers may share a database.
const CREATE_DOCUMENTS_TABLE = `
CREATE TABLE IF NOT EXISTS documents (
    id         text PRIMARY KEY,
    title      text,
    word_count int,
    parsed     jsonb,
    saved_at   timestamptz
)`;

const UPSERT_DOCUMENT = `
INSERT INTO documents (id, title, word_count, parsed, saved_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (id) DO UPDATE
    SET title = EXCLUDED.title,
        word_count = EXCLUDED.word_count,
        parsed = EXCLUDED.parsed,
        saved_at = EXCLUDED.saved_at
RETURNING saved_at`;

export type DocumentInput = { documentId: string };
export type FetchedDocument = { documentId: string; content: string };
export type Heading = { level: number; text: string };
export type ParsedDocument = {
  documentId: string;
  title: string;
  wordCount: number;
  headings: Heading[];
};
export type SavedState = { documentId: string; savedAt: string };
export type PipelineResponse = {
  documentId: string;
  title: string;
  wordCount: number;
  savedAt: string;
};

/** What `documentPipeline.run(...)` resolves to: every task's output by task name. */
export type PipelineOutput = {
  'fetch-document': FetchedDocument;
  'parse-document': ParsedDocument;
  'save-state': SavedState;
  'build-response': PipelineResponse;
};

export const hatchet = Hatchet.init();

export const documentPipeline = hatchet.workflow<DocumentInput, PipelineOutput>({
  name: WORKFLOW_NAME,
});

function requiredEnv(name: string, hint: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: ${hint}`);
  }
  return value;
}

export function databaseUrl(): string {
  return requiredEnv(
    'ADZE_DATABASE_URL',
    'point it at a Postgres database, e.g. postgres://postgres@127.0.0.1:5432/postgres'
  );
}

function docStoreUrl(): string {
  return requiredEnv(
    'ADZE_DOCSTORE_URL',
    'the worker starts a local document store when it is unset, so this task ran outside worker.ts'
  ).replace(/\/+$/, '');
}

let pool: Pool | undefined;

/** One pool per worker process, created on first use. */
export function db(): Pool {
  pool ??= new Pool({ connectionString: databaseUrl(), max: 4 });
  return pool;
}

export async function ensureSchema(): Promise<void> {
  await db().query(CREATE_DOCUMENTS_TABLE);
}

export async function closeDb(): Promise<void> {
  await pool?.end();
  pool = undefined;
}

const fetchDocument = documentPipeline.task({
  name: 'fetch-document',
  retries: 3,
  backoff: { factor: 2, maxSeconds: 10 },
  executionTimeout: '30s',
  fn: async (input, ctx) => {
    await ctx.logger.info(`GET ${documentUrl(input.documentId)} (attempt ${ctx.retryCount() + 1})`);
    // The signal aborts the request when the engine cancels the task or it times out.
    const content = await fetchContent(input.documentId, ctx.abortController.signal);
    return { documentId: input.documentId, content };
  },
});

function documentUrl(documentId: string): string {
  return `${docStoreUrl()}/docs/${encodeURIComponent(documentId)}`;
}

/** The text of a document. A 404 is a NonRetryableError; other failures are retried. */
export async function fetchContent(documentId: string, signal?: AbortSignal): Promise<string> {
  const url = documentUrl(documentId);
  const res = await fetch(url, { signal });
  if (res.status === 404) {
    // Retrying cannot make a missing document appear.
    throw new NonRetryableError(`document '${documentId}' does not exist (${url} answered 404)`);
  }
  if (!res.ok) {
    throw new Error(`document store answered ${res.status} for ${url}`);
  }
  const body = (await res.json()) as { content: string };
  return body.content;
}

const parseDocument = documentPipeline.task({
  name: 'parse-document',
  parents: [fetchDocument],
  fn: async (_input, ctx) => {
    const fetched = await ctx.parentOutput(fetchDocument);
    const parsed = parseText(fetched.documentId, fetched.content);
    await ctx.logger.info(
      `parsed ${parsed.documentId}: ${parsed.wordCount} words, ${parsed.headings.length} headings`
    );
    return parsed;
  },
});

const saveState = documentPipeline.task({
  name: 'save-state',
  parents: [parseDocument],
  fn: async (_input, ctx) => {
    const parsed = await ctx.parentOutput(parseDocument);
    const { rows } = await db().query<{ saved_at: Date }>(UPSERT_DOCUMENT, [
      parsed.documentId,
      parsed.title,
      parsed.wordCount,
      JSON.stringify(parsed),
    ]);
    return { documentId: parsed.documentId, savedAt: rows[0].saved_at.toISOString() };
  },
});

documentPipeline.task({
  name: 'build-response',
  parents: [saveState],
  fn: async (_input, ctx) => {
    // parse-document is a grandparent: the engine hands every ancestor's output to a task.
    const parsed = await ctx.parentOutput(parseDocument);
    const saved = await ctx.parentOutput(saveState);
    return {
      documentId: parsed.documentId,
      title: parsed.title,
      wordCount: parsed.wordCount,
      savedAt: saved.savedAt,
    };
  },
});

// --- parsing -----------------------------------------------------------------------------

export const HEADING = /^(#{1,6})\s+(.+?)\s*#*\s*$/;
const WORD_CHAR = /[\p{L}\p{N}]/u; // a letter or a digit, in any script

/**
 * Title, word count and headings of markdown-ish text.
 *
 * A heading is a line starting with 1 to 6 `#` and a space. The title is the first level-1
 * heading, else the first heading, else the first non-empty line. A word is a
 * whitespace-separated token with at least one letter or digit, so `#`, `-` and `*` markup
 * is not counted. examples/python/pipeline.py implements the same rules.
 */
export function parseText(documentId: string, content: string): ParsedDocument {
  const headings: Heading[] = [];
  let firstLine = '';
  for (const raw of content.split(/\r?\n/)) {
    const line = raw.trim();
    if (line && !firstLine) {
      firstLine = line;
    }
    const match = HEADING.exec(line);
    if (match) {
      headings.push({ level: match[1].length, text: match[2] });
    }
  }
  const levelOne = headings.find((h) => h.level === 1);
  const title = levelOne?.text ?? headings[0]?.text ?? firstLine;
  const words = content.split(/\s+/).filter((token) => WORD_CHAR.test(token));
  return { documentId, title: title || documentId, wordCount: words.length, headings };
}

// --- the local document store ------------------------------------------------------------

// The same documents are in examples/python/pipeline.py.
export const DOCUMENTS: Record<string, string> = {
  'doc-1': `# Durable Execution 101

Durable execution records every step of a job in a database, so a crash
does not lose the work that was already done.

## Why it matters

A pipeline that fetches, parses and saves a document touches several services.
If one of them fails, the run resumes from the last recorded step.

## What to remember

- Tasks are functions with a name.
- Workflows connect tasks with parents.
`,
  'doc-2': `# Retries and Backoff

Throw an error and the task is retried; throw a non-retryable error and it is not.

## Backoff

Each retry waits longer than the one before, up to a maximum.
`,
  'doc-3': `# A Flaky Document

The store answers 503 to the first request for this document, so fetching it
needs a retry.

## Lesson

Transient failures are what retries are for.
`,
};

const FLAKY_DOCUMENTS = new Set(['doc-3']);

export type DocStore = { url: string; close: () => Promise<void> };

/** A tiny HTTP server: `GET /docs/<id>` answers `{"id", "content"}` or 404. */
export async function startDocStore(host = '127.0.0.1', port = 0): Promise<DocStore> {
  const servedOnce = new Set<string>();
  const server = http.createServer((req, res) => {
    const send = (status: number, body: object) => {
      const data = JSON.stringify(body);
      res.writeHead(status, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(data),
      });
      res.end(data);
    };
    const path = new URL(req.url ?? '/', 'http://docstore').pathname;
    if (req.method !== 'GET' || !path.startsWith('/docs/')) {
      send(404, { error: `no route for ${req.method} ${path}` });
      return;
    }
    const id = decodeURIComponent(path.slice('/docs/'.length));
    const content = DOCUMENTS[id];
    if (content === undefined) {
      send(404, { error: `document '${id}' not found` });
      return;
    }
    const first = !servedOnce.has(id);
    servedOnce.add(id);
    if (first && FLAKY_DOCUMENTS.has(id)) {
      send(503, { error: `document '${id}' is flaky: try again` });
      return;
    }
    send(200, { id, content });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  // Serving documents must not keep the process alive on its own.
  server.unref();
  const address = server.address() as AddressInfo;
  return {
    url: `http://${address.address}:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
