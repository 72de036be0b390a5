//! The fused training attention against the composed candle attention the layer runs elsewhere
//! (outputs within 1e-5, gradients of q, k and v within 1e-4 relative), and its mask
//! description against `attn::packed::blocked_row` and the layer's built-in mask.

use candle_core::{Device, Tensor, Var};

use super::*;
use crate::attn::packed::blocked_row;

fn data(n: usize, seed: u64) -> Vec<f32> {
    crate::attn::flash::tests::rand_vec(n, seed)
}

/// Two packed rows of `t` positions: documents of uneven lengths, prefixes flagged in some.
fn docs_and_flags(t: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let cuts = [[t / 5, t / 2, t - 3], [1, t / 3, t / 3 + 2]];
    let docs: Vec<Vec<u32>> = cuts
        .iter()
        .map(|c| {
            (0..t)
                .map(|i| c.iter().filter(|&&x| i >= x).count() as u32 + 10)
                .collect()
        })
        .collect();
    let flags = docs
        .iter()
        .map(|d| {
            (0..t)
                .map(|i| {
                    let start = d.iter().position(|&x| x == d[i]).unwrap_or(0);
                    if i - start < 4 && d[i] % 2 == 0 {
                        FLAG_PREFIX
                    } else {
                        1
                    }
                })
                .collect()
        })
        .collect();
    (docs, flags)
}

const MODES: [AttentionMode; 4] = AttentionMode::ALL;
const BANDS: [(usize, usize); 5] = [(0, 0), (3, 0), (5, 2), (8, 4), (200, 4)];

#[test]
fn packed_masks_equal_blocked_rows() {
    let t = 41;
    let (docs, flags) = docs_and_flags(t);
    for mode in MODES {
        for (window, sinks) in BANDS {
            let spec = PackedSpec {
                mode,
                window,
                sinks,
            };
            let m = TrainMask::packed(spec, &docs, &flags).unwrap();
            for b in 0..2 {
                let want = blocked_row(&docs[b], &flags[b], spec).unwrap();
                for q in 0..t {
                    for k in 0..t {
                        let hidden = want[q * t + k] == 1;
                        assert_eq!(m.allowed(b, q, k), !hidden, "{spec:?} b{b} q{q} k{k}");
                    }
                }
            }
        }
    }
}

#[test]
fn single_masks_equal_the_builtin_mask() {
    for t in [1usize, 6, 37] {
        for causal in [true, false] {
            for (window, sinks) in BANDS {
                let mode = match causal {
                    true => AttentionMode::Causal,
                    false => AttentionMode::Bidirectional,
                };
                let m = TrainMask::single(mode, window, sinks, t).unwrap();
                let builtin = builtin_mask(causal, window, sinks, t, t)
                    .transpose()
                    .unwrap();
                for q in 0..t {
                    for k in 0..t {
                        let hidden = builtin.as_ref().is_some_and(|b| b[q * t + k] == 1);
                        assert_eq!(m.allowed(0, q, k), !hidden, "{mode:?} w{window} q{q} k{k}");
                    }
                }
            }
        }
    }
    let bad = TrainMask::single(AttentionMode::Causal, 4, 4, 9).unwrap_err();
    assert!(bad.to_string().contains("sinks"), "{bad}");
}

/// One case: shape and mask, checked for output and gradients against the composed ops.
struct Case {
    b: usize,
    h: usize,
    hkv: usize,
    t: usize,
    d: usize,
    mask: TrainMask,
    name: String,
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn run(case: &Case, seed: u64) {
    let dev = Device::Cpu;
    let Case {
        b, h, hkv, t, d, ..
    } = *case;
    let var = |n: usize, hh: usize, s: u64| {
        Var::from_tensor(&Tensor::from_vec(data(n, s), (b, hh, t, d), &dev).unwrap()).unwrap()
    };
    let (q, k, v) = (
        var(b * h * t * d, h, seed),
        var(b * hkv * t * d, hkv, seed + 1),
        var(b * hkv * t * d, hkv, seed + 2),
    );
    let r = Tensor::from_vec(data(b * h * t * d, seed + 3), (b, h, t, d), &dev).unwrap();
    let scale = 1.0 / (d as f64).sqrt() * 1.7;
    let fused = attention(&q, &k, &v, scale, &case.mask).unwrap();
    let blocked = case.mask.blocked(b, &dev).unwrap();
    let composed = composed_attention(&q, &k, &v, scale, None, Some(&blocked)).unwrap();
    let diff = max_abs(&(&fused - &composed).unwrap());
    assert!(diff <= 1e-5, "{}: output differs by {diff}", case.name);
    let gf = (&fused * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gc = (&composed * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
        let (a, c) = (gf.get(x).unwrap(), gc.get(x).unwrap());
        let rel = max_abs(&(a - c).unwrap()) / max_abs(c).max(1e-20);
        assert!(
            rel <= 1e-4,
            "{}: d{name} differs by {rel} (relative)",
            case.name
        );
    }
}

fn cases() -> Vec<Case> {
    let mut out = vec![];
    for (t, rep) in [(37usize, 1usize), (37, 2), (70, 2), (129, 1), (150, 2)] {
        let (h, hkv, b, d) = (2 * rep, 2, 2, 16);
        let mut push = |mask: TrainMask, name: String| {
            out.push(Case {
                b,
                h,
                hkv,
                t,
                d,
                mask,
                name: format!("{name} T{t} rep{rep}"),
            })
        };
        for (mode, window, sinks) in [
            (AttentionMode::Causal, 0, 0),
            (AttentionMode::Causal, 24, 4),
            (AttentionMode::Causal, 9, 0),
            (AttentionMode::Bidirectional, 0, 0),
            (AttentionMode::Bidirectional, 20, 3),
        ] {
            let m = TrainMask::single(mode, window, sinks, t).unwrap();
            push(m, format!("{mode:?} w{window} s{sinks}"));
        }
        let (docs, flags) = docs_and_flags(t);
        for (mode, window, sinks) in [
            (AttentionMode::Causal, 0, 0),
            (AttentionMode::PrefixLm, 0, 0),
            (AttentionMode::Causal, 12, 2),
        ] {
            let spec = PackedSpec {
                mode,
                window,
                sinks,
            };
            let m = TrainMask::packed(spec, &docs, &flags).unwrap();
            push(m, format!("packed {mode:?} w{window} s{sinks}"));
        }
    }
    out
}

#[test]
fn the_fused_op_equals_the_composed_attention_and_its_gradients() {
    for (i, case) in cases().iter().enumerate() {
        run(case, 100 + 7 * i as u64);
    }
}

#[test]
fn the_op_rejects_what_it_does_not_run() {
    let dev = Device::Cpu;
    let q = Tensor::zeros((1, 2, 5, 4), DType::F32, &dev).unwrap();
    let m = TrainMask::single(AttentionMode::Causal, 0, 0, 6).unwrap();
    assert!(
        attention(&q, &q, &q, 0.5, &m).is_err(),
        "a mask of another length"
    );
    let h = q.to_dtype(DType::BF16).unwrap();
    let m = TrainMask::single(AttentionMode::Causal, 0, 0, 5).unwrap();
    assert!(attention(&h, &h, &h, 0.5, &m).is_err(), "bf16");
    let k = Tensor::zeros((1, 3, 5, 4), DType::F32, &dev).unwrap();
    assert!(
        attention(&q, &k, &k, 0.5, &m).is_err(),
        "2 query heads over 3 kv heads"
    );
}
