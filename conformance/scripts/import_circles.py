#!/usr/bin/env python3
"""Lists the import circles between source files of every crate of the workspace.

For every crate root (lib.rs, main.rs, src/bin/*.rs) the script maps each module to its
file, then collects, per file, the modules it names through `crate::`, `super::`, or a
child module it declares (`mod x;` then `x::`), comments and unit-test modules left out. A pair of files A, B
with A naming B and B naming A is an import circle, and so is any longer cycle
A -> B -> ... -> A (the crate root, which only declares and re-exports, is left out of
cycles). Exit 1 if there is one.

Usage: conformance/scripts/import_circles.py [ROOT]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def crate_roots() -> list[Path]:
    roots = []
    for src in [
        ROOT / "model" / "src",
        ROOT / "impl" / "src",
        ROOT / "impl" / "inspect" / "src",
        ROOT / "conformance" / "src",
        ROOT / "conformance" / "gate" / "src",
    ]:
        roots += [p for p in [src / "lib.rs", src / "main.rs", src / "command" / "main.rs"] if p.exists()]
        roots += sorted((src / "bin").glob("*.rs")) if (src / "bin").is_dir() else []
    return roots


def modules(root: Path) -> dict[tuple[str, ...], Path]:
    """Module path -> file, for the crate rooted at `root`."""
    out: dict[tuple[str, ...], Path] = {(): root}
    todo = [((), root)]
    while todo:
        path, file = todo.pop()
        text = strip_comments(file.read_text())
        # A file's submodules live in `<dir>/<name>.rs` or `<dir>/<name>/mod.rs`, where <dir>
        # is the file's own directory for a crate root or mod.rs, else `<dir>/<stem>/`.
        base = file.parent if file == root or file.name == "mod.rs" else file.parent / file.stem
        for name in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", text, re.M):
            for cand in [base / f"{name}.rs", base / name / "mod.rs"]:
                if cand.exists():
                    out[path + (name,)] = cand
                    todo.append((path + (name,), cand))
                    break
    return out


def use_tree(text: str, i: int) -> tuple[list[list[str]], int]:
    """The paths of the use-tree starting at text[i] (after a `::`)."""
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] == "{":
        paths, i = [], i + 1
        while i < len(text) and text[i] != "}":
            sub, i = use_tree(text, i)
            paths += sub
            while i < len(text) and text[i] in ", \n\t":
                i += 1
        return paths, i + 1
    m = IDENT.match(text, i)
    if not m:
        return [[]], i
    i = m.end()
    if text.startswith("::", i):
        rest, i = use_tree(text, i + 2)
        return [[m.group()] + r for r in rest], i
    return [[m.group()]], i


def references(path: tuple[str, ...], file: Path, mods: dict) -> set[tuple[str, ...]]:
    text = strip_comments(file.read_text())
    # A file's unit tests (`#[cfg(test)] mod tests { use super::*; … }`, at its end) are
    # the file itself: their `super` is the file's module.
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
    own_children = {p[-1] for p in mods if len(p) == len(path) + 1 and p[:-1] == path}
    found = set()
    for m in re.finditer(r"\b(crate|super|[A-Za-z_][A-Za-z0-9_]*)::", text):
        head = m.group(1)
        if m.start() > 0 and text[m.start() - 1] == ":":
            continue  # the middle of a longer path
        if head == "crate":
            base = ()
        elif head == "super":
            base = path[:-1]
        elif head in own_children:
            base = path + (head,)
        else:
            continue
        for segs in use_tree(text, m.end())[0]:
            segs = [s for s in segs if s != "self"]
            # The longest prefix that is a module with a file.
            target = base
            for s in segs:
                if target + (s,) in mods:
                    target = target + (s,)
                else:
                    break
            found.add(target)
    return found


def cycles(refs: dict) -> list[list[tuple[str, ...]]]:
    """The strongly connected components of more than one module (Tarjan), crate root
    left out."""
    graph = {a: {b for b in r if b != () and b in refs} for a, r in refs.items() if a != ()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    circles = []
    longer = []
    edges = 0
    for root in crate_roots():
        mods = modules(root)
        refs = {p: references(p, f, mods) - {p} for p, f in mods.items()}
        edges += sum(len(r) for r in refs.values())
        for a, ra in refs.items():
            for b in ra:
                if a < b and a in refs.get(b, set()):
                    circles.append((mods[a].relative_to(ROOT), mods[b].relative_to(ROOT)))
        for comp in cycles(refs):
            if len(comp) > 2:
                longer.append([str(mods[m].relative_to(ROOT)) for m in comp])
    files = len({f for root in crate_roots() for f in modules(root).values()})
    print(
        f"{files} files, {edges} file-to-module references, {len(circles)} pairs importing "
        f"each other, {len(longer)} longer cycles"
    )
    for a, b in sorted(set(circles)):
        print(f"  {a} <-> {b}")
    for comp in longer:
        print("  cycle: " + " -> ".join(comp))
    return 1 if circles or longer else 0


if __name__ == "__main__":
    sys.exit(main())
