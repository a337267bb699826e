//! What a traced process is in the model's terms, read from its arguments at exec
//! (`/proc/PID/cmdline`, captured by the gate): its [`Kind`] and the command its child
//! runs.
//!
//! | arguments | kind |
//! |---|---|
//! | `uv run …` | `run` |
//! | `uv run --script …` (`-s`) | `run-script` |
//! | `uv tool run …`, `uv tool uvx …`, `uvx …` | `tool-run` |
//! | any of those with `--no-cache` (`-n`) before the command | `run-no-cache` |
//! | `uv cache clean …` | `clean` |
//! | `uv cache clean --force …` | `clean-force` |
//! | `uv cache prune …` | `prune` |
//! | `cachelock run [--script F] [--no-cache] … -- CMD` | `run`, `run-script`, `run-no-cache` |
//! | `cachelock tool-run NAME [-- CMD]` | `tool-run` |
//! | `cachelock clean [--force]`, `cachelock prune` | `clean`, `clean-force`, `prune` |
//! | anything else (another uv or cachelock command, another program) | unknown: see [`crate::check`] |
//!
//! A program is uv if its file name is `uv` or `uvx` (`uv-0.13.9` and the like too), and
//! cachelock if it is `cachelock`. Options are skipped up to the first argument that is
//! neither an option nor the value of one ([`VALUE_OPTIONS`] take a value; `--opt=value`
//! carries its own), so a `--no-cache` of the child's own command line is not the run's.
//! Not seen: `UV_NO_CACHE` in the environment (a `--no-cache` run made that way is a
//! `run` here; its temporary cache still shows as `create-temp-cache`); a `run-server`
//! or `run-daemon` is a `run` (a finished trace cannot tell a server from a run whose
//! child was killed; a daemon is a process the child left behind, see [`crate::check`]).

use std::path::Path;

use cachelock_model::protocol::Kind;

/// A traced process recognised as one of the model's kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The kind.
    pub kind: Kind,
    /// For a run: the command its child runs (program first), as given on its command
    /// line; empty for cleaners, and for a run whose command is implied (`uv run
    /// --script F` runs `F`, which is then the command).
    pub command: Vec<String>,
}

/// The options of uv (global and of `run`, `tool run`, `cache clean|prune`) that take a
/// value as the next argument.
pub const VALUE_OPTIONS: &[&str] = &[
    "--cache-dir",
    "--directory",
    "--project",
    "--config-file",
    "--color",
    "--python",
    "-p",
    "--with",
    "-w",
    "--with-requirements",
    "--with-editable",
    "--find-links",
    "-f",
    "--index",
    "--index-url",
    "-i",
    "--default-index",
    "--extra-index-url",
    "--from",
    "--package",
    "--extra",
    "--group",
    "--only-group",
    "--no-group",
    "--env-file",
    "--index-strategy",
    "--keyring-provider",
    "--resolution",
    "--prerelease",
    "--exclude-newer",
    "--exclude-newer-package",
    "--link-mode",
    "--python-platform",
    "--refresh-package",
    "--reinstall-package",
    "--upgrade-package",
    "-P",
    "--config-setting",
    "-C",
    "--allow-insecure-host",
    "--no-binary-package",
    "--no-build-package",
    "--no-build-isolation-package",
    "--torch-backend",
    "--build-constraints",
    "--constraints",
    "--overrides",
    "--max-recursion-depth",
    // cachelock's
    "--policy",
    "--env",
    "--script",
];

fn file_name(arg: &str) -> &str {
    Path::new(arg)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(arg)
}

/// The options before the first positional argument, and the arguments from it on.
/// `--` ends the options (the rest is positional). `takes_value(opt)` says whether an
/// option takes the next argument as its value.
fn split_options(args: &[String], takes_value: impl Fn(&str) -> bool) -> (Vec<&str>, Vec<String>) {
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            return (opts, args[i + 1..].to_vec());
        }
        if !a.starts_with('-') || a == "-" {
            return (opts, args[i..].to_vec());
        }
        opts.push(a);
        if !a.contains('=') && takes_value(a) && i + 1 < args.len() {
            opts.push(args[i + 1].as_str());
            i += 1;
        }
        i += 1;
    }
    (opts, Vec::new())
}

/// The kind of the process that runs `argv`, if it is one of the model's.
pub fn invocation(argv: &[String]) -> Option<Invocation> {
    let program = file_name(argv.first()?);
    let rest = &argv[1..];
    if program == "uvx" || program.starts_with("uvx-") {
        return Some(uv_run(Kind::ToolRun, rest));
    }
    if program == "uv" || program.starts_with("uv-") {
        return uv(rest);
    }
    if program == "cachelock" {
        return cachelock(rest);
    }
    None
}

