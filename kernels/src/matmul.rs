//! Integer GEMV/GEMM over T2 matrices and the f32 BitLinear product, with run-time choice of
//! instruction set ([`Isa`], detected once) and rayon threading over groups of 16-row panels.
//! The SIMD tiles live in the architecture back end (`x86/`, or `portable.rs` elsewhere); the
//! scalar tile in `crate::scalar` is the specification each must equal bit for bit.
//!
//! Specification: `y[t, row] = Σ_k w[row, k] · x_q[t, k]` (i32), and for [`ternary_matmul`]
//! `out[t, row] = y[t, row] as f32 / (x_scale[t] · weight_scale)` with `x_q`, `x_scale` from
//! `crate::quant` — the BitLinear forward of transformers `integrations/bitnet.py`.
//!
//! Activations are first packed per tile of `T` tokens (`T` = the ISA's tile width): for each
//! column block `b`, plane `i` (columns `16b + 4i .. +4`), token `t`: 4 bytes. A tile's bytes
//! are contiguous (`T · k_pad`), so a kernel walks one pointer and broadcasts 4 bytes per
//! token and plane. Padding columns are zero. The packed buffer and per-token `Σ x_q` live in
//! per-thread scratch that is reused across calls (no allocation once warm).

use std::cell::Cell;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::format::{TernaryMatrix, BLOCK_K, PANEL_ROWS};
use crate::quant::quantize_with;
use crate::{arch, autovec, scalar, KernelError};

/// Instruction-set level a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable scalar code: the specification.
    Scalar,
    /// Portable code the compiler vectorises (`crate::autovec`): what CPUs without a hand-written
    /// back end run (ARM: NEON / SVE), and on x86-64 the baseline (SSE2) build of it.
    Portable,
    /// AVX2 (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    /// AVX-512 F/BW (`vpmaddubsw` + `vpmaddwd` on 512-bit vectors).
    Avx512,
    /// AVX-512 F/BW + VNNI (`vpdpbusd`).
    Avx512Vnni,
}

/// Instruction sets usable on this CPU, `Scalar` first, best last (detected once).
pub fn available_isas() -> &'static [Isa] {
    static ISAS: OnceLock<Vec<Isa>> = OnceLock::new();
    ISAS.get_or_init(|| {
        let mut v = vec![Isa::Scalar, Isa::Portable];
        v.extend(arch::detect());
        v
    })
}

/// Environment variable capping the instruction set of the ternary kernels, the activation
/// quantiser and the LM-head loops, for measuring on one CPU what others run: `scalar` (the
/// specification), `portable` (the code non-x86 CPUs run), `avx2`, `avx512` or `avx512vnni`.
/// Unset: the best the CPU supports. Read once per process; [`isa_cap`] parses it.
pub const KERNELS_VAR: &str = "TRITTER_KERNELS";

/// The cap [`KERNELS_VAR`] sets (`None` when unset), or the error naming a value it does not take.
pub fn isa_cap() -> Result<Option<Isa>, KernelError> {
    static CAP: OnceLock<Result<Option<Isa>, KernelError>> = OnceLock::new();
    CAP.get_or_init(|| parse_cap(std::env::var(KERNELS_VAR).ok().as_deref()))
        .clone()
}

/// The cap a value of [`KERNELS_VAR`] names.
pub(crate) fn parse_cap(value: Option<&str>) -> Result<Option<Isa>, KernelError> {
    let Some(v) = value else { return Ok(None) };
    let isa = match v {
        "scalar" => Isa::Scalar,
        "portable" => Isa::Portable,
        "avx2" => Isa::Avx2,
        "avx512" => Isa::Avx512,
        "avx512vnni" => Isa::Avx512Vnni,
        _ => {
            return Err(KernelError::BadKernelCap {
                var: KERNELS_VAR,
                value: v.to_string(),
            })
        }
    };
    Ok(Some(isa))
}

/// The highest set the kernels may use: [`KERNELS_VAR`]'s cap, the top one when it is unset
/// (an invalid cap is ignored here; [`isa_cap`] reports it).
pub(crate) fn isa_ceiling() -> Isa {
    isa_cap().ok().flatten().unwrap_or(Isa::Avx512Vnni)
}

