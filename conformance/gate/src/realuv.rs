//! Model fidelity: the model's `uv-*` policies against real uv binaries.
//!
//! Each scenario (in the model's syntax, `run-script,clean-force`) is played for real,
//! offline, in a private sandbox: its own `UV_CACHE_DIR` and `TMPDIR`,
//! `UV_PYTHON_DOWNLOADS=never`, `UV_NO_CONFIG=1`, the system Python, `--no-project`,
//! and the locally built `clprobe` wheel served with `--no-index --find-links`.
//!
//! A real run sees one interleaving; the model sees all of them. So every scenario
//! *forces* the interleavings that decide its properties, with the gate: every process
//! runs under ptrace with a seccomp filter ([`sys::Proc`], [`gated::Gated`]: a tracer
//! thread per process) and takes its protocol steps when the harness lets it:
//! - a run's child (the probe) signals that it runs by renaming its ready file into
//!   place; the gate stops that rename, so the harness knows the child runs without
//!   looking for the file; the child then waits until the harness lets it go, and checks
//!   that its environment is still there (it imports a module it had not imported yet);
//! - a process that waits for a lock is seen waiting by the gate (the released `flock`
//!   sleeps in the kernel's lock wait), not guessed from a timeout, and a process that
//!   must be caught at a point is held at the protocol step itself;
//! - besides the scenario's own play, further plays force the model's shortest
//!   counterexamples: a clean held at its lock call while a run starts after it
//!   (`no-overtaking`), a clean held at its first deletion while a run sets up
//!   (`clean-succeeds`; under a design with a trash, its first `move-to-trash` rename:
//!   the deletion others see), runs held just after their shared lock was granted
//!   (`runs-share-lock`, `mutual-exclusion` beside a forced or a second clean).
//!
//! No duration decides an order or a verdict: a deadline only bounds a failure, and
//! reaching it fails the suite saying what was not seen. The one wait left that looks
//! again and again is for a probe child's report once it was let go (a wait for an end).
//!
//! Each observation is a verdict per model property ([`PropSeen`]), marked *forced* when
//! the run exercised the interleaving that would break it. The [`compare`] module puts
//! the model's prediction beside it.
//!
//! [`Runner`] is the extension point: [`UvBinary`] plays the scenarios with a uv
//! release; [`cachelock::Cachelock`] plays them with the `cachelock` binary under one of
//! its policies. [`ensure_uv`] installs a uv release on first use (also for other
//! crates' tests).

pub mod cachelock;
pub mod compare;
pub mod gated;
pub mod mixed;
pub mod scenarios;
pub mod story;
pub mod sys;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cachelock_model::{Kind, Policy};

/// The lock timeout (seconds) given to processes marked `+timeout`.
pub const LOCK_TIMEOUT_S: u32 = 2;

/// The uv releases the suite compares with the model: (version, policy).
pub const UV_VERSIONS: [(&str, Policy); 3] = [
    ("0.8.19", Policy::Uv0819),
    ("0.8.20", Policy::Uv0820),
    ("0.13.9", Policy::Uv013),
];

/// The model's `sometimes` properties: "fails" means the situation never arose.
pub const WITNESSES: [&str; 2] = ["clean-overlaps-child", "runs-share-lock"];

/// Something that can play the scenarios: a uv release, or `cachelock` under one of its
/// policies. The harness owns the choreography (signals, waits, kills,
/// observations); a runner only says how each kind of process is started.
pub trait Runner: Send + Sync {
    /// The column heading in the table (`uv 0.13.9`).
    fn label(&self) -> String;
    /// The model policy this runner is claimed to follow.
    fn policy(&self) -> Policy;
    /// The command line of a process of `kind` in `sb`. For the runs, the command
    /// starts the probe (`clprobe`) in the kind's environment.
    fn argv(&self, kind: Kind, sb: &Sandbox) -> Vec<OsString>;
    /// Environment variables for every process (`timeout`: the process is `+timeout`).
    fn env(&self, sb: &Sandbox, timeout: bool) -> Vec<(OsString, OsString)>;
    /// True if lock waits can time out at all (otherwise `+timeout` has no effect and
    /// the suite's own bound ends the wait).
    fn has_lock_timeout(&self) -> bool;
    /// When the runner has no exact counterpart of `kind` and plays it with a stand-in,
    /// a line saying so (it goes into the table's note).
    fn stand_in(&self, kind: Kind) -> Option<&'static str>;
}

