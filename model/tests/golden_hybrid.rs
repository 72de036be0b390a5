//! The hybrid layers (`tritter_model::hybrid`) against transformers (fixtures by
//! `scripts/golden_hybrid.py`, see tests/golden/README.md):
//!
//! - `mamba2_tiny`: a 2-block `Mamba2Model` as HF saved it; our blocks with dense projections,
//!   between HF's embedding lookup and its final RMSNorm (stated here), give HF's block outputs and
//!   final hidden state by the chunked form (several chunk lengths), and HF's prefill-then-step
//!   hidden states and SSM states by the chunked prefill and the recurrent step.
//! - `gated_delta_rule`: our chunked and recurrent gated delta rule give transformers'
//!   `torch_recurrent_gated_delta_rule` (q/k L2-normalised in the kernel, from a non-zero state).
//!
//! Tolerance: f32 throughout; max |Δ| ≤ 1e-5 · max(1, max |reference|).

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::hybrid::delta::{gated_delta_chunked, gated_delta_recurrent, DeltaInputs};
use tritter_model::hybrid::{Mamba2Block, Mamba2Config, Mamba2State, Projection};
use tritter_model::norm::RmsNorm;
use tritter_model::Params;

fn root() -> PathBuf {
    match std::env::var_os("TRITTER_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn golden(case: &str) -> PathBuf {
    root().join("tests/golden").join(case)
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `got` within 1e-5 · max(1, max|want|) of `want`; returns the max |Δ|.
fn close(what: &str, got: &Tensor, want: &Tensor) -> f32 {
    let d = max_abs_diff(got, want);
    let m = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("{what}: max|Δ| {d:.2e} (max|ref| {m:.2})");
    assert!(d <= 1e-5 * m.max(1.0), "{what}: max|Δ| {d}");
    d
}

struct Hf {
    blocks: Vec<Mamba2Block>,
    embed: Tensor,
    norm_f: RmsNorm,
    exp: HashMap<String, Tensor>,
}

fn mamba2() -> Hf {
    let dir = golden("mamba2_tiny");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let c = Mamba2Config {
        hidden_size: u("hidden_size"),
        num_heads: u("num_heads"),
        head_dim: u("head_dim"),
        state_size: u("state_size"),
        n_groups: u("n_groups"),
        conv_kernel: u("conv_kernel"),
        use_conv_bias: cfg["use_conv_bias"].as_bool().unwrap(),
        chunk_size: u("chunk_size"),
        eps: cfg["layer_norm_epsilon"].as_f64().unwrap(),
        projection: Projection::Dense,
    };
    assert!(!cfg["use_bias"].as_bool().unwrap());
    let mut p = Params::new();
    for (k, v) in load(&dir.join("model.safetensors")) {
        p.insert(&k, v).unwrap();
    }
    let blocks = (0..u("num_hidden_layers"))
        .map(|i| Mamba2Block::load(&mut &p, &c, &format!("layers.{i}")).unwrap())
        .collect();
    Hf {
        blocks,
        embed: p.get("embeddings.weight").unwrap().as_tensor().clone(),
        norm_f: RmsNorm::new(p.get("norm_f.weight").unwrap().as_tensor().clone(), c.eps),
        exp: load(&dir.join("expected.safetensors")),
    }
}

impl Hf {
    fn embeddings(&self) -> Tensor {
        let ids = self.exp["ids"].to_dtype(DType::U32).unwrap();
        self.embed
            .index_select(&ids, 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    }
}

#[test]
fn mamba2_chunked_matches_hf_mamba2_model() {
    let hf = mamba2();
    for chunk in [5, 1, 4, 13, 64] {
        let mut x = hf.embeddings();
        for (i, b) in hf.blocks.iter().enumerate() {
            x = b.forward_chunked(&x, None, chunk).unwrap().0;
            let want = &hf.exp[&format!("block{i}_out")];
            close(
                &format!("chunk {chunk} block {i}"),
                &x.squeeze(0).unwrap(),
                want,
            );
        }
        let last = hf.norm_f.forward(&x).unwrap().squeeze(0).unwrap();
        close(
            &format!("chunk {chunk} last_hidden_state"),
            &last,
            &hf.exp["last_hidden_state"],
        );
    }
}

#[test]
fn mamba2_prefill_then_step_matches_hf_cache() {
    let hf = mamba2();
    let x = hf.embeddings();
    let t = x.dim(1).unwrap();
    let prefill = 6;
    // Prefill through the chunked form, keeping each block's state.
    let mut h = x.narrow(1, 0, prefill).unwrap();
    let mut states: Vec<Mamba2State> = vec![];
    for b in &hf.blocks {
        let (y, s) = b.forward(&h, None).unwrap();
        h = y;
        states.push(s);
    }
    for (i, s) in states.iter().enumerate() {
        let want = &hf.exp[&format!("ssm_state_prefill{i}")];
        close(
            &format!("ssm state after prefill, block {i}"),
            &s.ssm.squeeze(0).unwrap(),
            want,
        );
    }
    let mut rows = vec![hf.norm_f.forward(&h).unwrap()];
    for j in prefill..t {
        let mut r = x.narrow(1, j, 1).unwrap().squeeze(1).unwrap();
        for (b, s) in hf.blocks.iter().zip(states.iter_mut()) {
            let (y, ns) = b.step(&r, Some(s)).unwrap();
            r = y;
            *s = ns;
        }
        rows.push(hf.norm_f.forward(&r).unwrap().unsqueeze(1).unwrap());
    }
    let got = Tensor::cat(&rows, 1).unwrap().squeeze(0).unwrap();
    close("prefill + steps", &got, &hf.exp["stepped_hidden_state"]);
    for (i, s) in states.iter().enumerate() {
        let want = &hf.exp[&format!("ssm_state_end{i}")];
        close(
            &format!("ssm state at the end, block {i}"),
            &s.ssm.squeeze(0).unwrap(),
            want,
        );
    }
}

#[test]
fn gated_delta_rule_matches_transformers() {
    let e = load(&golden("gated_delta_rule").join("expected.safetensors"));
    let i = DeltaInputs {
        q: &e["q"],
        k: &e["k"],
        v: &e["v"],
        g: &e["g"],
        beta: &e["beta"],
    };
    let s0 = &e["initial_state"];
    let (o, s) = gated_delta_recurrent(i, Some(s0)).unwrap();
    close("delta recurrent: o", &o, &e["o"]);
    close("delta recurrent: state", &s, &e["final_state"]);
    for chunk in [1, 3, 8, 16, 64] {
        let (o, s) = gated_delta_chunked(i, Some(s0), chunk).unwrap();
        close(&format!("delta chunk {chunk}: o"), &o, &e["o"]);
        close(
            &format!("delta chunk {chunk}: state"),
            &s,
            &e["final_state"],
        );
    }
}
