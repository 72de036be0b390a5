//! The Gated DeltaNet token mixer (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks:
//! Improving Mamba2 with Delta Rule"), in the variant of fla-org's `fla.layers.GatedDeltaNet`
//! with `use_gate = True`, `use_short_conv = True`, `allow_neg_eigval = False`,
//! `num_v_heads = num_heads`, `conv_bias` as configured:
//!
//! ```text
//! q = silu(conv_q(q_proj x))   k = silu(conv_k(k_proj x))   v = silu(conv_v(v_proj x))
//! β = sigmoid(b_proj x)        g = −exp(A_log) · softplus(a_proj x + dt_bias)     (α = exp g)
//! o = gated delta rule(q, k, v, g, β)       (q, k L2-normalised, q scaled by 1/√d_k; `delta`)
//! y = o_proj( RMSNorm_{d_v}(o) · o_norm.weight · silu(g_proj x) )                  (per head)
//! ```
//!
//! `a_proj` and `b_proj` (one output per head: the decay and the write strength) are
//! full-precision linears in either projection mode; the others follow it.
//!
//! The convs are depthwise and causal (kernel `K`, fla's `ShortConvolution`). The layer is the
//! mixer only (fla's layer; a block adds its own norm, residual and MLP). Tensor names under a
//! prefix `p`, as fla's: `p.{q,k,v,a,b,g,o}_proj.weight`, `p.{q,k,v}_conv1d.weight` `[C, 1, K]`
//! (and `.bias` with `conv_bias`), `p.A_log`, `p.dt_bias` `[H]`, `p.o_norm.weight` `[d_v]`.
//!
//! Must match: the chunked form equals the recurrent form and a naive per-token statement of the
//! recurrence (`hybrid/tests.rs`); the rule equals transformers' torch statement
//! (`model/tests/golden_hybrid.rs`). Not implemented: grouped value heads (`num_v_heads >
//! num_heads`), `allow_neg_eigval`, the ungated output.

use super::delta::{gated_delta_chunked, gated_delta_recurrent, DeltaInputs};
use super::{causal_conv, conv_weight, linear, rms, softplus, Projection};
use crate::bitlinear::BitLinear;
use crate::error::{Error, Result};
use crate::source::WeightSource;
use candle_core::{DType, Device, Tensor, D};

/// The shape of a Gated DeltaNet layer.
#[derive(Debug, Clone, PartialEq)]
pub struct GdnConfig {
    pub hidden_size: usize,
    /// Heads of q, k and v alike.
    pub num_heads: usize,
    pub head_k_dim: usize,
    /// fla: `head_dim · expand_v`.
    pub head_v_dim: usize,
    pub conv_kernel: usize,
    pub conv_bias: bool,
    pub chunk_size: usize,
    /// Of the output RMSNorm (fla `norm_eps`).
    pub norm_eps: f64,
    pub projection: Projection,
}

impl GdnConfig {
    pub fn key_dim(&self) -> usize {
        self.num_heads * self.head_k_dim
    }
    pub fn value_dim(&self) -> usize {
        self.num_heads * self.head_v_dim
    }
    /// Channels through the short convs: q, k and v.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }
}

/// What the layer carries between calls: the convs' last `K − 1` inputs `[B, K − 1, conv_dim]`
/// (q | k | v channels) and the delta-rule state `[B, H, d_k, d_v]`.
#[derive(Debug, Clone)]
pub struct GdnState {
    pub conv: Tensor,
    pub s: Tensor,
}

/// One Gated DeltaNet mixer.
#[derive(Debug, Clone)]
pub struct GatedDeltaNet {
    cfg: GdnConfig,
    q_proj: BitLinear,
    k_proj: BitLinear,
    v_proj: BitLinear,
    a_proj: BitLinear,
    b_proj: BitLinear,
    g_proj: BitLinear,
    o_proj: BitLinear,
    /// The three convs' weights stacked `[conv_dim, K]` (q | k | v), and biases.
    conv_w: Tensor,
    conv_b: Option<Tensor>,
    a_log: Tensor,
    dt_bias: Tensor,
    o_norm: Tensor,
}