/// A private place for one scenario: cache, temporary directory, the probe script.
pub struct Sandbox {
    _dir: tempfile::TempDir,
    /// Holds the processes' outputs and signal files.
    pub root: PathBuf,
    /// `UV_CACHE_DIR`.
    pub cache: PathBuf,
    /// `TMPDIR`: a `--no-cache` run's temporary cache appears here.
    pub tmp: PathBuf,
    /// A PEP 723 script that depends on `clprobe` and runs it.
    pub script: PathBuf,
    /// The directory holding the `clprobe` wheel.
    pub wheels: PathBuf,
    /// The system Python (`UV_PYTHON`).
    pub python: PathBuf,
}

impl Sandbox {
    /// A fresh sandbox (the cache directory is not created: the processes do that).
    pub fn new(wheels: &Path, python: &Path) -> std::io::Result<Sandbox> {
        let dir = tempfile::Builder::new().prefix("cl-fidelity-").tempdir()?;
        let root = dir.path().to_path_buf();
        let tmp = root.join("tmp");
        fs::create_dir(&tmp)?;
        let script = root.join("probe.py");
        fs::write(
            &script,
            "# /// script\n# dependencies = [\"clprobe\"]\n# ///\nimport sys\nimport clprobe\n\nsys.exit(clprobe.main())\n",
        )?;
        Ok(Sandbox {
            cache: root.join("cache"),
            tmp,
            script,
            wheels: wheels.to_path_buf(),
            python: python.to_path_buf(),
            root,
            _dir: dir,
        })
    }

    /// `<cache>/.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.cache.join(".lock")
    }
}

/// A uv release installed by `conformance/scripts/install-uv.sh`.
pub struct UvBinary {
    /// `0.13.9`.
    pub version: String,
    /// `.uv-versions/<version>/bin/uv`.
    pub path: PathBuf,
    /// The policy the model claims for it.
    pub policy: Policy,
}

impl UvBinary {
    fn base(&self, sb: &Sandbox) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![self.path.clone().into()];
        v.extend(["run", "--no-project", "--no-index"].map(OsString::from));
        v.push("--find-links".into());
        v.push(sb.wheels.clone().into());
        v
    }

    fn uv(&self, args: &[&str]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![self.path.clone().into()];
        v.extend(args.iter().map(OsString::from));
        v
    }

    fn old_clean(&self) -> bool {
        self.policy == Policy::Uv0819
    }
}

