//! Hybrid models as a whole (attention, Mamba-2 and Gated DeltaNet layers in one Tritter
//! decoder): cached decoding equals the full forward, gradients reach every parameter, a packed
//! checkpoint reloads to the latent model's logits, the config keys round-trip and bad ones are
//! named. The layers against transformers: `model/tests/golden_hybrid.rs`, `golden_granite.rs`.

use crate::config::{Config, GdnShape, LayerKind, MambaShape};
use crate::decoder::Decoder as _;
use crate::decoder_candle::CandleDecoder;
use crate::transformer::Transformer;
use crate::weights::Params;
use candle_core::{Device, Tensor};

/// Five layers, every kind: mamba2, attention, gated_deltanet, mamba2, attention.
fn tiny_hybrid() -> Config {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 50;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.num_layers = 5;
    use LayerKind::{Attention as A, GatedDeltaNet as G, Mamba2 as M};
    c.hybrid.layer_types = vec![M, A, G, M, A];
    c.hybrid.mamba = Some(MambaShape {
        num_heads: 4,
        head_dim: 16,
        state_size: 8,
        n_groups: 2,
        conv_kernel: 4,
        conv_bias: true,
        chunk_size: 4,
    });
    c.hybrid.gdn = Some(GdnShape {
        num_heads: 2,
        head_k_dim: 8,
        head_v_dim: 12,
        conv_kernel: 4,
        chunk_size: 4,
    });
    c
}

fn model(cfg: &Config, seed: u64) -> (Transformer, Params) {
    let p = Params::init(cfg, seed, 0.2, &Device::Cpu).unwrap();
    let m = Transformer::load(cfg, &mut &p, &Device::Cpu).unwrap();
    (m, p)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let m = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs())) / m
}

#[test]
fn cached_decoding_in_pieces_equals_the_full_forward() {
    let cfg = tiny_hybrid();
    let (m, _) = model(&cfg, 7);
    let ids: Vec<u32> = (0..17).map(|i| (i * 7 + 3) % 50).collect();
    let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
    let full = m
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // A prefill across a chunk boundary, single steps (the recurrent forms), then a chunk again.
    let mut dec = CandleDecoder::new(&m);
    let mut got = dec.step_all(&ids[..6]).unwrap();
    for &id in &ids[6..11] {
        got.extend(dec.step_all(&[id]).unwrap());
    }
    got.extend(dec.step_all(&ids[11..]).unwrap());
    assert_eq!(dec.len(), ids.len());
    let d = max_rel(&got, &full);
    assert!(d < 1e-4, "cached vs full: {d}");
    // The cache holds recurrent states of fixed size beside the growing KV of layers 1 and 4.
    let c = dec.cache();
    let m2 = c.layer_bytes(0);
    dec.step(&[1]).unwrap();
    assert_eq!(
        dec.cache().layer_bytes(0),
        m2,
        "a Mamba-2 state does not grow"
    );
    assert!(dec.cache().layer_bytes(1) > 0);
    dec.start().unwrap();
    assert!(dec.is_empty());
    assert_eq!(dec.step(&ids[..1]).unwrap().len(), 50);
}

