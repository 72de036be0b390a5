//! The CPU kernels against the candle ops they replace (tolerances stated per test).

use super::*;
use candle_core::{Device, Tensor};

fn seeded(n: usize, seed: u64, a: f32) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |a − b| / max(max |b|, 1e-30).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn exp_is_within_two_ulps_of_std() {
    let mut worst = 0f32;
    for i in -870_000..=880_000 {
        let x = i as f32 * 1e-4;
        let (got, want) = (exp(x), x.exp());
        worst = worst.max((got - want).abs() / want);
    }
    assert!(
        worst <= 2.0 * f32::EPSILON,
        "worst relative error {worst:e}"
    );
    assert!(exp(-1e4) > 0.0 && exp(-1e4) < 1e-37);
    assert!(exp(1e4).is_finite());
    assert!(exp(f32::NAN).is_nan());
}

#[test]
fn matmul_matches_candle_on_strided_views() {
    // lhs: columns 3..3+k of a wider row-major matrix; rhs: the transpose of a row-major [n, k].
    let (m, k, n, wide) = (37, 70, 29, 80);
    let a = seeded(m * wide, 1, 1.0);
    let b = seeded(n * k, 2, 1.0);
    let acc = seeded(m * n, 3, 1.0);
    let lhs = Mat::rows(&a[3..], m, k, wide);
    let rhs = Mat::rows(&b, n, k, k).t();
    let ta = t(&a, &[m, wide]).narrow(1, 3, k).unwrap();
    let tb = t(&b, &[n, k]);
    let want = ta.matmul(&tb.t().unwrap()).unwrap();
    for par in [Parallelism::None, Parallelism::Rayon(2)] {
        let mut got = vec![f32::NAN; m * n];
        matmul(&mut got, n, lhs, rhs, false, 0.5, par).unwrap();
        assert!(rel(&got, &flat(&(&want * 0.5).unwrap())) <= 1e-6);
        let mut got = acc.clone();
        matmul(&mut got, n, lhs, rhs, true, 1.0, par).unwrap();
        let want = (&want + t(&acc, &[m, n])).unwrap();
        assert!(rel(&got, &flat(&want)) <= 1e-6);
    }
    let mut small = vec![0f32; m * n - 1];
    assert!(matmul(&mut small, n, lhs, rhs, false, 1.0, Parallelism::None).is_err());
    assert!(matmul(
        &mut vec![0f32; m * n],
        n,
        lhs,
        lhs,
        false,
        1.0,
        Parallelism::None
    )
    .is_err());
}

#[test]
fn softmax_matches_candle() {
    // Rows longer and shorter than 16, and with large logits.
    for (rows, n) in [(7, 196), (5, 13), (3, 16)] {
        let v: Vec<f32> = seeded(rows * n, 4, 30.0);
        let want = flat(&candle_nn::ops::softmax_last_dim(&t(&v, &[rows, n])).unwrap());
        let mut got = v.clone();
        softmax_rows(&mut got, n);
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-6, "({rows}, {n}): max |diff| {err:e}");
    }
}

#[test]
fn layer_norm_matches_candle() {
    let (rows, d) = (21, 40);
    let x: Vec<f32> = seeded(rows * d, 5, 3.0).iter().map(|v| v + 2.0).collect();
    let (w, b) = (seeded(d, 6, 1.5), seeded(d, 7, 0.5));
    let want =
        candle_nn::ops::layer_norm(&t(&x, &[rows, d]), &t(&w, &[d]), &t(&b, &[d]), 1e-6).unwrap();
    let mut got = vec![0f32; rows * d];
    layer_norm(&x, &w, &b, 1e-6, &mut got);
    let err = rel(&got, &flat(&want));
    assert!(err <= 1e-5, "relative {err:e}");
}

#[test]
fn bias_gelu_matches_candle() {
    let d = 500;
    let mut v: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.003).collect();
    v.extend([-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4, f32::MIN_POSITIVE]);
    v.resize(v.len().div_ceil(d) * d, 0.5);
    let rows = v.len() / d;
    let b = seeded(d, 8, 0.1);
    let want = flat(
        &t(&v, &[rows, d])
            .broadcast_add(&t(&b, &[d]))
            .unwrap()
            .gelu()
            .unwrap(),
    );
    let mut got = v.clone();
    bias_gelu_tanh(&mut got, &b);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
    }
}

#[test]
fn attention_matches_candle_ops() {
    let (images, n, heads, hd) = (2, 50, 3, 16);
    let d = heads * hd;
    let qkv = seeded(images * n * 3 * d, 9, 1.0);
    let mut got = vec![0f32; images * n * d];
    attention(&qkv, images, n, d, heads, &mut got).unwrap();
    // The candle-op formulation the fused path used before these kernels.
    let all = t(&qkv, &[images, n, 3 * d]);
    let split = |p: usize| {
        all.narrow(2, p * d, d)
            .unwrap()
            .reshape((images, n, heads, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let scores = (q.matmul(&k.t().unwrap()).unwrap() * (hd as f64).powf(-0.5)).unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    let want = probs
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((images, n, d))
        .unwrap();
    let err = rel(&got, &flat(&want));
    assert!(err <= 1e-5, "relative {err:e}");
    assert!(attention(&qkv, images, n, d + 1, heads, &mut got).is_err());
}
