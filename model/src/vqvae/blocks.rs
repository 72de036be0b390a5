//! The VQ-VAE's building blocks, as HF transformers' Chameleon VQ-VAE states them: 2-D
//! convolution, GroupNorm(32, eps 1e-6), the resnet block (`norm1, swish, conv1, norm2, swish,
//! dropout, conv2`, plus a 1×1 `nin_shortcut` when the channel count changes), the single-head
//! spatial attention block (`norm, q, k, v` 1×1 convs, softmax(qᵀk / √C), `proj_out`, residual),
//! the downsample (zero pad right and bottom by one, 3×3 conv stride 2) and, for the decoder, the
//! taming-transformers upsample (nearest ×2, 3×3 conv).
//!
//! Must match `ChameleonVQVAEEncoderResnetBlock`, `ChameleonVQVAEEncoderAttnBlock` and
//! `ChameleonVQVAEEncoderConvDownsample` in `modeling_chameleon.py`, tensor names included. Every
//! op here has a candle backward (GroupNorm is built from basic ops, softmax is the non-fused
//! `candle_nn::ops::softmax`), so the same blocks serve training and inference.

use super::config::{NORM_EPS, NORM_GROUPS};
use crate::error::{Error, Result};
use candle_core::{Module, Tensor, D};
use candle_nn::{GroupNorm, Init, VarBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Tensors in the order the model asked for them: full name, tensor, initialiser.
pub(crate) type Named = Vec<(String, Tensor, Init)>;

/// A `VarBuilder` that records every tensor it hands out under its full name (so the model can
/// be saved and listed), and — when loading a file — checks presence and shape first so the
/// error names the tensor.
#[derive(Clone)]
pub(crate) struct Builder<'a> {
    vb: VarBuilder<'a>,
    file_shapes: Option<Rc<HashMap<String, Vec<usize>>>>,
    record: Rc<RefCell<Named>>,
}

impl<'a> Builder<'a> {
    /// Wraps `vb`; `file_shapes` holds the shapes of a loaded file's tensors (full names).
    pub(crate) fn new(
        vb: VarBuilder<'a>,
        file_shapes: Option<HashMap<String, Vec<usize>>>,
    ) -> Self {
        Builder {
            vb,
            file_shapes: file_shapes.map(Rc::new),
            record: Rc::new(RefCell::new(Vec::new())),
        }
    }

    /// The builder one name level down.
    pub(crate) fn pp(&self, name: impl ToString) -> Builder<'a> {
        Builder {
            vb: self.vb.pp(name),
            file_shapes: self.file_shapes.clone(),
            record: self.record.clone(),
        }
    }

    fn full_name(&self, name: &str) -> String {
        let prefix = self.vb.prefix();
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    }

    /// Whether a loaded file holds `name` (always true when initialising).
    pub(crate) fn has(&self, name: &str) -> bool {
        match &self.file_shapes {
            Some(shapes) => shapes.contains_key(&self.full_name(name)),
            None => true,
        }
    }

    /// The tensor `name` of `shape` (initialised with `init` in a `VarMap`).
    pub(crate) fn get(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        let full = self.full_name(name);
        if let Some(shapes) = &self.file_shapes {
            match shapes.get(&full) {
                None => return Err(Error::MissingTensor(full)),
                Some(got) if got.as_slice() != shape => {
                    return Err(Error::BadShape {
                        name: full,
                        got: got.clone(),
                        expected: shape.to_vec(),
                    })
                }
                Some(_) => {}
            }
        }
        let t = self.vb.get_with_hints(shape, name, init)?;
        self.record.borrow_mut().push((full, t.clone(), init));
        Ok(t)
    }

    /// Every tensor handed out so far, in order.
    pub(crate) fn recorded(&self) -> Named {
        self.record.borrow().clone()
    }
}

