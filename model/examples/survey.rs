//! Prints where checked verdicts differ from the declarations (while editing expect.rs).
use cachelock_model::check::*;
use cachelock_model::{Policy, report};
fn main() {
    let scs = ci_scenarios();
    let rows: Vec<_> = Policy::ALL
        .iter()
        .map(|p| check_policy(*p, &scs, &mut |_| {}))
        .collect();
    for m in report::mismatches(&rows) {
        println!("{m}");
    }
}
