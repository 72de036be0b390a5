//! Where a model's tensors come from: a checkpoint's safetensors (HF BitNet layouts, packed or
//! full precision; HF Chameleon's float `nn.Linear`s) for inference, or a [`Params`] store of
//! trainable variables.
//!
//! The names are HF transformers' BitNet names (`model.layers.N.self_attn.q_proj.weight`, ...);
//! the loader (`layer.rs`, `transformer.rs`) states them with their shapes, and
//! [`param_shapes`] records that walk for everything that lists a model's parameters.

use crate::bitlinear::{BitWeights, PackedLinear};
use crate::config::{Config, WeightFormat};
use crate::error::{Error, Result};
pub use crate::source::WeightSource;
use crate::transformer::Transformer;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tritter_kernels::TernaryMatrix;

/// The tensors of a checkpoint, read from one or more safetensors files.
#[derive(Debug)]
pub struct TensorStore {
    tensors: HashMap<String, Tensor>,
}

fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_safetensors(&bytes, path, device)
}

fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    // Parse first with the safetensors crate for a precise message on truncated / corrupt files.
    safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    candle_core::safetensors::load_buffer(bytes, device).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

impl TensorStore {
    /// Loads `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut tensors = HashMap::new();
        if single.exists() {
            tensors = read_safetensors(&single, device)?;
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Safetensors {
                    path: index.clone(),
                    msg: format!("invalid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Safetensors {
                    path: index.clone(),
                    msg: "no `weight_map` object".into(),
                })?;
            let mut files: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            files.sort_unstable();
            files.dedup();
            for f in files {
                // A shard is a file of the checkpoint: never an absolute path or `..` that
                // would read anything else on the machine.
                let inside = !f.is_empty()
                    && Path::new(f)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside {
                    return Err(Error::Safetensors {
                        path: index.clone(),
                        msg: format!("shard {f:?} is not a file inside the checkpoint directory"),
                    });
                }
                tensors.extend(read_safetensors(&dir.join(f), device)?);
            }
        } else {
            return Err(Error::io(
                single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors in checkpoint",
                ),
            ));
        }
        Ok(Self { tensors })
    }

    /// Parses safetensors bytes held in memory (e.g. a model embedded in the binary); `name` is
    /// used in error messages.
    pub fn from_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        Ok(Self {
            tensors: parse_safetensors(bytes, Path::new(name), device)?,
        })
    }

    pub fn from_map(tensors: HashMap<String, Tensor>) -> Self {
        Self { tensors }
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// The tensor `name` (any dtype).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.tensors
            .remove(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// A float tensor of the given shape, converted to f32.
    pub fn float(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        check_shape(name, t, shape)?;
        check_float(name, t)?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

pub(crate) fn check_shape(name: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(Error::BadShape {
            name: name.to_string(),
            got: t.dims().to_vec(),
            expected: shape.to_vec(),
        });
    }
    Ok(())
}

fn check_float(name: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(()),
        other => Err(Error::BadDtype {
            name: name.to_string(),
            got: format!("{other:?}"),
            expected: "a float dtype (F32, F16, BF16)".into(),
        }),
    }
}

pub(crate) fn scalar_f32(name: &str, t: &Tensor) -> Result<f32> {
    check_float(name, t)?;
    if t.elem_count() != 1 {
        return Err(Error::BadShape {
            name: name.to_string(),
            got: t.dims().to_vec(),
            expected: vec![1],
        });
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
}

/// Reads a packed `[ceil(out/4), in]` uint8 weight into a ternary matrix.
pub fn unpack_hf(name: &str, t: &Tensor, out: usize, inp: usize) -> Result<TernaryMatrix> {
    check_shape(name, t, &[out.div_ceil(4), inp])?;
    let bytes = t.flatten_all()?.to_vec1::<u8>()?;
    TernaryMatrix::from_hf_packed(&bytes, out, inp).map_err(|e| match e {
        tritter_kernels::KernelError::BadCode { .. } => Error::BadTernaryCode(name.to_string()),
        other => Error::Kernel(format!("{name}: {other}")),
    })
}

/// Inference weights from a checkpoint, in the layout its `quantization_config` names.
pub struct CheckpointSource {
    store: TensorStore,
    format: WeightFormat,
}

impl CheckpointSource {
    pub fn new(store: TensorStore, cfg: &Config) -> Self {
        Self {
            store,
            format: cfg.weight_format,
        }
    }
}

impl WeightSource for CheckpointSource {
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.store.float(name, shape)?;
        self.store.take(name)?;
        Ok(t)
    }

    fn contains(&self, name: &str) -> bool {
        self.store.tensors.contains_key(name)
    }

    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> Result<BitWeights> {
        let wname = format!("{name}.weight");
        let w = self.store.take(&wname)?;
        if self.format == WeightFormat::Dense {
            check_shape(&wname, &w, &[out, inp])?;
            if w.dtype() == DType::U8 {
                return Err(Error::BadDtype {
                    name: wname,
                    got: "U8".into(),
                    expected:
                        "a float type (dense linears: config.json has no quantization_config)"
                            .into(),
                });
            }
            check_float(&wname, &w)?;
            return Ok(BitWeights::Dense(w.to_dtype(DType::F32)?));
        }
        if w.dtype() == DType::U8 {
            let m = unpack_hf(&wname, &w, out, inp)?;
            let sname = format!("{name}.weight_scale");
            let s = scalar_f32(&sname, self.store.get(&sname)?)?;
            let scale = match self.format {
                // autobitlinear offline multiplies by weight_scale instead of dividing.
                WeightFormat::PackedAutoBitLinear => 1.0 / s,
                WeightFormat::PackedBitLinear | WeightFormat::Online | WeightFormat::Dense => s,
            };
            return Ok(BitWeights::Packed(PackedLinear::new(m, scale)?));
        }
        if self.format != WeightFormat::Online {
            return Err(Error::BadDtype {
                name: wname,
                got: format!("{:?}", w.dtype()),
                expected: "U8 (packed ternary, as quantization_config says offline)".into(),
            });
        }
        check_shape(&wname, &w, &[out, inp])?;
        check_float(&wname, &w)?;
        Ok(BitWeights::Packed(PackedLinear::from_latent(
            &w.to_dtype(DType::F32)?,
        )?))
    }
}

/// Trainable parameters by name, in a deterministic (sorted) order.
#[derive(Debug, Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, t: Tensor) -> Result<()> {
        let v = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
        self.vars.insert(name.to_string(), v);
        Ok(())
    }

    /// Adds an existing variable (shared, not copied): a vision tower's weights trained
    /// alongside the text model.
    pub fn insert_var(&mut self, name: &str, v: Var) {
        self.vars.insert(name.to_string(), v);
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Random initialisation for training from scratch: normal(0, std) for matrices, ones for
    /// norm weights, zeros for norm biases, and the recurrent layers' own (`recurrent_init`);
    /// deterministic for a seed.
    pub fn init(cfg: &Config, seed: u64, std: f32, device: &Device) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut p = Params::new();
        for (name, shape) in param_shapes(cfg) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if let Some(v) = recurrent_init(&name, n) {
                v
            } else if name.contains("norm") && name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("norm") {
                vec![1.0; n]
            } else {
                (0..n)
                    .map(|_| {
                        // Box–Muller from two uniforms.
                        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
                        let u2: f32 = rng.random::<f32>();
                        std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                    })
                    .collect()
            };
            p.insert(&name, Tensor::from_vec(data, shape, device)?)?;
        }
        Ok(p)
    }

    /// Latent parameters from a checkpoint: float tensors as they are, packed ternary weights as
    /// `W_q / weight_scale` (the starting point of QAT from a packed model).
    pub fn from_store(cfg: &Config, store: &TensorStore) -> Result<Self> {
        let mut p = Params::new();
        for (name, shape) in param_shapes(cfg) {
            let t = store.get(&name)?;
            if t.dtype() == DType::U8 {
                let (out, inp) = (shape[0], shape[1]);
                let m = unpack_hf(&name, t, out, inp)?;
                let base = name.trim_end_matches(".weight");
                let sname = format!("{base}.weight_scale");
                let s = scalar_f32(&sname, store.get(&sname)?)?;
                let s = match cfg.weight_format {
                    WeightFormat::PackedAutoBitLinear => 1.0 / s,
                    _ => s,
                };
                let vals: Vec<f32> = m.to_ternary().into_iter().map(|v| v as f32 / s).collect();
                p.insert(&name, Tensor::from_vec(vals, (out, inp), t.device())?)?;
            } else {
                p.insert(&name, store.float(&name, &shape)?)?;
            }
        }
        Ok(p)
    }

    /// Writes every parameter as f32 safetensors (latent master weights).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&map, path).map_err(|e| Error::Safetensors {
            path: PathBuf::from(path),
            msg: e.to_string(),
        })
    }
}

