//! Tests of `fused_x86`: each x86 build's element-wise steps against the generic spec.

use super::*;
use crate::attn::fused::Lanes;

/// What the element-wise operations of a build give on `x`, `y` (and `inv`).
type Ops = ([f32; 16], [f32; 16], [f32; 16], f32, [i8; 16], [u8; 16]);

#[inline(always)]
fn ops<V: V16>(x: &[f32; 16], y: &[f32; 16], inv: f32) -> Ops {
    let (a, b) = (V::load(x), V::load(y));
    let (mut m, mut mz, mut s) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    a.mul(b).store(&mut m);
    a.mul_nz(b).store(&mut mz);
    a.add(b).store(&mut s);
    let (mut q8, mut u8s) = ([0i8; 16], [0u8; 16]);
    a.store_q8(inv, &mut q8);
    a.store_u8(inv, &mut u8s);
    (m, mz, s, a.hmax(), q8, u8s)
}

#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn ops_z(x: &[f32; 16], y: &[f32; 16], inv: f32) -> Ops {
    ops::<Z>(x, y, inv)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ops_y(x: &[f32; 16], y: &[f32; 16], inv: f32) -> Ops {
    ops::<Y>(x, y, inv)
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn u8x4_z(x: &[f32; 64], inv: f32) -> [u8; 64] {
    let mut o = [0u8; 64];
    let v = [0, 1, 2, 3].map(|i| Z::load(&x[16 * i..]));
    Z::store_u8x4(v, inv, &mut o);
    o
}

/// The AVX-512 build's four-vector u8 rounding (`cvtps2dq` and saturating packs) equals
/// the spec's per-lane `round_u8` on ties, limits, overflow, infinities, NaN and zeros.
#[test]
fn packed_u8_rounding_equals_the_spec() {
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
        return;
    }
    let specials = [
        0.5,
        1.5,
        2.5,
        -0.5,
        126.5,
        127.5,
        253.5,
        254.5,
        255.0,
        255.4,
        255.5,
        256.0,
        300.0,
        -300.0,
        40000.0,
        70000.0,
        3e9,
        -3e9,
        1e30,
        f32::INFINITY,
        -f32::INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        1e-40,
        7.25,
        99.5,
        100.5,
    ];
    for shift in 0..specials.len() {
        let x: [f32; 64] = std::array::from_fn(|l| specials[(7 * l + shift) % specials.len()]);
        for inv in [1.0, 0.5, 2.0, 0.0, 255.0 / 300.0, f32::INFINITY] {
            let want: Vec<u8> = x
                .iter()
                .map(|&v| crate::attn::lanes::round_u8(v, inv))
                .collect();
            // SAFETY: the features were just detected.
            let got = unsafe { u8x4_z(&x, inv) };
            assert_eq!(got.to_vec(), want, "x {x:?} inv {inv}");
        }
    }
}

/// Bit patterns, so NaN lanes compare equal to themselves.
fn bits(o: &Ops) -> (Vec<u32>, u32, Vec<i32>) {
    let f = [o.0, o.1, o.2]
        .concat()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    let i = o.4.iter().map(|&v| i32::from(v));
    (
        f,
        o.3.to_bits(),
        i.chain(o.5.iter().map(|&v| v.into())).collect(),
    )
}

/// The rounding, zero-skipping, sums and lane maxima of both x86 builds equal the spec lane
/// for lane on ties, limits, infinities, NaN and signed zeros (the kernels' inputs cover
/// ordinary values only).
#[test]
fn vector_steps_equal_the_spec_on_special_values() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let specials = [
        0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, -127.5, 300.0, -300.0, 40000.0, -40000.0, inf,
        -inf, nan, 0.0, -0.0, 1e-40, -3.25, 7.0, 254.5, 255.5, 3e9, -3e9,
    ];
    let mut cases = Vec::new();
    for shift in 0..specials.len() {
        let x: [f32; 16] = std::array::from_fn(|l| specials[(l + shift) % specials.len()]);
        let y: [f32; 16] = std::array::from_fn(|l| specials[(3 * l + shift + 1) % specials.len()]);
        for inv in [1.0, 0.5, 2.0, 0.0, 127.0 / 300.0] {
            cases.push((x, y, inv));
        }
    }
    for (x, y, inv) in &cases {
        let want = bits(&ops::<Lanes<true>>(x, y, *inv));
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            let got = bits(&unsafe { ops_y(x, y, *inv) });
            assert_eq!(got, want, "avx2: x {x:?} y {y:?} inv {inv}");
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: as above.
                let got = bits(&unsafe { ops_z(x, y, *inv) });
                assert_eq!(got, want, "avx512: x {x:?} y {y:?} inv {inv}");
            }
        }
    }
}
