#!/usr/bin/env python3
"""TUI soak: the real binary under tmux, with the built-in model streaming real replies, gets
random keys, prompts, pastes (up to 1 MB), slash commands with bad arguments and resizes (down to
20x5) for a stated time. Passes when the app never dies, quits with exit code 0 after Ctrl+C twice,
the shell's screen and cooked mode (icanon) come back and no panic is printed. Samples the
process's RSS (VmRSS) about once a second and prints start / peak / end.

    python3 scripts/tui_soak.py --bin target/debug/tritter --seconds 300 --seed 1

Needs tmux. Exits 0 on a pass, 1 on a failure (with the last screen), 2 when tmux is missing.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

KEYS = [
    "Enter", "BSpace", "Tab", "BTab", "Up", "Down", "Left", "Right", "Home", "End", "PPage",
    "NPage", "Escape", "Delete", "F2", "C-o", "C-j", "M-Left", "M-Right", "M-Enter", "S-Enter",
    "C-a", "C-e", "C-u", "C-w", "C-k", "C-z", "C-l", "F5", "Space",
]
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 @/.-_(){}[];:'\"\\#$%&*+=<>?!~`|é中🙂"
PROMPTS = ["def add(a, b):", "fn main() {", "class Stack:", "import os", "// sort a list", "SELECT"]
BAD_COMMANDS = [
    "/copy", "/copy x", "/copy 0", "/copy 99999999999999999999999", "/copy -1",
    "/latent maybe", "/latent on", "/latent off", "/theme nosuch", "/theme ../../etc/passwd",
    "/theme light", "/theme dark", "/load", "/load ../../etc/passwd", "/load nosuch",
    "/save ../x", "/save .hidden", "/save " + "n" * 300, "/save soak", "/load soak",
    "/file", "/file /", "/file /dev/zero", "/file /nonexistent/x", "/file /proc/self/environ",
    "/file " + "p" * 5000, "/img", "/img /etc/passwd", "/img /dev/zero", "/img /",
    "/audio /dev/urandom", "/audio /etc/hostname", "/audio", "/frobnicate", "/", "//",
    "/model extra args", "/help me", "/clear", "@/", "@/proc/self/", "@" + "x" * 2000,
]
SIZES = [(20, 5), (21, 6), (30, 8), (40, 10), (80, 24), (100, 30), (160, 50), (200, 60)]


class Tmux:
    def __init__(self, session):
        self.session = session

    def cmd(self, *args):
        out = subprocess.run(["tmux", *args], capture_output=True)
        return out.stdout.decode("utf-8", errors="replace")

    def keys(self, *keys):
        self.cmd("send-keys", "-t", self.session, *keys)

    def text(self, s):
        self.cmd("send-keys", "-t", self.session, "-l", s)

    def screen(self):
        return self.cmd("capture-pane", "-p", "-t", self.session)

    def wait_for(self, needle, timeout):
        end = time.time() + timeout
        while time.time() < end:
            s = self.screen()
            if needle in s:
                return s
            time.sleep(0.1)
        return None


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_state(pid):
    """The process's state letter and CPU seconds, e.g. `R, 12.3 s`."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return f"{rest[0]}, {(int(rest[11]) + int(rest[12])) / os.sysconf('SC_CLK_TCK'):.1f} s"
    except OSError:
        return "gone"


def find_app(pane_pid, name):
    """The pid of the child of the pane's shell that runs the binary."""
    for _ in range(100):
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pane_pid and comm == name[:15]:
                return int(d)
        time.sleep(0.1)
    return None


