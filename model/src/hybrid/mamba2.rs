//! The Mamba-2 block: `x + mixer(RMSNorm(x))`, as transformers' `Mamba2Block` and `Mamba2Mixer`
//! (`models/mamba2/modeling_mamba2.py`, the torch path; Dao & Gu 2024), with its tensor names and
//! shapes under a prefix `p`:
//!
//! | name | shape |
//! |---|---|
//! | `p.norm.weight` | `[hidden]` |
//! | `p.mixer.in_proj.weight` | `[2·I + 2·G·N + H, hidden]` (z, x, B, C, dt) |
//! | `p.mixer.conv1d.weight`, `.bias` | `[I + 2·G·N, 1, K]`, `[I + 2·G·N]` |
//! | `p.mixer.dt_bias`, `p.mixer.A_log`, `p.mixer.D` | `[H]` |
//! | `p.mixer.norm.weight` | `[I]` (gated RMSNorm in `G` groups) |
//! | `p.mixer.out_proj.weight` | `[hidden, I]` |
//!
//! with `I = H·P` (heads × head dim). The mixer: `in_proj` → split z | xBC | dt; xBC through the
//! depthwise causal conv and SiLU, split x | B | C; `dt = softplus(dt + dt_bias)`, `A = −exp(A_log)`;
//! the SSD scan (`ssd`); `y·silu(z)` normalised per group (HF `MambaRMSNormGated`,
//! gate before norm); `out_proj`. The projections are [`BitLinear`]s, ternary or dense
//! ([`Projection`]). No biases on the projections (`use_bias = false`, HF's default),
//! `time_step_limit = (0, ∞)` (HF's default: no clamp).
//!
//! Must match: `Mamba2Model`'s hidden states with dense projections (`model/tests/golden_hybrid.rs`);
//! [`Mamba2Block::forward`] (chunked) and [`Mamba2Block::step`] (recurrent) give the same outputs
//! and states (`hybrid/tests.rs`).

use super::ssd::{ssd_chunked, ssd_step, SsdInputs};
use super::{causal_conv, conv_weight, linear, rms, softplus, Projection};
use crate::bitlinear::BitLinear;
use crate::error::{Error, Result};
use crate::norm::RmsNorm;
use crate::source::WeightSource;
use candle_core::{DType, Tensor, D};

/// The shape of a Mamba-2 block (HF `Mamba2Config`'s fields of the same meaning).
#[derive(Debug, Clone, PartialEq)]
pub struct Mamba2Config {
    pub hidden_size: usize,
    /// `H`.
    pub num_heads: usize,
    /// `P`; `H·P` is the inner size `I` (HF: `expand · hidden_size`).
    pub head_dim: usize,
    /// `N`.
    pub state_size: usize,
    /// `G`: B and C are shared by `H / G` heads; the gated norm runs over `G` groups.
    pub n_groups: usize,
    /// `K`.
    pub conv_kernel: usize,
    pub use_conv_bias: bool,
    /// Chunk length of the chunked scan.
    pub chunk_size: usize,
    /// Of both RMSNorms (HF `layer_norm_epsilon`).
    pub eps: f64,
    pub projection: Projection,
}

impl Mamba2Config {
    pub fn inner(&self) -> usize {
        self.num_heads * self.head_dim
    }
    /// Channels through the conv: x, B and C.
    pub fn conv_dim(&self) -> usize {
        self.inner() + 2 * self.n_groups * self.state_size
    }

    fn validate(&self) -> Result<()> {
        let ok = self.hidden_size > 0
            && self.num_heads > 0
            && self.head_dim > 0
            && self.state_size > 0
            && self.n_groups > 0
            && self.num_heads.is_multiple_of(self.n_groups)
            && self.conv_kernel > 0
            && self.chunk_size > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "Mamba-2: invalid shape {self:?} (sizes must be positive, heads a multiple of groups)"
            )))
        }
    }
}

/// What a Mamba-2 block carries from one call to the next: the conv's last `K − 1` inputs
/// `[B, K − 1, conv_dim]` and the SSM state `[B, H, P, N]`. Its size does not grow with the
/// sequence.
#[derive(Debug, Clone)]
pub struct Mamba2State {
    pub conv: Tensor,
    pub ssm: Tensor,
}

/// One Mamba-2 block (pre-norm, residual): `x + mixer(RMSNorm(x))`, as `Mamba2Block`.
#[derive(Debug, Clone)]
pub struct Mamba2Block {
    norm: RmsNorm,
    mixer: Mamba2Mixer,
}

