//! `cachelock replay`: the model's counterexamples replayed with real processes, on uv
//! 0.8.19, 0.8.20 and 0.13.9 and on cachelock itself; a binary that does not follow the
//! policy is caught at the first property it does not break (or breaks); bad input exits 2.
//!
//! The uv releases are installed on first use (`conformance/scripts/install-uv.sh`, PyPI
//! once; `CACHELOCK_UV_VERSIONS_DIR` points at an existing install); the test fails, never
//! skips, when that is impossible.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::uv;

fn cachelock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachelock"))
}

fn replay(policy: &str, scenario: &str, uv: Option<&Path>) -> Output {
    let mut cmd = cachelock();
    cmd.args(["replay", "--policy", policy, "--scenario", scenario]);
    if let Some(uv) = uv {
        cmd.arg("--uv").arg(uv);
    }
    cmd.output().expect("run cachelock replay")
}

fn reproduced(policy: &str, scenario: &str, uv: Option<&Path>) {
    let out = replay(policy, scenario, uv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "replay of {policy} on `{scenario}` ({uv:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every verdict of the model was reproduced"),
        "{stdout}"
    );
    // The real side is the gate's: stops named with the model's steps.
    assert!(stdout.contains("under the gate"), "{stdout}");
}

#[test]
fn uv_0_8_19_reproduces_its_counterexamples() {
    let uv = uv("0.8.19");
    for sc in ["run,clean", "clean,run,clean"] {
        reproduced("uv-0.8.19", sc, Some(&uv));
    }
    // Its stories are printed: the lost environment of `run,clean`.
    let out = replay("uv-0.8.19", "run,clean", Some(&uv));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("model: live-env-intact fails; its shortest story:"),
        "{stdout}"
    );
}

#[test]
fn uv_0_8_20_reproduces_its_counterexamples() {
    let uv = uv("0.8.20");
    for sc in ["run,clean", "run-script,clean-force"] {
        reproduced("uv-0.8.20", sc, Some(&uv));
    }
}

#[test]
fn uv_0_13_reproduces_its_counterexamples() {
    let uv = uv("0.13.9");
    for sc in ["run,clean", "run,clean,run"] {
        reproduced("uv-0.13", sc, Some(&uv));
    }
}

#[test]
fn cachelock_reproduces_its_policies() {
    for (policy, sc) in [
        ("cachelock", "run,clean"),
        ("cachelock", "clean,run,clean"),
        ("uv-0.8.19", "run,clean"),
    ] {
        reproduced(policy, sc, None);
    }
}

#[test]
fn a_binary_that_keeps_the_property_diverges() {
    // uv 0.13.9 keeps a running child's environment; the uv-0.8.19 model loses it.
    let out = replay("uv-0.8.19", "run,clean", Some(&uv("0.13.9")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("divergence: live-env-intact: model fails, real holds"),
        "{stdout}"
    );
}

#[test]
fn bad_input_exits_2() {
    for (scenario, uv) in [
        ("run,frobnicate", None),
        ("run,run,clean", None),
        ("run,clean", Some(Path::new("/bin/true"))),
    ] {
        let out = replay("uv-0.13", scenario, uv);
        assert_eq!(
            out.status.code(),
            Some(2),
            "`{scenario}` {uv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = cachelock().args(["replay", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Exit codes: 0 when every verdict"), "{text}");
}
