//! Inner tile kernels shared by prefill and decode: scores of a block of query rows against a
//! tile of keys, and the probability-weighted sum of a tile of values. The generic functions are
//! the specification; `tile_x86` compiles the same bodies with AVX2+FMA / AVX-512 enabled and
//! [`kernels`] picks the best once at run time. With `FMA = true` every multiply-add is one fused
//! operation in a fixed order, so the SIMD builds equal the generic build bit for bit.

use std::sync::OnceLock;

/// `s[r * n + j] = scale · q[r] · k[j]` for `rows` query rows (`q` `[rows][d]`) and `n` keys.
pub(crate) type ScoresFn = fn(q: &[f32], keys: &[f32], d: usize, scale: f32, s: &mut [f32]);
/// `acc[r] += Σ_j p[r * n + j] · v[j]` for `rows` rows (`acc` `[rows][d]`), `n` values.
pub(crate) type AccumulateFn = fn(p: &[f32], vals: &[f32], d: usize, acc: &mut [f32]);

/// The tile kernels chosen for this CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernels {
    pub scores: ScoresFn,
    pub accumulate: AccumulateFn,
    pub name: &'static str,
}

/// Detected once per process: the best set this CPU supports within [`super::kernel_cap`].
pub(crate) fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| {
        let cap = super::kernel_cap();
        let best = super::tile_arch::available()
            .into_iter()
            .find(|k| super::kernel_level(k.name) <= cap);
        best.unwrap_or(Kernels {
            scores: scores_generic::<false>,
            accumulate: accumulate_generic::<false>,
            name: "scalar",
        })
    })
}

#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Dot product in 16 independent lanes (summed pairwise at the end), then the tail.
#[inline(always)]
pub(crate) fn dot_generic<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] = madd::<FMA>(x[l], y[l], lanes[l]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail = madd::<FMA>(*x, *y, tail);
    }
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
        w /= 2;
    }
    lanes[0] + tail
}

#[inline(always)]
pub(crate) fn scores_generic<const FMA: bool>(
    q: &[f32],
    keys: &[f32],
    d: usize,
    scale: f32,
    s: &mut [f32],
) {
    let n = keys.len() / d;
    for (j, k) in keys.chunks_exact(d).enumerate() {
        for (r, qr) in q.chunks_exact(d).enumerate() {
            s[r * n + j] = dot_generic::<FMA>(qr, k) * scale;
        }
    }
}

#[inline(always)]
pub(crate) fn accumulate_generic<const FMA: bool>(
    p: &[f32],
    vals: &[f32],
    d: usize,
    acc: &mut [f32],
) {
    let n = vals.len() / d;
    for (j, v) in vals.chunks_exact(d).enumerate() {
        for (r, a) in acc.chunks_exact_mut(d).enumerate() {
            let pj = p[r * n + j];
            if pj == 0.0 {
                continue;
            }
            for (x, y) in a.iter_mut().zip(v) {
                *x = madd::<FMA>(pj, *y, *x);
            }
        }
    }
}

/// Folds one row of scores (`-inf` = masked) into the row's running max `m`, sum `l` and
/// accumulator `acc` (rescaled when the max grows); leaves the probabilities `exp(s - m)` in `s`
/// for [`AccumulateFn`]. FlashAttention-2's online softmax. Returns the factor `acc` was rescaled
/// by (1 when it was not), for callers that keep a second accumulator.
///
/// The maximum and the sum run in 16 lanes (element `j` in lane `j % 16`; the sum then halves as
/// `dot_generic` does), so the loops vectorise and every build adds in the same order.
///
/// The one-row specification that [`online_softmax_rows`] (what the kernels run) is tested against.
#[cfg(test)]
pub(crate) fn online_softmax_row(m: &mut f32, l: &mut f32, acc: &mut [f32], s: &mut [f32]) -> f32 {
    let tile_max = lane_max(s);
    if tile_max == f32::NEG_INFINITY {
        s.fill(0.0);
        return 1.0;
    }
    let m_new = m.max(tile_max);
    let mut corr = 1.0;
    if *m != f32::NEG_INFINITY && *m < m_new {
        corr = (*m - m_new).exp();
        *l *= corr;
        acc.iter_mut().for_each(|a| *a *= corr);
    }
    *m = m_new;
    for x in s.iter_mut() {
        let e = exp_nonpositive(*x - m_new);
        *x = if *x == f32::NEG_INFINITY { 0.0 } else { e };
    }
    *l += lane_sum(s);
    corr
}