/// The best of `isas` (in increasing order of preference) at or below `cap` (any when `None`).
pub(crate) fn best_under(isas: &[Isa], cap: Option<Isa>) -> Isa {
    let cap = cap.unwrap_or(Isa::Avx512Vnni);
    isas.iter()
        .copied()
        .rfind(|&i| i <= cap)
        .unwrap_or(Isa::Scalar)
}

/// The instruction set the plain entry points use: the best available within [`KERNELS_VAR`]'s
/// cap (an invalid cap is ignored here; [`isa_cap`] reports it).
pub fn best_isa() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(|| best_under(available_isas(), Some(isa_ceiling())))
}

/// Receives one panel's 16 results for one token.
pub(crate) trait Sink: Sync {
    /// Stores `vals` (rows `16p .. 16p + 16`, clipped to `n`) for token `t`.
    ///
    /// # Safety
    /// `t < m` and `p < panels` of the call that made the sink; no two threads store the same
    /// `(t, p)` concurrently.
    unsafe fn put(&self, t: usize, p: usize, vals: &[i32; PANEL_ROWS]);
}

/// Writes integer results into a row-major `[m, n]` i32 buffer.
struct I32Sink {
    /// Start of the caller's `m · n` buffer.
    out: *mut i32,
    /// Row length (`n`).
    n: usize,
}

// SAFETY: the sink only writes through `out`, and callers of `put` guarantee that concurrent
// writers touch disjoint `(t, p)` ranges of the exclusively borrowed buffer.
unsafe impl Sync for I32Sink {}

impl Sink for I32Sink {
    unsafe fn put(&self, t: usize, p: usize, vals: &[i32; PANEL_ROWS]) {
        let row0 = p * PANEL_ROWS;
        let len = PANEL_ROWS.min(self.n - row0);
        // SAFETY: t < m and row0 + len ≤ n, so the range lies in the m · n buffer; disjoint
        // from other threads' writes (trait contract).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.out.add(t * self.n + row0), len) };
        dst.copy_from_slice(&vals[..len]);
    }
}

/// Writes `acc as f32 / denom[t]` into a row-major `[m, n]` f32 buffer.
struct F32Sink<'a> {
    /// Start of the caller's `m · n` buffer.
    out: *mut f32,
    /// Row length (`n`).
    n: usize,
    /// Per token `x_scale · weight_scale`.
    denom: &'a [f32],
}

// SAFETY: as for I32Sink; `denom` is only read.
unsafe impl Sync for F32Sink<'_> {}

impl Sink for F32Sink<'_> {
    unsafe fn put(&self, t: usize, p: usize, vals: &[i32; PANEL_ROWS]) {
        let row0 = p * PANEL_ROWS;
        let len = PANEL_ROWS.min(self.n - row0);
        let d = self.denom[t];
        // SAFETY: as in I32Sink::put.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.out.add(t * self.n + row0), len) };
        for (o, &v) in dst.iter_mut().zip(vals) {
            *o = v as f32 / d;
        }
    }
}

/// Per-thread buffers reused across calls.
#[derive(Default)]
struct Scratch {
    /// Packed activation tiles, `m · k_pad` bytes.
    packed: Vec<i8>,
    /// Per token `Σ x_q`.
    sums: Vec<i32>,
    /// Per token `x_scale · weight_scale`.
    denom: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
    static ROW: Cell<Vec<i8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch. The buffers are moved out while `f` runs, so a nested
/// call on the same thread (rayon work stealing) gets fresh ones instead of aliasing them.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.take();
    let r = f(&mut s);
    SCRATCH.set(s);
    r
}

/// Copies activation row `row` (≤ `k_pad` values) as token `t` of a packed tile of `mt` tokens
/// (`tile.len() == mt · k_pad`), zero-filling the padding columns.
fn pack_row(row: &[i8], t: usize, mt: usize, tile: &mut [i8]) {
    let nb = tile.len() / (mt * BLOCK_K);
    for b in 0..nb {
        for i in 0..4 {
            let col = b * BLOCK_K + 4 * i;
            let dst = &mut tile[((b * 4 + i) * mt + t) * 4..][..4];
            if col + 4 <= row.len() {
                dst.copy_from_slice(&row[col..col + 4]);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = row.get(col + j).copied().unwrap_or(0);
                }
            }
        }
    }
}

