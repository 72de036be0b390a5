//! `ops.cu`: RMSNorm, RoPE, gated activations and the LM heads against host statements, and
//! the fused kernels (RMSNorm + quantiser, the q|k|v split with RoPE) against their parts.

use half::f16;
use tritter_kernels::gemv_f16_scalar;

use super::{gpu, rand};

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
