//! Hatchet's uses of CEL through the public API: keys, counts, filters,
//! conditions, the strings extension, `checksum` and the error reports.

use adze_expr::{
    CONDITION_VARIABLES, CompileError, EVENT_FILTER_VARIABLES, EvalError, Expr, RUN_VARIABLES, Vars,
};
use serde_json::{Value, json};

fn compile(source: &str) -> Expr {
    Expr::compile(source).unwrap_or_else(|e| panic!("{e}"))
}

fn eval(source: &str, vars: &Vars) -> Value {
    compile(source).eval(vars).unwrap_or_else(|e| panic!("{e}"))
}

/// Evaluates `source` with no variables set.
fn eval0(source: &str) -> Value {
    eval(source, &Vars::new())
}

fn eval_err(source: &str, vars: &Vars) -> EvalError {
    match compile(source).eval(vars) {
        Ok(v) => panic!("{source} evaluated to {v}, expected an error"),
        Err(e) => e,
    }
}

fn run_vars() -> Vars {
    Vars::new()
        .input(&json!({
            "n": 5,
            "user_id": "user-42",
            "user": "ada",
            "region": "eu-west",
            "items": [1, 2, 3],
        }))
        .additional_metadata(&json!({"tenant": "acme"}))
        .workflow_run_id("8d7c0a4e-run")
}

// ---- numbers are doubles -------------------------------------------------

#[test]
fn json_numbers_bind_as_doubles() {
    let vars = run_vars();
    assert_eq!(eval("type(input.n) == double", &vars), json!(true));
    let sum = eval("input.n + 1.0", &vars);
    assert!(sum.is_f64(), "{sum} should be a double");
    assert_eq!(sum.as_f64(), Some(6.0));
    // Elements of arrays too.
    assert_eq!(eval("input.items[0] + 0.5", &vars), json!(1.5));
    // Numeric equality and ordering work across int and double ...
    assert_eq!(
        eval("input.n == 5 && input.n > 4 && input.n < 5.5", &vars),
        json!(true)
    );
}

#[test]
fn cel_has_no_mixed_int_double_arithmetic() {
    // ... but arithmetic does not: `5.0 + 1` has no overload in CEL (cel-go
    // says the same), so a literal must be written `1.0`, or the double
    // converted with `int()` first.
    let err = eval_err("input.n + 1", &run_vars());
    assert!(err.message.contains("add"), "{err}");
}

#[test]
fn int_converts_a_double() {
    let vars = run_vars();
    let five = eval("int(input.n)", &vars);
    assert!(five.is_i64(), "{five} should be an int");
    assert_eq!(five, json!(5));
    assert_eq!(eval("int(input.n) + 1", &vars), json!(6));
    assert_eq!(eval("int(input.n + 1.0)", &vars), json!(6));
    // Truncates toward zero, as CEL's int(double) does.
    assert_eq!(eval0("int(2.9)"), json!(2));
    assert_eq!(eval0("int(-2.9)"), json!(-2));
}

// ---- keys ------------------------------------------------------------------

#[test]
fn concurrency_key_from_input() {
    let key = compile("input.user_id");
    assert_eq!(key.eval_string(&run_vars()).unwrap(), "user-42");
}

#[test]
fn key_from_additional_metadata() {
    let key = compile("additional_metadata.tenant");
    assert_eq!(key.eval_string(&run_vars()).unwrap(), "acme");
}

#[test]
fn key_from_workflow_run_id() {
    let key = compile("workflow_run_id");
    assert_eq!(key.eval_string(&run_vars()).unwrap(), "8d7c0a4e-run");
}

