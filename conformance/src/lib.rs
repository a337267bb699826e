//! Conformance harness: the implementation against the model.
pub mod lockstep;
pub use cachelock_gate::realuv;
pub mod stress;
