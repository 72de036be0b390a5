//! The SigLIP vision tower: transformers' `SiglipVisionModel` forward up to `last_hidden_state`
//! (patch-embedding conv, learned position embeddings, pre-LN encoder layers, `post_layernorm`;
//! no pooling head: `vision_model.head.*` tensors in a checkpoint are ignored). Tensor names and
//! shapes are HF's: `vision_model.embeddings.patch_embedding.{weight [D,C,p,p], bias}`,
//! `vision_model.embeddings.position_embedding.weight [N,D]`,
//! `vision_model.encoder.layers.{i}.…` (see `layers.rs`), `vision_model.post_layernorm.*`.
//!
//! Own code rather than candle-transformers' `siglip` module: that one uses candle's fused layer
//! norm and softmax, which have no backward, so a tower built on it cannot be trained. Here the
//! same weights run on a differentiable path (training, from a `VarMap`) or on the fused kernels
//! (inference, the default after [`SiglipVision::load`]); tests hold the two paths equal.
//!
//! The patch convolution (kernel = stride = patch, no padding) is computed as what it is: each
//! `p×p×C` patch flattened in the weight's `(C, p, p)` order, times the weight as a `[D, C·p·p]`
//! matrix: one matmul, differentiable, and faster on CPU than a generic conv. The fused path on the
//! CPU in f32 runs the encoder on plain buffers with the kernels of `cpu.rs`.

use crate::error::{Error, Result};
use crate::vision::config::VisionConfig;
use crate::vision::layers::{EncoderLayer, LayerNorm, VisionPath};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use std::collections::HashMap;
use std::path::Path;

/// The prefixes under which checkpoints store the tower: `SiglipVisionModel` / `SiglipModel`
/// (`vision_model.`), Idefics3 / SmolVLM (`model.vision_model.`), or bare names.
const PREFIXES: [&str; 3] = ["vision_model.", "model.vision_model.", ""];

/// Every tensor of the tower (without `vision_model.`) with its shape, in load order.
pub fn tensor_shapes(cfg: &VisionConfig) -> Vec<(String, Vec<usize>)> {
    let (d, c, p, i) = (
        cfg.hidden_size,
        cfg.num_channels,
        cfg.patch_size,
        cfg.intermediate_size,
    );
    let mut out = vec![
        ("embeddings.patch_embedding.weight".into(), vec![d, c, p, p]),
        ("embeddings.patch_embedding.bias".into(), vec![d]),
        (
            "embeddings.position_embedding.weight".into(),
            vec![cfg.num_patches(), d],
        ),
    ];
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("encoder.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push((format!("{pre}.self_attn.{proj}.weight"), vec![d, d]));
            out.push((format!("{pre}.self_attn.{proj}.bias"), vec![d]));
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            out.push((format!("{pre}.{ln}.weight"), vec![d]));
            out.push((format!("{pre}.{ln}.bias"), vec![d]));
        }
        out.push((format!("{pre}.mlp.fc1.weight"), vec![i, d]));
        out.push((format!("{pre}.mlp.fc1.bias"), vec![i]));
        out.push((format!("{pre}.mlp.fc2.weight"), vec![d, i]));
        out.push((format!("{pre}.mlp.fc2.bias"), vec![d]));
    }
    out.push(("post_layernorm.weight".into(), vec![d]));
    out.push(("post_layernorm.bias".into(), vec![d]));
    out
}

/// A SigLIP vision tower: `pixel_values [B, C, S, S]` → `last_hidden_state [B, N, D]`.
#[derive(Debug, Clone)]
pub struct SiglipVision {
    cfg: VisionConfig,
    /// The conv weight viewed as `[D, C·p·p]`.
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// `[N, D]`.
    position: Tensor,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    path: VisionPath,
}