impl GatedDeltaNet {
    pub fn load(src: &mut dyn WeightSource, cfg: &GdnConfig, p: &str) -> Result<Self> {
        let ok = [
            cfg.hidden_size,
            cfg.num_heads,
            cfg.head_k_dim,
            cfg.head_v_dim,
        ]
        .iter()
        .all(|&n| n > 0)
            && cfg.conv_kernel > 0
            && cfg.chunk_size > 0;
        if !ok {
            return Err(Error::Invalid(format!(
                "Gated DeltaNet: invalid shape {cfg:?} (sizes must be positive)"
            )));
        }
        let (hid, h, kd, vd) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.key_dim(),
            cfg.value_dim(),
        );
        let mode = cfg.projection;
        let kk = cfg.conv_kernel;
        let mut lin = |name: &str, out: usize, inp: usize, full: bool| {
            let m = if full { Projection::Dense } else { mode };
            linear(src, m, &format!("{p}.{name}"), out, inp)
        };
        let (q_proj, k_proj, v_proj) = (
            lin("q_proj", kd, hid, false)?,
            lin("k_proj", kd, hid, false)?,
            lin("v_proj", vd, hid, false)?,
        );
        // The gates' projections (one output per head) stay full precision, as the attention
        // scores' own scale does: H × C weights, and a ternary packing needs H % 4 == 0.
        let (a_proj, b_proj) = (lin("a_proj", h, hid, true)?, lin("b_proj", h, hid, true)?);
        let (g_proj, o_proj) = (
            lin("g_proj", vd, hid, false)?,
            lin("o_proj", hid, vd, false)?,
        );
        let chans = [("q", kd), ("k", kd), ("v", vd)];
        let mut ws = Vec::with_capacity(3);
        let mut bs = Vec::with_capacity(3);
        for (n, c) in chans {
            ws.push(conv_weight(src, &format!("{p}.{n}_conv1d.weight"), c, kk)?);
            if cfg.conv_bias {
                bs.push(src.dense(&format!("{p}.{n}_conv1d.bias"), &[c])?);
            }
        }
        Ok(Self {
            q_proj,
            k_proj,
            v_proj,
            a_proj,
            b_proj,
            g_proj,
            o_proj,
            conv_w: Tensor::cat(&ws, 0)?,
            conv_b: if cfg.conv_bias {
                Some(Tensor::cat(&bs, 0)?)
            } else {
                None
            },
            a_log: src.dense(&format!("{p}.A_log"), &[h])?,
            dt_bias: src.dense(&format!("{p}.dt_bias"), &[h])?,
            o_norm: src.dense(&format!("{p}.o_norm.weight"), &[cfg.head_v_dim])?,
            cfg: cfg.clone(),
        })
    }

    /// The projections: q, k, v, a, b, g, o.
    pub fn linears(&self) -> Vec<&BitLinear> {
        vec![
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.a_proj,
            &self.b_proj,
            &self.g_proj,
            &self.o_proj,
        ]
    }

    pub fn config(&self) -> &GdnConfig {
        &self.cfg
    }

    /// The state before any token, for a batch of `b`.
    pub fn zero_state(&self, b: usize, device: &Device) -> Result<GdnState> {
        let c = &self.cfg;
        Ok(GdnState {
            conv: Tensor::zeros((b, c.conv_kernel - 1, c.conv_dim()), DType::F32, device)?,
            s: Tensor::zeros(
                (b, c.num_heads, c.head_k_dim, c.head_v_dim),
                DType::F32,
                device,
            )?,
        })
    }

    /// `x` `[B, T, hidden]` → `[B, T, hidden]` and the state after it, by the chunked form with
    /// the configured chunk length (training, prefill).
    pub fn forward(&self, x: &Tensor, state: Option<&GdnState>) -> Result<(Tensor, GdnState)> {
        self.run(x, state, Some(self.cfg.chunk_size))
    }

    /// [`Self::forward`] with a given chunk length.
    pub fn forward_chunked(
        &self,
        x: &Tensor,
        state: Option<&GdnState>,
        chunk: usize,
    ) -> Result<(Tensor, GdnState)> {
        self.run(x, state, Some(chunk))
    }

    /// `x` `[B, T, hidden]` through the recurrent form, token by token (decode: `T = 1`).
    pub fn forward_recurrent(
        &self,
        x: &Tensor,
        state: Option<&GdnState>,
    ) -> Result<(Tensor, GdnState)> {
        self.run(x, state, None)
    }

    /// One token `x` `[B, hidden]` → `[B, hidden]` and the new state.
    pub fn step(&self, x: &Tensor, state: Option<&GdnState>) -> Result<(Tensor, GdnState)> {
        let (y, s) = self.run(&x.unsqueeze(1)?, state, None)?;
        Ok((y.squeeze(1)?, s))
    }

    fn run(
        &self,
        x: &Tensor,
        state: Option<&GdnState>,
        chunk: Option<usize>,
    ) -> Result<(Tensor, GdnState)> {
        let c = &self.cfg;
        let (b, t, hid) = x.dims3()?;
        if hid != c.hidden_size {
            return Err(Error::Invalid(format!(
                "Gated DeltaNet: input has {hid} features, the layer {}",
                c.hidden_size
            )));
        }
        let (h, dk, dv) = (c.num_heads, c.head_k_dim, c.head_v_dim);
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let qkv = Tensor::cat(
            &[
                f32(self.q_proj.forward(x)?)?,
                f32(self.k_proj.forward(x)?)?,
                f32(self.v_proj.forward(x)?)?,
            ],
            D::Minus1,
        )?;
        let (qkv, conv) = causal_conv(
            &qkv,
            &self.conv_w,
            self.conv_b.as_ref(),
            state.map(|s| &s.conv),
        )?;
        let qkv = qkv.silu()?;
        let q = qkv.narrow(D::Minus1, 0, h * dk)?.reshape((b, t, h, dk))?;
        let k = qkv
            .narrow(D::Minus1, h * dk, h * dk)?
            .reshape((b, t, h, dk))?;
        let v = qkv
            .narrow(D::Minus1, 2 * h * dk, h * dv)?
            .reshape((b, t, h, dv))?;
        let beta = candle_nn::ops::sigmoid(&f32(self.b_proj.forward(x)?)?)?;
        let g = softplus(&f32(self.a_proj.forward(x)?)?.broadcast_add(&self.dt_bias)?)?
            .broadcast_mul(&self.a_log.exp()?.neg()?)?;
        let inputs = DeltaInputs {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            beta: &beta,
        };
        let s0 = state.map(|s| &s.s);
        let (o, s) = match chunk {
            Some(l) => gated_delta_chunked(inputs, s0, l)?,
            None => gated_delta_recurrent(inputs, s0)?,
        };
        let gate = f32(self.g_proj.forward(x)?)?
            .reshape((b, t, h, dv))?
            .silu()?;
        let o = rms(&o, c.norm_eps)?
            .broadcast_mul(&self.o_norm)?
            .mul(&gate)?
            .reshape((b, t, h * dv))?;
        let y = self.o_proj.forward(&o.to_dtype(x.dtype())?)?;
        Ok((y, GdnState { conv, s }))
    }
}
