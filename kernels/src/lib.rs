//! `tritter-kernels`: ternary (BitNet b1.58) weight packing, int8 activation quantisation and
//! CPU GEMV/GEMM kernels. Works on plain slices; never allocates tensors (the model crate wraps
//! these in candle ops).
