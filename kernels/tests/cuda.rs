//! The CUDA kernels against their host statements (feature `cuda`; needs an NVIDIA GPU).
//! Without a GPU each test prints why it did nothing, unless `TRITTER_REQUIRE_GPU=1` (set by
//! scripts/gpu-check.sh), which makes a missing GPU a failure.
#![cfg(feature = "cuda")]

use half::f16;
use tritter_kernels::cuda::{Gpu, GpuKvKind, Tuning};
use tritter_kernels::gpu_ref::{
    attention_ref, int4_group, quant_group_i4, roundtrip_i4, slot_of, G2Matrix,
};
use tritter_kernels::{gemv_f16_scalar, quantize_row_i8_scalar, ternary_matmul, TernaryMatrix};

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("TRITTER_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("TRITTER_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("no CUDA device ({e}); skipping");
            None
        }
    }
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn ternary(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    let v: Vec<i8> = rand(n * k, seed)
        .iter()
        .map(|x| (x * 1.5).round().clamp(-1.0, 1.0) as i8)
        .collect();
    TernaryMatrix::from_ternary(&v, n, k).unwrap()
}

#[test]
fn act_quant_is_bit_exact() {
    let Some(g) = gpu() else { return };
    for &(m, k) in &[(1, 2560), (5, 1000), (3, 17), (40, 6912)] {
        let mut x = rand(m * k, (m * k) as u64);
        // Ties and an outlier row, so rounding and the absmax path are exercised.
        x[0] = 127.0;
        x[1] = 2.5;
        let dx = g.upload(&x).unwrap();
        let act = g.act_buf(k, m).unwrap();
        g.act_quant(&dx, 0, m, &act).unwrap();
        let (q, s, sum) = act.read(&g, m).unwrap();
        for t in 0..m {
            let mut want = vec![0i8; k];
            let ws = quantize_row_i8_scalar(&x[t * k..][..k], &mut want);
            assert_eq!(s[t].to_bits(), ws.to_bits(), "scale m{m} k{k} t{t}");
            assert_eq!(&q[t * act.k_pad..][..k], &want[..], "codes m{m} k{k} t{t}");
            assert!(q[t * act.k_pad + k..(t + 1) * act.k_pad]
                .iter()
                .all(|&v| v == 0));
            assert_eq!(sum[t], want.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
    }
}

/// GEMV (m = 1) and GEMM (m > 1) equal the CPU BitLinear product bit for bit, with stacked
/// matrices keeping their own scales and ragged shapes.
#[test]
fn ternary_gemv_and_gemm_are_bit_exact() {
    let Some(g) = gpu() else { return };
    for &(n1, n2, k) in &[
        (2560, 640, 2560),
        (300, 77, 1000),
        (6912, 0, 2560),
        (64, 5, 6912),
    ] {
        let a = ternary(n1, k, 1 + k as u64);
        let b = ternary(n2.max(1), k, 2 + k as u64);
        let parts: Vec<(&TernaryMatrix, f32)> = if n2 == 0 {
            vec![(&a, 0.83)]
        } else {
            vec![(&a, 0.83), (&b, 1.21)]
        };
        let g2 = G2Matrix::stack(&parts).unwrap();
        let w = g.upload_ternary(&g2).unwrap();
        for &m in &[1usize, 2, 31, 33, 70] {
            let x = rand(m * k, (m + k) as u64);
            let dx = g.upload(&x).unwrap();
            let act = g.act_buf(k, m).unwrap();
            let out = g.upload(&vec![f32::NAN; m * w.n]).unwrap();
            g.bitlinear(&w, &dx, 0, m, &act, &out, 0).unwrap();
            let got = g.download(&out).unwrap();
            let mut want = vec![0f32; m * w.n];
            let mut row0 = vec![0f32; m * n1];
            ternary_matmul(&a, 0.83, &x, m, &mut row0).unwrap();
            let mut row1 = vec![0f32; m * b.n()];
            if n2 > 0 {
                ternary_matmul(&b, 1.21, &x, m, &mut row1).unwrap();
            }
            for t in 0..m {
                want[t * w.n..][..n1].copy_from_slice(&row0[t * n1..][..n1]);
                if n2 > 0 {
                    want[t * w.n + n1..][..n2].copy_from_slice(&row1[t * n2..][..n2]);
                }
            }
            let bad = got
                .iter()
                .zip(&want)
                .position(|(u, v)| u.to_bits() != v.to_bits());
            assert!(
                bad.is_none(),
                "n {n1}+{n2} k {k} m {m}: first mismatch at {:?}: {} vs {}",
                bad,
                got[bad.unwrap_or(0)],
                want[bad.unwrap_or(0)]
            );
        }
    }
}

/// INT4 cache stores: codes and (scale, min) bit-exact to the host statement, f32 and f16
/// stores exact/rounded, positions in the slots the rolling rule names.
#[test]
fn kv_store_matches_host_quantisation() {
    let Some(g) = gpu() else { return };
    for &d in &[128usize, 16, 96] {
        let (hkv, t, cap, window, sinks) = (3usize, 40usize, 48usize, 20usize, 4usize);
        let group = int4_group(d).unwrap();
        let k = rand(t * hkv * d, d as u64);
        let v = rand(t * hkv * d, d as u64 + 7);
        let (dk, dv) = (g.upload(&k).unwrap(), g.upload(&v).unwrap());
        let base = g.upload(&[5i32]).unwrap();
        for kind in [GpuKvKind::Int4, GpuKvKind::F16, GpuKvKind::F32] {
            let kv = g.kv_cache(kind, cap, hkv, d, window, sinks, 0.0).unwrap();
            g.kv_store(&kv, &dk, &dv, t, &base).unwrap();
            let (gk, gv, pos) = g.kv_read(&kv).unwrap();
            for i in 0..t {
                let p = 5 + i;
                let slot = slot_of(p, cap, window, sinks);
                // A later position that rolled onto the same slot wins.
                if (i + 1..t).any(|j| slot_of(5 + j, cap, window, sinks) == slot) {
                    continue;
                }
                assert_eq!(pos[slot], p as i32);
                for h in 0..hkv {
                    let src = &k[(i * hkv + h) * d..][..d];
                    let srcv = &v[(i * hkv + h) * d..][..d];
                    let got = &gk[(slot * hkv + h) * d..][..d];
                    let gotv = &gv[(slot * hkv + h) * d..][..d];
                    let (wk, wv): (Vec<f32>, Vec<f32>) = match kind {
                        GpuKvKind::Int4 => (roundtrip_i4(src, group), roundtrip_i4(srcv, group)),
                        GpuKvKind::F16 => (
                            src.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
                            srcv.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
                        ),
                        GpuKvKind::F32 => (src.to_vec(), srcv.to_vec()),
                    };
                    assert_eq!(got, &wk[..], "{kind:?} d{d} keys slot {slot} head {h}");
                    assert_eq!(gotv, &wv[..], "{kind:?} d{d} values slot {slot} head {h}");
                }
            }
            if kind == GpuKvKind::Int4 {
                let (kd, ks, _, _) = g.kv_raw(&kv).unwrap();
                let i = t - 1;
                let slot = slot_of(5 + i, cap, window, sinks);
                let mut buf = vec![0u8; group / 2];
                for (gi, chunk) in k[(i * hkv) * d..][..d].chunks(group).enumerate() {
                    let (s, m) = quant_group_i4(chunk, &mut buf);
                    let row = slot * hkv;
                    assert_eq!(&kd[row * d / 2 + gi * group / 2..][..group / 2], &buf[..]);
                    let bits = ks[row * (d / group) + gi];
                    assert_eq!(bits & 0xffff, u32::from(s.to_bits()), "scale d{d} g{gi}");
                    assert_eq!(bits >> 16, u32::from(m.to_bits()), "min d{d} g{gi}");
                }
            }
        }
    }
}

/// Decode and chunked-prefill attention over a rolling window with sinks (sink keys shifted to
/// their StreamingLLM positions): against a naive f64
/// attention over the values the cache holds (exact for f32, the INT4/f16 round trip for the
/// others): max error ≤ 2e-5 of the largest |value|.
#[test]
fn attention_matches_naive_with_window_and_sinks() {
    let Some(mut g) = gpu() else { return };
    let grouped = Tuning {
        attn_group: true,
        ..Tuning::default()
    };
    for tuning in [Tuning::default(), grouped] {
        g.set_tuning(tuning).unwrap();
        attention_cases(&g, tuning);
    }
}

/// Chunked prefill then decode over every cache kind, against the naive f64 statement.
fn attention_cases(g: &Gpu, tuning: Tuning) {
    for &(heads, hkv, d, window, sinks, total, chunk) in &[
        (8usize, 2usize, 128usize, 64usize, 4usize, 300usize, 37usize),
        (4, 2, 16, 0, 0, 90, 16),
        (6, 6, 64, 100, 0, 700, 128),
        (20, 5, 128, 1024, 4, 1100, 512),
        (16, 2, 256, 0, 0, 300, 100),
        (3, 1, 8, 40, 2, 200, 7),
    ] {
        let cap = if window > 0 { window + chunk } else { total };
        let k = rand(total * hkv * d, 11 + d as u64);
        let v = rand(total * hkv * d, 12 + d as u64);
        let q = rand(total * heads * d, 13 + d as u64);
        let scale = 1.0 / (d as f32).sqrt();
        for kind in [GpuKvKind::F32, GpuKvKind::F16, GpuKvKind::Int4] {
            let group = int4_group(d).unwrap();
            let held = |x: &[f32]| -> Vec<f32> {
                match kind {
                    GpuKvKind::F32 => x.to_vec(),
                    GpuKvKind::F16 => x.iter().map(|&y| f16::from_f32(y).to_f32()).collect(),
                    GpuKvKind::Int4 => x.chunks(d).flat_map(|r| roundtrip_i4(r, group)).collect(),
                }
            };
            let (kh, vh) = (held(&k), held(&v));
            let kv = g
                .kv_cache(kind, cap, hkv, d, window, sinks, 10000.0)
                .unwrap();
            let s = g.attn_scratch(chunk * heads, cap, d).unwrap();
            let mut base = g.upload(&[0i32]).unwrap();
            let mut p0 = 0;
            let mut worst = 0f32;
            while p0 < total {
                let t = chunk.min(total - p0);
                g.write(&[p0 as i32], &mut base).unwrap();
                let dk = g.upload(&k[p0 * hkv * d..(p0 + t) * hkv * d]).unwrap();
                let dv = g.upload(&v[p0 * hkv * d..(p0 + t) * hkv * d]).unwrap();
                let dq = g.upload(&q[p0 * heads * d..(p0 + t) * heads * d]).unwrap();
                let out = g.upload(&vec![f32::NAN; t * heads * d]).unwrap();
                g.kv_store(&kv, &dk, &dv, t, &base).unwrap();
                g.attention(&dq, t, heads, &kv, &base, scale, &s, &out)
                    .unwrap();
                let got = g.download(&out).unwrap();
                let want = attention_ref(
                    &q[p0 * heads * d..(p0 + t) * heads * d],
                    &kh[..(p0 + t) * hkv * d],
                    &vh[..(p0 + t) * hkv * d],
                    heads,
                    hkv,
                    d,
                    p0,
                    window,
                    sinks,
                    scale,
                    10000.0,
                );
                for (a, b) in got.iter().zip(&want) {
                    assert!(a.is_finite(), "non-finite output");
                    worst = worst.max((a - b).abs());
                }
                p0 += t;
            }
            assert!(
                worst <= 2e-5,
                "{tuning:?} {kind:?} heads {heads}/{hkv} d {d} window {window} sinks {sinks}: max error {worst}"
            );
        }
    }
}

#[test]
fn norm_rope_activations_and_heads_match_host() {
    let Some(g) = gpu() else { return };
    let (rows, dim) = (7usize, 2560usize);
    let x = rand(rows * dim, 21);
    let w = rand(dim, 22);
    let (dx, dw) = (g.upload(&x).unwrap(), g.upload(&w).unwrap());
    let y = g.zeros::<f32>(rows * dim).unwrap();
    g.rmsnorm(&dx, rows, dim, &dw, 1e-5, &y).unwrap();
    let got = g.download(&y).unwrap();
    for r in 0..rows {
        let row = &x[r * dim..][..dim];
        let ms = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            / dim as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        for c in 0..dim {
            let want = f64::from(row[c]) * inv * f64::from(w[c]);
            assert!((f64::from(got[r * dim + c]) - want).abs() <= 1e-5 * (1.0 + want.abs()));
        }
    }
    // RoPE at positions 1000.. for [t][heads][d].
    let (t, heads, d) = (3usize, 4usize, 64usize);
    let xr = rand(t * heads * d, 23);
    let dxr = g.upload(&xr).unwrap();
    let base = g.upload(&[1000i32]).unwrap();
    g.rope(&dxr, t, heads, d, 10000.0, &base).unwrap();
    let got = g.download(&dxr).unwrap();
    for ti in 0..t {
        for h in 0..heads {
            for j in 0..d / 2 {
                let inv = 1.0 / 10000f64.powf((2 * j) as f64 / d as f64);
                let ang = (1000 + ti) as f64 * inv;
                let (s, c) = ang.sin_cos();
                let row = &xr[(ti * heads + h) * d..][..d];
                let (a, b) = (f64::from(row[j]), f64::from(row[j + d / 2]));
                let g0 = f64::from(got[(ti * heads + h) * d + j]);
                let g1 = f64::from(got[(ti * heads + h) * d + j + d / 2]);
                // f32 angles of ~1000 radians carry ~6e-5 absolute error.
                assert!((g0 - (a * c - b * s)).abs() < 2e-4, "rope t{ti} h{h} j{j}");
                assert!((g1 - (b * c + a * s)).abs() < 2e-4, "rope t{ti} h{h} j{j}");
            }
        }
    }
    // Gated relu² and silu.
    let (tt, f) = (3usize, 50usize);
    let gu = rand(tt * 2 * f, 24);
    let dgu = g.upload(&gu).unwrap();
    let h = g.zeros::<f32>(tt * f).unwrap();
    for kind in [0, 1] {
        g.gated_act(&dgu, tt, f, kind, &h).unwrap();
        let got = g.download(&h).unwrap();
        for i in 0..tt {
            for c in 0..f {
                let (gv, uv) = (gu[i * 2 * f + c], gu[i * 2 * f + f + c]);
                let a = if kind == 0 {
                    gv.max(0.0) * gv.max(0.0)
                } else {
                    gv / (1.0 + (-gv).exp())
                };
                assert!((got[i * f + c] - uv * a).abs() < 1e-6);
            }
        }
    }
    // Heads: f16 against the CPU f16 GEMV, f32 against f64.
    let (v, c) = (1000usize, 2560usize);
    let wh = rand(v * c, 25);
    let xh = rand(c, 26);
    let dxh = g.upload(&xh).unwrap();
    let out = g.zeros::<f32>(v).unwrap();
    let h16 = g.upload_head(&wh, v, c, true).unwrap();
    g.head(&h16, &dxh, 0, &out, 0).unwrap();
    let got = g.download(&out).unwrap();
    let w16: Vec<f16> = wh.iter().map(|&x| f16::from_f32(x)).collect();
    let mut want = vec![0f32; v];
    gemv_f16_scalar(&w16, &xh, &mut want).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "f16 head {a} vs {b}"
        );
    }
    let h32 = g.upload_head(&wh, v, c, false).unwrap();
    g.head(&h32, &dxh, 0, &out, 0).unwrap();
    let got = g.download(&out).unwrap();
    for r in 0..v {
        let want: f64 = (0..c)
            .map(|i| f64::from(wh[r * c + i]) * f64::from(xh[i]))
            .sum();
        assert!((f64::from(got[r]) - want).abs() <= 1e-4 * (1.0 + want.abs()));
    }
}

