//! Calico selectors and Kubernetes label selectors.
//!
//! [`Selector::parse`] accepts exactly the language of Calico's selector parser
//! (`libcalico-go/lib/selector/{tokenizer,parser}`); the comments at the top of `parser.rs`
//! list the corner cases. The grammar, loosest binding first:
//!
//! ```text
//! selector  := or | ""                      (empty or blank text is all())
//! or        := and ("||" and)*
//! and       := operation ("&&" operation)*
//! operation := "!"* ( "all()" | "global()" | "has(" key ")" | "(" or ")"
//!                   | key ("==" | "!=" | "contains" | "starts with" | "ends with") string
//!                   | key ("in" | "not in") "{" (string ("," string)* ","?)? "}" )
//! key       := [A-Za-z0-9_./-]+
//! string    := '...' | "..."                 (no escapes)
//! ```
//!
//! Semantics (Calico's): `k != "v"` and `k not in {...}` match when `k` is absent; every
//! other comparison needs `k` present. `k in {}` matches nothing and `k not in {}` everything.
//! `global()` is true exactly when the selector is evaluated for a non-namespaced resource:
//! see [`Selector::evaluate`].

mod ast;
mod parser;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::{collections::BTreeSet, fmt, hash, str::FromStr};

use serde::{Deserialize, Serialize};

pub use self::ast::Expr;
use crate::model::Labels;

