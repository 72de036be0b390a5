//! The document mask of packed training sequences against the documents run one by one: a
//! packed row's logits equal each document's logits alone, and the packed loss equals the mean
//! of the per-document next-token losses (padding excluded), computed by hand.

use super::*;
use crate::random::RandomSource;
use candle_core::{Device, Tensor};

fn tiny() -> Transformer {
    let mut cfg = Config::tritter_tiny();
    cfg.vocab_size = 40;
    cfg.hidden_size = 32;
    cfg.intermediate_size = 48;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.num_kv_heads = 1;
    cfg.head_dim = 16;
    let mut src = RandomSource::new(3, &Device::Cpu);
    Transformer::load(&cfg, &mut src, &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

fn max_rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let d = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    d / b.iter().flatten().map(|y| y.abs()).fold(0f32, f32::max)
}

/// `-log p(target)` of each row of `logits` (naive log-softmax).
fn nll(logits: &[Vec<f32>], targets: &[u32]) -> Vec<f64> {
    logits
        .iter()
        .zip(targets)
        .map(|(row, &t)| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            lse - row[t as usize] as f64
        })
        .collect()
}

#[test]
fn a_packed_row_equals_its_documents_run_alone() {
    let m = tiny();
    let dev = Device::Cpu;
    let (a, b, c) = (vec![5u32, 9, 2, 1], vec![7u32, 3, 8, 8, 1], vec![4u32, 6]);
    let ids: Vec<u32> = [a.clone(), b.clone(), c.clone()].concat();
    let docs: Vec<u32> = [vec![0u32; 4], vec![1; 5], vec![2; 2]].concat();
    let t = ids.len();
    let packed = m
        .forward_docs(
            &Tensor::from_slice(&ids, (1, t), &dev).unwrap(),
            &Tensor::from_slice(&docs, (1, t), &dev).unwrap(),
        )
        .unwrap();
    let packed = rows(&packed);
    let mut at = 0;
    for d in [&a, &b, &c] {
        let alone = m
            .forward(&Tensor::from_slice(d, (1, d.len()), &dev).unwrap())
            .unwrap();
        let e = max_rel(&packed[at..at + d.len()], &rows(&alone));
        assert!(e < 1e-5, "document at {at}: {e}");
        at += d.len();
    }
    // Without the mask the second document sees the first: the logits differ.
    let plain = rows(
        &m.forward(&Tensor::from_slice(&ids, (1, t), &dev).unwrap())
            .unwrap(),
    );
    assert!(max_rel(&plain[4..9], &packed[4..9]) > 1e-3);
}

#[test]
fn the_packed_loss_is_the_documents_next_token_loss_without_padding() {
    let m = tiny();
    let dev = Device::Cpu;
    let pad_doc = u32::MAX;
    // Two rows: [doc 0 | doc 1 | padding] and [doc 2 continuing | doc 3].
    let ids = [[5u32, 9, 2, 7, 3, 0, 0, 0], [8u32, 8, 1, 4, 6, 6, 2, 1]];
    let docs = [
        [0u32, 0, 0, 1, 1, pad_doc, pad_doc, pad_doc],
        [2u32, 2, 2, 3, 3, 3, 3, 3],
    ];
    let flat_ids: Vec<u32> = ids.iter().flatten().copied().collect();
    let flat_docs: Vec<u32> = docs.iter().flatten().copied().collect();
    let got = m
        .loss_docs(
            &Tensor::from_slice(&flat_ids, (2, 8), &dev).unwrap(),
            &Tensor::from_slice(&flat_docs, (2, 8), &dev).unwrap(),
            pad_doc,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    // By hand: every input position i < T-1 predicts ids[i+1] unless that target is padding;
    // its logits come from its own document's prefix run alone.
    let mut terms = vec![];
    for (row, drow) in ids.iter().zip(&docs) {
        for i in 0..7 {
            if drow[i + 1] == pad_doc {
                continue;
            }
            let start = (0..=i)
                .rev()
                .take_while(|&j| drow[j] == drow[i])
                .last()
                .unwrap();
            let prefix = &row[start..=i];
            let logits = m
                .forward(&Tensor::from_slice(prefix, (1, prefix.len()), &dev).unwrap())
                .unwrap();
            let last = rows(&logits).pop().unwrap();
            terms.extend(nll(&[last], &[row[i + 1]]));
        }
    }
    assert_eq!(terms.len(), 4 + 7);
    let want = terms.iter().sum::<f64>() / terms.len() as f64;
    assert!((got - want).abs() < 1e-4 * want.abs(), "{got} vs {want}");
    // All-padding targets are an error, not a NaN.
    let all_pad = vec![pad_doc; 16];
    let e = m
        .loss_docs(
            &Tensor::from_slice(&flat_ids, (2, 8), &dev).unwrap(),
            &Tensor::from_slice(&all_pad, (2, 8), &dev).unwrap(),
            pad_doc,
        )
        .unwrap_err();
    assert!(e.to_string().contains("no position to predict"), "{e}");
}
