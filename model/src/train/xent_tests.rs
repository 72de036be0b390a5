//! The fused cross-entropy against the composed candle ops: values and logits gradients,
//! weighted and unweighted, odd row counts and vocabularies (not multiples of the 16 lanes).

use super::*;
use crate::transformer::{cross_entropy_composed, cross_entropy_weighted_composed};
use candle_core::{Device, Var};

/// Deterministic values spread over about ±`spread` (also used by `head_xent`'s tests).
pub(in crate::train) fn values(len: usize, seed: u32, spread: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (h as f32 / 16_777_216.0 - 0.5) * 2.0 * spread
        })
        .collect()
}

/// Targets `[n]` spread over the vocabulary `v` (also used by `head_xent`'s tests).
pub(in crate::train) fn targets(n: usize, v: usize) -> Tensor {
    let t: Vec<u32> = (0..n).map(|i| ((i * 7919 + 3) % v) as u32).collect();
    Tensor::from_vec(t, n, &Device::Cpu).unwrap()
}

/// Loss and logits gradient of `f` at `x` (`[n, v]`).
fn value_and_grad(x: &[f32], n: usize, v: usize, f: impl Fn(&Tensor) -> Tensor) -> (f32, Vec<f32>) {
    let var = Var::from_vec(x.to_vec(), (n, v), &Device::Cpu).unwrap();
    // Scale the loss as the trainer does with gradient accumulation, so `g` ≠ 1 is covered.
    let loss = (f(var.as_tensor()) * 0.5).unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(var.as_tensor()).unwrap();
    (
        loss.to_scalar::<f32>().unwrap(),
        g.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

/// Element-wise `|a − b| <= tol · |b| + floor`, and relative on the value.
fn assert_close(what: &str, (va, ga): (f32, Vec<f32>), (vb, gb): (f32, Vec<f32>)) {
    assert!(
        (va - vb).abs() <= 1e-5 * vb.abs(),
        "{what}: loss {va} vs {vb}"
    );
    let scale = gb.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs() + 1e-7 * scale,
            "{what}: gradient {i}: {a} vs {b}"
        );
    }
}

#[test]
fn unweighted_matches_the_composed_ops() {
    for (n, v, spread) in [(1, 1, 1.0), (3, 17, 4.0), (37, 1001, 8.0), (64, 8014, 20.0)] {
        let x = values(n * v, n as u32, spread);
        let t = targets(n, v);
        let fused = value_and_grad(&x, n, v, |l| cross_entropy(l, &t, None).unwrap());
        let composed = value_and_grad(&x, n, v, |l| cross_entropy_composed(l, &t).unwrap());
        assert_close(&format!("{n}×{v}"), fused, composed);
    }
}

#[test]
fn weighted_matches_the_composed_ops() {
    for (n, v) in [(5, 33), (29, 515), (41, 8014)] {
        let x = values(n * v, 7, 6.0);
        let t = targets(n, v);
        let w: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i % 3 != 1))).collect();
        let w = Tensor::from_vec(w, n, &Device::Cpu).unwrap();
        let fused = value_and_grad(&x, n, v, |l| cross_entropy(l, &t, Some(&w)).unwrap());
        let composed = value_and_grad(&x, n, v, |l| {
            cross_entropy_weighted_composed(l, &t, &w).unwrap()
        });
        // Rows of weight 0 get no gradient.
        assert!(fused.1[v..2 * v].iter().all(|&x| x == 0.0));
        assert_close(&format!("weighted {n}×{v}"), fused, composed);
    }
}

#[test]
fn the_public_losses_dispatch_to_the_fused_op_on_cpu_f32() {
    let (n, v) = (9, 70);
    let x = Tensor::from_vec(values(n * v, 3, 5.0), (n, v), &Device::Cpu).unwrap();
    let t = targets(n, v);
    assert!(fits(&x));
    let a = crate::transformer::cross_entropy(&x, &t).unwrap();
    let b = cross_entropy(&x, &t, None).unwrap();
    assert_eq!(a.to_scalar::<f32>().unwrap(), b.to_scalar::<f32>().unwrap());
    // bf16 and non-contiguous logits take the composed ops.
    assert!(!fits(&x.to_dtype(DType::BF16).unwrap()));
    assert!(!fits(&x.t().unwrap()));
    let bf = crate::transformer::cross_entropy(&x.to_dtype(DType::BF16).unwrap(), &t).unwrap();
    let want = b.to_scalar::<f32>().unwrap();
    assert!((bf.to_scalar::<f32>().unwrap() - want).abs() < 0.05 * want);
}

#[test]
fn errors_instead_of_reading_outside_the_row() {
    let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
    let e = cross_entropy(&x, &t, None).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    let w = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    let e = crate::transformer::cross_entropy_weighted(&x, &t, &w).unwrap_err();
    assert!(e.to_string().contains("no position to predict"), "{e}");
}

#[test]
fn uniform_logits_give_log_v() {
    // An independent check: equal logits are a uniform distribution, loss ln V, gradient
    // 1/V − onehot over N.
    let (n, v) = (3, 100);
    let var = Var::from_vec(vec![0.25f32; n * v], (n, v), &Device::Cpu).unwrap();
    let t = targets(n, v);
    let loss = cross_entropy(var.as_tensor(), &t, None).unwrap();
    let l = loss.to_scalar::<f32>().unwrap();
    assert!((l - (v as f32).ln()).abs() < 1e-5, "{l}");
    let g = loss.backward().unwrap();
    let g: Vec<f32> = g
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let tv: Vec<u32> = t.to_vec1().unwrap();
    for (i, x) in g.iter().enumerate() {
        let hot = if tv[i / v] as usize == i % v {
            1.0
        } else {
            0.0
        };
        let want = (1.0 / v as f32 - hot) / n as f32;
        assert!((x - want).abs() < 1e-7, "{i}: {x} vs {want}");
    }
}
