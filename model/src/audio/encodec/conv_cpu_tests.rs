use super::*;
use crate::audio::encodec::config::PadMode;
use crate::audio::encodec::cpu::{elu_inplace, BufferPool};
use candle_core::{Device, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A deterministic pseudo-random fill in [-2, 2).
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn frames(x: &Tensor) -> Frames {
    Frames::from_tensor(x, 0).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// candle's `conv1d` of `[1, Cin, L]` plus the bias, as frames.
fn candle_conv(x: &Tensor, w: &Tensor, b: &Tensor, s: usize, d: usize) -> Frames {
    let cout = w.dim(0).unwrap();
    let y = x.conv1d(w, 0, s, d, 1).unwrap();
    frames(&y.broadcast_add(&b.reshape((1, cout, 1)).unwrap()).unwrap())
}

#[test]
fn host_conv_equals_candles_conv1d_tiled_or_not_with_strides_dilations_and_odd_lengths() {
    // (cin, cout, k, stride, dilation, len); the last two have weights past TILED_WEIGHTS, and
    // the long ones span several tiles.
    let cases = [
        (1, 4, 7, 1, 1, 29),
        (3, 2, 3, 1, 2, 17),
        (4, 6, 4, 2, 1, 31),
        (5, 3, 8, 4, 1, 43),
        (2, 3, 3, 1, 4, 40),
        (6, 5, 1, 1, 1, 13),
        (3, 2, 10, 5, 1, 52),
        (4, 3, 3, 2, 3, 33),
        (16, 8, 3, 1, 1, 5001),
        (32, 16, 4, 2, 1, 3003),
        (64, 520, 4, 2, 1, 301),
        (130, 300, 5, 1, 2, 77),
    ];
    for (i, (cin, cout, k, s, d, len)) in cases.into_iter().enumerate() {
        let x = randn(&[1, cin, len], 100 + i as u64);
        let w = (randn(&[cout, cin, k], 200 + i as u64) * 0.1).unwrap();
        let b = randn(&[cout], 300 + i as u64);
        let want = candle_conv(&x, &w, &b, s, d);
        let conv = HostConv::new(&w, &b, None, s, d).unwrap();
        let fx = frames(&x);
        let got = conv
            .forward(&Padded::plain(&fx), &BufferPool::default())
            .unwrap();
        assert_eq!((got.len, got.ch), (want.len, want.ch));
        let diff = max_diff(&got.data, &want.data);
        assert!(diff < 1e-4, "case {i}: {diff}");
        // Accumulating onto another [T, Cout]: acc + conv.
        let base = frames(&randn(&[1, cout, want.len], 400 + i as u64));
        let mut acc = base.clone();
        conv.forward_add(&Padded::plain(&fx), &mut acc, &BufferPool::default())
            .unwrap();
        let mut sum = base.clone();
        add_inplace(&mut sum, &want).unwrap();
        assert!(max_diff(&acc.data, &sum.data) < 1e-4, "case {i} (add)");
        let mut wrong = Frames {
            len: base.len + 1,
            data: vec![0.0; (base.len + 1) * cout],
            ch: cout,
        };
        assert!(conv
            .forward_add(&Padded::plain(&fx), &mut wrong, &BufferPool::default())
            .is_err());
    }
    let w = randn(&[2, 3, 5], 1);
    let conv = HostConv::new(&w, &randn(&[2], 2), None, 1, 1).unwrap();
    let short = frames(&randn(&[1, 3, 4], 3));
    assert!(
        conv.forward(&Padded::plain(&short), &BufferPool::default())
            .is_err(),
        "input shorter than the kernel"
    );
    let wrong = frames(&randn(&[1, 2, 9], 3));
    assert!(
        conv.forward(&Padded::plain(&wrong), &BufferPool::default())
            .is_err(),
        "input channels"
    );
}

#[test]
fn host_conv_with_group_norm_equals_the_candle_formula() {
    let (cin, cout, len) = (3, 4, 21);
    let x = randn(&[1, cin, len], 7);
    let w = randn(&[cout, cin, 3], 8);
    let b = randn(&[cout], 9);
    let (g, nb) = (randn(&[cout], 10), randn(&[cout], 11));
    let y = x
        .conv1d(&w, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, cout, 1)).unwrap())
        .unwrap();
    let flat = y.flatten_all().unwrap();
    let mean = flat.mean_all().unwrap();
    let centred = flat.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_all().unwrap();
    let normed = centred
        .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .reshape(y.dims())
        .unwrap();
    let want = normed
        .broadcast_mul(&g.reshape((1, cout, 1)).unwrap())
        .unwrap()
        .broadcast_add(&nb.reshape((1, cout, 1)).unwrap())
        .unwrap();
    let conv = HostConv::new(&w, &b, Some((&g, &nb)), 1, 1).unwrap();
    let fx = frames(&x);
    let got = conv
        .forward(&Padded::plain(&fx), &BufferPool::default())
        .unwrap();
    assert!(max_diff(&got.data, &frames(&want).data) < 1e-4);
    // With a norm, accumulating adds the normalised output.
    let mut acc = got.clone();
    conv.forward_add(&Padded::plain(&fx), &mut acc, &BufferPool::default())
        .unwrap();
    let twice: Vec<f32> = got.data.iter().map(|v| 2.0 * v).collect();
    assert!(max_diff(&acc.data, &twice) < 1e-5);
}

