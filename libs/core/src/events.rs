//! Events as triggers: what an event key may be, what a workflow's trigger pattern may
//! be, and which keys a pattern matches. An event key is what a client pushes
//! (`user:create`); a trigger pattern is what a workflow declares in `on_events`: a
//! key, or a key with `*` standing for any run of characters (`subscription:*`).

/// Longest event key or trigger pattern, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// Most events accepted by one bulk push.
pub const MAX_BULK_PUSH: usize = 1_000;

/// Why an event key or a trigger pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing given.
    #[error("an event key must not be empty")]
    Empty,
    /// Longer than [`MAX_KEY_BYTES`].
    #[error("event key {key:?} is {len} bytes; the limit is {MAX_KEY_BYTES}")]
    TooLong {
        /// The key (cut for the message).
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character that cannot be part of a key.
    #[error(
        "event key {key:?} has {what} at byte {at}; keys are printable text without spaces, and `*` and `>` are reserved for trigger patterns"
    )]
    Forbidden {
        /// The key.
        key: String,
        /// What was found.
        what: String,
        /// Its byte offset.
        at: usize,
    },
    /// A pattern whose dots leave an empty part (`a..b`, `.a`), which no key published
    /// over NATS can match.
    #[error("event key {0:?} has an empty part between dots")]
    EmptyPart(String),
}

fn check(key: &str, wildcard: bool) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong {
            key: key.chars().take(40).collect::<String>() + "…",
            len: key.len(),
        });
    }
    for (at, c) in key.char_indices() {
        let what = if c.is_whitespace() {
            format!("whitespace ({c:?})")
        } else if c.is_control() {
            format!("a control character ({c:?})")
        } else if c == '>' || (c == '*' && !wildcard) {
            format!("{c:?}")
        } else {
            continue;
        };
        return Err(KeyError::Forbidden {
            key: key.to_string(),
            what,
            at,
        });
    }
    if key.split('.').any(str::is_empty) {
        return Err(KeyError::EmptyPart(key.to_string()));
    }
    Ok(())
}

/// Checks a key an event is pushed with.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    check(key, false)
}

/// A workflow's event trigger: an exact key or a pattern with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    text: String,
}

impl EventPattern {
    /// Parses a trigger as a workflow declares it.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        check(text, true)?;
        Ok(Self {
            text: text.to_string(),
        })
    }

    /// The pattern as declared.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has a wildcard (otherwise it matches one key only).
    pub fn is_exact(&self) -> bool {
        !self.text.contains('*')
    }

    /// Whether `key` is one of the keys this pattern stands for: `*` matches any run of
    /// characters, the empty run included; every other character matches itself.
    pub fn matches(&self, key: &str) -> bool {
        glob(self.text.as_bytes(), key.as_bytes())
    }
}

/// Iterative glob with `*` only: on a mismatch, the last `*` takes one more byte.
/// Linear in practice, never exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_printable_without_spaces_or_wildcards() {
        assert!(validate_key("user:create").is_ok());
        assert!(validate_key("orders.eu.created").is_ok());
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        let err = validate_key("user create").unwrap_err().to_string();
        assert!(
            err.contains("whitespace") && err.contains("byte 4"),
            "{err}"
        );
        assert!(
            validate_key("user:*")
                .unwrap_err()
                .to_string()
                .contains("'*'")
        );
        assert!(validate_key("a>b").is_err());
        assert!(validate_key("a\u{7}b").is_err());
        assert_eq!(
            validate_key("a..b"),
            Err(KeyError::EmptyPart("a..b".into()))
        );
        assert!(matches!(
            validate_key(&"k".repeat(256)),
            Err(KeyError::TooLong { len: 256, .. })
        ));
    }

    #[test]
    fn patterns_match_as_documented() {
        let p = EventPattern::parse("subscription:*").unwrap();
        assert!(!p.is_exact());
        assert!(p.matches("subscription:created"));
        assert!(p.matches("subscription:"));
        assert!(!p.matches("subscriptions:created"));
        assert!(!p.matches("user:create"));
        let exact = EventPattern::parse("user:create").unwrap();
        assert!(exact.is_exact());
        assert!(exact.matches("user:create"));
        assert!(!exact.matches("user:created"));
        let mid = EventPattern::parse("orders.*.created").unwrap();
        assert!(mid.matches("orders.eu.created"));
        assert!(mid.matches("orders.eu.west.created"));
        assert!(!mid.matches("orders.eu.deleted"));
        assert!(EventPattern::parse("*").unwrap().matches("anything:at.all"));
        assert!(EventPattern::parse("a >").is_err());
    }

    /// The reference: a pattern as a regular expression over the same alphabet.
    fn reference(pattern: &str, key: &str) -> bool {
        let re = format!(
            "^{}$",
            pattern
                .split('*')
                .map(regex_escape)
                .collect::<Vec<_>>()
                .join(".*")
        );
        regex_lite_match(&re, key)
    }

    fn regex_escape(s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    }

    /// Backtracking match of the tiny regex language `reference` writes (literals and
    /// `.*`), independent of `glob`.
    fn regex_lite_match(re: &str, text: &str) -> bool {
        fn go(re: &[char], text: &[char]) -> bool {
            match re {
                [] => text.is_empty(),
                ['$'] => text.is_empty(),
                ['.', '*', rest @ ..] => (0..=text.len()).any(|i| go(rest, &text[i..])),
                ['\\', c, rest @ ..] | [c, rest @ ..] => {
                    !text.is_empty() && text[0] == *c && go(rest, &text[1..])
                }
            }
        }
        let re: Vec<char> = re.trim_start_matches('^').chars().collect();
        let text: Vec<char> = text.chars().collect();
        go(&re, &text)
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_regex(pattern in "[ab:*]{0,8}", key in "[ab:]{0,10}") {
            let p = EventPattern { text: pattern.clone() };
            prop_assert_eq!(p.matches(&key), reference(&pattern, &key), "pattern {:?} key {:?}", pattern, key);
        }
    }
}
