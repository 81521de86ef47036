//! The reference evaluator: brief §2 implemented directly. The oracle for every faster path.
