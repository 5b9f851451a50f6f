use super::*;
use proptest::prelude::*;

fn spec(edges: &[(&str, &[&str])]) -> WorkflowSpec {
    WorkflowSpec {
        name: "wf".into(),
        tasks: edges
            .iter()
            .map(|(n, ps)| TaskSpec {
                readable_id: n.to_string(),
                action_id: format!("wf:{n}"),
                parents: ps.iter().map(|p| p.to_string()).collect(),
                retry: RetryPolicy::default(),
                execution_timeout_ms: None,
                schedule_timeout_ms: None,
                concurrency: Vec::new(),
                rate_limits: Vec::new(),
                worker_labels: Vec::new(),
                conditions: None,
                durable: false,
            })
            .collect(),
        on_failure: None,
        concurrency: Vec::new(),
        default_priority: None,
        sticky: None,
        ..Default::default()
    }
}

#[test]
fn diamond_is_valid_with_transitive_ancestors() {
    let s = spec(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
    assert_eq!(s.validate(), Ok(()));
    let anc = s.ancestors();
    assert_eq!(
        anc["d"],
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    );
    assert!(anc["a"].is_empty());
}

#[test]
fn cycle_is_named() {
    let s = spec(&[("parse", &["save"]), ("save", &["parse"]), ("x", &[])]);
    let err = s.validate().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DagError::Cycle { .. }), "{msg}");
    assert!(msg.contains("parse") && msg.contains("save"), "{msg}");
}

#[test]
fn self_loop_is_a_cycle() {
    let s = spec(&[("a", &["a"])]);
    assert_eq!(
        s.validate(),
        Err(DagError::Cycle {
            workflow: "wf".into(),
            path: vec!["a".into(), "a".into()]
        })
    );
}

#[test]
fn unknown_parent_and_duplicates() {
    let s = spec(&[("a", &["ghost"])]);
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "workflow \"wf\": task \"a\" has unknown parent \"ghost\""
    );
    let s = spec(&[("a", &[]), ("a", &[])]);
    assert!(matches!(s.validate(), Err(DagError::DuplicateTask { .. })));
    assert!(matches!(spec(&[]).validate(), Err(DagError::NoTasks(_))));
}

proptest! {
    // Edges only from higher to lower index can never form a cycle.
    #[test]
    fn forward_edges_always_valid(n in 1usize..40, seed in any::<u64>()) {
        let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let mut x = seed;
        let tasks = (0..n).map(|i| {
            let mut parents = Vec::new();
            for earlier in &names[..i] {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if x >> 61 == 0 { parents.push(earlier.clone()); }
            }
            TaskSpec { readable_id: names[i].clone(), action_id: String::new(), parents,
                retry: RetryPolicy::default(), execution_timeout_ms: None, schedule_timeout_ms: None, concurrency: Vec::new(), rate_limits: Vec::new(), worker_labels: Vec::new(), conditions: None, durable: false }
        }).collect();
        let s = WorkflowSpec { name: "p".into(), tasks, on_failure: None, concurrency: Vec::new(), default_priority: None, sticky: None, ..Default::default() };
        prop_assert_eq!(s.validate(), Ok(()));
    }

    // Adding a back edge to a chain always yields a cycle error.
    #[test]
    fn back_edge_in_chain_is_cycle(n in 2usize..30, k in 0usize..30) {
        let k = k % n;
        let mut tasks: Vec<TaskSpec> = (0..n).map(|i| TaskSpec {
            readable_id: format!("t{i}"), action_id: String::new(),
            parents: if i == 0 { vec![] } else { vec![format!("t{}", i - 1)] },
            retry: RetryPolicy::default(), execution_timeout_ms: None, schedule_timeout_ms: None, concurrency: Vec::new(), rate_limits: Vec::new(), worker_labels: Vec::new(),
        conditions: None,
        durable: false,
        }).collect();
        tasks[k].parents.push(format!("t{}", n - 1));
        let s = WorkflowSpec { name: "p".into(), tasks, on_failure: None, concurrency: Vec::new(), default_priority: None, sticky: None, ..Default::default() };
        prop_assert!(matches!(s.validate(), Err(DagError::Cycle { .. })), "expected cycle");
    }
}

#[test]
fn an_on_failure_task_with_parents_is_refused_by_name() {
    let mut s = spec(&[("a", &[])]);
    let mut handler = s.tasks[0].clone();
    handler.readable_id = "cleanup".into();
    handler.parents = vec!["a".into()];
    s.on_failure = Some(handler.clone());
    let err = s.validate().unwrap_err();
    assert!(
        err.to_string()
            .contains("\"cleanup\" must not have parents"),
        "{err}"
    );
    handler.parents.clear();
    handler.readable_id = "a".into();
    s.on_failure = Some(handler);
    assert!(matches!(s.validate(), Err(DagError::DuplicateTask { .. })));
}
