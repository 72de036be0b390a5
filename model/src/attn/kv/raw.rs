//! Tiles of one kv head exactly as the cache stores them ([`RawTile`]), for kernels that
//! dequantise in registers (`attn::fused`), and the conversion of a raw tile to f32 for those that
//! take f32 tiles ([`KvCache::visit_head`](super::KvCache::visit_head)).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::attn::int4;

/// One stored tile of a kv head: `n` consecutive tokens' keys and values.
#[derive(Clone, Copy, Debug)]
pub enum RawTile<'a> {
    /// f32 keys and values `[n][head_dim]`: f32 storage, the sinks, bf16 storage (converted)
    /// and the INT4 kind's f32 residual.
    F32 {
        /// Keys `[n][head_dim]`.
        k: &'a [f32],
        /// Values `[n][head_dim]`.
        v: &'a [f32],
    },
    /// f16 keys and values `[n][head_dim]`.
    F16 {
        /// Keys `[n][head_dim]`.
        k: &'a [f16],
        /// Values `[n][head_dim]`.
        v: &'a [f16],
        /// The keys and values of the tile the visitor hands out next (empty if none), which
        /// the kernels ask the CPU to fetch a few lines at a time while they work on this one
        /// (see [`prefetch_lines`]).
        next: (&'a [f16], &'a [f16]),
    },
    /// Tokens of one INT4 group block (see `attn::int4` for the code layout).
    Int4(Int4Tile<'a>),
}

/// The INT4 codes and group parameters of `n` tokens of one kv head.
#[derive(Clone, Copy, Debug)]
pub struct Int4Tile<'a> {
    /// Key codes in the chunked layout of `attn::int4`: the whole chunks of 16 tokens that hold
    /// the tile's tokens, the first of them at place [`Int4Tile::k0`] of the first chunk.
    pub kc: &'a [u8],
    /// Place of the tile's first token in the first chunk of `kc` (`< 16`).
    pub k0: usize,
    /// Key minimum per channel `[head_dim]` (one group of tokens shares it).
    pub km: &'a [f16],
    /// Key step per channel `[head_dim]`.
    pub ks: &'a [f16],
    /// Value codes in the token quads of `attn::int4`: the whole quads that hold the tile's
    /// tokens, the first of them at place [`Int4Tile::v0`] of the first quad.
    pub vc: &'a [u8],
    /// Place of the tile's first token in the first quad of `vc` (`< 4`).
    pub v0: usize,
    /// Value minimum per token and channel group `[n][head_dim / vg]`.
    pub vm: &'a [f16],
    /// Value step per token and channel group `[n][head_dim / vg]`.
    pub vs: &'a [f16],
    /// Channels per value group.
    pub vg: usize,
    /// The codes of the tile the visitor hands out next (empty if none), which the x86 kernels
    /// ask the CPU to fetch a few lines at a time while they work on this one: keys during the
    /// scores, values during the value sums.
    pub next: &'a [u8],
}

impl Int4Tile<'_> {
    /// Asks the CPU to start loading the tile's group parameters (see [`prefetch`]); its codes
    /// are fetched by the kernels of the tile before it, through [`Int4Tile::next`], a few lines
    /// at a time.
    pub(super) fn prefetch(&self) {
        prefetch(self.km);
        prefetch(self.ks);
        prefetch(self.vm);
        prefetch(self.vs);
    }
}

/// 64-byte lines [`prefetch`] asks for at the start of a slice.
const LEAD_LINES: usize = 8;

/// Prefetches the first [`LEAD_LINES`] 64-byte lines of `s` into the cache (a hint: no effect
/// on results; nothing off x86-64). Only a lead: the hardware prefetcher follows a sequential
/// stream once it has started, while asking for a whole 32 KB f16 tile at once fills the
/// core's miss queue and stalls the kernel running on the current tile (Zen 3, 2 threads:
/// f16 decode attention at 64K tokens 26.7 ms with whole-tile prefetches, 21.9 ms with this
/// lead, 21.8 ms with none; INT4 within noise).
pub(super) fn prefetch<T>(s: &[T]) {
    prefetch_lines(s, 0, LEAD_LINES);
}

