//! Policy lint: common mistakes, each naming file, policy and rule, with a fix.
