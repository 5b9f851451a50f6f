//! Worker labels and the labels a task desires: a worker carries values (`model:
//! "gpu"`, `memory: 64`), a task names what it needs (required) or prefers (a weight),
//! compared with `=`, `≠`, `>`, `≥`, `<`, `≤`. A task with a required label runs only
//! on a worker that satisfies it; among the workers that satisfy every required label,
//! the one with the most weight of satisfied preferences wins.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A label's value: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelValue {
    /// An integer (compared as numbers).
    Int(i64),
    /// A string (compared for equality only).
    Str(String),
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A worker's labels.
pub type WorkerLabels = BTreeMap<String, LabelValue>;

/// How a desired value is compared with the worker's (`worker <op> desired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    /// Equal.
    #[default]
    Equal,
    /// Not equal.
    NotEqual,
    /// The worker's is greater.
    GreaterThan,
    /// The worker's is greater or equal.
    GreaterThanOrEqual,
    /// The worker's is less.
    LessThan,
    /// The worker's is less or equal.
    LessThanOrEqual,
}

impl Comparator {
    fn symbol(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::GreaterThan => ">",
            Self::GreaterThanOrEqual => ">=",
            Self::LessThan => "<",
            Self::LessThanOrEqual => "<=",
        }
    }
}

/// A label a task wants of its worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DesiredLabel {
    /// Label name.
    pub key: String,
    /// Value compared with the worker's.
    pub value: LabelValue,
    /// Whether a worker without it may not run the task.
    #[serde(default)]
    pub required: bool,
    /// How to compare.
    #[serde(default)]
    pub comparator: Comparator,
    /// How much a worker that has it is preferred (not required).
    #[serde(default)]
    pub weight: i32,
}

impl DesiredLabel {
    /// Whether `worker` satisfies this label.
    pub fn satisfied_by(&self, worker: &WorkerLabels) -> bool {
        let Some(have) = worker.get(&self.key) else {
            return false;
        };
        use std::cmp::Ordering::*;
        let order = match (have, &self.value) {
            (LabelValue::Int(a), LabelValue::Int(b)) => Some(a.cmp(b)),
            (LabelValue::Str(a), LabelValue::Str(b)) => (a == b).then_some(Equal),
            _ => None,
        };
        match (self.comparator, order) {
            (Comparator::Equal, Some(Equal)) => true,
            (Comparator::NotEqual, o) => o != Some(Equal),
            (Comparator::GreaterThan, Some(Greater)) => true,
            (Comparator::GreaterThanOrEqual, Some(Greater | Equal)) => true,
            (Comparator::LessThan, Some(Less)) => true,
            (Comparator::LessThanOrEqual, Some(Less | Equal)) => true,
            _ => false,
        }
    }
}

impl fmt::Display for DesiredLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.key,
            self.comparator.symbol(),
            self.value
        )
    }
}

/// How well `worker` suits a task desiring `labels`: `None` if a required label is not
/// satisfied, else the weight of the satisfied preferences.
pub fn suitability(labels: &[DesiredLabel], worker: &WorkerLabels) -> Option<i64> {
    let mut score = 0i64;
    for l in labels {
        let ok = l.satisfied_by(worker);
        if l.required && !ok {
            return None;
        }
        if ok && !l.required {
            score += i64::from(l.weight.max(1));
        }
    }
    Some(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(pairs: &[(&str, LabelValue)]) -> WorkerLabels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn want(key: &str, value: LabelValue, comparator: Comparator, required: bool) -> DesiredLabel {
        DesiredLabel {
            key: key.into(),
            value,
            required,
            comparator,
            weight: 0,
        }
    }

    #[test]
    fn comparators() {
        let w = worker(&[
            ("memory", LabelValue::Int(64)),
            ("model", LabelValue::Str("gpu".into())),
        ]);
        let int = |c, n| want("memory", LabelValue::Int(n), c, true).satisfied_by(&w);
        assert!(int(Comparator::Equal, 64) && !int(Comparator::Equal, 32));
        assert!(int(Comparator::GreaterThan, 32) && !int(Comparator::GreaterThan, 64));
        assert!(int(Comparator::GreaterThanOrEqual, 64));
        assert!(int(Comparator::LessThan, 128) && !int(Comparator::LessThan, 64));
        assert!(int(Comparator::LessThanOrEqual, 64));
        assert!(int(Comparator::NotEqual, 32) && !int(Comparator::NotEqual, 64));
        let s = |c, v: &str| want("model", LabelValue::Str(v.into()), c, true).satisfied_by(&w);
        assert!(s(Comparator::Equal, "gpu") && !s(Comparator::Equal, "tpu"));
        assert!(s(Comparator::NotEqual, "tpu"));
        // A label the worker lacks satisfies nothing, not even "not equal".
        assert!(
            !want(
                "zone",
                LabelValue::Str("eu".into()),
                Comparator::NotEqual,
                true
            )
            .satisfied_by(&w)
        );
    }

    #[test]
    fn required_labels_exclude_and_weights_rank() {
        let gpu = worker(&[("model", LabelValue::Str("gpu".into()))]);
        let cpu = worker(&[("model", LabelValue::Str("cpu".into()))]);
        let need_gpu = [want(
            "model",
            LabelValue::Str("gpu".into()),
            Comparator::Equal,
            true,
        )];
        assert_eq!(suitability(&need_gpu, &gpu), Some(0));
        assert_eq!(suitability(&need_gpu, &cpu), None);
        let mut prefer = want(
            "model",
            LabelValue::Str("gpu".into()),
            Comparator::Equal,
            false,
        );
        prefer.weight = 5;
        assert_eq!(suitability(&[prefer.clone()], &gpu), Some(5));
        assert_eq!(suitability(&[prefer], &cpu), Some(0));
        assert_eq!(need_gpu[0].to_string(), "model = \"gpu\"");
    }
}
