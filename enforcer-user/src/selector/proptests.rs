//! Property tests: the parser never panics, canonical text round-trips, and Kubernetes label
//! selectors convert with Kubernetes semantics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::{collection, option, prelude::*};

use super::*;

/// Label keys: a few that collide often (including words the tokenizer treats specially
/// elsewhere), and arbitrary valid keys.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "a", "b", "c", "has", "all", "global", "in", "not", "contains", "starts", "ends",
            "k8s-app", "projectcalico.org/name", "x_y.z", "0", "-", "/",
        ])
        .prop_map(String::from),
        1 => "[a-zA-Z0-9_./-]{1,12}",
    ]
}

/// Values: small alphabet (so comparisons hit) including quotes, spaces and operators.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["", "a", "b", "ab", "ba", "x y", "'", "\"", "&&", "{}", "é"])
            .prop_map(String::from),
        1 => "[ab'\" (){},!=&|é\\\\]{0,6}",
    ]
    .prop_filter("a literal cannot hold both kinds of quote", |v| {
        !(v.contains('"') && v.contains('\''))
    })
}

fn labels() -> impl Strategy<Value = Labels> {
    collection::btree_map(key(), value(), 0..5)
}

fn leaf() -> impl Strategy<Value = Expr> {
    let set = || collection::btree_set(value(), 0..4);
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
        (key(), set()).prop_map(|(k, s)| Expr::In(k, s)),
        (key(), set()).prop_map(|(k, s)| Expr::NotIn(k, s)),
    ]
}

/// Expressions in the parser's normal form: `&&`/`||` with two or more operands, no `!!`.
fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Expr::negate),
            collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

/// Strings built from selector fragments, to reach deep into the parser.
fn selector_like() -> impl Strategy<Value = String> {
    let fragment = prop::sample::select(vec![
        "(",
        ")",
        "!",
        "!=",
        "==",
        "=",
        "&&",
        "&",
        "||",
        "|",
        "{",
        "}",
        ",",
        " ",
        "\t",
        "\n",
        "'v'",
        "\"v\"",
        "'",
        "\"",
        "a",
        "b/c",
        "has(",
        "has(a)",
        "all()",
        "all(",
        "global()",
        "global(",
        " in ",
        "in",
        " not in ",
        "not",
        " contains ",
        " starts with ",
        " ends with ",
        "starts",
        "ends",
        "with",
        "é",
        "%",
        "{{",
        "}}",
        "${",
    ]);
    collection::vec(fragment, 0..24).prop_map(|v| v.concat())
}

