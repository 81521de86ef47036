//! Enforcer userspace.
//!
//! Data flows one way: [`sources`] (YAML files) → [`model`] → [`evaluator`] (the reference
//! semantics: the oracle) and, later, compile → program maps → datapath. [`lint`] and the CLI
//! read the model and the evaluator's traces.

pub mod agent;
pub mod compile;
pub mod datapath;
pub mod ebpf_object;
pub mod evaluator;
pub mod lab;
pub mod lint;
pub mod model;
pub mod observe;
pub mod probes;
pub mod selector;
pub mod sources;
#[cfg(any(test, feature = "testgen"))]
pub mod testgen;
#[cfg(any(test, feature = "testgen"))]
pub mod testsupport;
