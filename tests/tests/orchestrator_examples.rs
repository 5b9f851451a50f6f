//! The seed's smart orchestrator as the Python and TypeScript examples write it
//! (examples/python/orchestrator.py, examples/typescript/orchestrator.ts), run as a user
//! runs them against the real fleet: the example's worker, then its trigger with
//! `--orchestrator doc-1`. The trigger succeeds and prints the orchestrator's answer for
//! the built-in doc-1 (3 pages, 68 words); one `parse-page` child run per page exists and
//! succeeded, and the totals are saved in Postgres.
//!
//! The examples need their own dependencies beside the pinned SDKs: psycopg for Python
//! (`pip install -r examples/python/requirements.txt` into the `ADZE_TEST_PYTHON`
//! interpreter's environment) and pg for TypeScript (`npm ci` in examples/typescript).

use std::path::{Path, PathBuf};
use std::time::Duration;

use adze_tests::TestEnv;
use adze_tests::process::{Proc, python};
use serde_json::{Value, json};
use sqlx::Row;

/// What the orchestrator answers for doc-1 of the examples' document store: its pages
/// (one per heading) and its words (tokens with a letter or a digit).
fn doc_1_answer() -> Value {
    json!({ "status": "success", "parsedPages": 3, "words": 68 })
}

/// Runs an example's trigger to completion (at most 2 minutes) and returns what it
/// printed; panics, with its stderr, unless it exits 0.
async fn trigger(
    name: &str,
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(String, String)],
) -> String {
    let mut p = Proc::spawn(name, program, args, dir, env);
    let mut stdout = String::new();
    let ran = tokio::time::timeout(Duration::from_secs(120), async {
        if let Some(mut s) = p.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            let _ = s.read_to_string(&mut stdout).await;
        }
        p.child.wait().await.ok()
    })
    .await;
    let stderr = std::fs::read_to_string(p.log()).unwrap_or_default();
    let Ok(status) = ran else {
        p.kill_group().await;
        panic!("the trigger timed out; stderr:\n{stderr}");
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "the trigger failed ({status:?}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// The JSON object a trigger printed (pretty-printed, from a line `{` to a line `}`),
/// whatever else the SDK printed around it.
fn printed_answer(printed: &str) -> Option<Value> {
    let lines: Vec<&str> = printed.lines().collect();
    let start = lines.iter().position(|l| *l == "{")?;
    let end = start + lines[start..].iter().position(|l| *l == "}")?;
    serde_json::from_str(&lines[start..=end].join("\n")).ok()
}

/// Starts the example worker `program worker_args` in `dir`, triggers the orchestrator
/// for doc-1 with `trigger_args`, and checks its answer, its children and the saved
/// totals. `language` names the processes' logs.
async fn run_example(
    language: &str,
    program: &Path,
    worker_args: &[&str],
    trigger_args: &[&str],
    dir: &Path,
) {
    let env = TestEnv::start().await;
    let vars = env.child_env();
    // Its output goes to its log: nobody reads a pipe that could fill up.
    let mut worker = Proc::spawn_logged(
        &format!("{language}-orchestrator-worker"),
        program,
        worker_args,
        dir,
        &vars,
    );
    for workflow in ["document-orchestrator", "parse-page"] {
        env.wait_workflow(workflow).await;
    }

    let printed = trigger(
        &format!("{language}-orchestrator-trigger"),
        program,
        trigger_args,
        dir,
        &vars,
    )
    .await;
    let answer = printed_answer(&printed).unwrap_or_else(|| {
        panic!(
            "the trigger printed no JSON answer: {printed}\nworker log: {}",
            worker.log().display()
        )
    });
    assert_eq!(answer, doc_1_answer());

    let runs = sqlx::query(
        "SELECT r.id, r.status,
                (SELECT count(*) FROM run_parents p JOIN runs c
                   ON c.tenant_id = p.tenant_id AND c.id = p.run_id
                 WHERE p.parent_run_id = r.id AND c.workflow_name = 'parse-page') AS children,
                (SELECT count(*) FROM run_parents p JOIN runs c
                   ON c.tenant_id = p.tenant_id AND c.id = p.run_id
                 WHERE p.parent_run_id = r.id AND c.workflow_name = 'parse-page'
                   AND c.status = 'succeeded') AS parsed
         FROM runs r WHERE r.workflow_name = 'document-orchestrator'",
    )
    .fetch_all(&env.pool)
    .await
    .expect("runs");
    assert_eq!(runs.len(), 1, "one orchestrator run");
    let run = &runs[0];
    assert_eq!(run.get::<String, _>("status"), "succeeded");
    assert_eq!(
        (run.get::<i64, _>("children"), run.get::<i64, _>("parsed")),
        (3, 3),
        "one parse-page child run per page, each succeeded"
    );
    let saved = sqlx::query("SELECT pages, words FROM orchestrated_documents WHERE id = 'doc-1'")
        .fetch_one(&env.pool)
        .await
        .expect("the saved totals");
    assert_eq!(
        (saved.get::<i32, _>("pages"), saved.get::<i32, _>("words")),
        (3, 68)
    );

    worker.terminate(Duration::from_secs(10)).await;
    env.stop().await;
}

fn examples(language: &str) -> PathBuf {
    adze_tests::repo_root().join("examples").join(language)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_orchestrator_example_parses_each_page_in_a_child_run() {
    let python = python();
    let dir = examples("python");
    let has_deps = std::process::Command::new(&python)
        .args(["-c", "import psycopg, hatchet_sdk"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_deps,
        "{} lacks the example's dependencies: run `{} -m pip install -r {}`",
        python.display(),
        python.display(),
        dir.join("requirements.txt").display()
    );
    run_example(
        "python",
        &python,
        &["worker.py"],
        &["trigger.py", "--orchestrator", "doc-1"],
        &dir,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_orchestrator_example_parses_each_page_in_a_child_run() {
    let dir = examples("typescript");
    let tsx = dir.join("node_modules/.bin/tsx");
    assert!(
        tsx.exists() && dir.join("node_modules/pg").exists(),
        "{} lacks the example's dependencies: run `npm ci` there",
        dir.display()
    );
    run_example(
        "typescript",
        &tsx,
        &["worker.ts"],
        &["trigger.ts", "--orchestrator", "doc-1"],
        &dir,
    )
    .await;
}
