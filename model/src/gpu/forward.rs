//! The GPU model's pass over its layers: embeddings staged on the device, then per layer the
//! fused norm + quantiser, the stacked q|k|v GEMV, QK-Norm and RoPE, the KV store, attention, the
//! o projection into the residual stream, and the MLP likewise; the final norm and the head.

use super::{kerr, GpuModel};
use crate::config::{Activation, NormPlacement};
use crate::error::{Error, Result};
use tritter_kernels::cuda::{ActBuf, CudaSlice, DevTernary};

impl GpuModel {
    /// Appends `ids` and returns the logits of the last position (`all`: of every position,
    /// `[T][V]`).
    pub fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let vocab = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id: bad, vocab });
        }
        let x = self.embed_rows(ids);
        self.run_rows(&x, all)
    }

    /// Appends the input embeddings `x` `[T, C]` (an image's projected features, latent
    /// thoughts) and returns the logits of the last position (`all`: of every position).
    pub fn forward_embeds(&mut self, x: Vec<f32>, all: bool) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        if x.is_empty() || !x.len().is_multiple_of(c) {
            return Err(Error::Invalid(format!(
                "input embeddings of {} values are not rows of {c} channels",
                x.len()
            )));
        }
        self.run_rows(&x, all)
    }

    /// Appends `ids` and returns the final hidden state `[C]` of the last position (after the
    /// final norm, before the head): what latent mode feeds back as the next input embedding,
    /// as `CpuModel::forward_hidden` does on the CPU.
    pub fn forward_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let vocab = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id: bad, vocab });
        }
        let x = self.embed_rows(ids);
        self.run_rows_hidden(&x)
    }

    /// Appends the input embeddings `x` `[T, C]` and returns the final hidden state `[C]` of the
    /// last position: one latent step when `x` is a thought.
    pub fn forward_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        if x.is_empty() || !x.len().is_multiple_of(c) {
            return Err(Error::Invalid(format!(
                "input embeddings of {} values are not rows of {c} channels",
                x.len()
            )));
        }
        self.run_rows_hidden(&x)
    }

    /// Fails when `t` more tokens would not fit a cache without a rolling window.
    fn check_room(&self, t: usize) -> Result<()> {
        if self.opts.window == 0 && self.seen + t > self.opts.max_context {
            return Err(Error::Invalid(format!(
                "context full: {} + {t} tokens exceed the GPU cache of {}",
                self.seen, self.opts.max_context
            )));
        }
        Ok(())
    }

    /// [`GpuModel::run_rows`] without the head: the final-normed hidden state of the last row,
    /// read from `s.h` after the layers (never through the captured graph, which ends in the
    /// head).
    fn run_rows_hidden(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        self.check_room(x.len() / c)?;
        let mut last = Vec::new();
        for chunk in x.chunks(self.opts.max_chunk * c) {
            let t = chunk.len() / c;
            self.stage(chunk)?;
            self.layers_pass(t)?;
            self.seen += t;
            last = self
                .gpu
                .download_range(&self.s.h, (t - 1) * c, c)
                .map_err(kerr)?;
        }
        Ok(last)
    }

    /// Runs the input rows `x` `[T, C]` in chunks of `max_chunk` rows.
    fn run_rows(&mut self, x: &[f32], all: bool) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        self.check_room(x.len() / c)?;
        let mut out = Vec::new();
        for chunk in x.chunks(self.opts.max_chunk * c) {
            let logits = self.run_chunk(chunk, all)?;
            if all {
                out.extend(logits);
            } else {
                out = logits;
            }
        }
        Ok(out)
    }

    /// Uploads the input rows `x` `[T, C]` into `s.x` and the next position into `s.base`.
    pub(super) fn stage(&mut self, x: &[f32]) -> Result<()> {
        self.gpu.write(x, &mut self.s.x).map_err(kerr)?;
        let pos =
            i32::try_from(self.seen).map_err(|_| Error::Invalid("position exceeds i32".into()))?;
        self.gpu.write(&[pos], &mut self.s.base).map_err(kerr)
    }

    /// The input rows of `ids` (their embeddings).
    pub(super) fn embed_rows(&self, ids: &[u32]) -> Vec<f32> {
        let c = self.cfg.hidden_size;
        let mut x = Vec::with_capacity(ids.len() * c);
        for &id in ids {
            x.extend_from_slice(&self.embed[id as usize * c..][..c]);
        }
        x
    }

    fn run_chunk(&mut self, x: &[f32], all: bool) -> Result<Vec<f32>> {
        let (c, vocab) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let t = x.len() / c;
        self.stage(x)?;
        if t == 1 && !all && self.opts.graphs && !self.graph_failed {
            if self.graph.is_none() {
                self.capture()?;
            }
            if let Some(graph) = &self.graph {
                graph.0.launch().map_err(|e| Error::Kernel(e.to_string()))?;
                self.seen += 1;
                return self
                    .gpu
                    .download_range(&self.s.logits, 0, vocab)
                    .map_err(kerr);
            }
        }
        self.layers_pass(t)?;
        let g = &self.gpu;
        let rows: Vec<usize> = if all { (0..t).collect() } else { vec![t - 1] };
        for (i, &r) in rows.iter().enumerate() {
            g.head(&self.head, &self.s.h, r * c, &self.s.logits, i * vocab)
                .map_err(kerr)?;
        }
        self.seen += t;
        g.download_range(&self.s.logits, 0, rows.len() * vocab)
            .map_err(kerr)
    }

    /// Runs every layer on `t` tokens in `s.x` (positions `*base..`), leaving the final-normed
    /// hidden states in `s.h`.
    pub(super) fn layers_pass(&self, t: usize) -> Result<()> {
        self.layers_pass_marked(t, &mut |_| Ok(()))
    }

    /// [`GpuModel::layers_pass`], calling `mark(op)` after each operation is queued.
    pub(super) fn layers_pass_marked(
        &self,
        t: usize,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let g = &self.gpu;
        let s = &self.s;
        let (c, h, hkv, d) = (
            self.cfg.hidden_size,
            self.cfg.num_heads,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        );
        let (nq, nk) = (h * d, hkv * d);
        let f = self.cfg.intermediate_size;
        let eps = self.eps;
        let theta = self.cfg.rope_theta as f32;
        let scale = 1.0 / (d as f32).sqrt();
        let act_kind = match self.cfg.activation {
            Activation::Relu2 => 0,
            Activation::Silu => 1,
        };
        let pre = !matches!(self.cfg.norm_placement, NormPlacement::SwinNorm);
        for (l, kv) in self.layers.iter().zip(&self.kv) {
            // Attention input: norm1(x) (pre/subln) or x (swin), normed inside the quantiser.
            g.rms_act_quant(&s.x, t, pre.then_some(&l.norm1), eps, &s.act_c)
                .map_err(kerr)?;
            mark("norm_quant")?;
            g.ternary(&l.qkv, &s.act_c, t, &s.qkv, 0).map_err(kerr)?;
            mark("gemv_qkv")?;
            if l.q_norm.is_none() && l.k_norm.is_none() {
                g.qkv_rope_split(&s.qkv, t, h, hkv, d, theta, &s.base, &s.q, &s.k, &s.v)
                    .map_err(kerr)?;
            } else {
                let stride = nq + 2 * nk;
                g.copy_cols(&s.qkv, stride, 0, nq, t, &s.q).map_err(kerr)?;
                g.copy_cols(&s.qkv, stride, nq, nk, t, &s.k).map_err(kerr)?;
                g.copy_cols(&s.qkv, stride, nq + nk, nk, t, &s.v)
                    .map_err(kerr)?;
                if let Some(n) = &l.q_norm {
                    g.rmsnorm(&s.q, t * h, d, n, eps, &s.q).map_err(kerr)?;
                }
                if let Some(n) = &l.k_norm {
                    g.rmsnorm(&s.k, t * hkv, d, n, eps, &s.k).map_err(kerr)?;
                }
                g.rope(&s.q, t, h, d, theta, &s.base).map_err(kerr)?;
                g.rope(&s.k, t, hkv, d, theta, &s.base).map_err(kerr)?;
            }
            mark("qkv_rope")?;
            g.kv_store(kv, &s.k, &s.v, t, &s.base).map_err(kerr)?;
            mark("kv_store")?;
            g.attention(&s.q, t, h, kv, &s.base, scale, &s.attn, &s.att)
                .map_err(kerr)?;
            mark("attention")?;
            g.rms_act_quant(&s.att, t, l.attn_sub.as_ref(), eps, &s.act_a)
                .map_err(kerr)?;
            mark("norm_quant")?;
            self.residual(
                &l.o,
                &s.act_a,
                t,
                (!pre).then_some(&l.norm1),
                "gemv_o",
                mark,
            )?;
            // MLP.
            g.rms_act_quant(&s.x, t, pre.then_some(&l.norm2), eps, &s.act_c)
                .map_err(kerr)?;
            mark("norm_quant")?;
            g.ternary(&l.gu, &s.act_c, t, &s.gu, 0).map_err(kerr)?;
            mark("gemv_gate_up")?;
            let hid = if l.gated {
                g.gated_act(&s.gu, t, f, act_kind, &s.hid).map_err(kerr)?;
                &s.hid
            } else {
                g.act_inplace(&s.gu, t * f, act_kind).map_err(kerr)?;
                &s.gu
            };
            mark("activation")?;
            g.rms_act_quant(hid, t, l.mlp_sub.as_ref(), eps, &s.act_f)
                .map_err(kerr)?;
            mark("norm_quant")?;
            self.residual(
                &l.down,
                &s.act_f,
                t,
                (!pre).then_some(&l.norm2),
                "gemv_down",
                mark,
            )?;
        }
        g.rmsnorm(&s.x, t, c, &self.norm, eps, &s.h).map_err(kerr)?;
        mark("final_norm")?;
        Ok(())
    }

    /// `x += W·act` for `t` tokens: an output projection into the residual stream, RMSNormed
    /// with `post` first (swin placement) or fused into the GEMV/GEMM epilogue when
    /// [`GpuOptions::fuse_residual`] is set (the same values as the projection then an add).
    fn residual(
        &self,
        w: &DevTernary,
        act: &ActBuf,
        t: usize,
        post: Option<&CudaSlice<f32>>,
        op: &'static str,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let (g, s, c) = (&self.gpu, &self.s, self.cfg.hidden_size);
        if self.opts.fuse_residual && post.is_none() {
            g.ternary_add(w, act, t, &s.x, 0).map_err(kerr)?;
            return mark(op);
        }
        g.ternary(w, act, t, &s.o, 0).map_err(kerr)?;
        mark(op)?;
        if let Some(n) = post {
            g.rmsnorm(&s.o, t, c, n, self.eps, &s.o).map_err(kerr)?;
        }
        g.add(&s.x, &s.o, t * c).map_err(kerr)?;
        mark("residual")
    }
}
