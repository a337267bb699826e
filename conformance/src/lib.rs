//! Conformance harness: the implementation against the model.
pub mod lockstep;
pub mod realuv;
pub mod stress;
