//! CEL expressions with Hatchet's semantics.
//!
//! Hatchet evaluates [CEL](https://cel.dev) for concurrency keys and
//! `max_runs_expression`, rate-limit `key_expr` / `units_expr` /
//! `limit_values_expr`, idempotency keys, event filters and wait, skip and
//! cancel conditions. This crate compiles such an expression once (when a
//! workflow is registered) into an [`Expr`] and evaluates it against
//! [`Vars`] as often as needed.
//!
//! The language is the standard CEL library plus:
//! - the strings extension of cel-go (`charAt`, `indexOf`, `lastIndexOf`,
//!   `lowerAscii`, `upperAscii`, `replace`, `split`, `substring`, `trim`,
//!   `join`, `format`, `reverse` and `strings.quote`);
//! - `checksum(string)`: the SHA-256 of the string's UTF-8 bytes in
//!   lowercase hex.
//!
//! Every JSON number binds as a `double`, as in Hatchet: with `input` of
//! `{"n": 5}`, `input.n` is `5.0`, and `int(input.n)` converts it to the
//! int `5`.
//!
//! ```
//! use adze_expr::{Expr, Vars};
//! use serde_json::json;
//!
//! let key = Expr::compile("input.user + '-' + input.region").unwrap();
//! let vars = Vars::new().input(&json!({"user": "ada", "region": "eu"}));
//! assert_eq!(key.eval_string(&vars).unwrap(), "ada-eu");
//!
//! let max_runs = Expr::compile("input.n * 2.0").unwrap();
//! assert_eq!(max_runs.eval_int(&Vars::new().input(&json!({"n": 5}))).unwrap(), 10);
//! ```
#![warn(missing_docs)]

mod cache;
mod check;
pub mod conditions;
mod convert;
mod env;
mod vars;

use std::fmt;
use std::sync::Arc;

use cel::{Context, Program, Value};

pub use cache::Cache;
pub use vars::Vars;

/// Variables of the expressions a run carries: concurrency keys,
/// `max_runs_expression`, rate-limit and idempotency-key expressions.
pub const RUN_VARIABLES: &[&str] = &["input", "additional_metadata", "workflow_run_id"];

/// Variables of an event filter: [`RUN_VARIABLES`] plus the event's
/// `payload`, `event_key` and `event_id`.
pub const EVENT_FILTER_VARIABLES: &[&str] = &[
    "input",
    "additional_metadata",
    "workflow_run_id",
    "payload",
    "event_key",
    "event_id",
];

/// Variables of a wait, skip or cancel condition: [`RUN_VARIABLES`] plus the
/// parent tasks' `output`.
pub const CONDITION_VARIABLES: &[&str] =
    &["input", "additional_metadata", "workflow_run_id", "output"];

/// A CEL expression, parsed and checked once (at workflow registration).
///
/// Cheap to clone, and `Send + Sync`: one compiled expression can be
/// evaluated from many tasks at once.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    program: Arc<Program>,
}

impl Expr {
    /// Parses `source`. Names are not checked: a variable that is neither
    /// set in the [`Vars`] nor one with a default there fails at evaluation
    /// with an undeclared-reference error. Use [`Expr::compile_with`] to
    /// reject unknown variables now.
    pub fn compile(source: &str) -> Result<Expr, CompileError> {
        let program = env::env()
            .compile(source)
            .map_err(|errors| CompileError::from_parse(source, errors))?;
        Ok(Expr {
            source: Arc::from(source),
            program: Arc::new(program),
        })
    }