impl Runner for UvBinary {
    fn label(&self) -> String {
        format!("uv {}", self.version)
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn argv(&self, kind: Kind, sb: &Sandbox) -> Vec<OsString> {
        let with = |mut v: Vec<OsString>| {
            v.extend(["--with", "clprobe", "clprobe"].map(OsString::from));
            v
        };
        match kind {
            Kind::Run | Kind::RunServer | Kind::RunDaemon | Kind::RunNestedClean => {
                with(self.base(sb))
            }
            Kind::RunNoCache => {
                let mut v = self.base(sb);
                v.insert(2, "--no-cache".into());
                with(v)
            }
            Kind::RunScript => {
                let mut v = self.base(sb);
                v.push("--script".into());
                v.push(sb.script.clone().into());
                v
            }
            Kind::ToolRun => {
                let mut v = self.uv(&["tool", "run", "--no-index", "--find-links"]);
                v.push(sb.wheels.clone().into());
                v.extend(["--from", "clprobe", "clprobe"].map(OsString::from));
                v
            }
            Kind::Clean => self.uv(&["cache", "clean"]),
            // 0.8.19 has no --force (it came with 0.8.20).
            Kind::CleanForce if self.old_clean() => self.uv(&["cache", "clean"]),
            Kind::CleanForce => self.uv(&["cache", "clean", "--force"]),
            Kind::Prune => self.uv(&["cache", "prune"]),
        }
    }

    fn env(&self, sb: &Sandbox, timeout: bool) -> Vec<(OsString, OsString)> {
        let mut e: Vec<(OsString, OsString)> = vec![
            ("UV_CACHE_DIR".into(), sb.cache.clone().into()),
            ("TMPDIR".into(), sb.tmp.clone().into()),
            ("UV_PYTHON_DOWNLOADS".into(), "never".into()),
            ("UV_NO_CONFIG".into(), "1".into()),
            ("UV_PYTHON".into(), sb.python.clone().into()),
            ("UV_OFFLINE".into(), "1".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        if timeout {
            e.push(("UV_LOCK_TIMEOUT".into(), LOCK_TIMEOUT_S.to_string().into()));
        }
        e
    }

    fn has_lock_timeout(&self) -> bool {
        // UV_LOCK_TIMEOUT first shipped in 0.9.16.
        self.policy == Policy::Uv013
    }

    fn stand_in(&self, kind: Kind) -> Option<&'static str> {
        (kind == Kind::CleanForce && self.old_clean()).then_some(
            "0.8.19 has no `clean --force`: played by plain `clean`, which behaves the same when the lock is free",
        )
    }
}

/// Where the fidelity suite finds things.
#[derive(Clone, Debug)]
pub struct Setup {
    /// `<repo>/.uv-versions` (or `CACHELOCK_UV_VERSIONS_DIR`).
    pub versions_dir: PathBuf,
    /// The system Python.
    pub python: PathBuf,
}

impl Setup {
    /// The default layout, relative to the repository root.
    pub fn from_env() -> Setup {
        Setup {
            versions_dir: versions_dir(),
            python: find_python(),
        }
    }

    /// The wheel directory.
    pub fn wheels(&self) -> PathBuf {
        self.versions_dir.join("wheels")
    }

    /// Builds the `clprobe` wheel into [`Setup::wheels`] (the builder script is part of
    /// this crate, so that a binary built from it plays scenarios anywhere).
    pub fn build_probe_wheel(&self) -> Result<(), String> {
        let mut script = tempfile::Builder::new()
            .prefix("build-probe-wheel-")
            .suffix(".py")
            .tempfile()
            .map_err(|e| format!("cannot write the probe wheel's builder: {e}"))?;
        std::io::Write::write_all(&mut script, PROBE_WHEEL_BUILDER.as_bytes())
            .map_err(|e| format!("cannot write the probe wheel's builder: {e}"))?;
        let built = Command::new(&self.python)
            .arg(script.path())
            .arg(self.wheels())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        if !built.status.success() {
            return Err(format!(
                "could not build the clprobe wheel (`{} conformance/gate/scripts/build-probe-wheel.py {}`): {}",
                self.python.display(),
                self.wheels().display(),
                String::from_utf8_lossy(&built.stderr)
            ));
        }
        Ok(())
    }

    /// The uv releases of [`UV_VERSIONS`], installed first if missing (see
    /// [`ensure_uvs`]), and the probe wheel, rebuilt. An error says what could not be
    /// installed or built: the suite fails with it, it never skips.
    pub fn uv_binaries(&self) -> Result<Vec<UvBinary>, String> {
        let versions = UV_VERSIONS.map(|(v, _)| v);
        let paths = ensure_uvs_in(&self.versions_dir, &versions)?;
        // The probe wheel is rebuilt every time (no network, milliseconds), so that it
        // always matches its source.
        self.build_probe_wheel()?;
        Ok(UV_VERSIONS
            .into_iter()
            .zip(paths)
            .map(|((version, policy), path)| UvBinary {
                version: version.to_string(),
                path,
                policy,
            })
            .collect())
    }
}

/// `conformance/gate/scripts/build-probe-wheel.py`: builds the probe child's wheel.
const PROBE_WHEEL_BUILDER: &str = include_str!("../scripts/build-probe-wheel.py");

/// `conformance/scripts`: `install-uv.sh`.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Where uv releases are installed: `CACHELOCK_UV_VERSIONS_DIR`, else
/// `<repo>/.uv-versions`.
pub fn versions_dir() -> PathBuf {
    std::env::var_os("CACHELOCK_UV_VERSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.uv-versions"))
}

/// The `uv` binary of release `version` (`0.13.9`), installed from PyPI by
/// `conformance/scripts/install-uv.sh` if it is not there yet. For tests that need a
/// real uv: they fail with the returned message, they do not skip.
///
/// Safe to call from many test processes at once: installs are serialised by an
/// exclusive lock on `<versions dir>/.install.lock`, and a release another process
/// installed meanwhile is not installed again. Outside Rust the same is
/// `bash conformance/scripts/install-uv.sh VERSION` (it takes the same lock and prints
/// the path).
pub fn ensure_uv(version: &str) -> Result<PathBuf, String> {
    ensure_uvs(&[version]).map(|mut v| v.remove(0))
}

/// [`ensure_uv`] for several releases, with one install run for all that are missing.
pub fn ensure_uvs(versions: &[&str]) -> Result<Vec<PathBuf>, String> {
    ensure_uvs_in(&versions_dir(), versions)
}

fn uv_path(dir: &Path, version: &str) -> PathBuf {
    dir.join(version).join("bin").join("uv")
}

/// True if `path` runs and says it is uv `version`.
fn reports_version(path: &Path, version: &str) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .is_some_and(|o| {
            String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1) == Some(version)
        })
}