/// A 2-D convolution with bias (`torch.nn.Conv2d` layout: weight `[out, in, k, k]`).
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv {
    /// `{name}.weight`, `{name}.bias` under `b`; torch's default init (uniform ±1/√fan_in).
    pub(crate) fn new(
        b: &Builder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv> {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Conv {
            weight: b.get(&[cout, cin, k, k], "weight", init)?,
            bias: b.get(&[cout], "bias", init)?,
            padding,
            stride,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        Ok(y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?)
    }
}

/// GroupNorm(32, eps 1e-6, affine): weight init 1, bias 0.
pub(crate) fn group_norm(b: &Builder, channels: usize) -> Result<GroupNorm> {
    let weight = b.get(&[channels], "weight", Init::Const(1.0))?;
    let bias = b.get(&[channels], "bias", Init::Const(0.0))?;
    Ok(GroupNorm::new(
        weight,
        bias,
        channels,
        NORM_GROUPS,
        NORM_EPS,
    )?)
}

/// `x · sigmoid(x)`.
pub(crate) fn swish(x: &Tensor) -> Result<Tensor> {
    Ok(x.silu()?)
}

/// The resnet block.
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv,
    norm2: GroupNorm,
    conv2: Conv,
    nin_shortcut: Option<Conv>,
    dropout: f32,
}

impl ResnetBlock {
    pub(crate) fn new(b: &Builder, cin: usize, cout: usize, dropout: f64) -> Result<Self> {
        let nin_shortcut = if cin != cout {
            Some(Conv::new(&b.pp("nin_shortcut"), cin, cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(ResnetBlock {
            norm1: group_norm(&b.pp("norm1"), cin)?,
            conv1: Conv::new(&b.pp("conv1"), cin, cout, 3, 1, 1)?,
            norm2: group_norm(&b.pp("norm2"), cout)?,
            conv2: Conv::new(&b.pp("conv2"), cout, cout, 3, 1, 1)?,
            nin_shortcut,
            dropout: dropout as f32,
        })
    }

    /// `train` turns dropout on (when the config has any).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv1.forward(&swish(&self.norm1.forward(x)?)?)?;
        let mut h = swish(&self.norm2.forward(&h)?)?;
        if train && self.dropout > 0.0 {
            h = candle_nn::ops::dropout(&h, self.dropout)?;
        }
        let h = self.conv2.forward(&h)?;
        let residual = match &self.nin_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((residual + h)?)
    }
}

/// The single-head spatial self-attention block.
#[derive(Debug, Clone)]
pub(crate) struct AttnBlock {
    norm: GroupNorm,
    q: Conv,
    k: Conv,
    v: Conv,
    proj_out: Conv,
}

impl AttnBlock {
    pub(crate) fn new(b: &Builder, ch: usize) -> Result<Self> {
        Ok(AttnBlock {
            norm: group_norm(&b.pp("norm"), ch)?,
            q: Conv::new(&b.pp("q"), ch, ch, 1, 1, 0)?,
            k: Conv::new(&b.pp("k"), ch, ch, 1, 1, 0)?,
            v: Conv::new(&b.pp("v"), ch, ch, 1, 1, 0)?,
            proj_out: Conv::new(&b.pp("proj_out"), ch, ch, 1, 1, 0)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (bsz, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let q = self.q.forward(&n)?.reshape((bsz, c, h * w))?;
        let k = self.k.forward(&n)?.reshape((bsz, c, h * w))?;
        let v = self.v.forward(&n)?.reshape((bsz, c, h * w))?;
        // scores[b, i, j] = q_i · k_j / √C over the positions i, j.
        let scores = (q.transpose(1, 2)?.matmul(&k)? * (c as f64).powf(-0.5))?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        // out[b, c, i] = Σ_j v[b, c, j] · probs[b, i, j].
        let out = v.matmul(&probs.transpose(1, 2)?)?.reshape((bsz, c, h, w))?;
        Ok((x + self.proj_out.forward(&out)?)?)
    }
}

/// Downsample by 2: zero pad one column right and one row below, then a 3×3 stride-2 conv.
#[derive(Debug, Clone)]
pub(crate) struct Downsample {
    conv: Conv,
}

impl Downsample {
    pub(crate) fn new(b: &Builder, ch: usize) -> Result<Self> {
        Ok(Downsample {
            conv: Conv::new(&b.pp("conv"), ch, ch, 3, 2, 0)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let padded = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        self.conv.forward(&padded)
    }
}

/// Upsample by 2: nearest-neighbour ×2, then a 3×3 conv (taming-transformers `Upsample`).
#[derive(Debug, Clone)]
pub(crate) struct Upsample {
    conv: Conv,
}

impl Upsample {
    pub(crate) fn new(b: &Builder, ch: usize) -> Result<Self> {
        Ok(Upsample {
            conv: Conv::new(&b.pp("conv"), ch, ch, 3, 1, 1)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        self.conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }
}

/// The middle: resnet block, attention (when `attn_type` is vanilla), resnet block.
#[derive(Debug, Clone)]
pub(crate) struct Mid {
    block_1: ResnetBlock,
    attn_1: Option<AttnBlock>,
    block_2: ResnetBlock,
}

impl Mid {
    /// `mid.block_1`, `mid.attn_1`, `mid.block_2` under `b` (which is `…mid`).
    pub(crate) fn new(b: &Builder, ch: usize, attn: bool, dropout: f64) -> Result<Self> {
        Ok(Mid {
            block_1: ResnetBlock::new(&b.pp("block_1"), ch, ch, dropout)?,
            attn_1: if attn {
                Some(AttnBlock::new(&b.pp("attn_1"), ch)?)
            } else {
                None
            },
            block_2: ResnetBlock::new(&b.pp("block_2"), ch, ch, dropout)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.block_1.forward(x, train)?;
        if let Some(a) = &self.attn_1 {
            h = a.forward(&h)?;
        }
        self.block_2.forward(&h, train)
    }
}

/// One level: resnet blocks, each followed by its attention block when the level has them.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    blocks: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
}

impl Level {
    /// `block.{i}` (and `attn.{i}`) under `b`: `n` blocks, the first from `cin` to `cout`.
    pub(crate) fn new(
        b: &Builder,
        n: usize,
        (cin, cout): (usize, usize),
        attn: bool,
        dropout: f64,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(n);
        let mut attns = Vec::new();
        let mut ch = cin;
        for i in 0..n {
            blocks.push(ResnetBlock::new(&b.pp("block").pp(i), ch, cout, dropout)?);
            ch = cout;
            if attn {
                attns.push(AttnBlock::new(&b.pp("attn").pp(i), ch)?);
            }
        }
        Ok(Level {
            blocks,
            attn: attns,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h, train)?;
            if let Some(a) = self.attn.get(i) {
                h = a.forward(&h)?;
            }
        }
        Ok(h)
    }
}
