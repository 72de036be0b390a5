//! Storage of the CPU KV cache: token-ordered blocks with a dead prefix in the oldest one (the
//! rolling window evicts token by token and recycles a block once all its tokens are dead), float
//! blocks in f32 / f16 / bf16, INT4 blocks (KIVI: keys per channel, values per token) filled from
//! an f32 tail of recent tokens.

use std::collections::VecDeque;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::raw::prefetch;
use super::{RawBuffers, RawTile, FLOAT_BLOCK};
use crate::attn::int4;

/// Conversion of a storage element type from/to f32 slices.
pub(super) trait Elem: Copy + Default + Send + Sync + 'static {
    fn store(src: &[f32], dst: &mut [Self]);
    /// Keys `k` and values `v` as a raw tile (bf16 converted into `buf`); `next` holds the keys
    /// and values of the tile handed out after it, for kernels that fetch ahead.
    fn raw<'a>(
        k: &'a [Self],
        v: &'a [Self],
        next: (&'a [Self], &'a [Self]),
        buf: &'a mut RawBuffers,
    ) -> RawTile<'a>;
}

impl Elem for f32 {
    fn store(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn raw<'a>(k: &'a [f32], v: &'a [f32], _: (&[f32], &[f32]), _: &mut RawBuffers) -> RawTile<'a> {
        RawTile::F32 { k, v }
    }
}

impl Elem for f16 {
    fn store(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src);
    }
    fn raw<'a>(
        k: &'a [f16],
        v: &'a [f16],
        next: (&'a [f16], &'a [f16]),
        _: &'a mut RawBuffers,
    ) -> RawTile<'a> {
        RawTile::F16 { k, v, next }
    }
}

impl Elem for bf16 {
    fn store(src: &[f32], dst: &mut [bf16]) {
        dst.convert_from_f32_slice(src);
    }
    fn raw<'a>(
        k: &'a [bf16],
        v: &'a [bf16],
        _: (&[bf16], &[bf16]),
        buf: &'a mut RawBuffers,
    ) -> RawTile<'a> {
        buf.k.resize(k.len(), 0.0);
        buf.v.resize(v.len(), 0.0);
        k.convert_to_f32_slice(&mut buf.k);
        v.convert_to_f32_slice(&mut buf.v);
        RawTile::F32 {
            k: &buf.k,
            v: &buf.v,
        }
    }
}

/// Token-ordered blocks with a dead prefix in the oldest one.
#[derive(Debug)]
pub(super) struct Blocks<B> {
    pub(super) blocks: VecDeque<B>,
    pub(super) spare: Option<B>,
    pub(super) dead: usize,
    /// Tokens written into the newest block.
    pub(super) last_len: usize,
}

impl<B> Blocks<B> {
    pub(super) fn new() -> Self {
        Blocks {
            blocks: VecDeque::new(),
            spare: None,
            dead: 0,
            last_len: 0,
        }
    }

    pub(super) fn len(&self, block: usize) -> usize {
        match self.blocks.len() {
            0 => 0,
            n => (n - 1) * block + self.last_len - self.dead,
        }
    }

    /// Drops the oldest live token; recycles its block when all of the block's tokens are dead.
    pub(super) fn evict_one(&mut self, block: usize) {
        self.dead += 1;
        if self.dead == block && self.blocks.len() > 1 {
            self.spare = self.blocks.pop_front();
            self.dead = 0;
        }
    }

    /// (live range start, live range end) of block `i`.
    pub(super) fn live(&self, i: usize, block: usize) -> (usize, usize) {
        let start = if i == 0 { self.dead } else { 0 };
        let end = if i + 1 == self.blocks.len() {
            self.last_len
        } else {
            block
        };
        (start, end)
    }
}

#[derive(Debug)]
pub(super) struct FBlock<T> {
    pub(super) k: Vec<T>,
    pub(super) v: Vec<T>,
}

/// One INT4 block: `group` tokens of every kv head, laid out head by head so that one head's
/// tile is two contiguous runs, its codes `[keys: int4::key_code_bytes(group, d) | values:
/// int4::value_code_bytes(group, d)]` in `codes`
/// and its group parameters `[key min: d | key step: d | value min: group · d/vg | value step:
/// group · d/vg]` in `params` (a head's arrays in six separate allocations meant six pages to
/// find per tile, and six short streams).
#[derive(Debug)]
pub(super) struct QBlock {
    codes: Vec<u8>,
    params: Vec<f16>,
}

/// One head's part of a [`QBlock`]: its codes (`C`) and parameters (`P`), shared or mutable slices.
pub(super) struct QHead<C, P> {
    pub(super) kc: C,
    pub(super) vc: C,
    pub(super) km: P,
    pub(super) ks: P,
    pub(super) vm: P,
    pub(super) vs: P,
}

impl<C, P> QHead<C, P> {
    fn new((kc, vc): (C, C), (km, ks): (P, P), (vm, vs): (P, P)) -> Self {
        QHead {
            kc,
            vc,
            km,
            ks,
            vm,
            vs,
        }
    }
}

/// Elements per head in a [`QBlock`]: key codes, value codes, parameters.
fn per_head(d: usize, group: usize) -> (usize, usize, usize) {
    let params = 2 * (d + group * (d / group.min(d)));
    (
        int4::key_code_bytes(group, d),
        int4::value_code_bytes(group, d),
        params,
    )
}