fn ensure_uvs_in(dir: &Path, versions: &[&str]) -> Result<Vec<PathBuf>, String> {
    let paths: Vec<PathBuf> = versions.iter().map(|v| uv_path(dir, v)).collect();
    let missing = |paths: &[PathBuf]| -> Vec<&str> {
        versions
            .iter()
            .zip(paths)
            .filter(|(v, p)| !reports_version(p, v))
            .map(|(v, _)| *v)
            .collect()
    };
    if missing(&paths).is_empty() {
        return Ok(paths);
    }
    fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {} for the uv installs: {e}", dir.display()))?;
    let lock_path = dir.join(".install.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Another test process may have installed them while this one waited.
    let todo = missing(&paths);
    if !todo.is_empty() {
        let script = scripts_dir().join("install-uv.sh");
        let cmdline = format!("bash {} {}", script.display(), todo.join(" "));
        eprintln!("installing uv {} from PyPI: {cmdline}", todo.join(", "));
        let out = Command::new("bash")
            .arg(&script)
            .args(&todo)
            .env("CACHELOCK_UV_VERSIONS_DIR", dir)
            .env("CACHELOCK_UV_INSTALL_LOCKED", "1")
            .output()
            .map_err(|e| format!("cannot run `{cmdline}`: {e}"))?;
        let still = missing(&paths);
        if !out.status.success() || !still.is_empty() {
            return Err(format!(
                "uv {} is not installed in {} and installing it failed: `{cmdline}` exited {:?}.\n\
                 Its stderr:\n{}\n\
                 The install needs PyPI (pip) once; everything after it is offline. Run the command \
                 yourself to see the problem, or point CACHELOCK_UV_VERSIONS_DIR at a directory \
                 holding <version>/bin/uv.",
                still.join(", "),
                dir.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
    }
    drop(lock);
    Ok(paths)
}

fn find_python() -> PathBuf {
    if let Some(p) = std::env::var_os("CACHELOCK_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => PathBuf::from("python3"),
    }
}

/// A property's observed verdict in one real run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Holds,
    Fails,
}

impl Seen {
    /// `Holds` if `holds`, else `Fails`.
    pub fn holds_if(holds: bool) -> Seen {
        if holds { Seen::Holds } else { Seen::Fails }
    }

    /// `holds` or `fails`, as the model's verdicts print.
    pub fn name(self) -> &'static str {
        match self {
            Seen::Holds => "holds",
            Seen::Fails => "fails",
        }
    }
}

/// One property as a real run showed it.
#[derive(Clone, Debug)]
pub struct PropSeen {
    /// The model's property name (`live-env-intact`).
    pub property: &'static str,
    pub seen: Seen,
    /// True when the run exercised the interleaving that decides the property (a real
    /// failure is always forced). An unforced "holds" says only that this one
    /// interleaving kept it.
    pub forced: bool,
    /// A stable one-line reason (no pids, paths or times): it goes into the docs.
    pub note: String,
    /// Set when no run of this binary can play the interleaving that decides the
    /// property (it lacks the feature the model's process uses): why. The table says so
    /// instead of "not forced".
    pub unplayable: Option<String>,
}

/// What one scenario did on one runner.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The scenario, in the model's syntax.
    pub scenario: String,
    /// The runner's label.
    pub runner: String,
    pub policy: Policy,
    pub props: Vec<PropSeen>,
    /// Stand-ins and other stable remarks for the docs.
    pub remarks: Vec<String>,
    /// What happened, with pids, codes and stderr: for test output, not for the docs.
    pub log: Vec<String>,
}

impl Observation {
    /// Records what a play saw of `property`. A later observation replaces an earlier
    /// one only if the earlier did not decide the property (a counterexample, or a
    /// witness that showed up) and the later does, or is forced where the earlier was
    /// not.
    pub fn record(&mut self, property: &'static str, seen: Seen, forced: bool, note: String) {
        let witness = WITNESSES.contains(&property);
        let new = PropSeen {
            property,
            seen,
            // A real counterexample is forced by definition; a witness that did not
            // show up (`sometimes` properties) is not.
            forced: forced || (seen == Seen::Fails && !witness),
            note,
            unplayable: None,
        };
        let decisive = |p: &PropSeen| (p.seen == Seen::Holds) == witness;
        match self.props.iter_mut().find(|p| p.property == property) {
            Some(old) if decisive(old) => {}
            Some(old) if decisive(&new) || (new.forced && !old.forced) => *old = new,
            Some(_) => {}
            None => self.props.push(new),
        }
    }

    /// The observation of `property`, if the scenario observed it.
    pub fn get(&self, property: &str) -> Option<&PropSeen> {
        self.props.iter().find(|p| p.property == property)
    }
}

/// The scenarios a fidelity suite plays: those named in `CACHELOCK_FIDELITY_SCENARIOS`
/// (`a;b`), or all of `default`; and whether the list was narrowed (then the suite
/// neither writes nor checks its docs).
pub fn scenarios_from_env(default: &[&'static str]) -> (Vec<String>, bool) {
    match std::env::var("CACHELOCK_FIDELITY_SCENARIOS") {
        Ok(list) => (
            list.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            true,
        ),
        Err(_) => (default.iter().map(|s| s.to_string()).collect(), false),
    }
}

/// Runs `play` on every job on a few worker threads (`CACHELOCK_FIDELITY_JOBS`, 4 by
/// default) and returns the results in job order, with the worker count. No verdict
/// depends on how fast a play runs (every step is held and released by the gate, lock
/// waits are seen by it, the probe's child waits for its go file), so the worker count
/// only trades time for load.
pub fn play_all<J: Sync, R: Send>(jobs: &[J], play: impl Fn(&J) -> R + Sync) -> (Vec<R>, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::env::var("CACHELOCK_FIDELITY_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(4usize);
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (next, play) = (&next, &play);
                s.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(job) = jobs.get(i) else { break };
                        out.push((i, play(job)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scenario thread panicked"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    (done.into_iter().map(|(_, r)| r).collect(), workers)
}

#[cfg(test)]
mod tests {
    use cachelock_model::check::Kind3;
    use cachelock_model::properties::ALL;

    #[test]
    fn the_witnesses_are_the_models_sometimes_properties() {
        let sometimes: Vec<&str> = ALL
            .iter()
            .filter(|p| p.expectation() == Kind3::Sometimes)
            .map(|p| p.name())
            .collect();
        assert_eq!(sometimes, super::WITNESSES);
    }
}
