//! The speed variants of `Tuning` (register GEMV, fused residual add, skipped attention splits,
//! tensor-core GEMM, programmatic dependent launch) give the plain path's values bit for bit.

use tritter_kernels::cuda::{Gpu, GpuKvKind, Tuning};
use tritter_kernels::gpu_ref::G2Matrix;

use super::{gpu, rand, rand_ternary};

/// The bit-identical speed variants to compare with the plain path (`Tuning::plain`): each
/// alone, all but programmatic dependent launch, and all (grouped attention, which reorders
/// float sums, is checked against the naive statement instead); those the device or the PTX
/// cannot run are left out (noted).
fn variants(g: &mut Gpu) -> Vec<Tuning> {
    let d = Tuning::plain();
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

/// Every speed variant gives the plain path's values bit for bit: the register GEMV over
/// every register width (k up to 16384) and past it (the shared-memory kernel again), the
/// residual add fused into the GEMV/GEMM epilogue, attention with empty splits skipped over
/// chunked prefill and decode, and a dependent chain of launches under programmatic dependent
/// launch (a kernel that ran ahead of its inputs would change the result).
#[test]
fn speed_variants_equal_the_plain_path() {
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
        let g2 = G2Matrix::stack(&[(&rand_ternary(n, k, 5 + k as u64), 0.7)]).unwrap();
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
        g.set_tuning(Tuning::plain()).unwrap();
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
        for t in std::iter::once(Tuning::plain()).chain(vs.iter().copied()) {
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
    let g2 = G2Matrix::stack(&[(&rand_ternary(n, k, 31), 1000.0)]).unwrap();
    let w = g.upload_ternary(&g2).unwrap();
    let norm = g.upload(&rand(k, 32)).unwrap();
    let x0 = rand(k, 33);
    let mut results = vec![];
    for t in std::iter::once(Tuning::plain()).chain(vs.iter().copied()) {
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
    g.set_tuning(Tuning::plain()).unwrap();
}
