#!/usr/bin/env python3
"""Kill storm: `tritter --train` killed with SIGKILL at random moments must resume to exactly the
run it would have been.

1. A reference run of scripts/tiny.toml trains uninterrupted (checkpoints every few steps).
2. The storm run trains the same config in another directory; it is killed with SIGKILL
   `--kills` times and restarted with `--resume` after each kill. Kill moments are drawn from a
   seeded RNG, aimed at three phases: data preparation (the first two: a random moment in the
   first half of the pipeline's time), checkpoint writes (the moment a temporary checkpoint
   directory appears, plus a random 0-3 ms) and anywhere in the steps (a random delay). Where each kill landed is read from the run directory afterwards.
3. A last `--resume` runs to the end. Every row of `metrics.jsonl` (step losses, learning rates,
   gradient norms, token counts and evaluations; not the throughput) and the bytes of the final
   model and of the last training checkpoint must equal the reference run's.

With `--disk-full` (Linux, needs `unshare -rm`) it then fills a disk: a run resumes with its
checkpoints on a tmpfs too small for the next checkpoint; the save must fail with one clear
line while the previous checkpoint stays; the tmpfs is then enlarged and `--resume` must finish
with the reference run's losses.

Python standard library only. Usage (from the repository root, after `cargo build`):
    python3 scripts/kill_storm.py --bin target/debug/tritter [--kills 20] [--seed 1]
        [--steps 120] [--disk-full] [--keep-dirs] [--json]
Exit status 0 when everything held, 1 otherwise (the reason printed).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "scripts" / "tiny.toml"


def train_cmd(binary, run, steps, every, extra=()):
    sets = [
        f'run.dir="{run}"',
        f"train.steps={steps}",
        f"checkpoint.every={every}",
        "checkpoint.keep=2",
        "eval.every=20",
    ]
    cmd = [str(binary), "--train", str(TINY)]
    for s in sets:
        cmd += ["--set", s]
    return cmd + ["--resume", *extra]


def rows(run):
    """metrics.jsonl without the throughput (which differs from run to run)."""
    out = []
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r.pop("tokens_per_s", None)
        out.append(r)
    return out


def last_checkpoint(run):
    ck = sorted((Path(run) / "checkpoints").glob("step-*"))
    return ck[-1] if ck else None


def landed(run, pid):
    """Where a kill of process `pid` landed, from what it left in the run directory."""
    run = Path(run)
    if not (run / "data" / "manifest.json").exists():
        return "data preparation"
    tags = (f".tmp-{pid}", f".old-{pid}", f".del-{pid}")
    dirs = [run / "checkpoints", run]
    for d in dirs:
        if d.is_dir() and any(e.name.startswith(".") and e.name.endswith(tags) for e in os.scandir(d)):
            return "checkpoint write"
    return "steps"


def wait_for_tmp(run, proc, timeout):
    """Polls for a temporary checkpoint directory of `proc`; True when one appeared."""
    tag = f".tmp-{proc.pid}"
    dirs = [Path(run) / "checkpoints", Path(run)]
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        for d in dirs:
            try:
                if any(e.name.endswith(tag) for e in os.scandir(d)):
                    return True
            except FileNotFoundError:
                pass
        time.sleep(0.0005)
    return False


def reference(binary, run, steps, every):
    t0 = time.monotonic()
    proc = subprocess.Popen(train_cmd(binary, run, steps, every), stderr=subprocess.PIPE, text=True)
    prep = None
    while proc.poll() is None:
        if prep is None and (Path(run) / "data" / "manifest.json").exists():
            prep = time.monotonic() - t0
        time.sleep(0.01)
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"kill storm: the reference run failed: {err.strip()}")
    return time.monotonic() - t0, prep or 0.0


def storm(binary, run, steps, every, kills, seed, total_s, prep_s):
    """Kills and resumes the run `kills` times; returns the landing places and the failures."""
    rng = random.Random(seed)
    places, failures = [], []
    k = 0
    while k < kills:
        aim = "data" if k < 2 else rng.choice(["checkpoint", "checkpoint", "steps"])
        proc = subprocess.Popen(
            train_cmd(binary, run, steps, every), stderr=subprocess.PIPE, text=True
        )
        if aim == "data" and not (Path(run) / "data" / "manifest.json").exists():
            # From the moment the pipeline starts writing, into the first half of its time.
            while proc.poll() is None and not (Path(run) / "data").is_dir():
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.5) * prep_s)
        elif aim == "checkpoint":
            wait_for_tmp(run, proc, timeout=total_s)
            time.sleep(rng.uniform(0.0, 0.003))
        else:
            time.sleep(rng.uniform(0.05, max(0.1, total_s / 6)))
        if proc.poll() is not None:
            err = proc.stderr.read()
            if proc.returncode != 0:
                failures.append(f"run {k + 1} exited {proc.returncode} on its own: {err.strip()}")
                return places, failures
            return places, failures + [f"the run finished after {k} kills; use more --steps"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        places.append(landed(run, proc.pid))
        k += 1
    return places, failures


def finish(binary, run, steps, every, extra=(), wrap=None):
    cmd = train_cmd(binary, run, steps, every, extra)
    if wrap:
        cmd = wrap(cmd)
    return subprocess.run(cmd, stderr=subprocess.PIPE, text=True)


def compare(ref, run):
    """The differences between the reference run and `run` (empty when they agree)."""
    problems = []
    a, b = rows(ref), rows(run)
    if a != b:
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        problems.append(
            f"metrics differ at row {first + 1} ({len(a)} rows vs {len(b)}): "
            f"{a[first] if first < len(a) else None} vs {b[first] if first < len(b) else None}"
        )
    for rel in ["final/model.safetensors"]:
        if (Path(ref) / rel).read_bytes() != (Path(run) / rel).read_bytes():
            problems.append(f"{rel} differs")
    ca, cb = last_checkpoint(ref), last_checkpoint(run)
    if ca is None or cb is None or ca.name != cb.name:
        problems.append(f"last checkpoints differ: {ca} vs {cb}")
    else:
        for f in ["params.safetensors", "optim.safetensors", "state.json"]:
            if (ca / f).read_bytes() != (cb / f).read_bytes():
                problems.append(f"{cb.name}/{f} differs")
    stale = [e.name for e in os.scandir(Path(run) / "checkpoints") if e.name.startswith(".")]
    if stale:
        problems.append(f"temporary directories left in checkpoints/: {stale}")
    return problems


def disk_full(binary, ref, work, steps, every):
    """A checkpoint save on a full tmpfs fails cleanly; after enlarging it, resume matches."""
    if shutil.which("unshare") is None:
        return None, "skipped: unshare is not installed"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        return None, "skipped: this machine does not allow mount namespaces (unshare -rm)"
    run = Path(work) / "disk-full"
    # Train to about half way and stop with Ctrl-C (SIGINT: checkpoint, exit 0).
    proc = subprocess.Popen(
        train_cmd(binary, run, steps, every), stderr=subprocess.PIPE, text=True
    )
    while proc.poll() is None and sum("loss" in r for r in rows(run)) < steps // 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    if proc.returncode != 0:
        return False, f"the first half failed: {err.strip()}"
    ck = last_checkpoint(run)
    size = sum(f.stat().st_size for f in ck.iterdir())
    count = len(list((run / "checkpoints").glob("step-*")))
    ck_dir = run / "checkpoints"
    keep = run / "kept"
    shutil.copytree(ck_dir, keep)
    # Room for the checkpoints there are and half of another: the next save runs out of space.
    room_kb = (count * size + size // 2) // 1024 + 1
    cmd = " ".join(f"'{c}'" for c in train_cmd(binary, run, steps, every))
    script = f"""
