//! `adze.yaml`, the development file: the project's workflows, named triggers
//! (`adze trigger <name>`), the worker command and the files whose changes restart it
//! (`adze worker dev`). A convenience for the command line; no worker code reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The file's name, looked up from the current directory upwards.
pub const FILE_NAME: &str = "adze.yaml";

/// Variables the profile sets for the worker; `worker.env` may not set them.
const PROFILE_VARS: [&str; 7] = [
    "HATCHET_CLIENT_TOKEN",
    "HATCHET_CLIENT_HOST_PORT",
    "HATCHET_CLIENT_TLS_STRATEGY",
    "HATCHET_CLIENT_TLS_ROOT_CA_FILE",
    "HATCHET_CLIENT_TLS_CERT_FILE",
    "HATCHET_CLIENT_TLS_KEY_FILE",
    "HATCHET_CLIENT_TLS_SERVER_NAME",
];

/// Never watched: version control, dependencies, build output, bytecode and editors'
/// scratch files change without the worker's code changing.
const ALWAYS_IGNORED: [&str; 10] = [
    "**/.git/**",
    "**/node_modules/**",
    "**/target/**",
    "**/__pycache__/**",
    "**/*.pyc",
    "**/.venv/**",
    "**/*.swp",
    "**/*.swx",
    "**/*~",
    "**/.#*",
];

/// Why `adze.yaml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no {FILE_NAME} in {start} or any directory above it")]
    NotFound { start: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A field is missing, unknown, of the wrong type or of a wrong value; `field` is its
    /// path (`triggers.greet.workflow`).
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The file's contents.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevFile {
    /// Format version: `"1"`.
    #[serde(default)]
    pub version: Option<String>,
    /// Prefix of workflow names (`HATCHET_CLIENT_NAMESPACE`), for the worker and triggers.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The project's workflows; when given, triggers must name one of them.
    #[serde(default)]
    pub workflows: Vec<WorkflowDoc>,
    /// Named triggers, run by `adze trigger <name>`: a map of name → trigger, or, as
    /// Hatchet's `hatchet.yaml` writes them, a list of triggers each with its `name`.
    #[serde(default)]
    pub triggers: Triggers,
    /// The worker `adze worker dev` runs.
    #[serde(default)]
    pub worker: Option<WorkerCommand>,
    /// Files whose changes restart the worker.
    #[serde(default)]
    pub watch: Watch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDoc {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tasks: Vec<TaskDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDoc {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A named trigger: a run of a workflow, or a shell command (Hatchet's form).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The workflow it starts a run of.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Or a shell command (`sh -c`) run in the file's directory with the profile's
    /// environment (`HATCHET_CLIENT_TOKEN`, host and port, TLS), as `hatchet trigger`
    /// runs one: it triggers whatever it triggers with the official SDKs.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The run's input (YAML or JSON); default `{}`.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Additional metadata of the run.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// A trigger of the list form: a [`Trigger`] with its name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListedTrigger {
    name: String,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "empty_object")]
    input: Value,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

/// The file's triggers by name, read from a map or from a list of named triggers.
#[derive(Debug, Clone, Default)]
pub struct Triggers(pub BTreeMap<String, Trigger>);

impl std::ops::Deref for Triggers {
    type Target = BTreeMap<String, Trigger>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Triggers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Triggers;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of name → trigger, or a list of triggers with a `name` each")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Triggers, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let t: Trigger = map.next_value()?;
                    out.insert(name, t);
                }
                Ok(Triggers(out))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Triggers, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(t) = seq.next_element::<ListedTrigger>()? {
                    let trigger = Trigger {
                        workflow: t.workflow,
                        command: t.command,
                        description: t.description,
                        input: t.input,
                        metadata: t.metadata,
                    };
                    if out.insert(t.name.clone(), trigger).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "the trigger name {:?} is listed twice",
                            t.name
                        )));
                    }
                }
                Ok(Triggers(out))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Triggers, E> {
                Ok(Triggers::default())
            }
        }
        d.deserialize_any(Either)
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerCommand {
    /// The program: a name looked up in `PATH`, or a path relative to `dir`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to the environment `adze` runs in (the profile's variables go on top).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the file's directory (default: that directory).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// How long a stopping worker gets after SIGTERM before SIGKILL.
    #[serde(default = "default_grace")]
    pub stop_grace_seconds: u64,
}

