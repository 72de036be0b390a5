//! The fused kernels against the generic build (bit for bit), the f32 tile spec on converted
//! f16 data (bit for bit) and a naive f64 product over the dequantised INT4 tile (tolerance).

use half::f16;

use super::*;
use crate::attn::int4;
use crate::attn::tile::{accumulate_generic, scores_generic};

/// The attention tests' deterministic values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    crate::attn::flash::tests::rand_vec(n, seed)
}

/// An INT4 tile of `n` tokens quantised from random keys/values, and its dequantised f32 form.
struct Tile {
    kc: Vec<u8>,
    km: Vec<f16>,
    ks: Vec<f16>,
    vc: Vec<u8>,
    vm: Vec<f16>,
    vs: Vec<f16>,
    vg: usize,
    d: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Tile {
    fn new(n: usize, d: usize, vg: usize, seed: u64) -> Self {
        // An outlier channel and an offset, so minima and steps matter.
        let k: Vec<f32> = data(n * d, seed)
            .iter()
            .enumerate()
            .map(|(i, x)| if i % d == 5 { 9.0 + 3.0 * x } else { x + 0.3 })
            .collect();
        let v = data(n * d, seed + 1);
        let g = d / vg;
        let mut t = Tile {
            kc: vec![0; int4::key_code_bytes(n, d)],
            km: vec![f16::ZERO; d],
            ks: vec![f16::ZERO; d],
            vc: vec![0; int4::value_code_bytes(n, d)],
            vm: vec![f16::ZERO; n * g],
            vs: vec![f16::ZERO; n * g],
            vg,
            d,
            k: vec![0.0; n * d],
            v: vec![0.0; n * d],
        };
        int4::quantize_keys(&k, d, &mut t.kc, &mut t.km, &mut t.ks);
        int4::quantize_values(&v, d, vg, &mut t.vc, &mut t.vm, &mut t.vs);
        int4::dequantize_keys(&t.kc, d, &t.km, &t.ks, 0, &mut t.k, &mut Vec::new());
        int4::dequantize_values(&t.vc, d, vg, &t.vm, &t.vs, 0, &mut t.v);
        t
    }

    /// Tokens `s..` (a dead prefix in the cache's oldest block): the key chunks from the one
    /// holding token `s`, which sits at place `s % 16` of it, and the value quads from the one
    /// holding it, at place `s % 4`.
    fn view_from(&self, s: usize) -> Int4Tile<'_> {
        let d = self.d;
        let cb = int4::key_chunk_bytes(d);
        let per_tok = d / self.vg;
        Int4Tile {
            kc: &self.kc[s / 16 * cb..],
            k0: s % 16,
            km: &self.km,
            ks: &self.ks,
            vc: &self.vc[s / 4 * 2 * d..],
            v0: s % 4,
            vm: &self.vm[s * per_tok..],
            vs: &self.vs[s * per_tok..],
            vg: self.vg,
            // Only a prefetch hint: any slice will do (these are the key codes again).
            next: &self.kc,
        }
    }
}

/// Probabilities with some exact zeros (masked keys).
fn probs(rows: usize, n: usize, seed: u64) -> Vec<f32> {
    data(rows * n, seed)
        .iter()
        .enumerate()
        .map(|(i, x)| if i % 7 == 3 { 0.0 } else { x.abs() })
        .collect()
}

const SHAPES: [(usize, usize, usize, usize); 8] = [
    // (rows, n, d, vg)
    (4, 64, 128, 64),
    (1, 7, 64, 32),
    (3, 33, 128, 128),
    (5, 64, 128, 32),
    (8, 1, 64, 64),
    (4, 16, 256, 64),
    (2, 9, 192, 64),
    // Longer than one integer pass (`fused_int4_values::MAX_TOKENS`).
    (1, 2100, 64, 64),
];

