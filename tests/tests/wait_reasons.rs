//! Why a queued task waits, as `adze runs get`, GetRunDetails and the REST API read it:
//! a task whose action no worker serves says so, rather than waiting for a slot.

use adze_core::WaitReason;
use adze_core::backoff::RetryPolicy;
use adze_tests::{TestEnv, one_task_workflow};

async fn reason(env: &TestEnv, run: uuid::Uuid) -> Option<String> {
    let view = adze_store::runs::get_run(&env.pool, env.tenant_id, run)
        .await
        .expect("read")
        .expect("the run");
    view.tasks[0].wait_reason.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_worker_serves_says_so_until_one_registers() {
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "lonely",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    let run = env.create_runs("lonely", 1).await[0];
    let no_worker = Some(WaitReason::NoWorker.to_string());
    assert_eq!(reason(&env, run).await, no_worker);
    // A worker for another action changes nothing.
    env.active_worker(&["other:t"], 1).await;
    assert_eq!(reason(&env, run).await, no_worker);
    // One for its action: it waits for that worker's slot.
    env.active_worker(&["lonely:t"], 1).await;
    assert_eq!(reason(&env, run).await, Some(WaitReason::Slot.to_string()));
    env.stop().await;
}