impl WeightSource for &Params {
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let v = self
            .vars
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        check_shape(name, v.as_tensor(), shape)?;
        Ok(v.as_tensor().clone())
    }

    fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> Result<BitWeights> {
        Ok(BitWeights::Latent(
            self.dense(&format!("{name}.weight"), &[out, inp])?,
        ))
    }
}

/// The recurrent layers' starting values, as transformers' Granite 4 / Bamba initialise them:
/// `A_log = log(1..=H)` (decay rates spread over the heads), `dt_bias` and `D` ones, conv biases
/// zeros. `None` for any other tensor.
fn recurrent_init(name: &str, n: usize) -> Option<Vec<f32>> {
    if name.ends_with(".A_log") {
        Some((1..=n).map(|h| (h as f32).ln()).collect())
    } else if name.ends_with(".dt_bias") || name.ends_with(".D") {
        Some(vec![1.0; n])
    } else if name.contains("conv1d") && name.ends_with(".bias") {
        Some(vec![0.0; n])
    } else {
        None
    }
}

/// A [`WeightSource`] that notes the name and shape of every tensor the loader asks for and
/// hands out zero-stride views (one scalar broadcast), so no weight memory is allocated.
#[derive(Debug, Default)]
struct ShapeRecorder {
    shapes: Vec<(String, Vec<usize>)>,
}

