//! The cache-lock protocol of uv (and of cachelock), as a model.
//!
//! - [`protocol`]: the vocabulary every part of the project shares: steps, events,
//!   process kinds, scenarios and policies. No dependencies.
//! - With the default `checker` feature: the stateright model of that protocol
//!   ([`machine`]: the processes and the initial state; [`state`]: what a state is; the
//!   private `queries`, `transitions` and `symmetry`: what can be asked of a state, how a
//!   step changes it, which states are the same, how the checker searches), its properties ([`properties`], with
//!   their predicates in the private `predicates`), the declared verdicts and the CI
//!   scenario set ([`expect`]), the checker that compares them ([`check`]), counterexample
//!   stories ([`story`]) and the generated docs ([`report`]).

pub mod protocol;

#[cfg(feature = "checker")]
pub mod check;
#[cfg(feature = "checker")]
pub mod expect;
#[cfg(feature = "checker")]
mod fingerprints;
#[cfg(feature = "checker")]
pub mod machine;
#[cfg(feature = "checker")]
mod predicates;
#[cfg(feature = "checker")]
pub mod properties;
#[cfg(feature = "checker")]
mod queries;
#[cfg(feature = "checker")]
pub mod report;
#[cfg(feature = "checker")]
mod search;
#[cfg(feature = "checker")]
pub mod simulate;
#[cfg(feature = "checker")]
pub mod state;
#[cfg(feature = "checker")]
pub mod story;
#[cfg(feature = "checker")]
mod symmetry;
#[cfg(feature = "checker")]
mod transitions;

pub use protocol::{
    ChildKind, Design, EnvName, Event, Kind, Mode, OnBusy, Policy, ProcSpec, Scenario, Step, Trash,
};
