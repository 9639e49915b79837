//! The load generator's workload, shared with the criterion benchmarks so
//! that micro and load figures measure the same spans.

pub mod workload;
