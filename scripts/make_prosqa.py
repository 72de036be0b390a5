#!/usr/bin/env python3
"""A seeded ProsQA-style reasoning task for Tritter's latent (Coconut) mode.

ProsQA (Hao et al. 2024, "Training Large Language Models to Reason in a Continuous Latent Space")
asks whether an entity belongs to one of two made-up concepts, given a random graph of "Every X is a
Y." facts. This generator builds the same kind of problem from scratch (no data is downloaded):

- concepts are made-up words ("wumpus", "brimpent", ...), unique within a problem;
- the concepts form a layered DAG. The entity's side R holds levels 1..d: the gold chain
  r1 → r2 → … → rd (rd is the answer A) plus distractor branches that hang off it and lead
  elsewhere; the other side U holds a chain u1 → … → ud ending in the wrong option B, with its own
  branches. Edges never go from R (or the entity) into U, so B is unreachable; edges from U into R
  are allowed and act as distractors too (A and B both have parents);
- facts are shuffled and followed by "Is <entity> a <A> or a <B>?" with the two options in random
  order.

Each line of the JSONL output is
    {"question": "<facts> Is Tom a A or a B?", "steps": ["Tom is a r1.", "Every r1 is a r2.", ...],
     "answer": "Tom is a A."}
— the steps are the facts of the gold chain, in order; d steps for depth d.

Usage:
    python3 scripts/make_prosqa.py --seed 0 --n 1000 [--nodes 16] [--depth 4] [--min-depth 3] > F.jsonl
    python3 scripts/make_prosqa.py --self-check [--seed 0 --n 500 ...]
`--self-check` generates twice and checks the two outputs are identical, then re-reads every problem
from its text alone (the facts parsed back out of the question) and checks by a breadth-first search
that exactly one option is reachable from the entity, that the answer names it, and that the steps
are facts of the question forming a path from the entity to the answer. Python standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import deque

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "j", "k", "l", "m", "n", "p", "r", "s", "sh",
          "sc", "st", "t", "tr", "v", "w", "y", "z", "zh", "gl", "pl", "qu"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ee", "oo", "ou"]
CODAS = ["", "m", "n", "r", "l", "s", "rm", "mp", "ng", "rp", "lm"]
SUFFIXES = ["pus", "us", "ax", "ent", "ion", "ite", "or"]
ENTITIES = ["Tom", "Alex", "Sam", "Max", "Rex", "Wren", "Polly", "Fae", "Jack", "Sally", "Bob",
            "Ivy", "Stella", "Leo", "Nora", "Ada", "Otto", "Iris", "Milo", "Zoe"]


def concept_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct made-up words."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        word = rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) + rng.choice(SUFFIXES)
        if word not in seen:
            seen.add(word)
            names.append(word)
    return names


def make_problem(rng: random.Random, nodes: int, depth: int) -> dict:
    """One problem with a gold chain of `depth` steps over `nodes` concepts (nodes ≥ 2·depth)."""
    entity = rng.choice(ENTITIES)
    names = concept_names(rng, nodes)
    gold = names[:depth]  # r1..rd; rd is the answer
    wrong = names[depth:2 * depth]  # u1..ud; ud is the wrong option
    extra = names[2 * depth:]
    # levels[side][l] = concepts of that side at level l (0-based; level 0 sits under the entity).
    levels = {"R": [[gold[lvl]] for lvl in range(depth)], "U": [[wrong[lvl]] for lvl in range(depth)]}
    edges: set[tuple[str, str]] = set()  # (X, Y): "Every X is a Y."
    for lvl in range(1, depth):
        edges.add((gold[lvl - 1], gold[lvl]))
        edges.add((wrong[lvl - 1], wrong[lvl]))
    member = {gold[0]}  # "<entity> is a X."
    branch: dict[str, str] = {}  # extra concept → side
    for name in extra:
        side = rng.choice("RU")
        lvl = rng.randrange(depth)
        branch[name] = side
        pool = levels[side]
        if lvl == 0:
            if side == "R":
                member.add(name)
        else:
            # A parent on the same side one level up (on the chain or a branch): edges only ever
            # lead into new concepts, so no branch opens a second way into the answer's chain.
            edges.add((rng.choice(pool[lvl - 1]), name))
        pool[lvl].append(name)
    # Cross edges U → R (never R → U: that would make B reachable).
    for name in [n for n in extra if branch[n] == "U"]:
        lvl = next(i for i, level in enumerate(levels["U"]) if name in level)
        if lvl + 1 < depth and rng.random() < 0.5:
            edges.add((name, rng.choice(levels["R"][lvl + 1])))
    facts = [f"{entity} is a {x}." for x in sorted(member)]
    facts += [f"Every {x} is a {y}." for x, y in sorted(edges)]
    rng.shuffle(facts)
    answer, other = gold[-1], wrong[-1]
    options = [answer, other]
    rng.shuffle(options)
    question = " ".join(facts) + f" Is {entity} a {options[0]} or a {options[1]}?"
    steps = [f"{entity} is a {gold[0]}."] + [f"Every {gold[i - 1]} is a {gold[i]}." for i in range(1, depth)]
    return {"question": question, "steps": steps, "answer": f"{entity} is a {answer}."}


def generate(seed: int, n: int, nodes: int, depth: int, min_depth: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = rng.randint(min_depth, depth)
        out.append(make_problem(rng, max(nodes, 2 * d), d))
    return out


MEMBER = re.compile(r"^([A-Z][a-z]+) is a ([a-z]+)\.$")
EVERY = re.compile(r"^Every ([a-z]+) is a ([a-z]+)\.$")
QUESTION = re.compile(r"^Is ([A-Z][a-z]+) a ([a-z]+) or a ([a-z]+)\?$")


def check_problem(rec: dict) -> str | None:
    """Re-derives the answer from the question's text alone; returns what is wrong, or None."""
    sentences = re.findall(r"[^.?]+[.?]", rec["question"])
    sentences = [s.strip() for s in sentences]
    q = QUESTION.match(sentences[-1])
    if q is None:
        return f"no question at the end: {sentences[-1]!r}"
    entity, opt_a, opt_b = q.groups()
    graph: dict[str, set[str]] = {}
    facts = set(sentences[:-1])
    for s in facts:
        m, e = MEMBER.match(s), EVERY.match(s)
        if m and m.group(1) == entity:
            graph.setdefault(entity, set()).add(m.group(2))
        elif e:
            graph.setdefault(e.group(1), set()).add(e.group(2))
        else:
            return f"unparsed fact {s!r}"
    seen, todo = {entity}, deque([entity])
    while todo:
        for y in graph.get(todo.popleft(), ()):
            if y not in seen:
                seen.add(y)
                todo.append(y)
    reach = [o for o in (opt_a, opt_b) if o in seen]
    if len(reach) != 1:
        return f"{len(reach)} options reachable"
    if rec["answer"] != f"{entity} is a {reach[0]}.":
        return f"answer {rec['answer']!r} but {reach[0]} is the reachable option"
    at = entity
    for i, step in enumerate(rec["steps"]):
        if step not in facts:
            return f"step {i} {step!r} is not a fact of the question"
        m = MEMBER.match(step) if i == 0 else EVERY.match(step)
        if m is None or m.group(1) != at:
            return f"step {i} {step!r} does not continue from {at}"
        at = m.group(2)
    if at != reach[0]:
        return f"steps end at {at}, not at {reach[0]}"
    return None