#[test]
fn the_fused_residual_block_equals_its_convs_one_by_one() {
    // (channels, hidden, kernel, dilation, len, shortcut, pad mode, left, right)
    let cases = [
        (4, 2, 3, 1, 2500, true, PadMode::Reflect, 2, 0),
        (6, 3, 3, 2, 1201, false, PadMode::Zeros, 2, 2),
        (8, 4, 5, 1, 9, true, PadMode::Replicate, 2, 2),
        (3, 2, 3, 3, 700, true, PadMode::Reflect, 6, 0),
    ];
    for (i, (ch, hid, k, d, len, with_shortcut, mode, left, right)) in cases.into_iter().enumerate()
    {
        let seed = 10 * i as u64;
        let x = frames(&randn(&[1, ch, len], seed));
        let conv1 = HostConv::new(
            &randn(&[hid, ch, k], seed + 1),
            &randn(&[hid], seed + 2),
            None,
            1,
            d,
        )
        .unwrap();
        let conv2 = HostConv::new(
            &randn(&[ch, hid, 1], seed + 3),
            &randn(&[ch], seed + 4),
            None,
            1,
            1,
        )
        .unwrap();
        let shortcut = HostConv::new(
            &randn(&[ch, ch, 1], seed + 5),
            &randn(&[ch], seed + 6),
            None,
            1,
            1,
        )
        .unwrap();
        let shortcut = with_shortcut.then_some(&shortcut);
        let input = Padded {
            x: &x,
            left,
            right,
            mode,
            elu: true,
        };
        let got = res_block(&conv1, &conv2, shortcut, &input, &BufferPool::default())
            .unwrap()
            .unwrap();
        let mut h = conv1.forward(&input, &BufferPool::default()).unwrap();
        elu_inplace(&mut h);
        let mut want = match shortcut {
            Some(s) => s
                .forward(&Padded::plain(&x), &BufferPool::default())
                .unwrap(),
            None => x.clone(),
        };
        conv2
            .forward_add(&Padded::plain(&h), &mut want, &BufferPool::default())
            .unwrap();
        assert_eq!((got.len, got.ch), (want.len, want.ch));
        let diff = max_diff(&got.data, &want.data);
        assert!(diff < 1e-4, "case {i}: {diff}");
    }
    // What does not fit the fused form is declined.
    let x = frames(&randn(&[1, 4, 50], 1));
    let conv1 = HostConv::new(&randn(&[2, 4, 3], 2), &randn(&[2], 3), None, 2, 1).unwrap();
    let conv2 = HostConv::new(&randn(&[4, 2, 1], 4), &randn(&[4], 5), None, 1, 1).unwrap();
    let input = Padded {
        x: &x,
        left: 1,
        right: 0,
        mode: PadMode::Zeros,
        elu: true,
    };
    assert!(
        res_block(&conv1, &conv2, None, &input, &BufferPool::default())
            .unwrap()
            .is_none(),
        "strided conv1"
    );
    let (g, b) = (randn(&[2], 6), randn(&[2], 7));
    let normed =
        HostConv::new(&randn(&[2, 4, 3], 2), &randn(&[2], 3), Some((&g, &b)), 1, 1).unwrap();
    let input = Padded {
        x: &x,
        left: 2,
        right: 0,
        mode: PadMode::Zeros,
        elu: true,
    };
    assert!(
        res_block(&normed, &conv2, None, &input, &BufferPool::default())
            .unwrap()
            .is_none(),
        "a norm"
    );
}
