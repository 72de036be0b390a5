#!/usr/bin/env python3
"""Mine instruction pairs from the code corpus of a `tritter --train` config (stdlib only).

    python3 scripts/mine_instructions.py --config CONFIG.toml --out mined.jsonl --seq-len 2048
    python3 scripts/mine_instructions.py --dir src --license MIT --out mined.jsonl

Reads the `[[data.sources]] kind = "dir"` entries of the config (their `path`, relative to the
config file, `languages` (default python and rust) and `license`), `[data] val_fraction` (default
0.01) and `seed` (default 0); `--dir`/`--license`/`--val-fraction`/`--seed` give them directly.
Writes one chat record a line, `{"messages": [user, assistant], "kind", "source", "license"}`,
which a `[[data.sources]] kind = "chat"` source reads (extra keys are ignored). Kinds:

  write_python   user: "Write a Python function `name(args)` that does the following: <first
                 paragraph of the docstring>"; assistant: the function's source.
  write_rust     the same for a Rust `fn` with a `///` doc comment (the source without the doc).
  explain        user: "Explain this function:\n```lang\n<code without its docstring>\n```";
                 assistant: the docstring / doc comment text.
  fim            user: "Fill in the part of this <Lang> function marked <hole>:\n```lang\n
                 <prefix><hole><suffix>\n```"; assistant: the missing lines (1 to 5 whole lines of
                 the body, chosen by a generator seeded from the seed, the file and the name).

Held-out rule: a document is held out exactly as the pipeline splits it
(model/src/data/pipeline.rs: the seeded hash of its 128-bit content hash against
val_fraction, model/src/data/hash.rs ported below; a corpus with no held-out document then
holds out the one with the smallest key). No record comes from a held-out document, nor from a
function whose code (docstring removed, whitespace collapsed) also occurs in a held-out
document, nor one whose word shingles (the pipeline's: `[data.dedup]` shingle_size 5,
lowercase) have an exact Jaccard similarity of at least `[data.dedup] threshold` (0.7) with
those of a held-out function.

Skipped: test functions (`test*`, `#[test]`, or in a file named `test_*.py` / `*_test.py` /
under a `test/` or `tests/` folder), dunder methods, docstrings under 20 characters, bodies
under 3 lines, content with a chat marker, records whose rendering exceeds `--seq-len` bytes
(a token is at least one byte, so bytes bound tokens). Files that do not parse are skipped and
counted. `--exclude NAME` leaves folders of that name out (the pipeline has no such option).
Output is deduplicated and deterministic; a JSON summary goes to stdout.
"""

import argparse
import ast
import json
import os
import random
import re
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mine_rust_items import RustScanError, rust_items  # noqa: E402

MASK = (1 << 64) - 1
K1 = 0x9E3779B97F4A7C15
K2 = 0xC2B2AE3D27D4EB4F
MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
EXTS = {"python": (".py", ".pyi"), "rust": (".rs",)}
MIN_DOC, MIN_BODY_LINES = 20, 3


def fmix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    return x ^ (x >> 33)


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & MASK


def hash_bytes(seed, data):
    """model/src/data/hash.rs `hash_bytes`."""
    h = (seed ^ (len(data) * K1)) & MASK
    for k in range(0, len(data), 8):
        w = int.from_bytes(data[k : k + 8].ljust(8, b"\0"), "little")
        h = (rotl(h ^ ((w * K2) & MASK), 31) * K1) & MASK
    return fmix64(h)


def split_key(seed, content):
    """The pipeline's split key of a document: hash of its content hash's little-endian bytes."""
    ch = (hash_bytes(0x5EED0001, content) << 64) | hash_bytes(0x5EED0002, content)
    return hash_bytes((seed ^ 0x0053504C4954) & MASK, ch.to_bytes(16, "little"))


def unit_interval(h):
    return (h >> 11) / float(1 << 53)


