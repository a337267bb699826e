//! Every kind of uv process, traced on the real releases (0.8.19, 0.8.20, 0.13.9) and
//! checked against the model: the kind is read from the process's arguments at exec
//! (`uv run --script`, `uv tool run`, `--no-cache`, `uv cache prune`, `uv cache clean
//! --force`), the run's child is the process that runs its command, and a run killed
//! with SIGKILL while its child runs is the model's `+crash`. Each trace is a behaviour
//! of the release's policy; checked against another policy, the first step that policy
//! does not allow is named.
//!
//! Offline: the `clprobe` wheel is built locally and served with `--find-links`
//! (`realuv::Setup`); the releases come from `.uv-versions` (installed on first use).

mod common;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cachelock_gate::check::{Checked, check};
use cachelock_gate::realuv::{Runner, Sandbox, Setup, UvBinary};
use cachelock_gate::{Exit, Gate, Hold, TraceReport, trace};
use cachelock_model::protocol::{Kind, Policy};
use common::deadline;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn setup() -> (Setup, Vec<UvBinary>) {
    let setup = Setup::from_env();
    let uvs = setup.uv_binaries().unwrap_or_else(|e| panic!("{e}"));
    (setup, uvs)
}

fn uv_of(uvs: &[UvBinary], version: &str) -> (PathBuf, Policy) {
    let b = uvs.iter().find(|b| b.version == version).unwrap();
    (b.path.clone(), b.policy)
}

fn binary<'a>(uvs: &'a [UvBinary], version: &str) -> &'a UvBinary {
    uvs.iter().find(|b| b.version == version).unwrap()
}

