//! The cache-lock protocol of uv (and of cachelock), as a model.
//!
//! - [`protocol`]: the vocabulary every part of the project shares: steps, events,
//!   process kinds, scenarios and policies. No dependencies.
//! - With the default `checker` feature: the stateright model of that protocol
//!   ([`machine`]), its properties ([`properties`]), the declared verdicts ([`expect`]),
//!   the checker that compares them ([`check`]) and counterexample stories ([`story`]).

pub mod protocol;

#[cfg(feature = "checker")]
pub mod check;
#[cfg(feature = "checker")]
pub mod expect;
#[cfg(feature = "checker")]
pub mod machine;
#[cfg(feature = "checker")]
pub mod properties;
#[cfg(feature = "checker")]
pub mod report;
#[cfg(feature = "checker")]
pub mod story;

pub use protocol::{
    ChildKind, Design, EnvName, Event, Kind, Mode, OnBusy, Policy, ProcSpec, Scenario, Step,
};
