//! Decode tile kernels that read the cache as stored: f16 keys/values converted in registers, and
//! INT4 keys/values decoded in registers with each group's step folded into the query (keys) or
//! the probability (values) once per group, so no dequantised tile is ever written to memory.
//!
//! The kernel bodies are written once over [`V16`], sixteen f32 lanes; [`Lanes`] (plain arrays)
//! is the specification, and `fused_x86` runs the same bodies on AVX-512 or AVX2 + FMA + F16C
//! registers whose every operation computes each lane exactly as [`Lanes`] with fused
//! multiply-adds does, so every build equals the generic one bit for bit (tests). Against the dequantise-then-multiply
//! path (`attn::int4` + `attn::tile`) the results differ only by rounding:
//!
//! - f16: `scores_f16` / `accumulate_f16` equal `tile::scores_generic` / `accumulate_generic`
//!   on the keys/values converted to f32, bit for bit (f16 → f32 is exact, the order is the same).
//! - INT4 keys (per-channel min `m` and step `s` over the group, KIVI): `q · k̂ = Σ (q_c s_c) code_c
//!   + Σ q_c m_c`. The scaled query `q'` is laid out even channels first, then odd ones — the
//!   order in which a byte's low and high nibbles come out — and the dot runs in 16 lanes over
//!   that order, halving reduction as in `tile::dot_generic`.
//! - INT4 values (per-token groups of `vg` channels): `Σ_j p_j v̂_j = Σ_j (p_j s_jg) code_j +
//!   Σ_j p_j m_jg`. The first sum goes into an accumulator in the same even/odd channel order
//!   (`accp`), the second straight into the natural-order accumulator after the tile.
//!
//! Shapes the fused kernels take (others use the f32 path): `head_dim % 64 == 0`, and for INT4
//! a value group `vg % 32 == 0` (16 lanes of one nibble half stay in one group); the decode path
//! uses them for at most [`MAX_ROWS`] query rows per kv head.

use std::sync::OnceLock;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::kv::Int4Tile;
use super::tile::madd;

/// Rows of queries sharing one decoded key or value.
const ROWS: usize = 4;
/// Most query rows the decode path gives these kernels: they decode each key once per four rows,
/// so past this a tile converted to f32 once is cheaper.
pub(crate) const MAX_ROWS: usize = 8;
/// Lanes of the spec (one AVX-512 register).
const L: usize = 16;

/// `s[r * n + j] = scale · q[r] · k[j]`, f16 keys `[n][d]`.
pub(crate) type ScoresF16 = fn(q: &[f32], keys: &[f16], d: usize, scale: f32, s: &mut [f32]);
/// `acc[r] += Σ_j p[r * n + j] · v[j]`, f16 values `[n][d]`.
pub(crate) type AccumulateF16 = fn(p: &[f32], vals: &[f16], d: usize, acc: &mut [f32]);
/// Scores of INT4 keys; `buf` is scratch for the scaled queries.
pub(crate) type ScoresInt4 =
    fn(q: &[f32], t: &Int4Tile<'_>, d: usize, scale: f32, s: &mut [f32], buf: &mut Vec<f32>);
/// Accumulation of INT4 values into `accp` (even/odd order) and `acc` (natural order, the
/// minima); `buf` is scratch for the per-token weights.
pub(crate) type AccumulateInt4 = fn(
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    buf: &mut Vec<f32>,
);

/// The fused kernels chosen for this CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FusedKernels {
    pub scores_f16: ScoresF16,
    pub accumulate_f16: AccumulateF16,
    pub scores_int4: ScoresInt4,
    pub accumulate_int4: AccumulateInt4,
    pub name: &'static str,
}

/// The generic build (no FMA: the spec of CPUs without it).
pub(crate) const GENERIC: FusedKernels = FusedKernels {
    scores_f16: scores_f16::<Lanes<false>>,
    accumulate_f16: accumulate_f16::<Lanes<false>>,
    scores_int4: scores_int4::<Lanes<false>, false>,
    accumulate_int4: accumulate_int4::<Lanes<false>, false>,
    name: "generic",
};

/// Detected once per process.
pub(crate) fn kernels() -> &'static FusedKernels {
    static K: OnceLock<FusedKernels> = OnceLock::new();
    K.get_or_init(|| super::fused_arch::detect().unwrap_or(GENERIC))
}

