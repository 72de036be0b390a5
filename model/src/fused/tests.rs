//! The fused ops against the composed candle ops they replace (the specification), on random
//! inputs of odd shapes with all-zero rows, exact zeros and rounding ties: forward values bit
//! for bit where the arithmetic is the same (quantisers, ReLU²) and to 1e-6 relative for RMSNorm,
//! gradients through `Var` + `backward()` of `(y · r).sum()` bit for bit for the STE and ReLU²
//! and to 1e-5 relative for RMSNorm.

use super::*;
use crate::norm::RmsNorm;
use crate::quant;
use candle_core::{DType, Device, Tensor, Var};

/// Deterministic values in `[-scale, scale)` (an LCG).
fn vals(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `x` `[.., cols]` with row 1 all zeros, and, when `cols ≥ 8`, row 2 of rounding ties for the
/// per-token quantiser (absmax 127: the scale is 1, the values land on .5).
fn with_zero_and_tie_rows(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let cols = *shape.last().unwrap();
    let mut v = vals(n, seed, 3.0);
    if n >= 2 * cols {
        v[cols..2 * cols].fill(0.0);
    }
    if n >= 3 * cols && cols >= 8 {
        let ties = [127.0f32, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -127.0];
        v[2 * cols..2 * cols + 8].copy_from_slice(&ties);
        for (i, x) in v[2 * cols + 8..3 * cols].iter_mut().enumerate() {
            *x = i as f32 - 0.5 * (i % 3) as f32;
        }
    }
    if n > 5 {
        v[n - 1] = 0.0;
        v[n - 2] = -0.0;
    }
    tensor(v, shape)
}

/// Gradients of `(f(a) · r).sum()` with respect to `a`.
fn grad1(x: &Tensor, r: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let v = Var::from_tensor(x).unwrap();
    let loss = (f(v.as_tensor()) * r).unwrap().sum_all().unwrap();
    loss.backward().unwrap().get(v.as_tensor()).unwrap().clone()
}

/// Gradients of `(f(a, b) · r).sum()` with respect to `a` and `b`.
fn grad2(
    a: &Tensor,
    b: &Tensor,
    r: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> (Tensor, Tensor) {
    let (va, vb) = (Var::from_tensor(a).unwrap(), Var::from_tensor(b).unwrap());
    let loss = (f(va.as_tensor(), vb.as_tensor()) * r)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    (
        g.get(va.as_tensor()).unwrap().clone(),
        g.get(vb.as_tensor()).unwrap().clone(),
    )
}

fn assert_same(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (flat(got), flat(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            a == b || (a.is_nan() && b.is_nan()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

/// `|a − b| ≤ tol · max_row |b|` for each row of `cols` values: relative to the row's largest
/// value, since elements that are differences of near-equal terms (RMSNorm's `dx`) carry the
/// rounding of those terms, not of their own size.
fn assert_close(got: &Tensor, want: &Tensor, cols: usize, tol: f32, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (flat(got), flat(want));
    for (r, (gr, wr)) in g.chunks(cols).zip(w.chunks(cols)).enumerate() {
        let big = wr.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in gr.iter().zip(wr).enumerate() {
            assert!(
                (a - b).abs() <= tol * big,
                "{what}[{r}, {i}]: {a} vs {b} (row max {big})"
            );
        }
    }
}

/// RMSNorm's `dx` in f64 (the textbook formula) for rows of `g.len()` values.
fn rms_dx_f64(x: &[f32], g: &[f32], dy: &[f32], eps: f64) -> Vec<f32> {
    let c = g.len();
    let mut out = Vec::with_capacity(x.len());
    for (xr, dr) in x.chunks(c).zip(dy.chunks(c)) {
        let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        let dot: f64 = (0..c)
            .map(|i| dr[i] as f64 * g[i] as f64 * xr[i] as f64)
            .sum();
        for i in 0..c {
            let u = dr[i] as f64 * g[i] as f64;
            out.push((inv * u - xr[i] as f64 * inv.powi(3) * dot / c as f64) as f32);
        }
    }
    out
}

const SHAPES: [&[usize]; 5] = [&[3, 5, 37], &[4, 1], &[7], &[3, 41, 200], &[2, 9, 256]];

#[test]
fn act_quant_ste_is_the_composed_op_bit_for_bit() {
    for (k, shape) in SHAPES.iter().enumerate() {
        let x = with_zero_and_tie_rows(shape, 11 + k as u64);
        let got = quant::act_quant_ste(&x).unwrap();
        let want = quant::act_quant_ste_composed(&x).unwrap();
        assert_same(&got, &want, &format!("act_quant {shape:?}"));
        let r = tensor(vals(x.elem_count(), 5, 1.0), shape);
        let gg = grad1(&x, &r, |t| act_quant_ste(t).unwrap());
        let gw = grad1(&x, &r, |t| quant::act_quant_ste_composed(t).unwrap());
        assert_same(&gg, &gw, "act_quant grad");
        assert_same(&gg, &r, "act_quant grad is the identity");
    }
}

#[test]
fn weight_quant_ste_is_the_composed_op_bit_for_bit() {
    // Mean |w| = 1: the scale is 1 and ±0.5 / ±1.5 are rounding ties.
    let ties = tensor(
        vec![0.5, -0.5, 1.5, -1.5, 0.0, 1.0, -1.0, 3.0, -3.0, 0.0],
        &[2, 5],
    );
    let mut cases = vec![ties, tensor(vec![0.0; 6], &[2, 3])];
    for (k, shape) in SHAPES.iter().enumerate() {
        cases.push(with_zero_and_tie_rows(shape, 23 + k as u64));
    }
    for w in cases {
        let got = quant::weight_quant_ste(&w).unwrap();
        let want = quant::weight_quant_ste_composed(&w).unwrap();
        assert_same(&got, &want, &format!("weight_quant {:?}", w.dims()));
        let r = tensor(vals(w.elem_count(), 7, 1.0), w.dims());
        let gg = grad1(&w, &r, |t| weight_quant_ste(t).unwrap());
        let gw = grad1(&w, &r, |t| quant::weight_quant_ste_composed(t).unwrap());
        assert_same(&gg, &gw, "weight_quant grad");
    }
}

#[test]
fn rms_norm_matches_the_composed_op_forward_and_gradients() {
    // Rows of one value are left out: there `dx = g·eps/(x² + eps)^1.5` is the difference of
    // two terms ~1e6 times larger, so any two f32 orders of evaluation differ in the 3rd digit.
    for (k, shape) in SHAPES
        .iter()
        .enumerate()
        .filter(|(_, s)| s[s.len() - 1] > 1)
    {
        let x = with_zero_and_tie_rows(shape, 31 + k as u64);
        let c = *shape.last().unwrap();
        let g = tensor(vals(c, 37 + k as u64, 1.5), &[c]);
        let n = RmsNorm::new(g.clone(), 1e-5);
        let got = n.forward(&x).unwrap();
        let want = n.forward_composed(&x).unwrap();
        assert_close(&got, &want, c, 1e-6, &format!("rms fwd {shape:?}"));
        let r = tensor(vals(x.elem_count(), 41, 1.0), shape);
        let (dx, dg) = grad2(&x, &g, &r, |x, g| rms_norm(x, g, 1e-5).unwrap());
        let (wx, wg) = grad2(&x, &g, &r, |x, g| {
            RmsNorm::new(g.clone(), 1e-5).forward_composed(x).unwrap()
        });
        assert_close(&dx, &wx, c, 1e-5, &format!("rms dx {shape:?}"));
        assert_close(&dg, &wg, c, 1e-5, &format!("rms dg {shape:?}"));
        // Both against the formula in f64: the fused form is as accurate as the composed one.
        let exact = tensor(rms_dx_f64(&flat(&x), &flat(&g), &flat(&r), 1e-5), shape);
        assert_close(&dx, &exact, c, 1e-6, "rms dx vs f64");
        assert_close(&wx, &exact, c, 1e-6, "composed rms dx vs f64");
    }
}

#[test]
fn relu2_ops_are_the_composed_ops_bit_for_bit() {
    for (k, shape) in SHAPES.iter().enumerate() {
        let g = with_zero_and_tie_rows(shape, 51 + k as u64);
        let u = tensor(vals(g.elem_count(), 53 + k as u64, 2.0), shape);
        let r = tensor(vals(g.elem_count(), 57, 1.0), shape);
        let composed1 = |x: &Tensor| x.relu().unwrap().sqr().unwrap();
        assert_same(&relu2(&g).unwrap(), &composed1(&g), "relu2 fwd");
        let (dg, dw) = (
            grad1(&g, &r, |x| relu2(x).unwrap()),
            grad1(&g, &r, composed1),
        );
        assert_same(&dg, &dw, "relu2 grad");
        let composed2 = |g: &Tensor, u: &Tensor| (composed1(g) * u).unwrap();
        let got = gated_relu2(&g, &u).unwrap();
        assert_same(&got, &composed2(&g, &u), "gated relu2 fwd");
        let (fg, fu) = grad2(&g, &u, &r, |g, u| gated_relu2(g, u).unwrap());
        let (cg, cu) = grad2(&g, &u, &r, composed2);
        assert_same(&fg, &cg, "gated relu2 d gate");
        assert_same(&fu, &cu, "gated relu2 d up");
    }
}

/// Tensors the fused ops do not take (bf16, strided) keep the composed path, and the fused
/// wrappers refuse them rather than misread them.
#[test]
fn other_tensors_keep_the_composed_ops() {
    let x = with_zero_and_tie_rows(&[6, 10], 3);
    let xt = x.t().unwrap();
    assert!(!applies(&xt));
    assert_same(
        &quant::act_quant_ste(&xt).unwrap(),
        &quant::act_quant_ste_composed(&xt).unwrap(),
        "strided",
    );
    let composed = (xt.relu().unwrap().sqr().unwrap() * &xt).unwrap();
    assert_same(
        &gated_relu2_or_composed(&xt, &xt).unwrap(),
        &composed,
        "strided gated",
    );
    let xb = x.to_dtype(DType::BF16).unwrap();
    assert!(!applies(&xb));
    assert!(act_quant_ste(&xb).is_err());
    assert!(weight_quant_ste(&xt).is_err());
    assert!(relu2(&xb).is_err());
    let g = Tensor::ones(10, DType::F32, &Device::Cpu).unwrap();
    assert!(rms_norm(&xb, &g, 1e-5).is_err());
    assert!(rms_norm(&x, &g.narrow(0, 0, 9).unwrap(), 1e-5).is_err());
    assert!(gated_relu2(&x, &xt.contiguous().unwrap()).is_err());
    let n = RmsNorm::new(g, 1e-5);
    let (a, b) = (n.forward(&xb).unwrap(), n.forward_composed(&xb).unwrap());
    assert_eq!(a.dtype(), DType::BF16);
    assert_same(
        &a.to_dtype(DType::F32).unwrap(),
        &b.to_dtype(DType::F32).unwrap(),
        "bf16 rms",
    );
}

/// The composed BitLinear product the fused op replaces (the specification).
fn bitlinear_composed(x: &Tensor, w: &Tensor) -> Tensor {
    let xq = quant::act_quant_ste_composed(x).unwrap();
    let wq = quant::weight_quant_ste_composed(w).unwrap();
    xq.broadcast_matmul(&wq.t().unwrap()).unwrap()
}

/// Forward within f32 rounding of the composed sums (the fused sum is exact in integers) and
/// both gradients within the rounding of the matmuls' summation order, on odd shapes (partial
/// panels and blocks of the packed weights), an all-zero row and rounding ties.
#[test]
fn bitlinear_matches_the_composed_ops() {
    for (i, &(xs, n)) in [
        (&[3usize, 5, 37][..], 45usize),
        (&[4, 1], 3),
        (&[2, 41, 200], 70),
    ]
    .iter()
    .enumerate()
    {
        let k = *xs.last().unwrap();
        let x = with_zero_and_tie_rows(xs, 21 + i as u64);
        let w = tensor(vals(n * k, 31 + i as u64, 0.05), &[n, k]);
        let got = bitlinear(&x, &w).unwrap();
        let want = bitlinear_composed(&x, &w);
        assert_close(&got, &want, n, 2e-6, &format!("bitlinear {xs:?}×{n}"));
        let mut os = xs.to_vec();
        *os.last_mut().unwrap() = n;
        let r = tensor(vals(x.elem_count() / k * n, 7, 1.0), &os);
        let (gx, gw) = grad2(&x, &w, &r, |a, b| bitlinear(a, b).unwrap());
        let (wx, ww) = grad2(&x, &w, &r, bitlinear_composed);
        assert_close(&gx, &wx, k, 1e-5, "bitlinear dx");
        assert_close(&gw, &ww, k, 1e-5, "bitlinear dw");
    }
}

/// The integer forward is the exact product of the quantised operands: against an f64 sum of
/// the codes, one rounding.
#[test]
fn bitlinear_forward_is_the_exact_quantised_product() {
    let (m, k, n) = (6, 70, 20);
    let x = with_zero_and_tie_rows(&[m, k], 3);
    let w = tensor(vals(n * k, 4, 0.1), &[n, k]);
    let (xq, sx) = quant::act_quant(&x).unwrap();
    let (wq, sw) = quant::ternarize(&w).unwrap();
    let (xq, sx, wq) = (flat(&xq), flat(&sx), flat(&wq));
    let got = flat(&bitlinear(&x, &w).unwrap());
    for r in 0..m {
        for c in 0..n {
            let acc: f64 = (0..k)
                .map(|j| f64::from(xq[r * k + j]) * f64::from(wq[c * k + j]))
                .sum();
            let want = acc / (f64::from(sx[r]) * f64::from(sw));
            let g = f64::from(got[r * n + c]);
            assert!(
                (g - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "({r},{c}): {g} vs {want}"
            );
        }
    }
}
