//! The one primitive the lowered convolutions need: C (+)= A * B on a tile, where A is read
//! with arbitrary row/depth strides and B rows are contiguous. Two engines implement it:
//! hand-written AVX-512 micro-kernels for f32 (the fast path), and the `gemm` crate for any
//! element type (f64 gradient checks, CPUs without AVX-512).
use crate::backend::Element;

/// A matrix-product engine for lowered convolution tiles.
pub(super) trait TileProduct<E: Element>: Copy + Send + Sync {
    /// Row counts passed to [`TileProduct::mul`] must be multiples of this.
    const ROWS: usize;
    /// Column counts passed to [`TileProduct::mul`] must be multiples of this.
    const COLS: usize;
    /// Widest column panel a packed B operand should be split into.
    const PANEL: usize;

    /// `c[r * c_rs + j] (+)= sum_p a[r * a_rs + p * a_ps] * b[p * b_ps + j]` for `r < rows`,
    /// `j < cols`, `p < len`; overwrites `c` unless `accumulate`. One of `a_rs`, `a_ps` is 1.
    /// Panics when a range falls outside its slice.
    #[allow(clippy::too_many_arguments)]
    fn mul(
        &self,
        rows: usize,
        cols: usize,
        len: usize,
        a: &[E],
        a_rs: usize,
        a_ps: usize,
        b: &[E],
        b_ps: usize,
        c: &mut [E],
        c_rs: usize,
        accumulate: bool,
    );

    /// Runs `f` where this engine's instructions are enabled, so that generic code inlined
    /// into `f` (gathers, copies) is compiled for them too.
    fn within<R>(&self, f: impl FnOnce() -> R) -> R;
}

/// Asserts that every element `mul` touches lies inside its slice.
#[allow(clippy::too_many_arguments)]
fn check_ranges(
    rows: usize,
    cols: usize,
    len: usize,
    a_len: usize,
    a_rs: usize,
    a_ps: usize,
    b_len: usize,
    b_ps: usize,
    c_len: usize,
    c_rs: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * c_rs + cols <= c_len,
        "tile product: C out of range"
    );
    if len > 0 {
        assert!(
            (rows - 1) * a_rs + (len - 1) * a_ps < a_len,
            "tile product: A out of range"
        );
        assert!(
            (len - 1) * b_ps + cols <= b_len,
            "tile product: B out of range"
        );
    }
}

/// The `gemm` crate, single-threaded inside each of our own rayon tasks.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Gemm;

impl<E: Element> TileProduct<E> for Gemm {
    const ROWS: usize = 1;
    const COLS: usize = 1;
    const PANEL: usize = usize::MAX;

