use super::*;

const EXAMPLE: &str = r#"
version: "1"
namespace: docs
workflows:
  - name: document-pipeline
    description: fetch, parse, save
    tasks:
      - name: fetch-document
triggers:
  sample:
    workflow: document-pipeline
    description: the sample document
    input: { documentId: doc-1 }
    metadata: { source: dev }
worker:
  command: ./venv/bin/python
  args: [worker.py]
  env: { LOG_LEVEL: debug }
watch:
  paths: ["**/*.py", "config"]
  ignore: ["tests/**"]
"#;

/// A project directory with `config/` and `src/`, and `text` as its adze.yaml.
fn project(text: &str) -> (PathBuf, Result<Found, Error>) {
    let dir = std::env::temp_dir().join(format!("adze-devfile-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("config")).expect("dir");
    std::fs::create_dir_all(dir.join("src/deep")).expect("dir");
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, text).expect("write");
    let found = load(&path);
    (dir, found)
}

fn field_error(text: &str) -> (String, String) {
    let (dir, found) = project(text);
    std::fs::remove_dir_all(dir).ok();
    match found {
        Err(Error::Field { field, message, .. }) => (field, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn the_example_reads_as_written() {
    let (dir, found) = project(EXAMPLE);
    let found = found.expect("valid");
    let t = found.trigger("sample").expect("trigger");
    assert_eq!(t.workflow.as_deref(), Some("document-pipeline"));
    assert_eq!(t.input, serde_json::json!({ "documentId": "doc-1" }));
    assert_eq!(t.metadata.as_ref().expect("metadata")["source"], "dev");
    let w = found.worker().expect("worker");
    assert_eq!(w.program, dir.join("./venv/bin/python"));
    assert_eq!(
        (w.args.clone(), w.dir.clone()),
        (vec!["worker.py".to_owned()], dir.clone())
    );
    assert_eq!(w.grace, std::time::Duration::from_secs(10));
    let plan = found.watch().expect("plan");
    assert_eq!(plan.dirs, vec![dir.clone()]);
    assert!(plan.counts(&dir.join("worker.py")));
    assert!(plan.counts(&dir.join("src/deep/a.py")));
    assert!(
        plan.counts(&dir.join("config/settings.toml")),
        "a directory: all under it"
    );
    assert!(!plan.counts(&dir.join("README.md")));
    assert!(
        !plan.counts(&dir.join("tests/test_a.py")),
        "ignored by the file"
    );
    assert!(
        !plan.counts(&dir.join("src/__pycache__/a.cpython-313.pyc")),
        "always ignored"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn only_named_directories_are_watched() {
    let (dir, found) = project("watch: { paths: [src/deep, 'src/**/*.py', config/] }");
    let plan = found.expect("valid").watch().expect("plan");
    assert_eq!(plan.dirs, vec![dir.join("src"), dir.join("config")]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn it_is_found_from_a_directory_below() {
    let (dir, _) = project(EXAMPLE);
    let found = find(None, &dir.join("src/deep")).expect("found above");
    assert_eq!(found.path, dir.join(FILE_NAME));
    std::fs::remove_dir_all(&dir).ok();
    let nowhere = std::env::temp_dir().join(format!("adze-none-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&nowhere).expect("dir");
    assert!(matches!(find(None, &nowhere), Err(Error::NotFound { .. })));
    std::fs::remove_dir_all(nowhere).ok();
}

#[test]
fn errors_name_the_field() {
    let (field, message) = field_error("triggers:\n  a:\n    workflow: w\n    inptu: {}\n");
    assert_eq!(field, "triggers.a.inptu");
    assert!(message.contains("unknown field `inptu`"), "{message}");

    let (field, message) = field_error("worker:\n  command: python\n  args: worker.py\n");
    assert_eq!(field, "worker.args");
    assert!(message.contains("invalid type"), "{message}");

    let (field, message) = field_error("wokrer: {}\n");
    assert_eq!(field, "wokrer");
    assert!(message.contains("expected one of `version`"), "{message}");

    let (field, _) = field_error("- a\n");
    assert_eq!(field, "(top level)");

    let (field, message) =
        field_error("workflows: [{ name: a }]\ntriggers:\n  t: { workflow: b }\n");
    assert_eq!(field, "triggers.t.workflow");
    assert!(
        message.contains("\"b\" is not among the file's workflows (a)"),
        "{message}"
    );

    let (field, _) = field_error("version: \"2\"\n");
    assert_eq!(field, "version");

    let (field, _) = field_error("worker: { command: x, env: { HATCHET_CLIENT_TOKEN: t } }\n");
    assert_eq!(field, "worker.env.HATCHET_CLIENT_TOKEN");

    let (field, message) = field_error("watch: { paths: ['src/[a'] }\n");
    assert_eq!(field, "watch.paths[0]");
    assert!(message.contains("unclosed"), "{message}");

    let (field, message) = field_error("watch: { paths: [nowhere/**] }\n");
    assert_eq!(field, "watch.paths[0]");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn a_missing_worker_says_how_to_add_one() {
    let (dir, found) = project("triggers: {}\n");
    let err = found
        .expect("valid")
        .worker()
        .expect_err("no worker")
        .to_string();
    assert!(
        err.contains("worker: missing") && err.contains("command:"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn hatchets_list_of_command_triggers_reads_too() {
    let (dir, found) = project(
        "triggers:\n  - name: simple\n    command: \"poetry run python src/run.py\"\n    \
         description: Trigger a simple workflow\n  - name: greet\n    workflow: w\n",
    );
    std::fs::remove_dir_all(dir).ok();
    let found = found.expect("the list form reads");
    let simple = found.trigger("simple").expect("simple");
    assert_eq!(
        simple.command.as_deref(),
        Some("poetry run python src/run.py")
    );
    assert_eq!(simple.workflow, None);
    assert_eq!(
        found.trigger("greet").and_then(|t| t.workflow.as_deref()),
        Some("w")
    );
}

#[test]
fn a_trigger_is_a_workflow_or_a_command_and_names_are_unique() {
    let (field, message) = field_error("triggers:\n  t: { workflow: w, command: ls }\n");
    assert_eq!(field, "triggers.t");
    assert!(message.contains("either `workflow`"), "{message}");
    let (field, _) = field_error("triggers:\n  t: { description: nothing }\n");
    assert_eq!(field, "triggers.t");
    let (field, message) = field_error("triggers:\n  t: { command: ls, input: { a: 1 } }\n");
    assert_eq!(field, "triggers.t");
    assert!(message.contains("takes no `input`"), "{message}");
    let (field, message) =
        field_error("triggers:\n  - { name: t, command: ls }\n  - { name: t, command: pwd }\n");
    assert_eq!(field, "triggers");
    assert!(message.contains("listed twice"), "{message}");
    let (field, message) = field_error("triggers:\n  - { name: t, comand: ls }\n");
    assert_eq!(field, "triggers[0].comand");
    assert!(message.contains("unknown field"), "{message}");
}