/// Scores and accumulation over tokens `from..` of the tile.
fn run_int4(
    k: &FusedKernels,
    rows: usize,
    t: &Tile,
    d: usize,
    from: usize,
) -> (Vec<f32>, Vec<f32>) {
    let n = t.k.len() / d - from;
    let q = data(rows * d, 11);
    let mut s = vec![0f32; rows * n];
    let mut scratch = Int4Scratch::default();
    let view = t.view_from(from);
    (k.scores_int4)(&q, &view, d, 0.125, &mut s, &mut scratch);
    let p = probs(rows, n, 12);
    let mut acc = data(rows * d, 13);
    let mut accp = data(rows * d, 14);
    (k.accumulate_int4)(&p, &view, d, &mut accp, &mut acc, &mut scratch);
    merge_values(&accp, &mut acc, d);
    (s, acc)
}

fn run_f16(k: &FusedKernels, rows: usize, n: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let q = data(rows * d, 21);
    let keys: Vec<f16> = data(n * d, 22).iter().map(|&x| f16::from_f32(x)).collect();
    let vals: Vec<f16> = data(n * d, 23).iter().map(|&x| f16::from_f32(x)).collect();
    let mut s = vec![0f32; rows * n];
    // The other slice stands in for the next tile: a prefetch hint must not change a result.
    (k.scores_f16)(&q, &keys, d, 0.3, &mut s, &vals);
    let p = probs(rows, n, 24);
    let mut acc = data(rows * d, 25);
    (k.accumulate_f16)(&p, &vals, d, &mut acc, &keys);
    (s, acc)
}

/// The generic INT4 scores with fused multiply-adds.
fn generic_fma_scores_int4(
    q: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    scale: f32,
    s: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let dot = crate::attn::fused_int4::dot_codes_generic;
    scores_int4::<Lanes<true>>(dot, q, t, d, scale, s, scratch)
}

/// The generic INT4 value accumulation with fused multiply-adds.
fn generic_fma_accumulate_int4(
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let codes = crate::attn::fused_int4_values::value_codes_generic;
    accumulate_int4::<Lanes<true>>(codes, p, t, d, accp, acc, scratch)
}

/// The generic build with fused multiply-adds: what every SIMD build must equal.
const GENERIC_FMA: FusedKernels = FusedKernels {
    scores_f16: scores_f16::<Lanes<true>>,
    accumulate_f16: accumulate_f16::<Lanes<true>>,
    scores_int4: generic_fma_scores_int4,
    accumulate_int4: generic_fma_accumulate_int4,
    softmax_rows: crate::attn::tile::online_softmax_rows,
    name: "generic-fma",
};