def walk(root, exts, exclude=()):
    """The pipeline's walk: sorted, depth-first, hidden entries and inner symlinks skipped
    (and folders named in `exclude`, which the pipeline does not have)."""
    if os.path.isfile(root):
        yield root
        return
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        if name.startswith(".") or name in exclude:
            continue
        p = os.path.join(root, name)
        if os.path.islink(p):
            continue
        if os.path.isdir(p):
            yield from walk(p, exts, exclude)
        elif name.endswith(exts):
            yield p


def norm_code(code):
    return " ".join(code.split())


WORD = re.compile(r"[A-Za-z0-9_]+", re.ASCII)


def shingles(code, n, lowercase):
    """The pipeline's shingles (minhash.rs): n consecutive ASCII words, as word tuples."""
    words = WORD.findall(code.lower() if lowercase else code)
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[k : k + n]) for k in range(len(words) - n + 1)}


class NearIndex:
    """Held-out functions' shingle sets; `near` is true when a code's exact Jaccard similarity
    to one of them reaches the pipeline's near-dedup threshold."""

    def __init__(self, n, lowercase, threshold):
        self.n, self.lowercase, self.threshold = n, lowercase, threshold
        self.sizes, self.index = [], {}

    def add(self, code):
        sh = shingles(code, self.n, self.lowercase)
        for s in sh:
            self.index.setdefault(s, []).append(len(self.sizes))
        self.sizes.append(len(sh))

    def near(self, code):
        sh = shingles(code, self.n, self.lowercase)
        common = {}
        for s in sh:
            for k in self.index.get(s, ()):
                common[k] = common.get(k, 0) + 1
        return any(c / (len(sh) + self.sizes[k] - c) >= self.threshold for k, c in common.items())


def is_test_file(rel):
    base = os.path.basename(rel)
    parts = rel.replace(os.sep, "/").split("/")
    in_tests = bool({"test", "tests"} & set(parts[:-1]))
    return base.startswith("test_") or base.endswith("_test.py") or in_tests


def python_items(text):
    """Functions with docstrings: dicts with name, signature, doc, code, code_nodoc, body."""
    tree = ast.parse(text)
    lines = text.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if doc is None:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        code = textwrap.dedent("\n".join(lines[first - 1 : node.end_lineno]))
        ds = node.body[0]
        kept = lines[first - 1 : ds.lineno - 1] + lines[ds.end_lineno : node.end_lineno]
        body = lines[ds.end_lineno : node.end_lineno]
        out.append(
            {
                "name": node.name,
                "signature": f"{node.name}({ast.unparse(node.args)})",
                "doc": doc.strip(),
                "code": code,
                "code_nodoc": textwrap.dedent("\n".join(kept)),
                "body_lines": len([b for b in body if b.strip()]),
                "line": node.lineno,
            }
        )
    out.sort(key=lambda it: it["line"])
    return out


def rust_items_norm(text):
    out = []
    for it in rust_items(text):
        it = dict(it)
        it["code_nodoc"] = it["code"]
        it["body_lines"] = len([b for b in it.pop("body").splitlines() if b.strip()])
        out.append(it)
    return out


def summary_line(doc):
    para = doc.strip().split("\n\n")[0]
    return " ".join(para.split())


def skip_reason(it, rel):
    name = it["name"]
    if name.startswith("test") or is_test_file(rel) or it.get("is_test"):
        return "test"
    if name.startswith("__") and name.endswith("__"):
        return "dunder"
    if len(it["doc"]) < MIN_DOC:
        return "short_doc"
    if it["body_lines"] < MIN_BODY_LINES:
        return "short_body"
    if any(m in it["code"] or m in it["doc"] for m in MARKERS):
        return "chat_marker"
    return None


