//! Generation: cached greedy decoding equals argmax over full recomputation; stop tokens,
//! token limit, callback stop and cancellation end the reply as documented.

use candle_core::{Device, Tensor};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use tritter_model::{
    generate, Config, GenerateOptions, Params, SamplingParams, StopReason, Transformer,
};

fn model() -> Transformer {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 61;
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 16;
    c.max_position_embeddings = 64;
    let p = Params::init(&c, 3, 0.2, &Device::Cpu).unwrap();
    let mut src = &p;
    Transformer::load(&c, &mut src, &Device::Cpu).unwrap()
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        stop_tokens: vec![],
    }
}

#[test]
fn cached_greedy_equals_recomputation() {
    let m = model();
    let prompt = [5u32, 9, 17, 2];
    let mut streamed = vec![];
    let stats = generate(&m, &prompt, &opts(12), &AtomicBool::new(false), |t| {
        streamed.push(t);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(stats.generated, streamed);
    assert_eq!(stats.generated.len(), 12);
    assert_eq!(stats.stop, StopReason::MaxTokens);
    let mut seq = prompt.to_vec();
    for &t in &stats.generated {
        let ids = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = m.forward(&ids).unwrap().squeeze(0).unwrap();
        let last = logits.get(seq.len() - 1).unwrap();
        assert_eq!(last.argmax(0).unwrap().to_scalar::<u32>().unwrap(), t);
        seq.push(t);
    }
}

#[test]
fn stop_token_callback_and_cancel_end_generation() {
    let m = model();
    let prompt = [5u32, 9, 17, 2];
    let full = generate(&m, &prompt, &opts(8), &AtomicBool::new(false), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let stop_at = full.generated[3];
    let first = full.generated.iter().position(|&t| t == stop_at).unwrap();
    let mut o = opts(8);
    o.stop_tokens = vec![stop_at];
    let s = generate(&m, &prompt, &o, &AtomicBool::new(false), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(s.stop, StopReason::StopToken);
    assert_eq!(s.generated, full.generated[..first].to_vec());

    let mut n = 0;
    let s = generate(&m, &prompt, &opts(8), &AtomicBool::new(false), |_| {
        n += 1;
        if n == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!((s.stop, s.generated.len()), (StopReason::Callback, 2));

    let s = generate(&m, &prompt, &opts(8), &AtomicBool::new(true), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((s.stop, s.generated.len()), (StopReason::Cancelled, 0));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let m = model();
    let mut o = opts(10);
    o.sampling = SamplingParams {
        temperature: 1.0,
        top_k: 20,
        top_p: 0.9,
        repetition_penalty: 1.1,
        seed: 42,
    };
    let a = generate(&m, &[1, 2, 3], &o, &AtomicBool::new(false), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let b = generate(&m, &[1, 2, 3], &o, &AtomicBool::new(false), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(a.generated, b.generated);
}
