#!/usr/bin/env python3
"""Checks the workspace's layout rules (ARCHITECTURE.md, "Layout rules"):

* no Rust file over 600 lines;
* no function over 120 lines outside tests (`#[cfg(test)]` modules, `tests/`, `benches/`,
  `*tests.rs` files);
* no import cycle among the modules of any crate: module `a` depends on module `b` when a
  non-test line of `a` names a path `crate::b::...` / `super::...` / `self::...` (or, for a
  crate's own sub-crates, `tritter_model::b::...` does not count: only paths inside the crate).
  A path is charged to the longest module prefix it names, so `use crate::tui::theme::Theme`
  is an edge to `tui::theme`, not to `tui`. `mod` declarations are ownership, not use.

Usage: `python3 scripts/check_layout.py [--graph CRATE]` from the repository root; exit 1 with
one line per problem, 0 when every rule holds. `--graph` prints a crate's module edges.
"""

import os
import re
import sys

CRATES = {"tritter": "src", "tritter-model": "model/src", "tritter-kernels": "kernels/src"}
MAX_FILE = 600
MAX_FN = 120
ROOTS = ("main.rs", "lib.rs")


def strip_code(text):
    """The text with comments, strings and char literals blanked (same line structure)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code, open_idx):
    """Index of the `}` closing the `{` at open_idx."""
    depth = 0
    for j in range(open_idx, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def test_spans(code):
    """Character spans of `#[cfg(test)]` items (modules or functions)."""
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        k = code.find("{", m.end())
        semi = code.find(";", m.end())
        if k < 0 or (0 <= semi < k):
            continue
        spans.append((m.start(), block_end(code, k)))
    return spans


def in_spans(pos, spans):
    return any(a <= pos <= b for a, b in spans)


def is_test_file(path):
    parts = path.split(os.sep)
    base = os.path.basename(path)
    return ("tests" in parts or "benches" in parts or "examples" in parts
            or base.endswith("tests.rs"))


def module_of(crate_root, path):
    rel = os.path.relpath(path, crate_root)[:-3].split(os.sep)
    if rel[-1] == "mod" or (len(rel) == 1 and rel[0] + ".rs" in ROOTS):
        rel = rel[:-1]
    return tuple(rel)


def rust_files(root):
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def check_lengths(path, code, problems):
    lines = len(code.splitlines())
    if lines > MAX_FILE:
        problems.append(f"{path}: {lines} lines (over {MAX_FILE})")
    if is_test_file(path):
        return
    spans = test_spans(code)
    for m in re.finditer(r"\bfn\s+(\w+)", code):
        if in_spans(m.start(), spans):
            continue
        k = m.end()
        depth = 0
        while k < len(code):
            ch = code[k]
            if ch in "([<":
                depth += 1
            elif ch in ")]>" and depth:
                depth -= 1
            elif ch == ";" and depth == 0:
                k = -1
                break
            elif ch == "{" and depth == 0:
                break
            k += 1
        if k < 0 or k >= len(code):
            continue
        end = block_end(code, k)
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, end) + 1
        if last - first + 1 > MAX_FN:
            problems.append(f"{path}:{first}: fn {m.group(1)} is {last - first + 1} lines (over {MAX_FN})")


def resolve(mod, path, modules):
    """The module a path (list of segments) used inside `mod` points at, or None."""
    if not path:
        return None
    segs = list(path)
    if segs[0] == "crate":
        base = []
        segs = segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(mod)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                if not base:
                    return None
                base.pop()
            segs = segs[1:]
    else:
        return None
    full = base + segs
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in modules:
            return tuple(full[:k])
    return None


def use_paths(code):
    """Every `crate::`/`super::`/`self::` path named in code, with use-tree braces expanded."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand(re.sub(r"\s+", "", m.group(1))))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", code):
        paths.append(m.group(1).split("::"))
    return paths


def expand(tree):
    tree = tree.lstrip(":")
    k = tree.find("{")
    if k < 0:
        return [[s for s in tree.split(" as ")[0].split("::") if s]]
    prefix = [s for s in tree[:k].split("::") if s]
    inner = tree[k + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip() in ("", "self"):
            out.append(prefix)
            continue
        out.extend(prefix + s for s in expand(p))
    return out


def graph(root):
    files = {module_of(root, p): p for p in rust_files(root)}
    edges = {m: set() for m in files}
    for mod, path in files.items():
        if is_test_file(path):
            continue
        with open(path, encoding="utf-8") as f:
            code = strip_code(f.read())
        spans = test_spans(code)
        kept = "".join(" " if in_spans(i, spans) and ch != "\n" else ch for i, ch in enumerate(code))
        for p in use_paths(kept):
            target = resolve(mod, p, files)
            if target is not None and target != mod and not is_test_file(files[target]):
                edges[mod].add(target)
    return files, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(m):
    return "::".join(m) or "(root)"


def main():
    problems = []
    for crate, root in CRATES.items():
        top = os.path.dirname(root)
        for d in {root, os.path.join(top, "tests"), os.path.join(top, "benches"), os.path.join(top, "examples")}:
            if not os.path.isdir(d):
                continue
            for p in rust_files(d):
                with open(p, encoding="utf-8") as f:
                    check_lengths(p, strip_code(f.read()), problems)
        files, edges = graph(root)
        if "--graph" in sys.argv and sys.argv[sys.argv.index("--graph") + 1] == crate:
            for m in sorted(edges):
                print(f"{name(m)} -> {', '.join(name(t) for t in sorted(edges[m]))}")
        for comp in cycles(edges):
            problems.append(f"{crate}: import cycle among {', '.join(name(m) for m in comp)}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
