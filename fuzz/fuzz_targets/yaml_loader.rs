//! Fuzzes the YAML loader: no input panics it; every error names a document that exists.
//!
//! Run with `cargo +nightly fuzz run yaml_loader` from the repository root (or `fuzz/`).
//! Seed it with the corpus: `cp tests/conformance/*.yaml fuzz/corpus/yaml_loader/`.

#![no_main]

use std::path::Path;

use enforcer_user::sources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A document needs at least one line (`---` and `...` both end one).
    let documents = text.lines().count() + 1;
    match sources::load_str(text, Path::new("fuzz.yaml")) {
        Ok(inv) => {
            let _ = sources::validate(&inv);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(e.origin.document <= documents, "{e}");
                assert!(!e.message.is_empty(), "{e}");
            }
        }
    }
});