def self_check(args: argparse.Namespace) -> int:
    first = generate(args.seed, args.n, args.nodes, args.depth, args.min_depth)
    again = generate(args.seed, args.n, args.nodes, args.depth, args.min_depth)
    if json.dumps(first) != json.dumps(again):
        print("self-check: two runs with the same seed differ", file=sys.stderr)
        return 1
    other = generate(args.seed + 1, args.n, args.nodes, args.depth, args.min_depth)
    if json.dumps(first) == json.dumps(other):
        print("self-check: seeds differ but outputs do not", file=sys.stderr)
        return 1
    for i, rec in enumerate(first):
        wrong = check_problem(rec)
        if wrong is not None:
            print(f"self-check: problem {i}: {wrong}", file=sys.stderr)
            return 1
    depths = sorted({len(r["steps"]) for r in first})
    print(f"self-check: ok ({len(first)} problems, deterministic, each answer follows from its facts "
          f"by BFS, chains of {depths} steps)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000, help="number of problems")
    ap.add_argument("--nodes", type=int, default=16, help="concepts per problem (at least 2×depth)")
    ap.add_argument("--depth", type=int, default=4, help="longest gold chain, in steps")
    ap.add_argument("--min-depth", type=int, default=None, help="shortest gold chain (default: depth)")
    ap.add_argument("--self-check", action="store_true")
    args = ap.parse_args()
    if args.min_depth is None:
        args.min_depth = args.depth
    if not 1 <= args.min_depth <= args.depth:
        ap.error("need 1 ≤ --min-depth ≤ --depth")
    if args.self_check:
        return self_check(args)
    for rec in generate(args.seed, args.n, args.nodes, args.depth, args.min_depth):
        print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
