//! Benchmark-only program (being written); not attached by the agent.