impl ShapeRecorder {
    fn view(&mut self, name: String, shape: &[usize]) -> Result<Tensor> {
        self.shapes.push((name, shape.to_vec()));
        Ok(Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(shape)?)
    }
}

impl WeightSource for ShapeRecorder {
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.view(name.to_string(), shape)
    }

    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> Result<BitWeights> {
        Ok(BitWeights::Latent(
            self.view(format!("{name}.weight"), &[out, inp])?,
        ))
    }

    fn contains(&self, _name: &str) -> bool {
        false
    }
}

/// The parameter names and shapes of a model with this config (HF BitNet names), in the order
/// [`Transformer::load`] asks for them: the loader's own walk run against a recorder, so the
/// layer is stated once (in `layer.rs`).
pub fn param_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let mut rec = ShapeRecorder::default();
    // The recorder's views are broadcasts of one scalar, which fit any shape, and the loader
    // checks nothing else, so the walk runs to the end; were it ever to stop early, the list
    // would hold the tensors named up to there and loading would report the rest as missing.
    let _ = Transformer::load(cfg, &mut rec, &Device::Cpu);
    rec.shapes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NormPlacement, QkNormKind};

    /// The list as it was written out by hand before it was recorded from the loader.
    fn by_hand(cfg: &Config) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let q = cfg.num_heads * cfg.head_dim;
        let kv = cfg.num_kv_heads * cfg.head_dim;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            let mut push = |n: &str, s: Vec<usize>| out.push((format!("{p}.{n}"), s));
            push("input_layernorm.weight", vec![h]);
            push("post_attention_layernorm.weight", vec![h]);
            push("self_attn.q_proj.weight", vec![q, h]);
            push("self_attn.k_proj.weight", vec![kv, h]);
            push("self_attn.v_proj.weight", vec![kv, h]);
            push("self_attn.o_proj.weight", vec![h, q]);
            if cfg.mlp_gated {
                push("mlp.gate_proj.weight", vec![i, h]);
            }
            push("mlp.up_proj.weight", vec![i, h]);
            push("mlp.down_proj.weight", vec![h, i]);
            if cfg.norm_placement == NormPlacement::Subln {
                push("self_attn.attn_sub_norm.weight", vec![q]);
                push("mlp.ffn_sub_norm.weight", vec![i]);
            }
            match cfg.qk_norm {
                None => {}
                Some(QkNormKind::Rms) => {
                    push("self_attn.q_norm.weight", vec![cfg.head_dim]);
                    push("self_attn.k_norm.weight", vec![cfg.head_dim]);
                }
                Some(QkNormKind::Layernorm) => {
                    let (qh, kh) = (cfg.num_heads, cfg.num_kv_heads);
                    push("self_attn.q_norm.weight", vec![qh, cfg.head_dim]);
                    push("self_attn.q_norm.bias", vec![qh, cfg.head_dim]);
                    push("self_attn.k_norm.weight", vec![kh, cfg.head_dim]);
                    push("self_attn.k_norm.bias", vec![kh, cfg.head_dim]);
                }
            }
            if cfg.bitlinear_rms_norm.is_some() {
                let mut lin = vec![
                    ("self_attn.q_proj", h),
                    ("self_attn.k_proj", h),
                    ("self_attn.v_proj", h),
                    ("self_attn.o_proj", q),
                    ("mlp.up_proj", h),
                    ("mlp.down_proj", i),
                ];
                if cfg.mlp_gated {
                    lin.push(("mlp.gate_proj", h));
                }
                for (n, d) in lin {
                    push(&format!("{n}.rms_norm.weight"), vec![d]);
                }
            }
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !cfg.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        out
    }

    /// Same names and shapes; the same order of the tensors `Params::init` draws random values
    /// for (every name without `norm`), so a seed gives the same initial weights.
    #[test]
    fn recorded_shapes_equal_the_hand_written_list() {
        let mut a = Config::tritter_tiny();
        a.num_layers = 2;
        let mut b = a.clone();
        b.norm_placement = NormPlacement::Pre;
        b.qk_norm = Some(QkNormKind::Rms);
        b.bitlinear_rms_norm = Some(1e-6);
        b.tie_word_embeddings = false;
        b.mlp_gated = false;
        let mut c = b.clone();
        c.norm_placement = NormPlacement::SwinNorm;
        c.mlp_gated = true;
        c.num_kv_heads = c.num_heads;
        let mut d = a.clone();
        d.norm_placement = NormPlacement::Pre;
        d.qk_norm = Some(QkNormKind::Layernorm);
        d.weight_format = WeightFormat::Dense;
        for cfg in [a, b, c, d] {
            let (got, want) = (param_shapes(&cfg), by_hand(&cfg));
            let drawn = |v: &[(String, Vec<usize>)]| -> Vec<(String, Vec<usize>)> {
                v.iter()
                    .filter(|(n, _)| !n.contains("norm"))
                    .cloned()
                    .collect()
            };
            assert_eq!(drawn(&got), drawn(&want));
            let (mut got, mut want) = (got, want);
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
    }
}