#[test]
fn every_build_equals_the_generic_one_bit_for_bit() {
    let builds = super::super::fused_arch::available();
    for b in &builds {
        for (rows, n, d, vg) in SHAPES {
            let t = Tile::new(n, d, vg, 1);
            for from in [0, n / 3, n - 1] {
                assert_eq!(
                    run_int4(b, rows, &t, d, from),
                    run_int4(&GENERIC_FMA, rows, &t, d, from),
                    "{} int4 {rows}x{n}x{d}/{vg} from {from}",
                    b.name
                );
            }
            assert_eq!(
                run_f16(b, rows, n, d),
                run_f16(&GENERIC_FMA, rows, n, d),
                "{} f16 {rows}x{n}x{d}",
                b.name
            );
        }
    }
    // The online softmax step, on rows with masked (−inf) scores and a running state: rows whose
    // maximum grows, rows whose maximum stays, a fully masked row, a row never seen before.
    for b in &builds {
        for n in [1usize, 15, 16, 64, 77] {
            let rows = 5;
            let mut s0: Vec<f32> = data(rows * n, 40 + n as u64)
                .iter()
                .map(|x| 4.0 * x)
                .collect();
            s0[n / 2] = f32::NEG_INFINITY;
            s0[3 * n..4 * n].fill(f32::NEG_INFINITY);
            let acc0 = data(rows * 64, 41);
            let m0 = [0.5f32, 9.0, -1.0, 0.25, f32::NEG_INFINITY];
            let l0 = [2.0f32, 1.5, 0.5, 3.0, 0.0];
            let run = |f: crate::attn::fused::SoftmaxRows| {
                let (mut m, mut l, mut acc, mut s) = (m0, l0, acc0.clone(), s0.clone());
                let mut corr = [0f32; 5];
                f(&mut m, &mut l, &mut acc, &mut s, &mut corr);
                (m, l, acc, s, corr)
            };
            let want = run(GENERIC_FMA.softmax_rows);
            assert_eq!(run(b.softmax_rows), want, "{} softmax {n}", b.name);
            // The rows at once equal the one-row specification row by row, bit for bit.
            for r in 0..rows {
                let (mut m, mut l) = (m0[r], l0[r]);
                let mut acc = acc0[r * 64..][..64].to_vec();
                let mut s = s0[r * n..][..n].to_vec();
                let corr = crate::attn::tile::online_softmax_row(&mut m, &mut l, &mut acc, &mut s);
                let got = (
                    want.0[r],
                    want.1[r],
                    &want.2[r * 64..][..64],
                    &want.3[r * n..][..n],
                );
                assert_eq!((m, l, &acc[..], &s[..]), got, "row {r} of {n}");
                assert_eq!(corr, want.4[r], "row {r} of {n}");
                // The sum is the exact one up to rounding.
                let exact: f64 = s.iter().map(|&x| f64::from(x)).sum::<f64>()
                    + f64::from(l0[r]) * f64::from(corr);
                assert!((f64::from(l) - exact).abs() <= 1e-5 * exact, "sum {n}");
            }
        }
    }
    // The chosen build is one of them (or the generic one on a CPU without AVX2 + FMA + F16C).
    assert!(builds.iter().any(|b| b.name == kernels().name) || kernels().name == "generic");
}

#[test]
fn f16_kernels_equal_the_f32_tile_spec_on_converted_data() {
    for (rows, n, d, _) in SHAPES {
        let q = data(rows * d, 31);
        let keys: Vec<f16> = data(n * d, 32).iter().map(|&x| f16::from_f32(x)).collect();
        let kf: Vec<f32> = keys.iter().map(|x| x.to_f32()).collect();
        let p = probs(rows, n, 33);
        let acc0 = data(rows * d, 34);
        for fma in [false, true] {
            let (mut s1, mut s2) = (vec![0f32; rows * n], vec![0f32; rows * n]);
            let (mut a1, mut a2) = (acc0.clone(), acc0.clone());
            if fma {
                scores_f16::<Lanes<true>>(&q, &keys, d, 0.7, &mut s1, &[]);
                scores_generic::<true>(&q, &kf, d, 0.7, &mut s2);
                accumulate_f16::<Lanes<true>>(&p, &keys, d, &mut a1, &keys);
                accumulate_generic::<true>(&p, &kf, d, &mut a2);
            } else {
                scores_f16::<Lanes<false>>(&q, &keys, d, 0.7, &mut s1, &[]);
                scores_generic::<false>(&q, &kf, d, 0.7, &mut s2);
                accumulate_f16::<Lanes<false>>(&p, &keys, d, &mut a1, &keys);
                accumulate_generic::<false>(&p, &kf, d, &mut a2);
            }
            assert_eq!(s1, s2, "scores {rows}x{n}x{d} fma {fma}");
            assert_eq!(a1, a2, "accumulate {rows}x{n}x{d} fma {fma}");
        }
    }
}

#[test]
fn int4_kernels_equal_the_dequantised_product() {
    for (rows, n_all, d, vg) in SHAPES {
        let t = Tile::new(n_all, d, vg, 2);
        for from in [0, n_all / 2] {
            for k in [&GENERIC, kernels()] {
                check_int4(k, &t, rows, d, from);
            }
        }
    }
}

