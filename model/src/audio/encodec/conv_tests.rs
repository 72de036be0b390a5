use super::*;
use candle_core::{Device, Var};

/// `y[b, o, n·s + j] += x[b, i, n] · w[i, o, j]`, summed naively.
fn naive(x: &Tensor, w: &Tensor, s: usize) -> Tensor {
    let (bsz, cin, len) = x.dims3().unwrap();
    let (_, cout, k) = w.dims3().unwrap();
    let xv = x.to_vec3::<f32>().unwrap();
    let wv = w.to_vec3::<f32>().unwrap();
    let out = (len - 1) * s + k;
    let mut y = vec![0f32; bsz * cout * out];
    for b in 0..bsz {
        for i in 0..cin {
            for o in 0..cout {
                for n in 0..len {
                    for j in 0..k {
                        y[(b * cout + o) * out + n * s + j] += xv[b][i][n] * wv[i][o][j];
                    }
                }
            }
        }
    }
    Tensor::from_vec(y, (bsz, cout, out), x.device()).unwrap()
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

#[test]
fn transposed_convs_equal_a_naive_sum_and_the_polyphase_one_has_gradients() {
    let dev = Device::Cpu;
    let cases = [
        (3, 2, 4, 2, 5),
        (4, 3, 6, 3, 7),
        (2, 2, 5, 2, 1),
        (1, 1, 16, 8, 3),
    ];
    for (cin, cout, k, s, len) in cases {
        let x = Tensor::randn(0f32, 1.0, (2, cin, len), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (cin, cout, k), &dev).unwrap()).unwrap();
        let want = naive(&x, &w, s);
        let got = conv_transpose1d_poly(&x, &w, s).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "polyphase ({cin},{cout},{k},{s},{len}): {d}");
        let fast = conv_transpose_fast(&x, &w, s).unwrap();
        let d = max_diff(&fast, &want);
        assert!(d < 1e-5, "fast ({cin},{cout},{k},{s},{len}): {d}");
        for bsz in [1, 2] {
            let xb = x.narrow(0, 0, bsz).unwrap();
            let wc = w.as_tensor().contiguous().unwrap();
            let fast = xb.conv_transpose1d(&wc, 0, 0, s, 1, 1).unwrap();
            let d = max_diff(&fast, &want.narrow(0, 0, bsz).unwrap());
            println!("candle conv_transpose1d ({cin},{cout},{k},{s},{len}) batch {bsz}: {d}");
        }
        let grads = got.sum_all().unwrap().backward().unwrap();
        // d(Σy)/dw[i, o, j] = Σ_b Σ_n x[b, i, n] — the same for every o and j.
        let gw = grads.get(&w).unwrap();
        let xs = x.sum((0, 2)).unwrap().to_vec1::<f32>().unwrap();
        let gw = gw.to_vec3::<f32>().unwrap();
        for (i, row) in gw.iter().enumerate() {
            for v in row.iter().flatten() {
                assert!((v - xs[i]).abs() < 1e-4, "{v} vs {}", xs[i]);
            }
        }
    }
}

#[test]
fn im2col_conv1d_equals_candles_and_its_gradients_are_exact() {
    let dev = Device::Cpu;
    for (cin, cout, k, s, d, len) in [(3, 2, 3, 1, 2, 9), (2, 4, 4, 2, 1, 11), (4, 3, 1, 1, 1, 5)] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, cin, len), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (cout, cin, k), &dev).unwrap()).unwrap();
        let y = conv1d_diff(&x, &w, s, d).unwrap();
        let want = x.conv1d(&w, 0, s, d, 1).unwrap();
        assert!(max_diff(&y, &want) < 1e-5);
        let out = y.dim(2).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        // d(Σy)/dx[b, i, n] = Σ_o Σ_j w[o, i, j] over the taps j with n = t·s + j·d.
        let wv = w.to_vec3::<f32>().unwrap();
        let xv = x.to_vec3::<f32>().unwrap();
        let gx = grads.get(&x).unwrap().to_vec3::<f32>().unwrap();
        let gw = grads.get(&w).unwrap().to_vec3::<f32>().unwrap();
        for b in 0..2 {
            for i in 0..cin {
                for n in 0..len {
                    let mut want = 0f32;
                    for t in 0..out {
                        for j in 0..k {
                            if t * s + j * d == n {
                                want += (0..cout).map(|o| wv[o][i][j]).sum::<f32>();
                            }
                        }
                    }
                    assert!((gx[b][i][n] - want).abs() < 1e-4, "dx {b} {i} {n}");
                }
            }
        }
        // d(Σy)/dw[o, i, j] = Σ_b Σ_t x[b, i, t·s + j·d].
        for o in 0..cout {
            for i in 0..cin {
                for j in 0..k {
                    let want: f32 = (0..2)
                        .map(|b| (0..out).map(|t| xv[b][i][t * s + j * d]).sum::<f32>())
                        .sum();
                    assert!((gw[o][i][j] - want).abs() < 1e-4, "dw {o} {i} {j}");
                }
            }
        }
    }
}

