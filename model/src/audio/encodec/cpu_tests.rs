use super::*;
use crate::audio::encodec::conv::pad1d;
use candle_core::{Device, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A deterministic pseudo-random fill (tests must not depend on candle's RNG state).
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
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

/// `[1, C, L]` → frames `[L, C]`.
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

#[test]
fn padded_rows_equal_pad1d_then_elu_in_every_mode_and_short_inputs() {
    for mode in [PadMode::Reflect, PadMode::Zeros, PadMode::Replicate] {
        let cases = [
            (9, 3, 2),
            (4, 6, 0),
            (3, 4, 1),
            (1, 2, 2),
            (5, 0, 0),
            (7, 0, 3),
        ];
        for (len, left, right) in cases {
            for elu in [false, true] {
                let x = randn(&[1, 3, len], (len * 31 + left * 7 + right) as u64);
                let want = pad1d(&x, left, right, mode).unwrap();
                let want = if elu { want.elu(1.0).unwrap() } else { want };
                let want = frames(&want).data;
                let fx = frames(&x);
                let p = Padded {
                    x: &fx,
                    left,
                    right,
                    mode,
                    elu,
                };
                let total = len + left + right;
                assert_eq!(p.len(), total);
                // Every range of rows, the borrowed ones included.
                for p0 in 0..=total {
                    for p1 in p0..=total {
                        let mut buf = vec![7.0; 2];
                        let got = p.rows(p0, p1, &mut buf).unwrap();
                        let d = max_diff(got, &want[p0 * 3..p1 * 3]);
                        let at = format!("{mode:?} len {len} pad ({left}, {right}) elu {elu}");
                        assert!(d < 1e-6, "{at} rows {p0}..{p1}: {d}");
                    }
                }
                assert!(p.rows(0, total + 1, &mut Vec::new()).is_err());
            }
        }
    }
}

#[test]
fn elu_and_add_equal_candles() {
    let x = randn(&[1, 5, 37], 3);
    let y = randn(&[1, 5, 37], 4);
    let mut f = frames(&x);
    elu_inplace(&mut f);
    assert!(max_diff(&f.data, &frames(&x.elu(1.0).unwrap()).data) < 1e-6);
    let mut f = frames(&x);
    add_inplace(&mut f, &frames(&y)).unwrap();
    assert_eq!(f.data, frames(&(&x + &y).unwrap()).data);
    assert!(add_inplace(&mut f, &frames(&randn(&[1, 4, 37], 5))).is_err());
    // exp over a wide range, to about an ulp.
    for i in -800..=800 {
        let v = i as f32 * 0.1;
        let (got, want) = (exp(v), v.exp());
        assert!((got - want).abs() <= 3e-7 * want, "{v}: {got} vs {want}");
    }
}

#[test]
fn strided_matmul_accumulates_and_checks_its_slices() {
    // dst (3×2, row stride 4) += 0.5 · lhs (3×5, transposed view) · rhs (5×2).
    let l = randn(&[5, 3], 20);
    let r = randn(&[5, 2], 21);
    let lv = l.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let rv = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut dst = vec![1f32; 12];
    let lhs = Mat {
        data: &lv,
        rows: 3,
        cols: 5,
        rs: 1,
        cs: 3,
    };
    let rhs = Mat {
        data: &rv,
        rows: 5,
        cols: 2,
        rs: 2,
        cs: 1,
    };
    matmul_acc(&mut dst, 4, lhs, rhs, 0.5).unwrap();
    let want = (l.t().unwrap().matmul(&r).unwrap() * 0.5).unwrap() + 1.0;
    let want = want.unwrap().to_vec2::<f32>().unwrap();
    for (i, row) in want.iter().enumerate() {
        assert!(max_diff(&dst[i * 4..i * 4 + 2], row) < 1e-5);
        assert_eq!(
            &dst[i * 4 + 2..i * 4 + 4],
            &[1.0, 1.0],
            "outside the matrix"
        );
    }
    let short = Mat {
        data: &lv[..14],
        ..lhs
    };
    assert!(matmul_acc(&mut dst, 4, short, rhs, 1.0).is_err());
    assert!(matmul_acc(&mut dst[..9], 4, lhs, rhs, 1.0).is_err());
}

#[test]
fn the_pool_hands_back_the_smallest_fitting_buffer_and_keeps_a_bounded_amount() {
    let pool = BufferPool::default();
    let a = pool.take(10);
    assert_eq!(a.len(), 10);
    let (pa, small) = (a.as_ptr(), vec![1f32; 4]);
    pool.give(vec![0f32; 1000]);
    pool.give(a);
    pool.give(small);
    let b = pool.take(8);
    assert_eq!(
        (b.len(), b.as_ptr()),
        (8, pa),
        "the 10-value buffer, cut to 8"
    );
    let c = pool.take(12);
    assert!(
        c.len() == 12 && c.capacity() >= 1000,
        "the large one, grown to 12"
    );
    let d = pool.take(3);
    assert_eq!(d.len(), 3);
    assert!(pool.take(5000).iter().all(|&v| v == 0.0), "a new one");
    // Past its size the pool drops what it is given.
    pool.give(vec![0f32; POOL_BYTES / 4]);
    pool.give(vec![0f32; 16]);
    let e = pool.take(16);
    assert!(
        e.capacity() >= POOL_BYTES / 4,
        "the big one was kept, the small one not"
    );
}