#[test]
fn bad_sizes_are_errors_not_launches() {
    let Some(g) = gpu() else { return };
    let x = g.upload(&[1f32; 10]).unwrap();
    let act = g.act_buf(64, 1).unwrap();
    assert!(g.act_quant(&x, 0, 1, &act).is_err());
    assert!(g.kv_cache(GpuKvKind::Int4, 8, 1, 12, 0, 0, 0.0).is_err());
    assert!(g.kv_cache(GpuKvKind::F32, 8, 1, 16, 8, 0, 0.0).is_err());
}

/// The fused kernels equal the unfused ones bit for bit: RMSNorm + quantiser, and the q|k|v
/// split with RoPE.
#[test]
fn fused_kernels_equal_their_parts() {
    let Some(g) = gpu() else { return };
    let (m, k) = (5usize, 2560usize);
    let x = rand(m * k, 41);
    let w = rand(k, 42);
    let (dx, dw) = (g.upload(&x).unwrap(), g.upload(&w).unwrap());
    let fused = g.act_buf(k, m).unwrap();
    let parts = g.act_buf(k, m).unwrap();
    let y = g.zeros::<f32>(m * k).unwrap();
    for norm in [Some(&dw), None] {
        g.rms_act_quant(&dx, m, norm, 1e-5, &fused).unwrap();
        match norm {
            Some(n) => {
                g.rmsnorm(&dx, m, k, n, 1e-5, &y).unwrap();
                g.act_quant(&y, 0, m, &parts).unwrap();
            }
            None => g.act_quant(&dx, 0, m, &parts).unwrap(),
        }
        let (a, b) = (fused.read(&g, m).unwrap(), parts.read(&g, m).unwrap());
        assert_eq!(a.0, b.0, "codes (norm {})", norm.is_some());
        assert_eq!(a.1, b.1, "scales");
        assert_eq!(a.2, b.2, "sums");
    }
    let (t, h, hkv, d) = (3usize, 8usize, 2usize, 128usize);
    let stride = (h + 2 * hkv) * d;
    let qkv = g.upload(&rand(t * stride, 43)).unwrap();
    let base = g.upload(&[777i32]).unwrap();
    let z = |n: usize| g.upload(&vec![f32::NAN; n]).unwrap();
    let (q1, k1, v1) = (z(t * h * d), z(t * hkv * d), z(t * hkv * d));
    let (q2, k2, v2) = (z(t * h * d), z(t * hkv * d), z(t * hkv * d));
    g.qkv_rope_split(&qkv, t, h, hkv, d, 10000.0, &base, &q1, &k1, &v1)
        .unwrap();
    g.copy_cols(&qkv, stride, 0, h * d, t, &q2).unwrap();
    g.copy_cols(&qkv, stride, h * d, hkv * d, t, &k2).unwrap();
    g.copy_cols(&qkv, stride, (h + hkv) * d, hkv * d, t, &v2)
        .unwrap();
    g.rope(&q2, t, h, d, 10000.0, &base).unwrap();
    g.rope(&k2, t, hkv, d, 10000.0, &base).unwrap();
    for (a, b, what) in [(&q1, &q2, "q"), (&k1, &k2, "k"), (&v1, &v2, "v")] {
        let (a, b) = (g.download(a).unwrap(), g.download(b).unwrap());
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what} differs between fused and unfused");
    }
}

