//! Tests of the hybrid layers against independent statements: the gated delta rule against a
//! naive per-token loop on plain `f32` arrays (the paper's `S_t = S_{t−1}·α_t(I − β_t k_t k_tᵀ) +
//! β_t v_t k_tᵀ`, `o_t = S_t q_t`, literally), each chunked form against its recurrent form (several
//! chunk lengths, lengths not a multiple of the chunk), prefill-then-step against step-by-step,
//! and a backward pass reaching every parameter. Transformers' references are checked in
//! `model/tests/golden_hybrid.rs`.

use super::delta::{gated_delta_chunked, gated_delta_recurrent, DeltaInputs};
use super::*;
use crate::weights::Params;
use candle_core::{Device, Tensor};

fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = lcg(n, seed).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn mamba_cfg(projection: Projection) -> Mamba2Config {
    Mamba2Config {
        hidden_size: 16,
        num_heads: 4,
        head_dim: 6,
        state_size: 5,
        n_groups: 2,
        conv_kernel: 4,
        use_conv_bias: true,
        chunk_size: 4,
        eps: 1e-5,
        projection,
    }
}

fn mamba_params(c: &Mamba2Config, seed: u64) -> Params {
    let (hid, i, h, cd) = (c.hidden_size, c.inner(), c.num_heads, c.conv_dim());
    let m = "l.mixer";
    let mut p = Params::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32, k: u64| {
        let t = (rand(shape, seed * 100 + k, scale) + offset as f64).unwrap();
        p.insert(&name, t).unwrap();
    };
    put("l.norm.weight".into(), &[hid], 0.3, 1.0, 1);
    put(
        format!("{m}.in_proj.weight"),
        &[i + cd + h, hid],
        0.4,
        0.0,
        2,
    );
    put(
        format!("{m}.conv1d.weight"),
        &[cd, 1, c.conv_kernel],
        0.5,
        0.0,
        3,
    );
    put(format!("{m}.conv1d.bias"), &[cd], 0.1, 0.0, 4);
    put(format!("{m}.dt_bias"), &[h], 0.5, -1.0, 5);
    put(format!("{m}.A_log"), &[h], 0.5, 0.3, 6);
    put(format!("{m}.D"), &[h], 0.3, 1.0, 7);
    put(format!("{m}.norm.weight"), &[i], 0.3, 1.0, 8);
    put(format!("{m}.out_proj.weight"), &[hid, i], 0.3, 0.0, 9);
    p
}

fn mamba(projection: Projection, seed: u64) -> (Mamba2Block, Params) {
    let cfg = mamba_cfg(projection);
    let p = mamba_params(&cfg, seed);
    let block = Mamba2Block::load(&mut &p, &cfg, "l").unwrap();
    (block, p)
}

/// Every token through `step`, outputs stacked `[B, T, hidden]`.
fn mamba_steps(m: &Mamba2Block, x: &Tensor, s: Option<Mamba2State>) -> (Tensor, Mamba2State) {
    let (b, t, _) = x.dims3().unwrap();
    let mut s = s.unwrap_or_else(|| m.zero_state(b, &Device::Cpu).unwrap());
    let mut ys = vec![];
    for j in 0..t {
        let (y, ns) = m
            .step(&x.narrow(1, j, 1).unwrap().squeeze(1).unwrap(), Some(&s))
            .unwrap();
        ys.push(y);
        s = ns;
    }
    (Tensor::stack(&ys, 1).unwrap(), s)
}

#[test]
fn mamba2_chunked_equals_recurrent() {
    for proj in [Projection::Dense, Projection::Ternary] {
        let (m, _) = mamba(proj, 1);
        let x = rand(&[2, 11, 16], 77, 1.0);
        let (want, ws) = mamba_steps(&m, &x, None);
        for chunk in [1, 3, 4, 5, 8, 11, 64] {
            let (got, gs) = m.forward_chunked(&x, None, chunk).unwrap();
            let (dy, ds) = (max_diff(&got, &want), max_diff(&gs.ssm, &ws.ssm));
            let dc = max_diff(&gs.conv, &ws.conv);
            eprintln!(
                "mamba2 {proj:?} chunk {chunk}: |Δy| {dy:.2e} |Δstate| {ds:.2e} |Δconv| {dc:.2e}"
            );
            // The conv state holds the in-projection's last outputs: one matmul over the whole
            // sequence against one per step, so equal up to the matmul's float rounding.
            assert!(
                dy < 1e-5 && ds < 1e-5 && dc < 1e-5,
                "{proj:?} chunk {chunk}"
            );
        }
    }
}

