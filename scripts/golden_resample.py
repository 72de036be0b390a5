#!/usr/bin/env python3
"""Golden fixtures for Tritter's audio resampler (src/audio_in/resample.rs), computed by libsoxr.

Three cases, written to tests/golden/resample/NAME.safetensors: 300 ms of a linear chirp plus
band-limited noise, resampled 44.1 kHz → 24 kHz, 16 kHz → 24 kHz and 48 kHz → 8 kHz by
`soxr.resample(..., quality="VHQ")` in float64. Each file holds `input` and `expected` (float32)
and `rates` (int32: from, to in Hz). Comparisons skip the first and last 20 ms. The signal stays below 80% of the lower Nyquist frequency, where
both resamplers pass it unchanged, so the comparison measures passband accuracy and timing, not
the choice of anti-alias filter.

Before writing, soxr's output is checked against an independent statement of the same thing:
the band-limited (windowed-sinc, Kaiser) interpolation of the input evaluated at the output
times j / to, in float64 numpy — the zero-delay convention the Rust side states. Also checked:
output length round(len · to / from).

Usage: `python scripts/golden_resample.py` (deterministic: fixed seed; versions as in
scripts/requirements-golden.txt).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "resample"
SECONDS = 0.3
# Away from the clip's edges (where each filter's own transient shows), in seconds.
EDGE = 0.02
CASES = [("44100_to_24000", 44100, 24000), ("16000_to_24000", 16000, 24000),
         ("48000_to_8000", 48000, 8000)]


def signal(rate: int, top: float, seed: int) -> np.ndarray:
    """A chirp 50 Hz → `top` Hz at amplitude 0.5 plus noise low-passed at `top` (rms 0.05)."""
    n = int(round(SECONDS * rate))
    t = np.arange(n) / rate
    chirp = 0.5 * np.sin(2 * np.pi * (50 * t + (top - 50) * t * t / (2 * SECONDS)))
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / rate) > top] = 0
    noise = np.fft.irfft(spec, n)
    noise *= 0.05 / noise.std()
    return chirp + noise


def sinc_reference(x: np.ndarray, src: int, dst: int, half_width: int = 600) -> np.ndarray:
    """Band-limited interpolation of `x` (zero outside) at times j / dst: a Kaiser-windowed sinc
    with cutoff 0.9 × the lower Nyquist frequency, `half_width` input samples each side."""
    out_len = (2 * len(x) * dst + src) // (2 * src)
    cutoff = 0.9 * min(src, dst) / 2 / src  # cycles per input sample
    y = np.zeros(out_len)
    for j in range(out_len):
        t = j * src / dst  # in input samples
        lo = max(0, int(np.floor(t)) - half_width + 1)
        hi = min(len(x), int(np.floor(t)) + half_width + 1)
        k = np.arange(lo, hi)
        d = t - k
        w = np.kaiser(2 * half_width + 1, 14.0)[np.clip(np.round(d + half_width).astype(int), 0,
                                                        2 * half_width)]
        y[j] = np.sum(x[lo:hi] * 2 * cutoff * np.sinc(2 * cutoff * d) * w)
    return y


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, src, dst) in enumerate(CASES):
        top = 0.8 * min(src, dst) / 2
        x = signal(src, top, seed=100 + i).astype(np.float32)
        y = soxr.resample(x.astype(np.float64), src, dst, quality="VHQ")
        want_len = (2 * len(x) * dst + src) // (2 * src)
        assert len(y) == want_len, (name, len(y), want_len)
        ref = sinc_reference(x.astype(np.float64), src, dst)
        e = int(EDGE * dst)
        snr = snr_db(ref[e:-e], y[e:-e])
        err = float(np.abs(ref[e:-e] - y[e:-e]).max())
        print(f"{name}: {len(x)} → {len(y)} samples; soxr vs windowed sinc: "
              f"max |err| {err:.2e}, SNR {snr:.1f} dB")
        assert snr > 80, f"soxr and the sinc reference disagree on {name}"
        # No safetensors metadata: its key order is not stable from run to run.
        save_file({"input": x, "expected": y.astype(np.float32),
                   "rates": np.array([src, dst], dtype=np.int32)}, str(OUT / f"{name}.safetensors"))


if __name__ == "__main__":
    main()