fn default_grace() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Glob patterns or paths (a directory means everything under it), relative to the
    /// file's directory.
    #[serde(default = "watch_everything")]
    pub paths: Vec<String>,
    /// Glob patterns of paths whose changes do not count.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            paths: watch_everything(),
            ignore: Vec::new(),
        }
    }
}

fn watch_everything() -> Vec<String> {
    vec!["**".into()]
}

/// A parsed and checked `adze.yaml` and where it is.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub file: DevFile,
}

impl Found {
    /// The directory holding the file: paths in it are relative to this.
    pub fn root(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn field(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Field {
            path: self.path.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The worker to run, with its program and working directory resolved.
    pub fn worker(&self) -> Result<Worker, Error> {
        let Some(w) = &self.file.worker else {
            return Err(self.field(
                "worker",
                "missing: say how to start the worker, e.g. `worker: { command: python, args: [worker.py] }`",
            ));
        };
        let dir = match &w.dir {
            Some(d) => self.root().join(d),
            None => self.root().to_owned(),
        };
        if !dir.is_dir() {
            return Err(self.field(
                "worker.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        // A relative path with a slash is relative to the worker's directory, as if it
        // were started from there.
        let program = if w.command.contains('/') {
            dir.join(&w.command)
        } else {
            PathBuf::from(&w.command)
        };
        Ok(Worker {
            program,
            args: w.args.clone(),
            env: w.env.clone(),
            dir,
            grace: std::time::Duration::from_secs(w.stop_grace_seconds),
        })
    }

    /// What to watch: each directory to watch recursively, and the matcher of paths
    /// (relative to [`Found::root`]) whose changes count.
    pub fn watch(&self) -> Result<WatchPlan, Error> {
        let watch = &self.file.watch;
        let mut include = GlobSetBuilder::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (i, pattern) in watch.paths.iter().enumerate() {
            let field = format!("watch.paths[{i}]");
            let base = literal_prefix(pattern);
            let base_abs = self.root().join(&base);
            if !base_abs.exists() {
                return Err(self.field(field, format!("{} does not exist", base_abs.display())));
            }
            // Changed paths are matched relative to the root, without `./`.
            let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
            let plain = !pattern.contains(GLOB_CHARS);
            if plain && base_abs.is_dir() {
                // A directory: everything under it.
                let under = base.join("**");
                include.add(self.glob(&field, &under.to_string_lossy())?);
            } else {
                include.add(self.glob(&field, pattern)?);
            }
            // A file is watched through its directory: editors replace files by renaming.
            let dir = if base_abs.is_dir() {
                base_abs
            } else {
                base_abs.parent().unwrap_or(self.root()).to_owned()
            };
            if !dirs.iter().any(|d| dir.starts_with(d)) {
                dirs.retain(|d| !d.starts_with(&dir));
                dirs.push(dir);
            }
        }
        let mut ignore = GlobSetBuilder::new();
        for pattern in ALWAYS_IGNORED {
            ignore.add(self.glob("watch.ignore", pattern)?);
        }
        for (i, pattern) in watch.ignore.iter().enumerate() {
            ignore.add(self.glob(&format!("watch.ignore[{i}]"), pattern)?);
        }
        let built = |set: GlobSetBuilder, field: &str| {
            set.build().map_err(|e| self.field(field, e.to_string()))
        };
        Ok(WatchPlan {
            root: self.root().to_owned(),
            dirs,
            include: built(include, "watch.paths")?,
            ignore: built(ignore, "watch.ignore")?,
        })
    }

    fn glob(&self, field: &str, pattern: &str) -> Result<Glob, Error> {
        globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| self.field(field, e.kind().to_string()))
    }

    /// The trigger named `name`, if the file has one.
    pub fn trigger(&self, name: &str) -> Option<&Trigger> {
        self.file.triggers.get(name)
    }
}

/// The worker command of `adze.yaml`, resolved.
#[derive(Debug, Clone)]
pub struct Worker {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub dir: PathBuf,
    pub grace: std::time::Duration,
}

/// Directories to watch and which changed paths count.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    pub root: PathBuf,
    pub dirs: Vec<PathBuf>,
    include: GlobSet,
    ignore: GlobSet,
}

impl WatchPlan {
    /// Whether a change of `path` (absolute, or relative to the root) restarts the worker.
    pub fn counts(&self, path: &Path) -> bool {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        self.include.is_match(relative) && !self.ignore.is_match(relative)
    }
}

const GLOB_CHARS: [char; 6] = ['*', '?', '[', ']', '{', '}'];

/// The leading components of `pattern` without glob characters: the directory (or file)
/// to watch for it.
fn literal_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    for part in pattern.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        if part.contains(GLOB_CHARS) {
            break;
        }
        prefix.push(part);
    }
    prefix
}

/// `adze.yaml` at `file` if given, else the first found from `start` upwards.
pub fn find(file: Option<&Path>, start: &Path) -> Result<Found, Error> {
    if let Some(file) = file {
        return load(file);
    }
    for dir in start.ancestors() {
        let candidate = dir.join(FILE_NAME);
        if candidate.is_file() {
            return load(&candidate);
        }
    }
    Err(Error::NotFound {
        start: start.to_owned(),
    })
}

/// Reads, parses and checks the file at `path`.
pub fn load(path: &Path) -> Result<Found, Error> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text)
}

