use super::*;
use candle_core::{Device, Tensor};

fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// torch's LSTM recurrence, scalar, in f64.
fn reference(w: &[f32], xp: &[f32], t: usize, hd: usize) -> Vec<f32> {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (mut h, mut c) = (vec![0f64; hd], vec![0f64; hd]);
    let mut out = Vec::with_capacity(t * hd);
    for step in 0..t {
        let gates: Vec<f64> = (0..4 * hd)
            .map(|r| {
                let dot: f64 = (0..hd).map(|k| w[r * hd + k] as f64 * h[k]).sum();
                xp[step * 4 * hd + r] as f64 + dot
            })
            .collect();
        for j in 0..hd {
            let (i, f) = (sig(gates[j]), sig(gates[hd + j]));
            let (g, o) = (gates[2 * hd + j].tanh(), sig(gates[3 * hd + j]));
            c[j] = f * c[j] + i * g;
            h[j] = o * c[j].tanh();
        }
        out.extend(h.iter().map(|&v| v as f32));
    }
    out
}

#[test]
fn the_threaded_recurrence_equals_a_scalar_reference_for_any_thread_count() {
    for (hd, t) in [(136, 11), (100, 7), (16, 5), (512, 3)] {
        let w = rand(4 * hd * hd, hd as u64, 1.0 / (hd as f32).sqrt());
        let xp = rand(t * 4 * hd, 7 + hd as u64, 1.5);
        let want = reference(&w, &xp, t, hd);
        for threads in [1, 2, 3, 5] {
            let got = recur(&w, &xp, t, hd, threads);
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 2e-5, "H {hd}, {threads} threads: {d}");
        }
    }
}

#[test]
fn the_layer_projects_with_both_biases_and_checks_its_input() {
    let (inp, hd, t) = (24, 40, 6);
    let dev = Device::Cpu;
    let ten = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &dev).unwrap();
    let w_ih = ten(rand(4 * hd * inp, 1, 0.3), &[4 * hd, inp]);
    let w_hh = ten(rand(4 * hd * hd, 2, 0.2), &[4 * hd, hd]);
    let (b_ih, b_hh) = (
        ten(rand(4 * hd, 3, 0.5), &[4 * hd]),
        ten(rand(4 * hd, 4, 0.5), &[4 * hd]),
    );
    let layer = HostLayer::new(&w_ih, &w_hh, &b_ih, &b_hh).unwrap();
    let x = rand(t * inp, 5, 1.0);
    let xp = ten(x.clone(), &[t, inp])
        .matmul(&w_ih.t().unwrap())
        .unwrap()
        .broadcast_add(&(&b_ih + &b_hh).unwrap())
        .unwrap();
    let xp = xp.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = w_hh.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = reference(&w, &xp, t, hd);
    for threads in [1, 2] {
        let got = layer.forward(&x, t, threads).unwrap();
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 2e-5, "{threads} threads: {d}");
    }
    assert!(layer.forward(&x[1..], t, 1).is_err());
}
