//! Attention modes on the full forward and the pooled text embedding: `embedding` /
//! `bidirectional` let early positions see later tokens, `causal` does not; the embedding is the
//! mean of the final hidden states.

use candle_core::{Device, Tensor};
use tritter_model::attn::AttentionMode;
use tritter_model::{Config, Params, Transformer};

fn model(mode: AttentionMode) -> Transformer {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 50;
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 16;
    c.attention_mode = mode;
    let p = Params::init(&c, 11, 0.2, &Device::Cpu).unwrap();
    let mut src = &p;
    Transformer::load(&c, &mut src, &Device::Cpu).unwrap()
}

fn hidden(m: &Transformer, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = m.hidden_from_embeds(&m.embed(&t).unwrap()).unwrap();
    h.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn bidirectional_modes_see_later_tokens_and_causal_does_not() {
    for (mode, sees_future) in [
        (AttentionMode::Causal, false),
        (AttentionMode::PrefixLm, false),
        (AttentionMode::Bidirectional, true),
        (AttentionMode::Embedding, true),
    ] {
        let m = model(mode);
        let a = hidden(&m, &[1, 2, 3, 4]);
        let b = hidden(&m, &[1, 2, 3, 9]);
        let first_changed = a[0].iter().zip(&b[0]).any(|(x, y)| (x - y).abs() > 1e-6);
        assert_eq!(first_changed, sees_future, "{mode:?}");
    }
}

#[test]
fn embedding_is_the_mean_of_the_hidden_states() {
    let m = model(AttentionMode::Embedding);
    let ids = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let h = hidden(&m, &ids);
    let e = m.embedding(&ids).unwrap();
    assert_eq!(e.len(), 32);
    for (j, v) in e.iter().enumerate() {
        let mean = h.iter().map(|r| r[j]).sum::<f32>() / h.len() as f32;
        assert!((v - mean).abs() < 1e-5, "{v} vs {mean}");
    }
    assert!(m.embedding(&[]).is_err());
}