/// Whether the fused kernels take this shape (else the f32 path runs).
pub(crate) fn takes(d: usize, vg: usize) -> bool {
    d.is_multiple_of(64) && vg.is_multiple_of(32)
}

/// Sixteen f32 lanes and the operations the kernels need; every implementation computes each
/// lane exactly as [`Lanes`] does (the x86 ones in registers).
pub(crate) trait V16: Copy {
    /// All lanes 0.
    fn zero() -> Self;
    /// Every lane `x`.
    fn splat(x: f32) -> Self;
    /// `src[..16]`.
    fn load(src: &[f32]) -> Self;
    /// `src[..16]` converted from f16 (exact).
    fn load_f16(src: &[f16]) -> Self;
    /// The low (`high == false`) or high nibbles of `bytes[..16]` as f32.
    fn nibbles(bytes: &[u8], high: bool) -> Self;
    /// `self · b + c` per lane (fused where the build fuses).
    fn madd(self, b: Self, c: Self) -> Self;
    /// Stores the lanes into `dst[..16]`.
    fn store(self, dst: &mut [f32]);
    /// The halving reduction of `tile::dot_generic` (lanes l and l + 8, then + 4, + 2, + 1),
    /// plus its empty tail (`+ 0.0`).
    fn reduce(self) -> f32;
    /// [`V16::reduce`] of four vectors (the x86 builds share the shuffles among them).
    #[inline(always)]
    fn reduce4(v: [Self; 4]) -> [f32; 4] {
        [v[0].reduce(), v[1].reduce(), v[2].reduce(), v[3].reduce()]
    }
}

/// The specification: plain arrays, multiply-adds fused when `FMA`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lanes<const FMA: bool>([f32; L]);

impl<const FMA: bool> V16 for Lanes<FMA> {
    #[inline(always)]
    fn zero() -> Self {
        Lanes([0.0; L])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Lanes([x; L])
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        let mut x = [0.0; L];
        x.copy_from_slice(&src[..L]);
        Lanes(x)
    }
    #[inline(always)]
    fn load_f16(src: &[f16]) -> Self {
        let mut x = [0.0; L];
        src[..L].convert_to_f32_slice(&mut x);
        Lanes(x)
    }
    #[inline(always)]
    fn nibbles(bytes: &[u8], high: bool) -> Self {
        let mut x = [0.0; L];
        for (o, &b) in x.iter_mut().zip(&bytes[..L]) {
            *o = f32::from(if high { b >> 4 } else { b & 15 });
        }
        Lanes(x)
    }
    #[inline(always)]
    fn madd(mut self, b: Self, c: Self) -> Self {
        for l in 0..L {
            self.0[l] = madd::<FMA>(self.0[l], b.0[l], c.0[l]);
        }
        self
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        dst[..L].copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn reduce(self) -> f32 {
        let mut lanes = self.0;
        let mut w = L / 2;
        while w > 0 {
            for l in 0..w {
                lanes[l] += lanes[l + w];
            }
            w /= 2;
        }
        lanes[0] + 0.0
    }
}

/// Row `r0 + r` of a block of `rb` rows, repeating the last one to fill [`ROWS`].
#[inline(always)]
fn row(r0: usize, r: usize, rb: usize) -> usize {
    r0 + r.min(rb - 1)
}

/// Scores against f16 keys: equals `tile::scores_generic::<FMA>` on the keys as f32.
#[inline(always)]
pub(crate) fn scores_f16<V: V16>(q: &[f32], keys: &[f16], d: usize, scale: f32, s: &mut [f32]) {
    let (rows, n) = (q.len() / d, keys.len() / d);
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        let qr: [&[f32]; ROWS] = [0, 1, 2, 3].map(|r| &q[row(r0, r, rb) * d..][..d]);
        for (j, k) in keys.chunks_exact(d).enumerate() {
            let mut acc = [V::zero(); ROWS];
            for (x, qc) in k.chunks_exact(L).zip(quad_chunks(&qr)) {
                let x = V::load_f16(x);
                madd4(&mut acc, qc, x);
            }
            for (r, a) in V::reduce4(acc).iter().enumerate().take(rb) {
                s[(r0 + r) * n + j] = a * scale;
            }
        }
    }
}

