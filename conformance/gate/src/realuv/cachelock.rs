//! The `cachelock` command as a [`Runner`]: the same scenarios under its policies.
//!
//! The binary is the one cargo built next to the test executable
//! (`target/<profile>/cachelock`; `CACHELOCK_BIN` overrides). A test does not build it:
//! `cargo test --workspace` builds every binary first, and a missing one is an error
//! that says which command builds it.
//!
//! A run's child is the same probe as under uv, imported from the `clprobe` wheel file
//! itself with the system Python: it finds its environment in `$CACHELOCK_ENV` and
//! checks that the marker file `cachelock-env` is there once the harness lets it go.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use cachelock_model::{Kind, Policy};

use super::{LOCK_TIMEOUT_S, Runner, Sandbox};

/// The `cachelock` policies the suite plays: the uv releases' behaviours, the closed
/// PR, and ours.
pub const POLICIES: [Policy; 5] = [
    Policy::Uv0819,
    Policy::Uv0820,
    Policy::Uv013,
    Policy::UvPr15977,
    Policy::Cachelock,
];

/// `cachelock` under one policy.
pub struct Cachelock {
    /// The binary.
    pub path: PathBuf,
    pub policy: Policy,
}

impl Cachelock {
    /// The binary cargo built for this workspace, or an error saying how to build it.
    pub fn locate() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("CACHELOCK_BIN") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        // target/<profile>/deps/<test>-<hash> -> target/<profile>/cachelock
        let profile_dir = exe
            .parent()
            .filter(|d| d.ends_with("deps"))
            .and_then(Path::parent)
            .or_else(|| exe.parent())
            .ok_or_else(|| format!("no directory above {}", exe.display()))?;
        let bin = profile_dir.join("cachelock");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "the cachelock binary is not built: {} is missing. `cargo test --workspace` builds it; \
                 with `cargo test -p cachelock-conformance` run `cargo build -p cachelock` first \
                 (same profile and target directory), or set CACHELOCK_BIN",
                bin.display()
            ))
        }
    }

    /// One runner per policy of [`POLICIES`].
    pub fn all() -> Result<Vec<Cachelock>, String> {
        let path = Cachelock::locate()?;
        Ok(POLICIES
            .into_iter()
            .map(|policy| Cachelock {
                path: path.clone(),
                policy,
            })
            .collect())
    }

    fn cmd(&self, sub: &str, sb: &Sandbox, cache: bool) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![self.path.clone().into(), sub.into()];
        v.extend(["--policy", self.policy.name()].map(OsString::from));
        if cache {
            v.push("--cache-dir".into());
            v.push(sb.cache.clone().into());
        }
        v
    }

    /// `-- python3 -c <import clprobe from the wheel>`.
    fn probe(&self, mut v: Vec<OsString>, sb: &Sandbox) -> Vec<OsString> {
        let wheel = sb.wheels.join("clprobe-0.1.0-py3-none-any.whl");
        v.push("--".into());
        v.push(sb.python.clone().into());
        v.push("-c".into());
        v.push(
            format!(
                "import sys; sys.path.insert(0, {:?}); import clprobe; sys.exit(clprobe.main())",
                wheel.display().to_string()
            )
            .into(),
        );
        v
    }
}

impl Runner for Cachelock {
    fn label(&self) -> String {
        format!("cachelock {}", self.policy.name())
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn argv(&self, kind: Kind, sb: &Sandbox) -> Vec<OsString> {
        match kind {
            Kind::Run | Kind::RunServer | Kind::RunDaemon | Kind::RunNestedClean => {
                self.probe(self.cmd("run", sb, true), sb)
            }
            Kind::RunNoCache => {
                let mut v = self.cmd("run", sb, false);
                v.push("--no-cache".into());
                self.probe(v, sb)
            }
            Kind::RunScript => {
                let mut v = self.cmd("run", sb, true);
                v.push("--script".into());
                v.push(sb.script.clone().into());
                self.probe(v, sb)
            }
            Kind::ToolRun => {
                let mut v = self.cmd("tool-run", sb, true);
                v.push("clprobe".into());
                self.probe(v, sb)
            }
            Kind::Clean => self.cmd("clean", sb, true),
            Kind::CleanForce => {
                let mut v = self.cmd("clean", sb, true);
                v.push("--force".into());
                v
            }
            Kind::Prune => self.cmd("prune", sb, true),
        }
    }

    fn env(&self, sb: &Sandbox, timeout: bool) -> Vec<(OsString, OsString)> {
        let mut e: Vec<(OsString, OsString)> = vec![
            ("TMPDIR".into(), sb.tmp.clone().into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        if timeout {
            e.push((
                "CACHELOCK_LOCK_TIMEOUT".into(),
                LOCK_TIMEOUT_S.to_string().into(),
            ));
        }
        e
    }

    fn has_lock_timeout(&self) -> bool {
        self.policy.design().lock_timeout
    }

    fn stand_in(&self, _kind: Kind) -> Option<&'static str> {
        None
    }
}