impl SiglipVision {
    /// The tower from `vb` rooted at `vision_model` (or wherever the caller points it): a
    /// `VarMap`-backed builder creates trainable variables (HF-like initialisation), a
    /// tensor-backed one reads a checkpoint. Runs the differentiable path.
    pub fn new(cfg: VisionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (d, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let emb = vb.pp("embeddings");
        let fan_in = (c * p * p) as f64;
        let patch = emb.pp("patch_embedding");
        let w = patch.get_with_hints(
            (d, c, p, p),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: fan_in.powf(-0.5),
            },
        )?;
        let patch_bias = patch.get_with_hints(d, "bias", Init::Const(0.0))?;
        let position = emb.pp("position_embedding").get_with_hints(
            (cfg.num_patches(), d),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: (d as f64).powf(-0.5),
            },
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| EncoderLayer::new(&cfg, &vb.pp(format!("encoder.layers.{l}"))))
            .collect::<Result<Vec<_>>>()?;
        let post_layernorm = LayerNorm::new(&vb.pp("post_layernorm"), d, cfg.layer_norm_eps)?;
        Ok(Self {
            patch_weight: w.reshape((d, c * p * p))?,
            patch_bias,
            position,
            layers,
            post_layernorm,
            path: VisionPath::Differentiable,
            cfg,
        })
    }

    /// Loads `config.json` (a `SiglipVisionConfig`, or a config with `vision_config`) and
    /// `model.safetensors` from `dir`; only the tower's tensors are kept (`text_model.*`,
    /// `logit_scale`, `vision_model.head.*` are skipped). Runs the fused inference path.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = VisionConfig::from_file(&dir.join("config.json"))?;
        let file = dir.join("model.safetensors");
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
            path: file.clone(),
            msg: e.to_string(),
        })?;
        let names = st.names();
        let prefix = PREFIXES
            .iter()
            .find(|p| {
                let key = format!("{p}embeddings.patch_embedding.weight");
                names.iter().any(|n| **n == key)
            })
            .ok_or_else(|| {
                Error::MissingTensor("vision_model.embeddings.patch_embedding.weight".into())
            })?;
        let mut tensors = HashMap::new();
        for (name, _) in tensor_shapes(&cfg) {
            let full = format!("{prefix}{name}");
            let view = st
                .tensor(&full)
                .map_err(|_| Error::MissingTensor(full.clone()))?;
            let t = view.load(device).map_err(|e| Error::Safetensors {
                path: file.clone(),
                msg: format!("{full}: {e}"),
            })?;
            tensors.insert(name, t);
        }
        Self::from_tensors(cfg, tensors, device)
    }

    /// The tower from tensors named without the `vision_model.` prefix (checked names and
    /// shapes, any float dtype, converted to f32). Runs the fused inference path.
    pub fn from_tensors(
        cfg: VisionConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        for (name, shape) in tensor_shapes(&cfg) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| Error::MissingTensor(format!("vision_model.{name}")))?;
            if t.dims() != shape.as_slice() {
                return Err(Error::BadShape {
                    name: format!("vision_model.{name}"),
                    got: t.dims().to_vec(),
                    expected: shape,
                });
            }
            if !t.dtype().is_float() {
                return Err(Error::BadDtype {
                    name: format!("vision_model.{name}"),
                    got: format!("{:?}", t.dtype()),
                    expected: "a float type".into(),
                });
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Ok(Self::new(cfg, vb)?.with_path(VisionPath::Fused))
    }

    /// The same tower running on `path` (weights shared).
    pub fn with_path(mut self, path: VisionPath) -> Self {
        self.path = path;
        self
    }

    /// The path [`forward`](Self::forward) runs.
    pub fn path(&self) -> VisionPath {
        self.path
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Number of scalar parameters of the tower (no pooling head).
    pub fn param_count(&self) -> usize {
        tensor_shapes(&self.cfg)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// `pixel_values [B, C, S, S]` (cast to the weights' dtype) → patch embeddings plus
    /// positions `[B, N, D]`.
    fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4().map_err(|_| {
            Error::Invalid(format!(
                "pixel_values must be [batch, channels, height, width], got {:?}",
                pixel_values.dims()
            ))
        })?;
        let cfg = &self.cfg;
        if c != cfg.num_channels || h != cfg.image_size || w != cfg.image_size {
            return Err(Error::Invalid(format!(
                "pixel_values are [{b}, {c}, {h}, {w}], the tower takes [B, {}, {s}, {s}]",
                cfg.num_channels,
                s = cfg.image_size
            )));
        }
        let (p, g, d) = (cfg.patch_size, cfg.grid(), cfg.hidden_size);
        let patches = pixel_values
            .to_dtype(self.patch_weight.dtype())?
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * g * g, c * p * p))?;
        let emb = patches
            .matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b, g * g, d))?;
        Ok(emb.broadcast_add(&self.position)?)
    }

    /// `last_hidden_state [B, N, D]` on this tower's path.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.forward_with(pixel_values, self.path)
    }

    /// `last_hidden_state [B, N, D]` on the given path.
    pub fn forward_with(&self, pixel_values: &Tensor, path: VisionPath) -> Result<Tensor> {
        let mut x = self.embed(pixel_values)?;
        if path == VisionPath::Fused && x.device().is_cpu() && x.dtype() == DType::F32 {
            return self.encode_cpu(&x);
        }
        for layer in &self.layers {
            x = layer.forward(&x, path)?;
        }
        self.post_layernorm.forward(&x, path)
    }

    /// The encoder and `post_layernorm` on the CPU in f32 with Tritter's kernels (`cpu.rs`):
    /// the activations stay one row-major buffer from the embeddings to the output.
    fn encode_cpu(&self, emb: &Tensor) -> Result<Tensor> {
        let (b, n, d) = emb.dims3()?;
        let mut x = emb.flatten_all()?.to_vec1::<f32>()?;
        for layer in &self.layers {
            x = layer.forward_cpu(&x, b, n)?;
        }
        let mut out = vec![0f32; x.len()];
        self.post_layernorm.forward_cpu(&x, &mut out)?;
        Ok(Tensor::from_vec(out, (b, n, d), emb.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::config::VisionAct;
    use candle_nn::VarMap;

    fn tiny(act: VisionAct) -> VisionConfig {
        VisionConfig {
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_channels: 3,
            image_size: 8,
            patch_size: 4,
            hidden_act: act,
            layer_norm_eps: 1e-6,
        }
    }

    /// Seeded uniform values in [-a, a).
    fn uniform(shape: &[usize], a: f64, seed: u64, dtype: DType) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// A trainable tower whose every variable (norms and biases too) is random.
    fn random_tower(cfg: &VisionConfig, dtype: DType) -> (VarMap, SiglipVision) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, dtype, &Device::Cpu);
        let tower = SiglipVision::new(cfg.clone(), vb).unwrap();
        let mut names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        for (seed, name) in names.iter().enumerate() {
            let var = map.data().lock().unwrap()[name].clone();
            let t = uniform(var.dims(), 0.8, seed as u64, dtype);
            let shift = if name.contains("norm") && name.ends_with("weight") {
                1.0
            } else {
                0.0
            };
            var.set(&(t + shift).unwrap()).unwrap();
        }
        (map, tower)
    }

    #[test]
    fn names_and_param_count_follow_the_walk() {
        let cfg = tiny(VisionAct::GeluTanh);
        let (map, tower) = random_tower(&cfg, DType::F32);
        let mut have: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        let mut want: Vec<String> = tensor_shapes(&cfg).into_iter().map(|(n, _)| n).collect();
        have.sort();
        want.sort();
        assert_eq!(have, want);
        let total: usize = map.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(tower.param_count(), total);
    }

    #[test]
    fn differentiable_path_equals_fused_path() {
        for act in [VisionAct::GeluTanh, VisionAct::Gelu] {
            let cfg = tiny(act);
            let (_map, tower) = random_tower(&cfg, DType::F32);
            let px = uniform(&[3, 3, 8, 8], 1.5, 100, DType::F32);
            let a = tower.forward_with(&px, VisionPath::Differentiable).unwrap();
            let b = tower.forward_with(&px, VisionPath::Fused).unwrap();
            assert_eq!(a.dims(), &[3, 4, 8]);
            let diff = (a - &b).unwrap().abs().unwrap().max_all().unwrap();
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rel = diff.to_scalar::<f32>().unwrap() / scale;
            assert!(rel <= 1e-5, "{act:?}: relative {rel}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        // f64 so that central differences are exact to ~1e-9; the loss weighs every output.
        let cfg = tiny(VisionAct::GeluTanh);
        let (map, tower) = random_tower(&cfg, DType::F64);
        let px = uniform(&[2, 3, 8, 8], 1.5, 101, DType::F64);
        let mix = uniform(&[2, 4, 8], 1.0, 102, DType::F64);
        let loss = |t: &SiglipVision| -> f64 {
            let y = t.forward_with(&px, VisionPath::Differentiable).unwrap();
            (y * &mix)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let y = tower.forward(&px).unwrap();
        let grads = (y * &mix).unwrap().sum_all().unwrap().backward().unwrap();
        let vars = map.data().lock().unwrap().clone();
        for (name, var) in &vars {
            let g = grads.get(var.as_tensor()).unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert!(g.iter().any(|v| *v != 0.0), "{name}: no gradient");
            let orig = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let i = orig.len() / 2;
            let h = 1e-5;
            let probe = |delta: f64| {
                let mut v = orig.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap();
                var.set(&t).unwrap();
                loss(&tower)
            };
            let fd = (probe(h) - probe(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let err = (fd - g[i]).abs() / g[i].abs().max(1e-3);
            assert!(
                err < 1e-5,
                "{name}[{i}]: backprop {} vs finite difference {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn wrong_pixel_shapes_are_clear_errors() {
        let (_map, tower) = random_tower(&tiny(VisionAct::Gelu), DType::F32);
        let px = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
        let e = tower.forward(&px).unwrap_err().to_string();
        assert!(
            e.contains("[1, 3, 16, 16]") && e.contains("[B, 3, 8, 8]"),
            "{e}"
        );
        let px = Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let e = tower.forward(&px).unwrap_err().to_string();
        assert!(e.contains("[batch, channels, height, width]"), "{e}");
    }
}