/// A parsed Calico selector.
///
/// Equality and hashing compare the parsed expression (so `a=='b'` equals `a == "b"`), not the
/// text as written.
#[derive(Clone)]
pub struct Selector {
    /// The text as written, trimmed of spaces and tabs.
    text: String,
    expr: Expr,
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
    /// Parses Calico selector text. Empty or blank text (spaces and tabs) is `all()`, as in
    /// Calico.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        match parser::parse(text) {
            Ok(expr) => Ok(Selector {
                text: text.trim_matches([' ', '\t']).to_owned(),
                expr,
            }),
            Err(e) => {
                let mut message = e.message;
                if contains_template_placeholder(text) {
                    message.push_str(
                        " (the selector looks like an unrendered template: it contains a `{{...}}` \
                         or `${...}` placeholder)",
                    );
                }
                Err(SelectorError {
                    input: text.to_owned(),
                    column: parser::column_of(text, e.offset),
                    message,
                })
            }
        }
    }

    /// `all()`: matches everything.
    pub fn all() -> Selector {
        Selector {
            text: "all()".into(),
            expr: Expr::All,
        }
    }

    /// Builds the selector for `expr`, whose text is the canonical form. Fails if `expr` cannot
    /// be written as selector text (a label key outside `[A-Za-z0-9_./-]+`, or a value with
    /// both kinds of quote). The result is normalised the way parsing normalises (`!!e` is `e`,
    /// one-operand `&&`/`||` are their operand, set members sorted).
    pub fn from_expr(expr: &Expr) -> Result<Selector, SelectorError> {
        let text = expr.to_string();
        if let Some(message) = unwritable(expr) {
            return Err(SelectorError {
                input: text,
                column: 1,
                message,
            });
        }
        Selector::parse(&text)
    }

    /// The text as written (trimmed); see [`fmt::Display`] for the canonical form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// True if the selector is trivially true under [`evaluate`](Self::evaluate) (where `all()`
    /// is true): `all()` or empty text, and forms that are syntactically always true such as `(all())`, `all() && all()`, `has(a) || all()` or
    /// `k not in {}`. (No SAT solving: `has(a) || !has(a)` is not recognised.)
    pub fn is_all(&self) -> bool {
        self.expr.is_trivially_true()
    }

    /// True if the selector mentions `global()`.
    pub fn uses_global(&self) -> bool {
        self.expr.uses_global()
    }

    /// The label keys the selector refers to.
    pub fn label_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        self.expr.collect_label_keys(&mut keys);
        keys
    }

    /// `evaluate(labels, false)`: for namespaced resources (workload endpoints, network sets).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.evaluate(labels, false)
    }

    /// Evaluates the selector with `all()` true and `global()` evaluating to `global`, which
    /// callers set for non-namespaced resources (host endpoints, global network sets).
    ///
    /// Calico's own parser evaluates `global()` as true, the same as `all()`; it is given its
    /// meaning by the code that uses it (a rule's `namespaceSelector: global()` selects only
    /// non-namespaced resources). Taking the flag here lets the model say which it is.
    pub fn evaluate(&self, labels: &Labels, global: bool) -> bool {
        self.evaluate_with(labels, true, global)
    }

    /// Evaluates the selector with `all()` evaluating to `all` and `global()` to `global`.
    ///
    /// This is how Calico gives meaning to `all()` and `global()` in `namespaceSelector` and
    /// `serviceAccountSelector`: it rewrites `all()` to "the entity is namespaced" and
    /// `global()` to "the entity is not namespaced" before evaluating against the namespace's
    /// (or service account's) labels. So for those selectors pass `(labels, true, false)` for
    /// a namespaced entity and `(labels, false, true)` for a global one.
    pub fn evaluate_with(&self, labels: &Labels, all: bool, global: bool) -> bool {
        self.expr.evaluate(labels, all, global)
    }

    /// The conjunction of the two selectors. Its text is `(a) && (b)` (exactly what parsing
    /// that text gives); when either side [`is_all`](Self::is_all), the other is returned.
    pub fn and(&self, other: &Selector) -> Selector {
        if self.is_all() {
            return other.clone();
        }
        if other.is_all() {
            return self.clone();
        }
        Selector {
            text: format!("({}) && ({})", self.text, other.text),
            expr: Expr::And(vec![self.expr.clone(), other.expr.clone()]),
        }
    }

    /// Converts a Kubernetes `LabelSelector` with Kubernetes semantics: every `matchLabels`
    /// entry and every `matchExpressions` requirement must hold; the empty selector `{}`
    /// matches everything; `NotIn` and `DoesNotExist` match when the key is absent.
    ///
    /// Keys and values are checked as the Kubernetes API server checks them (qualified names
    /// and label values); `In`/`NotIn` need at least one value and `Exists`/`DoesNotExist`
    /// none. The text of the result is Calico's equivalent (as Calico's Kubernetes converter
    /// writes it, in canonical form): `k == "v"`, `k in {...}`, `k not in {...}`, `has(k)`,
    /// `!has(k)`, joined by ` && `, or `all()` when empty.
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Selector, SelectorError> {
        let fail = |message: String| {
            let input = serde_json::to_string(ls).unwrap_or_else(|_| format!("{ls:?}"));
            SelectorError {
                input,
                column: 1,
                message,
            }
        };
        let mut terms = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            check_k8s_key(k).map_err(|why| fail(format!("matchLabels key {k:?} {why}")))?;
            check_k8s_value(v)
                .map_err(|why| fail(format!("matchLabels[{k:?}] value {v:?} {why}")))?;
            terms.push(Expr::Eq(k.clone(), v.clone()));
        }
        for (i, req) in ls.match_expressions.iter().flatten().enumerate() {
            let at = format!("matchExpressions[{i}]");
            let key = &req.key;
            check_k8s_key(key).map_err(|why| fail(format!("{at}: key {key:?} {why}")))?;
            let values = req.values.as_deref().unwrap_or_default();
            for v in values {
                check_k8s_value(v).map_err(|why| fail(format!("{at}: value {v:?} {why}")))?;
            }
            let set = || values.iter().cloned().collect::<BTreeSet<_>>();
            let op = req.operator.as_str();
            let term = match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(fail(format!(
                        "{at}: operator {op} needs at least one value"
                    )));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(fail(format!("{at}: operator {op} takes no values")));
                }
                "In" => Expr::In(key.clone(), set()),
                "NotIn" => Expr::NotIn(key.clone(), set()),
                "Exists" => Expr::Has(key.clone()),
                "DoesNotExist" => Expr::Has(key.clone()).negate(),
                _ => {
                    return Err(fail(format!(
                        "{at}: unknown operator {op:?}; valid operators are In, NotIn, Exists and DoesNotExist"
                    )));
                }
            };
            terms.push(term);
        }
        if terms.is_empty() {
            return Ok(Selector::all());
        }
        let text = terms
            .iter()
            .map(Expr::to_string)
            .collect::<Vec<_>>()
            .join(" && ");
        let expr = if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        };
        Ok(Selector { text, expr })
    }
}