/// The 16-lane chunks of four equally long rows, side by side.
#[inline(always)]
fn quad_chunks<'a>(r: &[&'a [f32]; ROWS]) -> impl Iterator<Item = [&'a [f32]; ROWS]> {
    r[0].chunks_exact(L)
        .zip(r[1].chunks_exact(L))
        .zip(r[2].chunks_exact(L))
        .zip(r[3].chunks_exact(L))
        .map(|(((a, b), c), d)| [a, b, c, d])
}

/// `acc[r] = q[r] · x + acc[r]` for the four rows.
#[inline(always)]
fn madd4<V: V16>(acc: &mut [V; ROWS], q: [&[f32]; ROWS], x: V) {
    acc[0] = V::load(q[0]).madd(x, acc[0]);
    acc[1] = V::load(q[1]).madd(x, acc[1]);
    acc[2] = V::load(q[2]).madd(x, acc[2]);
    acc[3] = V::load(q[3]).madd(x, acc[3]);
}

/// Accumulation of f16 values: equals `tile::accumulate_generic::<FMA>` on the values as f32
/// (64 columns of [`ROWS`] rows held across all values; a zero probability is skipped).
#[inline(always)]
pub(crate) fn accumulate_f16<V: V16>(p: &[f32], vals: &[f16], d: usize, acc: &mut [f32]) {
    let (rows, n) = (acc.len() / d, vals.len() / d);
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        for c in (0..d).step_by(4 * L) {
            let mut a = [[V::zero(); 4]; ROWS];
            for (r, ar) in a.iter_mut().enumerate().take(rb) {
                for (b, ab) in ar.iter_mut().enumerate() {
                    *ab = V::load(&acc[(r0 + r) * d + c + b * L..]);
                }
            }
            for (j, v) in vals.chunks_exact(d).enumerate() {
                let x = [
                    V::load_f16(&v[c..]),
                    V::load_f16(&v[c + L..]),
                    V::load_f16(&v[c + 2 * L..]),
                    V::load_f16(&v[c + 3 * L..]),
                ];
                for (r, ar) in a.iter_mut().enumerate().take(rb) {
                    let pj = p[(r0 + r) * n + j];
                    if pj == 0.0 {
                        continue;
                    }
                    let pv = V::splat(pj);
                    for (ab, xb) in ar.iter_mut().zip(&x) {
                        *ab = pv.madd(*xb, *ab);
                    }
                }
            }
            for (r, ar) in a.iter().enumerate().take(rb) {
                for (b, ab) in ar.iter().enumerate() {
                    ab.store(&mut acc[(r0 + r) * d + c + b * L..]);
                }
            }
        }
    }
}

/// Scores against INT4 keys (module docs): `buf` receives the scaled queries `[rows][d]` in
/// even/odd order, then the minima terms `[rows]`.
#[inline(always)]
pub(crate) fn scores_int4<V: V16, const FMA: bool>(
    q: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    scale: f32,
    s: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let (rows, h) = (q.len() / d, d / 2);
    let n = t.kc.len() / h;
    buf.resize(rows * d + rows + 2 * d, 0.0);
    let (qp, rest) = buf.split_at_mut(rows * d);
    let (bias, params) = rest.split_at_mut(rows);
    let (mins, steps) = params.split_at_mut(d);
    t.km.convert_to_f32_slice(mins);
    t.ks.convert_to_f32_slice(steps);
    for (r, (qr, b)) in q.chunks_exact(d).zip(bias.iter_mut()).enumerate() {
        let out = &mut qp[r * d..][..d];
        for i in 0..h {
            out[i] = qr[2 * i] * steps[2 * i];
            out[h + i] = qr[2 * i + 1] * steps[2 * i + 1];
        }
        *b = super::tile::dot_generic::<FMA>(qr, mins);
    }
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        let qr: [&[f32]; ROWS] = [0, 1, 2, 3].map(|r| &qp[row(r0, r, rb) * d..][..d]);
        let lo: [&[f32]; ROWS] = qr.map(|x| &x[..h]);
        let hi: [&[f32]; ROWS] = qr.map(|x| &x[h..]);
        for (j, codes) in t.kc.chunks_exact(h).enumerate() {
            let mut acc = [V::zero(); ROWS];
            for (c, qc) in codes.chunks_exact(L).zip(quad_chunks(&lo)) {
                madd4(&mut acc, qc, V::nibbles(c, false));
            }
            for (c, qc) in codes.chunks_exact(L).zip(quad_chunks(&hi)) {
                madd4(&mut acc, qc, V::nibbles(c, true));
            }
            for (r, a) in V::reduce4(acc).iter().enumerate().take(rb) {
                s[(r0 + r) * n + j] = (a + bias[r0 + r]) * scale;
            }
        }
    }
}

