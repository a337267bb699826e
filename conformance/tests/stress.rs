//! `cl-stress` under load: nothing is lost under our protocol, and the checking child
//! does see environments vanish under a protocol that loses them.
//!
//! The 60 s, 16-process run is a command (see the README), not a test:
//! `cl-stress --processes 16 --seconds 60 --policy cachelock`. Like the fidelity test,
//! this needs the `cachelock` binary built beside it (`cargo test --workspace` builds it).

use std::process::{Command, Output, Stdio};

fn stress(policy: &str, processes: u32, seconds: u32) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cl-stress"))
        .args(["--policy", policy])
        .args(["--processes", &processes.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .env_remove("CACHELOCK_CACHE_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run cl-stress")
}

/// The number after `label` in the report.
fn figure(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in the report:\n{report}"))
}

#[test]
fn stress_under_cachelock_loses_no_environment_leaks_nothing_and_never_sticks() {
    let out = stress("cachelock", 8, 10);
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{report}{stderr}");
    assert!(out.status.success(), "violations:\n{report}\n{stderr}");
    assert!(figure(&report, "operations completed: ") > 50, "{report}");
    assert_eq!(figure(&report, "environments found missing: "), 0);
    assert_eq!(figure(&report, "leaked temporary caches: "), 0);
    assert_eq!(figure(&report, "processes stuck past their timeout: "), 0);
    assert!(report.contains("lock waits") && report.contains("p99"));
}

#[test]
fn stress_under_uv_pr15977_finds_environments_deleted_under_running_children() {
    let out = stress("uv-pr15977", 8, 3);
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        figure(&report, "environments found missing: ") > 0,
        "{report}"
    );
    assert!(report.contains("VIOLATIONS FOUND"));
    // The kept stress directory is this test's to remove.
    if let Some(dir) = report
        .lines()
        .find_map(|l| l.strip_prefix("the stress directory is kept for inspection: "))
    {
        let _ = std::fs::remove_dir_all(dir.trim());
    }
}
