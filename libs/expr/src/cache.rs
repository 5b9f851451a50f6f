//! Expressions kept as text (a task's conditions) compiled once per process.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Expr, Vars};

/// Most sources kept; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// Compiled expressions by source, checked against one set of variables. A source
/// that does not compile is remembered as such.
pub struct Cache {
    allowed: &'static [&'static str],
    exprs: Mutex<HashMap<String, Option<Expr>>>,
}

impl Cache {
    /// A cache of expressions over `allowed` (e.g. [`crate::CONDITION_VARIABLES`]).
    pub fn new(allowed: &'static [&'static str]) -> Self {
        Self {
            allowed,
            exprs: Mutex::new(HashMap::new()),
        }
    }

    /// `source` compiled, or `None` when it does not compile.
    pub fn get(&self, source: &str) -> Option<Expr> {
        let mut exprs = self.exprs.lock().unwrap_or_else(|e| e.into_inner());
        if exprs.len() > MAX_ENTRIES && !exprs.contains_key(source) {
            exprs.clear();
        }
        exprs
            .entry(source.to_string())
            .or_insert_with(|| Expr::compile_with(source, self.allowed).ok())
            .clone()
    }

    /// Whether `source` holds for `vars`: an empty one does; one that does not
    /// compile, does not evaluate, or is not a bool does not.
    pub fn holds(&self, source: &str, vars: &Vars) -> bool {
        if source.trim().is_empty() {
            return true;
        }
        self.get(source)
            .is_some_and(|e| e.eval_bool(vars).unwrap_or(false))
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("allowed", &self.allowed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn holds_only_for_true_and_empty() {
        let cache = Cache::new(crate::CONDITION_VARIABLES);
        let vars = Vars::new().input(&json!({"n": 2}));
        assert!(cache.holds("input.n > 1.0", &vars));
        assert!(!cache.holds("input.n > 5.0", &vars));
        assert!(cache.holds("  ", &vars));
        assert!(!cache.holds("input.n >", &vars), "does not compile");
        assert!(!cache.holds("input.n", &vars), "not a bool");
        assert!(!cache.holds("nope.x", &vars), "not an allowed variable");
        assert!(cache.get("input.n >").is_none());
    }
}
