//! Calico selectors and Kubernetes label selectors.
//! (Interface skeleton: being implemented; see the API below.)

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Labels;

/// A parsed Calico selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    text: String,
}

/// A selector that failed to parse: the 1-based column and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {message} at column {column}")]
pub struct SelectorError {
    pub input: String,
    pub column: usize,
    pub message: String,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector { text: text.to_string() })
    }
    pub fn all() -> Selector {
        Selector { text: "all()".into() }
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn is_all(&self) -> bool {
        true
    }
    pub fn uses_global(&self) -> bool {
        false
    }
    pub fn matches(&self, labels: &Labels) -> bool {
        self.evaluate(labels, false)
    }
    pub fn evaluate(&self, _labels: &Labels, _global: bool) -> bool {
        true
    }
    pub fn and(&self, other: &Selector) -> Selector {
        Selector { text: format!("({}) && ({})", self.text, other.text) }
    }
    pub fn from_label_selector(_ls: &LabelSelector) -> Result<Selector, SelectorError> {
        Ok(Selector::all())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A Kubernetes `LabelSelector` (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Option<Labels>,
    #[serde(default)]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}