/// Runs all token tiles against all panels, in parallel over panel groups.
fn run<S: Sink>(isa: Isa, w: &TernaryMatrix, packed: &[i8], sums: &[i32], m: usize, sink: &S) {
    let tt = arch::tile_tokens(isa);
    let k_pad = w.k_padded();
    let np = w.panels();
    // GEMV: small groups for load balance; GEMM: 8 panels (128 rows) share each packed
    // activation tile while it is hot in L1/L2.
    let group = if m == 1 { 4 } else { 8 };
    // The portable tile reads each token's activations as telescoped lane patterns: made once.
    let xexp: Vec<autovec::Steps> = if isa == Isa::Portable {
        packed
            .chunks_exact(k_pad)
            .map(|x| {
                let mut e = autovec::Steps::default();
                e.expand(x);
                e
            })
            .collect()
    } else {
        Vec::new()
    };
    (0..np.div_ceil(group)).into_par_iter().for_each(|g| {
        let panels = g * group..np.min((g + 1) * group);
        let mut t0 = 0;
        while t0 < m {
            let mt = tt.min(m - t0);
            let xp = &packed[t0 * k_pad..(t0 + mt) * k_pad];
            if isa == Isa::Portable {
                for p in panels.clone() {
                    let vals = autovec::tile(w.panel(p), &xexp[t0], sums[t0]);
                    // SAFETY: this task owns `panels` for every token (tiles of one token).
                    unsafe { sink.put(t0, p, &vals) };
                }
            } else {
                run_tile(isa, w, xp, &sums[t0..t0 + mt], t0, panels.clone(), sink);
            }
            t0 += mt;
        }
    });
}

/// One token tile × a panel range; SIMD where the back end has the tile, else scalar.
fn run_tile<S: Sink>(
    isa: Isa,
    w: &TernaryMatrix,
    xp: &[i8],
    sums: &[i32],
    t0: usize,
    panels: Range<usize>,
    sink: &S,
) {
    // SAFETY: `isa` was checked available by every public entry point; xp holds
    // sums.len() · k_pad packed bytes; this task owns `panels` for all tokens, so no other
    // thread writes the same (t, p).
    if unsafe { arch::run_tile(isa, w, xp, sums, t0, panels.clone(), sink) } {
        return;
    }
    // Scalar: tiles of one token are plain zero-padded rows.
    let k_pad = w.k_padded();
    for (t, x) in xp.chunks_exact(k_pad).enumerate() {
        for p in panels.clone() {
            let vals = scalar::tile(w.panel(p), x);
            // SAFETY: as above.
            unsafe { sink.put(t0 + t, p, &vals) };
        }
    }
}

/// Fails unless `isa` runs on this CPU.
fn check_isa(isa: Isa) -> Result<(), KernelError> {
    if available_isas().contains(&isa) {
        Ok(())
    } else {
        Err(KernelError::IsaUnavailable { isa })
    }
}

/// Fails unless `got == expected`.
fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::BadLength {
            what,
            expected,
            got,
        })
    }
}

