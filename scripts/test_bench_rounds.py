#!/usr/bin/env python3
"""Tests of scripts/bench_rounds.py against a fake `tritter` that prints canned reports.

The fake binary counts its calls in a file and reports, for run i, one INT4 row whose
`of_copy_bandwidth` is the i-th value of a list given in its environment, so the summary's
median, range and count at the goal can be checked against values worked out by hand, and the
order in which two binaries ran (alternated run by run) can be read back from the call log.
Standard library only: `python3 scripts/test_bench_rounds.py -v`.
"""

import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "bench_rounds.py")

FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    assert sys.argv[1:] == ["bench", "attention", "--json", "--threads", "2"], sys.argv
    log = os.environ["FAKE_LOG"]
    with open(log, "a") as f:
        f.write(os.environ["FAKE_NAME"] + "\\n")
    with open(log) as f:
        mine = sum(1 for line in f if line.strip() == os.environ["FAKE_NAME"])
    ratios = [float(x) for x in os.environ["FAKE_RATIOS"].split(",")]
    r = ratios[mine - 1]
    print(json.dumps({{
        "copy_bandwidth_gbs": 30.0 + mine,
        "decode": [
            {{"cache": "int4", "window": 0, "context": 4096,
              "of_copy_bandwidth": r, "us_per_token": 100.0 / r}},
        ],
    }}))
    """
)


class BenchRounds(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.fake = os.path.join(self.dir.name, "fake-tritter")
        with open(self.fake, "w", encoding="utf-8") as f:
            f.write(FAKE.format(python=sys.executable))
        os.chmod(self.fake, os.stat(self.fake).st_mode | stat.S_IEXEC)
        self.log = os.path.join(self.dir.name, "calls")

    def tearDown(self):
        self.dir.cleanup()

    def run_script(self, *bins, runs):
        out = os.path.join(self.dir.name, "out.json")
        env = dict(os.environ, FAKE_LOG=self.log)
        res = subprocess.run(
            [sys.executable, SCRIPT, "--runs", str(runs), "--threads", "2", "--json", out, *bins],
            env=env, capture_output=True, text=True, check=False,
        )
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(out, encoding="utf-8") as f:
            return json.load(f), res.stdout

    def test_median_range_and_goal_count(self):
        spec = f"FAKE_NAME=a FAKE_RATIOS=0.9,0.3,0.6,0.45,0.7 {self.fake}"
        data, text = self.run_script(spec, runs=5)
        row = data["summary"][spec]["rows"][0]
        self.assertEqual((row["cache"], row["window"], row["context"]), ("int4", 0, 4096))
        self.assertAlmostEqual(row["of_copy_median"], 0.6)
        self.assertAlmostEqual(row["of_copy_min"], 0.3)
        self.assertAlmostEqual(row["of_copy_max"], 0.9)
        self.assertEqual((row["runs_at_goal"], row["runs"]), (3, 5))
        self.assertAlmostEqual(row["us_per_token_median"], 100.0 / 0.6)
        self.assertEqual(data["summary"][spec]["copy_gbs"], [31.0, 32.0, 33.0, 34.0, 35.0])
        self.assertIn("0.60 (0.30-0.90)", text)

    def test_binaries_alternate_and_keep_their_own_reports(self):
        a = f"FAKE_NAME=a FAKE_RATIOS=0.1,0.2,0.3,0.4 {self.fake}"
        b = f"FAKE_NAME=b FAKE_RATIOS=0.5,0.6,0.7,0.8 {self.fake}"
        data, _ = self.run_script(a, b, runs=4)
        with open(self.log, encoding="utf-8") as f:
            order = [line.strip() for line in f]
        self.assertEqual(order, ["a", "b", "b", "a", "a", "b", "b", "a"])
        got = {k: [r["decode"][0]["of_copy_bandwidth"] for r in v]
               for k, v in data["reports"].items()}
        self.assertEqual(got, {a: [0.1, 0.2, 0.3, 0.4], b: [0.5, 0.6, 0.7, 0.8]})

    def test_a_failing_binary_is_an_error_naming_it(self):
        res = subprocess.run(
            [sys.executable, SCRIPT, "--runs", "1", f"X=1 {self.fake}-nope"],
            capture_output=True, text=True, check=False,
        )
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("fake-tritter-nope", res.stderr)
        self.assertNotIn("Traceback", res.stderr)


if __name__ == "__main__":
    unittest.main()