/// Parses and checks `text` as the file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Found, Error> {
    let field_error = |field: String, message: String| Error::Field {
        path: path.to_owned(),
        field,
        message,
    };
    let file: DevFile = if text.trim().is_empty() {
        DevFile::default()
    } else {
        serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)).map_err(
            |e| {
                let field = match e.path().to_string() {
                    p if p == "." => "(top level)".to_owned(),
                    p => p,
                };
                field_error(field, e.into_inner().to_string())
            },
        )?
    };
    let found = Found {
        path: path.to_owned(),
        file,
    };
    check(&found)?;
    Ok(found)
}

fn check(found: &Found) -> Result<(), Error> {
    let file = &found.file;
    if let Some(v) = &file.version
        && v != "1"
    {
        return Err(found.field("version", format!("only \"1\" is understood, got {v:?}")));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, w) in file.workflows.iter().enumerate() {
        if w.name.trim().is_empty() {
            return Err(found.field(format!("workflows[{i}].name"), "is empty"));
        }
        if !names.insert(w.name.as_str()) {
            return Err(found.field(
                format!("workflows[{i}].name"),
                format!("{:?} is listed twice", w.name),
            ));
        }
    }
    for (name, t) in file.triggers.iter() {
        let workflow = match (&t.workflow, &t.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(found.field(
                    format!("triggers.{name}"),
                    "give either `workflow` (a run of one of the project's workflows) or \
                     `command` (a shell command run with the profile's environment)",
                ));
            }
            (None, Some(command)) => {
                if command.trim().is_empty() {
                    return Err(found.field(format!("triggers.{name}.command"), "is empty"));
                }
                if !t.input.as_object().is_some_and(Map::is_empty) || t.metadata.is_some() {
                    return Err(found.field(
                        format!("triggers.{name}"),
                        "a `command` trigger takes no `input` or `metadata` (its command \
                         sends what it sends)",
                    ));
                }
                continue;
            }
            (Some(w), None) => w,
        };
        if workflow.trim().is_empty() {
            return Err(found.field(format!("triggers.{name}.workflow"), "is empty"));
        }
        if !names.is_empty() && !names.contains(workflow.as_str()) {
            let listed: Vec<&str> = names.iter().copied().collect();
            return Err(found.field(
                format!("triggers.{name}.workflow"),
                format!(
                    "{workflow:?} is not among the file's workflows ({})",
                    listed.join(", ")
                ),
            ));
        }
    }
    if let Some(w) = &file.worker {
        if w.command.trim().is_empty() {
            return Err(found.field("worker.command", "is empty"));
        }
        if let Some(var) = w.env.keys().find(|k| PROFILE_VARS.contains(&k.as_str())) {
            return Err(found.field(
                format!("worker.env.{var}"),
                "comes from the profile (`adze profile`, or --profile / --token); remove it here",
            ));
        }
    }
    if file.watch.paths.is_empty() {
        return Err(found.field("watch.paths", "is empty: name at least one path or pattern"));
    }
    // The patterns compile and their directories exist.
    found.watch().map(|_| ())
}

#[cfg(test)]
mod tests;