/// The command of a process of `kind` in `sb`, with uv's offline environment and
/// `extra` variables.
fn command(uv: &UvBinary, kind: Kind, sb: &Sandbox, extra: &[(&str, OsString)]) -> Command {
    let argv = uv.argv(kind, sb);
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    for (k, v) in uv.env(sb, false) {
        c.env(k, v);
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c.current_dir(&sb.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn traced(uv: &UvBinary, kind: Kind, sb: &Sandbox) -> TraceReport {
    trace(
        command(uv, kind, sb, &[]),
        &sb.cache,
        Box::new(std::io::sink()),
    )
    .unwrap()
}

fn checked(policy: Policy, t: &TraceReport) -> Checked {
    check(policy, &t.records, &t.timeline, &t.processes).unwrap()
}

/// `t` is a behaviour of `right` as scenario `scenario`, and not of `wrong`, whose
/// first divergence is the step `real` (and the model's `allows`).
fn admitted_and_rejected(
    t: &TraceReport,
    scenario: &str,
    right: Policy,
    wrong: Policy,
    real: &str,
    allows: &str,
) {
    let ok = checked(right, t);
    assert_eq!(ok.scenario, scenario, "{t:#?}");
    assert_eq!(ok.verdict, Ok(()), "{right} on {scenario}: {t:#?}");
    let d = checked(wrong, t)
        .verdict
        .expect_err("the wrong policy admits it");
    assert_eq!(d.real, real, "{wrong}: {d}");
    assert!(d.model.starts_with(allows), "{wrong}: {d}");
}

/// A fresh sandbox with a cache a run left behind (so that cleans have work).
fn filled(setup: &Setup, uv: &UvBinary) -> Sandbox {
    let sb = Sandbox::new(&setup.wheels(), &setup.python).unwrap();
    let st = command(uv, Kind::Run, &sb, &[]).status().unwrap();
    assert!(st.success(), "an untraced run failed: {st}");
    sb
}

fn fresh(setup: &Setup) -> Sandbox {
    Sandbox::new(&setup.wheels(), &setup.python).unwrap()
}

/// The policy whose first divergence on a 0.13.9 run is known: 0.8.20 writes the
/// scaffold before it opens `.lock`.
const WRONG_FOR_013: (Policy, &str, &str) = (Policy::Uv0820, "open-lock-file", "create-scaffold");
/// And on a 0.8.x run: 0.13 locks before it writes the scaffold.
const WRONG_FOR_08: (Policy, &str, &str) = (Policy::Uv013, "create-scaffold", "open-lock-file");

fn wrong_for(version: &str) -> (Policy, &'static str, &'static str) {
    if version == "0.13.9" {
        WRONG_FOR_013
    } else {
        WRONG_FOR_08
    }
}

#[test]
fn script_and_tool_runs_are_behaviours_of_their_release_as_run_script_and_tool_run() {
    let (setup, uvs) = setup();
    for version in ["0.8.19", "0.8.20", "0.13.9"] {
        let uv = binary(&uvs, version);
        let (_, right) = uv_of(&uvs, version);
        let (wrong, real, allows) = wrong_for(version);
        for (kind, token) in [(Kind::RunScript, "run-script"), (Kind::ToolRun, "tool-run")] {
            let sb = fresh(&setup);
            let t = traced(uv, kind, &sb);
            assert_eq!(t.exit, Some(Exit::Code(0)), "{version} {token}: {t:#?}");
            admitted_and_rejected(&t, token, right, wrong, real, allows);
        }
    }
}

#[test]
fn no_cache_runs_are_behaviours_of_their_release_and_0_8_19_fails_to_spawn() {
    let (setup, uvs) = setup();
    for version in ["0.8.19", "0.8.20", "0.13.9"] {
        let uv = binary(&uvs, version);
        let (_, right) = uv_of(&uvs, version);
        let sb = fresh(&setup);
        let t = traced(uv, Kind::RunNoCache, &sb);
        let ok = checked(right, &t);
        assert_eq!(ok.scenario, "run-no-cache", "{version}: {t:#?}");
        assert_eq!(ok.verdict, Ok(()), "{version}: {t:#?}");
        if version == "0.8.19" {
            // uv issue 15967: the temporary cache goes before the spawn, which fails.
            assert_ne!(t.exit, Some(Exit::Code(0)), "{t:#?}");
            let d = checked(Policy::Uv0820, &t).verdict.unwrap_err();
            assert_eq!(d.real, "drop-temp-cache", "{d}");
            assert!(d.model.starts_with("spawn-child"), "{d}");
        } else {
            assert_eq!(t.exit, Some(Exit::Code(0)), "{version}: {t:#?}");
            // 0.8.19 drops the temporary cache before its child: these keep it.
            let d = checked(Policy::Uv0819, &t).verdict.unwrap_err();
            assert_eq!(d.real, "spawn-child", "{version}: {d}");
            assert!(d.model.starts_with("drop-temp-cache"), "{version}: {d}");
        }
    }
}

#[test]
fn prune_and_clean_force_are_behaviours_of_their_release_as_prune_and_clean_force() {
    let (setup, uvs) = setup();
    for version in ["0.8.19", "0.8.20", "0.13.9"] {
        let uv = binary(&uvs, version);
        let (_, right) = uv_of(&uvs, version);
        // A prune keeps `.lock` and the root in every release; read as a clean, 0.8.x
        // would have to unlink `.lock`.
        let sb = filled(&setup, uv);
        let t = traced(uv, Kind::Prune, &sb);
        assert_eq!(t.exit, Some(Exit::Code(0)), "{version}: {t:#?}");
        admitted_and_rejected(
            &t,
            "prune",
            right,
            Policy::Cachelock,
            "open-lock-file",
            "announce-clean",
        );
        assert!(sb.lock_file().exists(), "{version}: prune kept .lock");
        if version == "0.8.19" {
            continue; // no `clean --force` before 0.8.20
        }
        let sb = filled(&setup, uv);
        let t = traced(uv, Kind::CleanForce, &sb);
        assert_eq!(t.exit, Some(Exit::Code(0)), "{version}: {t:#?}");
        let ok = checked(right, &t);
        assert_eq!(ok.scenario, "clean-force", "{version}");
        assert_eq!(ok.verdict, Ok(()), "{version}: {t:#?}");
        let d = checked(Policy::Cachelock, &t).verdict.unwrap_err();
        assert_eq!(d.real, "open-lock-file", "{version}: {d}");
    }
}

/// A run of `version` whose child (the probe) signals that it runs; the run is killed
/// with SIGKILL then, the child is let go and exits. Returns the recorded trace.
fn killed_run(setup: &Setup, uv: &UvBinary) -> TraceReport {
    let sb = fresh(setup);
    let ready = sb.root.join("ready");
    let go = sb.root.join("go");
    let cmd = command(
        uv,
        Kind::Run,
        &sb,
        &[
            ("CLPROBE_READY", ready.clone().into()),
            ("CLPROBE_GO", go.clone().into()),
            ("CLPROBE_HOLD", "60".into()),
        ],
    );
    let mut gate = Gate::new(&sb.cache).unwrap();
    gate.signal_on_rename_to(&ready);
    let run = gate.spawn(cmd, Hold::Steps).unwrap().pid;
    // Every step before it is let go on the way; the child's signal stays held.
    let signal = gate
        .run_until(deadline(), |e| e.path.as_deref() == Some(ready.as_path()))
        .unwrap();
    kill(Pid::from_raw(run), Signal::SIGKILL).unwrap();
    assert_eq!(
        gate.wait_exit(run, deadline()).unwrap(),
        Exit::Signal(Signal::SIGKILL as i32)
    );
    std::fs::write(&go, "").unwrap();
    gate.release(signal.id).unwrap();
    gate.release_all_and_wait().unwrap();
    TraceReport {
        records: gate.records().to_vec(),
        timeline: gate.timeline().to_vec(),
        exit: gate.exit_of(run),
        processes: gate.processes(),
    }
}

#[test]
fn a_run_killed_while_its_child_runs_is_the_models_crash() {
    let (setup, uvs) = setup();
    for version in ["0.8.19", "0.8.20", "0.13.9"] {
        let uv = binary(&uvs, version);
        let (_, right) = uv_of(&uvs, version);
        let t = killed_run(&setup, uv);
        let ok = checked(right, &t);
        assert_eq!(ok.scenario, "run+crash", "{version}: {t:#?}");
        assert_eq!(ok.verdict, Ok(()), "{version}: {t:#?}");
        let (wrong, real, allows) = wrong_for(version);
        admitted_and_rejected(&t, "run+crash", right, wrong, real, allows);
    }
}
