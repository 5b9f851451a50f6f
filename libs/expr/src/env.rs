//! The one CEL environment every expression is compiled and run against: the
//! standard library, the strings extension and `checksum`.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use cel::common::types::{CelString, STRING_TYPE};
use cel::common::value::CowVal;
use cel::{Env, ExecutionError, extensions};
use sha2::{Digest, Sha256};

/// Prefixes of the namespaced global functions the environment declares
/// (`strings.quote`, `optional.of`, ...). In `strings.quote(x)` the parser
/// sees `strings` as an identifier, which is not a variable reference.
pub(crate) const FUNCTION_NAMESPACES: &[&str] = &["strings", "optional"];

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(build()));

/// The shared environment.
pub(crate) fn env() -> &'static Arc<Env> {
    &ENV
}

fn build() -> Env {
    let mut env = Env::stdlib();
    // Both registrations only fail on a name clash with what is already
    // declared, which would be a programming error caught by every test.
    env.add_extension(extensions::strings)
        .expect("the strings extension registers on the standard library");
    env.add_overload("checksum", "checksum_string", vec![STRING_TYPE], checksum)
        .expect("`checksum` is not a standard function");
    env
}

/// `checksum(string) -> string`: SHA-256 of the UTF-8 bytes, lowercase hex.
fn checksum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = args
        .first()
        .and_then(|arg| arg.downcast_ref::<CelString>())
        .ok_or_else(|| ExecutionError::function_error("checksum", "expects one string"))?;
    Ok(CowVal::owned(CelString::from(sha256_hex(text.inner()))))
}

/// SHA-256 of the UTF-8 bytes of `text`, as 64 lowercase hex digits.
pub(crate) fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}
