//! The cache-lock protocol of uv (and of cachelock), as a model.
//!
//! - [`protocol`]: the vocabulary every part of the project shares: steps, events,
//!   process kinds, scenarios and policies. No dependencies.
//! - With the default `checker` feature: the stateright model of that protocol, its
//!   properties, the declared verdicts and the checker that compares them.

pub mod protocol;

pub use protocol::{
    ChildKind, Design, EnvName, Event, Kind, Mode, OnBusy, Policy, ProcSpec, Scenario, Step,
};