#[test]
fn mamba2_prefill_then_step_equals_steps() {
    let (m, _) = mamba(Projection::Dense, 2);
    let x = rand(&[1, 13, 16], 78, 1.0);
    let (want, ws) = mamba_steps(&m, &x, None);
    // Prefill 7 tokens chunked, then 6 steps.
    let (y0, s0) = m
        .forward_chunked(&x.narrow(1, 0, 7).unwrap(), None, 3)
        .unwrap();
    let (y1, s1) = mamba_steps(&m, &x.narrow(1, 7, 6).unwrap(), Some(s0));
    let got = Tensor::cat(&[&y0, &y1], 1).unwrap();
    assert!(max_diff(&got, &want) < 1e-5);
    assert!(max_diff(&s1.ssm, &ws.ssm) < 1e-5);
    assert_eq!(max_diff(&s1.conv, &ws.conv), 0.0);
    // Two chunked calls, the second continuing the first's state, equal one call.
    let (z1, zs) = m
        .forward_chunked(
            &x.narrow(1, 7, 6).unwrap(),
            Some(&m.forward(&x.narrow(1, 0, 7).unwrap(), None).unwrap().1),
            4,
        )
        .unwrap();
    assert!(max_diff(&z1, &want.narrow(1, 7, 6).unwrap()) < 1e-5);
    assert!(max_diff(&zs.ssm, &ws.ssm) < 1e-5);
}

