//! The one primitive the lowered convolutions need: C (+)= A * B on a tile, where A is read
//! with arbitrary row/depth strides and B rows are contiguous. Four engines implement it:
//! hand-written f32 micro-kernels for AVX-512 and for AVX2 + FMA (the fast paths), the
//! AVX-512 one over bf16 operands with AVX512-BF16 dot products and f32 sums (`--precision
//! bf16` on CPUs that have them), and the `gemm` crate for any element type (f64 gradient
//! checks, CPUs with neither).
use crate::backend::Element;

/// A matrix-product engine for lowered convolution tiles. Its operands are stored as
/// `Operand` (E itself, or bf16) and its reduction steps come in groups of `K_GROUP`, which
/// lie side by side in memory (a bf16 dot product multiplies pairs).
pub(super) trait TileProduct<E: Element>: Copy + Send + Sync {
    /// What A and B hold once gathered or packed; `Default` is zero.
    type Operand: Copy + Default + Send + Sync + 'static;
    /// Reduction lengths passed to [`TileProduct::mul`] must be multiples of this.
    const K_GROUP: usize;
    /// Row counts passed to [`TileProduct::mul`] must be multiples of this.
    const ROWS: usize;
    /// Column counts passed to [`TileProduct::mul`] must be multiples of this.
    const COLS: usize;
    /// Widest column panel a packed B operand should be split into.
    const PANEL: usize;

    /// `dst[i] = src[i]` as operands (rounded to the operand type).
    fn load_row(&self, dst: &mut [Self::Operand], src: &[E]);

    /// `dst[2 i] = first[i]`, `dst[2 i + 1] = second[i]`: two rows of reduction steps made
    /// one row of K groups, for engines whose `K_GROUP` is 2.
    fn pair_rows(
        &self,
        dst: &mut [Self::Operand],
        first: &[Self::Operand],
        second: &[Self::Operand],
    ) {
        assert!(
            first.len() == second.len() && dst.len() == 2 * first.len(),
            "pair_rows: lengths differ"
        );
        for ((d, a), b) in dst.chunks_exact_mut(2).zip(first).zip(second) {
            d[0] = *a;
            d[1] = *b;
        }
    }

    /// `c[r * c_rs + j] (+)= sum_p A(r, p) * B(p, j)` for `r < rows`, `j < cols`,
    /// `p < len`; overwrites `c` unless `accumulate`. With G = `K_GROUP`, step p lies in group
    /// p / G at lane p % G: `B(p, j) = b[(p / G) * b_ps + j * G + p % G]`, and A is either
    /// rows (`a_ps == 1`: `A(r, p) = a[r * a_rs + p]`) or groups (`a_rs == 1`:
    /// `A(r, p) = a[(p / G) * a_ps + r * G + p % G]`). With G = 1 these are plain strides.
    /// Panics when a range falls outside its slice.
    #[allow(clippy::too_many_arguments)]
    fn mul(
        &self,
        rows: usize,
        cols: usize,
        len: usize,
        a: &[Self::Operand],
        a_rs: usize,
        a_ps: usize,
        b: &[Self::Operand],
        b_ps: usize,
        c: &mut [E],
        c_rs: usize,
        accumulate: bool,
    );

    /// Runs `f` where this engine's instructions are enabled, so that generic code inlined
    /// into `f` (gathers, copies) is compiled for them too.
    fn within<R>(&self, f: impl FnOnce() -> R) -> R;
}

/// Where a product's operands lie: its sizes, strides and K group (see [`TileProduct::mul`]).
#[derive(Clone, Copy, Debug)]
struct Extent {
    rows: usize,
    cols: usize,
    len: usize,
    a_rs: usize,
    a_ps: usize,
    b_ps: usize,
    c_rs: usize,
    group: usize,
}

impl Extent {
    /// Asserts that every element `mul` touches lies inside its slice, and that the layout
    /// is one the engines read.
    fn check(&self, a_len: usize, b_len: usize, c_len: usize) {
        let Extent {
            rows,
            cols,
            len,
            a_rs,
            a_ps,
            b_ps,
            c_rs,
            group,
        } = *self;
        assert!(
            len.is_multiple_of(group),
            "tile product: a reduction of {len} is not a multiple of its group {group}"
        );
        assert!(
            a_ps == 1 || a_rs == 1,
            "tile product: A needs a unit stride"
        );
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(
            (rows - 1) * c_rs + cols <= c_len,
            "tile product: C out of range"
        );
        if len > 0 {
            let groups = len / group;
            let a_last = if a_ps == 1 {
                (rows - 1) * a_rs + len - 1
            } else {
                (groups - 1) * a_ps + rows * group - 1
            };
            assert!(a_last < a_len, "tile product: A out of range");
            assert!(
                (groups - 1) * b_ps + cols * group <= b_len,
                "tile product: B out of range"
            );
        }
    }
}

