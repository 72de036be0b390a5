"""The held-out evaluation set of scripts/eval_model.py (standard library only).

Text the built-in model v1 (`tritter-tiny`, scripts/train-default.sh) never trained on, from
the Python standard library the recipe reads (Python 3.11.7; its files are listed in
assets/default-model/SOURCES.md):

* perplexity files: the recipe's corpus files the pipeline put in the validation split
  (`[data] val_fraction = 0.05`, `seed = 0`: the seeded content-hash split of
  model/src/data/pipeline.rs, ported in scripts/mine_instructions.py), less any whose word
  shingles (5 words, lowercase) reach the pipeline's near-dedup Jaccard threshold 0.7 with a
  training file;
* function prompts: Python functions with a docstring from those files and from the standard
  library files the recipe's filter left out by size (over 60,000 bytes, outside test folders),
  with the miner's rules (no tests or dunders, a docstring of 20+ characters, 3+ body lines) and
  a prompt of at most 2,048 bytes (room for the reply in a 1,024-token context),
  less any whose code (docstring removed, whitespace collapsed) occurs in a training file or
  whose shingles reach Jaccard 0.7 with a training function's. Order: SHA-1 of
  `path:line:name`, so the first N are a fixed, spread-out sample.

`--make-heldout` writes the list (paths, SHA-256 of each file) to docs/eval/heldout.json; an
evaluation reads that list and refuses a file whose bytes differ, so every model is measured on
the same text. A model trained after v1 must leave these files out of its corpus.
"""

import ast
import hashlib
import json
import os
import sysconfig
import textwrap

from mine_instructions import (
    NearIndex,
    is_test_file,
    norm_code,
    python_items,
    shingles,
    skip_reason,
    split_key,
    unit_interval,
)

EXCLUDED_DIRS = ("site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3")
MIN_BYTES, MAX_BYTES = 200, 60000
VAL_FRACTION, SEED = 0.05, 0
NEAR = (5, True, 0.7)
MAX_FUNCTIONS = 500
# A prompt must leave room for the completion in a small model's context (v1: 1,024 tokens, 256
# of them for the reply): 2,048 bytes is about 550 of v1's tokens.
MAX_PROMPT_BYTES = 2048