/// The Mamba-2 token mixer alone (HF `Mamba2Mixer`, and Bamba's / Granite 4's `mamba` layer):
/// what a hybrid decoder layer puts where attention would be.
#[derive(Debug, Clone)]
pub struct Mamba2Mixer {
    cfg: Mamba2Config,
    in_proj: BitLinear,
    conv_w: Tensor,
    conv_b: Option<Tensor>,
    dt_bias: Tensor,
    a_log: Tensor,
    d: Tensor,
    gate_norm: Tensor,
    out_proj: BitLinear,
}

impl Mamba2Block {
    /// Loads the block named `prefix` (`backbone.layers.0` in an HF checkpoint).
    pub fn load(src: &mut dyn WeightSource, cfg: &Mamba2Config, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            norm: RmsNorm::new(
                src.dense(&format!("{prefix}.norm.weight"), &[cfg.hidden_size])?,
                cfg.eps,
            ),
            mixer: Mamba2Mixer::load(src, cfg, &format!("{prefix}.mixer"))?,
        })
    }

    pub fn config(&self) -> &Mamba2Config {
        &self.mixer.cfg
    }

    /// The state before any token, for a batch of `b`.
    pub fn zero_state(&self, b: usize, device: &candle_core::Device) -> Result<Mamba2State> {
        self.mixer.zero_state(b, device)
    }

    /// `x` `[B, T, hidden]` → `[B, T, hidden]` and the state after it: the chunked scan with the
    /// configured chunk length (training, prefill). `state` continues an earlier call.
    pub fn forward(
        &self,
        x: &Tensor,
        state: Option<&Mamba2State>,
    ) -> Result<(Tensor, Mamba2State)> {
        self.forward_chunked(x, state, self.mixer.cfg.chunk_size)
    }

    /// [`Self::forward`] with a given chunk length (any length gives the same values).
    pub fn forward_chunked(
        &self,
        x: &Tensor,
        state: Option<&Mamba2State>,
        chunk: usize,
    ) -> Result<(Tensor, Mamba2State)> {
        self.mixer.check_width(x)?;
        let (y, s) = self.mixer.run(&self.norm.forward(x)?, state, Some(chunk))?;
        Ok(((x + y)?, s))
    }

    /// One token `x` `[B, hidden]` through the recurrent form (decode): `[B, hidden]` and the new
    /// state; O(1) in the tokens before it.
    pub fn step(&self, x: &Tensor, state: Option<&Mamba2State>) -> Result<(Tensor, Mamba2State)> {
        let x3 = x.unsqueeze(1)?;
        self.mixer.check_width(&x3)?;
        let (y, s) = self.mixer.run(&self.norm.forward(&x3)?, state, None)?;
        Ok(((x3 + y)?.squeeze(1)?, s))
    }
}

impl Mamba2Mixer {
    /// The projections: `in_proj`, `out_proj`.
    pub fn linears(&self) -> Vec<&BitLinear> {
        vec![&self.in_proj, &self.out_proj]
    }