    fn mul(
        &self,
        rows: usize,
        cols: usize,
        len: usize,
        a: &[E],
        a_rs: usize,
        a_ps: usize,
        b: &[E],
        b_ps: usize,
        c: &mut [E],
        c_rs: usize,
        accumulate: bool,
    ) {
        check_ranges(
            rows,
            cols,
            len,
            a.len(),
            a_rs,
            a_ps,
            b.len(),
            b_ps,
            c.len(),
            c_rs,
        );
        if rows == 0 || cols == 0 {
            return;
        }
        // SAFETY: check_ranges bounds every index gemm reads or writes; E is f32 or f64.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                len,
                c.as_mut_ptr(),
                1,
                c_rs as isize,
                accumulate,
                a.as_ptr(),
                a_ps as isize,
                a_rs as isize,
                b.as_ptr(),
                1,
                b_ps as isize,
                E::one(),
                E::one(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }

    fn within<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx512::Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{check_ranges, TileProduct};
    use std::arch::x86_64::*;

    /// Rows of one micro-kernel call: 12 rows x 2 vectors = 24 accumulators, leaving
    /// registers for the two B vectors and the broadcast A value.
    const MR: usize = 12;
    const LANES: usize = 16;

    /// AVX-512 f32 micro-kernels. Only constructed where the CPU has AVX-512F.
    #[derive(Clone, Copy, Debug)]
    pub(in crate::tensor_ops::conv) struct Avx512 {
        _detected: (),
    }

    impl Avx512 {
        /// `Some` when this CPU supports the instructions.
        pub(in crate::tensor_ops::conv) fn detect() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Self { _detected: () })
        }
    }

    /// One MR x (NV * 16) tile of C over `len` steps. `ROW_CONTIGUOUS`: A's depth stride is 1
    /// (rows `a_s` apart, as in a lowered input tile); otherwise its row stride is 1 (steps
    /// `a_s` apart, as in a transposed tile).
    ///
    /// SAFETY: the caller guarantees AVX-512F and that every address is in range.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro<const NV: usize, const ROW_CONTIGUOUS: bool>(
        len: usize,
        a: *const f32,
        a_s: usize,
        b: *const f32,
        b_ps: usize,
        c: *mut f32,
        c_rs: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(c.add(r * c_rs + v * LANES));
                }
            }
        }
        let mut ap = a;
        let mut bp = b;
        for _ in 0..len {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(bp.add(v * LANES));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let s = if ROW_CONTIGUOUS {
                    *ap.add(r * a_s)
                } else {
                    *ap.add(r)
                };
                let av = _mm512_set1_ps(s);
                for (x, bx) in row.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, *bx, *x);
                }
            }
            ap = if ROW_CONTIGUOUS {
                ap.add(1)
            } else {
                ap.add(a_s)
            };
            bp = bp.add(b_ps);
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * c_rs + v * LANES), *x);
            }
        }
    }

    /// Column panels of 32 (the last may be 16), rows in groups of MR.
    ///
    /// SAFETY: AVX-512F present; ranges checked by `check_ranges`; rows % MR == 0 and
    /// cols % 16 == 0.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn mul_f32<const ROW_CONTIGUOUS: bool>(
        rows: usize,
        cols: usize,
        len: usize,
        a: *const f32,
        a_s: usize,
        b: *const f32,
        b_ps: usize,
        c: *mut f32,
        c_rs: usize,
        accumulate: bool,
    ) {
        let mut j = 0;
        while j < cols {
            let wide = cols - j >= 2 * LANES;
            for r0 in (0..rows).step_by(MR) {
                let a_r = if ROW_CONTIGUOUS {
                    a.add(r0 * a_s)
                } else {
                    a.add(r0)
                };
                let c_r = c.add(r0 * c_rs + j);
                if wide {
                    micro::<2, ROW_CONTIGUOUS>(
                        len,
                        a_r,
                        a_s,
                        b.add(j),
                        b_ps,
                        c_r,
                        c_rs,
                        accumulate,
                    );
                } else {
                    micro::<1, ROW_CONTIGUOUS>(
                        len,
                        a_r,
                        a_s,
                        b.add(j),
                        b_ps,
                        c_r,
                        c_rs,
                        accumulate,
                    );
                }
            }
            j += if wide { 2 * LANES } else { LANES };
        }
    }

    #[target_feature(enable = "avx512f")]
    fn run_with_avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    impl TileProduct<f32> for Avx512 {
        const ROWS: usize = MR;
        const COLS: usize = LANES;
        const PANEL: usize = 2 * LANES;

        fn mul(
            &self,
            rows: usize,
            cols: usize,
            len: usize,
            a: &[f32],
            a_rs: usize,
            a_ps: usize,
            b: &[f32],
            b_ps: usize,
            c: &mut [f32],
            c_rs: usize,
            accumulate: bool,
        ) {
            assert!(
                rows.is_multiple_of(MR) && cols.is_multiple_of(LANES),
                "tile product: {rows} x {cols} is not a multiple of {MR} x {LANES}"
            );
            check_ranges(
                rows,
                cols,
                len,
                a.len(),
                a_rs,
                a_ps,
                b.len(),
                b_ps,
                c.len(),
                c_rs,
            );
            // SAFETY: `Avx512` exists only where AVX-512F was detected; check_ranges bounds
            // every address (including the padded rows and columns, which the asserts above
            // make whole micro-tiles).
            unsafe {
                if a_ps == 1 {
                    mul_f32::<true>(
                        rows,
                        cols,
                        len,
                        a.as_ptr(),
                        a_rs,
                        b.as_ptr(),
                        b_ps,
                        c.as_mut_ptr(),
                        c_rs,
                        accumulate,
                    )
                } else {
                    assert_eq!(a_rs, 1, "tile product: A needs a unit stride");
                    mul_f32::<false>(
                        rows,
                        cols,
                        len,
                        a.as_ptr(),
                        a_ps,
                        b.as_ptr(),
                        b_ps,
                        c.as_mut_ptr(),
                        c_rs,
                        accumulate,
                    )
                }
            }
        }

        fn within<R>(&self, f: impl FnOnce() -> R) -> R {
            // SAFETY: `Avx512` exists only where AVX-512F was detected.
            unsafe { run_with_avx512(f) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop with the same strides.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        rows: usize,
        cols: usize,
        len: usize,
        a: &[f32],
        a_rs: usize,
        a_ps: usize,
        b: &[f32],
        b_ps: usize,
        c: &mut [f32],
        c_rs: usize,
        accumulate: bool,
    ) {
        for r in 0..rows {
            for j in 0..cols {
                let mut s = if accumulate {
                    c[r * c_rs + j] as f64
                } else {
                    0.0
                };
                for p in 0..len {
                    s += a[r * a_rs + p * a_ps] as f64 * b[p * b_ps + j] as f64;
                }
                c[r * c_rs + j] = s as f32;
            }
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect()
    }

    fn check_engine<P: TileProduct<f32>>(p: P) {
        for &(rows, cols, len, row_contiguous, accumulate) in &[
            (24usize, 48usize, 37usize, true, false),
            (36, 32, 5, false, true),
            (12, 16, 1, true, true),
            (48, 80, 70, false, false),
        ] {
            let (a_rs, a_ps) = if row_contiguous {
                (len + 3, 1)
            } else {
                (1, rows + 5)
            };
            let a = values((rows - 1) * a_rs + (len - 1) * a_ps + 1, 1);
            let b_ps = cols + 16;
            let b = values((len - 1) * b_ps + cols, 2);
            let c_rs = cols + 7;
            let init = values((rows - 1) * c_rs + cols, 3);
            let mut want = init.clone();
            let mut got = init.clone();
            reference(
                rows, cols, len, &a, a_rs, a_ps, &b, b_ps, &mut want, c_rs, accumulate,
            );
            p.mul(
                rows, cols, len, &a, a_rs, a_ps, &b, b_ps, &mut got, c_rs, accumulate,
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "element {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn gemm_engine_matches_reference() {
        check_engine(Gemm);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_engine_matches_reference_where_available() {
        match Avx512::detect() {
            Some(p) => check_engine(p),
            None => eprintln!("no AVX-512 on this CPU: the f32 fast path is not exercised"),
        }
    }
}