#[test]
fn reflect_padding_matches_torch_including_short_inputs() {
    let dev = Device::Cpu;
    let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &dev).unwrap();
    let got = pad1d(&x, 3, 2, PadMode::Reflect).unwrap();
    assert_eq!(
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [4., 3., 2., 1., 2., 3., 4., 3., 2.]
    );
    // torch: F.pad(F.pad(x, (0, 2)), (4, 1), "reflect")[..., :-2] for x = [1, 2, 3].
    let x = Tensor::new(&[[[1f32, 2., 3.]]], &dev).unwrap();
    let got = pad1d(&x, 4, 1, PadMode::Reflect).unwrap();
    assert_eq!(
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [0., 0., 3., 2., 1., 2., 3., 0.]
    );
}

#[test]
fn host_conv1d_equals_the_candle_path_for_every_padding_norm_and_stride() {
    use crate::audio::encodec::cpu::Frames;
    use candle_nn::{VarBuilder, VarMap};
    let dev = Device::Cpu;
    // (cin, cout, kernel, stride, dilation, len)
    let cases = [
        (1, 4, 7, 1, 1, 23),
        (4, 2, 3, 1, 2, 19),
        (3, 6, 4, 2, 1, 25),
        (2, 4, 10, 5, 1, 33),
        (3, 3, 1, 1, 1, 9),
        (2, 3, 3, 1, 4, 5),
    ];
    for causal in [true, false] {
        for pad in ["reflect", "constant", "replicate"] {
            for norm in ["weight_norm", "time_group_norm"] {
                let cfg = EncodecConfig {
                    use_causal_conv: causal,
                    pad_mode: pad.into(),
                    norm_type: norm.into(),
                    ..Default::default()
                };
                let map = VarMap::new();
                let p = Params::vars(VarBuilder::from_varmap(&map, candle_core::DType::F32, &dev));
                let pool = crate::audio::encodec::cpu::BufferPool::default();
                for (i, (cin, cout, k, s, d, len)) in cases.into_iter().enumerate() {
                    let conv = Conv1d::new(&p.pp(i), &cfg, (cin, cout), k, s, d).unwrap();
                    let x = Tensor::randn(0f32, 1.0, (1, cin, len), &dev).unwrap();
                    for elu_in in [false, true] {
                        let xin = if elu_in { elu(&x).unwrap() } else { x.clone() };
                        let want = conv.forward(&xin, EncodecPath::Fast).unwrap();
                        let got = conv
                            .forward_host(&Frames::from_tensor(&x, 0).unwrap(), elu_in, &pool)
                            .unwrap();
                        let got = Frames::to_tensor(vec![got], &dev).unwrap();
                        let diff = max_diff(&got, &want);
                        let at = format!("{causal} {pad} {norm} case {i} elu {elu_in}");
                        assert!(diff < 1e-4, "{at}: {diff}");
                        let mut acc = Frames::from_tensor(&want, 0).unwrap();
                        conv.forward_host_add(
                            &Frames::from_tensor(&x, 0).unwrap(),
                            elu_in,
                            &mut acc,
                            &pool,
                        )
                        .unwrap();
                        let acc = Frames::to_tensor(vec![acc], &dev).unwrap();
                        assert!(max_diff(&acc, &(&want * 2.0).unwrap()) < 2e-4, "{at} (add)");
                    }
                }
            }
        }
    }
}
