//! Regenerates docs/verdicts.md and docs/traces.md without the CLI:
//! `cargo run -p cachelock-model --release --example docs`.
use cachelock_model::check::{check_policy, ci_scenarios};
use cachelock_model::{Policy, report};
fn main() -> std::io::Result<()> {
    let scenarios = ci_scenarios();
    let rows: Vec<_> = Policy::ALL
        .iter()
        .map(|p| check_policy(*p, &scenarios, &mut |_| {}))
        .collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs");
    std::fs::write(
        format!("{root}/verdicts.md"),
        report::verdicts_markdown(&rows),
    )?;
    std::fs::write(format!("{root}/traces.md"), report::traces_markdown(&rows))?;
    std::fs::write(format!("{root}/protocol.md"), report::protocol_markdown())?;
    Ok(())
}
