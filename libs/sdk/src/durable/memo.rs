//! The key of a memoized value: `sha256(task run id ‖ canonical JSON of the deps)`,
//! sent as 32 raw bytes. The TypeScript SDK hashes `task id + JSON.stringify(deps)`;
//! for dependencies without objects (`["now"]`) both give the same bytes.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The memo key of `deps` in the durable task `task_run_id`.
pub(crate) fn memo_key(task_run_id: &str, deps: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(task_run_id.as_bytes());
    hasher.update(canonical_json(deps).as_bytes());
    hasher.finalize().into()
}

/// `value` as compact JSON with the keys of every object sorted, so that equal values
/// give equal text whatever order their maps were built in.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(key) {
                    write(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_now_key_is_the_typescript_sdks() {
        // printf 'T["now"]' | sha256sum
        assert_eq!(
            hex(&memo_key("T", &json!(["now"]))),
            "4718c5913fb92bc6befa056be3143d3861f4364c7b7782716cb6619a796e3c01"
        );
    }

    #[test]
    fn object_keys_are_sorted_at_every_depth() {
        let a = json!({"b": [true, null, "x"], "a": 1});
        assert_eq!(canonical_json(&a), r#"{"a":1,"b":[true,null,"x"]}"#);
        // printf 'task-1{"a":1,"b":[true,null,"x"]}' | sha256sum
        assert_eq!(
            hex(&memo_key("task-1", &a)),
            "27c1e9aab98842e277c3688507016319908b3634b51cb5d752bc4d00e3cd7da1"
        );
        let nested = json!({"z": {"y": 1, "x": {"b": 2, "a": 3}}, "k": "q\"uote"});
        assert_eq!(
            canonical_json(&nested),
            r#"{"k":"q\"uote","z":{"x":{"a":3,"b":2},"y":1}}"#
        );
    }

    #[test]
    fn the_key_depends_on_the_task_and_the_deps() {
        let deps = json!({"user": 7});
        let key = memo_key("task-1", &deps);
        assert_eq!(key, memo_key("task-1", &json!({"user": 7})));
        assert_ne!(key, memo_key("task-2", &deps));
        assert_ne!(key, memo_key("task-1", &json!({"user": 8})));
    }
}
