//! The seccomp-BPF filter every traced process runs under.
//!
//! It returns `SECCOMP_RET_TRACE` (a ptrace stop) for the system calls that can be a
//! protocol step and `SECCOMP_RET_ALLOW` for everything else, so that untraced calls run
//! at full speed:
//! - `open`/`openat` only with write access or `O_CREAT` (uv opens `.lock` read-write;
//!   read-only opens, the bulk of every process's opens, never stop);
//! - `flock`, `rename`/`renameat`/`renameat2`, `unlink`/`unlinkat`/`rmdir`,
//!   `mkdir`/`mkdirat`, `exit_group`.
//!
//! `execve` is not in the filter: a call the filter marks for tracing fails with
//! `ENOSYS` until the tracer has set `PTRACE_O_TRACESECCOMP`, which it can only do once
//! the process has stopped, after its first exec. Execs are seen through
//! `PTRACE_O_TRACEEXEC` instead.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};

/// The `SECCOMP_RET_DATA` the gate's rules carry (seen as the event message).
pub const TRACE_DATA: u32 = 0x0c1a;

/// The system calls that stop unconditionally.
fn always() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_flock,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_unlinkat,
        libc::SYS_mkdirat,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_rename,
        libc::SYS_unlink,
        libc::SYS_rmdir,
        libc::SYS_mkdir,
    ]);
    v
}

/// Rules matching an open whose flags (argument `arg`) ask for write access or creation.
fn writing_open(arg: u8) -> Result<Vec<SeccompRule>, BackendError> {
    let masked = |mask: i32, value: i32| {
        SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(mask as u64),
            value as u64,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
    };
    Ok(vec![
        masked(libc::O_ACCMODE, libc::O_WRONLY)?,
        masked(libc::O_ACCMODE, libc::O_RDWR)?,
        masked(libc::O_CREAT, libc::O_CREAT)?,
    ])
}

/// Compiles the filter for the running architecture.
pub fn program() -> Result<BpfProgram, BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        always().into_iter().map(|nr| (nr, Vec::new())).collect();
    rules.insert(libc::SYS_openat, writing_open(2)?);
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_open, writing_open(1)?);
    let arch = std::env::consts::ARCH.try_into()?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Trace(TRACE_DATA),
        arch,
    )?;
    filter.try_into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_compiles_for_this_architecture() {
        let p = super::program().expect("filter");
        assert!(!p.is_empty());
    }
}