def paste(t, rng, tmp, stats):
    size = rng.choice([10, 300, 20_000, 200_000, 1_000_000])
    lines = []
    total = 0
    while total < size:
        line = "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 60)))
        lines.append(line)
        total += len(line.encode()) + 1
    path = os.path.join(tmp, "paste.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines)[:size])
    t.cmd("load-buffer", "-b", "soak", path)
    t.cmd("paste-buffer", "-p", "-d", "-b", "soak", "-t", t.session)
    stats["paste_bytes"] += size
    stats["max_paste"] = max(stats["max_paste"], size)


def act(t, rng, tmp, stats):
    """One random action; returns its kind."""
    r = rng.random()
    if r < 0.55:
        if rng.random() < 0.5:
            t.text("".join(rng.choice(CHARS) for _ in range(rng.randint(1, 8))))
        else:
            t.keys(rng.choice(KEYS))
        stats["keys"] += 1
        return "key"
    if r < 0.68:
        t.text(rng.choice(PROMPTS))
        t.keys("Enter")
        return "prompt"
    if r < 0.82:
        t.keys("C-u")
        t.text(rng.choice(BAD_COMMANDS))
        t.keys(rng.choice(["Enter", "Tab", "Enter"]))
        return "command"
    if r < 0.87:
        paste(t, rng, tmp, stats)
        return "paste"
    w, h = rng.choice(SIZES) if rng.random() < 0.7 else (rng.randint(20, 220), rng.randint(5, 70))
    t.cmd("resize-window", "-t", t.session, "-x", str(w), "-y", str(h))
    stats["smallest"] = min(stats["smallest"], (w * h, f"{w}x{h}"))
    return "resize"


def start(args, tmp, session):
    script = (
        f"cd '{tmp}' && echo BEFORE-TRITTER && TRITTER_CONFIG_DIR='{tmp}' TRITTER_DATA_DIR='{tmp}' "
        f"'{args.bin}'; echo EXIT-CODE=$?; echo STTY=$(stty -a | grep -o -- '-*icanon'); sleep 600"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", "sh", "-c", script],
        check=True,
    )
    t = Tmux(session)
    if t.wait_for("tritter-tiny", 60) is None:
        sys.exit(f"the TUI did not start; screen:\n{t.screen()}")
    pane = int(t.cmd("display", "-p", "-t", session, "#{pane_pid}").strip())
    pid = find_app(pane, os.path.basename(args.bin))
    if pid is None:
        sys.exit("could not find the app's process")
    return t, pid


def quit_app(t):
    """Ctrl+C twice (the first stops a reply or clears), until the shell prints the exit code;
    tried for up to 3 minutes, as input queued behind pastes may still be draining."""
    t.cmd("resize-window", "-t", t.session, "-x", "100", "-y", "30")
    for _ in range(18):
        t.keys("Escape")
        time.sleep(0.3)
        t.keys("C-c")
        time.sleep(0.2)
        t.keys("C-c")
        s = t.wait_for("EXIT-CODE=", 10)
        if s is not None:
            return s
    return None


def soak(args):
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="tritter-soak-")
    session = f"tritter-soak-{os.getpid()}"
    t, pid = start(args, tmp, session)
    stats = {"keys": 0, "paste_bytes": 0, "max_paste": 0, "smallest": (10**9, "")}
    kinds = {}
    rss = [(0.0, rss_kib(pid))]
    t0 = last = time.time()
    failure = None
    try:
        while time.time() - t0 < args.seconds:
            k = act(t, rng, tmp, stats)
            kinds[k] = kinds.get(k, 0) + 1
            time.sleep(rng.choice([0.0, 0.01, 0.03, 0.1]))
            if time.time() - last >= 1.0:
                last = time.time()
                v = rss_kib(pid)
                if v is None:
                    failure = "the app exited during the soak"
                    break
                rss.append((last - t0, v))
        duration = time.time() - t0
        q0 = time.time()
        screen = t.screen() if failure else quit_app(t)
        quit_s = time.time() - q0
        if screen is None:
            screen = t.screen()
            failure = f"Ctrl+C twice did not quit (app state: {proc_state(pid)})"
        if failure is None:
            if "EXIT-CODE=0" not in screen:
                failure = "non-zero exit"
            elif "STTY=icanon" not in screen:
                failure = "the terminal was not restored to cooked mode"
            elif "BEFORE-TRITTER" not in screen:
                failure = "the shell's screen did not come back"
        if screen and "panicked" in screen:
            failure = "a panic was printed"
    finally:
        t.cmd("kill-session", "-t", session)
        shutil.rmtree(tmp, ignore_errors=True)
    values = [v for _, v in rss if v is not None]
    report = {
        "seed": args.seed,
        "seconds": round(duration, 1),
        "actions": kinds,
        "keys": stats["keys"],
        "paste_bytes": stats["paste_bytes"],
        "largest_paste": stats["max_paste"],
        "smallest_size": stats["smallest"][1],
        "rss_mib": {
            "start": round(values[0] / 1024, 1),
            "peak": round(max(values) / 1024, 1),
            "end": round(values[-1] / 1024, 1),
            "samples": len(values),
        },
        "quit_seconds": round(quit_s, 1),
        "result": "pass" if failure is None else f"FAIL: {failure}",
    }
    print(json.dumps(report))
    if failure is not None:
        print(screen or "", file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the tritter binary")
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        print("skipped: tmux is not installed (the soak needs it)", file=sys.stderr)
        return 2
    args.bin = os.path.abspath(args.bin)
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
