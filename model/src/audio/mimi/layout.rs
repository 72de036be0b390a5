//! The tensors a Mimi checkpoint must hold, with their shapes, in the flat layout that HF
//! transformers' `MimiModel.save_pretrained` writes (and `kyutai/mimi` ships): `encoder.layers.*`,
//! `encoder_transformer.*`, `downsample.*`, `quantizer.*`, `upsample.*`,
//! `decoder_transformer.*`, `decoder.layers.*`.
//!
//! Must match the module tree of `transformers/models/mimi/modeling_mimi.py` (`MimiEncoder`,
//! `MimiDecoder`, `MimiTransformerModel`, `MimiSplitResidualVectorQuantizer`): the loader checks
//! every name and shape here first, so that a bad checkpoint is a clear error before
//! candle-transformers' constructors see it.

use super::config::MimiConfig;

/// One expected tensor: HF name and shape.
pub(crate) type Spec = (String, Vec<usize>);

fn conv(out: &mut Vec<Spec>, name: &str, c_out: usize, c_in: usize, k: usize, bias: bool) {
    out.push((format!("{name}.conv.weight"), vec![c_out, c_in, k]));
    if bias {
        out.push((format!("{name}.conv.bias"), vec![c_out]));
    }
}

fn resblock(out: &mut Vec<Spec>, cfg: &MimiConfig, name: &str, dim: usize) {
    let hidden = dim / cfg.compress;
    conv(
        out,
        &format!("{name}.block.1"),
        hidden,
        dim,
        cfg.residual_kernel_size,
        true,
    );
    conv(out, &format!("{name}.block.3"), dim, hidden, 1, true);
    if cfg.use_conv_shortcut {
        conv(out, &format!("{name}.shortcut"), dim, dim, 1, true);
    }
}

/// `MimiEncoder`: first conv, per (reversed) ratio residual blocks, ELU, strided conv; ELU, last conv.
fn encoder(out: &mut Vec<Spec>, cfg: &MimiConfig) {
    let nf = cfg.num_filters;
    conv(
        out,
        "encoder.layers.0",
        nf,
        cfg.audio_channels,
        cfg.kernel_size,
        true,
    );
    let mut idx = 1;
    let mut scaling = 1;
    for &ratio in cfg.ratios().iter().rev() {
        let cs = scaling * nf;
        for _ in 0..cfg.num_residual_layers {
            resblock(out, cfg, &format!("encoder.layers.{idx}"), cs);
            idx += 1;
        }
        idx += 1; // ELU
        conv(
            out,
            &format!("encoder.layers.{idx}"),
            2 * cs,
            cs,
            2 * ratio,
            true,
        );
        idx += 1;
        scaling *= 2;
    }
    idx += 1; // ELU
    let (h, k) = (cfg.hidden_size, cfg.last_kernel_size);
    conv(
        out,
        &format!("encoder.layers.{idx}"),
        h,
        scaling * nf,
        k,
        true,
    );
}

/// `MimiDecoder`: first conv, per ratio ELU, transposed conv, residual blocks; ELU, last conv.
fn decoder(out: &mut Vec<Spec>, cfg: &MimiConfig) {
    let nf = cfg.num_filters;
    let ratios = cfg.ratios();
    let mut scaling = 1usize << ratios.len();
    conv(
        out,
        "decoder.layers.0",
        scaling * nf,
        cfg.hidden_size,
        cfg.kernel_size,
        true,
    );
    let mut idx = 1;
    for &ratio in &ratios {
        let cs = scaling * nf;
        idx += 1; // ELU
                  // ConvTranspose1d weight: [in, out / groups, k].
        let name = format!("decoder.layers.{idx}.conv");
        out.push((format!("{name}.weight"), vec![cs, cs / 2, 2 * ratio]));
        out.push((format!("{name}.bias"), vec![cs / 2]));
        idx += 1;
        for _ in 0..cfg.num_residual_layers {
            resblock(out, cfg, &format!("decoder.layers.{idx}"), cs / 2);
            idx += 1;
        }
        scaling /= 2;
    }
    idx += 1; // ELU
    let (c, k) = (cfg.audio_channels, cfg.last_kernel_size);
    conv(out, &format!("decoder.layers.{idx}"), c, nf, k, true);
}

fn transformer(out: &mut Vec<Spec>, cfg: &MimiConfig, prefix: &str) {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("{prefix}.layers.{l}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            out.push((format!("{p}.{norm}.weight"), vec![h]));
            out.push((format!("{p}.{norm}.bias"), vec![h]));
        }
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            out.push((format!("{p}.self_attn.{proj}.weight"), vec![h, h]));
            if cfg.attention_bias {
                out.push((format!("{p}.self_attn.{proj}.bias"), vec![h]));
            }
        }
        out.push((format!("{p}.mlp.fc1.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.fc2.weight"), vec![h, i]));
        out.push((format!("{p}.self_attn_layer_scale.scale"), vec![h]));
        out.push((format!("{p}.mlp_layer_scale.scale"), vec![h]));
    }
}

fn quantizer(out: &mut Vec<Spec>, cfg: &MimiConfig) {
    let (h, d, n) = (
        cfg.hidden_size,
        cfg.vector_quantization_hidden_dimension,
        cfg.codebook_size,
    );
    let halves = [
        ("semantic", cfg.num_semantic_quantizers),
        ("acoustic", cfg.num_quantizers - cfg.num_semantic_quantizers),
    ];
    for (kind, books) in halves {
        let p = format!("quantizer.{kind}_residual_vector_quantizer");
        out.push((format!("{p}.input_proj.weight"), vec![d, h, 1]));
        out.push((format!("{p}.output_proj.weight"), vec![h, d, 1]));
        for k in 0..books {
            let c = format!("{p}.layers.{k}.codebook");
            out.push((format!("{c}.embed_sum"), vec![n, cfg.codebook_dim()]));
            out.push((format!("{c}.cluster_usage"), vec![n]));
            out.push((format!("{c}.initialized"), vec![1]));
        }
    }
}

/// Every tensor of a full `MimiModel` checkpoint for `cfg`, with its shape.
pub(crate) fn expected_tensors(cfg: &MimiConfig) -> Vec<Spec> {
    let mut out = Vec::new();
    encoder(&mut out, cfg);
    transformer(&mut out, cfg, "encoder_transformer");
    let (h, s) = (cfg.hidden_size, cfg.latent_stride());
    out.push(("downsample.conv.weight".into(), vec![h, h, 2 * s]));
    quantizer(&mut out, cfg);
    out.push((
        "upsample.conv.weight".into(),
        vec![h, h / cfg.upsample_groups, 2 * s],
    ));
    transformer(&mut out, cfg, "decoder_transformer");
    decoder(&mut out, cfg);
    out
}
