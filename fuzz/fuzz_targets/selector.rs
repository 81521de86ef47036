//! Fuzzes the Calico selector parser: it must never panic, errors must point inside the input,
//! and whatever parses must have a canonical text that parses back to the same selector and
//! evaluates the same way.
//!
//! Run with `cargo +nightly fuzz run selector` from the repository root (or `fuzz/`).

#![no_main]

use enforcer_user::{
    model::Labels,
    selector::{Selector, contains_template_placeholder},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = contains_template_placeholder(text);
    match Selector::parse(text) {
        Ok(sel) => {
            let canon = sel.to_string();
            let again = match Selector::parse(&canon) {
                Ok(s) => s,
                Err(e) => panic!("canonical text {canon:?} of {text:?} does not parse: {e}"),
            };
            assert_eq!(again, sel, "{text:?} -> {canon:?}");
            assert_eq!(again.to_string(), canon);
            // Evaluate on label sets built from the keys the selector mentions.
            let keys = sel.label_keys();
            let empty = Labels::new();
            let blank: Labels = keys.iter().map(|k| (k.clone(), String::new())).collect();
            let named: Labels = keys.iter().map(|k| (k.clone(), k.clone())).collect();
            for labels in [&empty, &blank, &named] {
                for (all, global) in [(true, false), (true, true), (false, false), (false, true)] {
                    assert_eq!(
                        sel.evaluate_with(labels, all, global),
                        again.evaluate_with(labels, all, global)
                    );
                }
                if sel.is_all() {
                    assert!(sel.matches(labels) && sel.evaluate(labels, true));
                }
            }
        }
        Err(e) => {
            assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e}");
            assert!(!e.message.is_empty());
        }
    }
});
