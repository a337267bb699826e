//! Tracing overhead on real uv: `uv run --no-project python3 -c pass` untraced and
//! traced (nothing held), alternating, N pairs; prints the medians and their ratio.
//! A measurement, not a test of speed: it asserts nothing about time.
//!
//! `cargo test -p cachelock-gate --test overhead -- --ignored --nocapture`
//! (`CACHELOCK_OVERHEAD_PAIRS`, default 15).

mod common;

use std::time::{Duration, Instant};

use cachelock_gate::{Exit, trace};
use common::Sandbox;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn tracing_overhead_of_a_uv_run() {
    let pairs: usize = std::env::var("CACHELOCK_OVERHEAD_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let sb = Sandbox::new("0.13.9");
    sb.fill_cache();
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    let mut stops = 0;
    for _ in 0..pairs {
        let t = Instant::now();
        assert!(sb.run("pass").status().unwrap().success());
        plain.push(t.elapsed());
        let t = Instant::now();
        let report = trace(sb.run("pass"), &sb.cache, Box::new(std::io::sink())).unwrap();
        traced.push(t.elapsed());
        assert_eq!(report.exit, Some(Exit::Code(0)));
        stops = report.records.len();
    }
    let (p, t) = (median(plain), median(traced));
    println!(
        "uv run --no-project python3 -c pass, {pairs} pairs: untraced median {:.1} ms, traced median {:.1} ms, ratio {:.2} ({stops} events recorded per traced run)",
        p.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() / p.as_secs_f64()
    );
}