/// Lines of `ahead` each of `parts` steps asks for with [`prefetch_lines`] to cover it all
/// (one division per tile, so the steps need none).
#[inline(always)]
pub(crate) fn lines_per_part<T>(ahead: &[T], parts: usize) -> usize {
    std::mem::size_of_val(ahead)
        .div_ceil(64)
        .div_ceil(parts.max(1))
}

/// Asks the CPU to fetch `count` 64-byte lines of `ahead` from line `first` on, those that lie
/// inside it (a hint: no effect on results; nothing off x86-64). The decode kernels spread the
/// next tile's lines over their steps this way, [`lines_per_part`] lines per step (one division
/// per tile), so the fetches overlap the work without filling the core's miss queue at once (a
/// tile asked for in one go stalls the kernel; the hardware prefetcher alone restarts at every
/// 4 KB page and every block, and left decode attention waiting on DRAM once the cache outgrows
/// the L3). [`prefetch`] goes through it too. The lines go to L2 (`prefetcht1`), not L1: each
/// L1 fetch holds one of the core's few L1 miss slots until DRAM answers, and the kernels then
/// stalled on the prefetch instructions themselves (a quarter of their samples). On a Zen 4 EPYC,
/// INT4 decode attention at 64K tokens, 1 thread: 25–27 ns per token and kv head with L1
/// fetches, 22–24 with L2 fetches, 19–20 with L2 fetches and the blocks read in memory order
/// (`KvCache::visit_heads_raw`); 17 with the cache in L3 (4K tokens).
#[inline(always)]
pub(crate) fn prefetch_lines<T>(ahead: &[T], first: usize, count: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let bytes = std::mem::size_of_val(ahead);
        let p = ahead.as_ptr().cast::<i8>();
        for l in first..first + count {
            if 64 * l >= bytes {
                break;
            }
            // SAFETY: a prefetch never faults; the address lies inside `ahead` (64 l < bytes).
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.add(64 * l)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ahead, first, count);
}

impl RawTile<'_> {
    /// Tokens in the tile, for head dimension `d`.
    pub fn len(&self, d: usize) -> usize {
        match self {
            RawTile::F32 { k, .. } => k.len() / d,
            RawTile::F16 { k, .. } => k.len() / d,
            RawTile::Int4(t) => t.vm.len() / (d / t.vg),
        }
    }

    /// Whether the tile holds no token.
    pub fn is_empty(&self) -> bool {
        match self {
            RawTile::F32 { k, .. } => k.is_empty(),
            RawTile::F16 { k, .. } => k.is_empty(),
            RawTile::Int4(t) => t.vm.is_empty(),
        }
    }
}

/// Buffers of the raw visitor (rotated sinks, bf16 converted to f32), one per worker thread.
#[derive(Default, Debug)]
pub struct RawBuffers {
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
}

/// Buffers for f32 views of raw tiles.
#[derive(Default, Debug)]
pub(super) struct F32Buffers {
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) tmp: Vec<f32>,
}

/// `tile` as f32 keys and values `[n][d]`, converted into `buf` unless it already is f32.
pub(super) fn to_f32<'a>(
    tile: RawTile<'a>,
    d: usize,
    buf: &'a mut F32Buffers,
) -> (&'a [f32], &'a [f32]) {
    match tile {
        RawTile::F32 { k, v } => (k, v),
        RawTile::F16 { k, v, .. } => {
            buf.k.resize(k.len(), 0.0);
            buf.v.resize(v.len(), 0.0);
            k.convert_to_f32_slice(&mut buf.k);
            v.convert_to_f32_slice(&mut buf.v);
            (&buf.k, &buf.v)
        }
        RawTile::Int4(t) => {
            let n = t.vm.len() / (d / t.vg);
            buf.k.resize(n * d, 0.0);
            buf.v.resize(n * d, 0.0);
            int4::dequantize_keys(t.kc, d, t.km, t.ks, t.k0, &mut buf.k, &mut buf.tmp);
            int4::dequantize_values(t.vc, d, t.vg, t.vm, t.vs, t.v0, &mut buf.v);
            (&buf.k, &buf.v)
        }
    }
}