#[test]
fn concatenated_key() {
    let key = compile(r#"input.user + "-" + input.region"#);
    assert_eq!(key.eval_string(&run_vars()).unwrap(), "ada-eu-west");
}

#[test]
fn checksum_of_hello() {
    assert_eq!(
        compile("checksum('hello')")
            .eval_string(&Vars::new())
            .unwrap(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    // On a variable, as an idempotency key would use it.
    let vars = Vars::new().input(&json!({"order": "hello"}));
    assert_eq!(
        compile("checksum(input.order)").eval_string(&vars).unwrap(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        eval0("checksum('')"),
        json!("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    // Only strings.
    let err = eval_err("checksum(1)", &Vars::new());
    assert!(err.message.contains("checksum"), "{err}");
}

#[test]
fn eval_string_rejects_other_types_naming_them() {
    let err = compile("input.n").eval_string(&run_vars()).unwrap_err();
    assert!(err.message.contains("got double"), "{err}");
    let err = compile("42").eval_string(&Vars::new()).unwrap_err();
    assert!(err.message.contains("got int"), "{err}");
    let err = compile("[1]").eval_string(&Vars::new()).unwrap_err();
    assert!(err.message.contains("got list"), "{err}");
    assert_eq!(err.expr, "[1]");
}

// ---- counts ------------------------------------------------------------------

#[test]
fn eval_int_accepts_whole_numbers() {
    let none = Vars::new();
    assert_eq!(compile("2.0").eval_int(&none).unwrap(), 2);
    assert_eq!(compile("3").eval_int(&none).unwrap(), 3);
    assert_eq!(compile("3u").eval_int(&none).unwrap(), 3);
    assert_eq!(compile("-4.0").eval_int(&none).unwrap(), -4);
    // A JSON number from the input is a double with no fraction.
    assert_eq!(compile("input.n").eval_int(&run_vars()).unwrap(), 5);
    assert_eq!(compile("input.n * 2.0").eval_int(&run_vars()).unwrap(), 10);
}

#[test]
fn eval_int_rejects_fractions_and_non_numbers() {
    let none = Vars::new();
    let err = compile("2.5").eval_int(&none).unwrap_err();
    assert!(err.message.contains("2.5"), "{err}");
    let err = compile("'x'").eval_int(&none).unwrap_err();
    assert!(err.message.contains("got string"), "{err}");
    assert!(compile("1e19").eval_int(&none).is_err());
    assert!(compile("18446744073709551615u").eval_int(&none).is_err());
    assert!(compile("true").eval_int(&none).is_err());
}

// ---- filters and conditions ---------------------------------------------------

#[test]
fn event_filter() {
    let filter = Expr::compile_with(
        "payload.amount > 100.0 && event_key.startsWith('order.') && additional_metadata.tenant == 'acme'",
        EVENT_FILTER_VARIABLES,
    )
    .unwrap();
    let event = |amount: f64| {
        Vars::new()
            .with("payload", &json!({"amount": amount}))
            .with("event_key", &json!("order.created"))
            .with("event_id", &json!("ev-1"))
            .additional_metadata(&json!({"tenant": "acme"}))
    };
    assert!(filter.eval_bool(&event(150.0)).unwrap());
    assert!(!filter.eval_bool(&event(50.0)).unwrap());
}

#[test]
fn condition_on_output() {
    let cond = Expr::compile_with(
        "output.status == 'done' && size(output.rows) > 1",
        CONDITION_VARIABLES,
    )
    .unwrap();
    let vars = Vars::new().with("output", &json!({"status": "done", "rows": [1, 2]}));
    assert!(cond.eval_bool(&vars).unwrap());
    let vars = Vars::new().with("output", &json!({"status": "done", "rows": []}));
    assert!(!cond.eval_bool(&vars).unwrap());
}

#[test]
fn eval_bool_rejects_non_bools() {
    let err = compile("'yes'").eval_bool(&Vars::new()).unwrap_err();
    assert!(err.message.contains("got string"), "{err}");
}

// ---- missing variables -------------------------------------------------------

#[test]
fn missing_metadata_is_an_empty_map() {
    // No additional_metadata given: the lookup fails with "no such key",
    // naming the key, rather than panicking or calling it undeclared.
    let vars = Vars::new().input(&json!({}));
    let err = compile("additional_metadata.tenant")
        .eval_string(&vars)
        .unwrap_err();
    assert_eq!(err.expr, "additional_metadata.tenant");
    assert!(err.message.to_lowercase().contains("no such key"), "{err}");
    assert!(err.message.contains("tenant"), "{err}");
    // has() sees the empty map.
    assert_eq!(eval("has(additional_metadata.tenant)", &vars), json!(false));
    assert_eq!(eval("size(input)", &Vars::new()), json!(0));
}

#[test]
fn missing_scalar_variables_are_null() {
    assert_eq!(eval0("workflow_run_id"), Value::Null);
    assert_eq!(eval0("event_key == null"), json!(true));
}

#[test]
fn unknown_variables_fail_at_evaluation() {
    let err = eval_err("nope + 1", &Vars::new());
    assert!(err.message.contains("nope"), "{err}");
}

// ---- errors ------------------------------------------------------------------

#[test]
fn parse_error_carries_expression_and_position() {
    let err = Expr::compile("input.user_id +").unwrap_err();
    assert_eq!(err.expr, "input.user_id +");
    assert_eq!(err.position, Some((1, 16)));
    assert!(err.message.contains("Syntax error"), "{err}");
    let shown = err.to_string();
    assert!(
        shown
            .starts_with(r#"cannot parse CEL expression "input.user_id +" at line 1, column 16: "#),
        "{shown}"
    );

    let err = Expr::compile("input.a ==\n  )").unwrap_err();
    assert_eq!(err.position, Some((2, 3)));

    // Columns count characters, not bytes.
    let err = Expr::compile("'żółw' + )").unwrap_err();
    assert_eq!(err.position, Some((1, 10)));

    let err = Expr::compile("").unwrap_err();
    assert_eq!(err.position, Some((1, 1)));
}

#[test]
fn too_deep_nesting_is_a_readable_parse_error() {
    let source = format!("{}1{}", "(".repeat(120), ")".repeat(120));
    let err = Expr::compile(&source).unwrap_err();
    assert!(err.message.contains("Recursion limit"), "{err}");
    assert!(!err.message.contains("OtherError"), "{err}");
}

#[test]
fn runtime_error_carries_expression() {
    let err = eval_err("input.missing.deeper", &run_vars());
    assert_eq!(err.expr, "input.missing.deeper");
    assert!(err.message.contains("missing"), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(r#"cannot evaluate CEL expression "input.missing.deeper": "#),
        "{shown}"
    );
}

#[test]
fn errors_are_std_errors() {
    fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> Box<dyn std::error::Error> {
        Box::new(e)
    }
    let compile_err: CompileError = Expr::compile("(").unwrap_err();
    assert!(boxed(compile_err).to_string().contains("cannot parse"));
    let eval_err: EvalError = compile("1 / 0").eval(&Vars::new()).unwrap_err();
    assert!(boxed(eval_err).to_string().contains("cannot evaluate"));
}

// ---- compile-time variable check --------------------------------------------

#[test]
fn compile_with_rejects_unknown_variables_with_a_position() {
    let err = Expr::compile_with("input.a + '-' + tenant", RUN_VARIABLES).unwrap_err();
    assert_eq!(err.position, Some((1, 17)));
    assert!(err.message.contains("'tenant'"), "{err}");
    assert!(
        err.message
            .contains("allowed: input, additional_metadata, workflow_run_id"),
        "{err}"
    );

    // Each unknown name once, in order of appearance.
    let err = Expr::compile_with("b + a + b", RUN_VARIABLES).unwrap_err();
    assert!(err.message.contains("variables 'b', 'a' ("), "{err}");
    assert_eq!(err.position, Some((1, 1)));

    // A filter variable is not a run variable.
    assert!(Expr::compile_with("payload.x == 1.0", RUN_VARIABLES).is_err());
    assert!(Expr::compile_with("payload.x == 1.0", EVENT_FILTER_VARIABLES).is_ok());
    assert!(Expr::compile_with("output.x", CONDITION_VARIABLES).is_ok());
    assert!(Expr::compile_with("output.x", EVENT_FILTER_VARIABLES).is_err());

    // Positions in characters, on the right line.
    let err = Expr::compile_with("'żółw' +\n  foo", RUN_VARIABLES).unwrap_err();
    assert_eq!(err.position, Some((2, 3)));
}

#[test]
fn compile_with_knows_bound_names_types_and_namespaces() {
    for source in [
        "input.items.all(x, x > 0.0)",
        "input.items.map(x, x * 2.0).exists(y, y > 5.0)",
        "input.items.filter(i, i > 1.0).size() == 2",
        "type(input.n) == double && type(input.user) == string",
        "strings.quote(input.user)",
        "optional.of(input.n).hasValue()",
        "has(input.user) ? input.user : workflow_run_id",
        "{'k': additional_metadata}.k",
    ] {
        if let Err(e) = Expr::compile_with(source, RUN_VARIABLES) {
            panic!("{source}: {e}");
        }
    }
    // A bound name does not leak out of its macro.
    let err = Expr::compile_with("input.items.all(x, x > 0.0) && x", RUN_VARIABLES).unwrap_err();
    assert!(err.message.contains("'x'"), "{err}");
    assert_eq!(err.position, Some((1, 32)));
}

// ---- the strings extension ---------------------------------------------------

#[test]
fn strings_char_at() {
    assert_eq!(eval0("'hello'.charAt(1)"), json!("e"));
    assert_eq!(eval0("'hello'.charAt(5)"), json!(""));
    assert!(compile("'hello'.charAt(6)").eval(&Vars::new()).is_err());
}

#[test]
fn strings_index_of() {
    assert_eq!(eval0("'hello mellow'.indexOf('ello')"), json!(1));
    assert_eq!(eval0("'hello mellow'.indexOf('jello')"), json!(-1));
    assert_eq!(eval0("'hello mellow'.indexOf('ello', 2)"), json!(7));
    assert_eq!(eval0("'żółw'.indexOf('w')"), json!(3));
}

#[test]
fn strings_last_index_of() {
    assert_eq!(eval0("'hello mellow'.lastIndexOf('ello')"), json!(7));
    assert_eq!(eval0("'hello mellow'.lastIndexOf('ello', 6)"), json!(1));
    assert_eq!(eval0("'hello mellow'.lastIndexOf('x')"), json!(-1));
}

#[test]
fn strings_case() {
    assert_eq!(eval0("'TacoCÄt'.lowerAscii()"), json!("tacocÄt"));
    assert_eq!(eval0("'tacoCät'.upperAscii()"), json!("TACOCäT"));
}

#[test]
fn strings_replace() {
    assert_eq!(eval0("'a-b-c'.replace('-', '+')"), json!("a+b+c"));
    assert_eq!(eval0("'a-b-c'.replace('-', '+', 1)"), json!("a+b-c"));
    assert_eq!(eval0("'a-b-c'.replace('-', '+', -1)"), json!("a+b+c"));
}

#[test]
fn strings_split() {
    assert_eq!(eval0("'a,b,c'.split(',')"), json!(["a", "b", "c"]));
    assert_eq!(eval0("'a,b,c'.split(',', 2)"), json!(["a", "b,c"]));
    assert_eq!(eval0("'a,b,c'.split(',', 0)"), json!([]));
}

#[test]
fn strings_substring() {
    assert_eq!(eval0("'tacocat'.substring(4)"), json!("cat"));
    assert_eq!(eval0("'tacocat'.substring(0, 4)"), json!("taco"));
    assert!(
        compile("'tacocat'.substring(5, 2)")
            .eval(&Vars::new())
            .is_err()
    );
}

#[test]
fn strings_trim() {
    assert_eq!(eval0("'  \\t padded \\n'.trim()"), json!("padded"));
}

#[test]
fn strings_join() {
    assert_eq!(eval0("['a', 'b', 'c'].join()"), json!("abc"));
    assert_eq!(eval0("['a', 'b', 'c'].join('/')"), json!("a/b/c"));
    let vars = Vars::new().input(&json!({"tags": ["x", "y"]}));
    assert_eq!(eval("input.tags.join(',')", &vars), json!("x,y"));
}

#[test]
fn strings_quote() {
    assert_eq!(
        eval0(r#"strings.quote('say "hi"\n')"#),
        json!(r#""say \"hi\"\n""#)
    );
}

#[test]
fn strings_reverse_and_format() {
    assert_eq!(eval0("'abc'.reverse()"), json!("cba"));
    assert_eq!(eval0("'%s-%d'.format(['a', 7])"), json!("a-7"));
}

// ---- results as JSON -----------------------------------------------------------

#[test]
fn results_convert_to_json() {
    let vars = run_vars();
    assert_eq!(
        eval("input.items.map(x, x * 2.0)", &vars),
        json!([2.0, 4.0, 6.0])
    );
    assert_eq!(
        eval(
            "{'user': input.user, 'n': int(input.n), 'ok': true, 'none': null}",
            &vars
        ),
        json!({"user": "ada", "n": 5, "ok": true, "none": null})
    );
    assert_eq!(eval0("b'abc'"), json!("YWJj"));
    assert_eq!(eval0("duration('1.5s')"), json!("1.5s"));
    assert!(compile("1.0 / 0.0").eval(&Vars::new()).is_err());
}

// ---- sharing -------------------------------------------------------------------

#[test]
fn expressions_and_vars_are_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Expr>();
    shareable::<Vars>();

    let key = compile("input.user + '/' + workflow_run_id");
    let vars = run_vars();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let key = key.clone();
            let vars = vars.clone();
            std::thread::spawn(move || key.eval_string(&vars).unwrap())
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), "ada/8d7c0a4e-run");
    }
    assert_eq!(key.source(), "input.user + '/' + workflow_run_id");
}

#[test]
fn later_settings_replace_earlier_ones() {
    let vars = Vars::new()
        .input(&json!({"v": "old"}))
        .input(&json!({"v": "new"}));
    assert_eq!(compile("input.v").eval_string(&vars).unwrap(), "new");
    assert!(vars.contains("input"));
    assert!(!vars.contains("output"));
}
