//! The fused head + cross-entropy against the composed path it replaces (candle's matmul for
//! the logits, then the fused cross-entropy, itself tested against candle's composed ops):
//! loss and the gradients of `h` and `W`, weighted and not, scaled logits, chunks that do not
//! divide the rows, a second backward, and the errors.

use super::*;
use crate::train::xent::tests::{targets, values};
use candle_core::{Device, Var};

/// Loss (times 0.5, so the upstream gradient is not 1) and the gradients of `h` and `W`.
fn value_and_grads(
    h: &[f32],
    w: &[f32],
    (n, c, v): (usize, usize, usize),
    f: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> (f32, Vec<f32>, Vec<f32>) {
    let hv = Var::from_vec(h.to_vec(), (n, c), &Device::Cpu).unwrap();
    let wv = Var::from_vec(w.to_vec(), (v, c), &Device::Cpu).unwrap();
    let loss = (f(hv.as_tensor(), wv.as_tensor()) * 0.5).unwrap();
    let grads = loss.backward().unwrap();
    let flat = |t: &Tensor| -> Vec<f32> {
        let g = grads.get(t).unwrap();
        g.flatten_all().unwrap().to_vec1().unwrap()
    };
    (
        loss.to_scalar::<f32>().unwrap(),
        flat(hv.as_tensor()),
        flat(wv.as_tensor()),
    )
}

/// `|a − b| <= 1e-4 · max |b|` element-wise (f32 sums in another order), the loss within 1e-5.
fn assert_close(what: &str, a: &(f32, Vec<f32>, Vec<f32>), b: &(f32, Vec<f32>, Vec<f32>)) {
    assert!(
        (a.0 - b.0).abs() <= 1e-5 * b.0.abs(),
        "{what}: loss {} vs {}",
        a.0,
        b.0
    );
    for (name, ga, gb) in [("dh", &a.1, &b.1), ("dW", &a.2, &b.2)] {
        let scale = gb.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{what}: {name} is all zero");
        for (i, (x, y)) in ga.iter().zip(gb).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * scale,
                "{what}: {name}[{i}]: {x} vs {y}"
            );
        }
    }
}

/// The composed path: candle's matmul for the logits, then the fused cross-entropy.
fn composed(h: &Tensor, w: &Tensor, t: &Tensor, wt: Option<&Tensor>, scale: f32) -> Tensor {
    let logits = (h.matmul(&w.t().unwrap()).unwrap() * f64::from(scale)).unwrap();
    super::super::xent::cross_entropy(&logits, t, wt).unwrap()
}

#[test]
fn matches_the_composed_head_and_loss() {
    for (n, c, v, chunk, scale, weighted) in [
        (1, 8, 5, None, 1.0, false),
        (37, 64, 1001, Some(8), 1.0, false),
        (70, 32, 300, Some(16), 0.25, true),
        (50, 16, 8014, None, 1.0, true),
    ] {
        let shape = (n, c, v);
        let h = values(n * c, n as u32, 2.0);
        let w = values(v * c, 7, 0.5);
        let t = targets(n, v);
        let wt: Option<Tensor> = weighted.then(|| {
            let m: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i % 3 != 1))).collect();
            Tensor::from_vec(m, n, &Device::Cpu).unwrap()
        });
        let fused = value_and_grads(&h, &w, shape, |h, w| {
            head_cross_entropy_chunked(h, w, &t, wt.as_ref(), scale, chunk).unwrap()
        });
        let reference =
            value_and_grads(&h, &w, shape, |h, w| composed(h, w, &t, wt.as_ref(), scale));
        assert_close(&format!("{n}×{c}×{v} chunk {chunk:?}"), &fused, &reference);
    }
}

/// Without tracked inputs the forward makes no gradients but gives the same loss; a second
/// backward recomputes what the first one took.
#[test]
fn untracked_forward_and_a_second_backward() {
    let (n, c, v) = (21, 16, 97);
    let h = values(n * c, 3, 1.0);
    let w = values(v * c, 5, 1.0);
    let t = targets(n, v);
    let ht = Tensor::from_vec(h.clone(), (n, c), &Device::Cpu).unwrap();
    let wt = Tensor::from_vec(w.clone(), (v, c), &Device::Cpu).unwrap();
    let plain = head_cross_entropy_chunked(&ht, &wt, &t, None, 1.0, Some(4)).unwrap();
    let hv = Var::from_vec(h, (n, c), &Device::Cpu).unwrap();
    let wv = Var::from_vec(w, (v, c), &Device::Cpu).unwrap();
    let loss =
        head_cross_entropy_chunked(hv.as_tensor(), wv.as_tensor(), &t, None, 1.0, Some(4)).unwrap();
    assert_eq!(
        plain.to_scalar::<f32>().unwrap(),
        loss.to_scalar::<f32>().unwrap()
    );
    let first = loss.backward().unwrap();
    let second = loss.backward().unwrap();
    for var in [&hv, &wv] {
        let a: Vec<f32> = first
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = second
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let h = Tensor::zeros((4, 8), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((10, 8), DType::F32, &dev).unwrap();
    let bad_w = Tensor::zeros((10, 7), DType::F32, &dev).unwrap();
    let t = Tensor::from_vec(vec![0u32, 1, 2, 3], 4, &dev).unwrap();
    let far = Tensor::from_vec(vec![0u32, 1, 10, 3], 4, &dev).unwrap();
    let none = Tensor::zeros(4, DType::F32, &dev).unwrap();
    let e = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert!(e(head_cross_entropy(&h, &bad_w, &t, None, 1.0)).contains("[V, C]"));
    assert!(e(head_cross_entropy(&h, &w, &far, None, 1.0)).contains("target 10"));
    assert!(e(head_cross_entropy(&h, &w, &t, Some(&none), 1.0)).contains("no position"));
    assert!(e(head_cross_entropy(
        &h,
        &w,
        &t.narrow(0, 0, 3).unwrap(),
        None,
        1.0
    ))
    .contains("other lengths"));
}