    /// Loads the mixer named `m` (`backbone.layers.0.mixer`, `model.layers.0.mamba`).
    pub fn load(src: &mut dyn WeightSource, cfg: &Mamba2Config, m: &str) -> Result<Self> {
        cfg.validate()?;
        let (hid, i, h) = (cfg.hidden_size, cfg.inner(), cfg.num_heads);
        let cd = cfg.conv_dim();
        Ok(Self {
            in_proj: linear(
                src,
                cfg.projection,
                &format!("{m}.in_proj"),
                i + cd + h,
                hid,
            )?,
            conv_w: conv_weight(src, &format!("{m}.conv1d.weight"), cd, cfg.conv_kernel)?,
            conv_b: match cfg.use_conv_bias {
                true => Some(src.dense(&format!("{m}.conv1d.bias"), &[cd])?),
                false => None,
            },
            dt_bias: src.dense(&format!("{m}.dt_bias"), &[h])?,
            a_log: src.dense(&format!("{m}.A_log"), &[h])?,
            d: src.dense(&format!("{m}.D"), &[h])?,
            gate_norm: src.dense(&format!("{m}.norm.weight"), &[i])?,
            out_proj: linear(src, cfg.projection, &format!("{m}.out_proj"), hid, i)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Mamba2Config {
        &self.cfg
    }

    /// The state before any token, for a batch of `b`.
    pub fn zero_state(&self, b: usize, device: &candle_core::Device) -> Result<Mamba2State> {
        let c = &self.cfg;
        Ok(Mamba2State {
            conv: Tensor::zeros((b, c.conv_kernel - 1, c.conv_dim()), DType::F32, device)?,
            ssm: Tensor::zeros(
                (b, c.num_heads, c.head_dim, c.state_size),
                DType::F32,
                device,
            )?,
        })
    }

    /// The mixer's output (no residual) for `x` `[B, T, hidden]` (already normed by the layer):
    /// the chunked scan with the configured chunk length, and the state after `x`.
    pub fn forward(
        &self,
        x: &Tensor,
        state: Option<&Mamba2State>,
    ) -> Result<(Tensor, Mamba2State)> {
        self.run(x, state, Some(self.cfg.chunk_size))
    }

    /// [`Self::forward`] token by token through the recurrent form (decode).
    pub fn forward_recurrent(
        &self,
        x: &Tensor,
        state: Option<&Mamba2State>,
    ) -> Result<(Tensor, Mamba2State)> {
        let t = x.dim(1)?;
        let mut st = state.cloned();
        let mut ys = Vec::with_capacity(t);
        for i in 0..t {
            let (y, s) = self.run(&x.narrow(1, i, 1)?, st.as_ref(), None)?;
            ys.push(y);
            st = Some(s);
        }
        let st = st.ok_or_else(|| Error::Invalid("Mamba-2: no tokens".into()))?;
        Ok((Tensor::cat(&ys, 1)?, st))
    }

    /// The mixer over normed `x` `[B, T, hidden]`: chunked scan with `chunk`, or the recurrent
    /// step when `None` (`T = 1`). No residual.
    fn run(
        &self,
        x: &Tensor,
        state: Option<&Mamba2State>,
        chunk: Option<usize>,
    ) -> Result<(Tensor, Mamba2State)> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        self.check_width(x)?;
        let (i, h, gn) = (c.inner(), c.num_heads, c.n_groups * c.state_size);
        let proj = self.in_proj.forward(x)?.to_dtype(DType::F32)?;
        let z = proj.narrow(D::Minus1, 0, i)?;
        let xbc = proj.narrow(D::Minus1, i, c.conv_dim())?;
        let dt = proj.narrow(D::Minus1, i + c.conv_dim(), h)?;
        let (xbc, conv) = causal_conv(
            &xbc,
            &self.conv_w,
            self.conv_b.as_ref(),
            state.map(|s| &s.conv),
        )?;
        let xbc = xbc.silu()?;
        let xs = xbc
            .narrow(D::Minus1, 0, i)?
            .reshape((b, t, h, c.head_dim))?;
        let bm = xbc
            .narrow(D::Minus1, i, gn)?
            .reshape((b, t, c.n_groups, c.state_size))?;
        let cm = xbc
            .narrow(D::Minus1, i + gn, gn)?
            .reshape((b, t, c.n_groups, c.state_size))?;
        let dt = softplus(&dt.broadcast_add(&self.dt_bias)?)?;
        let a = self.a_log.exp()?.neg()?;
        let inputs = SsdInputs {
            x: &xs,
            dt: &dt,
            a: &a,
            b: &bm,
            c: &cm,
            d: &self.d,
        };
        let ssm0 = state.map(|s| &s.ssm);
        let (y, ssm) = match chunk {
            Some(l) => ssd_chunked(inputs, ssm0, l)?,
            None => ssd_step(inputs, ssm0)?,
        };
        let y = self.gated_norm(&y.reshape((b, t, i))?, &z)?;
        let out = self.out_proj.forward(&y.to_dtype(x.dtype())?)?;
        Ok((out, Mamba2State { conv, ssm }))
    }

    fn check_width(&self, x: &Tensor) -> Result<()> {
        let hid = x.dims3()?.2;
        if hid != self.cfg.hidden_size {
            return Err(Error::Invalid(format!(
                "Mamba-2 block: input has {hid} features, the block {}",
                self.cfg.hidden_size
            )));
        }
        Ok(())
    }

    /// HF `MambaRMSNormGated` with `norm_before_gate = False`: `w · rms_G(y · silu(z))`, the RMS
    /// taken over each of the `G` groups of `I / G` channels.
    fn gated_norm(&self, y: &Tensor, z: &Tensor) -> Result<Tensor> {
        let (b, t, i) = y.dims3()?;
        let g = self.cfg.n_groups;
        let gated = y.mul(&z.silu()?)?.reshape((b, t, g, i / g))?;
        let normed = rms(&gated, self.cfg.eps)?.reshape((b, t, i))?;
        Ok(normed.broadcast_mul(&self.gate_norm)?)
    }
}
