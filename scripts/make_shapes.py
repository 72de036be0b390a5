#!/usr/bin/env python3
"""A synthetic image task for Tritter's vision path: one coloured shape or digit per picture.

Each picture is SIZE×SIZE pixels on a light or dark background with mild noise and one object
at a random position and size: a shape (circle, square, triangle, cross) or a digit (0-9, drawn
as seven-segment strokes so no font file is needed), in one of six colours. Its description is
"a red circle" or "a blue digit 7". Train and held-out splits use disjoint seeds, so held-out
pictures are new draws (positions, sizes, backgrounds), not copies.

Usage:
    python scripts/make_shapes.py OUT_DIR [--train 6000] [--test 300] [--size 64] [--seed 0]
writes OUT_DIR/{train,test}/NNNNN.png and OUT_DIR/{train,test}.jsonl with lines
{"image": "train/00000.png", "prompt": "what is in this picture?", "text": "a red circle"}.
Needs Pillow (scripts/requirements-golden.txt).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
SHAPES = ["circle", "square", "triangle", "cross"]
DIGITS = [str(d) for d in range(10)]
PROMPT = "what is in this picture?"
# Seven-segment strokes: a top, b upper right, c lower right, d bottom, e lower left, f upper left,
# g middle.
SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc",
    "5": "afgcd", "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcfgd",
}


def segment_lines(x: float, y: float, w: float, h: float) -> dict[str, tuple]:
    m = y + h / 2
    return {
        "a": ((x, y), (x + w, y)), "b": ((x + w, y), (x + w, m)), "c": ((x + w, m), (x + w, y + h)),
        "d": ((x, y + h), (x + w, y + h)), "e": ((x, m), (x, y + h)), "f": ((x, y), (x, m)),
        "g": ((x, m), (x + w, m)),
    }


def draw_object(d: ImageDraw.ImageDraw, kind: str, colour: tuple, rng: random.Random, size: int):
    s = rng.randint(size * 3 // 10, size * 6 // 10)  # object extent
    x0 = rng.randint(1, size - s - 1)
    y0 = rng.randint(1, size - s - 1)
    x1, y1 = x0 + s, y0 + s
    width = max(2, s // 7)
    if kind == "circle":
        d.ellipse((x0, y0, x1, y1), fill=colour)
    elif kind == "square":
        d.rectangle((x0, y0, x1, y1), fill=colour)
    elif kind == "triangle":
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif kind == "cross":
        c = (x0 + x1) / 2
        d.rectangle((c - width, y0, c + width, y1), fill=colour)
        m = (y0 + y1) / 2
        d.rectangle((x0, m - width, x1, m + width), fill=colour)
    else:  # a digit, taller than wide
        w = s * 0.55
        xs = x0 + (s - w) / 2
        lines = segment_lines(xs, y0, w, s)
        for seg in SEGMENTS[kind]:
            d.line(lines[seg], fill=colour, width=width)


def picture(rng: random.Random, size: int) -> tuple[Image.Image, str]:
    colour = rng.choice(list(COLOURS))
    kind = rng.choice(SHAPES + DIGITS) if rng.random() < 0.5 else rng.choice(SHAPES)
    dark = rng.random() < 0.3
    base = rng.randint(10, 50) if dark else rng.randint(205, 250)
    img = Image.new("RGB", (size, size), (base, base, base))
    px = img.load()
    for _ in range(size * size // 8):  # mild salt noise
        x, y = rng.randrange(size), rng.randrange(size)
        v = max(0, min(255, base + rng.randint(-25, 25)))
        px[x, y] = (v, v, v)
    draw_object(ImageDraw.Draw(img), kind, COLOURS[colour], rng, size)
    article = "an" if colour[0] in "aeiou" else "a"
    text = f"{article} {colour} {kind}" if kind in SHAPES else f"{article} {colour} digit {kind}"
    return img, text


def write_split(out: Path, name: str, n: int, seed: int, size: int) -> None:
    rng = random.Random(seed)
    (out / name).mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.jsonl", "w") as f:
        for i in range(n):
            img, text = picture(rng, size)
            rel = f"{name}/{i:05d}.png"
            img.save(out / rel)
            f.write(json.dumps({"image": rel, "prompt": PROMPT, "text": text}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    write_split(a.out, "train", a.train, a.seed * 2 + 1, a.size)
    write_split(a.out, "test", a.test, a.seed * 2 + 2, a.size)
    print(f"wrote {a.train} training and {a.test} held-out pictures to {a.out}")


if __name__ == "__main__":
    main()
