//! The child process: spawning it (optionally handing it a lock descriptor), forwarding
//! signals to it, and turning its end into an exit code.
//!
//! - The exit code is the child's; death by signal `n` is `128 + n`.
//! - While signals are forwarded, SIGTERM and SIGHUP are sent on to the child, and SIGINT
//!   too unless stdin is a terminal (then the terminal already sent it to the child's
//!   process group). This process keeps waiting, and keeps its locks, until the child has
//!   exited.
//! - [`ChildGuard`] waits for the child when dropped, so that nothing the child uses (a
//!   lock, a temporary cache) is released before it has exited, on any path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::Error;

/// The pid signals are forwarded to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// Whether SIGINT is forwarded too.
static FORWARD_SIGINT: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived after the handlers were installed but before the child existed.
static PENDING: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn forward(sig: libc::c_int) {
    if sig == libc::SIGINT && FORWARD_SIGINT.load(Ordering::SeqCst) == 0 {
        return;
    }
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid <= 0 {
        PENDING.store(sig, Ordering::SeqCst);
        return;
    }
    // SAFETY: kill(2) is async-signal-safe; pid is a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A running child. Dropping it waits for the child to exit (see the module doc).
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    exited: Option<ExitStatus>,
    previous: Option<Vec<(libc::c_int, libc::sigaction)>>,
}

/// Spawns `command` with `env` set, handing each file of `inherit` to the child as an
/// open descriptor (its number in the variable named with it, e.g.
/// `CACHELOCK_ENV_LOCK_FD`), and forwarding signals to it if `forward_signals`.
pub fn spawn(
    command: &[OsString],
    env: &[(&str, &OsStr)],
    inherit: &[(&str, &File)],
    forward_signals: bool,
) -> Result<ChildGuard, Error> {
    let Some((program, args)) = command.split_first() else {
        return Err(Error::Spawn {
            program: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    for (var, file) in inherit {
        let fd = file.as_raw_fd();
        cmd.env(var, fd.to_string());
        // SAFETY: the hook runs in the forked child before exec and only calls fcntl(2),
        // which is async-signal-safe; it touches no memory but the integer `fd`, which
        // stays open in the parent for the whole spawn.
        unsafe {
            cmd.pre_exec(move || {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    // The handlers go in before the spawn, so that a signal arriving while the child
    // starts is kept (PENDING) and delivered to it, instead of killing this process
    // while the child runs on.
    let previous = forward_signals.then(install_forwarding);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => {
            if let Some(previous) = previous {
                restore_signals(previous);
            }
            let pending = PENDING.swap(0, Ordering::SeqCst);
            if pending != 0 {
                // SAFETY: raise(3) re-delivers the signal with its original disposition.
                unsafe {
                    libc::raise(pending);
                }
            }
            return Err(Error::Spawn {
                program: program.to_string_lossy().into_owned(),
                source,
            });
        }
    };
    if previous.is_some() {
        let pid = i32::try_from(child.id()).unwrap_or(0);
        FORWARD_TO.store(pid, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if pending != 0 && pid > 0 {
            // SAFETY: kill(2) on the child we just spawned.
            unsafe {
                libc::kill(pid, pending);
            }
        }
    }
    Ok(ChildGuard {
        child,
        exited: None,
        previous,
    })
}

fn install_forwarding() -> Vec<(libc::c_int, libc::sigaction)> {
    FORWARD_TO.store(0, Ordering::SeqCst);
    PENDING.store(0, Ordering::SeqCst);
    FORWARD_SIGINT.store(i32::from(!std::io::stdin().is_terminal()), Ordering::SeqCst);
    let mut previous = Vec::new();
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
        // only performs async-signal-safe work (atomic loads and kill).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &action, &mut old) == 0 {
                previous.push((sig, old));
            }
        }
    }
    previous
}

fn restore_signals(previous: Vec<(libc::c_int, libc::sigaction)>) {
    for (sig, old) in previous {
        // SAFETY: restores an action previously returned by sigaction.
        unsafe {
            libc::sigaction(sig, &old, std::ptr::null_mut());
        }
    }
    FORWARD_TO.store(0, Ordering::SeqCst);
}

impl ChildGuard {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True until the child has been seen to exit.
    pub fn running(&mut self) -> bool {
        self.try_wait().ok().flatten().is_none()
    }

    /// The child's exit code if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<i32>, Error> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .map_err(|e| Error::io("wait for the child", "<child>", e))?;
            if self.exited.is_some()
                && let Some(previous) = self.previous.take()
            {
                restore_signals(previous);
            }
        }
        Ok(self.exited.map(exit_code))
    }

    /// Waits until the child exits; returns its exit code.
    pub fn wait(&mut self) -> Result<i32, Error> {
        if self.exited.is_none() {
            self.exited = Some(
                self.child
                    .wait()
                    .map_err(|e| Error::io("wait for the child", "<child>", e))?,
            );
            if let Some(previous) = self.previous.take() {
                restore_signals(previous);
            }
        }
        Ok(self.exited.map(exit_code).unwrap_or(0))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // Whatever failed, the child may still use the environment, the locks and the
            // temporary cache that are dropped after this guard: wait for it first.
            let _ = self.wait();
        }
    }
}

/// The exit code of a finished child: its code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