/// The bit-identical speed variants to compare with the default path: each alone, all but
/// programmatic dependent launch, and all (grouped attention, which reorders float sums, is
/// checked against the naive statement instead); those the device or the PTX cannot run are
/// left out (noted).
fn variants(g: &mut Gpu) -> Vec<Tuning> {
    let d = Tuning::default();
    let all = Tuning::all();
    let candidates = [
        Tuning {
            gemv_regs: true,
            ..d
        },
        Tuning {
            attn_skip_empty: true,
            ..d
        },
        Tuning {
            gemm_mma: true,
            ..d
        },
        Tuning { pdl: true, ..d },
        Tuning {
            pdl: false,
            attn_group: false,
            ..all
        },
        Tuning {
            attn_group: false,
            ..all
        },
    ];
    let mut v = vec![];
    for t in candidates {
        match g.set_tuning(t) {
            Ok(()) => v.push(t),
            Err(e) => eprintln!("variant {t:?} not run here: {e}"),
        }
    }
    g.set_tuning(d).unwrap();
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every speed variant gives the default path's values bit for bit: the register GEMV over
/// every register width (k up to 16384) and past it (the shared-memory kernel again), the
/// residual add fused into the GEMV/GEMM epilogue, attention with empty splits skipped over
/// chunked prefill and decode, and a dependent chain of launches under programmatic dependent
/// launch (a kernel that ran ahead of its inputs would change the result).
#[test]
fn speed_variants_equal_the_default_path() {
    let Some(mut g) = gpu() else { return };
    let vs = variants(&mut g);
    // GEMV / GEMM, plain and accumulating.
    for &(n, k, m) in &[
        (2560usize, 2560usize, 1usize),
        (77, 1000, 1),
        (6912, 2560, 1),
        (2560, 6912, 1),
        (130, 9000, 1),
        (50, 20000, 1),
        (300, 2560, 33),
        (2560, 2560, 512),
        (70, 1000, 70),
        (6912, 2560, 2),
        (129, 320, 65),
    ] {
        let g2 = G2Matrix::stack(&[(&ternary(n, k, 5 + k as u64), 0.7)]).unwrap();
        let w = g.upload_ternary(&g2).unwrap();
        let x = rand(m * k, 6 + n as u64);
        let dx = g.upload(&x).unwrap();
        let act = g.act_buf(k, m).unwrap();
        let res = rand(m * n, 7);
        let run = |g: &Gpu| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
            g.act_quant(&dx, 0, m, &act).unwrap();
            let out = g.upload(&vec![f32::NAN; m * n]).unwrap();
            g.ternary(&w, &act, m, &out, 0).unwrap();
            let sum = g.upload(&res).unwrap();
            g.ternary_add(&w, &act, m, &sum, 0).unwrap();
            let parts = g.upload(&res).unwrap();
            g.add(&parts, &out, m * n).unwrap();
            (
                g.download(&out).unwrap(),
                g.download(&sum).unwrap(),
                g.download(&parts).unwrap(),
            )
        };
        let (base, base_sum, base_parts) = run(&g);
        assert_eq!(
            bits(&base_sum),
            bits(&base_parts),
            "fused add n {n} k {k} m {m}"
        );
        for &t in &vs {
            g.set_tuning(t).unwrap();
            let (o, s, _) = run(&g);
            assert_eq!(bits(&o), bits(&base), "{t:?}: n {n} k {k} m {m}");
            assert_eq!(
                bits(&s),
                bits(&base_sum),
                "{t:?}: accumulate n {n} k {k} m {m}"
            );
        }
        g.set_tuning(Tuning::default()).unwrap();
    }
    // Attention over a cache filled chunk by chunk (windowed and not, past the window).
    for &(heads, hkv, d, window, sinks, total, chunk, cap) in &[
        (
            20usize, 5usize, 128usize, 0usize, 0usize, 900usize, 300usize, 4096usize,
        ),
        (8, 2, 64, 256, 4, 700, 100, 356),
        (4, 4, 128, 0, 0, 40, 1, 2048),
    ] {
        let q = rand(total * heads * d, 21);
        let k = rand(total * hkv * d, 22);
        let v = rand(total * hkv * d, 23);
        let mut outs: Vec<Vec<u32>> = vec![];
        for t in std::iter::once(Tuning::default()).chain(vs.iter().copied()) {
            g.set_tuning(t).unwrap();
            let kv = g
                .kv_cache(GpuKvKind::Int4, cap, hkv, d, window, sinks, 10000.0)
                .unwrap();
            let s = g.attn_scratch(chunk * heads, cap, d).unwrap();
            let mut base = g.upload(&[0i32]).unwrap();
            let mut all = vec![];
            let mut p0 = 0;
            while p0 < total {
                let n = chunk.min(total - p0);
                g.write(&[p0 as i32], &mut base).unwrap();
                let dk = g.upload(&k[p0 * hkv * d..(p0 + n) * hkv * d]).unwrap();
                let dv = g.upload(&v[p0 * hkv * d..(p0 + n) * hkv * d]).unwrap();
                let dq = g.upload(&q[p0 * heads * d..(p0 + n) * heads * d]).unwrap();
                let out = g.upload(&vec![f32::NAN; n * heads * d]).unwrap();
                g.kv_store(&kv, &dk, &dv, n, &base).unwrap();
                g.attention(&dq, n, heads, &kv, &base, 0.125, &s, &out)
                    .unwrap();
                all.extend(bits(&g.download(&out).unwrap()));
                p0 += n;
            }
            outs.push(all);
        }
        for (i, o) in outs.iter().enumerate().skip(1) {
            assert!(
                o == &outs[0],
                "{:?}: attention differs (heads {heads}, window {window}, cap {cap})",
                vs[i - 1]
            );
        }
    }
    // A dependent chain without host synchronisation: x ← x + W·q(norm(x)), 60 times (weight
    // scale 1000: each step adds O(0.05), so the values stay finite and keep changing).
    let (n, k) = (2560usize, 2560usize);
    let g2 = G2Matrix::stack(&[(&ternary(n, k, 31), 1000.0)]).unwrap();
    let w = g.upload_ternary(&g2).unwrap();
    let norm = g.upload(&rand(k, 32)).unwrap();
    let x0 = rand(k, 33);
    let mut results = vec![];
    for t in std::iter::once(Tuning::default()).chain(vs.iter().copied()) {
        g.set_tuning(t).unwrap();
        let x = g.upload(&x0).unwrap();
        let act = g.act_buf(k, 1).unwrap();
        for _ in 0..60 {
            g.rms_act_quant(&x, 1, Some(&norm), 1e-5, &act).unwrap();
            g.ternary_add(&w, &act, 1, &x, 0).unwrap();
        }
        let xs = g.download(&x).unwrap();
        assert!(xs.iter().all(|v| v.is_finite()), "{t:?}: chain not finite");
        assert!(xs != x0, "{t:?}: chain did not run");
        results.push(bits(&xs));
    }
    for (i, r) in results.iter().enumerate().skip(1) {
        assert!(r == &results[0], "{:?}: dependent chain differs", vs[i - 1]);
    }
    g.set_tuning(Tuning::default()).unwrap();
}
