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
            kc: vec![0; n * d / 2],
            km: vec![f16::ZERO; d],
            ks: vec![f16::ZERO; d],
            vc: vec![0; n * d / 2],
            vm: vec![f16::ZERO; n * g],
            vs: vec![f16::ZERO; n * g],
            vg,
            k: vec![0.0; n * d],
            v: vec![0.0; n * d],
        };
        int4::quantize_keys(&k, d, &mut t.kc, &mut t.km, &mut t.ks);
        int4::quantize_values(&v, d, vg, &mut t.vc, &mut t.vm, &mut t.vs);
        int4::dequantize_keys(&t.kc, d, &t.km, &t.ks, 0, &mut t.k, &mut Vec::new());
        int4::dequantize_values(&t.vc, d, vg, &t.vm, &t.vs, 0, &mut t.v);
        t
    }

    fn view(&self) -> Int4Tile<'_> {
        Int4Tile {
            kc: &self.kc,
            km: &self.km,
            ks: &self.ks,
            vc: &self.vc,
            vm: &self.vm,
            vs: &self.vs,
            vg: self.vg,
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

fn run_int4(k: &FusedKernels, rows: usize, t: &Tile, d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = t.kc.len() * 2 / d;
    let q = data(rows * d, 11);
    let mut s = vec![0f32; rows * n];
    let mut scratch = Int4Scratch::default();
    (k.scores_int4)(&q, &t.view(), d, 0.125, &mut s, &mut scratch);
    let p = probs(rows, n, 12);
    let mut acc = data(rows * d, 13);
    let mut accp = data(rows * d, 14);
    (k.accumulate_int4)(&p, &t.view(), d, &mut accp, &mut acc, &mut scratch);
    merge_values(&accp, &mut acc, d);
    (s, acc)
}

fn run_f16(k: &FusedKernels, rows: usize, n: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let q = data(rows * d, 21);
    let keys: Vec<f16> = data(n * d, 22).iter().map(|&x| f16::from_f32(x)).collect();
    let vals: Vec<f16> = data(n * d, 23).iter().map(|&x| f16::from_f32(x)).collect();
    let mut s = vec![0f32; rows * n];
    (k.scores_f16)(&q, &keys, d, 0.3, &mut s);
    let p = probs(rows, n, 24);
    let mut acc = data(rows * d, 25);
    (k.accumulate_f16)(&p, &vals, d, &mut acc);
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
            assert_eq!(
                run_int4(b, rows, &t, d),
                run_int4(&GENERIC_FMA, rows, &t, d),
                "{} int4 {rows}x{n}x{d}/{vg}",
                b.name
            );
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
                scores_f16::<Lanes<true>>(&q, &keys, d, 0.7, &mut s1);
                scores_generic::<true>(&q, &kf, d, 0.7, &mut s2);
                accumulate_f16::<Lanes<true>>(&p, &keys, d, &mut a1);
                accumulate_generic::<true>(&p, &kf, d, &mut a2);
            } else {
                scores_f16::<Lanes<false>>(&q, &keys, d, 0.7, &mut s1);
                scores_generic::<false>(&q, &kf, d, 0.7, &mut s2);
                accumulate_f16::<Lanes<false>>(&p, &keys, d, &mut a1);
                accumulate_generic::<false>(&p, &kf, d, &mut a2);
            }
            assert_eq!(s1, s2, "scores {rows}x{n}x{d} fma {fma}");
            assert_eq!(a1, a2, "accumulate {rows}x{n}x{d} fma {fma}");
        }
    }
}

#[test]
fn int4_kernels_equal_the_dequantised_product() {
    for (rows, n, d, vg) in SHAPES {
        let t = Tile::new(n, d, vg, 2);
        for k in [&GENERIC, kernels()] {
            let (s, acc) = run_int4(k, rows, &t, d);
            let q = data(rows * d, 11);
            let p = probs(rows, n, 12);
            let mut want = data(rows * d, 13);
            let accp0 = data(rows * d, 14);
            for r in 0..rows {
                for j in 0..n {
                    let dot: f64 = (0..d)
                        .map(|c| f64::from(q[r * d + c]) * f64::from(t.k[j * d + c]))
                        .sum();
                    // The i16 rounding of the scaled query costs at most S/2 per code unit.
                    let amax = (0..d)
                        .map(|c| (q[r * d + c] * t.ks[c].to_f32()).abs())
                        .fold(0f32, f32::max);
                    let codes: f64 = (0..d)
                        .map(|c| f64::from((t.kc[j * d / 2 + c / 2] >> (4 * (c % 2))) & 15))
                        .sum();
                    let bound = 0.125 * f64::from(amax) / 32767.0 / 2.0 * codes;
                    let got = f64::from(s[r * n + j]);
                    let e = (got - dot * 0.125).abs();
                    assert!(e < bound + 2e-5 * (1.0 + dot.abs()), "score {e} > {bound}");
                }
                // The i16 rounding of the weights p · step costs at most S/2 per code unit.
                let wmax = (0..n)
                    .flat_map(|j| (0..d / vg).map(move |g| (j, g)))
                    .map(|(j, g)| p[r * n + j] * t.vs[j * (d / vg) + g].to_f32())
                    .fold(0f32, f32::max);
                for c in 0..d {
                    let perm = crate::attn::fused_int4_values::vpos(d, c);
                    let sum: f64 = (0..n)
                        .map(|j| f64::from(p[r * n + j]) * f64::from(t.v[j * d + c]))
                        .sum();
                    let codes: f64 = (0..n)
                        .map(|j| f64::from((t.vc[j * d / 2 + c / 2] >> (4 * (c % 2))) & 15))
                        .sum();
                    let bound = f64::from(wmax) / 32767.0 / 2.0 * codes;
                    let w = f64::from(want[r * d + c]) + f64::from(accp0[r * d + perm]) + sum;
                    want[r * d + c] = w as f32;
                    let e = (f64::from(acc[r * d + c]) - w).abs();
                    let tol = bound + 2e-5 * (1.0 + w.abs());
                    assert!(e < tol, "{} value {r} {c}: {e} > {bound}", k.name);
                }
            }
        }
    }
}