/// [`online_softmax_row`] for every row of `s` `[rows][n]` at once (`m`, `l`, `corr` one entry
/// per row, `acc` `[rows][d]`; `corr[r]` gets row `r`'s return value): per element the same
/// operations, so the result is the same bit for bit (tests), but run in phases over the rows —
/// every row's maximum, then the rescaling, the exponentials, the sums — so the rows' dependency
/// chains (the lane reductions, the rescaling's `exp`) overlap instead of running one after the
/// other (row by row, a decode tile of 4 × 64 scores was bound by them: 2.6 cycles per score).
/// A row whose scores are all `-inf` is left as [`online_softmax_row`] leaves it: its `m` cannot
/// grow, every exponential is replaced by 0 and its sum adds 0.
#[inline(always)]
pub(crate) fn online_softmax_rows(
    m: &mut [f32],
    l: &mut [f32],
    acc: &mut [f32],
    s: &mut [f32],
    corr: &mut [f32],
) {
    let rows = m.len();
    if rows == 0 {
        return;
    }
    let (n, d) = (s.len() / rows, acc.len() / rows);
    for (c, sr) in corr.iter_mut().zip(s.chunks_exact(n)) {
        *c = lane_max(sr);
    }
    for (r, ((mr, lr), c)) in m
        .iter_mut()
        .zip(l.iter_mut())
        .zip(corr.iter_mut())
        .enumerate()
    {
        let m_new = mr.max(*c);
        *c = 1.0;
        if *mr != f32::NEG_INFINITY && *mr < m_new {
            *c = (*mr - m_new).exp();
            *lr *= *c;
            acc[r * d..][..d].iter_mut().for_each(|a| *a *= *c);
        }
        *mr = m_new;
    }
    for (sr, &mr) in s.chunks_exact_mut(n).zip(m.iter()) {
        for x in sr.iter_mut() {
            let e = exp_nonpositive(*x - mr);
            *x = if *x == f32::NEG_INFINITY { 0.0 } else { e };
        }
    }
    for (sr, lr) in s.chunks_exact(n).zip(l.iter_mut()) {
        *lr += lane_sum(sr);
    }
}

/// The largest element (exact in any order; 16 lanes so it vectorises). A plain compare rather
/// than `f32::max`, whose NaN rule costs a compare and a blend per vector: the lanes start at
/// `-inf` and only take values greater than themselves, so a NaN is skipped either way.
#[inline(always)]
fn lane_max(s: &[f32]) -> f32 {
    let mut mx = [f32::NEG_INFINITY; 16];
    let chunks = s.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in mx.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    for (m, &x) in mx.iter_mut().zip(tail) {
        *m = if x > *m { x } else { *m };
    }
    max16(mx)
}

/// The largest of 16 lanes by halving (lanes `l + 8`, `+ 4`, `+ 2`, `+ 1`), with plain compares
/// (a NaN lane never replaces a number; exact in any order otherwise).
#[inline(always)]
pub(crate) fn max16(mut mx: [f32; 16]) -> f32 {
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            mx[l] = if mx[l + w] > mx[l] { mx[l + w] } else { mx[l] };
        }
        w /= 2;
    }
    mx[0]
}

