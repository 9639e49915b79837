//! The `pii` processor (issue #5), in progress: the detectors are here;
//! the processor that applies actions to spans and logs is not yet.

pub mod detect;