impl QBlock {
    fn new(h: usize, d: usize, group: usize) -> Self {
        let (nk, nv, np) = per_head(d, group);
        QBlock {
            codes: vec![0; h * (nk + nv)],
            params: vec![f16::ZERO; h * np],
        }
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.codes.capacity() + 2 * self.params.capacity()
    }

    /// Head `hh`'s codes and parameters.
    pub(super) fn head(&self, hh: usize, d: usize, group: usize) -> QHead<&[u8], &[f16]> {
        let (nk, nv, np) = per_head(d, group);
        let (k, v) = self.params[hh * np..][..np].split_at(2 * d);
        let half = v.len() / 2;
        QHead::new(
            self.codes[hh * (nk + nv)..][..nk + nv].split_at(nk),
            k.split_at(d),
            v.split_at(half),
        )
    }

    /// Head `hh`'s codes, keys then values, as one run.
    pub(super) fn head_codes(&self, hh: usize, d: usize, group: usize) -> &[u8] {
        let (nk, nv, _) = per_head(d, group);
        &self.codes[hh * (nk + nv)..][..nk + nv]
    }

    /// Head `hh`'s codes and parameters, to write.
    fn head_mut(&mut self, hh: usize, d: usize, group: usize) -> QHead<&mut [u8], &mut [f16]> {
        let (nk, nv, np) = per_head(d, group);
        let (k, v) = self.params[hh * np..][..np].split_at_mut(2 * d);
        let half = v.len() / 2;
        QHead::new(
            self.codes[hh * (nk + nv)..][..nk + nv].split_at_mut(nk),
            k.split_at_mut(d),
            v.split_at_mut(half),
        )
    }
}

#[derive(Debug)]
pub(super) enum Recent {
    F32(Blocks<FBlock<f32>>),
    F16(Blocks<FBlock<f16>>),
    Bf16(Blocks<FBlock<bf16>>),
    Int4 {
        q: Blocks<QBlock>,
        /// f32 `[kv_heads][residual][d]`, the newest `tail_len` tokens.
        tail_k: Vec<f32>,
        tail_v: Vec<f32>,
        tail_len: usize,
    },
}

pub(super) fn reset<B>(b: &mut Blocks<B>) {
    if b.spare.is_none() {
        b.spare = b.blocks.pop_front();
    }
    b.blocks.clear();
    b.dead = 0;
    b.last_len = 0;
}

pub(super) fn push_float<'a, T: Elem>(
    b: &mut Blocks<FBlock<T>>,
    h: usize,
    d: usize,
    row: impl Fn(usize) -> (&'a [f32], &'a [f32]),
) {
    if b.blocks.is_empty() || b.last_len == FLOAT_BLOCK {
        let blk = b.spare.take().unwrap_or_else(|| FBlock {
            k: vec![T::default(); h * FLOAT_BLOCK * d],
            v: vec![T::default(); h * FLOAT_BLOCK * d],
        });
        b.blocks.push_back(blk);
        b.last_len = 0;
    }
    let t = b.last_len;
    if let Some(blk) = b.blocks.back_mut() {
        for hh in 0..h {
            let (k, v) = row(hh);
            let dst = (hh * FLOAT_BLOCK + t) * d;
            T::store(k, &mut blk.k[dst..dst + d]);
            T::store(v, &mut blk.v[dst..dst + d]);
        }
    }
    b.last_len += 1;
}

pub(super) fn visit_float<T: Elem>(
    b: &Blocks<FBlock<T>>,
    head: usize,
    d: usize,
    buf: &mut RawBuffers,
    f: &mut dyn FnMut(RawTile<'_>),
) {
    let range = |i: usize| {
        let (s, e) = b.live(i, FLOAT_BLOCK);
        (head * FLOAT_BLOCK + s) * d..(head * FLOAT_BLOCK + e) * d
    };
    for (i, blk) in b.blocks.iter().enumerate() {
        // Each block is its own allocation: ask for the start of the next one while this one
        // runs (the f16 kernels fetch the rest of it, a few lines per step).
        let next = b.blocks.get(i + 1).map_or((&[][..], &[][..]), |nb| {
            let r = range(i + 1);
            (&nb.k[r.clone()], &nb.v[r])
        });
        prefetch(next.0);
        prefetch(next.1);
        let r = range(i);
        f(T::raw(&blk.k[r.clone()], &blk.v[r], next, buf));
    }
}

/// Quantises the oldest `group` tail tokens of every head into a new block and shifts the rest of
/// the tail to the front.
pub(super) fn flush_group(
    q: &mut Blocks<QBlock>,
    tail_k: &mut [f32],
    tail_v: &mut [f32],
    h: usize,
    d: usize,
    group: usize,
    residual: usize,
) {
    let vg = group.min(d);
    let mut blk = q.spare.take().unwrap_or_else(|| QBlock::new(h, d, group));
    for hh in 0..h {
        let base = hh * residual * d;
        let part = blk.head_mut(hh, d, group);
        int4::quantize_keys(
            &tail_k[base..base + group * d],
            d,
            part.kc,
            part.km,
            part.ks,
        );
        int4::quantize_values(
            &tail_v[base..base + group * d],
            d,
            vg,
            part.vc,
            part.vm,
            part.vs,
        );
        tail_k.copy_within(base + group * d..base + residual * d, base);
        tail_v.copy_within(base + group * d..base + residual * d, base);
    }
    q.blocks.push_back(blk);
    q.last_len = group;
}
