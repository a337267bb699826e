//! `cachelock check` from the command line: exit codes, bad input, stories and JSON.

use std::process::{Command, Output};

fn cachelock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cachelock"))
        .args(args)
        .output()
        .expect("run cachelock")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_of_one_policy_prints_its_row_and_exits_0_when_as_declared() {
    let out = cachelock(&["check", "--policy", "cachelock"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("policy"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("cachelock "))
        .unwrap();
    assert!(row.contains("fails: run-script,clean-force (+2)"), "{row}");
    assert_eq!(row.matches("holds").count(), 9, "{row}");
    assert!(
        text(&out.stderr).contains("checked cachelock"),
        "progress line"
    );
}

#[test]
fn unknown_policy_is_one_line_naming_the_choices_and_exit_2() {
    let out = cachelock(&["check", "--policy", "uv-9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown policy `uv-9`") && err.contains("uv-0.13, uv-pr15977, cachelock"),
        "{err}"
    );
}

#[test]
fn malformed_scenario_is_one_line_naming_the_choices_and_exit_2() {
    for bad in ["run,cleen", "run+oops", "", "run,run,run,run,run,run,run"] {
        let out = cachelock(&["check", "--scenario", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(err.starts_with("error: "), "{bad}: {err}");
    }
    let err = text(&cachelock(&["check", "--scenario", "run,cleen"]).stderr);
    assert!(
        err.contains("clean-force") && err.contains("run-nested-clean"),
        "{err}"
    );
}

#[test]
fn a_pair_prints_the_shortest_counterexample_as_a_story() {
    let out = cachelock(&[
        "check",
        "--policy",
        "uv-0.8.19",
        "--scenario",
        "run-no-cache",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("live-env-intact        fails"), "{stdout}");
    assert!(
        stdout.contains(
            "5. run-no-cache#1: spawn-child -> fails: its environment in the temporary cache is gone"
        ),
        "{stdout}"
    );
}

#[test]
fn json_has_the_promised_fields() {
    let out = cachelock(&[
        "check",
        "--json",
        "--policy",
        "uv-0.13",
        "--scenario",
        "run-server,clean",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pair = &v[0];
    assert_eq!(pair["policy"], "uv-0.13");
    assert_eq!(pair["scenario"], "run-server,clean");
    assert!(pair["states"].as_u64().unwrap() > 0);
    assert!(pair["seconds"].as_f64().is_some());
    let props = pair["properties"].as_array().unwrap();
    let cc = props
        .iter()
        .find(|p| p["property"] == "clean-terminates")
        .unwrap();
    assert_eq!(cc["verdict"], "fails");
    let steps = cc["counterexample"].as_array().unwrap();
    assert!(steps.iter().any(|s| {
        s.as_str()
            .unwrap()
            .contains("lock-exclusive -> busy: waits")
    }));
    let cs = props
        .iter()
        .find(|p| p["property"] == "clean-succeeds")
        .unwrap();
    assert_eq!(cs["verdict"], "fails");
    assert_eq!(cs["kind"], "eventually");
    assert!(
        cs["counterexample"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let me = props
        .iter()
        .find(|p| p["property"] == "mutual-exclusion")
        .unwrap();
    assert_eq!(me["verdict"], "holds");
    assert!(me["counterexample"].is_null());
}

#[test]
fn explore_refuses_a_non_loopback_address() {
    let out = cachelock(&[
        "explore",
        "--policy",
        "cachelock",
        "--scenario",
        "run,clean",
        "--addr",
        "0.0.0.0:3000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a loopback address"));
}

#[test]
fn simulate_samples_twelve_processes_and_says_it_is_not_a_proof() {
    let scenario = "run-server,run-daemon,run,run,run-script,tool-run,run+crash,run-no-cache,clean,clean,clean-force,prune";
    let out = cachelock(&[
        "check",
        "--policy",
        "uv-0.13",
        "--simulate",
        "300",
        "--scenario",
        scenario,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pair = &json[0];
    assert_eq!(pair["walks"], 300);
    assert!(
        pair["distinct_states"].as_u64().is_some_and(|n| n > 300),
        "{pair}"
    );
    let live = pair["properties"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["property"] == "live-env-intact"))
        .expect("live-env-intact sampled");
    assert_eq!(live["found"], "violation found", "{live}");
    assert!(live["trace"].as_array().is_some_and(|t| !t.is_empty()));

    let help = text(&cachelock(&["check", "--help"]).stdout);
    assert!(help.contains("is NOT a proof"), "{help}");
    let exhaustive = cachelock(&["check", "--policy", "uv-0.13", "--scenario", scenario]);
    assert_eq!(exhaustive.status.code(), Some(2));
    assert!(text(&exhaustive.stderr).contains("--simulate"));
}