/// The SIMD integer value sums equal the portable ones exactly, over the whole i16 range of
/// weights (negative too), odd token counts and head sizes with a trailing 32-byte chunk.
#[cfg(target_arch = "x86_64")]
#[test]
fn value_codes_equal_the_portable_sums() {
    use crate::attn::fused_int4_values::{value_codes_generic, ValueCodes, WEIGHT_PAD};
    use crate::attn::fused_x86_int4::{values_256, values_512};
    // values_512 runs the VNNI kernel where the CPU has it (else the AVX2 one again).
    let builds: [(&str, ValueCodes); 2] = [("256", values_256), ("512", values_512)];
    for (rows, n, d, vg) in [
        (4usize, 64usize, 128usize, 64usize),
        (3, 5, 64, 32),
        (5, 8, 192, 64),
        (1, 1, 256, 32),
    ] {
        let per_row = (n + n % 2) * (d / vg);
        let mut wq: Vec<i16> = data(rows * per_row, 51)
            .iter()
            .map(|x| (x * 32767.0) as i16)
            .collect();
        wq[0] = i16::MIN + 1;
        wq.resize(rows * per_row + WEIGHT_PAD, 0);
        let codes: Vec<u8> = data(n * d / 2, 52)
            .iter()
            .map(|x| (x.abs() * 256.0) as u8)
            .collect();
        let mut want = vec![0i32; rows * d];
        value_codes_generic(&wq, &codes, d, vg, &mut want);
        for (name, f) in builds {
            let mut got = vec![7i32; rows * d];
            f(&wq, &codes, d, vg, &mut got);
            assert_eq!(got, want, "{name} {rows}x{n}x{d}/{vg}");
        }
    }
}

/// The vectorisable rounding equals the rounded, clamped cast it replaces (`round_q16`'s
/// docs), on ties, near-ties, both bounds, beyond them, infinities and NaN.
#[test]
fn round_q16_equals_the_clamped_cast() {
    use crate::attn::fused_int4::{round_q16, Q16, ROUND};
    let spec = |x: f32, inv: f32| (((x * inv) + ROUND) - ROUND).clamp(-Q16, Q16) as i16;
    let mut xs = vec![
        0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 32766.5, -32766.5,
    ];
    xs.extend([
        Q16,
        -Q16,
        32767.5,
        40000.0,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    xs.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 3.37 + 0.5));
    for &inv in &[1.0f32, 0.37, 2.0, 1e-3] {
        for &x in &xs {
            assert_eq!(round_q16(x, inv), spec(x, inv), "x = {x}, inv = {inv}");
        }
    }
}

/// The SIMD integer key dots equal the portable ones exactly, over the whole i16 range of the
/// query and every code byte, for key counts that are and are not multiples of the four-key pass.
#[cfg(target_arch = "x86_64")]
#[test]
fn dot_codes_equal_the_portable_dots() {
    use crate::attn::fused_int4::{dot_codes_generic, DotCodes};
    use crate::attn::fused_x86_int4::{dot_256, dot_512};
    // dot_512 runs the VNNI kernel where the CPU has it (else the AVX2 one again).
    let builds: [(&str, DotCodes); 2] = [("256", dot_256), ("512", dot_512)];
    for (rows, n, d) in [
        (4usize, 64usize, 128usize),
        (4, 67, 128),
        (3, 5, 64),
        (8, 3, 192),
        (1, 1, 256),
        (5, 9, 64),
    ] {
        let mut qi: Vec<i16> = data(rows * d, 61)
            .iter()
            .map(|x| (x * 32767.0) as i16)
            .collect();
        qi[0] = i16::MIN + 1;
        qi[d - 1] = i16::MAX;
        let codes: Vec<u8> = (0..n * d / 2).map(|i| (i * 97 % 256) as u8).collect();
        let mut want = vec![0i32; rows * n];
        dot_codes_generic(&qi, &codes, d, &mut want);
        for (name, f) in builds {
            let mut got = vec![7i32; rows * n];
            f(&qi, &codes, d, &mut got);
            assert_eq!(got, want, "{name} {rows}x{n}x{d}");
        }
    }
}