    /// Parses `source` and checks that every variable it refers to is in
    /// `allowed` (for instance [`RUN_VARIABLES`]).
    ///
    /// Variables bound inside the expression by a macro (`x` in
    /// `input.items.all(x, x > 0.0)`), type names (`int`, `string`, ...) and
    /// function namespaces (`strings` in `strings.quote(s)`) are not
    /// variables. Only the first name of a field path counts: `input.a.b`
    /// refers to `input`. The error points at the first unknown name.
    pub fn compile_with(source: &str, allowed: &[&str]) -> Result<Expr, CompileError> {
        let expr = Expr::compile(source)?;
        let unknown = check::unknown_variables(expr.program.expression(), allowed);
        let Some(first) = unknown.first() else {
            return Ok(expr);
        };
        let mut names: Vec<&str> = Vec::new();
        for u in &unknown {
            if !names.contains(&u.name) {
                names.push(u.name);
            }
        }
        let message = format!(
            "undeclared variable{} {} (allowed: {})",
            if names.len() > 1 { "s" } else { "" },
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", "),
            allowed.join(", "),
        );
        let position = expr
            .program
            .source_info()
            .offset_for(first.id)
            .map(|(start, _)| line_column(source, start as usize));
        Err(CompileError {
            expr: source.to_owned(),
            position,
            message,
        })
    }

    /// The expression's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression and converts the result to JSON: ints and
    /// uints become JSON integers, doubles stay doubles (`6.0`), bytes become
    /// base64, timestamps and durations strings. Values with no JSON form
    /// (NaN, optionals, ...) are an error.
    pub fn eval(&self, vars: &Vars) -> Result<serde_json::Value, EvalError> {
        let value = self.run(vars)?;
        convert::to_json(&value).map_err(|message| self.error(message))
    }

    /// Evaluates a key (concurrency, rate limit, idempotency): the result
    /// must be a string; anything else is an error naming the type it got.
    pub fn eval_string(&self, vars: &Vars) -> Result<String, EvalError> {
        match self.run(vars)? {
            Value::String(s) => Ok(s.to_string()),
            other => Err(self.wrong_type("a string", &other)),
        }
    }

    /// Evaluates a count (`max_runs`, rate-limit units and limits): an int,
    /// a uint that fits an int, or a double with no fractional part (as JSON
    /// numbers are doubles). Anything else is an error.
    pub fn eval_int(&self, vars: &Vars) -> Result<i64, EvalError> {
        match self.run(vars)? {
            Value::Int(i) => Ok(i),
            Value::UInt(u) => i64::try_from(u)
                .map_err(|_| self.error(format!("the uint {u} does not fit an int"))),
            Value::Float(f) => double_to_int(f).ok_or_else(|| {
                self.error(format!(
                    "expected an integer, got the double {f}, which is not a whole number in the int range"
                ))
            }),
            other => Err(self.wrong_type("an integer", &other)),
        }
    }

    /// Evaluates a filter or condition: the result must be a bool.
    pub fn eval_bool(&self, vars: &Vars) -> Result<bool, EvalError> {
        match self.run(vars)? {
            Value::Bool(b) => Ok(b),
            other => Err(self.wrong_type("a bool", &other)),
        }
    }

    fn run(&self, vars: &Vars) -> Result<Value, EvalError> {
        let mut context = Context::with_env(Arc::clone(env::env()));
        context.set_variable_resolver(vars);
        self.program
            .execute(&context)
            .map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, message: String) -> EvalError {
        EvalError {
            expr: self.source.to_string(),
            message,
        }
    }

    fn wrong_type(&self, wanted: &str, got: &Value) -> EvalError {
        self.error(format!(
            "expected {wanted}, got {}",
            convert::type_name(got)
        ))
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// A whole double in the int range, as an int.
fn double_to_int(f: f64) -> Option<i64> {
    // i64::MAX as f64 rounds up to 2^63, which is out of range, hence `<`.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        Some(f as i64)
    } else {
        None
    }
}

/// 1-based line and column (in characters) of byte offset `offset`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let offset = (0..=offset)
        .rev()
        .find(|&i| source.is_char_boundary(i))
        .unwrap_or(0);
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, source[line_start..offset].chars().count() + 1)
}

