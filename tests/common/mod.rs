//! Helpers shared by the CUDA test binaries (tests/cuda_harness*.rs, tests/cuda_parity*.rs):
//! poisoned outputs with guard tails, random inputs, the device with poisoned buffers, fresh
//! seeds, element-wise comparisons whose tolerance each test file states, a small U-Net,
//! the tensor memory accelerator probe's cases with their reference, and convolution
//! references on a CPU backend.
// Each test binary compiles this module and uses only a subset of it.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};
use voxseg::backend::cpu::CpuBackend;
use voxseg::backend::cuda::conv_plan::ConvPass;
use voxseg::backend::cuda::conv_tma::TiledMap;
use voxseg::backend::cuda::emu;
use voxseg::backend::cuda::launch::{column_sum, ReducePlan};
use voxseg::backend::cuda::Cuda;
use voxseg::backend::Element;
use voxseg::nn::layers::{Activation, NormKind};
use voxseg::nn::unet::{Downsample, UNetConfig, Upsample};
use voxseg::nn::Init;
use voxseg::rng::Rng;
use voxseg::tensor_ops::conv::ConvGeometry;
use voxseg::tensor_ops::reduce::Axis1;
use voxseg::tensor_ops::{Conv3dKernel, UnaryOp};

/// Length of the sentinel tail after every harness output buffer.
pub const GUARD: usize = 37;
/// What the guard tail holds; a kernel that writes past its outputs overwrites it.
pub const SENTINEL: f32 = -12345.5;

/// An output buffer of `n` NaNs followed by a guard tail of sentinels.
pub fn poisoned(n: usize) -> Vec<f32> {
    let mut v = vec![f32::NAN; n + GUARD];
    v[n..].fill(SENTINEL);
    v
}

/// `data` followed by a guard tail (for buffers updated in place).
pub fn guarded(data: &[f32]) -> Vec<f32> {
    let mut v = data.to_vec();
    v.extend([SENTINEL; GUARD]);
    v
}

/// The first `n` values, after checking the guard tail was not written.
pub fn written(v: &[f32], n: usize) -> &[f32] {
    assert!(
        v[n..].iter().all(|&g| g == SENTINEL),
        "kernel wrote past its {n} outputs"
    );
    &v[..n]
}

/// `n` values drawn uniformly from [lo, hi).
pub fn random(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_range(lo, hi) as f32).collect()
}

/// Serialises the tests of one binary that use the device: the process shares one `Cuda`
/// (its pool and its stream) per device, so a test counting the pool's allocations must not
/// run beside another test that allocates, nor any test beside one that captures a CUDA
/// graph on that stream (an upload or download there fails the other test).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Device 0, with every buffer its pool hands out NaN-filled first (an element a kernel
/// forgets to write then fails the comparison). Fails without a device.
pub fn device() -> Cuda {
    let cuda = Cuda::new(0).expect("these tests need a CUDA device");
    cuda.poison_new_buffers(true);
    cuda
}

/// A seed that differs from run to run (the parity tests print it on failure).
pub fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// How far an element may be from its reference: |got - want| against
/// `rel * max(|want|, floor)`, strictly below it or at most it. Equal values and NaN
/// against NaN always pass.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel: f32,
    pub floor: f32,
    pub strict: bool,
}

impl Tolerance {
    /// |got - want| <= rel * max(|want|, floor).
    pub const fn at_most(rel: f32, floor: f32) -> Self {
        Self {
            rel,
            floor,
            strict: false,
        }
    }

    /// |got - want| < rel * max(|want|, floor).
    pub const fn below(rel: f32, floor: f32) -> Self {
        Self {
            rel,
            floor,
            strict: true,
        }
    }

    fn admits(self, got: f32, want: f32) -> bool {
        if got == want || (got.is_nan() && want.is_nan()) {
            return true;
        }
        let (err, bound) = ((got - want).abs(), self.rel * want.abs().max(self.floor));
        if self.strict {
            err < bound
        } else {
            err <= bound
        }
    }
}

/// Every element of `got` within `tol` of `want`; `got_name` names the side under test
/// ("harness", "cuda") and `want_name` the reference in the failure message.
pub fn assert_within(
    what: &str,
    (got_name, got): (&str, &[f32]),
    (want_name, want): (&str, &[f32]),
    tol: Tolerance,
) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            tol.admits(g, w),
            "{what}[{i}]: {got_name} {g:e}, {want_name} {w:e}"
        );
    }
}