/// One build's INT4 scores and accumulation over tokens `from..` of `t` against the f64 product
/// over the dequantised tile, within the bounds of the i8 query and u8 weight rounding.
fn check_int4(k: &FusedKernels, t: &Tile, rows: usize, d: usize, from: usize) {
    let vg = t.vg;
    let n = t.k.len() / d - from;
    let (s, acc) = run_int4(k, rows, t, d, from);
    let q = data(rows * d, 11);
    let p = probs(rows, n, 12);
    let mut want = data(rows * d, 13);
    let accp0 = data(rows * d, 14);
    let code = |j: usize, c: usize| {
        let (at, shift) = int4::key_code_at(from + j, c, d);
        f64::from((t.kc[at] >> shift) & 15)
    };
    for r in 0..rows {
        for j in 0..n {
            let dot: f64 = (0..d)
                .map(|c| f64::from(q[r * d + c]) * f64::from(t.k[(from + j) * d + c]))
                .sum();
            // The i8 rounding of the scaled query costs at most S_b/2 per code unit of block b.
            let bound: f64 = (0..d / 32)
                .map(|b| {
                    let amax = (32 * b..32 * b + 32)
                        .map(|c| (q[r * d + c] * t.ks[c].to_f32()).abs())
                        .fold(0f32, f32::max);
                    let codes: f64 = (32 * b..32 * b + 32).map(|c| code(j, c)).sum();
                    0.125 * f64::from(amax) / 127.0 / 2.0 * codes
                })
                .sum();
            let got = f64::from(s[r * n + j]);
            let e = (got - dot * 0.125).abs();
            assert!(e < bound + 2e-5 * (1.0 + dot.abs()), "score {e} > {bound}");
        }
        // The u8 rounding of the weights p · step costs at most S/2 per unit of |code − 8|.
        let per_tok = d / vg;
        let wmax = (0..n)
            .flat_map(|j| (0..per_tok).map(move |g| (j, g)))
            .map(|(j, g)| p[r * n + j] * t.vs[(from + j) * per_tok + g].to_f32())
            .fold(0f32, f32::max);
        for c in 0..d {
            let perm = crate::attn::fused_int4_values::vpos(d, c);
            let sum: f64 = (0..n)
                .map(|j| f64::from(p[r * n + j]) * f64::from(t.v[(from + j) * d + c]))
                .sum();
            let codes: f64 = (0..n)
                .map(|j| {
                    let at = int4::value_code_at(from + j, c / 2, d);
                    let code = (t.vc[at] >> (4 * (c % 2))) & 15;
                    (f64::from(code) - 8.0).abs()
                })
                .sum();
            let bound = f64::from(wmax) / 255.0 / 2.0 * codes;
            let w = f64::from(want[r * d + c]) + f64::from(accp0[r * d + perm]) + sum;
            want[r * d + c] = w as f32;
            let e = (f64::from(acc[r * d + c]) - w).abs();
            let tol = bound + 2e-5 * (1.0 + w.abs());
            assert!(e < tol, "{} value {r} {c}: {e} > {bound}", k.name);
        }
    }
}

/// `ValueCodes`' contract as written: per row and channel, the sum over the quads' tokens of the
/// weight of the channel's group times the centred code, stored at the channel's place in the lane order.
fn value_codes_naive(wq: &[u8], codes: &[u8], d: usize, vg: usize, isum: &mut [i32]) {
    use crate::attn::fused_int4_values::vpos;
    let groups = d / vg;
    let nq = codes.len() / (2 * d) * 4;
    for (r, out) in isum.chunks_exact_mut(d).enumerate() {
        for c in 0..d {
            let wg = &wq[(r * groups + c / vg) * nq..][..nq];
            let mut acc = 0i32;
            for (j, &wj) in wg.iter().enumerate() {
                let code = (codes[int4::value_code_at(j, c / 2, d)] >> (4 * (c % 2))) & 15;
                acc += i32::from(wj) * (i32::from(code) - 8);
            }
            out[vpos(d, c)] = acc;
        }
    }
}

