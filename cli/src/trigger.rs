//! `adze trigger`: a named trigger of `adze.yaml` (its workflow, input and metadata), or
//! a workflow by name with `--input`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use adze_sdk::{SdkError, TriggerOptions};
use serde_json::{Map, Value, json};

use crate::conn::Conn;
use crate::devfile;

#[derive(clap::Args)]
pub struct TriggerArgs {
    /// A trigger of adze.yaml, else a workflow name. Without it: the file's triggers.
    name: Option<String>,
    /// Input JSON (replaces the trigger's input; default `{}`).
    #[arg(long)]
    input: Option<String>,
    /// Additional metadata JSON, an object (replaces the trigger's metadata).
    #[arg(long)]
    metadata: Option<String>,
    /// Wait for the run to finish and print its outputs.
    #[arg(long)]
    wait: bool,
    /// Print one line of JSON and nothing on stderr (no progress spinner).
    #[arg(long)]
    json: bool,
    /// The adze.yaml to read (default: looked up from the current directory upwards).
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

/// What to trigger, once the file and the flags are read.
struct Plan {
    workflow: String,
    input: Value,
    metadata: Option<Value>,
    namespace: Option<String>,
}

pub async fn trigger(args: TriggerArgs) -> anyhow::Result<()> {
    let found = dev_file(args.file.as_ref())?;
    let Some(name) = &args.name else {
        return list(found.as_ref());
    };
    if let Some((found, t)) = found.as_ref().and_then(|f| Some((f, f.trigger(name)?)))
        && let Some(command) = &t.command
    {
        return run_command(&args, name, command, found).await;
    }
    let plan = plan(&args, name, found.as_ref())?;
    let target = args.conn.target()?;
    let address = target.address()?;
    let client = target.client(plan.namespace.as_deref())?;
    let options = TriggerOptions {
        additional_metadata: plan.metadata,
        ..Default::default()
    };
    let handle = client
        .run_no_wait_with(plan.workflow.as_str(), plan.input, options)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot trigger {:?} at {address} ({}): {e}",
                plan.workflow,
                target.origin
            )
        })?;
    let run_id = handle.run_id().to_string();
    if !args.wait {
        println!("{}", json!({ "run_id": run_id, "workflow": plan.workflow }));
        return Ok(());
    }
    let started = Instant::now();
    let spinner = (!args.json && std::io::stderr().is_terminal()).then(|| spinner(&run_id));
    let result = handle.outputs().await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let (status, body) = match result {
        Ok(outputs) => ("succeeded", json!({ "outputs": outputs })),
        Err(SdkError::RunFailed { errors, .. }) => ("failed", json!({ "errors": errors })),
        Err(e) => anyhow::bail!("waiting for run {run_id}: {e}"),
    };
    let mut out = json!({ "run_id": run_id, "workflow": plan.workflow, "status": status });
    if let (Value::Object(out), Value::Object(body)) = (&mut out, body) {
        out.extend(body);
    }
    if args.json {
        println!("{out}");
    } else {
        eprintln!("run {run_id} {status} after {:.1?}", started.elapsed());
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if status != "succeeded" {
        anyhow::bail!("run {run_id} did not succeed");
    }
    Ok(())
}

/// The `--file` given, else the first adze.yaml from here upwards, if any.
fn dev_file(file: Option<&PathBuf>) -> anyhow::Result<Option<devfile::Found>> {
    let cwd = std::env::current_dir()?;
    match devfile::find(file.map(PathBuf::as_path), &cwd) {
        Ok(found) => Ok(Some(found)),
        Err(devfile::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn plan(args: &TriggerArgs, name: &str, found: Option<&devfile::Found>) -> anyhow::Result<Plan> {
    let input = args
        .input
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--input is not valid JSON: {e}"))?;
    let metadata = args
        .metadata
        .as_deref()
        .map(serde_json::from_str::<Map<String, Value>>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--metadata is not a JSON object: {e}"))?;
    let namespace = found.and_then(|f| f.file.namespace.clone());
    match found
        .and_then(|f| f.trigger(name))
        .filter(|t| t.workflow.is_some())
    {
        Some(t) => Ok(Plan {
            workflow: t.workflow.clone().unwrap_or_default(),
            input: input.unwrap_or_else(|| t.input.clone()),
            metadata: metadata.or_else(|| t.metadata.clone()).map(Value::Object),
            namespace,
        }),
        None => {
            if let Some(f) = found
                && !args.json
                && !f.file.workflows.iter().any(|w| w.name == name)
            {
                eprintln!(
                    "{name:?} is no trigger of {}: triggering the workflow {name:?}",
                    f.path.display()
                );
            }
            Ok(Plan {
                workflow: name.to_owned(),
                input: input.unwrap_or_else(|| json!({})),
                metadata: metadata.map(Value::Object),
                namespace,
            })
        }
    }
}

/// `adze trigger` without a name: the triggers of the file.
fn list(found: Option<&devfile::Found>) -> anyhow::Result<()> {
    let Some(found) = found else {
        anyhow::bail!(
            "name a workflow (`adze trigger <workflow> --input '{{...}}'`), or a trigger of an \
             {} (none found here or above)",
            devfile::FILE_NAME
        );
    };
    if found.file.triggers.is_empty() {
        eprintln!("{} has no triggers", found.path.display());
    }
    for (name, t) in found.file.triggers.iter() {
        let about = t.description.as_deref().unwrap_or("");
        let what = match (&t.workflow, &t.command) {
            (Some(w), _) => w.clone(),
            (None, Some(c)) => format!("$ {c}"),
            (None, None) => String::new(),
        };
        println!("{name}\t{what}\t{about}");
    }
    Ok(())
}

/// A `command` trigger: `sh -c <command>` in the file's directory with the profile's
/// environment for the official SDKs, as `hatchet trigger` runs one; its exit status
/// is adze's.
async fn run_command(
    args: &TriggerArgs,
    name: &str,
    command: &str,
    found: &devfile::Found,
) -> anyhow::Result<()> {
    if args.input.is_some() || args.metadata.is_some() || args.wait {
        anyhow::bail!(
            "{name:?} is a command trigger (`{command}`): --input, --metadata and --wait \
             belong to workflow triggers"
        );
    }
    let target = args.conn.target()?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(found.root());
    cmd.envs(target.sdk_env()?);
    if let Some(ns) = &found.file.namespace {
        cmd.env("HATCHET_CLIENT_NAMESPACE", ns);
    }
    if !args.json {
        eprintln!("adze: running trigger {name:?}: {command}");
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run `sh -c {command:?}`: {e}"))?;
    if !status.success() {
        anyhow::bail!("trigger {name:?}: `{command}` ended with {status}");
    }
    Ok(())
}

fn spinner(run_id: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("waiting for run {run_id}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
