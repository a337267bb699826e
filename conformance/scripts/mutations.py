#!/usr/bin/env python3
"""Breaks the protocol's rules on purpose, one at a time, and shows that the tests notice.

Each mutation below is one small change to the implementation that breaks one rule
stated in `model/src/protocol.rs`'s module doc or in `impl/src/guards.rs`'s drop order.
For each, the script copies the repository to a scratch directory, applies the change
there (never in the checkout), runs the tests of `cargo test --workspace` (every test
binary, quick ones first, then the doctests) and records which test binary failed first. A mutation that no test catches is a hole in the suite: the script then
exits 1.

Usage:
  conformance/scripts/mutations.py                 run every mutation, print a table
  conformance/scripts/mutations.py --write-docs    ... and write docs/mutations.md
  conformance/scripts/mutations.py --only ID ...   run only these mutations
  conformance/scripts/mutations.py --list          list the mutations and exit
  conformance/scripts/mutations.py --no-baseline   skip the unmutated run

The unmutated suite runs first (unless --no-baseline): a mutation counts as caught only
if the same suite passes without it. A mutation whose text no longer matches the code
is reported as stale (exit 2): update it here rather than dropping it. A mutation that
does not compile is reported as such (exit 2): a compile error proves nothing about the
tests. The scratch copy keeps one target directory, so runs after the first build are
incremental. This is not part of `.ci/run`: it runs the whole suite once per mutation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "mutations.md"
# One mutation must not take the whole machine forever: a suite that hangs is caught
# too (CI would time out), but the table says so.
SUITE_TIMEOUT_S = 30 * 60


@dataclass(frozen=True)
class Mutation:
    id: str
    rule: str
    file: str
    old: str
    new: str
    change: str
    # A second replacement, for changes that move a line (a field's position is its drop
    # order): (old, new), applied after the first.
    after: tuple[str, str] | None = None


def mutation_list() -> list[Mutation]:
    from mutation_specs import SPECS  # type: ignore

    return [Mutation(**spec) for spec in SPECS]


@dataclass
class Result:
    mutation: Mutation | None
    outcome: str  # "passed", "caught", "NOT CAUGHT", "stale", "does not compile", "hung"
    caught_by: list[str]
    seconds: float


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("target", ".git", ".uv-versions", "*.profraw")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)
    versions = ROOT / ".uv-versions"
    link = dest / ".uv-versions"
    if versions.exists() and not link.exists():
        link.symlink_to(versions)


FAILED_TEST = re.compile(r"^test (\S+) \.\.\. FAILED", re.M)
DOCTEST_FAILED = re.compile(r"^---- (\S+ - \S+) stdout ----", re.M)


# The suite's binaries in the order they run here: the quick ones first, so that a
# mutation is usually caught in seconds; the long ones last. The set of tests is exactly
# `cargo test --workspace`'s (every test binary of every member, then the doctests):
# only the order differs, and a suite fails in one order if and only if it fails in any.
SLOW_LAST = ["loom_guards", "replay", "metamorphic", "fidelity", "secure_delete"]


def run_suite(scratch: Path, log: Path) -> tuple[str, list[str], float]:
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(scratch / "target")
    env.setdefault("CARGO_TERM_COLOR", "never")
    start = time.monotonic()
    deadline = start + SUITE_TIMEOUT_S
    with open(log, "w") as out:
        build = subprocess.run(
            ["cargo", "test", "--workspace", "--no-run", "--message-format=json"],
            cwd=scratch, env=env, stdout=subprocess.PIPE, stderr=out, text=True,
        )
        if build.returncode != 0:
            return "does not compile", [], time.monotonic() - start
        binaries = []
        for line in build.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
                pkg_dir = Path(msg["manifest_path"]).parent
                binaries.append((msg["target"]["name"], msg["target"]["kind"][0], msg["executable"], pkg_dir))
        rank = lambda b: (SLOW_LAST.index(b[0]) + 1) if b[0] in SLOW_LAST else 0
        binaries.sort(key=rank)
        for name, kind, exe, pkg_dir in binaries:
            out.write(f"\n== {kind} {name} ({exe})\n")
            out.flush()
            run_env = dict(env, CARGO_MANIFEST_DIR=str(pkg_dir))
            try:
                proc = subprocess.run([exe], cwd=pkg_dir, env=run_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace",
                                      timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return "hung", [f"{name} (the suite did not finish in {SUITE_TIMEOUT_S} s)"], time.monotonic() - start
            out.write(proc.stdout)
            if proc.returncode != 0:
                tests = FAILED_TEST.findall(proc.stdout)
                where = f"{pkg_dir.name}/{name}" if kind == "test" else f"{pkg_dir.name} ({kind} {name})"
                return "failed", [f"{where}: {t}" for t in tests] or [where], time.monotonic() - start
        doc = subprocess.run(["cargo", "test", "--workspace", "--doc"], cwd=scratch, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        out.write(doc.stdout)
        if doc.returncode != 0:
            tests = DOCTEST_FAILED.findall(doc.stdout)
            return "failed", [f"doctest: {t}" for t in tests] or ["doctests"], time.monotonic() - start
    return "passed", [], time.monotonic() - start


def apply(scratch: Path, m: Mutation) -> str | None:
    path = scratch / m.file
    text = path.read_text()
    for old, new in [(m.old, m.new)] + ([m.after] if m.after else []):
        count = text.count(old)
        if count != 1:
            return f"its text occurs {count} times in {m.file} (expected once)"
        text = text.replace(old, new)
    path.write_text(text)
    return None


def restore(scratch: Path, m: Mutation) -> None:
    shutil.copy2(ROOT / m.file, scratch / m.file)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), {rustc}"


def write_docs(results: list[Result], baseline: Result | None) -> None:
    lines = [
        "# Mutations: the suite's power, shown",
        "",
        "<!-- generated by conformance/scripts/mutations.py --write-docs; do not edit -->",
        "",
        "Each row breaks one rule of the protocol on purpose, with one small change to the",
        "implementation, and runs the tests of `cargo test --workspace` on a scratch copy (the",
        "same test binaries and doctests, the quick binaries first). *Caught by* is the first",
        "test binary that failed, and its failing tests; later binaries may catch it too. The rules are those of `model/src/protocol.rs`'s module",
        "doc, of `impl/src/guards.rs`'s drop order and of `impl/src/safe_fs.rs`. Re-run with",
        "`python3 conformance/scripts/mutations.py --write-docs`.",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    if baseline is not None:
        lines += [
            f"Unmutated suite: {baseline.outcome} in {baseline.seconds:.0f} s.",
            "",
        ]
    lines += [
        "| # | rule broken | change | result | caught by | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        m = r.mutation
        assert m is not None
        caught = "<br>".join(f"`{c}`" for c in r.caught_by) or "-"
        lines.append(
            f"| {i} | {m.rule} | `{m.file}`: {m.change} | {r.outcome} | {caught} | {r.seconds:.0f} |"
        )
    caught = sum(1 for r in results if r.outcome == "caught")
    lines += ["", f"{caught} of {len(results)} mutations caught.", ""]
    DOCS.write_text("\n".join(lines))


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    mutations = mutation_list()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutations")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--write-docs", action="store_true", help="write docs/mutations.md")
    ap.add_argument("--dry-run", action="store_true", help="only check that every mutation applies")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--scratch", type=Path, help="scratch directory to reuse (kept)")
    args = ap.parse_args()

    if args.list:
        for m in mutations:
            print(f"{m.id:32} {m.rule}")
        return 0
    if args.only:
        known = {m.id for m in mutations}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            print(f"error: unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m.id in args.only]

    if args.dry_run:
        stale = 0
        with tempfile.TemporaryDirectory(prefix="cachelock-mutations-") as tmp:
            for m in mutations:
                dest = Path(tmp) / m.file
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / m.file, dest)
                problem = apply(Path(tmp), m)
                stale += problem is not None
                print(f"{m.id:32} {problem or 'applies'}")
        return 2 if stale else 0

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cachelock-mutations-"))
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"scratch copy: {scratch}", file=sys.stderr)
    copy_tree(scratch)
    logs = scratch / "logs"
    logs.mkdir(exist_ok=True)

    baseline = None
    if not args.no_baseline:
        print("baseline: the unmutated suite ...", file=sys.stderr, flush=True)
        outcome, caught, secs = run_suite(scratch, logs / "baseline.log")
        baseline = Result(None, outcome, caught, secs)
        print(f"baseline: {outcome} in {secs:.0f} s", file=sys.stderr)
        if outcome != "passed":
            print(f"error: the unmutated suite does not pass ({caught}); see {logs / 'baseline.log'}", file=sys.stderr)
            return 2

    results: list[Result] = []
    bad = False
    for n, m in enumerate(mutations, 1):
        print(f"[{n}/{len(mutations)}] {m.id}: {m.rule} ...", file=sys.stderr, flush=True)
        problem = apply(scratch, m)
        if problem:
            results.append(Result(m, "stale", [problem], 0.0))
            print(f"  stale: {problem}", file=sys.stderr)
            bad = True
            continue
        try:
            outcome, caught, secs = run_suite(scratch, logs / f"{m.id}.log")
        finally:
            restore(scratch, m)
        if outcome == "failed":
            outcome = "caught"
        elif outcome == "passed":
            outcome = "NOT CAUGHT"
        elif outcome == "hung":
            outcome = "caught (suite hung)"
        else:
            bad = True
        results.append(Result(m, outcome, caught, secs))
        print(f"  {outcome} in {secs:.0f} s: {'; '.join(caught) or '-'}", file=sys.stderr)

    print()
    for r in results:
        assert r.mutation is not None
        print(f"{r.mutation.id:32} {r.outcome:18} {'; '.join(r.caught_by)}")
    if args.write_docs:
        write_docs(results, baseline)
        print(f"wrote {DOCS}", file=sys.stderr)
    if bad:
        return 2
    return 0 if all(r.outcome.startswith("caught") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