def stdlib_dir():
    return sysconfig.get_paths()["stdlib"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def recipe_walk(std):
    """(rel, size) of every .py file the recipe's walk sees (its excluded folders left out)."""
    out = []
    for d, _sub, files in os.walk(std):
        rel = os.path.relpath(d, std)
        if any(x in rel.split(os.sep) for x in EXCLUDED_DIRS):
            continue
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                out.append((os.path.relpath(p, std), os.path.getsize(p)))
    return sorted(out)


def trained_list(sources_md):
    """Standard-library paths a SOURCES.md lists (`- `lib/python/REL``)."""
    out = []
    with open(sources_md, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("- `lib/python/") and line.endswith("`"):
                out.append(line[len("- `lib/python/") : -1])
    return out


def prompt_of(text, line):
    """(prompt, reference) of the function whose `def` is on `line`: the signature and docstring
    dedented to column 0, ending in a newline, and the whole function; None when it has no
    docstring or the dedented prompt is not a function head that parses with a `pass` body."""
    tree = ast.parse(text)
    lines = text.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno == line:
            if ast.get_docstring(node) is None:
                return None
            ds = node.body[0]
            head = textwrap.dedent("\n".join(lines[line - 1 : ds.end_lineno])) + "\n"
            ref = textwrap.dedent("\n".join(lines[line - 1 : node.end_lineno])) + "\n"
            if not head.startswith(("def ", "async def ")):
                return None
            def_ws = len(lines[line - 1]) - len(lines[line - 1].lstrip())
            ds_line = lines[ds.lineno - 1]
            indent = ds_line[def_ws : len(ds_line) - len(ds_line.lstrip())]
            try:
                ast.parse(head + indent + "pass\n")
                ast.parse(ref)
            except SyntaxError:
                return None
            return head, ref
    return None


def build(std, sources_md):
    """The held-out list (a dict, as written to docs/eval/heldout.json)."""
    walked = recipe_walk(std)
    trained = set(trained_list(sources_md))
    missing = sorted(trained - {r for r, _ in walked})
    if missing:
        raise SystemExit(
            f"eval_heldout: {len(missing)} trained files not in {std}, e.g. {missing[0]}"
        )
    raw = {r: open(os.path.join(std, r), "rb").read() for r in trained}
    val = sorted(r for r in trained if unit_interval(split_key(SEED, raw[r])) < VAL_FRACTION)
    train = sorted(trained - set(val))
    big = [r for r, size in walked if size > MAX_BYTES and r not in trained and not is_test_file(r)]
    for r in big:
        raw[r] = open(os.path.join(std, r), "rb").read()
    # Files near a training file (whole-file shingles) are not held out.
    near_files = NearIndex(*NEAR)
    for r in train:
        near_files.add(raw[r].decode("utf-8", "replace"))
    ppl = [r for r in val if not near_files.near(raw[r].decode("utf-8", "replace"))]
    # Training functions, exact and near.
    train_code, train_near = set(), NearIndex(*NEAR)
    for r in train:
        try:
            items = python_items(raw[r].decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for it in items:
            train_code.add(norm_code(it["code_nodoc"]))
            train_near.add(it["code_nodoc"])
    funcs = []
    for r in sorted(set(ppl) | set(big)):
        try:
            text = raw[r].decode("utf-8")
            items = python_items(text)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for it in items:
            if skip_reason(it, r) or norm_code(it["code_nodoc"]) in train_code:
                continue
            if train_near.near(it["code_nodoc"]) or not shingles(it["code_nodoc"], 5, True):
                continue
            pr = prompt_of(text, it["line"])
            if pr is None or len(pr[0].rstrip().encode()) > MAX_PROMPT_BYTES:
                continue
            key = hashlib.sha1(f"{r}:{it['line']}:{it['name']}".encode()).hexdigest()
            funcs.append((key, r, it["line"], it["name"]))
    funcs = sorted(funcs)[:MAX_FUNCTIONS]
    files = sorted(set(ppl) | {r for _, r, _, _ in funcs})
    return {
        "about": "Held-out set of scripts/eval_model.py; see scripts/eval_heldout.py",
        "stdlib": "Python standard library (relative paths)",
        "files": {r: sha256(raw[r]) for r in files},
        "perplexity_files": ppl,
        "functions": [{"path": r, "line": line, "name": name} for _, r, line, name in funcs],
        "counts": {"trained": len(trained), "val_split": len(val), "big_untrained": len(big)},
    }


def dumps(held):
    """The list as JSON text, one file or function a line."""
    lines = ["{"]
    for k in ("about", "stdlib", "counts"):
        lines.append(f" {json.dumps(k)}: {json.dumps(held[k])},")
    for k in ("files", "perplexity_files", "functions"):
        v = held[k]
        items = (
            [f"{json.dumps(a)}: {json.dumps(b)}" for a, b in v.items()]
            if k == "files"
            else [json.dumps(x) for x in v]
        )
        o, c = ("{", "}") if k == "files" else ("[", "]")
        lines.append(
            f" {json.dumps(k)}: {o}\n  "
            + ",\n  ".join(items)
            + f"\n {c}"
            + ("" if k == "functions" else ",")
        )
    return "\n".join(lines) + "\n}\n"


def load_texts(heldout, std):
    """{rel: text} of the list's files, each checked against its SHA-256."""
    out = {}
    for r, digest in heldout["files"].items():
        p = os.path.join(std, r)
        try:
            data = open(p, "rb").read()
        except OSError as e:
            raise SystemExit(
                f"eval_model: held-out file {p}: {e} (the set is Python 3.11.7's stdlib)"
            )
        if sha256(data) != digest:
            raise SystemExit(
                f"eval_model: {p} differs from the held-out set's copy (SHA-256); the set is "
                "Python 3.11.7's standard library: pass --stdlib DIR of that version"
            )
        out[r] = data.decode("utf-8")
    return out