/// An expression that could not be compiled: a syntax error, or (with
/// [`Expr::compile_with`]) a variable outside the allowed set.
///
/// `position` is the 1-based line and column the parser reports (columns
/// count characters). It is `None` when the parser gave up without one, as
/// it does when an expression nests too deeply or has too many errors to
/// recover from; the message still says what went wrong. When the parser
/// reports several errors, the first one is kept and the message says how
/// many more there were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse CEL expression {expr:?}{}: {message}", at(.position))]
pub struct CompileError {
    /// The expression's source text.
    pub expr: String,
    /// Line and column (both 1-based) of the error, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

fn at(position: &Option<(usize, usize)>) -> String {
    match position {
        Some((line, column)) => format!(" at line {line}, column {column}"),
        None => String::new(),
    }
}

impl CompileError {
    fn from_parse(source: &str, errors: cel::ParseErrors) -> Self {
        let count = errors.errors.len();
        let Some(first) = errors.errors.into_iter().next() else {
            return CompileError {
                expr: source.to_owned(),
                position: None,
                message: "the parser failed without saying why".to_owned(),
            };
        };
        let (line, column) = first.pos;
        let position = match (usize::try_from(line), usize::try_from(column)) {
            (Ok(line), Ok(column)) if line > 0 && column > 0 => Some((line, column)),
            _ => None,
        };
        // A parser that gave up reports a placeholder message and the cause
        // as the error's source.
        let mut message = match &first.source {
            Some(cause) if position.is_none() => cause.to_string(),
            _ => first.msg.clone(),
        };
        if let Some(inner) = wrapped_message(&message) {
            message = format!("Syntax error: {inner}");
        }
        if count > 1 {
            message.push_str(&format!(
                " (and {} more error{})",
                count - 1,
                if count > 2 { "s" } else { "" }
            ));
        }
        CompileError {
            expr: source.to_owned(),
            position,
            message,
        }
    }
}

/// The parser reports some errors (the nesting limit, for one) as the debug
/// form of a wrapped error, `OtherError(ParseError { .., msg: "..", .. })`;
/// this digs out the readable `msg`.
fn wrapped_message(message: &str) -> Option<&str> {
    if !message.contains("OtherError(") {
        return None;
    }
    let start = message.find("msg: \"")? + "msg: \"".len();
    let len = message[start..].find('"')?;
    Some(&message[start..start + len])
}

/// An expression that failed while evaluating: a missing key, a type
/// mismatch, a result of the wrong type, ...
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot evaluate CEL expression {expr:?}: {message}")]
pub struct EvalError {
    /// The expression's source text.
    pub expr: String,
    /// What went wrong.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_doubles_convert() {
        assert_eq!(double_to_int(2.0), Some(2));
        assert_eq!(double_to_int(-0.0), Some(0));
        assert_eq!(double_to_int(-9_223_372_036_854_775_808.0), Some(i64::MIN));
        assert_eq!(double_to_int(9_223_372_036_854_775_808.0), None);
        assert_eq!(double_to_int(2.5), None);
        assert_eq!(double_to_int(f64::NAN), None);
        assert_eq!(double_to_int(f64::INFINITY), None);
    }

    #[test]
    fn byte_offsets_become_line_and_column() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("abc", 2), (1, 3));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        // 'ż' is two bytes, one column.
        assert_eq!(line_column("żx", 2), (1, 2));
        // Out of range or inside a character: clamped, never a panic.
        assert_eq!(line_column("żx", 1), (1, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn wrapped_parser_messages_are_unwrapped() {
        let debug = r#"Syntax error: OtherError(ParseError { source: None, pos: (96, -1), msg: "Recursion limit of 96 exceeded", expr_id: 0 })"#;
        assert_eq!(
            wrapped_message(debug),
            Some("Recursion limit of 96 exceeded")
        );
        assert_eq!(wrapped_message("Syntax error: extraneous input"), None);
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            env::sha256_hex("hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}