/// Value-sum inputs: `(rows, n, d, vg, weights, codes)` over the whole u8 range of weights and
/// codes (the places past `n` in the last quad weighted 0, their codes not zero), token counts
/// that end in a partial quad or pass the i16 runs of the portable sums, one and two groups per
/// 32-byte chunk, and head sizes with several chunks.
#[allow(clippy::type_complexity)]
fn value_cases() -> Vec<(usize, usize, usize, usize, Vec<u8>, Vec<u8>)> {
    use crate::attn::fused_int4_values::{quad_len, WEIGHT_PAD};
    let shapes = [
        (4usize, 64usize, 128usize, 64usize),
        (3, 5, 64, 32),
        (5, 8, 192, 64),
        (1, 1, 256, 32),
        (4, 66, 128, 32),
        (2, 7, 256, 128),
        (1, 37, 64, 64),
    ];
    shapes
        .into_iter()
        .map(|(rows, n, d, vg)| {
            let per_row = quad_len(n) * (d / vg);
            let mut wq: Vec<u8> = data(rows * per_row, 51)
                .iter()
                .map(|x| (x.abs() * 256.0) as u8)
                .collect();
            for g in wq.chunks_exact_mut(quad_len(n)) {
                g[n..].fill(0);
            }
            // Extreme runs: the largest weight with every code 0 (and 15) on the first row.
            wq[..n].fill(255);
            wq.resize(rows * per_row + WEIGHT_PAD, 0);
            let mut codes: Vec<u8> = data(int4::value_code_bytes(n, d), 52)
                .iter()
                .map(|x| (x.abs() * 256.0) as u8)
                .collect();
            for j in 0..n {
                codes[int4::value_code_at(j, 0, d)] = if j % 2 == 0 { 0 } else { 255 };
                codes[int4::value_code_at(j, 1, d)] = 0;
            }
            (rows, n, d, vg, wq, codes)
        })
        .collect()
}

/// The portable integer value sums equal the contract's (`value_codes_naive`) exactly.
#[test]
fn portable_value_codes_equal_the_contract() {
    use crate::attn::fused_int4_values::value_codes_generic;
    for (rows, n, d, vg, wq, codes) in value_cases() {
        let mut want = vec![0i32; rows * d];
        value_codes_naive(&wq, &codes, d, vg, &mut want);
        let mut got = vec![7i32; rows * d];
        value_codes_generic(&wq, &codes, d, vg, &[], &mut got);
        assert_eq!(got, want, "{rows}x{n}x{d}/{vg}");
    }
}

/// The SIMD integer value sums equal the contract's exactly (`value_cases`).
#[cfg(target_arch = "x86_64")]
#[test]
fn value_codes_equal_the_portable_sums() {
    use crate::attn::fused_int4_values::ValueCodes;
    use crate::attn::fused_x86_values::{values_256, values_256_madd, values_512};
    // values_512 runs the VNNI kernel where the CPU has it (else the AVX2 one again), values_256
    // the AVX-VNNI one where the CPU has it, values_256_madd never.
    let builds: [(&str, ValueCodes); 3] = [
        ("256", values_256),
        ("256 madd", values_256_madd),
        ("512", values_512),
    ];
    for (rows, n, d, vg, wq, codes) in value_cases() {
        let mut want = vec![0i32; rows * d];
        value_codes_naive(&wq, &codes, d, vg, &mut want);
        for (name, f) in builds {
            let mut got = vec![7i32; rows * d];
            f(&wq, &codes, d, vg, &codes, &mut got);
            assert_eq!(got, want, "{name} {rows}x{n}x{d}/{vg}");
        }
    }
}

