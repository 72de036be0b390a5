use super::*;
use candle_core::{Device, Tensor};

/// Rvq::nearest's candle form: argmin of `(Σx² − 2·x·e) + Σe²`.
fn candle_nearest(x: &Tensor, e: &Tensor) -> Vec<u32> {
    let x2 = x.sqr().unwrap().sum_keepdim(1).unwrap();
    let xe = (x * 2.0).unwrap().matmul(&e.t().unwrap()).unwrap();
    let e2 = e.sqr().unwrap().sum(1).unwrap().unsqueeze(0).unwrap();
    let dist = x2.broadcast_sub(&xe).unwrap().broadcast_add(&e2).unwrap();
    dist.argmin(1).unwrap().to_vec1::<u32>().unwrap()
}

#[test]
fn residual_search_equals_the_candle_one_over_several_codebooks() {
    let dev = Device::Cpu;
    let (rows, dim, size, n_q) = (77, 12, 50, 4);
    let embeds: Vec<Tensor> = (0..n_q)
        .map(|_| Tensor::randn(0f32, 1.0, (size, dim), &dev).unwrap())
        .collect();
    let x = Tensor::randn(0f32, 1.0, (rows, dim), &dev).unwrap();
    let books: Vec<HostCodebook> = embeds
        .iter()
        .map(|e| HostCodebook::new(e).unwrap())
        .collect();
    let refs: Vec<&HostCodebook> = books.iter().collect();
    let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got = encode(&refs, xv, rows).unwrap();
    let mut residual = x.clone();
    for (q, e) in embeds.iter().enumerate() {
        let want = candle_nearest(&residual, e);
        assert_eq!(&got[q * rows..(q + 1) * rows], &want[..], "codebook {q}");
        let idx = Tensor::new(want, &dev).unwrap();
        residual = (residual - e.index_select(&idx, 0).unwrap()).unwrap();
    }
    // Ties go to the first entry; a row equal to an entry picks it.
    let e = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 0.]], &dev).unwrap();
    let book = HostCodebook::new(&e).unwrap();
    let mut codes = [9u32; 2];
    let mut x = vec![1f32, 0., 0., 1.];
    book.quantize(&mut x, &mut codes, true).unwrap();
    assert_eq!(codes, [0, 1]);
    assert_eq!(x, [0.0; 4]);
    assert!(book.quantize(&mut x[..3], &mut codes, false).is_err());
}