#[test]
fn gradients_reach_every_parameter_of_a_hybrid_model() {
    let cfg = tiny_hybrid();
    let (m, p) = model(&cfg, 8);
    let ids: Vec<u32> = (0..24).map(|i| (i * 11 + 5) % 50).collect();
    let x = Tensor::from_slice(&ids, (2, 12), &Device::Cpu).unwrap();
    let grads = m.loss(&x).unwrap().backward().unwrap();
    for (name, v) in p.iter() {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let vals = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(vals.iter().all(|x| x.is_finite()), "{name}");
        assert!(vals.iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
}

#[test]
fn a_packed_checkpoint_reloads_to_the_latent_models_logits() {
    let cfg = tiny_hybrid();
    let (m, p) = model(&cfg, 9);
    let dir = tempfile::tempdir().unwrap();
    crate::checkpoint::save_checkpoint(dir.path(), &cfg, &p, None).unwrap();
    let ck = crate::checkpoint::load_model(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(ck.config, cfg);
    let ids: Vec<u32> = (0..9).map(|i| (i * 5 + 2) % 50).collect();
    let x = Tensor::from_slice(&ids, (1, 9), &Device::Cpu).unwrap();
    let a = m.forward(&x).unwrap().flatten_all().unwrap();
    let b = ck.model.forward(&x).unwrap().flatten_all().unwrap();
    let d = max_rel(&b.to_vec1().unwrap(), &a.to_vec1().unwrap());
    assert!(d < 1e-4, "packed vs latent: {d}");
    // Every mixer's projections were saved packed (2 bits a weight, uint8 `[out/4, in]`), and
    // they are the weights `ternary_params` counts.
    let saved =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let packed: usize = saved
        .values()
        .filter(|t| t.dtype() == candle_core::DType::U8)
        .map(|t| t.elem_count() * 4)
        .sum();
    assert_eq!(packed, cfg.ternary_params());
    assert!(saved.contains_key("model.layers.0.mamba.in_proj.weight_scale"));
    assert!(saved.contains_key("model.layers.2.linear_attn.q_proj.weight_scale"));
}

#[test]
fn a_document_mask_is_refused_by_recurrent_layers() {
    let cfg = tiny_hybrid();
    let (m, _) = model(&cfg, 10);
    let ids = Tensor::from_slice(&[1u32, 2, 3, 4], (1, 4), &Device::Cpu).unwrap();
    let docs = Tensor::from_slice(&[0u32, 0, 1, 1], (1, 4), &Device::Cpu).unwrap();
    let e = m.loss_docs(&ids, &docs, u32::MAX).unwrap_err().to_string();
    assert!(e.contains("document_mask = false"), "{e}");
}

#[test]
fn hybrid_keys_round_trip_and_bad_ones_are_named() {
    let cfg = tiny_hybrid();
    let json = serde_json::to_string(&cfg.to_config_file()).unwrap();
    assert_eq!(Config::from_json_str(&json).unwrap(), cfg);
    let base = r#""vocab_size":10,"hidden_size":16,"intermediate_size":8,"num_hidden_layers":2,
        "num_attention_heads":2"#;
    let parse = |extra: &str| Config::from_json_str(&format!("{{{base}{extra}}}"));
    for (extra, key) in [
        (r#","layer_types":["attention"]"#, "layer_types"),
        (r#","layer_types":["attention","lstm"]"#, "lstm"),
        (
            r#","layer_types":["mamba2","attention"],"mamba_n_heads":3"#,
            "mamba_n_heads",
        ),
        (
            r#","layer_types":["mamba2","attention"],"mamba_n_heads":4,"time_step_limit":[0.001,0.1]"#,
            "time_step_limit",
        ),
        (
            r#","model_type":"granitemoehybrid","num_local_experts":8,"mamba_n_heads":4"#,
            "num_local_experts",
        ),
        (
            r#","layer_types":["gated_deltanet","attention"],"linear_num_key_heads":2,"linear_num_value_heads":4"#,
            "linear_num_value_heads",
        ),
    ] {
        let e = parse(extra).unwrap_err().to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
    let c = parse(r#","layer_types":["mamba2","attention"],"mamba_n_heads":4"#).unwrap();
    let m = c.hybrid.mamba.unwrap();
    // HF's defaults: head_dim = expand (2) · hidden / heads, state 256, one group, conv 4.
    assert_eq!(
        (m.head_dim, m.state_size, m.n_groups, m.conv_kernel),
        (8, 256, 1, 4)
    );
    assert!(c.needs_candle_path());
    assert!(!Config::tritter_tiny().needs_candle_path());
}

#[test]
fn the_nine_to_one_preset_puts_attention_at_layer_five() {
    let c = Config::preset("tritter-hybrid-tiny").unwrap();
    let kinds: Vec<_> = (0..c.num_layers).map(|l| c.layer_kind(l)).collect();
    assert_eq!(kinds.iter().filter(|&&k| k == LayerKind::Mamba2).count(), 9);
    assert_eq!(kinds[5], LayerKind::Attention);
    let (m, _) = model(&c, 1);
    let x = Tensor::from_slice(&[1u32, 2, 3], (1, 3), &Device::Cpu).unwrap();
    assert_eq!(m.forward(&x).unwrap().dims(), [1, 3, c.vocab_size]);
}

#[test]
fn the_planner_counts_the_state_bytes_a_real_cache_holds() {
    let cfg = tiny_hybrid();
    let (m, _) = model(&cfg, 11);
    let mut dec = CandleDecoder::new(&m);
    dec.step(&[1, 2, 3, 4, 5]).unwrap();
    let dims = crate::plan::ModelDims::from_config(&cfg);
    assert_eq!(dims.kv_layers(), 2);
    for l in 0..cfg.num_layers {
        let real = dec.cache().layer_bytes(l) as u64;
        match cfg.layer_kind(l) {
            LayerKind::Attention => assert_eq!(dims.state_bytes[l], 0),
            _ => assert_eq!(dims.state_bytes[l], real, "layer {l}"),
        }
    }
    let mut o = crate::plan::PlanOptions::new(4096);
    o.kv = crate::attn::KvKind::F32;
    let p = crate::plan::plan(&dims, &o).unwrap();
    assert_eq!(p.recurrent_state, dims.total_state_bytes());
    // Only the two attention layers hold keys and values: 2 layers × 2 (k, v) × 2 heads × 8 × 4 B
    // per token, in whole blocks.
    assert_eq!(
        p.kv_cache,
        2 * crate::plan::kv_layer_bytes(2, 8, crate::attn::KvKind::F32, 0, 0, 4096)
    );
    let text = crate::plan::plan_report(&dims, &o).unwrap();
    assert!(
        text.contains("recurrent state") && text.contains("layer   2  recurrent"),
        "{text}"
    );
}

/// The decoding cache (keys and values in buffers written in place) gives the concatenating
/// cache's hidden states; a clone shares no buffer, so two continuations of one prefix each equal
/// their own full forward; padding for benchmarks counts its positions and bytes.
#[test]
fn buffered_and_concatenating_caches_agree_and_clones_are_independent() {
    use crate::layer::TensorKvCache;
    let cfg = tiny_hybrid();
    let (m, _) = model(&cfg, 5);
    let embed = |ids: &[u32]| {
        let t = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
        m.embed(&t).unwrap()
    };
    let rows = |h: Tensor| h.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ids: Vec<u32> = (0..13).map(|i| (i * 5 + 1) % 50).collect();
    let (mut cat, mut buf) = (TensorKvCache::new(5), TensorKvCache::for_inference(5));
    for piece in [&ids[..3], &ids[3..4], &ids[4..9], &ids[9..10], &ids[10..]] {
        let a = rows(m.hidden_tensor_cache(&embed(piece), &mut cat).unwrap());
        let b = rows(m.hidden_tensor_cache(&embed(piece), &mut buf).unwrap());
        assert_eq!(a, b, "the two caches give the same hidden states");
    }
    assert_eq!((cat.len(), buf.len()), (13, 13));
    assert_eq!(
        cat.bytes(),
        buf.bytes(),
        "bytes count the held positions only"
    );

    let mut fork = buf.clone();
    let last = |h: Tensor| {
        let t = h.dim(1).unwrap();
        rows(h.narrow(1, t - 1, 1).unwrap())
    };
    let a = last(m.hidden_tensor_cache(&embed(&[7]), &mut buf).unwrap());
    let b = last(m.hidden_tensor_cache(&embed(&[9]), &mut fork).unwrap());
    for (tail, got) in [(7u32, a), (9u32, b)] {
        let mut seq = ids.clone();
        seq.push(tail);
        let mut fresh = TensorKvCache::new(5);
        let want = last(m.hidden_tensor_cache(&embed(&seq), &mut fresh).unwrap());
        let d = max_rel(&got, &want);
        assert!(d < 1e-5, "continuation with {tail}: {d}");
    }

    let before = buf.layer_bytes(1);
    buf.pad_attention(100).unwrap();
    assert_eq!(buf.len(), 114);
    assert_eq!(
        buf.layer_bytes(1),
        before / 14 * 114,
        "an attention layer grows"
    );
    assert_eq!(
        buf.layer_bytes(0),
        cat.layer_bytes(0),
        "a Mamba-2 state does not"
    );
}

/// Causality, a property every decoder must have: changing the token at position `j` leaves the
/// logits of every earlier position unchanged — for each layer kind, in a batch, over several
/// chunks of the recurrent layers' scans (the training forward).
#[test]
fn a_later_token_never_changes_earlier_logits() {
    for kinds in [
        vec![LayerKind::Mamba2; 3],
        vec![LayerKind::GatedDeltaNet; 3],
        vec![LayerKind::Attention; 3],
    ] {
        let mut cfg = tiny_hybrid();
        cfg.num_layers = 3;
        cfg.hybrid.layer_types = kinds.clone();
        let (m, _) = model(&cfg, 3);
        let (b, t) = (2usize, 23usize);
        let ids: Vec<u32> = (0..b * t).map(|i| ((i * 13 + 5) % 50) as u32).collect();
        let logits = |ids: &[u32]| {
            let x = Tensor::from_slice(ids, (b, t), &Device::Cpu).unwrap();
            m.forward(&x).unwrap().to_vec3::<f32>().unwrap()
        };
        let base = logits(&ids);
        for j in [1usize, 4, 9, 15, 22] {
            let mut changed = ids.clone();
            changed[t + j] = (changed[t + j] + 17) % 50;
            let got = logits(&changed);
            assert_eq!(
                got[0], base[0],
                "{kinds:?}: another sequence of the batch changed"
            );
            for p in 0..j {
                assert_eq!(
                    got[1][p], base[1][p],
                    "{kinds:?}: position {p} saw token {j}"
                );
            }
            assert_ne!(
                got[1][j], base[1][j],
                "{kinds:?}: token {j} changes its own logits"
            );
        }
    }
}

/// A prefix-LM model the packed kernels cannot run is refused by name, not decoded causally.
#[test]
fn a_prefix_lm_hybrid_is_refused_rather_than_decoded_causally() {
    let mut cfg = tiny_hybrid();
    cfg.attention_mode = crate::attn::AttentionMode::PrefixLm;
    let (m, _) = model(&cfg, 2);
    let e = crate::decoder::open(&m, crate::Compute::Cpu, crate::Profile::Reference)
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(msg.contains("prefix_lm") && msg.contains("mamba2"), "{msg}");
}
