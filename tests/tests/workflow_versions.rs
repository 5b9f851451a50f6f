//! The latest version of a wide workflow is read whole: every task in the order
//! declared, each with what only the stored definition holds (here, whether it is
//! durable), however far from the first row it is. The definition comes with the first
//! row only.

use adze_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_workflows_tasks_keep_their_own_entries() {
    let env = TestEnv::start_roles(&[]).await;
    let mut spec = adze_tests::one_task_workflow("wide", "t0", Default::default(), None, None);
    for i in 1..40 {
        let mut task = spec.tasks[0].clone();
        task.readable_id = format!("t{i}");
        task.action_id = format!("wide:t{i}");
        task.durable = i == 25 || i == 39;
        spec.tasks.push(task);
    }
    env.register(&spec).await;
    let version = adze_store::workflows::latest_version(&env.pool, env.tenant_id, "wide")
        .await
        .expect("read")
        .expect("registered");
    let names: Vec<String> = version
        .tasks
        .iter()
        .map(|t| t.readable_id.clone())
        .collect();
    let declared: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    assert_eq!(names, declared);
    let durable: Vec<&str> = version
        .tasks
        .iter()
        .filter(|t| t.durable)
        .map(|t| t.readable_id.as_str())
        .collect();
    assert_eq!(durable, ["t25", "t39"]);
    env.stop().await;
}
