//! `attention.cu`: KV-cache stores against the host quantisation and slot rule, and attention
//! (default and grouped-query blocks) against the naive f64 statement [`attention_ref`].

use half::f16;
use tritter_kernels::cuda::{Gpu, GpuKvKind, Tuning};
use tritter_kernels::gpu_ref::{attention_ref, int4_group, quant_group_i4, roundtrip_i4, slot_of};

use super::{gpu, rand};

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
        ..Tuning::plain()
    };
    let default = g.runnable(Tuning::default()).unwrap();
    for tuning in [Tuning::plain(), default, grouped] {
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
