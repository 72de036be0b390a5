//! Training the VQ-VAE (`tritter_model::vqvae::train_vqvae`): AdamW steps on a handful of tiny
//! images lower the total loss; the straight-through quantiser sends the reconstruction gradient
//! to the encoder and only the codebook loss to the codebook; a trained model saves its trained
//! values.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tritter_model::vqvae::{train_vqvae, VqTrainOptions, VqVae, VqVaeConfig};

fn tiny() -> VqVaeConfig {
    VqVaeConfig {
        embed_dim: 4,
        num_embeddings: 16,
        latent_channels: 4,
        resolution: 16,
        base_channels: 32,
        channel_multiplier: vec![1, 1],
        num_res_blocks: 1,
        attn_resolutions: Some(vec![8]),
        ..VqVaeConfig::default()
    }
}

/// Four 16×16 images in [-1, 1]: colour waves of different frequencies and phases.
fn images() -> Vec<Tensor> {
    (0..4)
        .map(|k| {
            let mut v = Vec::with_capacity(3 * 16 * 16);
            for c in 0..3 {
                for y in 0..16 {
                    for x in 0..16 {
                        let (fx, fy) = (0.2 + 0.1 * k as f32, 0.3 - 0.05 * c as f32);
                        let phase = k as f32 + 2.0 * c as f32;
                        v.push(0.8 * (fx * x as f32 + fy * y as f32 + phase).sin());
                    }
                }
            }
            Tensor::from_vec(v, (3, 16, 16), &Device::Cpu).unwrap()
        })
        .collect()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

#[test]
fn adamw_steps_lower_the_total_loss_and_the_trained_model_saves() {
    let opts = VqTrainOptions {
        model: tiny(),
        steps: 30,
        batch_size: 4,
        lr: 2e-3,
        beta1: 0.9,
        beta2: 0.99,
        seed: 7,
        ..VqTrainOptions::default()
    };
    let imgs = images();
    let mut seen = Vec::new();
    let (model, varmap) = train_vqvae(&imgs, &opts, |step, l| {
        seen.push((step, l.values().unwrap()));
    })
    .unwrap();
    assert_eq!(seen.len(), 30);
    assert!(seen.iter().enumerate().all(|(i, (s, _))| *s == i));
    let batch = Tensor::stack(&imgs, 0).unwrap();
    let after = model.losses(&batch).unwrap().values().unwrap();
    let before = seen[0].1;
    println!(
        "vqvae training: total {:.4} → {:.4} (recon {:.4} → {:.4}, codebook {:.4} → {:.4}, \
         commitment {:.4} → {:.4}) over 30 AdamW steps",
        before[3], after[3], before[0], after[0], before[1], after[1], before[2], after[2]
    );
    for v in [before, after] {
        // total = recon + codebook + commitment
        assert!((v[0] + v[1] + v[2] - v[3]).abs() <= 1e-5 * v[3].max(1.0));
    }
    assert!(after[3] < 0.5 * before[3], "{before:?} → {after:?}");
    assert_eq!(varmap.all_vars().len(), model.named_tensors().len());

    // The saved directory holds the trained values, not the initial ones.
    let tmp = tempfile::tempdir().unwrap();
    model.save(&tmp.path().join("vq")).unwrap();
    let back = VqVae::load(&tmp.path().join("vq"), &Device::Cpu).unwrap();
    let a = model.encode(&batch).unwrap().to_vec2::<i64>().unwrap();
    let b = back.encode(&batch).unwrap().to_vec2::<i64>().unwrap();
    assert_eq!(a, b);
    let again = back.losses(&batch).unwrap().values().unwrap();
    assert!((again[3] - after[3]).abs() <= 1e-6 * after[3].max(1.0));
}

#[test]
fn the_straight_through_quantiser_routes_gradients() {
    // β = 0: the commitment term sends nothing, so an encoder gradient can only come through
    // the straight-through estimator from the reconstruction.
    let cfg = VqVaeConfig {
        beta: Some(0.0),
        ..tiny()
    };
    let varmap = VarMap::new();
    let model = VqVae::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let batch = Tensor::stack(&images()[..2], 0).unwrap();
    let losses = model.losses(&batch).unwrap();
    assert_eq!(scalar(&losses.commitment), 0.0);
    let grads = losses.total.backward().unwrap();
    let named: std::collections::HashMap<String, Tensor> =
        model.named_tensors().into_iter().collect();
    let grad_norm = |name: &str| -> f32 {
        let g = grads
            .get(&named[name])
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        scalar(&g.sqr().unwrap().sum_all().unwrap())
    };
    for name in [
        "encoder.conv_in.weight",
        "quant_conv.weight",
        "post_quant_conv.weight",
        "decoder.conv_out.weight",
    ] {
        assert!(grad_norm(name) > 0.0, "{name} got a zero gradient");
    }

    // The codebook gets exactly the codebook loss's gradient: the decoder's gradient goes to the
    // encoder instead (z_q = z_e + sg[e − z_e]).
    let only_codebook = model.losses(&batch).unwrap().codebook.backward().unwrap();
    let book = &named["quantize.embedding.weight"];
    let g_total = grads.get(book).unwrap();
    let g_book = only_codebook.get(book).unwrap();
    let diff = scalar(
        &(g_total - g_book)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap(),
    );
    assert!(diff <= 1e-7, "codebook gradient differs by {diff}");
    assert!(scalar(&g_book.abs().unwrap().sum_all().unwrap()) > 0.0);
}

#[test]
fn training_refuses_bad_input_with_a_message() {
    let opts = VqTrainOptions {
        model: tiny(),
        steps: 1,
        batch_size: 2,
        ..VqTrainOptions::default()
    };
    let err = |imgs: &[Tensor]| match train_vqvae(imgs, &opts, |_, _| {}) {
        Ok(_) => panic!("training accepted bad images"),
        Err(e) => e.to_string(),
    };
    assert!(err(&[]).contains("no images"));
    let small = Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let big = Tensor::zeros((3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(err(&[big.clone(), small]).contains("one size"));
    let grey = Tensor::zeros((1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(err(&[grey]).contains("channels"));
    let odd = Tensor::zeros((3, 15, 15), DType::F32, &Device::Cpu).unwrap();
    assert!(err(&[odd]).contains("multiples of 2"));
}
