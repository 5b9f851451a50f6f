//! CEL results back to JSON, and CEL type names for error messages.

use cel::Value;
use cel::objects::Key;

/// The CEL name of `value`'s type, as an error message should say it.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Opaque(_) => "opaque",
        Value::Struct(_) => "struct",
        Value::Null => "null_type",
    }
}

/// `value` as JSON, following CEL's JSON mapping: ints and uints become
/// integers, doubles stay doubles (`6.0`), bytes become base64 strings,
/// timestamps RFC 3339 strings and durations strings of seconds (`"1.5s"`).
/// Map keys become strings. Non-finite doubles, functions, optionals and
/// other opaque values have no JSON form and are an error.
pub(crate) fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("the double {f} has no JSON form"))?,
        Value::String(s) => J::String(s.to_string()),
        Value::Bytes(b) => {
            use base64::Engine as _;
            J::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        Value::List(items) => J::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(map) => {
            let mut object = serde_json::Map::with_capacity(map.map.len());
            for (key, item) in map.map.iter() {
                object.insert(key_string(key), to_json(item)?);
            }
            J::Object(object)
        }
        Value::Timestamp(ts) => J::String(ts.to_rfc3339()),
        Value::Duration(d) => J::String(duration_string(d.num_seconds(), d.subsec_nanos())),
        other => {
            return Err(format!(
                "values of type {} have no JSON form",
                type_name(other)
            ));
        }
    })
}

fn key_string(key: &Key) -> String {
    match key {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => s.to_string(),
    }
}

/// Seconds with up to nine fractional digits and an `s`, as protobuf's JSON
/// form of a duration: `90s`, `1.5s`, `-0.25s`.
fn duration_string(seconds: i64, nanos: i32) -> String {
    if nanos == 0 {
        return format!("{seconds}s");
    }
    let negative = seconds < 0 || nanos < 0;
    let fraction = format!("{:09}", nanos.unsigned_abs());
    let fraction = fraction.trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    format!("{sign}{}.{fraction}s", seconds.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_string(90, 0), "90s");
        assert_eq!(duration_string(1, 500_000_000), "1.5s");
        assert_eq!(duration_string(0, -250_000_000), "-0.25s");
        assert_eq!(duration_string(-2, -1), "-2.000000001s");
    }
}
