//! The seed's "smart orchestrator" (strategy 2, durable tasks): the workflow
//! `document-orchestrator` has one durable task, `smart-orchestrator`, which fetches a
//! document, cuts it into pages ([`split_pages`]: how many is known only then), spawns
//! one `parse-page` run per page, waits for them all and saves the totals.
//!
//! The orchestrator's calls are kept in its event log on the engine. While it waits for
//! the pages, its worker may evict it; the engine then runs it again from the top, and
//! each call gets its logged answer back: the fetch its text, the spawn the same page
//! runs. Only the save runs again, and an upsert makes that harmless.

use std::time::Duration;

use adze_sdk::{ChildSpec, Context, DurableContext, DurableTaskDef, TaskDef, TaskError, Workflow};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::parse::{parse_markdown, split_pages};
use crate::pipeline::{self, Deps, FetchedDocument, PipelineInput};

/// The orchestrator's workflow.
pub const WORKFLOW_NAME: &str = "document-orchestrator";
/// Its durable task, whose output is the answer.
pub const ORCHESTRATOR_TASK: &str = "smart-orchestrator";
/// The workflow (of one task of the same name) run once per page.
pub const PAGE_WORKFLOW: &str = "parse-page";

/// Input of a `parse-page` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInput {
    /// The document the page belongs to.
    pub document_id: String,
    /// The page's place in the document, from 0.
    pub page: usize,
    /// The page's markdown.
    pub text: String,
}

/// Output of a `parse-page` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParsedPage {
    /// The page's place in the document, from 0.
    pub page: usize,
    /// The page's first heading, if it has one.
    pub title: Option<String>,
    /// The page's word count (as `parse-document` counts words).
    pub words: u64,
}

/// Output of `smart-orchestrator`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestratorOutput {
    /// `"success"`.
    pub status: String,
    /// How many pages were parsed (one `parse-page` run each).
    pub parsed_pages: usize,
    /// The words of all pages.
    pub words: u64,
}

/// The `parse-page` workflow.
pub fn page_workflow() -> Workflow<PageInput> {
    Workflow::new(PAGE_WORKFLOW)
        .description("Parse one page of a document")
        .task(TaskDef::new(
            PAGE_WORKFLOW,
            |input: PageInput, _ctx: Context| async move {
                let parsed = parse_markdown(&input.text);
                Ok::<_, TaskError>(ParsedPage {
                    page: input.page,
                    title: parsed.headings.into_iter().next(),
                    words: parsed.word_count,
                })
            },
        ))
}

/// The `document-orchestrator` workflow with its durable task.
pub fn workflow(deps: Deps) -> Workflow<PipelineInput> {
    Workflow::new(WORKFLOW_NAME)
        .description("Parse a document page by page, one child run per page")
        .durable_task(
            DurableTaskDef::new(ORCHESTRATOR_TASK, move |input: PipelineInput, ctx| {
                orchestrate(deps.clone(), input.document_id, ctx)
            })
            .retries(1)
            .execution_timeout(Duration::from_secs(120)),
        )
}

async fn orchestrate(
    deps: Deps,
    document_id: String,
    ctx: DurableContext,
) -> Result<OrchestratorOutput, TaskError> {
    // Fetched once: a replay reads the text from the log, so it sees the same pages
    // even if the store changed in between. A failed fetch logs nothing.
    let fetched: FetchedDocument = ctx
        .memo(&["fetch-document", document_id.as_str()], || {
            pipeline::fetch_document(deps.clone(), document_id.clone())
        })
        .await?;
    let pages = split_pages(&fetched.content);

    // All pages at once; a replay gets the same runs back instead of new ones.
    let children = ctx
        .spawn_many(pages.into_iter().enumerate().map(|(page, text)| {
            let input = PageInput {
                document_id: document_id.clone(),
                page,
                text,
            };
            ChildSpec::new(PAGE_WORKFLOW, input)
        }))
        .await?;
    let parsed_pages = children.len();
    let mut words = 0;
    for child in children {
        let page: ParsedPage = child.result().await?;
        words += page.words;
    }

    db::upsert_orchestrated(&deps.pool, &document_id, parsed_pages, words).await?;
    Ok(OrchestratorOutput {
        status: "success".to_owned(),
        parsed_pages,
        words,
    })
}
