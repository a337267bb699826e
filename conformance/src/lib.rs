//! Conformance harness: the implementation against the model.
pub mod realuv;