/// The vectorisable rounding equals the rounded, clamped cast it replaces (`round_to`'s
/// docs), on ties, near-ties, both bounds, beyond them, infinities and NaN.
#[test]
fn rounding_equals_the_clamped_cast() {
    use crate::attn::lanes::{round_q8, round_u8, Q8, QU8, ROUND};
    let spec = |x: f32, inv: f32| (((x * inv) + ROUND) - ROUND).clamp(0.0, QU8) as u8;
    let spec8 = |x: f32, inv: f32| (((x * inv) + ROUND) - ROUND).clamp(-Q8, Q8) as i8;
    let mut xs = vec![
        0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 254.5, -254.5, 126.5, -126.5, 127.0,
        127.5, -128.0,
    ];
    xs.extend([
        QU8,
        -QU8,
        255.5,
        40000.0,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    xs.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 3.37 + 0.5));
    for &inv in &[1.0f32, 0.37, 2.0, 1e-3] {
        for &x in &xs {
            assert_eq!(round_u8(x, inv), spec(x, inv), "x = {x}, inv = {inv}");
            assert_eq!(round_q8(x, inv), spec8(x, inv), "x = {x}, inv = {inv} (i8)");
        }
    }
}

/// The SIMD key scores equal the portable ones exactly, over the whole i8 range of the query
/// and every code byte, for one and several chunks, one to eight rows, head sizes 64–256; and
/// the portable ones equal the contract's arithmetic through the layout's index function.
#[cfg(target_arch = "x86_64")]
#[test]
fn dot_codes_equal_the_portable_dots() {
    use crate::attn::fused_int4::{dot_codes_generic, DotCodes, KeyDots};
    use crate::attn::fused_x86_int4::{dot_256, dot_512};
    // dot_512 runs the VNNI kernel where the CPU has it (else the AVX2 one again).
    let builds: [(&str, DotCodes); 2] = [("256", dot_256), ("512", dot_512)];
    for (rows, chunks, d) in [
        (4usize, 4usize, 128usize),
        (4, 5, 128),
        (3, 1, 64),
        (8, 2, 192),
        (1, 1, 256),
        (5, 3, 64),
    ] {
        let blocks = d / 32;
        let mut q8: Vec<i8> = data(rows * d, 61)
            .iter()
            .map(|x| (x * 128.0) as i8)
            .collect();
        q8[0] = i8::MIN;
        q8[d - 1] = i8::MAX;
        let codes: Vec<u8> = (0..chunks * int4::key_chunk_bytes(d))
            .map(|i| (i * 97 % 256) as u8)
            .collect();
        let st: Vec<f32> = data(rows * blocks, 62).iter().map(|x| x * 1e-3).collect();
        let bias = data(rows, 63);
        let m = chunks * 16;
        let mut want = vec![0f32; rows * m];
        dot_codes_generic(KeyDots {
            q8: &q8,
            codes: &codes,
            d,
            st: &st,
            bias: &bias,
            scale: 0.3,
            ahead: &[],
            out: &mut want,
        });
        for r in 0..rows {
            for tok in 0..m {
                let mut x = 0f32;
                for b in 0..blocks {
                    let dot: i32 = (32 * b..32 * b + 32)
                        .map(|c| {
                            let (at, shift) = int4::key_code_at(tok, c, d);
                            i32::from(q8[r * d + c]) * i32::from((codes[at] >> shift) & 15)
                        })
                        .sum();
                    let y = dot as f32 * st[r * blocks + b];
                    x = if b == 0 { y } else { x + y };
                }
                let spec = (x + bias[r]) * 0.3;
                assert_eq!(
                    want[r * m + tok].to_bits(),
                    spec.to_bits(),
                    "spec {r} {tok}"
                );
            }
        }
        for (name, f) in builds {
            let mut got = vec![7f32; want.len()];
            f(KeyDots {
                q8: &q8,
                codes: &codes,
                d,
                st: &st,
                bias: &bias,
                scale: 0.3,
                ahead: &codes,
                out: &mut got,
            });
            assert_eq!(got, want, "{name} {rows}x{chunks}x{d}");
        }
    }
}