set -u
mount -t tmpfs -o size={room_kb}k tmpfs '{ck_dir}' || exit 90
cp -a '{keep}'/. '{ck_dir}'/
{cmd} 2> '{run}/full.err'
echo $? > '{run}/full.rc'
ls -a '{ck_dir}' > '{run}/full.ls'
mount -o remount,size=64m '{ck_dir}'
{cmd} 2> '{run}/resume.err'
echo $? > '{run}/resume.rc'
cp -a '{ck_dir}'/. '{keep}'/
"""
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    if p.returncode == 90:
        return None, "skipped: tmpfs cannot be mounted here"
    err = (run / "full.err").read_text().strip().splitlines()
    rc = int((run / "full.rc").read_text())
    listing = (run / "full.ls").read_text().split()
    problems = []
    last = err[-1] if err else ""
    if rc == 0 or "No space left on device" not in last or "is kept" not in last:
        problems.append(f"the full-disk save did not fail with a clear line (exit {rc}): {last!r}")
    if any(n.startswith(".step") for n in listing):
        problems.append(f"a temporary directory was left on the full disk: {listing}")
    if ck.name not in listing:
        problems.append(f"the previous checkpoint {ck.name} is gone: {listing}")
    if int((run / "resume.rc").read_text()) != 0:
        problems.append(f"resume after freeing space failed: {(run / 'resume.err').read_text()}")
    else:
        shutil.rmtree(ck_dir)
        shutil.copytree(keep, ck_dir)
        problems += compare(ref, run)
    if problems:
        return False, "; ".join(problems)
    return True, f"checkpoint save on a full tmpfs: {last.strip()}; resumed to the reference run"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "debug" / "tritter"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--every", type=int, default=3, help="checkpoint every N steps")
    ap.add_argument("--disk-full", action="store_true")
    ap.add_argument("--keep-dirs", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tritter-kill-storm-"))
    ref, run = work / "reference", work / "storm"
    t0 = time.monotonic()
    total_s, prep_s = reference(a.bin, ref, a.steps, a.every)
    places, failures = storm(a.bin, run, a.steps, a.every, a.kills, a.seed, total_s, prep_s)
    if not failures:
        r = finish(a.bin, run, a.steps, a.every)
        if r.returncode != 0:
            failures.append(f"the last resume failed: {r.stderr.strip()}")
        else:
            failures += compare(ref, run)
    counts = {p: places.count(p) for p in sorted(set(places))}
    result = {
        "kills": len(places),
        "asked": a.kills,
        "ok": not failures,
        "landed": counts,
        "steps": a.steps,
        "checkpoint_every": a.every,
        "seed": a.seed,
        "reference_s": round(total_s, 1),
        "failures": failures,
    }
    if a.disk_full and not failures:
        ok, msg = disk_full(a.bin, ref, work, a.steps, a.every)
        result["disk_full"] = msg
        if ok is False:
            failures.append(msg)
            result["ok"] = False
    result["wall_s"] = round(time.monotonic() - t0, 1)
    if not a.keep_dirs:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(result))
    else:
        verdict = "resumed to the reference run" if not failures else "FAILED"
        print(
            f"kill storm: {len(places)}/{a.kills} kills, {verdict} ({a.steps} steps, checkpoint "
            f"every {a.every}, seed {a.seed}); landed: "
            + ", ".join(f"{v} in {k}" for k, v in counts.items())
            + f"; {result['wall_s']} s"
        )
        if "disk_full" in result:
            print(f"disk full: {result['disk_full']}")
        for f in failures:
            print(f"FAILED: {f}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
