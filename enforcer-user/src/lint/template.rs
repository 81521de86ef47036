//! `template-placeholder`: selectors or names that still contain template placeholders
//! (`{{.Namespace}}`, `{{ .Values.app }}`, `${NS}`): the file is a template, not its output.
//!
//! Placeholders usually make a selector fail to parse, so the loader rejects the file; the
//! `lint` command turns such load errors into this warning ([`warning_for_load_error`]).
//! Placeholders that survive loading (inside a quoted selector value, a name, a label) are
//! found in the inventory ([`template_placeholders`]).

use std::path::Path;

use crate::{
    model::{Direction, EntityRule, Inventory, Labels, Origin, Policy},
    selector::Selector,
};

use super::{LintCode, RulePos, Warning};

const SUGGESTION: &str = "render the template first (e.g. `helm template`, `envsubst`, \
                          `kustomize build`) and check the rendered YAML";

/// Whether a string contains a template placeholder: Go/Helm/Jinja `{{ ... }}` or shell-style
/// `${...}` (see [`crate::selector::contains_template_placeholder`]).
pub fn has_placeholder(s: &str) -> bool {
    crate::selector::contains_template_placeholder(s)
}

fn labels_with_placeholder(labels: &Labels) -> Option<String> {
    labels
        .iter()
        .find(|(k, v)| has_placeholder(k) || has_placeholder(v))
        .map(|(k, v)| format!("label {k}={v}"))
}

/// The first line of document `origin.document` (1-based, `---` separated, numbered as the
/// loader numbers them) of the file that contains a placeholder, if any.
pub fn placeholder_in_document(origin: &Origin) -> Option<String> {
    document_text(&origin.file, origin.document)?
        .lines()
        .find(|l| has_placeholder(l) && !l.trim_start().starts_with('#'))
        .map(|l| l.trim().to_string())
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#') && !line.starts_with('%')
}

/// The text of document `document` (1-based), numbered as the loader numbers them: every
/// `---` starts a document, text before the first `---` is one only if it has content, `...`
/// ends one.
fn document_text(file: &Path, document: usize) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut docs: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut explicit = false;
    let mut has_content = false;
    for line in text.lines() {
        let start = is_marker(line, "---");
        if start || is_marker(line, "...") {
            if explicit || has_content {
                docs.push(std::mem::take(&mut cur));
            }
            cur.clear();
            explicit = start;
            has_content = start && is_content(&line[3..]);
            if start {
                cur.push_str(&line[3..]);
                cur.push('\n');
            }
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        has_content |= is_content(line);
    }
    if explicit || has_content {
        docs.push(cur);
    }
    docs.into_iter().nth(document.checked_sub(1)?)
}

/// Turns a load error caused by a template placeholder into a `template-placeholder` warning:
/// when the error's field or message mentions a placeholder, or the document it points to
/// contains one. `None`: a genuine load error.
pub fn warning_for_load_error(origin: &Origin, field: &str, message: &str) -> Option<Warning> {
    let found = if has_placeholder(message) || has_placeholder(field) {
        Some(None)
    } else {
        placeholder_in_document(origin).map(Some)
    };
    let line = found?;
    let at = if field.is_empty() {
        String::new()
    } else {
        format!(" at {field}")
    };
    let message = match line {
        None => format!(
            "the document could not be loaded because of a template placeholder{at}: {message}"
        ),
        Some(l) => format!(
            "the document contains a template placeholder ({l}) and could not be loaded{at}: {message}"
        ),
    };
    Some(Warning {
        code: LintCode::TemplatePlaceholder,
        origin: origin.clone(),
        policy: None,
        rule: None,
        message,
        suggestion: SUGGESTION.to_string(),
    })
}

fn check_selector(what: &str, s: Option<&Selector>, found: &mut Vec<String>) {
    if let Some(s) = s
        && has_placeholder(s.as_str())
    {
        found.push(format!("{what} `{}`", s.as_str()));
    }
}

fn check_entity(side: &str, e: &EntityRule, found: &mut Vec<String>) {
    check_selector(&format!("{side} selector"), e.selector.as_ref(), found);
    check_selector(
        &format!("{side} notSelector"),
        e.not_selector.as_ref(),
        found,
    );
    check_selector(
        &format!("{side} namespaceSelector"),
        e.namespace_selector.as_ref(),
        found,
    );
    if let Some(sa) = &e.service_accounts {
        check_selector(
            &format!("{side} serviceAccounts selector"),
            sa.selector.as_ref(),
            found,
        );
        for n in sa.names.iter().filter(|n| has_placeholder(n)) {
            found.push(format!("{side} serviceAccounts name {n:?}"));
        }
    }
    for p in e.ports.iter().chain(&e.not_ports) {
        if let crate::model::PortSpec::Named(n) = p
            && has_placeholder(n)
        {
            found.push(format!("{side} port {n:?}"));
        }
    }
}

