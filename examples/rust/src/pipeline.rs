//! The `document-pipeline` workflow:
//! `fetch-document` → `parse-document` → `save-state` → `build-response`.

use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::db;
use crate::parse::{ParsedDocument, parse_markdown};

/// The workflow name.
pub const WORKFLOW_NAME: &str = "document-pipeline";
/// The last task, whose output is the pipeline's response.
pub const RESPONSE_TASK: &str = "build-response";

/// Input of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInput {
    /// Id of the document in the document store.
    pub document_id: String,
}

/// Output of `fetch-document`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchedDocument {
    /// The document id.
    pub document_id: String,
    /// The markdown text.
    pub content: String,
}

/// Output of `save-state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedState {
    /// The document id (the row's primary key).
    pub document_id: String,
    /// When the row was written.
    pub saved_at: DateTime<Utc>,
}

/// Output of `build-response`: what the caller of the pipeline gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineResponse {
    /// The document id.
    pub document_id: String,
    /// The document title (first `# ` heading), if any.
    pub title: Option<String>,
    /// The word count.
    pub word_count: u64,
    /// When the parsed document was saved.
    pub saved_at: DateTime<Utc>,
}

/// What the tasks need from the outside world.
#[derive(Clone)]
pub struct Deps {
    /// HTTP client for the document store.
    pub http: reqwest::Client,
    /// Base URL of the document store, e.g. `http://127.0.0.1:4000`.
    pub docstore_url: String,
    /// The Postgres pool holding the `documents` table.
    pub pool: PgPool,
}

/// Builds the workflow with its four tasks.
pub fn workflow(deps: Deps) -> Workflow<PipelineInput> {
    let mut wf = Workflow::new(WORKFLOW_NAME).description("Fetch, parse and save a document");

    let fetch = wf.add_task(
        TaskDef::new("fetch-document", {
            let deps = deps.clone();
            move |input: PipelineInput, _ctx: Context| {
                fetch_document(deps.clone(), input.document_id)
            }
        })
        .retries(3)
        .backoff_factor(2.0)
        .backoff_max_seconds(10)
        .execution_timeout(Duration::from_secs(30)),
    );

    let parse = wf.add_task(
        TaskDef::new("parse-document", {
            let fetch = fetch.clone();
            move |_input: PipelineInput, ctx: Context| {
                let fetched = ctx.parent_output(&fetch);
                async move { Ok::<_, TaskError>(parse_markdown(&fetched?.content)) }
            }
        })
        .parent(&fetch),
    );

    let save = wf.add_task(
        TaskDef::new("save-state", {
            let (parse, pool) = (parse.clone(), deps.pool);
            move |input: PipelineInput, ctx: Context| {
                let parsed = ctx.parent_output(&parse).map_err(TaskError::from);
                save_state(pool.clone(), input.document_id, parsed)
            }
        })
        .retries(3)
        .parent(&parse),
    );

    wf.add_task(
        TaskDef::new(RESPONSE_TASK, {
            let save = save.clone();
            move |input: PipelineInput, ctx: Context| {
                // `parse-document` is a grandparent: the engine passes all ancestors' outputs.
                let response = ctx.parent_output(&save).and_then(|saved| {
                    let parsed = ctx.parent_output(&parse)?;
                    Ok(PipelineResponse {
                        document_id: input.document_id,
                        title: parsed.title,
                        word_count: parsed.word_count,
                        saved_at: saved.saved_at,
                    })
                });
                async move { response.map_err(TaskError::from) }
            }
        })
        .parent(&save),
    );
    wf
}

/// GETs document `document_id` from the store: a 404 is not retryable, other failures are.
pub(crate) async fn fetch_document(
    deps: Deps,
    document_id: String,
) -> Result<FetchedDocument, TaskError> {
    let mut url = reqwest::Url::parse(&deps.docstore_url).map_err(|e| {
        TaskError::non_retryable(format!("bad docstore URL {}: {e}", deps.docstore_url))
    })?;
    url.path_segments_mut()
        .map_err(|()| TaskError::non_retryable("the docstore URL cannot have a path"))?
        .pop_if_empty()
        .extend(["docs", document_id.as_str()]);
    let response = deps.http.get(url).send().await?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(TaskError::non_retryable(format!(
            "document \"{document_id}\" does not exist"
        )));
    }
    if !status.is_success() {
        return Err(TaskError::retryable(format!(
            "document store answered {status}"
        )));
    }
    let content = response.text().await?;
    Ok(FetchedDocument {
        document_id,
        content,
    })
}

async fn save_state(
    pool: PgPool,
    document_id: String,
    parsed: Result<ParsedDocument, TaskError>,
) -> Result<SavedState, TaskError> {
    let parsed = parsed?;
    let saved_at = db::upsert_document(&pool, &document_id, &parsed).await?;
    Ok(SavedState {
        document_id,
        saved_at,
    })
}
