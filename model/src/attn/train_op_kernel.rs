//! The loops of the fused training attention (`train_op.rs`) on row-major f32 slices: per
//! (batch, key/value head) in parallel, the queries of every head of the group in blocks of
//! [`BLOCK`] rows, each block against the span of keys its rows may see (so keys past a causal
//! block, or outside a window, are never touched), with gemm for the three products. The forward
//! returns the output and each row's logsumexp; the backward recomputes the probabilities from
//! that logsumexp. They must equal the naive masked softmax attention and its gradients.

use rayon::prelude::*;

use crate::error::Result;
use crate::vision::cpu::{exp, matmul, Mat};
use gemm::Parallelism;

/// Query rows per block: the scores of one block against its key span stay in L2.
pub(super) const BLOCK: usize = 64;

/// Two half-open key ranges `[lo, hi)` a query may see (the sinks, then the band; the first may
/// be empty), absolute positions.
pub(super) type KeyRanges = [(u32, u32); 2];

/// q `[B, H, T, D]`, k and v `[B, H_kv, T, D]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub t: usize,
    pub d: usize,
}

/// The op's inputs, contiguous.
#[derive(Clone, Copy)]
pub(super) struct Inputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub dims: Dims,
}

/// What the backward gets from the forward and from above: the output `[B, H, T, D]`, its
/// gradient and each row's logsumexp `[B, H, T]`.
#[derive(Clone, Copy)]
pub(super) struct Upstream<'a> {
    pub o: &'a [f32],
    pub grad: &'a [f32],
    pub lse: &'a [f32],
}

/// The key ranges of every query: `T` per batch row, or `T` for all rows when `shared`.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub ranges: &'a [KeyRanges],
    pub shared: bool,
}

impl Rows<'_> {
    fn of(&self, b: usize, t: usize) -> &[KeyRanges] {
        let b = if self.shared { 0 } else { b };
        &self.ranges[b * t..(b + 1) * t]
    }
}

/// The keys `lo..hi` the rows of a block may see, and each row's ranges relative to `lo`.
fn span(rows: &[KeyRanges], rel: &mut Vec<[(usize, usize); 2]>) -> (usize, usize) {
    let mut lo = usize::MAX;
    let mut hi = 0;
    for r in rows {
        for &(a, b) in r {
            if a < b {
                lo = lo.min(a as usize);
                hi = hi.max(b as usize);
            }
        }
    }
    let lo = lo.min(hi);
    rel.clear();
    rel.extend(rows.iter().map(|r| {
        r.map(|(a, b)| {
            let (a, b) = (a as usize, b as usize);
            (a.max(lo) - lo, b.max(lo) - lo)
        })
    }));
    (lo, hi)
}

/// Scores `row` (`n` keys from the span start) → `exp(row − shift)` inside `ranges`, 0 outside;
/// `shift` is the row's maximum over `ranges` when `None`. Returns (shift, sum).
fn exp_masked(row: &mut [f32], ranges: &[(usize, usize); 2], shift: Option<f32>) -> (f32, f32) {
    let shift = shift.unwrap_or_else(|| {
        ranges
            .iter()
            .flat_map(|&(a, b)| row[a..b].iter())
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
    });
    let mut sum = 0f32;
    let mut at = 0;
    for &(a, b) in ranges {
        if a >= b {
            continue;
        }
        row[at..a].fill(0.0);
        for x in &mut row[a..b] {
            *x = exp(*x - shift);
            sum += *x;
        }
        at = b;
    }
    row[at..].fill(0.0);
    (shift, sum)
}

/// Output `[B, H, T, D]` and logsumexp `[B, H, T]` (of the scaled scores) of masked softmax
/// attention.
pub(super) fn forward(
    x: Inputs,
    scale: f32,
    rows: Rows,
    out: &mut [f32],
    lse: &mut [f32],
) -> Result<()> {
    let Dims { h, hkv, t, d, .. } = x.dims;
    let rep = h / hkv;
    out.par_chunks_mut(rep * t * d)
        .zip(lse.par_chunks_mut(rep * t))
        .enumerate()
        .try_for_each(|(bg, (o, l))| {
            let q = &x.q[bg * rep * t * d..(bg + 1) * rep * t * d];
            let k = &x.k[bg * t * d..(bg + 1) * t * d];
            let v = &x.v[bg * t * d..(bg + 1) * t * d];
            let ranges = rows.of(bg / hkv, t);
            let mut s = vec![0f32; BLOCK * t];
            let mut rel = Vec::with_capacity(BLOCK);
            for r in 0..rep {
                for i0 in (0..t).step_by(BLOCK) {
                    let m = BLOCK.min(t - i0);
                    let (lo, hi) = span(&ranges[i0..i0 + m], &mut rel);
                    let n = hi - lo;
                    let at = (r * t + i0) * d;
                    let qb = Mat::rows(&q[at..], m, d, d);
                    let kb = Mat::rows(&k[lo * d..], n, d, d).t();
                    matmul(&mut s, n, qb, kb, false, scale, Parallelism::None)?;
                    for (i, rr) in rel.iter().enumerate() {
                        let row = &mut s[i * n..(i + 1) * n];
                        let (mx, sum) = exp_masked(row, rr, None);
                        let inv = 1.0 / sum;
                        row.iter_mut().for_each(|p| *p *= inv);
                        l[r * t + i0 + i] = mx + sum.ln();
                    }
                    let pb = Mat::rows(&s, m, n, n);
                    let vb = Mat::rows(&v[lo * d..], n, d, d);
                    matmul(&mut o[at..], d, pb, vb, false, 1.0, Parallelism::None)?;
                }
            }
            Ok(())
        })
}

