//! Matrix products on the calling thread (gemm, the kernels burn-flex uses) for the host layers.
//!
//! The host layers split a batch into one run of rows or images per thread themselves, so each
//! product here runs on one thread: splitting small products across threads costs more in
//! wake-ups than it saves.

use std::mem::MaybeUninit;

/// A matrix operand: element `(i, j)` at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix with `columns` columns.
    pub(crate) fn rows(data: &'a [f32], columns: usize) -> Self {
        Self {
            data,
            row_stride: columns,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `columns` columns.
    pub(crate) fn transposed(data: &'a [f32], columns: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: columns,
        }
    }

    /// Whether a `rows x cols` matrix read this way stays inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`), with `dst` row-major
/// `[m, n]`, `lhs` `[m, k]` and `rhs` `[k, n]`, on the calling thread.
pub(crate) fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    dims: [usize; 3],
) {
    assert!(dst.len() >= dims[0] * dims[1]);
    // SAFETY: `dst` holds the `m * n` initialised values gemm reads and writes, and is borrowed
    // mutably, so it cannot alias `lhs` or `rhs`.
    unsafe { gemm_into(dst.as_mut_ptr(), accumulate, lhs, rhs, dims) }
}

/// [`matmul`] into uninitialised memory: sets the first `m * n` values of `dst` and returns them.
pub(crate) fn matmul_into<'a>(
    dst: &'a mut [MaybeUninit<f32>],
    lhs: Operand,
    rhs: Operand,
    [m, n, k]: [usize; 3],
) -> &'a mut [f32] {
    let dst = &mut dst[..m * n];
    // SAFETY: gemm writes all `m * n` values of `dst` without reading them (`read_dst` false);
    // `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`. Once written, the values
    // are initialised f32s.
    unsafe {
        gemm_into(dst.as_mut_ptr().cast(), false, lhs, rhs, [m, n, k]);
        &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32])
    }
}

/// [`matmul`] into a block of a larger row-major matrix: `dst` row `i` starts at
/// `i * dst_stride` (`dst_stride >= n`), so a product can be computed in column blocks.
pub(crate) fn matmul_strided(
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    dims: [usize; 3],
) {
    let [m, n, _] = dims;
    assert!(dst_stride >= n && dst.len() >= (m - 1) * dst_stride + n);
    // SAFETY: the assert keeps the `m` rows of `n` values `dst_stride` apart inside `dst`, which
    // holds initialised values and is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe { gemm_strided(dst.as_mut_ptr(), dst_stride, accumulate, lhs, rhs, dims) }
}

/// [`matmul_strided`] into uninitialised memory, then `then(i, row)` on each of the `m` rows of
/// `n` values it wrote (a bias or a clamp applied while the block is still in cache).
pub(crate) fn matmul_into_then(
    dst: &mut [MaybeUninit<f32>],
    dst_stride: usize,
    lhs: Operand,
    rhs: Operand,
    dims: [usize; 3],
    mut then: impl FnMut(usize, &mut [f32]),
) {
    let [m, n, _] = dims;
    assert!(dst_stride >= n && dst.len() >= (m - 1) * dst_stride + n);
    // SAFETY: gemm writes the `m` rows of `n` values `dst_stride` apart (inside `dst` by the
    // assert) without reading them (`read_dst` false); `dst` is borrowed mutably, so it cannot
    // alias `lhs` or `rhs`.
    unsafe { gemm_strided(dst.as_mut_ptr().cast(), dst_stride, false, lhs, rhs, dims) };
    for i in 0..m {
        let row = &mut dst[i * dst_stride..][..n];
        // SAFETY: gemm initialised every value of each of these rows above.
        let row = unsafe { &mut *(row as *mut [MaybeUninit<f32>] as *mut [f32]) };
        then(i, row);
    }
}

/// gemm on the calling thread, `dst` row-major `[m, n]`.
///
/// # Safety
/// `dst` must be valid for `m * n` writes (and reads, initialised, when `accumulate`) and must not
/// overlap `lhs` or `rhs`.
unsafe fn gemm_into(dst: *mut f32, accumulate: bool, lhs: Operand, rhs: Operand, dims: [usize; 3]) {
    // SAFETY: the caller's guarantees, with rows `n` apart.
    unsafe { gemm_strided(dst, dims[1], accumulate, lhs, rhs, dims) }
}

/// gemm on the calling thread, `dst` `[m, n]` with rows `dst_stride` apart.
///
/// # Safety
/// `dst` must be valid for writes (and reads, initialised, when `accumulate`) of the `m` rows of
/// `n` values `dst_stride` apart, and must not overlap `lhs` or `rhs`.
unsafe fn gemm_strided(
    dst: *mut f32,
    dst_stride: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    [m, n, k]: [usize; 3],
) {
    assert!(m > 0 && n > 0 && k > 0);
    assert!(
        lhs.fits(m, k) && rhs.fits(k, n),
        "matmul operands out of bounds"
    );
    // SAFETY: the asserts keep every element gemm reads inside `lhs` and `rhs`; the caller
    // vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Which gradients backward computes: those of the tracked parents only (a network's first
/// layer needs no input gradient, a frozen one no weight gradient).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    pub input: bool,
    pub weight: bool,
    pub bias: bool,
}
