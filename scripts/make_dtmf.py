#!/usr/bin/env python3
"""Synthetic audio task: DTMF (touch-tone) digit sequences and their transcriptions.

Each clip holds 3-5 digits 0-9. A digit is the sum of its row and column tones (ITU-T Q.23:
rows 697/770/852/941 Hz, columns 1209/1336/1477 Hz) for 60-150 ms, with a 5 ms raised-cosine
fade at each end, at a gain of -20...0 dBFS (peak of the pair -6 dBFS at 0 dB), separated by
40-120 ms gaps, after 20-300 ms of leading and before 20-300 ms of trailing silence. White or
pink noise (even odds) is added at a signal-to-noise ratio of 10-30 dB (over the tone segments).
16-bit mono WAV at --rate Hz (default 16000). All choices are drawn from one seeded generator,
so a seed gives the same files, byte for byte.

Writes OUT/NNNNN.wav and OUT/records.jsonl, one line per clip:
    {"audio": "00000.wav", "text": "4 7 1 9"}
(the audio path is relative to the JSONL's folder).

Usage:
    python scripts/make_dtmf.py --out data/dtmf --n 2000 [--seed 0] [--rate 16000]
    python scripts/make_dtmf.py --self-check      # determinism + Goertzel decoding of clean clips

Needs only the Python standard library and numpy.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0)
# Digit -> (row, column) on the keypad: 1 2 3 / 4 5 6 / 7 8 9 / * 0 #.
KEYS = {str(d): ((d - 1) // 3, (d - 1) % 3) for d in range(1, 10)} | {"0": (3, 1)}
FADE_S = 0.005


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink (1/f power) noise of unit rms: white noise shaped by 1/sqrt(f) in the spectrum."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (x.std() or 1.0)


def tone(digit: str, n: int, rate: int, gain_db: float) -> np.ndarray:
    r, c = KEYS[digit]
    t = np.arange(n) / rate
    x = 0.25 * (np.sin(2 * np.pi * ROWS[r] * t) + np.sin(2 * np.pi * COLS[c] * t))
    k = min(int(FADE_S * rate), n // 2)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        x[:k] *= ramp
        x[n - k:] *= ramp[::-1]
    return x * 10 ** (gain_db / 20)


def make_clip(rng: np.random.Generator, rate: int, noisy: bool = True) -> tuple[np.ndarray, str]:
    """One clip (float64 samples in [-1, 1]) and its transcription."""
    digits = [str(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 6)))]
    ms = lambda lo, hi: int(round(rng.uniform(lo, hi) / 1000 * rate))  # noqa: E731
    parts = [np.zeros(ms(20, 300))]
    tone_mask = [np.zeros(len(parts[0]), dtype=bool)]
    for i, d in enumerate(digits):
        seg = tone(d, ms(60, 150), rate, rng.uniform(-20.0, 0.0))
        parts.append(seg)
        tone_mask.append(np.ones(len(seg), dtype=bool))
        gap = np.zeros(ms(40, 120) if i + 1 < len(digits) else ms(20, 300))
        parts.append(gap)
        tone_mask.append(np.zeros(len(gap), dtype=bool))
    x = np.concatenate(parts)
    on = np.concatenate(tone_mask)
    # Always draw the noise parameters, so clean and noisy sets share every other choice.
    snr_db = rng.uniform(10.0, 30.0)
    kind = "pink" if rng.random() < 0.5 else "white"
    noise = pink(rng, len(x)) if kind == "pink" else rng.standard_normal(len(x))
    if noisy:
        sig_rms = np.sqrt(np.mean(x[on] ** 2))
        x = x + noise * sig_rms / 10 ** (snr_db / 20)
    peak = np.abs(x).max()
    if peak > 0.999:  # keep within 16-bit range (rare: loud digit plus noise peak)
        x *= 0.999 / peak
    return x, " ".join(digits)


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def generate(out: Path, n: int, seed: int, rate: int, noisy: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(out / "records.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for i in range(n):
            x, text = make_clip(rng, rate, noisy)
            name = f"{i:05d}.wav"
            (out / name).write_bytes(wav_bytes(x, rate))
            f.write(json.dumps({"audio": name, "text": text}) + "\n")


def goertzel_power(x: np.ndarray, freq: float, rate: int) -> float:
    """Power of `x` at `freq` (Goertzel recurrence, the classic DTMF detector)."""
    coeff = 2 * np.cos(2 * np.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def decode(x: np.ndarray, rate: int) -> str:
    """Digits in a clip: 20 ms frames, 10 ms apart; a frame is a digit when its strongest row and
    column tones hold most of the frame's energy; a digit counts when it starts (after silence or
    another digit)."""
    frame = int(0.02 * rate)
    digits, prev = [], None
    for start in range(0, len(x) - frame + 1, frame // 2):
        seg = x[start:start + frame] * np.hanning(frame)
        energy = float(np.sum(seg ** 2))
        cur = None
        if energy > 1e-7 * frame:  # not silence: is it one row tone plus one column tone?
            rows = [goertzel_power(seg, f, rate) for f in ROWS]
            cols = [goertzel_power(seg, f, rate) for f in COLS]
            r, c = int(np.argmax(rows)), int(np.argmax(cols))
            # A pure tone's Goertzel power is energy · frame / 2 (Parseval).
            if rows[r] + cols[c] > 0.5 * energy * frame / 2:
                cur = next((d for d, rc in KEYS.items() if rc == (r, c)), None)
        if cur is not None and cur != prev:
            digits.append(cur)
        prev = cur
    return " ".join(digits)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768
    return x, rate


def self_check(rate: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        a, b, c, clean = (Path(tmp) / s for s in ("a", "b", "c", "clean"))
        generate(a, 8, 7, rate)
        generate(b, 8, 7, rate)
        generate(c, 8, 8, rate)
        same = all((a / f).read_bytes() == (b / f).read_bytes()
                   for f in ["records.jsonl"] + [f"{i:05d}.wav" for i in range(8)])
        differ = (a / "records.jsonl").read_bytes() != (c / "records.jsonl").read_bytes() and \
            (a / "00000.wav").read_bytes() != (c / "00000.wav").read_bytes()
        print(f"same seed -> identical bytes: {same}; different seed -> different: {differ}")
        n = 200
        generate(clean, n, 1, rate, noisy=False)
        records = [json.loads(line) for line in (clean / "records.jsonl").open()]
        ok = sum(decode(*read_wav(clean / r["audio"])) == r["text"] for r in records)
        print(f"Goertzel decoder on {n} clean clips: {ok}/{n} correct ({100 * ok / n:.1f}%)")
        noisy = Path(tmp) / "noisy"
        generate(noisy, n, 1, rate)
        records = [json.loads(line) for line in (noisy / "records.jsonl").open()]
        ok_noisy = sum(decode(*read_wav(noisy / r["audio"])) == r["text"] for r in records)
        print(f"... on the same {n} clips with noise: {ok_noisy}/{n} ({100 * ok_noisy / n:.1f}%)")
    passed = same and differ and ok >= 0.95 * n
    print("self-check", "passed" if passed else "FAILED")
    return 0 if passed else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="output folder (NNNNN.wav + records.jsonl)")
    ap.add_argument("--n", type=int, default=1000, help="number of clips (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=int, default=16000, help="sample rate in Hz (default 16000)")
    ap.add_argument("--self-check", action="store_true",
                    help="check determinism and that a Goertzel detector decodes clean clips")
    args = ap.parse_args()
    if not 8000 <= args.rate <= 384000:
        ap.error("--rate must be within 8000..384000 Hz (the top tone is 1477 Hz)")
    if args.self_check:
        return self_check(args.rate)
    if args.out is None:
        ap.error("--out is required (or --self-check)")
    if args.n < 0:
        ap.error("--n must be ≥ 0")
    generate(args.out, args.n, args.seed, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
