//! The `cl-trace` binary: its output, its exit code, and its message where ptrace is
//! refused.

mod common;

use std::process::{Command, Stdio};

use common::Sandbox;

fn cl_trace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cl-trace"))
}

#[test]
fn cl_trace_prints_each_step_as_pid_step_path_and_exits_with_the_commands_code() {
    let sb = Sandbox::new("0.13.9");
    sb.fill_cache();
    let clean = sb.uv_cmd(&["cache", "clean"]);
    let mut cmd = cl_trace();
    cmd.arg("--cache")
        .arg(&sb.cache)
        .arg("--")
        .arg(clean.get_program());
    cmd.args(clean.get_args());
    for (k, v) in clean.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.stderr(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lock = format!("lock-exclusive {}", sb.lock_file().display());
    let line = text
        .lines()
        .find(|l| l.ends_with(&lock))
        .unwrap_or_else(|| panic!("no `{lock}` line in:\n{text}"));
    let pid: i32 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(pid > 0);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{pid} delete-entries "))),
        "{text}"
    );

    let st = cl_trace()
        .args(["--cache", "/nonexistent", "--", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(
        st.code(),
        Some(7),
        "the command's exit code is passed through"
    );
}

#[test]
fn cl_trace_without_a_command_is_bad_input() {
    let out = cl_trace().arg("--cache").arg("/x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: cl-trace"));
}

#[test]
fn where_ptrace_is_refused_the_gate_says_so() {
    // A process that is already traced cannot be traced again: cl-trace run under
    // cl-trace has its PTRACE_TRACEME refused.
    let out = cl_trace()
        .args(["--cache", "/nonexistent", "--"])
        .arg(env!("CARGO_BIN_EXE_cl-trace"))
        .args(["--cache", "/nonexistent", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot trace processes here") && err.contains("ptrace"),
        "{err}"
    );
}

#[test]
fn cl_trace_with_a_policy_exits_1_at_the_first_step_the_model_does_not_allow() {
    let sb = Sandbox::new("0.13.9");
    let run = sb.run("pass");
    let verdict = |policy: &str| {
        let mut cmd = cl_trace();
        cmd.args(["--policy", policy, "--cache"])
            .arg(&sb.cache)
            .arg("--")
            .arg(run.get_program())
            .args(run.get_args());
        for (k, v) in run.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let out = cmd.stderr(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = verdict("uv-0.13");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("is a behaviour of uv-0.13"), "{text}");
    let (code, text) = verdict("uv-0.8.19");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("did open-lock-file; the model allows create-scaffold next"),
        "{text}"
    );
}