/// Scratch of one (batch, group) task of the backward.
struct Scratch {
    p: Vec<f32>,
    dp: Vec<f32>,
    rel: Vec<[(usize, usize); 2]>,
}

/// One (batch, group)'s slices: q, o and the output gradient of its heads `[rep, T, D]`, k and
/// v of its key/value head `[T, D]`, the logsumexp of its heads' rows.
#[derive(Clone, Copy)]
struct Group<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    go: &'a [f32],
    lse: &'a [f32],
}

/// One query block `i0..i0+m` of head `r` of a group: dQ of the block, dK and dV of its key
/// span accumulated (dq: the group's heads; dk, dv: its key/value head).
#[allow(clippy::too_many_arguments)]
fn backward_block(
    g: Group,
    ranges: &[KeyRanges],
    (t, d, r, i0, scale): (usize, usize, usize, usize, f32),
    sc: &mut Scratch,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) -> Result<()> {
    let Group {
        q,
        k,
        v,
        o,
        go,
        lse,
    } = g;
    let m = BLOCK.min(t - i0);
    let (lo, hi) = span(&ranges[i0..i0 + m], &mut sc.rel);
    let n = hi - lo;
    let at = (r * t + i0) * d;
    let qb = Mat::rows(&q[at..], m, d, d);
    let gb = Mat::rows(&go[at..], m, d, d);
    let kb = Mat::rows(&k[lo * d..], n, d, d);
    let vb = Mat::rows(&v[lo * d..], n, d, d);
    matmul(&mut sc.p, n, qb, kb.t(), false, scale, Parallelism::None)?;
    matmul(&mut sc.dp, n, gb, vb.t(), false, 1.0, Parallelism::None)?;
    for (i, rr) in sc.rel.iter().enumerate() {
        let row = r * t + i0 + i;
        let p = &mut sc.p[i * n..(i + 1) * n];
        exp_masked(p, rr, Some(lse[row]));
        let di: f32 = o[row * d..(row + 1) * d]
            .iter()
            .zip(&go[row * d..(row + 1) * d])
            .map(|(a, b)| a * b)
            .sum();
        for (dp, &p) in sc.dp[i * n..(i + 1) * n].iter_mut().zip(p.iter()) {
            *dp = p * (*dp - di);
        }
    }
    let ds = Mat::rows(&sc.dp, m, n, n);
    let pm = Mat::rows(&sc.p, m, n, n);
    matmul(&mut dq[at..], d, ds, kb, false, scale, Parallelism::None)?;
    matmul(
        &mut dk[lo * d..],
        d,
        ds.t(),
        qb,
        true,
        scale,
        Parallelism::None,
    )?;
    matmul(
        &mut dv[lo * d..],
        d,
        pm.t(),
        gb,
        true,
        1.0,
        Parallelism::None,
    )
}

/// dQ `[B, H, T, D]`, dK and dV `[B, H_kv, T, D]` of [`forward`]'s output for its gradient.
pub(super) fn backward(
    x: Inputs,
    up: Upstream,
    scale: f32,
    rows: Rows,
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) -> Result<()> {
    let Dims { h, hkv, t, d, .. } = x.dims;
    let rep = h / hkv;
    let (gq, gk) = (rep * t * d, t * d);
    dq.par_chunks_mut(gq)
        .zip(dk.par_chunks_mut(gk).zip(dv.par_chunks_mut(gk)))
        .enumerate()
        .try_for_each(|(bg, (dq, (dk, dv)))| {
            let qs = bg * gq..(bg + 1) * gq;
            let ks = bg * gk..(bg + 1) * gk;
            let g = Group {
                q: &x.q[qs.clone()],
                k: &x.k[ks.clone()],
                v: &x.v[ks],
                o: &up.o[qs.clone()],
                go: &up.grad[qs],
                lse: &up.lse[bg * rep * t..(bg + 1) * rep * t],
            };
            let ranges = rows.of(bg / hkv, t);
            let mut sc = Scratch {
                p: vec![0f32; BLOCK * t],
                dp: vec![0f32; BLOCK * t],
                rel: Vec::with_capacity(BLOCK),
            };
            for r in 0..rep {
                for i0 in (0..t).step_by(BLOCK) {
                    let shape = (t, d, r, i0, scale);
                    backward_block(g, ranges, shape, &mut sc, dq, dk, dv)?;
                }
            }
            Ok(())
        })
}
