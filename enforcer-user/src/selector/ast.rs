//! The selector syntax tree, its evaluation and its canonical text.
//!
//! The node kinds and their semantics follow Calico's
//! `libcalico-go/lib/selector/parser/ast.go`; the canonical text is what Calico's
//! `Selector.String()` prints (`&&`/`||` groups always in parentheses, `!` written right before
//! its operand, set members sorted and de-duplicated, values in double quotes unless they
//! contain one).

use std::{
    collections::BTreeSet,
    fmt::{self, Write as _},
};

use crate::model::Labels;

/// A parsed selector expression.
///
/// Built only by the parser (directly, or through [`super::Selector::from_expr`], which prints
/// and re-parses), so every instance satisfies these invariants: `And` and `Or` have at least
/// two operands, a `Not` never wraps another `Not`, label keys are non-empty runs of
/// `[A-Za-z0-9_./-]`, and no value contains both kinds of quote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`: matches everything (but see [`super::Selector::evaluate_with`]).
    All,
    /// `global()`: true when evaluated for a non-namespaced (global) resource; see
    /// [`super::Selector::evaluate_with`].
    Global,
    /// `has(k)`: the label is present (with any value).
    Has(String),
    /// `k == "v"`: the label is present with exactly this value.
    Eq(String, String),
    /// `k != "v"`: the label is absent, or present with another value.
    Ne(String, String),
    /// `k contains "s"`: the label is present and its value contains `s`.
    Contains(String, String),
    /// `k starts with "s"`: the label is present and its value starts with `s`.
    StartsWith(String, String),
    /// `k ends with "s"`: the label is present and its value ends with `s`.
    EndsWith(String, String),
    /// `k in {"a", "b"}`: the label is present with one of the values (never, for `{}`).
    In(String, BTreeSet<String>),
    /// `k not in {"a", "b"}`: the label is absent, or present with none of the values
    /// (always, for `{}`).
    NotIn(String, BTreeSet<String>),
    /// `!e`.
    Not(Box<Expr>),
    /// `e1 && e2 && ...` (two or more operands).
    And(Vec<Expr>),
    /// `e1 || e2 || ...` (two or more operands).
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates against `labels`, with `all()` evaluating to `all` and `global()` to `global`
    /// (see [`super::Selector::evaluate_with`]).
    pub fn evaluate(&self, labels: &Labels, all: bool, global: bool) -> bool {
        match self {
            Expr::All => all,
            Expr::Global => global,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Eq(k, v) => labels.get(k).is_some_and(|l| l == v),
            Expr::Ne(k, v) => labels.get(k).is_none_or(|l| l != v),
            Expr::Contains(k, v) => labels.get(k).is_some_and(|l| l.contains(v.as_str())),
            Expr::StartsWith(k, v) => labels.get(k).is_some_and(|l| l.starts_with(v.as_str())),
            Expr::EndsWith(k, v) => labels.get(k).is_some_and(|l| l.ends_with(v.as_str())),
            Expr::In(k, set) => labels.get(k).is_some_and(|l| set.contains(l)),
            Expr::NotIn(k, set) => labels.get(k).is_none_or(|l| !set.contains(l)),
            Expr::Not(e) => !e.evaluate(labels, all, global),
            Expr::And(es) => es.iter().all(|e| e.evaluate(labels, all, global)),
            Expr::Or(es) => es.iter().any(|e| e.evaluate(labels, all, global)),
        }
    }

    /// `!self`, collapsing a double negation (as Calico's parser does for `!!e`).
    pub(crate) fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    /// True for expressions that are true for every label set and either value of `global()`
    /// (with `all()` true), judged syntactically: `all()`, `k not in {}`, and `&&`/`||`/`!` combinations that are
    /// trivially so. (No SAT solving: `has(a) || !has(a)` is not recognised.)
    pub(crate) fn is_trivially_true(&self) -> bool {
        match self {
            Expr::All => true,
            Expr::NotIn(_, set) => set.is_empty(),
            Expr::Not(e) => e.is_trivially_false(),
            Expr::And(es) => es.iter().all(Expr::is_trivially_true),
            Expr::Or(es) => es.iter().any(Expr::is_trivially_true),
            _ => false,
        }
    }

    fn is_trivially_false(&self) -> bool {
        match self {
            Expr::In(_, set) => set.is_empty(),
            Expr::Not(e) => e.is_trivially_true(),
            Expr::And(es) => es.iter().any(Expr::is_trivially_false),
            Expr::Or(es) => es.iter().all(Expr::is_trivially_false),
            _ => false,
        }
    }

    pub(crate) fn uses_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(e) => e.uses_global(),
            Expr::And(es) | Expr::Or(es) => es.iter().any(Expr::uses_global),
            _ => false,
        }
    }

    pub(crate) fn collect_label_keys(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has(k)
            | Expr::Eq(k, _)
            | Expr::Ne(k, _)
            | Expr::Contains(k, _)
            | Expr::StartsWith(k, _)
            | Expr::EndsWith(k, _)
            | Expr::In(k, _)
            | Expr::NotIn(k, _) => {
                out.insert(k.clone());
            }
            Expr::Not(e) => e.collect_label_keys(out),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.collect_label_keys(out)),
        }
    }
}

/// Writes `s` as a selector string literal: double quotes unless `s` contains one (Calico's
/// `appendLabelOpAndQuotedString`). A value with both kinds of quote cannot be written; the
/// parser never produces one and the constructors reject them.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let quote = if s.contains('"') { '\'' } else { '"' };
    f.write_char(quote)?;
    f.write_str(s)?;
    f.write_char(quote)
}

/// Whether `s` can be written as a selector string literal.
pub(crate) fn is_quotable(s: &str) -> bool {
    !(s.contains('"') && s.contains('\''))
}

fn write_set(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    op: &str,
    set: &BTreeSet<String>,
) -> fmt::Result {
    write!(f, "{key} {op} {{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_char('}')
}

fn write_joined(f: &mut fmt::Formatter<'_>, es: &[Expr], op: &str) -> fmt::Result {
    f.write_char('(')?;
    for (i, e) in es.iter().enumerate() {
        if i > 0 {
            f.write_str(op)?;
        }
        write!(f, "{e}")?;
    }
    f.write_char(')')
}

/// The canonical text (Calico's `String()` form).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let binop = |f: &mut fmt::Formatter<'_>, k: &str, op: &str, v: &str| {
            write!(f, "{k} {op} ")?;
            write_quoted(f, v)
        };
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => binop(f, k, "==", v),
            Expr::Ne(k, v) => binop(f, k, "!=", v),
            Expr::Contains(k, v) => binop(f, k, "contains", v),
            Expr::StartsWith(k, v) => binop(f, k, "starts with", v),
            Expr::EndsWith(k, v) => binop(f, k, "ends with", v),
            Expr::In(k, set) => write_set(f, k, "in", set),
            Expr::NotIn(k, set) => write_set(f, k, "not in", set),
            Expr::Not(e) => write!(f, "!{e}"),
            Expr::And(es) => write_joined(f, es, " && "),
            Expr::Or(es) => write_joined(f, es, " || "),
        }
    }
}