/// `dst = src`, in 16-element chunks so that the copy is inlined as vector moves rather
/// than a call (most rows are one tap's channels: tens to hundreds of values).
#[inline(always)]
pub(super) fn copy_row<E: Copy>(dst: &mut [E], src: &[E]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        let chunk: &[E; 16] = s.try_into().expect("chunks_exact gives 16");
        d.copy_from_slice(chunk);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// The `gemm` crate, single-threaded inside each of our own rayon tasks.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Gemm;

impl<E: Element> TileProduct<E> for Gemm {
    type Operand = E;
    const K_GROUP: usize = 1;
    const ROWS: usize = 1;
    const COLS: usize = 1;
    const PANEL: usize = usize::MAX;

    fn load_row(&self, dst: &mut [E], src: &[E]) {
        copy_row(dst, src);
    }

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
        Extent {
            rows,
            cols,
            len,
            a_rs,
            a_ps,
            b_ps,
            c_rs,
            group: 1,
        }
        .check(a.len(), b.len(), c.len());
        if rows == 0 || cols == 0 {
            return;
        }
        // SAFETY: Extent::check bounds every index gemm reads or writes; E is f32 or f64.
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
pub(super) use x86::{Avx2, Avx512, Avx512Bf16};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{copy_row, Extent, TileProduct};
    use half::bf16;
    use std::arch::x86_64::*;

    /// Rows of one AVX-512 micro-kernel call: 12 rows x 2 vectors = 24 accumulators of the
    /// 32 registers, leaving registers for the two B vectors and the broadcast A value.
    const MR_AVX512: usize = 12;
    /// Rows of one AVX2 micro-kernel call: 6 rows x 2 vectors = 12 accumulators of the 16.
    const MR_AVX2: usize = 6;
    /// f32 sums in one AVX-512 vector.
    const LANES: usize = 16;

    /// AVX2 + FMA f32 micro-kernels (the CPUs without AVX-512: most Intel laptops and
    /// desktops, AMD before Zen 4). Only constructed where the CPU has both.
    #[derive(Clone, Copy, Debug)]
    pub(in crate::tensor_ops::conv) struct Avx2 {
        _detected: (),
    }

    impl Avx2 {
        /// `Some` when this CPU supports the instructions.
        pub(in crate::tensor_ops::conv) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Self { _detected: () })
        }
    }

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

    /// AVX512-BF16 micro-kernels: bf16 operands, f32 sums, two reduction steps per dot
    /// product (twice the multiply-adds of an f32 FMA on CPUs that run both at one a cycle).
    /// Only constructed where the CPU has AVX-512F, AVX-512BW and AVX512-BF16.
    #[derive(Clone, Copy, Debug)]
    pub(in crate::tensor_ops::conv) struct Avx512Bf16 {
        _detected: (),
    }

    impl Avx512Bf16 {
        /// `Some` when this CPU supports the instructions.
        pub(in crate::tensor_ops::conv) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16"))
            .then_some(Self { _detected: () })
        }
    }

    /// A vector of f32 sums: zeroed, or loaded from a row of C and stored back.
    trait SumVector: Copy {
        /// f32 sums in one vector (columns of C per vector).
        const WIDTH: usize;
        unsafe fn zero() -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
    }

    impl SumVector for __m256 {
        const WIDTH: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
    }

    impl SumVector for __m512 {
        const WIDTH: usize = LANES;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
    }

    /// The arithmetic of one micro-kernel: its f32 accumulator vector, how B vectors are
    /// loaded, how an A value (or pair) is broadcast, and the multiply-add.
    trait Lanes {
        type Operand: Copy;
        type Vector: Copy;
        type Sums: SumVector;
        /// Reduction steps per multiply-add (1, or 2 for a bf16 pair).
        const GROUP: usize;
        unsafe fn load(p: *const Self::Operand) -> Self::Vector;
        unsafe fn broadcast(p: *const Self::Operand) -> Self::Vector;
        unsafe fn fma(acc: Self::Sums, a: Self::Vector, b: Self::Vector) -> Self::Sums;
    }

    struct F32x8;

    impl Lanes for F32x8 {
        type Operand = f32;
        type Vector = __m256;
        type Sums = __m256;
        const GROUP: usize = 1;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn broadcast(p: *const f32) -> __m256 {
            _mm256_broadcast_ss(&*p)
        }
        #[inline(always)]
        unsafe fn fma(acc: __m256, a: __m256, b: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, acc)
        }
    }

    struct F32x16;

    impl Lanes for F32x16 {
        type Operand = f32;
        type Vector = __m512;
        type Sums = __m512;
        const GROUP: usize = 1;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn broadcast(p: *const f32) -> __m512 {
            _mm512_set1_ps(*p)
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, a: __m512, b: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, acc)
        }
    }

    struct Bf16x32;

    impl Lanes for Bf16x32 {
        type Operand = bf16;
        type Vector = __m512bh;
        type Sums = __m512;
        const GROUP: usize = 2;
        #[inline(always)]
        unsafe fn load(p: *const bf16) -> __m512bh {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
        }
        #[inline(always)]
        unsafe fn broadcast(p: *const bf16) -> __m512bh {
            let pair = p.cast::<i32>().read_unaligned();
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair))
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
            _mm512_dpbf16_ps(acc, a, b)
        }
    }

    /// One MR x (NV * L::Sums::WIDTH) tile of C over `groups` groups of reduction steps.
    /// `ROW_CONTIGUOUS`: A's rows are `a_s` apart, each with its steps side by side (a
    /// lowered input tile); otherwise its groups are `a_s` apart, each holding every row's
    /// group side by side (a transposed tile). B's groups are `b_gs` apart.
    ///
    /// SAFETY: the caller guarantees the instructions of `L` and that every address is in
    /// range.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro<L: Lanes, const MR: usize, const NV: usize, const ROW_CONTIGUOUS: bool>(
        groups: usize,
        a: *const L::Operand,
        a_s: usize,
        b: *const L::Operand,
        b_gs: usize,
        c: *mut f32,
        c_rs: usize,
        accumulate: bool,
    ) {
        let mut acc = [[L::Sums::zero(); NV]; MR];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = L::Sums::load(c.add(r * c_rs + v * L::Sums::WIDTH));
                }
            }
        }
        let mut ap = a;
        let mut bp = b;
        for _ in 0..groups {
            let bv: [L::Vector; NV] =
                std::array::from_fn(|v| L::load(bp.add(v * L::Sums::WIDTH * L::GROUP)));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = if ROW_CONTIGUOUS {
                    L::broadcast(ap.add(r * a_s))
                } else {
                    L::broadcast(ap.add(r * L::GROUP))
                };
                for (x, bx) in row.iter_mut().zip(&bv) {
                    *x = L::fma(*x, av, *bx);
                }
            }
            ap = if ROW_CONTIGUOUS {
                ap.add(L::GROUP)
            } else {
                ap.add(a_s)
            };
            bp = bp.add(b_gs);
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                x.store(c.add(r * c_rs + v * L::Sums::WIDTH));
            }
        }
    }

    /// Column panels of two vectors (the last may be one), rows in groups of MR.
    ///
    /// SAFETY: the instructions of `L` present; ranges checked by `Extent::check`;
    /// rows % MR == 0, cols % L::Sums::WIDTH == 0 and len % L::GROUP == 0.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn mul_tiles<L: Lanes, const MR: usize, const ROW_CONTIGUOUS: bool>(
        rows: usize,
        cols: usize,
        len: usize,
        a: *const L::Operand,
        a_s: usize,
        b: *const L::Operand,
        b_gs: usize,
        c: *mut f32,
        c_rs: usize,
        accumulate: bool,
    ) {
        let groups = len / L::GROUP;
        let mut j = 0;
        while j < cols {
            let wide = cols - j >= 2 * L::Sums::WIDTH;
            let b_j = b.add(j * L::GROUP);
            for r0 in (0..rows).step_by(MR) {
                let a_r = if ROW_CONTIGUOUS {
                    a.add(r0 * a_s)
                } else {
                    a.add(r0 * L::GROUP)
                };
                let c_r = c.add(r0 * c_rs + j);
                if wide {
                    micro::<L, MR, 2, ROW_CONTIGUOUS>(
                        groups, a_r, a_s, b_j, b_gs, c_r, c_rs, accumulate,
                    );
                } else {
                    micro::<L, MR, 1, ROW_CONTIGUOUS>(
                        groups, a_r, a_s, b_j, b_gs, c_r, c_rs, accumulate,
                    );
                }
            }
            j += if wide {
                2 * L::Sums::WIDTH
            } else {
                L::Sums::WIDTH
            };
        }
    }

    /// Checks a product's shape and ranges, then runs `mul_tiles` in the layout its strides
    /// name.
    ///
    /// SAFETY: the instructions of `L` present.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn mul_checked<L: Lanes, const MR: usize>(
        rows: usize,
        cols: usize,
        len: usize,
        a: &[L::Operand],
        a_rs: usize,
        a_ps: usize,
        b: &[L::Operand],
        b_ps: usize,
        c: &mut [f32],
        c_rs: usize,
        accumulate: bool,
    ) {
        assert!(
            rows.is_multiple_of(MR) && cols.is_multiple_of(L::Sums::WIDTH),
            "tile product: {rows} x {cols} is not a multiple of {MR} x {}",
            L::Sums::WIDTH
        );
        Extent {
            rows,
            cols,
            len,
            a_rs,
            a_ps,
            b_ps,
            c_rs,
            group: L::GROUP,
        }
        .check(a.len(), b.len(), c.len());
        // Extent::check bounds every address (including the padded rows and columns, which
        // the assert above makes whole micro-tiles).
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        if a_ps == 1 {
            mul_tiles::<L, MR, true>(rows, cols, len, a, a_rs, b, b_ps, c, c_rs, accumulate)
        } else {
            mul_tiles::<L, MR, false>(rows, cols, len, a, a_ps, b, b_ps, c, c_rs, accumulate)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn run_with_avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx512f")]
    fn run_with_avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn run_with_avx512_bf16<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// The f32 engine `$engine`: micro-kernels of `$lanes` x `$rows` rows, run with the
    /// instructions `$run` enables (those `$engine::detect` found).
    macro_rules! f32_engine {
        ($engine:ident, $lanes:ident, $rows:expr, $run:ident) => {
            impl TileProduct<f32> for $engine {
                type Operand = f32;
                const K_GROUP: usize = 1;
                const ROWS: usize = $rows;
                const COLS: usize = <$lanes as Lanes>::Sums::WIDTH;
                const PANEL: usize = 2 * <$lanes as Lanes>::Sums::WIDTH;

                #[inline(always)]
                fn load_row(&self, dst: &mut [f32], src: &[f32]) {
                    copy_row(dst, src);
                }

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
                    self.within(
                        #[inline(always)]
                        // SAFETY: `within` enables the instructions of `$lanes`.
                        || unsafe {
                            mul_checked::<$lanes, { $rows }>(
                                rows, cols, len, a, a_rs, a_ps, b, b_ps, c, c_rs, accumulate,
                            )
                        },
                    )
                }

                fn within<R>(&self, f: impl FnOnce() -> R) -> R {
                    // SAFETY: the engine exists only where its instructions were detected.
                    unsafe { $run(f) }
                }
            }
        };
    }

    f32_engine!(Avx2, F32x8, MR_AVX2, run_with_avx2);
    f32_engine!(Avx512, F32x16, MR_AVX512, run_with_avx512);

    impl TileProduct<f32> for Avx512Bf16 {
        type Operand = bf16;
        const K_GROUP: usize = 2;
        const ROWS: usize = MR_AVX512;
        const COLS: usize = LANES;
        const PANEL: usize = 2 * LANES;

        /// Rounds to nearest even, 16 values an instruction.
        #[inline(always)]
        fn load_row(&self, dst: &mut [bf16], src: &[f32]) {
            assert_eq!(dst.len(), src.len(), "load_row: lengths differ");
            let mut d = dst.chunks_exact_mut(LANES);
            let mut s = src.chunks_exact(LANES);
            for (d, s) in (&mut d).zip(&mut s) {
                // SAFETY: `Avx512Bf16` exists only where its instructions were detected;
                // both chunks hold LANES values.
                unsafe {
                    let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr()));
                    _mm256_storeu_si256(
                        d.as_mut_ptr().cast(),
                        std::mem::transmute::<__m256bh, __m256i>(v),
                    );
                }
            }
            for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
                *d = bf16::from_f32(*s);
            }
        }

        /// 32 pairs an instruction pair: each half of the output interleaves 16 values of
        /// each row.
        #[inline(always)]
        fn pair_rows(&self, dst: &mut [bf16], first: &[bf16], second: &[bf16]) {
            const HALF: usize = 2 * LANES;
            /// Word k of each output: from `first` at k / 2 for even k, from `second`
            /// (index bit 5) for odd k; the high output starts 16 values on.
            const LOW: [u16; HALF] = pair_index(0);
            const HIGH: [u16; HALF] = pair_index(LANES as u16);
            const fn pair_index(from: u16) -> [u16; HALF] {
                let mut idx = [0; HALF];
                let mut k = 0;
                while k < HALF {
                    idx[k] = from + (k / 2) as u16 + if k % 2 == 1 { HALF as u16 } else { 0 };
                    k += 1;
                }
                idx
            }
            assert!(
                first.len() == second.len() && dst.len() == 2 * first.len(),
                "pair_rows: lengths differ"
            );
            let whole = first.len() / HALF * HALF;
            for i in (0..whole).step_by(HALF) {
                // SAFETY: `Avx512Bf16` exists only where AVX-512BW was detected; the loads
                // read HALF values of each row from i < whole, and the stores write 2 HALF
                // values of dst from 2 i.
                unsafe {
                    let a = _mm512_loadu_si512(first.as_ptr().add(i).cast());
                    let b = _mm512_loadu_si512(second.as_ptr().add(i).cast());
                    let low = _mm512_loadu_si512(LOW.as_ptr().cast());
                    let high = _mm512_loadu_si512(HIGH.as_ptr().cast());
                    let out = dst.as_mut_ptr().add(2 * i);
                    _mm512_storeu_si512(out.cast(), _mm512_permutex2var_epi16(a, low, b));
                    _mm512_storeu_si512(
                        out.add(HALF).cast(),
                        _mm512_permutex2var_epi16(a, high, b),
                    );
                }
            }
            for (i, (a, b)) in first[whole..].iter().zip(&second[whole..]).enumerate() {
                dst[2 * (whole + i)] = *a;
                dst[2 * (whole + i) + 1] = *b;
            }
        }

        fn mul(
            &self,
            rows: usize,
            cols: usize,
            len: usize,
            a: &[bf16],
            a_rs: usize,
            a_ps: usize,
            b: &[bf16],
            b_ps: usize,
            c: &mut [f32],
            c_rs: usize,
            accumulate: bool,
        ) {
            self.within(
                #[inline(always)]
                // SAFETY: `within` enables AVX-512F and AVX512-BF16, the instructions of
                // Bf16x32.
                || unsafe {
                    mul_checked::<Bf16x32, MR_AVX512>(
                        rows, cols, len, a, a_rs, a_ps, b, b_ps, c, c_rs, accumulate,
                    )
                },
            )
        }

        fn within<R>(&self, f: impl FnOnce() -> R) -> R {
            // SAFETY: `Avx512Bf16` exists only where its instructions were detected.
            unsafe { run_with_avx512_bf16(f) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect()
    }

    /// Multiplies random matrices through `p` in both A layouts, against a plain triple
    /// loop in f64 over the operands as `round` leaves them. Shapes are whole micro-tiles
    /// (rows in units of at least 6, columns of at least 8), with odd vector counts so that
    /// the one-vector panel runs too.
    fn check_engine<P: TileProduct<f32>>(p: P, round: fn(f32) -> f32) {
        let g = P::K_GROUP;
        let (row_unit, col_unit) = (P::ROWS.max(6), P::COLS.max(8));
        for &(row_tiles, col_vectors, len, row_contiguous, accumulate) in &[
            (2usize, 3usize, 38usize, true, false),
            (3, 2, 6, false, true),
            (1, 1, 2, true, true),
            (4, 5, 70, false, false),
        ] {
            let (rows, cols) = (row_tiles * row_unit, col_vectors * col_unit);
            let (a_rs, a_ps) = if row_contiguous {
                (len + 4, 1)
            } else {
                (1, rows * g + 6)
            };
            let b_ps = (cols + 16) * g;
            let a_at = |r: usize, k: usize| {
                if row_contiguous {
                    r * a_rs + k
                } else {
                    (k / g) * a_ps + r * g + k % g
                }
            };
            let b_at = |k: usize, j: usize| (k / g) * b_ps + j * g + k % g;
            let a_logical = values(rows * len, 1);
            let b_logical = values(len * cols, 2);
            let mut a = vec![P::Operand::default(); a_at(rows - 1, len - 1) + 1];
            let mut b = vec![P::Operand::default(); b_at(len - 1, cols - 1) + 1];
            for r in 0..rows {
                for k in 0..len {
                    let at = a_at(r, k);
                    p.load_row(&mut a[at..at + 1], &a_logical[r * len + k..][..1]);
                }
            }
            for k in 0..len {
                for j in 0..cols {
                    let at = b_at(k, j);
                    p.load_row(&mut b[at..at + 1], &b_logical[k * cols + j..][..1]);
                }
            }
            let c_rs = cols + 7;
            let init = values((rows - 1) * c_rs + cols, 3);
            let mut want = init.clone();
            for r in 0..rows {
                for j in 0..cols {
                    let mut s = if accumulate {
                        init[r * c_rs + j] as f64
                    } else {
                        0.0
                    };
                    for k in 0..len {
                        s += round(a_logical[r * len + k]) as f64
                            * round(b_logical[k * cols + j]) as f64;
                    }
                    want[r * c_rs + j] = s as f32;
                }
            }
            let mut got = init.clone();
            p.mul(
                rows, cols, len, &a, a_rs, a_ps, &b, b_ps, &mut got, c_rs, accumulate,
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "element {i}: {g} vs {w} (rows {rows}, row_contiguous {row_contiguous})"
                );
            }
        }
    }

    #[test]
    fn gemm_engine_matches_reference() {
        check_engine(Gemm, |x| x);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_engine_matches_reference_where_available() {
        match Avx2::detect() {
            Some(p) => check_engine(p, |x| x),
            None => eprintln!("no AVX2 + FMA on this CPU: that f32 fast path is not exercised"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_engine_matches_reference_where_available() {
        match Avx512::detect() {
            Some(p) => check_engine(p, |x| x),
            None => eprintln!("no AVX-512 on this CPU: that f32 fast path is not exercised"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_bf16_engine_matches_reference_on_rounded_operands_where_available() {
        match Avx512Bf16::detect() {
            Some(p) => check_engine(p, |x| half::bf16::from_f32(x).to_f32()),
            None => eprintln!("no AVX512-BF16 on this CPU: the bf16 fast path is not exercised"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_rows_round_to_nearest_even_like_the_half_crate() {
        let Some(p) = Avx512Bf16::detect() else {
            eprintln!("no AVX512-BF16 on this CPU: the bf16 fast path is not exercised");
            return;
        };
        // 35 values: two whole vectors and a scalar tail; ties, signs, tiny and huge values.
        let mut src: Vec<f32> = values(30, 4).iter().map(|v| v * 1e3).collect();
        src.extend([
            1.0 + 1.0 / 256.0,
            -(1.0 + 3.0 / 256.0),
            1e-30,
            f32::MAX,
            -0.0,
        ]);
        let mut got = vec![half::bf16::ZERO; src.len()];
        p.load_row(&mut got, &src);
        for (g, s) in got.iter().zip(&src) {
            assert_eq!(g.to_bits(), half::bf16::from_f32(*s).to_bits(), "{s}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_pair_rows_interleaves_whole_vectors_and_the_tail() {
        let Some(p) = Avx512Bf16::detect() else {
            eprintln!("no AVX512-BF16 on this CPU: the bf16 fast path is not exercised");
            return;
        };
        // 70 values a row: two whole halves of 32 and a tail of 6.
        let row = |seed| -> Vec<half::bf16> {
            values(70, seed)
                .iter()
                .map(|&v| half::bf16::from_f32(v))
                .collect()
        };
        let (first, second) = (row(5), row(6));
        let mut got = vec![half::bf16::ZERO; 140];
        p.pair_rows(&mut got, &first, &second);
        for i in 0..70 {
            assert_eq!(got[2 * i], first[i], "first {i}");
            assert_eq!(got[2 * i + 1], second[i], "second {i}");
        }
    }
}
