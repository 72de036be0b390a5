"""Rust `fn` items with `///` doc comments, found by a small scanner (standard library only).

Used by scripts/mine_instructions.py. A doc block is a run of lines starting with `///`
(attributes such as `#[inline]` may follow it); the item after it is kept when it is a
function (`fn`, with optional `pub`, `pub(crate)`, `const`, `async`, `unsafe`, `extern "C"`).
Its body is found by brace matching that skips string literals (plain, byte, raw `r#"..."#`),
char literals (told apart from lifetimes), line comments and nested block comments. A
declaration without a body (`fn f();` in a trait) is not an item. An unbalanced body raises
`RustScanError`, which the miner counts as a file it could not parse.
"""

import re

FN_HEAD = re.compile(
    r"^(pub(\s*\([^)]*\))?\s+)?((const|async|unsafe|default)\s+|extern\s+\"[^\"]*\"\s+)*"
    r"fn\s+([A-Za-z_][A-Za-z0-9_]*)"
)


class RustScanError(ValueError):
    """The source could not be scanned (unterminated literal or comment, unbalanced braces)."""


def _ident_char(c):
    return c.isalnum() or c == "_"


def skip_literal(src, i):
    """If a string, char literal or comment starts at `i`, the index just past it; else None."""
    c = src[i]
    nxt = src[i + 1] if i + 1 < len(src) else ""
    if c == "/" and nxt == "/":
        end = src.find("\n", i)
        return len(src) if end < 0 else end
    if c == "/" and nxt == "*":
        depth, j = 1, i + 2
        while depth:
            if j >= len(src) - 1:
                raise RustScanError("unterminated block comment")
            two = src[j : j + 2]
            if two == "/*":
                depth, j = depth + 1, j + 2
            elif two == "*/":
                depth, j = depth - 1, j + 2
            else:
                j += 1
        return j
    prev_ident = i > 0 and _ident_char(src[i - 1])
    if not prev_ident and c in "rb":
        m = re.compile(r"b?r(#*)\"").match(src, i)
        if m:
            close = '"' + m.group(1)
            end = src.find(close, m.end())
            if end < 0:
                raise RustScanError("unterminated raw string")
            return end + len(close)
        if c == "b" and nxt in "\"'":
            return skip_literal(src, i + 1)
    if c == '"':
        j = i + 1
        while j < len(src):
            if src[j] == "\\":
                j += 2
            elif src[j] == '"':
                return j + 1
            else:
                j += 1
        raise RustScanError("unterminated string")
    if c == "'":
        if nxt == "\\":
            end = src.find("'", i + 3)
            if end < 0:
                raise RustScanError("unterminated char literal")
            return end + 1
        if i + 2 < len(src) and src[i + 2] == "'":
            return i + 3
        return i + 1  # a lifetime or label
    return None


def find_body(src, start):
    """(open, close) indices of the braces of the item starting at `start`; None for `fn f();`."""
    depth, j, open_at = 0, start, None
    while j < len(src):
        end = skip_literal(src, j)
        if end is not None:
            j = end
            continue
        c = src[j]
        if c == ";" and depth == 0 and open_at is None:
            return None
        if c == "{":
            if open_at is None:
                open_at = j
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                raise RustScanError("unbalanced braces")
            if depth == 0 and open_at is not None:
                return open_at, j
        j += 1
    raise RustScanError("unbalanced braces")


def _doc_text(lines):
    out = []
    for line in lines:
        s = line.strip()[3:]
        out.append(s[1:] if s.startswith(" ") else s)
    return "\n".join(out).strip()


def rust_items(src):
    """Documented functions of a Rust source: dicts with name, signature, doc, code (the item
    from its first attribute to its closing brace, dedented, without the doc comment),
    body_lines (the lines of the body between the braces) and head (the text before the body)."""
    lines = src.splitlines(keepends=True)
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    # Validate the whole file first, so a file that does not scan yields nothing.
    _check_balanced(src)
    items, i = [], 0
    while i < len(lines):
        if not _is_doc(lines[i]) or (i > 0 and _is_doc(lines[i - 1])):
            i += 1
            continue
        d0 = i
        while i < len(lines) and _is_doc(lines[i]):
            i += 1
        a0 = i
        while i < len(lines) and lines[i].lstrip().startswith("#["):
            i += 1
        if i >= len(lines):
            break
        m = FN_HEAD.match(lines[i].strip())
        if not m:
            continue
        body = find_body(src, offsets[i])
        if body is None:
            continue
        open_at, close_at = body
        indent = len(lines[a0]) - len(lines[a0].lstrip())
        code = _dedent(src[offsets[a0] : close_at + 1], indent)
        head = " ".join(src[offsets[i] : open_at].split())
        inner = src[open_at + 1 : close_at]
        items.append(
            {
                "name": m.group(5),
                "signature": head,
                "doc": _doc_text(lines[d0:a0]),
                "code": code,
                "line": d0 + 1,
                "is_test": any(x.strip() == "#[test]" for x in lines[a0:i]),
                "body": inner,
            }
        )
        i = src.count("\n", 0, close_at) + 1
    return items


def _is_doc(line):
    s = line.lstrip()
    return s.startswith("///") and not s.startswith("////")


def _dedent(text, indent):
    out = []
    for line in text.splitlines():
        k = len(line) - len(line.lstrip(" "))
        out.append(line[min(k, indent) :])
    return "\n".join(out)


def _check_balanced(src):
    depth, j = 0, 0
    while j < len(src):
        end = skip_literal(src, j)
        if end is not None:
            j = end
            continue
        if src[j] == "{":
            depth += 1
        elif src[j] == "}":
            depth -= 1
            if depth < 0:
                raise RustScanError("unbalanced braces")
        j += 1
    if depth != 0:
        raise RustScanError("unbalanced braces")