/// Why `expr` cannot be written as selector text, if it cannot.
fn unwritable(expr: &Expr) -> Option<String> {
    let check = |k: &str, values: &[&String]| {
        if !parser::is_label_key(k) {
            return Some(format!("label key {k:?} is not a run of [A-Za-z0-9_./-]"));
        }
        values
            .iter()
            .find(|v| !ast::is_quotable(v))
            .map(|v| format!("value {v:?} contains both kinds of quote, so it cannot be written"))
    };
    match expr {
        Expr::All | Expr::Global => None,
        Expr::Has(k) => check(k, &[]),
        Expr::Eq(k, v)
        | Expr::Ne(k, v)
        | Expr::Contains(k, v)
        | Expr::StartsWith(k, v)
        | Expr::EndsWith(k, v) => check(k, &[v]),
        Expr::In(k, set) | Expr::NotIn(k, set) => check(k, &set.iter().collect::<Vec<_>>()),
        Expr::Not(e) => unwritable(e),
        Expr::And(es) | Expr::Or(es) => es.iter().find_map(unwritable),
    }
}

/// Kubernetes `IsQualifiedName`: an optional DNS-1123 subdomain prefix and `/`, then a name of
/// at most 63 characters: alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn check_k8s_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err(
                "is not a valid label key: the prefix before `/` must be 1 to 253 characters"
                    .into(),
            );
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !p.split('.').all(label_ok) {
            return Err(
                "is not a valid label key: the prefix before `/` must be a DNS subdomain \
                        (lower-case alphanumerics, `-` and `.`)"
                    .into(),
            );
        }
    }
    if name.is_empty() {
        return Err("is not a valid label key: the name part must not be empty".into());
    }
    check_k8s_name(name).map_err(|why| format!("is not a valid label key: the name part {why}"))
}

/// Kubernetes `IsValidLabelValue`: empty, or a name as in [`check_k8s_key`].
fn check_k8s_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_k8s_name(value).map_err(|why| format!("is not a valid label value: it {why}"))
}

fn check_k8s_name(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be at most 63 characters".into());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let middle_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !middle_ok || !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err("must consist of alphanumerics, `-`, `_` and `.`, and start and end with an alphanumeric".into());
    }
    Ok(())
}

/// True if `text` contains a template placeholder, `{{...}}` (Helm, Go templates) or `${...}`
/// (shell, envsubst): a sign that a manifest was used without rendering it. For lint; parsing
/// such text usually fails anyway, and the parse error then mentions it.
pub fn contains_template_placeholder(text: &str) -> bool {
    let closed_after = |open: &str, close: &str| {
        text.find(open)
            .and_then(|i| text.get(i + open.len()..))
            .is_some_and(|rest| rest.contains(close))
    };
    closed_after("{{", "}}") || closed_after("${", "}")
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Selector {}

impl hash::Hash for Selector {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({:?})", self.expr.to_string())
    }
}

/// The canonical text: what Calico's `Selector.String()` prints, e.g. `(a == "b" && has(c))`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// Serialises as the canonical text.
impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.expr)
    }
}

/// Deserialises from selector text.
impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
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