/// Bit-identical, or NaN against NaN.
pub fn assert_bits(what: &str, (got_name, got): (&str, &[f32]), (want_name, want): (&str, &[f32])) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}[{i}]: {got_name} {g:e}, {want_name} {w:e}");
    }
}

/// A device result within `tol` of the CPU's; the failure message names the seed.
pub fn assert_parity_within(what: &str, seed: u64, gpu: &[f32], cpu: &[f32], tol: Tolerance) {
    let what = format!("{what} (seed {seed})");
    assert_within(&what, ("cuda", gpu), ("cpu", cpu), tol);
}

/// A device result bit-identical to the CPU's (NaN against NaN); the message names the seed.
pub fn assert_parity_bits(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_bits(
        &format!("{what} (seed {seed})"),
        ("cuda", gpu),
        ("cpu", cpu),
    );
}

/// The largest |want|, the floor for an output that is a sum of terms of either sign (an
/// equally exact order of operations leaves an error relative to its terms, not to itself).
/// An all-zero reference is refused: it would test nothing.
pub fn largest_magnitude(what: &str, want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: an all-zero reference tests nothing");
    scale
}

/// max over elements of |got - want| / max |want|, asserting every output is finite.
pub fn max_rel(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            assert!(g.is_finite(), "non-finite output {g}");
            (g as f64 - w).abs() / scale
        })
        .fold(0.0, f64::max)
}

/// ||got - want|| / ||want||.
pub fn norm_rel(got: &[f32], want: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}

/// Sums on the harness as the device does (`sum_into`): a thread per output where that
/// suits the view (at most twice `target_blocks` blocks, as the device's grid-stride
/// launches have twice its reduction target), else the block reduction's plan (one launch,
/// or partials and a finish); returns the sums and the number of splits (1 for the column
/// sum).
pub fn emu_sum(x: &[f32], v: Axis1, target_blocks: u32) -> (Vec<f32>, usize) {
    let n = v.outer * v.inner;
    let mut out = poisoned(n);
    if let Some((p, dims)) = column_sum(v, 2 * target_blocks) {
        emu::sum_axis1_columns(&dims, p, x, &mut out).unwrap();
        return (written(&out, n).to_vec(), 1);
    }
    let plan = ReducePlan::new(v, target_blocks);
    if plan.splits() == 1 {
        emu::sum_axis1(&plan.first_dims, plan.first, x, &mut out).unwrap();
    } else {
        let mut partial = vec![f64::NAN; plan.partial_len()];
        emu::sum_axis1_partial(&plan.first_dims, plan.first, x, &mut partial).unwrap();
        emu::sum_axis1_finish(&plan.finish_dims, plan.finish, &partial, &mut out).unwrap();
    }
    (written(&out, n).to_vec(), plan.splits())
}

/// Every unary op, with arguments, that the harness and parity tests cover.
pub const UNARY_OPS: [UnaryOp; 13] = [
    UnaryOp::Relu,
    UnaryOp::LeakyRelu(0.01),
    UnaryOp::Elu(1.3),
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Square,
    UnaryOp::Sqrt,
    UnaryOp::Scale(-2.5),
    UnaryOp::AddScalar(0.7),
];

/// Checks that a Rust parameter struct has the size and field offsets of the C++ struct of
/// that name the harness compiled.
#[allow(unused_macros)] // only the harness binaries check layouts
macro_rules! check_layout {
    ($c_name:literal, $ty:ty { $($field:ident),* $(,)? }) => {{
        assert_eq!(
            voxseg::backend::cuda::emu::param_layout($c_name, None),
            Some(::std::mem::size_of::<$ty>()),
            concat!("sizeof ", $c_name)
        );
        let mut fields = 0;
        $(
            assert_eq!(
                voxseg::backend::cuda::emu::param_layout($c_name, Some(stringify!($field))),
                Some(::std::mem::offset_of!($ty, $field)),
                concat!("offsetof ", $c_name, ".", stringify!($field))
            );
            fields += 1;
        )*
        assert!(fields > 0);
    }};
}
#[allow(unused_imports)] // as above
pub(crate) use check_layout;