/// Accumulation of INT4 values (module docs): `accp` `[rows][d]` in even/odd order gets the
/// code terms, `acc` `[rows][d]` the minima; `buf` receives the weights `p · step` `[rows][n][g]`.
#[inline(always)]
pub(crate) fn accumulate_int4<V: V16, const FMA: bool>(
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let (rows, h, vg) = (acc.len() / d, d / 2, t.vg);
    let (n, groups) = (t.vc.len() / h, d / vg);
    let ng = n * groups;
    buf.resize(rows * ng + 2 * ng, 0.0);
    let (w, params) = buf.split_at_mut(rows * ng);
    let (mins, steps) = params.split_at_mut(ng);
    t.vm.convert_to_f32_slice(mins);
    t.vs.convert_to_f32_slice(steps);
    for r in 0..rows {
        let pr = &p[r * n..][..n];
        for (j, &pj) in pr.iter().enumerate() {
            for g in 0..groups {
                w[r * ng + j * groups + g] = if pj == 0.0 {
                    0.0
                } else {
                    pj * steps[j * groups + g]
                };
            }
        }
        // The minima: Σ_j p_j m_jg, added to the group's channels.
        for g in 0..groups {
            let mut b = 0f32;
            for (j, &pj) in pr.iter().enumerate() {
                if pj != 0.0 {
                    b = madd::<FMA>(pj, mins[j * groups + g], b);
                }
            }
            acc[r * d + g * vg..][..vg].iter_mut().for_each(|a| *a += b);
        }
    }
    let w = &*w;
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        // Four 16-lane chunks of the even/odd order at a time; chunk `c` holds natural channels
        // 2c.. (even half) or 2(c - h) + 1.. (odd half), all in group `g`.
        for c0 in (0..d).step_by(4 * L) {
            let mut a = [[V::zero(); 4]; ROWS];
            for (r, ar) in a.iter_mut().enumerate().take(rb) {
                for (b, ab) in ar.iter_mut().enumerate() {
                    *ab = V::load(&accp[(r0 + r) * d + c0 + b * L..]);
                }
            }
            // Chunk b: its byte offset in a token's codes, which nibble, and its value group.
            let at: [(usize, bool, usize); 4] = [0, 1, 2, 3].map(|b| {
                let c = c0 + b * L;
                if c < h {
                    (c, false, 2 * c / vg)
                } else {
                    (c - h, true, (2 * (c - h) + 1) / vg)
                }
            });
            for (j, codes) in t.vc.chunks_exact(h).enumerate() {
                let x = [
                    V::nibbles(&codes[at[0].0..][..L], at[0].1),
                    V::nibbles(&codes[at[1].0..][..L], at[1].1),
                    V::nibbles(&codes[at[2].0..][..L], at[2].1),
                    V::nibbles(&codes[at[3].0..][..L], at[3].1),
                ];
                for (r, ar) in a.iter_mut().enumerate().take(rb) {
                    let wr = &w[(r0 + r) * ng + j * groups..][..groups];
                    for ((ab, xb), &(_, _, g)) in ar.iter_mut().zip(&x).zip(&at) {
                        *ab = V::splat(wr[g]).madd(*xb, *ab);
                    }
                }
            }
            for (r, ar) in a.iter().enumerate().take(rb) {
                for (b, ab) in ar.iter().enumerate() {
                    ab.store(&mut accp[(r0 + r) * d + c0 + b * L..]);
                }
            }
        }
    }
}

/// Adds the even/odd-ordered `accp` `[rows][d]` into the natural-order `acc`.
pub(crate) fn merge_permuted(accp: &[f32], acc: &mut [f32], d: usize) {
    let h = d / 2;
    for (ap, a) in accp.chunks_exact(d).zip(acc.chunks_exact_mut(d)) {
        for i in 0..h {
            a[2 * i] += ap[i];
            a[2 * i + 1] += ap[h + i];
        }
    }
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