fn check_parse_total(text: &str) -> Result<(), TestCaseError> {
    match Selector::parse(text) {
        Ok(s) => {
            // Whatever parses has a canonical form that parses back to the same thing.
            let canon = s.to_string();
            let again = Selector::parse(&canon)
                .map_err(|e| TestCaseError::fail(format!("{canon:?}: {e}")))?;
            prop_assert_eq!(&again, &s);
            prop_assert_eq!(again.to_string(), canon);
        }
        Err(e) => {
            prop_assert!(
                e.column >= 1 && e.column <= text.chars().count() + 1,
                "column {} for {:?}",
                e.column,
                text
            );
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// (a) Arbitrary text never panics the parser, and errors point inside the input.
    #[test]
    fn parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_parse_total(&text)?;
    }

    /// (a) Selector-shaped text never panics the parser either.
    #[test]
    fn parser_never_panics_on_selector_fragments(text in selector_like()) {
        check_parse_total(&text)?;
    }

    /// (b) Canonical text of any expression re-parses to an equal expression that evaluates
    /// identically.
    #[test]
    fn canonical_text_round_trips(e in expr(), ls in collection::vec(labels(), 1..6)) {
        let text = e.to_string();
        let s = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        prop_assert_eq!(s.expr(), &e, "text {:?}", text);
        prop_assert_eq!(s.to_string(), text.clone());
        prop_assert_eq!(Selector::from_expr(&e).ok(), Some(s.clone()));
        for l in &ls {
            for (all, global) in [(true, false), (true, true), (false, false), (false, true)] {
                prop_assert_eq!(s.evaluate_with(l, all, global), e.evaluate(l, all, global), "{} on {:?}", text, l);
            }
            if s.is_all() {
                prop_assert!(s.matches(l) && s.evaluate(l, true), "is_all() but {} fails on {:?}", text, l);
            }
        }
        let mut keys = BTreeSet::new();
        e.collect_label_keys(&mut keys);
        prop_assert_eq!(s.label_keys(), keys);
    }

    /// (b) Evaluation agrees with a direct reading of the semantics, and `and` is conjunction.
    #[test]
    fn evaluation_matches_reference(a in expr(), b in expr(), l in labels(), global in any::<bool>()) {
        let sa = Selector::from_expr(&a).unwrap();
        let sb = Selector::from_expr(&b).unwrap();
        prop_assert_eq!(sa.evaluate(&l, global), reference_eval(&a, &l, global));
        let both = sa.and(&sb);
        prop_assert_eq!(both.evaluate(&l, global), sa.evaluate(&l, global) && sb.evaluate(&l, global));
        prop_assert_eq!(&Selector::parse(both.as_str()).unwrap(), &both);
        // (A side dropped for being trivially true may have mentioned global().)
        prop_assert!(!both.uses_global() || sa.uses_global() || sb.uses_global());
    }

    /// (c) from_label_selector agrees with Kubernetes semantics evaluated directly.
    #[test]
    fn label_selector_has_kubernetes_semantics(ls in label_selector(), sets in collection::vec(k8s_labels(), 1..8)) {
        let s = Selector::from_label_selector(&ls).unwrap();
        prop_assert_eq!(&Selector::parse(s.as_str()).unwrap(), &s);
        prop_assert_eq!(s.is_all(), ls.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && ls.match_expressions.as_ref().is_none_or(Vec::is_empty));
        for l in &sets {
            prop_assert_eq!(s.matches(l), k8s_matches(&ls, l), "{} on {:?}", s, l);
        }
    }

    /// (c) Requirements Kubernetes rejects are rejected.
    #[test]
    fn invalid_label_selectors_are_rejected(
        ls in label_selector(),
        bad in prop_oneof![
            (k8s_key(), prop::sample::select(vec!["In", "NotIn"]))
                .prop_map(|(k, op)| LabelSelectorRequirement { key: k, operator: op.into(), values: Some(vec![]) }),
            (k8s_key(), prop::sample::select(vec!["Exists", "DoesNotExist"]))
                .prop_map(|(k, op)| LabelSelectorRequirement { key: k, operator: op.into(), values: Some(vec!["v".into()]) }),
            (k8s_key(), "[a-zA-Z]{0,8}")
                .prop_filter("valid operator", |(_, op)| !["In", "NotIn", "Exists", "DoesNotExist"].contains(&op.as_str()))
                .prop_map(|(k, op)| LabelSelectorRequirement { key: k, operator: op, values: None }),
        ],
        at in any::<prop::sample::Index>(),
    ) {
        let mut ls = ls;
        let reqs = ls.match_expressions.get_or_insert_with(Vec::new);
        let i = at.index(reqs.len() + 1);
        reqs.insert(i, bad);
        let e = Selector::from_label_selector(&ls).unwrap_err();
        let at = format!("matchExpressions[{i}]");
        prop_assert!(e.message.contains(&at), "{}", e);
    }
}

/// The semantics spelled out operator by operator, independently of `Expr::evaluate`.
fn reference_eval(e: &Expr, l: &Labels, global: bool) -> bool {
    let get = |k: &String| l.get(k);
    match e {
        Expr::All => true,
        Expr::Global => global,
        Expr::Has(k) => get(k).is_some(),
        Expr::Eq(k, v) => get(k) == Some(v),
        Expr::Ne(k, v) => get(k) != Some(v),
        Expr::Contains(k, v) => get(k).is_some_and(|x| x.contains(v.as_str())),
        Expr::StartsWith(k, v) => get(k).is_some_and(|x| x.get(..v.len()) == Some(v.as_str())),
        Expr::EndsWith(k, v) => get(k)
            .is_some_and(|x| x.len() >= v.len() && x.get(x.len() - v.len()..) == Some(v.as_str())),
        Expr::In(k, set) => get(k).is_some_and(|x| set.iter().any(|s| s == x)),
        Expr::NotIn(k, set) => !get(k).is_some_and(|x| set.iter().any(|s| s == x)),
        Expr::Not(inner) => !reference_eval(inner, l, global),
        Expr::And(es) => es.iter().filter(|x| reference_eval(x, l, global)).count() == es.len(),
        Expr::Or(es) => es.iter().filter(|x| reference_eval(x, l, global)).count() > 0,
    }
}

fn k8s_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "app",
        "tier",
        "env",
        "example.com/role",
        "a_b.c-d",
        "x",
    ])
    .prop_map(String::from)
}

fn k8s_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "web", "db", "v1.2", "x_y", "a-b"]).prop_map(String::from)
}

fn k8s_labels() -> impl Strategy<Value = Labels> {
    collection::btree_map(k8s_key(), k8s_value(), 0..5)
}

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    let values = || collection::vec(k8s_value(), 1..4);
    prop_oneof![
        (k8s_key(), values()).prop_map(|(key, v)| LabelSelectorRequirement {
            key,
            operator: "In".into(),
            values: Some(v)
        }),
        (k8s_key(), values()).prop_map(|(key, v)| LabelSelectorRequirement {
            key,
            operator: "NotIn".into(),
            values: Some(v)
        }),
        (k8s_key(), any::<bool>()).prop_map(|(key, some)| LabelSelectorRequirement {
            key,
            operator: "Exists".into(),
            values: some.then(Vec::new),
        }),
        (k8s_key(), any::<bool>()).prop_map(|(key, some)| LabelSelectorRequirement {
            key,
            operator: "DoesNotExist".into(),
            values: some.then(Vec::new),
        }),
    ]
}

fn label_selector() -> impl Strategy<Value = LabelSelector> {
    (
        option::of(collection::btree_map(k8s_key(), k8s_value(), 0..3)),
        option::of(collection::vec(requirement(), 0..4)),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

/// Kubernetes `LabelSelectorAsSelector` semantics, evaluated directly.
fn k8s_matches(ls: &LabelSelector, l: &Labels) -> bool {
    let labels_ok = ls
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| l.get(k) == Some(v));
    let exprs_ok = ls.match_expressions.iter().flatten().all(|r| {
        let values = r.values.clone().unwrap_or_default();
        match (r.operator.as_str(), l.get(&r.key)) {
            ("In", Some(v)) => values.contains(v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !values.contains(v),
            ("NotIn", None) => true,
            ("Exists", got) => got.is_some(),
            ("DoesNotExist", got) => got.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}