/// A 3-level U-Net of 8 to 32 features on 4 modalities and 3 regions (instance norm,
/// LeakyReLU, strided and transposed convs), without deep supervision or dropout.
pub fn small_unet() -> UNetConfig {
    UNetConfig {
        in_channels: 4,
        out_channels: 3,
        base_features: 8,
        max_features: 32,
        depth: 3,
        convs_per_stage: 2,
        norm: NormKind::Instance,
        activation: Activation::LeakyRelu { slope: 0.01 },
        downsample: Downsample::StridedConv,
        upsample: Upsample::TransposedConv,
        deep_supervision: false,
        dropout: 0.0,
        init: Init::HeNormal,
        strides: Vec::new(),
        kernels: Vec::new(),
    }
}

/// The words of a tensor for the tensor memory accelerator's probe (`tma_probe`) as `map`
/// describes it (contiguous), element i holding i + 1 (never 0, so zero fill shows).
pub fn tma_tensor(map: &TiledMap) -> Vec<u32> {
    let elem = map.element_bytes() as usize;
    let count = map.tensor_bytes() as usize / elem;
    let mut bytes = Vec::with_capacity(count * elem);
    for i in 0..count as u64 {
        bytes.extend_from_slice(&(i + 1).to_le_bytes()[..elem]);
    }
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The probe's cases: maps, the `tma_tensor`s under them, and box coordinates (innermost
/// first). bf16
/// [64, 5, 4, 3, 2] and 32-bit [32, 5, 4, 3, 2] tensors; boxes in the 128-byte swizzle
/// (w partly before the tensor; wholly past its channels; wholly past w), in the 64-byte
/// one (rows of 32 bf16, w partly past the end), taken every other voxel along w and h, and
/// of 32-bit words.
pub fn tma_probe_cases() -> Vec<(TiledMap, Vec<u32>, [i32; 5])> {
    use voxseg::backend::cuda::conv_tma::{
        TMA_DATA_TYPE_BF16, TMA_DATA_TYPE_U32, TMA_SWIZZLE_128B, TMA_SWIZZLE_64B,
    };
    // Contiguous: each dimension's stride the one before it times its extent.
    let map = |data_type, dims: [u64; 5], swizzle, box_dims, element_strides| {
        let mut map = TiledMap {
            data_type,
            swizzle,
            dims,
            strides: [0; 4],
            box_dims,
            element_strides,
        };
        let mut stride = dims[0] * map.element_bytes();
        for i in 0..4 {
            map.strides[i] = stride;
            stride *= dims[i + 1];
        }
        map
    };
    let bf16 = [64, 5, 4, 3, 2];
    let words = [32, 5, 4, 3, 2];
    let rows = map(
        TMA_DATA_TYPE_BF16,
        bf16,
        TMA_SWIZZLE_128B,
        [64, 4, 2, 1, 1],
        [1; 5],
    );
    vec![
        (rows, [0, -1, 1, 0, 1]),
        (rows, [64, 0, 0, 0, 0]),
        (rows, [0, 10, 0, 0, 0]),
        (
            map(
                TMA_DATA_TYPE_BF16,
                bf16,
                TMA_SWIZZLE_64B,
                [32, 8, 2, 1, 1],
                [1; 5],
            ),
            [32, 0, 2, 2, 1],
        ),
        (
            map(
                TMA_DATA_TYPE_BF16,
                bf16,
                TMA_SWIZZLE_128B,
                [64, 4, 4, 1, 1],
                [1, 2, 2, 1, 1],
            ),
            [0, -1, -1, 1, 0],
        ),
        (
            map(
                TMA_DATA_TYPE_U32,
                words,
                TMA_SWIZZLE_128B,
                [32, 2, 2, 2, 1],
                [1; 5],
            ),
            [0, 3, 2, 1, 1],
        ),
    ]
    .into_iter()
    .map(|(map, coords)| (map, tma_tensor(&map), coords))
    .collect()
}

/// What a box copy leaves in shared memory from a 1024-byte boundary, as 32-bit words, by
/// the tensor map's rules written out here (independently of the harness's twin): the
/// box's rows (dimension 1 fastest, each dimension's elements every element stride) of
/// box_dims[0] elements, those outside the tensor zeros, each 16-byte chunk at its offset
/// with bits [4:6] XORed by bits [7:9] (128-byte swizzle) or [4:5] by [7:8] (64-byte).
pub fn tma_box_reference(map: &TiledMap, data: &[u32], c: [i32; 5]) -> Vec<u32> {
    use voxseg::backend::cuda::conv_tma::{TMA_SWIZZLE_128B, TMA_SWIZZLE_64B};
    let elem = map.element_bytes() as i64;
    let src: Vec<u8> = data.iter().flat_map(|w| w.to_le_bytes()).collect();
    let n: Vec<i64> = (0..5)
        .map(|i| {
            let (b, s) = (map.box_dims[i] as i64, map.element_strides[i] as i64);
            if i == 0 {
                b
            } else {
                (b + s - 1) / s
            }
        })
        .collect();
    let row_bytes = n[0] * elem;
    let mut out = vec![0u8; (row_bytes * n[1] * n[2] * n[3] * n[4]) as usize];
    let mut row = 0i64;
    for j4 in 0..n[4] {
        for j3 in 0..n[3] {
            for j2 in 0..n[2] {
                for j1 in 0..n[1] {
                    let j = [0, j1, j2, j3, j4];
                    for e in 0..n[0] {
                        let g: Vec<i64> = (0..5)
                            .map(|i| {
                                c[i] as i64
                                    + if i == 0 {
                                        e
                                    } else {
                                        j[i] * map.element_strides[i] as i64
                                    }
                            })
                            .collect();
                        let inside = (0..5).all(|i| g[i] >= 0 && g[i] < map.dims[i] as i64);
                        let logical = row * row_bytes + e * elem;
                        let physical = match map.swizzle {
                            TMA_SWIZZLE_128B => logical ^ (((logical >> 7) & 7) << 4),
                            TMA_SWIZZLE_64B => logical ^ (((logical >> 7) & 3) << 4),
                            _ => logical,
                        } as usize;
                        if inside {
                            let at = g[0] * elem
                                + (1..5)
                                    .map(|i| g[i] * map.strides[i - 1] as i64)
                                    .sum::<i64>();
                            let at = at as usize;
                            out[physical..physical + elem as usize]
                                .copy_from_slice(&src[at..at + elem as usize]);
                        }
                    }
                    row += 1;
                }
            }
        }
    }
    out.chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Backward weights of `g` on (x, dy) as a bf16x3 plan's kernel reads them
/// (`ConvPlan::bf16x3`): hi hi' + hi lo' + lo hi', each product on `be`, where `hi` gives
/// values' bf16 roundings and lo is the rounding of the residual x - hi (0 where hi is not
/// finite, as the pack kernels have it).
pub fn bf16x3_reference<E: Element>(
    be: &CpuBackend<E>,
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    hi: impl Fn(&[f32]) -> Vec<f32>,
) -> Vec<f64> {
    let parts = |v: &[f32]| {
        let high = hi(v);
        let residual: Vec<f32> = v
            .iter()
            .zip(&high)
            .map(|(&x, &h)| if h.is_finite() { x - h } else { 0.0 })
            .collect();
        let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        (wide(hi(&residual)), wide(high))
    };
    let ((x_lo, x_hi), (dy_lo, dy_hi)) = (parts(x), parts(dy));
    let pass = |x: &[f64], dy: &[f64]| cpu_pass(be, ConvPass::BackwardWeight, (x, dy, None), g);
    let products = [
        pass(&x_hi, &dy_hi),
        pass(&x_hi, &dy_lo),
        pass(&x_lo, &dy_hi),
    ];
    (0..products[0].len())
        .map(|i| products.iter().map(|p| p[i]).sum())
        .collect()
}

/// `pass` of `g` on a CPU backend from operands `(a, b, bias)` exact in its element type,
/// as f64.
pub fn cpu_pass<E: Element>(
    be: &CpuBackend<E>,
    pass: ConvPass,
    (a, b, bias): (&[f64], &[f64], Option<&[f64]>),
    g: &ConvGeometry,
) -> Vec<f64> {
    let of = |v: &[f64]| v.iter().map(|&x| E::of(x)).collect::<Vec<E>>();
    let (a, b, bias) = (of(a), of(b), bias.map(of));
    match pass {
        ConvPass::Forward => be.conv3d_forward(&a, &b, bias.as_ref(), g),
        ConvPass::BackwardData => be.conv3d_backward_data(&a, &b, bias.as_ref(), g),
        ConvPass::BackwardWeight => be.conv3d_backward_weight(&a, &b, g),
    }
    .unwrap()
    .into_iter()
    .map(|v| v.as_f64())
    .collect()
}
