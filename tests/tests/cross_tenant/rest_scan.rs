//! Which REST routes ingest serves: every `.route("path", method_router)` in ingest's
//! source (its REST, live, session, token, OpenAPI and dashboard routers), read by a
//! small scanner that fails on any form it does not know (`nest`, `route_service`, a
//! method router built by a helper), so a new way of adding routes cannot slip past it;
//! together with every path and method of the OpenAPI document
//! (`GET /api/v1/openapi.json`), which must document every one of them under `/api/`.
//! Each must have a case in the kept list, and each case must name one of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adze_tests::TestEnv;

use super::routes;

/// A route key with its parameters' names dropped (`/runs/{run}` → `/runs/{}`), so the
/// source's and the OpenAPI document's spellings of one route compare equal.
pub(super) fn normalized(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut in_param = false;
    for c in key.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('{');
            }
            '}' => {
                in_param = false;
                out.push('}');
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The routes ingest serves, by normalized key (with a key as shown), and what the
/// scanner could not read.
pub struct Served {
    pub routes: BTreeMap<String, String>,
    pub problems: Vec<String>,
}

/// Every route in ingest's source.
pub fn source_routes() -> Served {
    let mut served = Served {
        routes: BTreeMap::new(),
        problems: Vec::new(),
    };
    let dir = adze_tests::repo_root().join("services/ingest/src");
    for file in rust_files(&dir) {
        let text = std::fs::read_to_string(&file).expect("read the source");
        match routes_in(&text) {
            Ok(keys) => {
                for k in keys {
                    served.routes.insert(normalized(&k), k);
                }
            }
            Err(e) => served.problems.push(format!("{}: {e}", file.display())),
        }
    }
    served
}

/// Every `METHOD /path` of an OpenAPI document, by normalized key (with the key as
/// the document spells it).
pub fn documented_routes(doc: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if HTTP_METHODS.contains(&method.as_str()) {
                let key = format!("{} {path}", method.to_uppercase());
                out.insert(normalized(&key), key);
            }
        }
    }
    out
}

/// The OpenAPI document ingest serves.
pub async fn openapi_document(env: &TestEnv) -> serde_json::Value {
    let (status, doc) = adze_tests::rest::get(env, "", "/api/v1/openapi.json").await;
    assert_eq!(status, 200, "the OpenAPI document: {doc}");
    doc
}

/// Every route in ingest's source and in its OpenAPI document.
pub async fn served_routes(env: &TestEnv) -> Served {
    let mut served = source_routes();
    for (k, key) in documented_routes(&openapi_document(env).await) {
        if !served.routes.contains_key(&k) {
            served.problems.push(format!(
                "{key} is in the OpenAPI document but no `.route(` declares it: \
                 the scanner misses a way of adding routes"
            ));
        }
        served.routes.entry(k).or_insert(key);
    }
    served
}

/// Which served routes have no case, which cases name no served route.
pub fn unlisted(served: &Served) -> Vec<String> {
    let cases: BTreeMap<String, &str> = routes()
        .iter()
        .map(|r| (normalized(r.key), r.key))
        .collect();
    let mut out = served.problems.clone();
    for (k, shown) in &served.routes {
        if !cases.contains_key(k) {
            out.push(format!(
                "REST {shown} is served but has no case in cross_tenant/rest.rs `routes()`"
            ));
        }
    }
    for (k, shown) in &cases {
        if !served.routes.contains_key(k) {
            out.push(format!("REST {shown} has a case but is no longer served"));
        }
    }
    out
}

const HTTP_METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// Methods chained onto a method router that add no route.
const ADAPTERS: &[&str] = &["layer", "route_layer", "with_state"];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `METHOD /path` for each method of each `.route("/path", …)` in `src` (its test module
/// and comments left out); an error for a way of adding routes it cannot read.
fn routes_in(src: &str) -> Result<Vec<String>, String> {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    // A file's unit tests (`#[cfg(test)] mod …`, last by convention) serve nothing.
    let code = match code
        .match_indices("#[cfg(test)]")
        .find(|(i, m)| code[i + m.len()..].trim_start().starts_with("mod "))
    {
        Some((i, _)) => &code[..i],
        None => &code[..],
    };
    for unknown in [".nest(", ".nest_service(", ".route_service("] {
        if code.contains(unknown) {
            return Err(format!("`{unknown}` adds routes this scanner cannot read"));
        }
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(lit) = rest.trim_start().strip_prefix('"') else {
            return Err("a `.route(` whose path is not a string literal".into());
        };
        let end = lit.find('"').ok_or("an unterminated route path")?;
        let path = &lit[..end];
        let methods =
            methods_in(argument(&lit[end + 1..])).map_err(|e| format!("route {path}: {e}"))?;
        if methods.is_empty() {
            return Err(format!("route {path}: no method found"));
        }
        out.extend(
            methods
                .into_iter()
                .map(|m| format!("{} {path}", m.to_uppercase())),
        );
    }
    Ok(out)
}

/// The text up to the `)` that closes the call `s` is inside of.
fn argument(s: &str) -> &str {
    let mut depth = 0usize;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return &s[..i],
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    s
}

/// The HTTP methods a method router expression calls at its top level (`get(h)`,
/// `get(h).post(g)`, `axum::routing::get(h)`); an error for any other call there.
fn methods_in(expr: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            c if depth == 0 && (c.is_alphabetic() || c == '_') => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let ident = &expr[i..end];
                if expr[end..].trim_start().starts_with('(') {
                    if HTTP_METHODS.contains(&ident) {
                        out.push(ident.to_owned());
                    } else if !ADAPTERS.contains(&ident) {
                        return Err(format!("`{ident}(…)` is not a method this scanner knows"));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[test]
fn the_scanner_reads_each_form_of_route() {
    let src = r#"
        // .route("/commented", get(x))
        axum::Router::new()
            .route("/a/{id}", get(a).delete(b).post(c))
            .route(
                "/b",
                axum::routing::get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
            )
            .route("/c", post(crate::m::cancel).layer(l))
        #[cfg(test)]
        fn only_in_tests() {}
        #[cfg(test)]
        mod tests { fn t() { Router::new().route("/test-only", get(t)); } }
    "#;
    assert_eq!(
        routes_in(src).expect("read"),
        [
            "GET /a/{id}",
            "DELETE /a/{id}",
            "POST /a/{id}",
            "GET /b",
            "POST /c"
        ]
    );
    assert!(routes_in(r#".route("/x", on(MethodFilter::GET, h))"#).is_err());
    assert!(routes_in(r#".route("/x", helper())"#).is_err());
    assert!(routes_in(r#".nest("/x", r)"#).is_err());
    assert!(routes_in(".route(PATH, get(h))").is_err());
    assert_eq!(normalized("GET /a/{id}/b/{x}"), "GET /a/{}/b/{}");
    assert!(super::fits("/a/{id}/b", "/a/1/b"));
    assert!(!super::fits("/a/{id}/b", "/a/1/c"));
}
