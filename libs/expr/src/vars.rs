//! The variables an expression sees, converted from JSON once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use cel::common::types::{CelBool, CelDouble, CelList, CelMap, CelMapKey, CelNull, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;

/// Variables that read as an empty map when not given, so that a lookup such
/// as `additional_metadata.tenant` on a run without metadata fails with a
/// "no such key" error instead of an undeclared reference.
const MAP_DEFAULTS: &[&str] = &["input", "additional_metadata", "payload", "output"];

/// Variables that read as `null` when not given.
const NULL_DEFAULTS: &[&str] = &["workflow_run_id", "event_key", "event_id"];

/// The variables an expression sees.
///
/// Values are JSON, converted once when set, with Hatchet's typing: every
/// JSON number becomes a CEL `double` (`5` binds as `5.0`), objects become
/// maps with string keys, arrays lists, and `null` stays `null`.
///
/// Variables that are not set still resolve: `input`, `additional_metadata`,
/// `payload` and `output` to an empty map, and `workflow_run_id`,
/// `event_key` and `event_id` to `null`. Any other name that is not set is
/// an undeclared reference when evaluated.
///
/// ```
/// use adze_expr::{Expr, Vars};
/// use serde_json::json;
///
/// let vars = Vars::new()
///     .input(&json!({"user_id": "u1"}))
///     .workflow_run_id("run-7");
/// let key = Expr::compile("input.user_id + '/' + workflow_run_id").unwrap();
/// assert_eq!(key.eval_string(&vars).unwrap(), "u1/run-7");
/// ```
#[derive(Default)]
pub struct Vars {
    values: BTreeMap<String, Box<dyn Val>>,
}

impl Vars {
    /// No variables set: every name reads as its default (see [`Vars`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `input`, the run's (or task's) input.
    pub fn input(self, input: &serde_json::Value) -> Self {
        self.with("input", input)
    }

    /// Sets `additional_metadata`, the run's metadata map.
    pub fn additional_metadata(self, metadata: &serde_json::Value) -> Self {
        self.with("additional_metadata", metadata)
    }

    /// Sets `workflow_run_id` to a string.
    pub fn workflow_run_id(mut self, id: impl Into<String>) -> Self {
        self.values.insert(
            "workflow_run_id".to_owned(),
            Box::new(CelString::from(id.into())),
        );
        self
    }

    /// Sets any variable, e.g. `payload`, `event_key`, `event_id` for event
    /// filters or `output` for conditions. Setting a name again replaces it.
    pub fn with(mut self, name: &str, value: &serde_json::Value) -> Self {
        self.set(name, value);
        self
    }

    /// Sets any variable in place; see [`Vars::with`].
    pub fn set(&mut self, name: &str, value: &serde_json::Value) {
        self.values.insert(name.to_owned(), json_to_val(value));
    }

    /// Whether `name` was set explicitly (defaults do not count).
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

impl Clone for Vars {
    fn clone(&self) -> Self {
        Self {
            values: self
                .values
                .iter()
                .map(|(name, value)| (name.clone(), value.clone_as_boxed()))
                .collect(),
        }
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.values.iter()).finish()
    }
}

impl VariableResolver for Vars {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if let Some(value) = self.values.get(variable) {
            return Some(CowVal::Borrowed(value.as_ref()));
        }
        if MAP_DEFAULTS.contains(&variable) {
            return Some(CowVal::owned(CelMap::from(HashMap::new())));
        }
        if NULL_DEFAULTS.contains(&variable) {
            return Some(CowVal::owned(CelNull));
        }
        None
    }
}

/// JSON to a CEL value; every number becomes a double.
fn json_to_val(json: &serde_json::Value) -> Box<dyn Val> {
    use serde_json::Value as J;
    match json {
        J::Null => Box::new(CelNull),
        J::Bool(b) => Box::new(CelBool::from(*b)),
        // Without serde_json's arbitrary_precision feature every number has
        // an f64 form; a u64/i64 beyond 2^53 rounds, as it does in Hatchet.
        J::Number(n) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        J::String(s) => Box::new(CelString::from(s.clone())),
        J::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        J::Object(fields) => Box::new(CelMap::from(
            fields
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.clone()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}