fn grads_reach_every_parameter(p: &Params, loss: &Tensor) {
    let grads = loss.backward().unwrap();
    for (name, v) in p.iter() {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let vals = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            vals.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(vals.iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
}

#[test]
fn mamba2_gradients_reach_every_parameter() {
    for proj in [Projection::Ternary, Projection::Dense] {
        let (m, p) = mamba(proj, 3);
        let x = rand(&[2, 9, 16], 79, 1.0);
        let (y, _) = m.forward(&x, None).unwrap();
        let loss = y
            .mul(&rand(&[2, 9, 16], 80, 1.0))
            .unwrap()
            .sum_all()
            .unwrap();
        grads_reach_every_parameter(&p, &loss);
    }
}

#[test]
fn mamba2_rejects_bad_shapes() {
    let (m, _) = mamba(Projection::Dense, 4);
    let err = m.forward(&rand(&[1, 3, 15], 1, 1.0), None).unwrap_err();
    assert!(err.to_string().contains("15 features"), "{err}");
    let mut s = m.zero_state(2, &Device::Cpu).unwrap();
    let err = m.forward(&rand(&[1, 3, 16], 1, 1.0), Some(&s)).unwrap_err();
    assert!(err.to_string().contains("state has shape"), "{err}");
    s = m.zero_state(1, &Device::Cpu).unwrap();
    assert!(m
        .forward_chunked(&rand(&[1, 3, 16], 1, 1.0), Some(&s), 0)
        .is_err());
    let mut cfg = mamba_cfg(Projection::Dense);
    cfg.n_groups = 3;
    let p = mamba_params(&mamba_cfg(Projection::Dense), 1);
    assert!(Mamba2Block::load(&mut &p, &cfg, "l").is_err());
}

/// The gated delta rule per token on plain arrays, in the paper's layout `S` `[dv, dk]`:
/// `S ← S·α(I − β k kᵀ) + β v kᵀ`, `o = S q`, with q and k L2-normalised (eps 1e-6 inside the
/// root) and q scaled by `1/√dk`. Inputs `[B, T, H, ..]` as flat vectors; returns `o` and the
/// final states `[B, H, dv, dk]`.
#[allow(clippy::too_many_arguments)]
fn naive_delta(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    (b, t, h, dk, dv): (usize, usize, usize, usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0f32; b * t * h * dv];
    let mut states = vec![0f32; b * h * dv * dk];
    let norm = |x: &[f32]| {
        let n = (x.iter().map(|a| (*a as f64).powi(2)).sum::<f64>() + 1e-6).sqrt();
        x.iter()
            .map(|a| (*a as f64 / n) as f32)
            .collect::<Vec<f32>>()
    };
    for bi in 0..b {
        for hi in 0..h {
            let mut s = vec![vec![0f64; dk]; dv];
            for ti in 0..t {
                let r = (bi * t + ti) * h + hi;
                let qn: Vec<f64> = norm(&q[r * dk..(r + 1) * dk])
                    .iter()
                    .map(|&a| a as f64 / (dk as f64).sqrt())
                    .collect();
                let kn: Vec<f64> = norm(&k[r * dk..(r + 1) * dk])
                    .iter()
                    .map(|&a| a as f64)
                    .collect();
                let vv = &v[r * dv..(r + 1) * dv];
                let (alpha, be) = ((g[r] as f64).exp(), beta[r] as f64);
                // M = I − β k kᵀ; S ← α S M + β v kᵀ.
                let m: Vec<Vec<f64>> = (0..dk)
                    .map(|l| {
                        (0..dk)
                            .map(|j| (l == j) as u8 as f64 - be * kn[l] * kn[j])
                            .collect()
                    })
                    .collect();
                let prev = s.clone();
                for i in 0..dv {
                    for j in 0..dk {
                        let sm: f64 = (0..dk).map(|l| prev[i][l] * m[l][j]).sum();
                        s[i][j] = alpha * sm + be * vv[i] as f64 * kn[j];
                    }
                }
                for i in 0..dv {
                    out[r * dv + i] = (0..dk).map(|j| s[i][j] * qn[j]).sum::<f64>() as f32;
                }
            }
            for i in 0..dv {
                for j in 0..dk {
                    states[((bi * h + hi) * dv + i) * dk + j] = s[i][j] as f32;
                }
            }
        }
    }
    (out, states)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn gated_delta_chunked_and_recurrent_equal_naive_loop() {
    let (b, h, dk, dv) = (2, 3, 8, 6);
    for t in [1, 13, 37] {
        let q = rand(&[b, t, h, dk], 11, 1.0);
        let k = rand(&[b, t, h, dk], 12, 1.0);
        let v = rand(&[b, t, h, dv], 13, 1.0);
        // α in (e^-0.6, 1), β in (0, 1).
        let g = (rand(&[b, t, h], 14, 0.3) - 0.3).unwrap();
        let beta = candle_nn::ops::sigmoid(&rand(&[b, t, h], 15, 2.0)).unwrap();
        let (want, want_s) = naive_delta(
            &flat(&q),
            &flat(&k),
            &flat(&v),
            &flat(&g),
            &flat(&beta),
            (b, t, h, dk, dv),
        );
        let want = Tensor::from_vec(want, (b, t, h, dv), &Device::Cpu).unwrap();
        // Ours holds Sᵀ: [B, H, dk, dv].
        let want_s = Tensor::from_vec(want_s, (b, h, dv, dk), &Device::Cpu)
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let i = DeltaInputs {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            beta: &beta,
        };
        let (o, s) = gated_delta_recurrent(i, None).unwrap();
        let (d_o, d_s) = (max_diff(&o, &want), max_diff(&s, &want_s));
        eprintln!("delta T {t} recurrent vs naive: |Δo| {d_o:.2e} |ΔS| {d_s:.2e}");
        assert!(d_o < 1e-5 && d_s < 1e-5);
        for chunk in [1, 2, 3, 4, 5, 8, 16, 64] {
            let (o, s) = gated_delta_chunked(i, None, chunk).unwrap();
            let (d_o, d_s) = (max_diff(&o, &want), max_diff(&s, &want_s));
            eprintln!("delta T {t} chunk {chunk} vs naive: |Δo| {d_o:.2e} |ΔS| {d_s:.2e}");
            assert!(d_o < 2e-5 && d_s < 2e-5, "T {t} chunk {chunk}");
        }
    }
}

#[test]
fn gated_delta_continues_from_a_state() {
    let (b, t, h, dk, dv) = (1, 20, 2, 4, 5);
    let q = rand(&[b, t, h, dk], 21, 1.0);
    let k = rand(&[b, t, h, dk], 22, 1.0);
    let v = rand(&[b, t, h, dv], 23, 1.0);
    let g = (rand(&[b, t, h], 24, 0.2) - 0.2).unwrap();
    let beta = candle_nn::ops::sigmoid(&rand(&[b, t, h], 25, 2.0)).unwrap();
    let all = DeltaInputs {
        q: &q,
        k: &k,
        v: &v,
        g: &g,
        beta: &beta,
    };
    let (want, want_s) = gated_delta_recurrent(all, None).unwrap();
    let part = |x: &Tensor, a: usize, n: usize| x.narrow(1, a, n).unwrap();
    let (q0, k0, v0, g0, b0) = (
        part(&q, 0, 9),
        part(&k, 0, 9),
        part(&v, 0, 9),
        part(&g, 0, 9),
        part(&beta, 0, 9),
    );
    let (q1, k1, v1, g1, b1) = (
        part(&q, 9, 11),
        part(&k, 9, 11),
        part(&v, 9, 11),
        part(&g, 9, 11),
        part(&beta, 9, 11),
    );
    let (_, s0) = gated_delta_chunked(
        DeltaInputs {
            q: &q0,
            k: &k0,
            v: &v0,
            g: &g0,
            beta: &b0,
        },
        None,
        4,
    )
    .unwrap();
    let (o1, s1) = gated_delta_chunked(
        DeltaInputs {
            q: &q1,
            k: &k1,
            v: &v1,
            g: &g1,
            beta: &b1,
        },
        Some(&s0),
        3,
    )
    .unwrap();
    assert!(max_diff(&o1, &part(&want, 9, 11)) < 1e-5);
    assert!(max_diff(&s1, &want_s) < 1e-5);
}

fn gdn_cfg(projection: Projection) -> GdnConfig {
    GdnConfig {
        hidden_size: 16,
        num_heads: 2,
        head_k_dim: 4,
        head_v_dim: 8,
        conv_kernel: 4,
        conv_bias: true,
        chunk_size: 4,
        norm_eps: 1e-5,
        projection,
    }
}

fn gdn(projection: Projection, seed: u64) -> (GatedDeltaNet, Params) {
    let c = gdn_cfg(projection);
    let (hid, h, kd, vd) = (c.hidden_size, c.num_heads, c.key_dim(), c.value_dim());
    let mut p = Params::new();
    let mut k = 0;
    let mut put = |name: &str, shape: &[usize], scale: f32, offset: f64| {
        k += 1;
        let t = (rand(shape, seed * 100 + k, scale) + offset).unwrap();
        p.insert(&format!("l.{name}"), t).unwrap();
    };
    for (n, out) in [("q", kd), ("k", kd), ("v", vd)] {
        put(&format!("{n}_proj.weight"), &[out, hid], 0.4, 0.0);
        put(
            &format!("{n}_conv1d.weight"),
            &[out, 1, c.conv_kernel],
            0.5,
            0.0,
        );
        put(&format!("{n}_conv1d.bias"), &[out], 0.1, 0.0);
    }
    put("a_proj.weight", &[h, hid], 0.4, 0.0);
    put("b_proj.weight", &[h, hid], 0.4, 0.0);
    put("g_proj.weight", &[vd, hid], 0.4, 0.0);
    put("o_proj.weight", &[hid, vd], 0.3, 0.0);
    put("A_log", &[h], 0.5, 0.0);
    put("dt_bias", &[h], 0.5, -1.0);
    put("o_norm.weight", &[c.head_v_dim], 0.3, 1.0);
    let layer = GatedDeltaNet::load(&mut &p, &c, "l").unwrap();
    (layer, p)
}

#[test]
fn gdn_layer_chunked_equals_recurrent_and_steps() {
    for proj in [Projection::Dense, Projection::Ternary] {
        let (l, _) = gdn(proj, 1);
        let x = rand(&[2, 15, 16], 31, 1.0);
        let (want, ws) = l.forward_recurrent(&x, None).unwrap();
        for chunk in [1, 2, 4, 6, 16, 64] {
            let (got, gs) = l.forward_chunked(&x, None, chunk).unwrap();
            let (dy, ds) = (max_diff(&got, &want), max_diff(&gs.s, &ws.s));
            eprintln!("gdn {proj:?} chunk {chunk}: |Δy| {dy:.2e} |Δstate| {ds:.2e}");
            assert!(dy < 1e-5 && ds < 1e-5 && max_diff(&gs.conv, &ws.conv) == 0.0);
        }
        // Prefill 6 tokens, then step one token at a time.
        let (y0, mut s) = l.forward(&x.narrow(1, 0, 6).unwrap(), None).unwrap();
        let mut ys = vec![y0];
        for j in 6..15 {
            let (y, ns) = l
                .step(&x.narrow(1, j, 1).unwrap().squeeze(1).unwrap(), Some(&s))
                .unwrap();
            ys.push(y.unsqueeze(1).unwrap());
            s = ns;
        }
        let got = Tensor::cat(&ys, 1).unwrap();
        assert!(max_diff(&got, &want) < 1e-5 && max_diff(&s.s, &ws.s) < 1e-5);
    }
}

#[test]
fn gdn_gradients_reach_every_parameter() {
    for proj in [Projection::Ternary, Projection::Dense] {
        let (l, p) = gdn(proj, 2);
        let x = rand(&[2, 10, 16], 41, 1.0);
        let (y, _) = l.forward(&x, None).unwrap();
        let loss = y
            .mul(&rand(&[2, 10, 16], 42, 1.0))
            .unwrap()
            .sum_all()
            .unwrap();
        grads_reach_every_parameter(&p, &loss);
    }
}

#[test]
fn gdn_rejects_bad_shapes() {
    let (l, _) = gdn(Projection::Dense, 3);
    let err = l.forward(&rand(&[1, 3, 12], 1, 1.0), None).unwrap_err();
    assert!(err.to_string().contains("12 features"), "{err}");
    let s = l.zero_state(3, &Device::Cpu).unwrap();
    assert!(l.forward(&rand(&[1, 3, 16], 1, 1.0), Some(&s)).is_err());
    let q = rand(&[1, 3, 2, 4], 1, 1.0);
    let v = rand(&[1, 3, 2, 5], 1, 1.0);
    let g = rand(&[1, 3, 3], 1, 1.0);
    let err = gated_delta_chunked(
        DeltaInputs {
            q: &q,
            k: &q,
            v: &v,
            g: &g,
            beta: &g,
        },
        None,
        2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("do not agree"), "{err}");
}