/// Integer GEMM with a forced instruction set: `out[t · n + row] = Σ_k w[row, k] ·
/// x_q[t · k + k']` for `m` row-major tokens (`x_q.len() == m · k`, `out.len() == m · n`).
pub fn gemm_with(
    isa: Isa,
    w: &TernaryMatrix,
    x_q: &[i8],
    m: usize,
    out: &mut [i32],
) -> Result<(), KernelError> {
    check_isa(isa)?;
    let (n, k) = (w.n(), w.k());
    check_len("x_q", m * k, x_q.len())?;
    check_len("out", m * n, out.len())?;
    if m == 0 {
        return Ok(());
    }
    let tt = arch::tile_tokens(isa);
    let k_pad = w.k_padded();
    with_scratch(|s| {
        s.packed.resize(m * k_pad, 0);
        s.sums.resize(m, 0);
        for (ti, tile) in s.packed.chunks_mut(tt * k_pad).enumerate() {
            let (t0, mt) = (ti * tt, tile.len() / k_pad);
            for t in 0..mt {
                let row = &x_q[(t0 + t) * k..(t0 + t + 1) * k];
                pack_row(row, t, mt, tile);
                s.sums[t0 + t] = row.iter().map(|&v| i32::from(v)).sum();
            }
        }
        let sink = I32Sink {
            out: out.as_mut_ptr(),
            n,
        };
        run(isa, w, &s.packed, &s.sums, m, &sink);
    });
    Ok(())
}

/// Integer GEMV with a forced instruction set (`x_q.len() == k`, `out.len() == n`).
pub fn gemv_with(
    isa: Isa,
    w: &TernaryMatrix,
    x_q: &[i8],
    out: &mut [i32],
) -> Result<(), KernelError> {
    gemm_with(isa, w, x_q, 1, out)
}

/// Integer GEMM with the best instruction set; see [`gemm_with`].
pub fn gemm(w: &TernaryMatrix, x_q: &[i8], m: usize, out: &mut [i32]) -> Result<(), KernelError> {
    gemm_with(best_isa(), w, x_q, m, out)
}

/// Integer GEMV with the best instruction set; see [`gemv_with`].
pub fn gemv(w: &TernaryMatrix, x_q: &[i8], out: &mut [i32]) -> Result<(), KernelError> {
    gemm_with(best_isa(), w, x_q, 1, out)
}

/// BitLinear forward with a forced instruction set: quantises each of the `m` rows of `x`
/// (row-major `m · k`) to int8, multiplies by `w` and writes
/// `out[t · n + row] = acc as f32 / (x_scale[t] · weight_scale)` (`out.len() == m · n`).
pub fn ternary_matmul_with(
    isa: Isa,
    w: &TernaryMatrix,
    weight_scale: f32,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_isa(isa)?;
    let (n, k) = (w.n(), w.k());
    check_len("x", m * k, x.len())?;
    check_len("out", m * n, out.len())?;
    if m == 0 {
        return Ok(());
    }
    let tt = arch::tile_tokens(isa);
    let k_pad = w.k_padded();
    with_scratch(|s| {
        s.packed.resize(m * k_pad, 0);
        s.sums.resize(m, 0);
        s.denom.resize(m, 0.0);
        // Tile `ti` of the packed buffer is tokens ti·tt .. ti·tt + mt, mt = bytes / k_pad.
        let quant_tile = |ti: usize, tile: &mut [i8], sums: &mut [i32], denom: &mut [f32]| {
            let (t0, mt) = (ti * tt, tile.len() / k_pad);
            let mut row = ROW.take();
            row.resize(k, 0);
            for t in 0..mt {
                let (scale, sum) = quantize_with(isa, &x[(t0 + t) * k..(t0 + t + 1) * k], &mut row);
                pack_row(&row, t, mt, tile);
                sums[t] = sum;
                denom[t] = scale * weight_scale;
            }
            ROW.set(row);
        };
        if m == 1 {
            quant_tile(0, &mut s.packed, &mut s.sums, &mut s.denom);
        } else {
            s.packed
                .par_chunks_mut(tt * k_pad)
                .zip(s.sums.par_chunks_mut(tt))
                .zip(s.denom.par_chunks_mut(tt))
                .enumerate()
                .for_each(|(ti, ((tile, sums), denom))| quant_tile(ti, tile, sums, denom));
        }
        let sink = F32Sink {
            out: out.as_mut_ptr(),
            n,
            denom: &s.denom,
        };
        run(isa, w, &s.packed, &s.sums, m, &sink);
    });
    Ok(())
}

/// BitLinear forward with the best instruction set; see [`ternary_matmul_with`].
pub fn ternary_matmul(
    w: &TernaryMatrix,
    weight_scale: f32,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    ternary_matmul_with(best_isa(), w, weight_scale, x, m, out)
}