fn is_value_option(o: &str) -> bool {
    VALUE_OPTIONS.contains(&o) && o != "--script"
}

fn uv(args: &[String]) -> Option<Invocation> {
    // Global options may come before the subcommand.
    let (global, rest) = split_options(args, is_value_option);
    let no_cache = global.iter().any(|o| *o == "--no-cache" || *o == "-n");
    let (sub, rest) = rest.split_first()?;
    let run = |kind, rest: &[String]| {
        let mut inv = uv_run(kind, rest);
        if no_cache {
            inv.kind = Kind::RunNoCache;
        }
        inv
    };
    match sub.as_str() {
        "run" => Some(run(Kind::Run, rest)),
        "tool" => match rest.split_first()? {
            (t, rest) if t == "run" || t == "uvx" => Some(run(Kind::ToolRun, rest)),
            _ => None,
        },
        "cache" => {
            let (verb, rest) = rest.split_first()?;
            let (opts, _) = split_options(rest, is_value_option);
            match verb.as_str() {
                "clean" if opts.contains(&"--force") => Some(cleaner(Kind::CleanForce)),
                "clean" => Some(cleaner(Kind::Clean)),
                "prune" => Some(cleaner(Kind::Prune)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn cleaner(kind: Kind) -> Invocation {
    Invocation {
        kind,
        command: Vec::new(),
    }
}

/// `uv run`/`uv tool run`/`uvx` after the subcommand: its options, then the command.
fn uv_run(kind: Kind, args: &[String]) -> Invocation {
    let (opts, command) = split_options(args, is_value_option);
    let kind = if opts.iter().any(|o| *o == "--no-cache" || *o == "-n") {
        Kind::RunNoCache
    } else if kind == Kind::Run && opts.iter().any(|o| *o == "--script" || *o == "-s") {
        Kind::RunScript
    } else {
        kind
    };
    Invocation { kind, command }
}

fn cachelock(args: &[String]) -> Option<Invocation> {
    let (sub, rest) = args.split_first()?;
    let takes_value = |o: &str| matches!(o, "--cache-dir" | "--policy" | "--env" | "--script");
    let (opts, positional) = split_options(rest, takes_value);
    let has = |flag: &str| opts.contains(&flag);
    // After `--` comes the command; `split_options` stops there or at a positional.
    let after_dashes = |from: &[String]| -> Vec<String> {
        match from.iter().position(|a| a == "--") {
            Some(i) => from[i + 1..].to_vec(),
            None => Vec::new(),
        }
    };
    match sub.as_str() {
        "run" => {
            let script = opts
                .iter()
                .position(|o| *o == "--script")
                .and_then(|i| opts.get(i + 1))
                .map(|s| s.to_string());
            let kind = if has("--no-cache") {
                Kind::RunNoCache
            } else if script.is_some() {
                Kind::RunScript
            } else {
                Kind::Run
            };
            let mut command = after_dashes(rest);
            if command.is_empty()
                && let Some(s) = script
            {
                command = vec![s];
            }
            Some(Invocation { kind, command })
        }
        "tool-run" => {
            let name = positional.first()?.clone();
            let mut command = after_dashes(rest);
            if command.is_empty() {
                command = vec![name];
            }
            Some(Invocation {
                kind: Kind::ToolRun,
                command,
            })
        }
        "clean" if has("--force") => Some(cleaner(Kind::CleanForce)),
        "clean" => Some(cleaner(Kind::Clean)),
        "prune" => Some(cleaner(Kind::Prune)),
        _ => None,
    }
}

/// True if a process running `child` runs `command` (a run's command, program first):
/// its arguments end with the command's arguments, and the argument before them names
/// the command's program (by file name: uv may resolve `python3` to a path, and a
/// script is run by its interpreter, `python /env/bin/tool`, or by itself). A Python
/// interpreter's names stand for each other: uv runs `python` as the environment's
/// interpreter, whose file may be `python3` or `python3.11`.
pub fn runs_command(child: &[String], command: &[String]) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    if child.len() < args.len() + 1 {
        return false;
    }
    let (head, tail) = child.split_at(child.len() - args.len());
    tail == args
        && head
            .last()
            .is_some_and(|p| same_program(file_name(p), file_name(program)))
}

/// Two programs' file names name the same program: equal, or both a Python
/// interpreter's (`python`, `python3`, `python3.11`).
fn same_program(a: &str, b: &str) -> bool {
    let python = |name: &str| {
        name.strip_prefix("python").is_some_and(|version| {
            version
                .split('.')
                .all(|part| part.chars().all(|c| c.is_ascii_digit()))
                && version.split('.').count() <= 2
                && !version.starts_with('.')
        })
    };
    a == b || (python(a) && python(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(line: &str) -> Option<Invocation> {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        invocation(&argv)
    }

    fn kind(line: &str) -> Option<Kind> {
        inv(line).map(|i| i.kind)
    }

    #[test]
    fn uv_command_lines_name_their_kinds() {
        assert_eq!(
            kind("/x/uv run --no-project python3 -c pass"),
            Some(Kind::Run)
        );
        assert_eq!(
            kind("uv run --no-project --with clprobe clprobe --no-cache"),
            Some(Kind::Run),
            "the child's own --no-cache is not the run's"
        );
        assert_eq!(
            kind("uv run --no-cache --with clprobe clprobe"),
            Some(Kind::RunNoCache)
        );
        assert_eq!(kind("uv --no-cache run python3"), Some(Kind::RunNoCache));
        assert_eq!(kind("uv run --script /t/probe.py"), Some(Kind::RunScript));
        assert_eq!(
            kind("uv tool run --find-links /w --from clprobe clprobe"),
            Some(Kind::ToolRun)
        );
        assert_eq!(kind("/y/uvx ruff check"), Some(Kind::ToolRun));
        assert_eq!(kind("uv cache clean"), Some(Kind::Clean));
        assert_eq!(kind("uv cache clean --force"), Some(Kind::CleanForce));
        assert_eq!(kind("uv cache prune --ci"), Some(Kind::Prune));
        assert_eq!(kind("uv pip install x"), None);
        assert_eq!(kind("uv cache dir"), None);
        assert_eq!(kind("flock -s .lock cat"), None);
    }

    #[test]
    fn cachelock_command_lines_name_their_kinds() {
        assert_eq!(
            kind("cachelock run --cache-dir /c -- true"),
            Some(Kind::Run)
        );
        assert_eq!(
            kind("/b/cachelock run --no-cache --policy cachelock -- true"),
            Some(Kind::RunNoCache)
        );
        let s = inv("cachelock run --script /s.py --cache-dir /c").unwrap();
        assert_eq!(s.kind, Kind::RunScript);
        assert_eq!(s.command, vec!["/s.py".to_string()]);
        let t = inv("cachelock tool-run tool1 --cache-dir /c -- x y").unwrap();
        assert_eq!(t.kind, Kind::ToolRun);
        assert_eq!(t.command, vec!["x".to_string(), "y".to_string()]);
        assert_eq!(kind("cachelock clean --force"), Some(Kind::CleanForce));
        assert_eq!(
            kind("cachelock prune --policy cachelock"),
            Some(Kind::Prune)
        );
        assert_eq!(kind("cachelock hold --shared -- true"), None);
    }

    #[test]
    fn the_child_is_the_process_running_the_command() {
        let v = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let run = inv("uv run --no-project python3 -c pass").unwrap();
        assert_eq!(run.command, v("python3 -c pass"));
        assert!(runs_command(&v("/usr/bin/python3 -c pass"), &run.command));
        assert!(!runs_command(
            &v("/usr/bin/python3 -I -B -c import.sys"),
            &run.command
        ));
        let tool = inv("uv tool run --from clprobe clprobe").unwrap();
        assert!(runs_command(
            &v("/env/bin/python /env/bin/clprobe"),
            &tool.command
        ));
        assert!(!runs_command(&v("/env/bin/python -c x"), &tool.command));
        assert!(!runs_command(&v("x"), &[]));
        // `uv run python` runs the interpreter it found, under that file's name.
        let plain = inv("uv run --no-project python -c pass").unwrap();
        assert!(runs_command(
            &v("/root/.pyenv/versions/3.11.7/bin/python3 -c pass"),
            &plain.command
        ));
        assert!(runs_command(
            &v("/usr/bin/python3.11 -c pass"),
            &plain.command
        ));
        assert!(!runs_command(
            &v("/usr/bin/pythonic -c pass"),
            &plain.command
        ));
        assert!(!runs_command(
            &v("/usr/bin/python3.x -c pass"),
            &plain.command
        ));
        assert!(!runs_command(
            &v("/usr/bin/python. -c pass"),
            &plain.command
        ));
    }
}
