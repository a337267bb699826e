//! Conformance harness: the implementation against the model.
