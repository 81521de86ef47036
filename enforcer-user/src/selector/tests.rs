//! Unit tests. The tables marked "Calico" are ported from projectcalico/calico,
//! `libcalico-go/lib/selector/parser/parser_test.go` (`selectorTests`, `badSelectors`,
//! `canonicalisationTests` and the visitor tests' canonical outputs) and
//! `libcalico-go/lib/selector/tokenizer/tokenizer_test.go` (`tokenTests`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use super::*;

type L<'a> = &'a [(&'a str, &'a str)];

fn labels(pairs: L<'_>) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn parse_err(text: &str) -> SelectorError {
    match Selector::parse(text) {
        Ok(s) => panic!("{text:?} should not parse, got {s:?}"),
        Err(e) => e,
    }
}

/// Calico `selectorTests`: (selector, label sets that match, label sets that don't).
const CALICO_SELECTOR_TESTS: &[(&str, &[L<'static>], &[L<'static>])] = &[
    (
        r#"a == "b""#,
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("c", "d")]],
    ),
    (
        r#"a == "b" && c == "d""#,
        &[&[("a", "b"), ("c", "d")]],
        &[
            &[],
            &[("a", "b"), ("c", "e")],
            &[("a", "c"), ("c", "d")],
            &[("c", "d")],
            &[("a", "b")],
        ],
    ),
    (
        r#"a == "b" || c == "d""#,
        &[&[("a", "b"), ("c", "d")], &[("a", "b")], &[("c", "d")]],
        &[&[], &[("a", "e"), ("c", "e")], &[("c", "e")], &[("a", "e")]],
    ),
    (
        r#"a in {"'", '"', "c"}"#,
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
        &[&[], &[("a", "e")]],
    ),
    (
        r#"a not in {"'", '"', "c"}"#,
        &[&[], &[("a", "e")]],
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
    ),
    ("a == 'a'", &[&[("a", "a")]], &[]),
    (r#"a == "a""#, &[&[("a", "a")]], &[]),
    (r#"a != "b""#, &[&[("a", "a")]], &[]),
    (r#"a != "a""#, &[&[]], &[]),
    (
        r#"a contains "a""#,
        &[&[("a", "a")], &[("a", "bab")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("b", "aaa")]],
    ),
    (
        r#"a starts with "a""#,
        &[&[("a", "a")], &[("a", "abb")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "baa")], &[("b", "aaa")]],
    ),
    (
        r#"a ends with "a""#,
        &[&[("a", "a")], &[("a", "bba")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "aab")], &[("b", "aaa")]],
    ),
    (r#"a in {"a"}"#, &[&[("a", "a")]], &[]),
    (r#"!a in {"a"}"#, &[&[("a", "b")]], &[]),
    (r#"a in {"a", "b"}"#, &[&[("a", "a")]], &[]),
    (r#"a in {"a", "b"}"#, &[&[("a", "b")]], &[]),
    (r#"a not in {"d", "e"}"#, &[&[("a", "a")]], &[]),
    ("has(a)", &[&[("a", "b")]], &[]),
    ("!has(a)", &[&[("b", "b")]], &[]),
    ("", &[&[]], &[]),
    (" ", &[&[]], &[]),
    ("", &[&[("a", "b")]], &[]),
    ("all()", &[&[]], &[]),
    (" all()", &[&[]], &[]),
    (" all()", &[&[("a", "b")]], &[]),
    // Calico evaluates global() as true; here it is the `global` argument, so these two are
    // checked with global = true below (and global() is false when it is false).
    ("global()", &[&[]], &[]),
    (" global()", &[&[]], &[]),
    (" global()", &[&[("a", "b")]], &[]),
    ("a == 'a'", &[], &[&[("a", "b")]]),
    ("a == 'a'", &[], &[&[]]),
    (r#"a != "a""#, &[], &[&[("a", "a")]]),
    ("a != 'a'", &[], &[&[("a", "a")]]),
    (r#"a in {"a"}"#, &[], &[&[("a", "b")]]),
    (r#"a not in {"a"}"#, &[], &[&[("a", "a")]]),
    (r#"a in {"a", "b"}"#, &[], &[&[("a", "c")]]),
    ("has(b)", &[], &[&[("a", "b")]]),
    ("!!has(b)", &[], &[&[("a", "b")]]),
    ("! has(a)", &[], &[&[("a", "b")]]),
    ("!has(a)", &[], &[&[("a", "b")]]),
    ("!!! has(a)", &[], &[&[("a", "b")]]),
    ("!!!has(a)", &[], &[&[("a", "b")]]),
    ("!! ! has(a)", &[], &[&[("a", "b")]]),
    ("! !!has(a)", &[], &[&[("a", "b")]]),
    // Boolean expressions...
    (
        "a == 'a1' && b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a == 'a1' && b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && !b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "!a == 'a1' && b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    ("has(a) && !has(b)", &[&[("a", "a")]], &[]),
    ("!has(b) && has(a)", &[&[("a", "a")]], &[]),
    ("!(!has(a) || has(b))", &[&[("a", "a")]], &[]),
    ("!(has(b) || !has(a))", &[&[("a", "a")]], &[]),
    (
        "a == 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a == 'a1' || b != 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a != 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a != 'a1' || b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "! a == 'a1' || ! b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
];

#[test]
fn calico_selector_tests_match_and_survive_canonicalisation() {
    for (text, matching, non_matching) in CALICO_SELECTOR_TESTS {
        let s = sel(text);
        let canon = sel(&s.to_string());
        assert_eq!(canon, s, "{text:?} canonicalised to {s}");
        let global = s.uses_global();
        for m in *matching {
            let l = labels(m);
            assert!(s.evaluate(&l, global), "{text:?} should match {l:?}");
            assert!(
                canon.evaluate(&l, global),
                "canonical {s} should match {l:?}"
            );
        }
        for n in *non_matching {
            let l = labels(n);
            assert!(!s.evaluate(&l, global), "{text:?} should not match {l:?}");
            assert!(
                !canon.evaluate(&l, global),
                "canonical {s} should not match {l:?}"
            );
        }
    }
}

/// Calico `badSelectors`, with the column and expectation this parser reports.
const CALICO_BAD_SELECTORS: &[(&str, usize, &str)] = &[
    ("b == b", 6, "expected a quoted string"), // label == label
    ("b contains b", 12, "expected a quoted string"), // label contains label
    ("b starts with b", 15, "expected a quoted string"), // label starts with label
    ("b ends with b", 13, "expected a quoted string"), // label ends with label
    ("'b1' == b", 1, "expected a label key"),  // literal on lhs
    ("b", 2, "expected an operator after label key `b`"), // bare label
    ("a b", 3, "expected an operator after label key `a`"), // garbage
    ("!", 2, "expected a label key"),          // garbage
    (r#"foo == "bar" &"#, 14, "expected `&&`"),
    (r#"foo == "bar" |"#, 14, "expected `||`"),
    ("foo != ||", 8, "expected a quoted string"),
    (r#"foo in {"", ||"#, 13, "expected a quoted string or `}`"),
    (r#"foo in """#, 8, "expected a set literal"),
    (r#""FOO"#, 1, "unterminated string"),
    (r#""FOO'"#, 1, "unterminated string"),
    ("'FOO", 1, "unterminated string"),
    ("(", 2, "expected a label key"),
    (
        r#"(a == "foo""#,
        12,
        "expected `&&`, `||` or `)` (to close the `(` at column 1)",
    ),
    (")", 1, "expected a label key"),
    ("()", 2, "expected a label key"),
    (
        "%",
        1,
        "expected a label key, `all()`, `global()`, `has(`, `!` or `(`, found the character '%'",
    ),
    (r#"a == "b" && %"#, 13, "expected a label key"),
    (r#"a == "b" || %"#, 13, "expected a label key"),
    ("a ", 3, "expected an operator after label key `a`"),
    ("has(foo) &&", 12, "expected a label key"),
];

#[test]
fn calico_bad_selectors_are_rejected_with_column_and_expectation() {
    for (text, column, expected) in CALICO_BAD_SELECTORS {
        let e = parse_err(text);
        assert_eq!(e.column, *column, "{text:?}: {e}");
        assert!(
            e.message.contains(expected),
            "{text:?}: message {:?} lacks {expected:?}",
            e.message
        );
        assert_eq!(e.input, *text);
    }
}

/// Calico `canonicalisationTests` plus the canonical outputs of its visitor tests (with the
/// visitor's `visited/` prefix removed).
const CALICO_CANONICAL: &[(&str, &str)] = &[
    ("", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
    (r#"a == "'""#, r#"a == "'""#),
    (r#"a == '"'"#, r#"a == '"'"#),
    (r#"a contains '"'"#, r#"a contains '"'"#),
    (r#"a contains "'""#, r#"a contains "'""#),
    (r#"a startswith '"'"#, r#"a starts with '"'"#),
    (r#"a endswith "'""#, r#"a ends with "'""#),
    (r#"a!='"'"#, r#"a != '"'"#),
    // Set items get sorted/de-duped.
    (r#"a in {"d"}"#, r#"a in {"d"}"#),
    (r#"a in {"a", "b"}"#, r#"a in {"a", "b"}"#),
    (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
    (
        r#"a in {"z", "x", "y", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
    ),
    (
        r#"a in {"z", "z", "x", "y", "x", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
    ),
    // Visitor tests.
    ("k == 'v'", r#"k == "v""#),
    ("k != 'v'", r#"k != "v""#),
    ("k contains 'v'", r#"k contains "v""#),
    ("k starts with 'v'", r#"k starts with "v""#),
    ("k ends with 'v'", r#"k ends with "v""#),
    ("k == 'v' && x == 'y'", r#"(k == "v" && x == "y")"#),
    ("k == 'v' || has(x)", r#"(k == "v" || has(x))"#),
    ("!(k == 'v')", r#"!k == "v""#),
    ("k in {'v'}", r#"k in {"v"}"#),
    ("k not in {'v'}", r#"k not in {"v"}"#),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        r#"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#,
    ),
];

#[test]
fn calico_canonicalisation() {
    for (input, expected) in CALICO_CANONICAL {
        let s = sel(input);
        assert_eq!(s.to_string(), *expected, "canonical form of {input:?}");
        let again = sel(expected);
        assert_eq!(
            again.to_string(),
            *expected,
            "canonical form is a fixed point"
        );
        assert_eq!(again, s);
    }
}

/// Calico `tokenTests` that tokenize into a whole selector, with the expression they parse to.
#[test]
fn calico_tokenizer_cases() {
    let k = |s: &str| s.to_string();
    let cases: Vec<(&str, Expr)> = vec![
        (r#"a=="b""#, Expr::Eq(k("a"), k("b"))),
        (r#"label == "value""#, Expr::Eq(k("label"), k("value"))),
        (
            r#"label contains "value""#,
            Expr::Contains(k("label"), k("value")),
        ),
        (
            r#"contains contains "contains""#,
            Expr::Contains(k("contains"), k("contains")),
        ),
        (
            "contains contains 'contains'",
            Expr::Contains(k("contains"), k("contains")),
        ),
        (
            r#"label contains"value""#,
            Expr::Contains(k("label"), k("value")),
        ),
        (
            r#"label startswith "value""#,
            Expr::StartsWith(k("label"), k("value")),
        ),
        (
            r#"label endswith "value""#,
            Expr::EndsWith(k("label"), k("value")),
        ),
        (
            r#"label starts with "value""#,
            Expr::StartsWith(k("label"), k("value")),
        ),
        (
            r#"startswith starts with "value""#,
            Expr::StartsWith(k("startswith"), k("value")),
        ),
        (
            r#"label ends with "value""#,
            Expr::EndsWith(k("label"), k("value")),
        ),
        (
            r#"endswith ends with "value""#,
            Expr::EndsWith(k("endswith"), k("value")),
        ),
        (
            r#"label starts  with "value""#,
            Expr::StartsWith(k("label"), k("value")),
        ),
        (
            r#"label ends  with "value""#,
            Expr::EndsWith(k("label"), k("value")),
        ),
        ("has(calico/k8s_ns)", Expr::Has(k("calico/k8s_ns"))),
        (
            "has(calico/k8s_ns/role)",
            Expr::Has(k("calico/k8s_ns/role")),
        ),
        (
            "has(calico/k8s_NS-.1/role)",
            Expr::Has(k("calico/k8s_NS-.1/role")),
        ),
        (
            r#"calico/k8s_ns == "kube-system" && k8s-app == "kube-dns""#,
            Expr::And(vec![
                Expr::Eq(k("calico/k8s_ns"), k("kube-system")),
                Expr::Eq(k("k8s-app"), k("kube-dns")),
            ]),
        ),
        ("a not in {}", Expr::NotIn(k("a"), BTreeSet::new())),
        (r#"a not in {"a"}"#, Expr::NotIn(k("a"), [k("a")].into())),
        (
            r#"a not in {"a","B"}"#,
            Expr::NotIn(k("a"), [k("a"), k("B")].into()),
        ),
        ("global()", Expr::Global),
        ("all()", Expr::All),
        // The spaced and unspaced variants of the tokenizer's `not in` cases, made parseable.
        (
            r#"a  not  in  {"bar"}  &&  ! has( foo )  ||  b  in  {"c"} "#,
            Expr::Or(vec![
                Expr::And(vec![
                    Expr::NotIn(k("a"), [k("bar")].into()),
                    Expr::Has(k("foo")).negate(),
                ]),
                Expr::In(k("b"), [k("c")].into()),
            ]),
        ),
        (
            r#"a notin{"bar"}&&!has(foo)||b in{"c"}"#,
            Expr::Or(vec![
                Expr::And(vec![
                    Expr::NotIn(k("a"), [k("bar")].into()),
                    Expr::Has(k("foo")).negate(),
                ]),
                Expr::In(k("b"), [k("c")].into()),
            ]),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(sel(text).expr(), &expected, "{text:?}");
    }
    // Tokenizer errors.
    for (text, column, expected) in [
        (
            r#"label starts foo "value""#,
            14,
            "expected `with` after `starts`",
        ),
        (
            r#"label ends foo "value""#,
            12,
            "expected `with` after `ends`",
        ),
        (
            r#"label squiggles "value""#,
            7,
            "expected an operator after label key `label`",
        ),
        // These tokenize in Calico but do not parse.
        (
            r#"a not in "bar" && !has(foo) || b in c"#,
            10,
            "expected a set literal",
        ),
        (
            r#"a notin"bar"&&!has(foo)||b in"c""#,
            8,
            "expected a set literal",
        ),
    ] {
        let e = parse_err(text);
        assert_eq!(e.column, column, "{text:?}: {e}");
        assert!(e.message.contains(expected), "{text:?}: {e}");
    }
}

#[test]
fn operators_have_calico_semantics() {
    let cases: &[(&str, L<'_>, bool)] = &[
        // != and not in match when the label is absent; the others need it present.
        ("k != 'v'", &[], true),
        ("k != 'v'", &[("k", "v")], false),
        ("k != 'v'", &[("k", "w")], true),
        ("k not in {'a'}", &[], true),
        ("k not in {'a'}", &[("k", "a")], false),
        ("k not in {'a'}", &[("k", "b")], true),
        ("k contains ''", &[], false),
        ("k contains ''", &[("k", "")], true),
        ("k starts with ''", &[("k", "x")], true),
        ("k ends with 'x'", &[("k", "xx")], true),
        ("k == ''", &[("k", "")], true),
        ("k == ''", &[], false),
        ("has(k)", &[("k", "")], true),
        // Empty sets: in {} never matches, not in {} always does.
        ("k in {}", &[("k", "")], false),
        ("k in {}", &[], false),
        ("k not in {}", &[], true),
        ("k not in {}", &[("k", "x")], true),
        // Trailing comma accepted, like Calico.
        ("k in {'a',}", &[("k", "a")], true),
        // Precedence: ! > && > ||.
        ("has(a) || has(b) && has(c)", &[("a", "1")], true),
        ("(has(a) || has(b)) && has(c)", &[("a", "1")], false),
        ("!has(a) && has(b)", &[("b", "1")], true),
        ("!(has(a) && has(b))", &[("a", "1"), ("b", "1")], false),
        ("!a == 'x' || has(z)", &[("a", "y")], true),
        ("!(!has(a))", &[("a", "1")], true),
        // Words are keys unless followed directly by `(`.
        ("all == 'x'", &[("all", "x")], true),
        (
            "has == 'x' && global == 'y'",
            &[("has", "x"), ("global", "y")],
            true,
        ),
        ("in == 'x'", &[("in", "x")], true),
        (
            "has( key.with/slash-and_underscore )",
            &[("key.with/slash-and_underscore", "")],
            true,
        ),
        ("\ta == 'b'\t", &[("a", "b")], true),
        (
            "a == 'with spaces && (stuff)'",
            &[("a", "with spaces && (stuff)")],
            true,
        ),
        ("a == 'ünïcödé'", &[("a", "ünïcödé")], true),
    ];
    for (text, l, expected) in cases {
        assert_eq!(
            sel(text).matches(&labels(l)),
            *expected,
            "{text:?} on {l:?}"
        );
    }
}

#[test]
fn global_evaluates_to_the_argument() {
    let s = sel("global()");
    assert!(s.uses_global());
    assert!(s.evaluate(&Labels::new(), true));
    assert!(!s.evaluate(&Labels::new(), false));
    assert!(!s.matches(&Labels::new()));
    assert!(!s.is_all());
    let s = sel("global() || has(a)");
    assert!(s.uses_global());
    assert!(s.matches(&labels(&[("a", "1")])));
    assert!(!s.matches(&labels(&[])));
    assert!(s.evaluate(&labels(&[]), true));
    let s = sel("!global()");
    assert!(s.matches(&Labels::new()));
    assert!(!s.evaluate(&Labels::new(), true));
    assert!(!sel("has(global)").uses_global());
    assert!(!sel("all()").uses_global());
}

#[test]
fn is_all_recognises_trivially_true_forms() {
    for text in [
        "",
        "  ",
        "\t",
        "all()",
        " ( all( ) ) ",
        "!!all()",
        "all() && all()",
        "has(a) || all()",
        "k not in {}",
        "!(k in {})",
        "!(has(a) && k in {})",
    ] {
        assert!(sel(text).is_all(), "{text:?}");
    }
    for text in [
        "has(a)",
        "global()",
        "!all()",
        "all() && has(a)",
        "k in {}",
        "k not in {'a'}",
        "has(a) || !has(a)",
    ] {
        assert!(!sel(text).is_all(), "{text:?}");
    }
    assert!(Selector::all().is_all());
    assert!(Selector::default().is_all());
}

#[test]
fn text_and_equality() {
    let s = sel("  a=='b'  ");
    assert_eq!(s.as_str(), "a=='b'");
    assert_eq!(s.to_string(), r#"a == "b""#);
    assert_eq!(s, sel(r#"a == "b""#));
    assert_ne!(s, sel(r#"a == "c""#));
    assert_eq!(sel(""), Selector::all());
    assert_eq!(sel("").as_str(), "");
    assert_eq!(Selector::all().as_str(), "all()");
    assert_eq!(format!("{s:?}"), r#"Selector("a == \"b\"")"#);
    let parsed: Selector = "has(x)".parse().unwrap();
    assert_eq!(parsed, sel("has(x)"));
    assert!("has(".parse::<Selector>().is_err());
}

#[test]
fn label_keys() {
    let s = sel(
        "a == 'x' && (has(b) || !c in {'1'}) && d not in {} || e contains 'q' && all() && global()",
    );
    let keys: Vec<String> = s.label_keys().into_iter().collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e"]);
    assert!(Selector::all().label_keys().is_empty());
}

#[test]
fn and_combines_and_simplifies() {
    let a = sel("has(a) || has(b)");
    let b = sel("c == 'd'");
    let both = a.and(&b);
    assert_eq!(both.as_str(), "(has(a) || has(b)) && (c == 'd')");
    assert_eq!(both, sel(both.as_str()));
    assert_eq!(both.to_string(), r#"((has(a) || has(b)) && c == "d")"#);
    assert!(both.matches(&labels(&[("a", "1"), ("c", "d")])));
    assert!(!both.matches(&labels(&[("a", "1")])));
    assert!(!both.matches(&labels(&[("c", "d")])));

    let x = sel("p == '1' && q == '2'");
    let y = sel("r == '3' && s == '4'");
    let xy = x.and(&y);
    assert_eq!(
        xy,
        sel(xy.as_str()),
        "the expression is what its text parses to"
    );

    assert_eq!(Selector::all().and(&b).as_str(), "c == 'd'");
    assert_eq!(b.and(&sel("")).as_str(), "c == 'd'");
    assert_eq!(b.and(&Selector::all()), b);
    assert!(Selector::all().and(&Selector::all()).is_all());
    assert!(sel("global()").and(&b).uses_global());
}

#[test]
fn error_columns_and_messages() {
    let cases: &[(&str, usize, &str)] = &[
        ("a = 'b'", 3, "expected `==`"),
        ("a == 'b' & has(c)", 10, "expected `&&`"),
        ("a == 'b' | has(c)", 10, "expected `||`"),
        (
            "a == 'b' has(c)",
            10,
            "expected `&&`, `||` or the end of the selector, found `has(c)`",
        ),
        ("a == 'b')", 9, "this `)` has no matching `(`"),
        ("has()", 5, "expected a label key after `has(`"),
        ("has(a", 6, "expected `)` to close `has(`"),
        ("has(a b)", 7, "expected `)` to close `has(`"),
        ("has (a)", 5, "expected an operator after label key `has`"),
        ("all(x)", 5, "expected `)` to close `all(`"),
        ("global( y)", 9, "expected `)` to close `global(`"),
        ("a in {'x' 'y'}", 11, "expected `,` or `}` in a set"),
        ("a in {,}", 7, "expected a quoted string or `}` in a set"),
        (
            "a in {'x'",
            10,
            "expected `,` or `}` in a set, found the end of the selector",
        ),
        ("a not 'x'", 7, "expected `in` after `not`"),
        ("a nothing {}", 6, "expected `in` after `not`"),
        (
            "a inx {'a'}",
            5,
            "expected a set literal `{...}` after `in`, found label key `x`",
        ),
        ("a == 'b' &&\n b == 'c'", 12, "only spaces and tabs"),
        ("a == 'b'\r\n", 9, "only spaces and tabs"),
        ("é == 'x'", 1, "found the character 'é'"),
        ("a == \"é\" && ü", 13, "found the character 'ü'"),
        (
            "a == 'x' && (b == 'y' || (c == 'z')",
            36,
            "to close the `(` at column 13",
        ),
        ("$x", 1, "expected a label key"),
        (
            "a == b'",
            6,
            "expected a quoted string ('...' or \"...\") after `==`, found label key `b`",
        ),
        ("a == 'b' && ! && c", 15, "found `&&`"),
        ("a ! has(b)", 3, "expected an operator after label key `a`"),
        ("a == 'b' c == 'd'", 10, "found label key `c`"),
    ];
    for (text, column, expected) in cases {
        let e = parse_err(text);
        assert_eq!(e.column, *column, "{text:?}: {e}");
        assert!(
            e.message.contains(expected),
            "{text:?}: message {:?} lacks {expected:?}",
            e.message
        );
    }
    let e = parse_err("a =");
    assert_eq!(
        e.to_string(),
        "invalid selector \"a =\": expected `==` (a single `=` is not an operator) at column 3"
    );
}

#[test]
fn nesting_is_bounded() {
    let ok = format!(
        "{}has(a){}",
        "(".repeat(parser::MAX_NESTING),
        ")".repeat(parser::MAX_NESTING)
    );
    assert!(sel(&ok).matches(&labels(&[("a", "")])));
    let deep = format!(
        "{}has(a){}",
        "(".repeat(parser::MAX_NESTING + 1),
        ")".repeat(parser::MAX_NESTING + 1)
    );
    let e = parse_err(&deep);
    assert!(e.message.contains("nested more than"), "{e}");
    assert_eq!(e.column, parser::MAX_NESTING + 1);
    // Runs of `!` and long flat chains need no recursion.
    let bangs = format!("{}has(a)", "!".repeat(100_001));
    assert!(sel(&bangs).matches(&labels(&[])));
    let chain = vec!["has(a)"; 10_000].join(" && ");
    assert!(sel(&chain).matches(&labels(&[("a", "")])));
    let huge = "(".repeat(1_000_000);
    assert!(Selector::parse(&huge).is_err());
}

#[test]
fn template_placeholders() {
    for text in [
        "{{ .Values.selector }}",
        "app == '{{ .Values.app }}'",
        "${SELECTOR}",
        "app == \"${APP}\"",
        "a{{b}}",
    ] {
        assert!(contains_template_placeholder(text), "{text:?}");
    }
    for text in [
        "app == 'web'",
        "a in {'x'}",
        "{{",
        "${",
        "$x",
        "a in {'{'} || b in {'}'}",
        "}} {{",
    ] {
        assert!(!contains_template_placeholder(text), "{text:?}");
    }
    let e = parse_err("{{ .Values.selector }}");
    assert_eq!(e.column, 1);
    assert!(
        e.message
            .contains("expected a label key, `all()`, `global()`, `has(`, `!` or `(`"),
        "{e}"
    );
    assert!(e.message.contains("unrendered template"), "{e}");
    let e = parse_err("app == ${APP}");
    assert_eq!(e.column, 8);
    assert!(e.message.contains("unrendered template"), "{e}");
    // A placeholder inside a string literal parses; lint catches it.
    assert!(Selector::parse("app == '{{ .Values.app }}'").is_ok());
    assert!(!parse_err("a ==").message.contains("template"));
}

#[test]
fn serde_round_trip() {
    let s = sel("a=='b'&&has(c)");
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, r#""(a == \"b\" && has(c))""#);
    let back: Selector = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let bad: Result<Selector, _> = serde_json::from_str(r#""a =""#);
    assert!(bad.unwrap_err().to_string().contains("expected `==`"));
    let y: Selector = serde_yaml::from_str("app == 'x'").unwrap();
    assert_eq!(y, sel("app == \"x\""));
}

#[test]
fn from_expr_validates_and_normalises() {
    let e = Expr::Not(Box::new(Expr::Not(Box::new(Expr::Has("a".into())))));
    assert_eq!(
        Selector::from_expr(&e).unwrap().expr(),
        &Expr::Has("a".into())
    );
    assert_eq!(
        Selector::from_expr(&Expr::And(vec![Expr::All]))
            .unwrap()
            .expr(),
        &Expr::All
    );
    assert!(Selector::from_expr(&Expr::Has("bad key".into())).is_err());
    assert!(Selector::from_expr(&Expr::Has(String::new())).is_err());
    assert!(Selector::from_expr(&Expr::Eq("k".into(), "both ' and \"".into())).is_err());
    assert!(
        Selector::from_expr(&Expr::Or(vec![
            Expr::All,
            Expr::In("k".into(), ["'\"".into()].into())
        ]))
        .is_err()
    );
    let ok = Expr::Eq("k".into(), "it's".into());
    assert_eq!(
        Selector::from_expr(&ok).unwrap().to_string(),
        r#"k == "it's""#
    );
}

fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn label_selector_conversion() {
    let empty = Selector::from_label_selector(&LabelSelector::default()).unwrap();
    assert!(empty.is_all());
    assert!(empty.matches(&labels(&[("x", "y")])));
    let explicit_empty = LabelSelector {
        match_labels: Some(Labels::new()),
        match_expressions: Some(vec![]),
    };
    assert!(
        Selector::from_label_selector(&explicit_empty)
            .unwrap()
            .is_all()
    );

    let ls = LabelSelector {
        match_labels: Some(labels(&[("tier", "web"), ("app", "shop")])),
        match_expressions: Some(vec![
            req("env", "In", Some(&["prod", "staging"])),
            req("canary", "NotIn", Some(&["true"])),
            req("example.com/owner", "Exists", None),
            req("deprecated", "DoesNotExist", Some(&[])),
        ]),
    };
    let s = Selector::from_label_selector(&ls).unwrap();
    assert_eq!(
        s.as_str(),
        r#"app == "shop" && tier == "web" && env in {"prod", "staging"} && canary not in {"true"} && has(example.com/owner) && !has(deprecated)"#
    );
    assert_eq!(s, sel(s.as_str()));
    let base = [
        ("app", "shop"),
        ("tier", "web"),
        ("env", "prod"),
        ("example.com/owner", "me"),
    ];
    assert!(
        s.matches(&labels(&base)),
        "NotIn and DoesNotExist match absent keys"
    );
    let mut l = labels(&base);
    l.insert("canary".into(), "false".into());
    assert!(s.matches(&l));
    l.insert("canary".into(), "true".into());
    assert!(!s.matches(&l));
    let mut l = labels(&base);
    l.insert("deprecated".into(), String::new());
    assert!(!s.matches(&l));
    let mut l = labels(&base);
    l.remove("example.com/owner");
    assert!(!s.matches(&l));
    let mut l = labels(&base);
    l.insert("env".into(), "dev".into());
    assert!(!s.matches(&l));

    let single = LabelSelector {
        match_labels: Some(labels(&[("app", "")])),
        match_expressions: None,
    };
    assert_eq!(
        Selector::from_label_selector(&single).unwrap().as_str(),
        r#"app == """#
    );
}

#[test]
fn label_selector_errors() {
    let with = |r: LabelSelectorRequirement| LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![r]),
    };
    let cases: Vec<(LabelSelector, &str)> = vec![
        (
            with(req("a", "In", None)),
            "operator In needs at least one value",
        ),
        (
            with(req("a", "NotIn", Some(&[]))),
            "operator NotIn needs at least one value",
        ),
        (
            with(req("a", "Exists", Some(&["x"]))),
            "operator Exists takes no values",
        ),
        (
            with(req("a", "DoesNotExist", Some(&["x"]))),
            "operator DoesNotExist takes no values",
        ),
        (
            with(req("a", "in", Some(&["x"]))),
            "unknown operator \"in\"; valid operators are In, NotIn, Exists and DoesNotExist",
        ),
        (
            with(req("a", "Gt", Some(&["1"]))),
            "valid operators are In, NotIn, Exists and DoesNotExist",
        ),
        (
            with(req("bad key", "Exists", None)),
            "matchExpressions[0]: key \"bad key\" is not a valid label key",
        ),
        (with(req("", "Exists", None)), "is not a valid label key"),
        (with(req("Example.com/x", "Exists", None)), "DNS subdomain"),
        (
            with(req("a/b/c", "Exists", None)),
            "is not a valid label key",
        ),
        (
            with(req("-a", "Exists", None)),
            "start and end with an alphanumeric",
        ),
        (
            with(req("a", "In", Some(&["it's"]))),
            "is not a valid label value",
        ),
        (
            LabelSelector {
                match_labels: Some(labels(&[("a", "x y")])),
                match_expressions: None,
            },
            "matchLabels[\"a\"] value \"x y\" is not a valid label value",
        ),
        (
            LabelSelector {
                match_labels: Some(labels(&[(&"k".repeat(64), "v")])),
                match_expressions: None,
            },
            "at most 63 characters",
        ),
    ];
    for (ls, expected) in cases {
        let e = Selector::from_label_selector(&ls).unwrap_err();
        assert!(e.message.contains(expected), "{ls:?}: {e}");
        assert_eq!(e.input, serde_json::to_string(&ls).unwrap());
    }
}

#[test]
fn label_selector_deserialises_from_yaml() {
    let ls: LabelSelector = serde_yaml::from_str(
        "matchLabels: {app: web}\nmatchExpressions:\n- {key: tier, operator: NotIn, values: [db]}\n",
    )
    .unwrap();
    let s = Selector::from_label_selector(&ls).unwrap();
    assert!(s.matches(&labels(&[("app", "web")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
    assert!(serde_yaml::from_str::<LabelSelector>("matchLabel: {}").is_err());
}

#[test]
fn evaluate_with_sets_all_and_global() {
    let l = labels(&[("a", "1")]);
    let s = sel("all()");
    assert!(s.evaluate_with(&l, true, false));
    assert!(!s.evaluate_with(&l, false, true));
    let s = sel("global()");
    assert!(!s.evaluate_with(&l, true, false));
    assert!(s.evaluate_with(&l, false, true));
    // Empty text is all(), so it too follows the `all` argument.
    assert!(!sel("").evaluate_with(&l, false, true));
    let s = sel("has(a) && all()");
    assert!(s.evaluate_with(&l, true, false));
    assert!(!s.evaluate_with(&l, false, false));
    assert!(sel("!all()").evaluate_with(&l, false, false));
    // evaluate(l, g) is evaluate_with(l, true, g).
    for text in [
        "all()",
        "global()",
        "all() && !global()",
        "has(a) || global()",
    ] {
        for g in [false, true] {
            assert_eq!(
                sel(text).evaluate(&l, g),
                sel(text).evaluate_with(&l, true, g),
                "{text:?} {g}"
            );
        }
    }
}