/// The sum in 16 lanes (element `j` into lane `j % 16`), then halving: lanes `l + 8`, `+ 4`,
/// `+ 2`, `+ 1`.
#[inline(always)]
fn lane_sum(s: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = s.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(tail) {
        *a += x;
    }
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// `exp(x)` for `x <= 0` (inputs below -87 give ≈1e-38 instead of underflowing), branch-free so
/// the softmax loop vectorises: `x = n·ln2 + r` with `|r| <= ln2/2`, a degree-6 Taylor polynomial
/// for `exp(r)` (relative error < 2e-7) and `2^n` assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `n` as an integer from `t`'s bits (`t` keeps ROUND's exponent for n in [-126, 0]): the
    // same value as `n as i32`, whose saturating conversion LLVM does not vectorise.
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0
                    - 0.5
            })
            .collect()
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    /// The exponent taken from `t`'s bits equals the saturating cast it replaced, over every
    /// 97th f32 in [-87, 0] (and the ends).
    #[test]
    fn integer_exponent_equals_the_cast() {
        const ROUND: f32 = 12_582_912.0;
        let (lo, hi) = ((-87f32).to_bits(), (-0f32).to_bits());
        for b in (hi..=lo).step_by(97).chain([lo, hi, 0]) {
            let x = f32::from_bits(b).clamp(-87.0, 0.0);
            let t = x * std::f32::consts::LOG2_E + ROUND;
            let cast = (t - ROUND) as i32;
            assert_eq!(t.to_bits() as i32 - ROUND.to_bits() as i32, cast, "x = {x}");
        }
    }

    #[test]
    fn dispatched_kernels_match_generic_spec() {
        let mut all = super::super::tile_arch::available();
        all.push(*kernels());
        for k in &all {
            check_kernels(k);
        }
    }

    fn check_kernels(k: &Kernels) {
        for (rows, n, d) in [
            (4, 64, 128),
            (3, 7, 20),
            (64, 64, 64),
            (1, 1, 2),
            (2, 7, 32),
            (5, 9, 96),
            (3, 10, 128),
            (6, 5, 64),
        ] {
            let q = data(rows * d, 1);
            let keys = data(n * d, 2);
            let mut s1 = vec![0f32; rows * n];
            let mut s2 = s1.clone();
            (k.scores)(&q, &keys, d, 0.3, &mut s1);
            let fma = k.name != "scalar";
            if fma {
                scores_generic::<true>(&q, &keys, d, 0.3, &mut s2);
                assert_eq!(s1, s2, "{} scores bit-exact", k.name);
            } else {
                scores_generic::<false>(&q, &keys, d, 0.3, &mut s2);
                assert_eq!(s1, s2);
            }
            // Against a plain f64 dot product.
            for r in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..d)
                        .map(|c| q[r * d + c] as f64 * keys[j * d + c] as f64)
                        .sum::<f64>()
                        * 0.3;
                    assert!((s1[r * n + j] as f64 - want).abs() < 1e-4);
                }
            }
            // Some probabilities 0, one of them on an infinite value: skipped, not multiplied
            // (0 · inf would be NaN).
            let mut p = data(rows * n, 3);
            p.iter_mut().step_by(5).for_each(|x| *x = 0.0);
            let mut vals = data(n * d, 5);
            vals[d / 2] = f32::INFINITY;
            p[0] = 0.0;
            (1..rows).for_each(|r| p[r * n] = 0.0);
            let mut a1 = data(rows * d, 4);
            let mut a2 = a1.clone();
            (k.accumulate)(&p, &vals, d, &mut a1);
            if fma {
                accumulate_generic::<true>(&p, &vals, d, &mut a2);
            } else {
                accumulate_generic::<false>(&p, &vals, d, &mut a2);
            }
            assert!(
                a1.iter().all(|x| x.is_finite()),
                "{} skips zero weights",
                k.name
            );
            assert_eq!(a1, a2, "{} accumulate bit-exact", k.name);
        }
    }
}
