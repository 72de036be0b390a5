//! The vision → text connector as transformers' `Idefics3Connector`: `pixel_shuffle` (space to
//! depth: each `s×s` block of patches becomes one token of width `D·s²`, with Idefics3's exact
//! reshape / permute order, so HF weights apply) then `modality_projection.proj`, a bias-free
//! `Linear(D·s², text_hidden)`. Tensor name `connector.modality_projection.proj.weight`
//! (`model.connector.…` in a full Idefics3 / SmolVLM checkpoint). Differentiable throughout.

use crate::error::{Error, Result};
use crate::vision::layers::Linear;
use candle_core::{safetensors::Load, DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;

/// Tritter's pixel-shuffle factor: 16 patches per text-side token (64 tokens for 32×32 patches).
pub const DEFAULT_SCALE: usize = 4;

/// Names under which checkpoints store the projection.
const NAMES: [&str; 2] = [
    "connector.modality_projection.proj.weight",
    "model.connector.modality_projection.proj.weight",
];

/// The side of the patch grid of `n` tokens, when `n` is a square whose side `scale` divides.
fn grid_side(n: usize, scale: usize) -> Result<usize> {
    if scale == 0 {
        return Err(Error::Invalid(
            "pixel shuffle: scale factor must be > 0".into(),
        ));
    }
    let side = (n as f64).sqrt().round() as usize;
    if side * side != n {
        return Err(Error::Invalid(format!(
            "pixel shuffle: {n} patches are not a square grid"
        )));
    }
    if !side.is_multiple_of(scale) {
        return Err(Error::Invalid(format!(
            "pixel shuffle: grid side {side} (of {n} patches) is not divisible by scale {scale}"
        )));
    }
    Ok(side)
}

/// Idefics3's `pixel_shuffle(x, s)`: `[B, N, D]` → `[B, N/s², D·s²]`, the same view / permute
/// sequence (`[B,h,w,D]` → `[B,h,w/s,D·s]` → swap 1,2 → `[B,w/s,h/s,D·s²]` → swap 1,2).
pub fn pixel_shuffle(x: &Tensor, scale: usize) -> Result<Tensor> {
    let (b, n, d) = x.dims3().map_err(|_| {
        Error::Invalid(format!(
            "pixel shuffle: expected [batch, patches, dim], got {:?}",
            x.dims()
        ))
    })?;
    let side = grid_side(n, scale)?;
    let (h, w, s) = (side, side, scale);
    let y = x
        .reshape((b, h, w / s, d * s))?
        .permute((0, 2, 1, 3))?
        .reshape((b, w / s, h / s, d * s * s))?
        .permute((0, 2, 1, 3))?
        .reshape((b, n / (s * s), d * s * s))?;
    Ok(y)
}

/// `Idefics3Connector`: pixel shuffle then a bias-free projection to the text width.
#[derive(Debug, Clone)]
pub struct Connector {
    scale: usize,
    vision_hidden: usize,
    text_hidden: usize,
    proj: Linear,
}

impl Connector {
    /// `{vb}.modality_projection.proj.weight [text_hidden, vision_hidden·scale²]`, `vb` pointing
    /// at the connector (`vb.pp("connector")` of a model root). A fresh `VarMap` initialises it
    /// Xavier-uniform.
    pub fn new(
        scale: usize,
        vision_hidden: usize,
        text_hidden: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if scale == 0 || scale > 64 || vision_hidden == 0 || text_hidden == 0 {
            return Err(Error::Invalid(format!(
                "connector: scale {scale} must be in 1..=64 and widths \
                 ({vision_hidden} → {text_hidden}) > 0"
            )));
        }
        let in_dim = vision_hidden * scale * scale;
        let proj = Linear::new(
            &vb.pp("modality_projection").pp("proj"),
            in_dim,
            text_hidden,
            false,
        )?;
        Ok(Self {
            scale,
            vision_hidden,
            text_hidden,
            proj,
        })
    }

    /// From a safetensors file holding `connector.modality_projection.proj.weight` or
    /// `model.connector.modality_projection.proj.weight` (shape checked).
    pub fn load(
        file: &Path,
        scale: usize,
        vision_hidden: usize,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self> {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
            path: file.to_path_buf(),
            msg: e.to_string(),
        })?;
        let (name, view) = NAMES
            .iter()
            .find_map(|n| st.tensor(n).ok().map(|v| (*n, v)))
            .ok_or_else(|| Error::MissingTensor(NAMES[0].into()))?;
        let weight = view.load(device).map_err(|e| Error::Safetensors {
            path: file.to_path_buf(),
            msg: format!("{name}: {e}"),
        })?;
        let expected = vec![text_hidden, vision_hidden * scale * scale];
        if weight.dims() != expected.as_slice() {
            return Err(Error::BadShape {
                name: name.into(),
                got: weight.dims().to_vec(),
                expected,
            });
        }
        let mut map = HashMap::new();
        map.insert("modality_projection.proj.weight".to_string(), weight);
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        Self::new(scale, vision_hidden, text_hidden, vb)
    }

    pub fn scale(&self) -> usize {
        self.scale
    }

    /// Output width (the text model's hidden size).
    pub fn text_hidden(&self) -> usize {
        self.text_hidden
    }

    /// Text-side tokens per image of `patches` patches (`patches / scale²`).
    pub fn tokens_for(&self, patches: usize) -> Result<usize> {
        grid_side(patches, self.scale)?;
        Ok(patches / (self.scale * self.scale))
    }

    /// Number of scalar parameters.
    pub fn param_count(&self) -> usize {
        self.text_hidden * self.vision_hidden * self.scale * self.scale
    }

    /// `[B, N, D]` → `[B, N/s², text_hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dims().last().copied().unwrap_or(0);
        if d != self.vision_hidden {
            return Err(Error::Invalid(format!(
                "connector: input width {d}, expected the vision width {}",
                self.vision_hidden
            )));
        }
        self.proj.forward(&pixel_shuffle(x, self.scale)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// Idefics3's pixel shuffle read off its view / permute sequence, one index at a time:
    /// `out[b, r1·(w/s) + c1, m] = x[b, r1·s + m / (D·s), c1·s + (m mod D·s) / D, m mod D]`.
    fn naive(x: &[f32], b: usize, side: usize, d: usize, s: usize) -> Vec<f32> {
        let g = side / s;
        let mut out = vec![0f32; x.len()];
        for bi in 0..b {
            for r1 in 0..g {
                for c1 in 0..g {
                    for m in 0..d * s * s {
                        let r = r1 * s + m / (d * s);
                        let c = c1 * s + (m % (d * s)) / d;
                        let e = m % d;
                        let src = ((bi * side + r) * side + c) * d + e;
                        let dst = (bi * g * g + r1 * g + c1) * d * s * s + m;
                        out[dst] = x[src];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn pixel_shuffle_matches_index_statement() {
        for (b, side, d, s) in [(2, 8, 3, 4), (1, 6, 5, 2), (1, 4, 2, 1), (3, 12, 4, 3)] {
            let n = b * side * side * d;
            let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let x = Tensor::from_vec(data.clone(), (b, side * side, d), &Device::Cpu).unwrap();
            let y = pixel_shuffle(&x, s).unwrap();
            assert_eq!(y.dims(), &[b, side * side / (s * s), d * s * s]);
            let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                got,
                naive(&data, b, side, d, s),
                "b {b} side {side} d {d} s {s}"
            );
        }
    }

    #[test]
    fn bad_grids_are_clear_errors() {
        let x = Tensor::zeros((1, 60, 4), DType::F32, &Device::Cpu).unwrap();
        let e = pixel_shuffle(&x, 2).unwrap_err().to_string();
        assert!(e.contains("60 patches are not a square"), "{e}");
        let x = Tensor::zeros((1, 36, 4), DType::F32, &Device::Cpu).unwrap();
        let e = pixel_shuffle(&x, 4).unwrap_err().to_string();
        assert!(e.contains("grid side 6") && e.contains("scale 4"), "{e}");
        let x = Tensor::zeros((36, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(pixel_shuffle(&x, 2).is_err());
    }

    #[test]
    fn trainable_connector_shapes_names_and_gradients() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let conn = Connector::new(DEFAULT_SCALE, 8, 12, vb.pp("connector")).unwrap();
        let names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        assert_eq!(
            names,
            vec!["connector.modality_projection.proj.weight".to_string()]
        );
        assert_eq!(conn.param_count(), 12 * 8 * 16);
        assert_eq!(conn.tokens_for(1024).unwrap(), 64);
        let x = Tensor::arange(0f32, 1024.0, &Device::Cpu)
            .unwrap()
            .sin()
            .unwrap()
            .reshape((2, 64, 8))
            .unwrap();
        let y = conn.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 4, 12]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let var = map.all_vars()[0].clone();
        let g = grads.get(var.as_tensor()).unwrap();
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        let wrong = Tensor::zeros((1, 64, 7), DType::F32, &Device::Cpu).unwrap();
        assert!(conn
            .forward(&wrong)
            .unwrap_err()
            .to_string()
            .contains("width 7"));
    }
}