fn policy_warnings(p: &Policy, out: &mut Vec<Warning>) {
    let mut found = Vec::new();
    for (what, v) in [
        ("name", Some(p.name.as_str())),
        ("namespace", p.namespace.as_deref()),
        ("tier", Some(p.tier.as_str())),
    ] {
        if let Some(v) = v
            && has_placeholder(v)
        {
            found.push(format!("{what} {v:?}"));
        }
    }
    check_selector("selector", Some(&p.selector), &mut found);
    check_selector(
        "namespaceSelector",
        p.namespace_selector.as_ref(),
        &mut found,
    );
    check_selector(
        "serviceAccountSelector",
        p.service_account_selector.as_ref(),
        &mut found,
    );
    let push = |found: Vec<String>, rule: Option<RulePos>, out: &mut Vec<Warning>| {
        if found.is_empty() {
            return;
        }
        let mut w = Warning::for_policy(
            LintCode::TemplatePlaceholder,
            p,
            None,
            format!(
                "{} contain{} a template placeholder: the policy will not select what the \
                 template meant to",
                found.join(", "),
                if found.len() == 1 { "s" } else { "" }
            ),
            SUGGESTION,
        );
        w.rule = rule;
        out.push(w);
    };
    push(found, None, out);
    for dir in [Direction::Ingress, Direction::Egress] {
        for (i, r) in p.rules(dir).iter().enumerate() {
            let mut found = Vec::new();
            check_entity("source", &r.source, &mut found);
            check_entity("destination", &r.destination, &mut found);
            push(
                found,
                Some(RulePos {
                    direction: dir,
                    index: i,
                }),
                out,
            );
        }
    }
}

/// `template-placeholder` over loaded objects.
pub fn template_placeholders(inv: &Inventory) -> Vec<Warning> {
    let mut out = Vec::new();
    for p in &inv.policies {
        policy_warnings(p, &mut out);
    }
    let mut object = |kind: &str, name: String, labels: Option<&Labels>, origin: &Origin| {
        let mut found = Vec::new();
        if has_placeholder(&name) {
            found.push(format!("name {name:?}"));
        }
        if let Some(l) = labels.and_then(labels_with_placeholder) {
            found.push(l);
        }
        if !found.is_empty() {
            out.push(Warning {
                code: LintCode::TemplatePlaceholder,
                origin: origin.clone(),
                policy: None,
                rule: None,
                message: format!(
                    "{kind} {name}: {} contains a template placeholder",
                    found.join(", ")
                ),
                suggestion: SUGGESTION.to_string(),
            });
        }
    };
    for n in &inv.namespaces {
        object("Namespace", n.name.clone(), Some(&n.labels), &n.origin);
    }
    for p in &inv.pods {
        object(
            "Pod",
            format!("{}/{}", p.namespace, p.name),
            Some(&p.labels),
            &p.origin,
        );
    }
    for s in &inv.service_accounts {
        object(
            "ServiceAccount",
            format!("{}/{}", s.namespace, s.name),
            Some(&s.labels),
            &s.origin,
        );
    }
    for s in &inv.network_sets {
        let name = match &s.namespace {
            Some(ns) => format!("{ns}/{}", s.name),
            None => s.name.clone(),
        };
        object("NetworkSet", name, Some(&s.labels), &s.origin);
    }
    for h in &inv.host_endpoints {
        object("HostEndpoint", h.name.clone(), Some(&h.labels), &h.origin);
    }
    for t in &inv.tiers {
        if let Some(o) = &t.origin {
            object("Tier", t.name.clone(), None, o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{lint::testutil::*, model::Action};

    #[test]
    fn detects_go_and_shell_placeholders() {
        assert!(has_placeholder("app == '{{.App}}'"));
        assert!(has_placeholder("${NS}-web"));
        assert!(!has_placeholder("app in {'a', 'b'}"));
        assert!(!has_placeholder("cost == '$5'"));
    }

    #[test]
    fn placeholders_in_loaded_selectors_and_names() {
        let mut p = calico(
            "prod",
            "{{ .Release.Name }}-allow",
            "app == '{{.App}}'",
            Some(1.0),
        );
        let mut r = rule(Action::Allow);
        r.source.selector = Some(sel("team == '${TEAM}'"));
        p.ingress = vec![rule(Action::Allow), r];
        let w = template_placeholders(&inventory(vec![p]));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].message.contains("name") && w[0].message.contains("selector"));
        assert_eq!(w[1].rule.map(|r| r.index), Some(1));
    }

    #[test]
    fn placeholders_in_pods_and_namespaces() {
        let mut inv = inventory(Vec::new());
        inv.namespaces.push(namespace("${NS}", &[]));
        inv.pods.push(pod(
            "prod",
            "web",
            &[("app", "{{ .Values.app }}")],
            "10.0.0.1",
        ));
        assert_eq!(template_placeholders(&inv).len(), 2);
    }

    #[test]
    fn load_error_mentioning_placeholder_becomes_warning() {
        let o = origin(1);
        let w = warning_for_load_error(
            &o,
            "spec.selector",
            "invalid selector \"app == {{.App}}\": unexpected '{'",
        )
        .expect("converted");
        assert_eq!(w.code, LintCode::TemplatePlaceholder);
        assert!(warning_for_load_error(&o, "spec.order", "expected a number").is_none());
    }

    #[test]
    fn load_error_in_templated_document_becomes_warning() {
        let dir = std::env::temp_dir().join(format!("enforcer-lint-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.yaml");
        std::fs::write(
            &file,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# comment {{ x }}\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ .Values.ns }}\n",
        )
        .unwrap();
        let o1 = Origin {
            file: file.clone(),
            document: 1,
        };
        let o2 = Origin {
            file: file.clone(),
            document: 2,
        };
        assert!(warning_for_load_error(&o1, "metadata", "broken").is_none());
        let w = warning_for_load_error(&o2, "", "did not find expected key").expect("converted");
        assert!(
            w.message.contains("name: {{ .Values.ns }}"),
            "{}",
            w.message
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
