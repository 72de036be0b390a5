//! Where one SigLIP-B/16 encoder layer spends its time on the CPU (224 px, batch 1: 196 tokens,
//! width 768, MLP 3072, 12 heads), op by op, with the candle ops the fused inference path used
//! before it had its own kernels, next to the whole layer as the tower runs it now. Ignored by
//! default; run in release so that the crate itself is optimised too:
//!
//! `cargo test --release -p tritter-model --test vision_profile -- --ignored --nocapture`

use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;
use tritter_model::vision::{SiglipVision, VisionConfig, VisionPath};

/// Median milliseconds of `runs` calls of `f` after two warm-up calls.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..2 {
        std::hint::black_box(f());
    }
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(f());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[runs / 2]
}

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 0.05, shape, &Device::Cpu).unwrap()
}

#[test]
#[ignore = "profile: run with --release --ignored --nocapture"]
fn siglip_layer_op_profile() {
    let runs = 20;
    let (n, d, i, h) = (196, 768, 3072, 12);
    let hd = d / h;
    let x = randn(&[1, n, d]);
    let x2 = x.reshape((n, d)).unwrap();
    let (wq, wi, wo) = (randn(&[d, d]), randn(&[i, d]), randn(&[d, i]));
    let (bd, bi) = (randn(&[d]), randn(&[i]));
    let (lw, lb) = (randn(&[d]), randn(&[d]));
    let hidden = randn(&[n, i]);
    let split = |t: &Tensor| {
        t.reshape((1, n, h, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let q = split(&x2);
    let scores = q.matmul(&q.t().unwrap()).unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    let ctx = probs.matmul(&q).unwrap();
    let y = x2.matmul(&wq.t().unwrap()).unwrap();
    let rows: Vec<(&str, usize, f64)> = vec![
        (
            "layer norm",
            2,
            time(runs, || {
                candle_nn::ops::layer_norm(&x, &lw, &lb, 1e-6).unwrap()
            }),
        ),
        (
            "q/k/v/out proj matmul 196x768x768",
            4,
            time(runs, || x2.matmul(&wq.t().unwrap()).unwrap()),
        ),
        (
            "bias add [196,768]",
            5,
            time(runs, || y.broadcast_add(&bd).unwrap()),
        ),
        (
            "fc1 matmul 196x768x3072",
            1,
            time(runs, || x2.matmul(&wi.t().unwrap()).unwrap()),
        ),
        (
            "bias add [196,3072]",
            1,
            time(runs, || hidden.broadcast_add(&bi).unwrap()),
        ),
        (
            "gelu (candle, 1 thread)",
            1,
            time(runs, || hidden.gelu().unwrap()),
        ),
        (
            "fc2 matmul 196x3072x768",
            1,
            time(runs, || hidden.matmul(&wo.t().unwrap()).unwrap()),
        ),
        ("split heads (transpose copy)", 3, time(runs, || split(&x2))),
        (
            "q·kᵀ 12x196x64x196",
            1,
            time(runs, || q.matmul(&q.t().unwrap()).unwrap()),
        ),
        ("scale scores", 1, time(runs, || (&scores * 0.125).unwrap())),
        (
            "softmax_last_dim",
            1,
            time(runs, || candle_nn::ops::softmax_last_dim(&scores).unwrap()),
        ),
        (
            "probs·v 12x196x196x64",
            1,
            time(runs, || probs.matmul(&q).unwrap()),
        ),
        (
            "merge heads (transpose copy)",
            1,
            time(runs, || {
                ctx.transpose(1, 2).unwrap().reshape((1, n, d)).unwrap()
            }),
        ),
        (
            "residual add [196,768]",
            2,
            time(runs, || (&x + &x).unwrap()),
        ),
    ];
    let mut total = 0.0;
    println!("| op | ms each | × per layer | ms per layer |");
    println!("|---|---:|---:|---:|");
    for (name, count, ms) in &rows {
        total += ms * *count as f64;
        println!("| {name} | {ms:.3} | {count} | {:.3} |", ms * *count as f64);
    }
    println!("| sum of ops | | | {total:.2} |");

    gemm_layouts(runs);

    let cfg = VisionConfig::siglip_base_patch16_224();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, candle_core::DType::F32, &Device::Cpu);
    let tower = SiglipVision::new(cfg.clone(), vb)
        .unwrap()
        .with_path(VisionPath::Fused);
    let px = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &Device::Cpu).unwrap();
    let whole = time(10, || tower.forward(&px).unwrap());
    let mut one = cfg.clone();
    one.num_hidden_layers = 1;
    let map1 = VarMap::new();
    let vb1 = VarBuilder::from_varmap(&map1, candle_core::DType::F32, &Device::Cpu);
    let tower1 = SiglipVision::new(one, vb1)
        .unwrap()
        .with_path(VisionPath::Fused);
    let single = time(10, || tower1.forward(&px).unwrap());
    println!(
        "tower (12 layers): {whole:.1} ms; 1-layer tower: {single:.1} ms; per layer ≈ {:.1} ms; outside the layers ≈ {:.1} ms",
        (whole - single) / 11.0,
        single - (whole - single) / 11.0
    );
}

/// `y[m, n] = x[m, k] · W` straight through gemm with W stored `[n, k]` (torch's layout, read as a
/// transposed view) or `[k, n]` (pre-transposed): what the weight layout costs per call.
fn gemm_layouts(runs: usize) {
    let par = gemm::Parallelism::Rayon(candle_core::utils::get_num_threads());
    for (m, k, n) in [(196, 768, 768), (196, 768, 3072), (196, 3072, 768)] {
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut y = vec![0f32; m * n];
        let mut run = |w_cs: isize, w_rs: isize| {
            time(runs, || {
                // SAFETY: x is m×k row-major, w holds n·k values read with the given strides (both
                // layouts stay inside it), y is m×n row-major and distinct from both.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        y.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        w_cs,
                        w_rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            })
        };
        let viewed = run(k as isize, 1);
        let pre = run(1, n as isize);
        println!(
            "gemm {m}x{k}x{n}: W [n,k] viewed transposed {viewed:.3} ms ({:.0} GFLOP/s), W [k,n] {pre:.3} ms ({:.0} GFLOP/s)",
            2.0 * (m * k * n) as f64 / viewed / 1e6,
            2.0 * (m * k * n) as f64 / pre / 1e6
        );
    }
}
