//! Instruction tuning's training forward against the inference path (`CpuModel`, fused attention
//! over KV caches; its mask from `MaskSpec`): a golden checkpoint with `attention_mode =
//! prefix_lm` (and a sliding window) gives the same logits for a prompt prefilled and a reply
//! decoded token by token as the training forward over the same sequence with its prefix flags;
//! a packed row of two examples and padding gives each example's inference logits, and its loss
//! is the mean next-token loss of the reply tokens computed from those logits by hand. The
//! unpacked causal forward applies the window too.

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tritter_model::data::chat::{FLAG_PREFIX, FLAG_TARGET};
use tritter_model::{load_model, CpuModel, Transformer};

/// The golden `packed_tied_gqa` checkpoint with `attention_mode` and `sliding_window_size` set.
fn model(mode: &str, window: usize) -> (tempfile::TempDir, Transformer) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/packed_tied_gqa");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["attention_mode"] = mode.into();
    cfg["sliding_window_size"] = window.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let m = load_model(&PathBuf::from(dir.path()), &Device::Cpu)
        .unwrap()
        .model;
    (dir, m)
}

fn ids(n: usize, seed: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 37 + seed * 11 + 5) % 256) as u32)
        .collect()
}

/// The inference path's logits `[T][V]`: `prompt` prefilled in one chunk (the prefix of
/// `prefix_lm`), then `reply` one token at a time.
fn inference(m: &Transformer, prompt: &[u32], reply: &[u32]) -> Vec<Vec<f32>> {
    let v = m.config().vocab_size;
    let mut cpu = CpuModel::new(m).unwrap();
    let mut rows: Vec<Vec<f32>> = cpu
        .forward(prompt, true)
        .unwrap()
        .chunks_exact(v)
        .map(<[f32]>::to_vec)
        .collect();
    for &id in reply {
        rows.push(cpu.forward(&[id], false).unwrap());
    }
    rows
}

/// The training forward's logits `[T][V]` of one packed row.
fn training(m: &Transformer, ids: &[u32], docs: &[u32], flags: &[u32]) -> Vec<Vec<f32>> {
    let t = ids.len();
    let dev = Device::Cpu;
    let out = m
        .forward_packed(
            &Tensor::from_slice(ids, (1, t), &dev).unwrap(),
            &Tensor::from_slice(docs, (1, t), &dev).unwrap(),
            Some(&Tensor::from_slice(flags, (1, t), &dev).unwrap()),
        )
        .unwrap();
    out.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

/// max |a - b| / max |b|.
fn rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let (mut d, mut m) = (0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            d = d.max((p - q).abs());
            m = m.max(q.abs());
        }
    }
    d / m.max(1e-12)
}

/// Flags of an example: `prompt` prefix tokens, then `reply` targets.
fn flags(prompt: usize, reply: usize) -> Vec<u32> {
    [vec![FLAG_PREFIX; prompt], vec![FLAG_TARGET; reply]].concat()
}

#[test]
fn prefix_lm_training_logits_equal_the_inference_path() {
    // No window; then a window of 8 that the 12-token prompt and the reply both outgrow.
    for window in [0, 8] {
        for mode in ["prefix_lm", "causal"] {
            let (_d, m) = model(mode, window);
            let (prompt, reply) = (ids(12, 1), ids(7, 2));
            let want = inference(&m, &prompt, &reply);
            let all = [prompt.clone(), reply.clone()].concat();
            let got = training(&m, &all, &vec![0; all.len()], &flags(12, 7));
            let e = rel(&got, &want);
            assert!(e < 1e-4, "{mode}, window {window}: {e}");
            if mode == "causal" {
                // The unpacked forward (`document_mask = false`) applies the window as well.
                let t = Tensor::from_slice(&all, (1, all.len()), &Device::Cpu).unwrap();
                let plain = m.forward(&t).unwrap().squeeze(0).unwrap().to_vec2::<f32>();
                let e = rel(&plain.unwrap(), &want);
                assert!(e < 1e-4, "plain forward, window {window}: {e}");
            }
        }
    }
    // The prefix matters: the same prompt trained causally differs from prefix-LM inference.
    let (_d, m) = model("prefix_lm", 0);
    let (prompt, reply) = (ids(12, 1), ids(7, 2));
    let want = inference(&m, &prompt, &reply);
    let all = [prompt, reply].concat();
    let causal = training(&m, &all, &vec![0; all.len()], &[FLAG_TARGET; 19]);
    assert!(rel(&causal, &want) > 1e-3);
}

/// `-log softmax(row)[target]`.
fn nll(row: &[f32], target: u32) -> f64 {
    let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
    lse - row[target as usize] as f64
}

#[test]
fn a_packed_instruction_batch_equals_its_examples_run_alone() {
    for window in [0, 6] {
        let (_d, m) = model("prefix_lm", window);
        let examples = [(ids(9, 3), ids(5, 4)), (ids(4, 5), ids(8, 6))];
        let (mut all, mut docs, mut fl) = (vec![], vec![], vec![]);
        for (k, (p, r)) in examples.iter().enumerate() {
            all.extend(p.iter().chain(r));
            docs.extend(vec![k as u32 + 10; p.len() + r.len()]);
            fl.extend(flags(p.len(), r.len()));
        }
        // Three padding positions (no flags, the padding document id).
        all.extend([0, 0, 0]);
        docs.extend([u32::MAX; 3]);
        fl.extend([0; 3]);
        let packed = training(&m, &all, &docs, &fl);
        let (mut at, mut loss_sum, mut n) = (0, 0f64, 0);
        for (p, r) in &examples {
            let alone = inference(&m, p, r);
            let len = p.len() + r.len();
            let e = rel(&packed[at..at + len], &alone);
            assert!(e < 1e-4, "window {window}: example at {at}: {e}");
            // The reply tokens' losses from the example alone: predicted from the last prompt
            // position on, every reply token (its end marker included) and nothing else.
            for j in 0..r.len() {
                loss_sum += nll(&alone[p.len() - 1 + j], r[j]);
                n += 1;
            }
            at += len;
        }
        let t = all.len();
        let dev = Device::Cpu;
        let loss = m
            .loss_packed(
                &Tensor::from_slice(&all, (1, t), &dev).unwrap(),
                &Tensor::from_slice(&docs, (1, t), &dev).unwrap(),
                &Tensor::from_slice(&fl, (1, t), &dev).unwrap(),
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = loss_sum / n as f64;
        assert!(
            (loss - want).abs() < 1e-4 * want,
            "window {window}: {loss} vs {want}"
        );
    }
}