def fim_pair(it, lang, seed, rel):
    lines = it["code_nodoc"].split("\n")
    if len(lines) < 4:
        return None
    rng = random.Random(f"{seed}:{rel}:{it['line']}:{it['name']}")
    for _ in range(4):  # a middle of braces or blank lines alone is drawn again
        n = rng.randint(1, min(5, max(1, (len(lines) - 2) // 3)))
        start = rng.randint(1, len(lines) - 1 - n)
        middle = "\n".join(lines[start : start + n]) + "\n"
        if any(c.isalnum() for c in middle):
            break
    else:
        return None
    prefix = "\n".join(lines[:start]) + "\n"
    suffix = "\n".join(lines[start + n :])
    user = (
        f"Fill in the part of this {lang.capitalize()} function marked <hole>:\n"
        f"```{lang}\n{prefix}<hole>{suffix}\n```"
    )
    return user, middle


def pairs_of(it, lang, seed, rel):
    """The (kind, user, assistant) pairs of one item."""
    what = "Python" if lang == "python" else "Rust"
    sig = it["signature"]
    out = [
        (
            f"write_{lang}",
            f"Write a {what} function `{sig}` that does the following: {summary_line(it['doc'])}",
            it["code"] if lang == "python" else it["code_nodoc"],
        ),
        ("explain", f"Explain this function:\n```{lang}\n{it['code_nodoc']}\n```", it["doc"]),
    ]
    fim = fim_pair(it, lang, seed, rel)
    if fim:
        out.append(("fim", fim[0], fim[1]))
    return out


def rendered_bytes(user, assistant):
    text = f"<|user|>\n{user}<|end|>\n<|assistant|>\n{assistant}<|end|>\n"
    return len(text.encode("utf-8"))


def sources_from_args(args):
    if args.config:
        import tomllib

        with open(args.config, "rb") as f:
            cfg = tomllib.load(f)
        data = cfg.get("data", {})
        base = os.path.dirname(os.path.abspath(args.config))
        srcs = []
        for s in data.get("sources", []):
            if s.get("kind") != "dir":
                continue
            langs = [x.lower() for x in s.get("languages", ["python", "rust"])]
            srcs.append((os.path.join(base, s["path"]), langs, s.get("license")))
        vf = data.get("val_fraction", 0.01) if args.val_fraction is None else args.val_fraction
        seed = data.get("seed", 0) if args.seed is None else args.seed
        dd = data.get("dedup", {})
        near = (dd.get("shingle_size", 5), dd.get("lowercase", True), dd.get("threshold", 0.7))
        return srcs, float(vf), int(seed), near
    lic = args.license or [None] * len(args.dir)
    if len(lic) != len(args.dir):
        sys.exit("mine_instructions: give one --license per --dir, or none")
    srcs = [(d, ["python", "rust"], lv) for d, lv in zip(args.dir, lic)]
    vf = 0.01 if args.val_fraction is None else args.val_fraction
    return srcs, float(vf), 0 if args.seed is None else args.seed, (5, True, 0.7)


def read_docs(srcs, seed, val_fraction, stats, exclude):
    """Every document of the sources with its language, licence, relative path and split."""
    docs = []
    for root, langs, lic in srcs:
        exts = tuple(e for lang in langs for e in EXTS.get(lang, ()))
        if not os.path.exists(root):
            stats["missing_sources"].append(root)
            print(f"mine_instructions: source path does not exist: {root}", file=sys.stderr)
        for p in walk(root, exts, exclude):
            with open(p, "rb") as f:
                raw = f.read()
            stats["files_read"] += 1
            key = split_key(seed, raw)
            lang = "python" if p.endswith((".py", ".pyi")) else "rust"
            rel = os.path.relpath(p, root if os.path.isdir(root) else os.path.dirname(root))
            base = os.path.basename(os.path.normpath(root))
            docs.append(
                {
                    "path": p,
                    "rel": os.path.join(base, rel) if os.path.isdir(root) else rel,
                    "lang": lang,
                    "license": lic,
                    "raw": raw,
                    "key": key,
                    "val": unit_interval(key) < val_fraction,
                }
            )
    if val_fraction > 0 and docs and not any(d["val"] for d in docs) and len(docs) >= 2:
        min(docs, key=lambda d: d["key"])["val"] = True
    return docs


def items_of(doc, stats):
    try:
        text = doc["raw"].decode("utf-8-sig")  # a byte-order mark is not code
    except UnicodeDecodeError:
        stats["skipped"]["not_utf8"] += 1
        return None
    try:
        return python_items(text) if doc["lang"] == "python" else rust_items_norm(text)
    except (SyntaxError, ValueError, RecursionError, RustScanError):
        stats["skipped"]["parse_error"] += 1
        stats["unparsed_files"].append(doc["rel"])
        return None


def mine(args):
    srcs, val_fraction, seed, near = sources_from_args(args)
    stats = {
        "files_read": 0,
        "held_out_files": 0,
        "items": {"python": 0, "rust": 0},
        "skipped": {
            k: 0
            for k in (
                "not_utf8",
                "parse_error",
                "test",
                "dunder",
                "short_doc",
                "short_body",
                "chat_marker",
                "too_long",
                "duplicate",
            )
        },
        "held_out_excluded": 0,
        "held_out_near_excluded": 0,
        "unparsed_files": [],
        "missing_sources": [],
        "records": {"write_python": 0, "write_rust": 0, "explain": 0, "fim": 0},
    }
    docs = read_docs(srcs, seed, val_fraction, stats, tuple(args.exclude))
    parsed = [(d, items_of(d, stats)) for d in docs]
    held_code, held_near = set(), NearIndex(*near)
    for d, items in parsed:
        if d["val"]:
            stats["held_out_files"] += 1
            for it in items or []:
                held_code.add(norm_code(it["code_nodoc"]))
                held_near.add(it["code_nodoc"])
    seen, records = set(), []
    for d, items in parsed:
        if d["val"] or items is None:
            continue
        for it in items:
            stats["items"][d["lang"]] += 1
            reason = skip_reason(it, d["rel"])
            if reason:
                stats["skipped"][reason] += 1
                continue
            if norm_code(it["code_nodoc"]) in held_code:
                stats["held_out_excluded"] += 1
                continue
            if held_near.near(it["code_nodoc"]):
                stats["held_out_near_excluded"] += 1
                continue
            for kind, user, answer in pairs_of(it, d["lang"], seed, d["rel"]):
                if rendered_bytes(user, answer) > args.seq_len:
                    stats["skipped"]["too_long"] += 1
                    continue
                if (user, answer) in seen:
                    stats["skipped"]["duplicate"] += 1
                    continue
                seen.add((user, answer))
                stats["records"][kind] += 1
                records.append(
                    {
                        "messages": [
                            {"role": "user", "content": user},
                            {"role": "assistant", "content": answer},
                        ],
                        "kind": kind,
                        "source": d["rel"],
                        "license": d["license"],
                    }
                )
    return records, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="a tritter --train config; its dir sources are mined")
    ap.add_argument("--dir", action="append", default=[], help="a source folder (repeatable)")
    ap.add_argument("--license", action="append", help="SPDX licence of each --dir")
    ap.add_argument("--val-fraction", type=float, help="overrides [data] val_fraction")
    ap.add_argument("--seed", type=int, help="overrides [data] seed")
    ap.add_argument("--seq-len", type=int, default=2048, help="max rendered bytes per record")
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="a folder name not to mine anywhere in the tree (repeatable; e.g. site-packages)",
    )
    args = ap.parse_args()
    if bool(args.config) == bool(args.dir):
        sys.exit("mine_instructions: give --config or --dir, not both")
    t0 = time.monotonic()
    records, stats = mine(args)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    stats["records_written"] = len(records)
    stats["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(stats, sort_keys=True))


if __name__ == "__main__":
    main()
