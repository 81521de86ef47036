//! Helpers shared by Enforcer's integration tests.
