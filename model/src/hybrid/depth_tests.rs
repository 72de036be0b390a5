//! Recurrent depth (`Config::hybrid.depth`): a block of layers run `r` times with shared
//! weights equals an unrolled model holding copies of those layers; cached decoding equals the
//! full forward at any `r`; bad counts and ranges are named; training's per-step count is a
//! pure function of seed and step.

use crate::config::{Config, RecurrentDepth};
use crate::decoder::Decoder as _;
use crate::decoder_candle::CandleDecoder;
use crate::transformer::Transformer;
use crate::weights::Params;
use candle_core::{Device, Tensor};

fn small(layers: usize) -> Config {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 40;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.num_layers = layers;
    c
}

fn logits(m: &Transformer, ids: &[u32]) -> Vec<f32> {
    let x = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    m.forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs()))
}

#[test]
fn r_iterations_equal_an_unrolled_model_with_copied_layers() {
    // 4 layers, block 1..3 run 3 times: the schedule 0, 1, 2, 1, 2, 1, 2, 3.
    let mut cfg = small(4);
    cfg.hybrid.depth = Some(RecurrentDepth {
        start: 1,
        end: 3,
        iterations: 3,
        train_max: 4,
    });
    assert_eq!(cfg.layer_schedule(3), [0, 1, 2, 1, 2, 1, 2, 3]);
    let p = Params::init(&cfg, 3, 0.2, &Device::Cpu).unwrap();
    let m = Transformer::load(&cfg, &mut &p, &Device::Cpu).unwrap();
    // The unrolled model: 8 plain layers whose weights are copies along the schedule.
    let plain = small(8);
    let mut q = Params::new();
    for (name, v) in p.iter() {
        let Some(rest) = name.strip_prefix("model.layers.") else {
            q.insert(name, v.as_tensor().copy().unwrap()).unwrap();
            continue;
        };
        let (l, tail) = rest.split_once('.').unwrap();
        let l: usize = l.parse().unwrap();
        for (slot, &src) in cfg.layer_schedule(3).iter().enumerate() {
            if src == l {
                let t = v.as_tensor().copy().unwrap();
                q.insert(&format!("model.layers.{slot}.{tail}"), t).unwrap();
            }
        }
    }
    let u = Transformer::load(&plain, &mut &q, &Device::Cpu).unwrap();
    let ids = [3u32, 9, 1, 30, 12, 7];
    let d = max_diff(&logits(&m, &ids), &logits(&u, &ids));
    assert!(d < 1e-5, "recurrent vs unrolled: {d}");
    // One iteration is the plain 4-layer model.
    let one = m.clone().with_iterations(1).unwrap();
    let plain4 = Transformer::load(&small(4), &mut &p, &Device::Cpu).unwrap();
    assert!(max_diff(&logits(&one, &ids), &logits(&plain4, &ids)) < 1e-6);
    // And r changes the answer.
    let five = m.clone().with_iterations(5).unwrap();
    assert!(max_diff(&logits(&five, &ids), &logits(&m, &ids)) > 1e-4);
}

#[test]
fn cached_decoding_equals_the_full_forward_at_any_count() {
    let cfg = Config::tritter_depth_tiny();
    let mut cfg = Config {
        vocab_size: 40,
        ..cfg
    };
    cfg.hidden_size = 32;
    cfg.intermediate_size = 48;
    cfg.head_dim = 8;
    let p = Params::init(&cfg, 4, 0.2, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..11).map(|i| (i * 7 + 2) % 40).collect();
    for r in [1, 2, 6] {
        let m = Transformer::load(&cfg, &mut &p, &Device::Cpu)
            .unwrap()
            .with_iterations(r)
            .unwrap();
        let full = logits(&m, &ids);
        let mut dec = CandleDecoder::new(&m);
        let mut got = dec.step_all(&ids[..4]).unwrap();
        for &id in &ids[4..] {
            got.extend(dec.step_all(&[id]).unwrap());
        }
        let d = max_diff(&got, &full);
        assert!(d < 1e-4, "r = {r}: {d}");
        assert_eq!(m.cache_slots(), 2 + 2 * r);
    }
}

#[test]
fn bad_counts_and_ranges_are_named() {
    let m = Transformer::load(
        &small(2),
        &mut &Params::init(&small(2), 1, 0.2, &Device::Cpu).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let e = m.clone().with_iterations(2).err().unwrap().to_string();
    assert!(e.contains("no recurrent-depth block"), "{e}");
    assert!(m.with_iterations(1).is_ok());
    let base = r#""vocab_size":10,"hidden_size":16,"intermediate_size":8,"num_hidden_layers":4,
        "num_attention_heads":2"#;
    for (extra, key) in [
        (r#","recurrent_block":[2,9]"#, "recurrent_block"),
        (r#","recurrent_block":[2]"#, "recurrent_block"),
        (r#","recurrent_iterations":3"#, "recurrent_block"),
        (
            r#","recurrent_block":[1,3],"recurrent_iterations":0"#,
            "recurrent_iterations",
        ),
    ] {
        let e = Config::from_json_str(&format!("{{{base}{extra}}}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
}

#[test]
fn training_samples_every_count_from_the_seed_and_step() {
    use crate::train::batch::sampled_iterations;
    let a: Vec<usize> = (0..400).map(|s| sampled_iterations(7, s, 4)).collect();
    let b: Vec<usize> = (0..400).map(|s| sampled_iterations(7, s, 4)).collect();
    assert_eq!(a, b);
    for r in 1..=4 {
        let n = a.iter().filter(|&&x| x == r).count();
        assert!((60..140).contains(&n), "{r} drawn {n} times of 400");
    }
    assert_ne!(
        a,
        (0..400)
            .map(|s| sampled_iterations(8, s, 4))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_planner_keeps_a_kv_cache_per_layer_run() {
    use crate::plan::{kv_layer_bytes, plan, ModelDims, PlanOptions};
    // Layers 1-2 run 4 times: 1 + 4 × 2 + 1 = 10 attention runs, each with its own cache, as
    // the candle decoder allocates them.
    let d = ModelDims::preset("tritter-depth-tiny").unwrap();
    assert_eq!(d.kv_layers(), 10);
    let c = Config::tritter_depth_tiny();
    let m = Transformer::load(
        &c,
        &mut crate::random::RandomSource::new(1, &Device::Cpu),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(m.cache_slots(), d.kv_layers());
    let mut o = PlanOptions::new(2048);
    o.kv = crate::attn::KvKind::F16;
    let p = plan(&d, &o).unwrap();
    let one = kv_layer_bytes(c.num_kv_heads, c.head_dim, o.kv, 0, 0, 2048);
    assert_eq!(p.kv_cache, 10 * one);
}
