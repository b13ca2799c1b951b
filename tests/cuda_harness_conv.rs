//! The convolution kernels (kernels/conv3d.cu, conv3d_pipe.cu) run on the CPU through the
//! execution harness, launched by exactly the plans the device uses (`ConvPlan`: TF32 and
//! BF16 operands packed first, split partials summed by the reduce kernels), and compared
//! with the CPU backend's `Conv3dKernel` in f64. Outputs start as NaN and carry a guard
//! tail that must stay untouched; packed buffers start as NaN of their format.
//!
//! Tolerances, as max |out - ref| / max |ref|: f32 kernels 1e-5; tensor-core kernels 1e-5
//! against a reference whose inputs were rounded as the kernels round them (TF32 nearest
//! ties away, BF16 nearest even: only the f32 accumulation differs), and, as the relative
//! norm ||out - ref|| / ||ref|| against the unrounded reference, TF32 2e-3 and BF16 1e-2
//! (inputs O(1), reductions of at most ~600 terms).
mod common;

use common::{
    bf16x3_reference, check_layout, cpu_pass, emu_sum, max_rel, norm_rel, poisoned, random,
    tma_box_reference, tma_probe_cases, written,
};
use voxseg::backend::cpu::Cpu64;
use voxseg::backend::cuda::conv_plan::*;
use voxseg::backend::cuda::conv_tma::{ConvTmaTiling, TMA_GRID_CHUNK_VOXELS};
use voxseg::backend::cuda::emu::{self, conv as emu_conv};
use voxseg::rng::Rng;
use voxseg::tensor::Shape;
use voxseg::tensor_ops::conv::{Conv3dSpec, ConvGeometry, ConvTranspose3dSpec, Padding};

/// TF32 as cvt.rna.tf32.f32 rounds: to 11 significant bits, ties away from zero, computed
/// by arithmetic (independently of the kernels' bit manipulation).
fn round_tf32(x: f32) -> f32 {
    round_significand(x, 10, false)
}

/// BF16 round to nearest even, to 8 significant bits.
fn round_bf16(x: f32) -> f32 {
    round_significand(x, 7, true)
}

fn round_significand(x: f32, mantissa_bits: i32, ties_even: bool) -> f32 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let v = x.abs() as f64;
    let e = (v.log2().floor() as i32).max(-126);
    let ulp = 2f64.powi(e - mantissa_bits);
    let q = v / ulp;
    let mut r = q.floor();
    let frac = q - r;
    if frac > 0.5 || (frac == 0.5 && (!ties_even || r % 2.0 == 1.0)) {
        r += 1.0;
    }
    ((r * ulp) as f32).copysign(x)
}

fn rounder(p: ConvPrecision) -> fn(f32) -> f32 {
    match p {
        ConvPrecision::F32 => |x| x,
        ConvPrecision::Tf32 => round_tf32,
        ConvPrecision::Bf16 => round_bf16,
    }
}

/// Runs one pass as the device would: the plan's kernel, then the sum of split partials.
fn run(plan: &ConvPlan, a: &[f32], b: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let n = plan.workspace_len();
    let mut ws = poisoned(n);
    emu_conv::conv3d(plan, a, b, bias, &mut ws)
        .unwrap_or_else(|e| panic!("{:?}: {e}", plan.kernel));
    let ws = written(&ws, n);
    match plan.partial_sum() {
        None => ws.to_vec(),
        Some(v) => emu_sum(ws, v, 4).0,
    }
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The CPU backend in f64 on (a, b), each rounded by `round`.
fn reference(
    g: &ConvGeometry,
    pass: ConvPass,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    round: fn(f32) -> f32,
) -> Vec<f64> {
    let r = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| round(x) as f64).collect() };
    let (a, b, bias) = (r(a), r(b), bias.map(to64));
    cpu_pass(&Cpu64::new(), pass, (&a, &b, bias.as_deref()), g)
}

/// The relative norm error that tf32 backward weights as three bf16 products stay below,
/// against the unrounded result: a hundredth of tf32's bound (they measure about 4e-6 on
/// inputs of O(1), against tf32's 2e-4 to 3e-4).
const BF16X3_TOL: f64 = 2e-5;

/// What one checked pass ran.
struct Ran {
    kernel: ConvKernel,
    splits: usize,
}

/// Checks one pass of `g` at `precision` against the CPU backend, with random inputs and
/// a bias where the pass takes one.
fn check_pass(
    g: &ConvGeometry,
    pass: ConvPass,
    precision: ConvPrecision,
    target: ConvTarget,
    rng: &mut Rng,
) -> Ran {
    let plan = ConvPlan::new(g, pass, precision, target).unwrap();
    let (na, nb, nbias) = plan.operand_lens();
    let a = random(rng, na, -1.0, 1.0);
    let b = random(rng, nb, -1.0, 1.0);
    let bias = nbias.map(|n| random(rng, n, -1.0, 1.0));
    let got = run(&plan, &a, &b, bias.as_deref());
    assert_eq!(got.len(), plan.out_len);
    let what = format!("{pass:?} {:?} splits {} {g:?}", plan.kernel, plan.splits());
    let used = plan.kernel.precision;
    let bf16x3 = plan.is_bf16x3();
    let rounded = if bf16x3 {
        let hi = |v: &[f32]| v.iter().map(|&x| round_bf16(x)).collect();
        bf16x3_reference(&Cpu64::new(), g, &a, &b, hi)
    } else {
        reference(g, pass, &a, &b, bias.as_deref(), rounder(used))
    };
    let e = max_rel(&got, &rounded);
    assert!(
        e < 1e-5,
        "{what}: max relative error {e:e} (inputs rounded as the kernel)"
    );
    if used != ConvPrecision::F32 {
        let exact = reference(g, pass, &a, &b, bias.as_deref(), |x| x);
        let e = norm_rel(&got, &exact);
        let tol = if bf16x3 {
            BF16X3_TOL
        } else if used == ConvPrecision::Tf32 {
            2e-3
        } else {
            1e-2
        };
        assert!(
            e < tol,
            "{what}: relative norm error {e:e} against f32 inputs"
        );
        assert!(
            e > 1e-6,
            "{what}: {e:e} from the unrounded result: were the operands rounded?"
        );
    }
    Ran {
        kernel: plan.kernel,
        splits: plan.splits(),
    }
}

const PASSES: [ConvPass; 3] = [
    ConvPass::Forward,
    ConvPass::BackwardData,
    ConvPass::BackwardWeight,
];

fn conv(x: [usize; 5], w: [usize; 5], stride: usize, padding: Padding) -> ConvGeometry {
    conv_strided(x, w, [stride; 3], padding)
}

/// A convolution whose stride differs along the axes.
fn conv_strided(
    x: [usize; 5],
    w: [usize; 5],
    stride: [usize; 3],
    padding: Padding,
) -> ConvGeometry {
    let spec = Conv3dSpec { stride, padding };
    ConvGeometry::conv3d(&Shape::new(&x), &Shape::new(&w), &spec).unwrap()
}

/// The U-Net's up-convolution: a 2x2x2 kernel at stride 2, no padding.
const K2S2: ConvTranspose3dSpec = ConvTranspose3dSpec {
    stride: [2; 3],
    padding: [[0, 0]; 3],
    output_padding: [0; 3],
};

/// A 3x3x3 stride-2 transposed convolution cropping one voxel on each side, with one voxel
/// of output padding: the inverse of a stride-2 'same' convolution's shape.
const K3S2: ConvTranspose3dSpec = ConvTranspose3dSpec {
    stride: [2; 3],
    padding: [[1, 1]; 3],
    output_padding: [1; 3],
};

fn transposed(x: [usize; 5], w: [usize; 5], spec: ConvTranspose3dSpec) -> ConvGeometry {
    ConvGeometry::conv_transpose3d(&Shape::new(&x), &Shape::new(&w), &spec).unwrap()
}

#[test]
fn tile_constants_match_params_conv_h() {
    for (name, value) in [
        ("VX_CONV_THREADS", CONV_THREADS),
        ("VX_CONV_SIMT_BM", CONV_SIMT_BM),
        ("VX_CONV_WIDE_BN", CONV_WIDE_BN),
        ("VX_CONV_WIDE_BK", CONV_WIDE_BK),
        ("VX_CONV_NARROW_BN", CONV_NARROW_BN),
        ("VX_CONV_NARROW_BK", CONV_NARROW_BK),
        ("VX_CONV_SHALLOW_BN", CONV_SHALLOW_BN),
        ("VX_CONV_SHALLOW_BK", CONV_SHALLOW_BK),
        ("VX_CONV_TC_BM", CONV_TC_BM),
        ("VX_CONV_PIPE_STEP_BYTES", CONV_PIPE_STEP_BYTES),
        ("VX_CONV_PIPE_NARROW_THREADS", CONV_PIPE_NARROW_THREADS),
        ("VX_CONV_PIPE_STAGES", CONV_PIPE_STAGES),
        ("VX_CONV_WGMMA_THREADS", CONV_WGMMA_THREADS),
        ("VX_CONV_WGMMA_STEP_BYTES", CONV_WGMMA_STEP_BYTES),
        ("VX_CONV_WGMMA_STAGES_N128", CONV_WGMMA_STAGES_N128),
        ("VX_CONV_WGMMA_STAGES_N64", CONV_WGMMA_STAGES_N64),
        ("VX_CONV_WGMMA_STAGES_N32", CONV_WGMMA_STAGES_N32),
        ("VX_CONV_WGMMA_STAGES_N64_PAIR", CONV_WGMMA_STAGES_N64_PAIR),
        ("VX_CONV_WGMMA_M256_BM", CONV_WGMMA_M256_BM),
        ("VX_CONV_WGMMA_M256_BN", CONV_WGMMA_M256_BN),
        ("VX_CONV_WGMMA_M256_THREADS", CONV_WGMMA_M256_THREADS),
        ("VX_CONV_WGMMA_STAGES_M256", CONV_WGMMA_STAGES_M256),
        ("VX_CONV_WGMMA_WS128_THREADS", CONV_WGMMA_WS128_THREADS),
        ("VX_CONV_WGMMA_WS64_THREADS", CONV_WGMMA_WS64_THREADS),
        ("VX_CONV_WGMMA_TMA_THREADS", CONV_WGMMA_TMA_THREADS),
        ("VX_CONV_WGMMA_TMA256_THREADS", CONV_WGMMA_TMA256_THREADS),
        ("VX_TMA_GRID_CHUNK_VOXELS", TMA_GRID_CHUNK_VOXELS as u32),
        ("VX_CONV_WGMMA_ALIGN", CONV_WGMMA_ALIGN),
        ("VX_CONV_HALO_ROWS", CONV_HALO_ROWS),
        ("VX_CONV_HALO_MAX_KW", CONV_HALO_MAX_KW),
        ("VX_CONV_HALO_STAGES_N128", CONV_HALO_STAGES_N128),
        ("VX_CONV_HALO_STAGES_N64", CONV_HALO_STAGES_N64),
        ("VX_CONV_HALO_STAGES_N32", CONV_HALO_STAGES_N32),
        (
            "VX_CONV_HALO_WEIGHT_EXTRA_ROWS",
            CONV_HALO_WEIGHT_EXTRA_ROWS,
        ),
        ("VX_CONV_HALO_WEIGHT_STAGES", CONV_HALO_WEIGHT_STAGES),
        ("VX_CONV_PHASE_MAX_STEPS", CONV_PHASE_MAX_STEPS),
        ("VX_CONV_PHASE_BN", CONV_PHASE_BN),
    ] {
        assert_eq!(emu::launch_constant(name), Some(value), "{name}");
    }
}

/// Every halo kernel's launch gets the shared memory its tile's ring takes (the harness
/// would not trap a ring larger than its launch).
#[test]
fn halo_launches_get_their_rings_shared_memory() {
    let tiles = [
        ConvTile::HaloN128,
        ConvTile::HaloN64,
        ConvTile::HaloN32,
        ConvTile::HaloWeight32x32,
        ConvTile::HaloWeight64x32,
        ConvTile::HaloWeight64x64,
        ConvTile::HaloWeight64x128,
    ];
    let mut checked = 0;
    for tile in tiles {
        for pass in PASSES {
            for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
                let kernel = ConvKernel {
                    pass,
                    precision,
                    tile,
                };
                let Some(name) = kernel.name() else { continue };
                assert_eq!(
                    Some(kernel.shared_bytes()),
                    emu_conv::halo_shared_bytes(name),
                    "{name}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 20);
    assert_eq!(emu_conv::halo_shared_bytes("conv3d_fwd_bf16_n64"), None);
}

#[test]
fn pack_params_have_the_cpp_layout() {
    check_layout!("ConvPackParams", ConvPackParams { a, b, c, padded });
    check_layout!(
        "ConvBorderPackParams",
        ConvBorderPackParams {
            n,
            d,
            h,
            w,
            c,
            padded,
            before_d,
            before_h,
            before_w,
            out_d,
            out_h,
            out_w
        }
    );
    check_layout!(
        "ConvBf16x3PackParams",
        ConvBf16x3PackParams {
            pack,
            residual_copies
        }
    );
    check_layout!(
        "ConvBorderBf16x3PackParams",
        ConvBorderBf16x3PackParams {
            pack,
            residual_copies
        }
    );
    check_layout!(
        "ConvChannelMajorPackParams",
        ConvChannelMajorPackParams {
            grid,
            stride_d,
            stride_h,
            stride_w,
            phase_len,
            shifts
        }
    );
}

/// The bf16 bits of `x` rounded to nearest even (by arithmetic, see `round_bf16`).
fn bf16_bits(x: f32) -> u16 {
    (round_bf16(x).to_bits() >> 16) as u16
}

/// Packs `[a, b, c]` sources of every kind at `precision` and compares every element with
/// the layout of conv3d_pipe.cu, the rounding by `bits` and zeros in the padding; a guard
/// after the buffer must stay untouched.
fn check_packs<E: emu_conv::Packed + PartialEq + std::fmt::Debug>(
    precision: ConvPrecision,
    bits: fn(f32) -> E,
    zero: E,
    guard: E,
    rng: &mut Rng,
) {
    // (kind, [a, b, c]): activations with 5 (scalar loads), 12 and 6 (16-byte loads or
    // scalar, padded or not per format) and 16 channels (no padding), over more chunks
    // than one grid holds; backward-data weights [tap][cin][cout] -> [cin][tap][cout_p];
    // forward weights -> [cout][tap][cin_p]; activations inside zero borders (the halo
    // kernels' operand), one cropped (a negative offset), one over a grid-stride loop.
    let bordered = |n: i32, source: [i32; 3], before, dims| {
        ConvPackKind::Bordered(ConvBorder {
            n,
            source,
            before,
            dims,
        })
    };
    let mut cases = vec![
        (ConvPackKind::Rows, [700, 1, 5]),
        (ConvPackKind::Rows, [300, 1, 12]),
        (ConvPackKind::Rows, [200, 1, 6]),
        (ConvPackKind::Rows, [90, 1, 16]),
        (ConvPackKind::Rows, [5, 3, 5]),
        (ConvPackKind::Transposed, [3, 12, 7]),
        (ConvPackKind::Transposed, [2, 4, 33]),
        (ConvPackKind::Transposed, [2, 6, 3]),
        (bordered(2, [3, 4, 5], [1, 2, 0], [5, 7, 6]), [120, 1, 5]),
        (bordered(1, [4, 3, 6], [-1, 1, 2], [3, 5, 9]), [72, 1, 12]),
        (bordered(2, [6, 6, 6], [1, 1, 1], [8, 8, 8]), [432, 1, 16]),
    ];
    // Channel-major (tf32 only), over more than one 64 x 32 block along both: at stride 1
    // rows of 5 * 7 * 6 * 2 = 420 voxels (a whole number of chunks; three copies, each a
    // voxel further on) and 3 * 5 * 9 = 135 (padded to 136, one source cropped; four
    // copies); strided, 2 x 2 x 1 phases of 2 x 4 x 4 x 8 voxels (two copies), and 1 x 2 x 3
    // phases of 3 x 3 x 3 (a source longer than the grids reach); 15 samples of 5 x 1 x 1
    // voxels (a block stepping over a row, a plane and a sample at every voxel; four copies),
    // and two phases of 2 x 2 x 2 x 5 voxels inside the source (a warp's run of voxels
    // stepping from one phase into the next).
    let channel_major = |n: i32, source: [i32; 3], before, dims, stride, shifts| {
        ConvPackKind::ChannelMajor(ConvPhaseGrid {
            border: ConvBorder {
                n,
                source,
                before,
                dims,
            },
            stride,
            shifts,
        })
    };
    if precision == ConvPrecision::Tf32 {
        cases.extend([
            (
                channel_major(2, [3, 4, 5], [1, 2, 0], [5, 7, 6], [1; 3], 3),
                [120, 1, 37],
            ),
            (
                channel_major(1, [4, 3, 6], [-1, 1, 2], [3, 5, 9], [1; 3], 4),
                [72, 1, 70],
            ),
            (
                channel_major(2, [5, 6, 7], [1, 1, 0], [4, 4, 8], [2, 2, 1], 2),
                [420, 1, 37],
            ),
            (
                channel_major(1, [4, 6, 11], [0, 1, 1], [3, 3, 3], [1, 2, 3], 1),
                [264, 1, 40],
            ),
            (
                channel_major(15, [3, 1, 1], [1, 0, 0], [5, 1, 1], [1; 3], 4),
                [45, 1, 33],
            ),
            (
                channel_major(2, [2, 2, 10], [0; 3], [2, 2, 5], [1, 1, 2], 2),
                [80, 1, 33],
            ),
        ]);
    }
    for (kind, [a, b, c]) in cases {
        let pack = ConvPack::new(kind, precision, [a, b, c], 1).unwrap();
        let multiple = precision.channel_multiple();
        let padded = match kind {
            ConvPackKind::Rows | ConvPackKind::Bordered(_) => c.next_multiple_of(multiple),
            ConvPackKind::Transposed => b.next_multiple_of(multiple),
            ConvPackKind::ChannelMajor(grid) => grid.voxels().next_multiple_of(multiple),
        };
        assert_eq!(pack.params.padded as usize, padded);
        if let ConvPackKind::ChannelMajor(_) = kind {
            assert!(
                pack.dims.grid[0] > 1 && pack.dims.grid[1] > 1,
                "{:?}",
                pack.dims
            );
        } else {
            assert!(
                pack.dims.grid[0] <= 2,
                "two blocks at most: a grid-stride loop"
            );
        }
        let src = random(rng, a * b * c, -2.0, 2.0);
        let n = pack.packed_len();
        let mut dst = vec![E::NAN; n + 8];
        dst[n..].fill(guard);
        emu_conv::conv3d_pack(&pack, &src, &mut dst).unwrap();
        let what = format!("{precision} {kind:?} [{a}, {b}, {c}]");
        assert!(
            dst[n..].iter().all(|&g| g == guard),
            "{what} wrote past its end"
        );
        let at = |ai: usize, bi: usize, ci: usize| src[(ai * b + bi) * c + ci];
        let want: Vec<E> = match kind {
            ConvPackKind::Rows => (0..b)
                .flat_map(|bi| (0..a).flat_map(move |ai| (0..padded).map(move |ci| (ai, bi, ci))))
                .map(|(ai, bi, ci)| if ci < c { bits(at(ai, bi, ci)) } else { zero })
                .collect(),
            ConvPackKind::Transposed => (0..c)
                .flat_map(|ci| (0..a).flat_map(move |ai| (0..padded).map(move |bi| (ai, bi, ci))))
                .map(|(ai, bi, ci)| if bi < b { bits(at(ai, bi, ci)) } else { zero })
                .collect(),
            ConvPackKind::ChannelMajor(grid) => {
                let [d, h, w] = grid.border.source;
                let [gd, gh, gw] = grid.border.dims;
                let [sd, sh, sw] = grid.stride;
                let [bd, bh, bw] = grid.border.before;
                // The source voxel of each voxel of the phases' grids, in order (None
                // outside the source).
                let mut voxels = Vec::new();
                for phase in 0..sd * sh * sw {
                    let (rz, ry, rx) = (phase / (sh * sw), phase / sw % sh, phase % sw);
                    for nn in 0..grid.border.n {
                        for z in 0..gd {
                            for y in 0..gh {
                                for x in 0..gw {
                                    let s = [
                                        sd * (z - bd) + rz,
                                        sh * (y - bh) + ry,
                                        sw * (x - bw) + rx,
                                    ];
                                    let inside = (0..d).contains(&s[0])
                                        && (0..h).contains(&s[1])
                                        && (0..w).contains(&s[2]);
                                    let voxel = (((nn * d + s[0]) * h + s[1]) * w + s[2]) as usize;
                                    voxels.push(inside.then_some(voxel));
                                }
                            }
                        }
                    }
                }
                let mut want = Vec::new();
                for shift in 0..grid.shifts as usize {
                    for ci in 0..c {
                        for v in 0..padded {
                            want.push(match voxels.get(v + shift).copied().flatten() {
                                Some(voxel) => bits(src[voxel * c + ci]),
                                None => zero,
                            });
                        }
                    }
                }
                want
            }
            ConvPackKind::Bordered(border) => {
                let [d, h, w] = border.source;
                let [od, oh, ow] = border.dims;
                let mut want = Vec::new();
                for nn in 0..border.n {
                    for z in 0..od {
                        for y in 0..oh {
                            for x in 0..ow {
                                let [bd, bh, bw] = border.before;
                                let (sz, sy, sx) = (z - bd, y - bh, x - bw);
                                let inside = (0..d).contains(&sz)
                                    && (0..h).contains(&sy)
                                    && (0..w).contains(&sx);
                                let voxel = (((nn * d + sz) * h + sy) * w + sx) as usize;
                                want.extend((0..padded).map(|ci| {
                                    if inside && ci < c {
                                        bits(src[voxel * c + ci])
                                    } else {
                                        zero
                                    }
                                }));
                            }
                        }
                    }
                }
                want
            }
        };
        assert_eq!(want.len(), n);
        for (i, (got, w)) in dst[..n].iter().zip(&want).enumerate() {
            assert_eq!(got, w, "{what}: element {i}");
        }
    }
}

#[test]
fn packs_round_pad_and_reorder_their_operands() {
    let mut rng = Rng::new(80);
    check_packs(ConvPrecision::Bf16, bf16_bits, 0u16, 0xABCD, &mut rng);
    check_packs(
        ConvPrecision::Tf32,
        |x| round_tf32(x).to_bits(),
        0u32,
        0xABCD_ABCD,
        &mut rng,
    );
    let pack = ConvPack::new(ConvPackKind::Rows, ConvPrecision::Tf32, [4, 1, 4], 1).unwrap();
    let mut wrong = vec![0u16; 16];
    let err = emu_conv::conv3d_pack(&pack, &[0.0; 16], &mut wrong).unwrap_err();
    assert!(err.contains("4-byte"), "{err}");
}

/// The words of a 16 x K-step operand whose element (row, k) is `code(row, k)`: tf32 one
/// per word, bf16 two (the lower k low).
fn probe_words(precision: ConvPrecision, code: impl Fn(u32, u32) -> u32) -> Vec<u32> {
    match precision {
        ConvPrecision::Tf32 => (0..256).map(|i| code(i / 16, i % 16)).collect(),
        _ => (0..256)
            .map(|i| {
                let (row, k) = (i / 16, 2 * (i % 16));
                code(row, k) | code(row, k + 1) << 16
            })
            .collect(),
    }
}

#[test]
fn main_loop_fragments_follow_the_ptx_mma_layouts() {
    // Element (row, k) is coded (row << 8 | k) (plus a tag for b), so every register names
    // the elements it holds. mma.h's layouts, with g = lane / 4, t = lane % 4 and the
    // step's k offset k0: m16n8k8 tf32 A (g, k0 + t), (g + 8, ..), (g, k0 + t + 4),
    // (g + 8, ..); B column g at k0 + t, k0 + t + 4 (f[0], f[1]), column 8 + g (f[2],
    // f[3]); m16n8k16 bf16 the same with pairs of k at 2t and 2t + 8.
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        let code_a = |row: u32, k: u32| row << 8 | k;
        let code_b = |row: u32, k: u32| 0x4000 | row << 8 | k;
        let a = probe_words(precision, code_a);
        let b = probe_words(precision, code_b);
        let mut out = vec![0u32; 32 * 32];
        emu_conv::fragment_probe(precision, &a, &b, &mut out).unwrap();
        for lane in 0..32u32 {
            let (g, t) = (lane / 4, lane % 4);
            for ks in 0..2u32 {
                // The register of (row, k0 + 2t or t, + `hi`) of an operand coded by `code`.
                let (k0, hi) = match precision {
                    ConvPrecision::Tf32 => (8 * ks + t, 4),
                    _ => (16 * ks + 2 * t, 8),
                };
                let reg = |code: &dyn Fn(u32, u32) -> u32, row: u32, off: u32| {
                    let k = k0 + off;
                    match precision {
                        ConvPrecision::Tf32 => code(row, k),
                        _ => code(row, k) | code(row, k + 1) << 16,
                    }
                };
                let frag_a = [
                    reg(&code_a, g, 0),
                    reg(&code_a, g + 8, 0),
                    reg(&code_a, g, hi),
                    reg(&code_a, g + 8, hi),
                ];
                let frag_b = [
                    reg(&code_b, g, 0),
                    reg(&code_b, g, hi),
                    reg(&code_b, g + 8, 0),
                    reg(&code_b, g + 8, hi),
                ];
                let base = (32 * lane + 16 * ks) as usize;
                let got = &out[base..base + 16];
                let what = format!("{precision} lane {lane} k step {ks}");
                assert_eq!(got[0..4], frag_a, "{what}: k-major A");
                assert_eq!(got[4..8], frag_b, "{what}: k-major B");
                assert_eq!(got[8..12], frag_a, "{what}: mn-major A");
                assert_eq!(got[12..16], frag_b, "{what}: mn-major B");
            }
        }
    }
    // By hand, TF32 lane 6 (g 1, t 2), second k step: A (1, 10), (9, 10), (1, 14), (9, 14).
    let a = probe_words(ConvPrecision::Tf32, |row, k| row << 8 | k);
    let mut out = vec![0u32; 32 * 32];
    emu_conv::fragment_probe(ConvPrecision::Tf32, &a, &a, &mut out).unwrap();
    assert_eq!(out[32 * 6 + 16..32 * 6 + 20], [0x10A, 0x90A, 0x10E, 0x90E]);
}

#[test]
fn ldmatrix_fragments_follow_the_ptx_layout() {
    // Row r holds (r << 8) | column, so every 16-bit value names its place.
    let rows: Vec<u16> = (0..256u16).map(|i| ((i / 8) << 8) | (i % 8)).collect();
    let mut out = vec![0u32; 32 * 14];
    emu_conv::ldmatrix_probe(&rows, &mut out).unwrap();
    // Lane l points at row (5 l + 3) % 32; matrix i is made of the rows lanes 8i..8i+7
    // point at.
    let row_of = |lane: usize| (5 * lane + 3) % 32;
    let elem = |i: usize, r: usize, c: usize| rows[row_of(8 * i + r) * 8 + c] as u32;
    let pair = |lo: u32, hi: u32| lo | (hi << 16);
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        let o = &out[14 * lane..14 * (lane + 1)];
        let plain = |i| pair(elem(i, g, 2 * t), elem(i, g, 2 * t + 1));
        let trans = |i| pair(elem(i, 2 * t, g), elem(i, 2 * t + 1, g));
        let want = [
            plain(0),
            plain(0),
            plain(1),
            plain(0),
            plain(1),
            plain(2),
            plain(3),
            trans(0),
            trans(0),
            trans(1),
            trans(0),
            trans(1),
            trans(2),
            trans(3),
        ];
        assert_eq!(o, want, "lane {lane}");
    }
    // By hand: lane 0 holds row 3 (lane 0's address), columns 0 and 1; transposed, column
    // 0 of rows 3 and 8 (lanes 0 and 1's addresses). Lane 5 (g 1, t 1), matrix 3: row of
    // lane 25 (32), columns 2, 3 -> row 0; transposed rows of lanes 26, 27 (5, 10), col 1.
    assert_eq!(out[0], 0x0301_0300);
    assert_eq!(out[7], 0x0800_0300);
    assert_eq!(out[14 * 5 + 6], 0x0003_0002);
    assert_eq!(out[14 * 5 + 13], 0x0A01_0501);
}

#[test]
fn rounding_is_tf32_nearest_away_and_bf16_nearest_even() {
    let mut rng = Rng::new(70);
    let mut x: Vec<f32> = vec![
        1.0,
        -1.0,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        3.0e-42,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        // Exactly halfway for TF32 (13 dropped bits 0x1000), just below and above.
        f32::from_bits(0x3F80_1000),
        f32::from_bits(0x3F80_0FFF),
        f32::from_bits(0x3F80_1001),
        f32::from_bits(0xBF80_3000),
        // Halfway for BF16 with even and odd kept bits, and just above.
        f32::from_bits(0x3F80_8000),
        f32::from_bits(0x3F81_8000),
        f32::from_bits(0x3F80_8001),
        f32::from_bits(0xC001_8000),
    ];
    x.extend((0..500).map(|i| {
        let scale = 2f32.powi(i % 60 - 30);
        rng.uniform_range(-1.0, 1.0) as f32 * scale
    }));
    let n = x.len();
    let (mut tf32, mut bf16) = (vec![0u32; n], vec![0u32; n]);
    emu_conv::tc_round_probe(&x, &mut tf32, &mut bf16).unwrap();
    for i in 0..n {
        assert_eq!(
            f32::from_bits(tf32[i]).to_bits(),
            round_tf32(x[i]).to_bits(),
            "tf32 of {:e} ({:#x})",
            x[i],
            x[i].to_bits()
        );
        assert_eq!(tf32[i] & 0x1FFF, 0, "tf32 keeps 10 mantissa bits");
        let pair = [x[i], x[(i ^ 1).min(n - 1)]];
        for (half, v) in pair.into_iter().enumerate() {
            let bits = (bf16[i] >> (16 * half)) & 0xFFFF;
            assert_eq!(
                f32::from_bits(bits << 16).to_bits(),
                round_bf16(v).to_bits(),
                "bf16 of {v:e} ({:#x}), half {half}",
                v.to_bits()
            );
        }
    }
    // The ties: away from zero for TF32, to even for BF16.
    assert_eq!(tf32[10], 0x3F80_2000);
    assert_eq!(tf32[13], 0xBF80_4000);
    assert_eq!(bf16[14] & 0xFFFF, 0x3F80);
    assert_eq!(bf16[15] & 0xFFFF, 0x3F82);
    assert_eq!(bf16[14] >> 16, 0x3F82, "x[i ^ 1] goes to the high half");
    assert_eq!(f32::from_bits(tf32[6]), f32::INFINITY, "f32::MAX rounds up");
}

/// A (128 x k) B (n x k)^T of the inputs rounded as `precision` rounds, in f64.
fn wgmma_reference(precision: ConvPrecision, a: &[f32], b: &[f32], n: usize) -> Vec<f64> {
    let round = rounder(precision);
    let k = a.len() / 128;
    let mut out = vec![0.0; 128 * n];
    for row in 0..128 {
        for col in 0..n {
            out[row * n + col] = (0..k)
                .map(|i| round(a[row * k + i]) as f64 * round(b[col * k + i]) as f64)
                .sum();
        }
    }
    out
}

#[test]
fn wgmma_reads_swizzled_tiles_and_writes_the_accumulator_layout() {
    let mut rng = Rng::new(85);
    for (precision, layout, widths) in WGMMA_PROBES {
        for &n in widths {
            let k = wgmma_probe_depth(precision);
            let a = random(&mut rng, 128 * k, -1.0, 1.0);
            let b = random(&mut rng, n * k, -1.0, 1.0);
            let mut out = poisoned(128 * n);
            emu_conv::wgmma_probe(precision, layout, n, &a, &b, &mut out).unwrap();
            let out = written(&out, 128 * n);
            let e = max_rel(out, &wgmma_reference(precision, &a, &b, n));
            assert!(
                e < 1e-6,
                "{precision} {layout:?} n {n}: max relative error {e:e}"
            );
        }
    }
    for layout in [WgmmaLayout::MnMajor, WgmmaLayout::KMajorSw64] {
        let mut out = poisoned(128 * 128);
        let tf32 = emu_conv::wgmma_probe(
            ConvPrecision::Tf32,
            layout,
            128,
            &[0.0; 4096],
            &[0.0; 4096],
            &mut out,
        );
        assert!(tf32.is_err(), "no {layout:?} tf32 probe");
    }
}

/// The harness's twin of the tensor memory accelerator's box copies leaves what the tensor
/// map's rules say (`tma_box_reference`): zero fill (partly and wholly outside), the 128-
/// and 64-byte swizzles, traversal strides, bf16 and 32-bit elements.
#[test]
fn tma_twin_copies_boxes_as_tensor_maps_say() {
    for (map, data, coords) in tma_probe_cases() {
        let words = map.box_bytes() as usize / 4;
        let mut out = vec![0xDEAD_BEEF; words];
        emu_conv::tma_probe(&map, &data, coords, &mut out).unwrap();
        let want = tma_box_reference(&map, &data, coords);
        assert_eq!(out, want, "{map:?} at {coords:?}");
        let zeros = want.iter().filter(|&&w| w == 0).count();
        let outside = coords[0] >= map.dims[0] as i32 || coords[1] >= map.dims[1] as i32;
        assert_eq!(
            zeros == words,
            outside,
            "{map:?} at {coords:?}: {zeros} zero words"
        );
    }
}

#[test]
fn mma_fragments_follow_the_ptx_layouts() {
    let mut rng = Rng::new(71);
    for (precision, k) in [(ConvPrecision::Tf32, 8), (ConvPrecision::Bf16, 16)] {
        let round = rounder(precision);
        let a = random(&mut rng, 16 * k, -1.0, 1.0);
        let b = random(&mut rng, k * 8, -1.0, 1.0);
        let c = random(&mut rng, 128, -1.0, 1.0);
        let mut out = poisoned(128);
        emu_conv::mma_probe(precision, &a, &b, &c, &mut out).unwrap();
        let out = written(&out, 128);
        for row in 0..16 {
            for col in 0..8 {
                let want: f64 = c[row * 8 + col] as f64
                    + (0..k)
                        .map(|i| round(a[row * k + i]) as f64 * round(b[i * 8 + col]) as f64)
                        .sum::<f64>();
                let got = out[row * 8 + col] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "{precision} D[{row}][{col}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn small_odd_shapes_on_every_precision() {
    let mut rng = Rng::new(72);
    // Channel counts that are not multiples of 4 or 8: the tensor cores pad them.
    let shapes = [
        conv([1, 5, 4, 3, 3], [3, 3, 3, 3, 2], 1, Padding::Same),
        conv([2, 5, 6, 7, 5], [3, 3, 3, 5, 35], 2, Padding::Same),
        conv([1, 4, 6, 5, 3], [2, 2, 2, 3, 3], 2, Padding::Valid),
        conv(
            [2, 3, 5, 4, 2],
            [1, 3, 2, 2, 5],
            1,
            Padding::Explicit([[0, 0], [1, 2], [1, 0]]),
        ),
    ];
    for g in &shapes {
        for pass in PASSES {
            for precision in ConvPrecision::ALL {
                let ran = check_pass(g, pass, precision, ConvTarget::new(8), &mut rng);
                assert_eq!(ran.kernel.precision, precision);
            }
        }
    }
}

#[test]
fn phases_that_no_tap_reaches_get_only_the_bias() {
    let mut rng = Rng::new(79);
    // 1x1x1 stride 2: backward data has 8 phases, 7 of them without taps (zero + bias),
    // on the f32 kernels and on the tensor cores.
    let odd = conv([1, 5, 4, 6, 3], [1, 1, 1, 3, 5], 2, Padding::Valid);
    let quad = conv([1, 5, 4, 6, 4], [1, 1, 1, 4, 8], 2, Padding::Valid);
    for precision in ConvPrecision::ALL {
        for g in [&odd, &quad] {
            for pass in PASSES {
                check_pass(g, pass, precision, ConvTarget::new(8), &mut rng);
            }
        }
    }
}

#[test]
fn heads_and_tiny_reductions_use_the_narrow_and_shallow_tiles() {
    let mut rng = Rng::new(73);
    // A 1x1x1 head with 3 outputs (its data gradient reduces over 3 channels), and a
    // 1-channel input under a 1x2x2 kernel (a forward reduction of 4).
    let head = conv([2, 5, 6, 7, 32], [1, 1, 1, 32, 3], 1, Padding::Same);
    let thin = conv([1, 6, 5, 4, 1], [1, 2, 2, 1, 12], 1, Padding::Same);
    let mut tiles = Vec::new();
    for g in [&head, &thin] {
        for pass in PASSES {
            tiles.push(
                check_pass(g, pass, ConvPrecision::F32, ConvTarget::new(8), &mut rng)
                    .kernel
                    .tile,
            );
        }
    }
    use ConvTile::*;
    assert_eq!(tiles, [Narrow, Shallow, Narrow, Shallow, Narrow, Wide]);
}

#[test]
fn transposed_convolutions_with_bias() {
    let mut rng = Rng::new(74);
    // k3 s2, cropping one voxel before and after, plus output padding: every phase has a
    // different number of taps and the last voxels are reached by none.
    let k3s2 = ConvTranspose3dSpec {
        stride: [2; 3],
        padding: [[1, 1], [1, 0], [0, 1]],
        output_padding: [1, 0, 1],
    };
    let cases = [
        transposed([2, 3, 4, 3, 8], [2, 2, 2, 4, 8], K2S2),
        transposed([1, 3, 3, 4, 6], [3, 3, 3, 5, 6], k3s2),
        transposed([1, 4, 3, 3, 8], [3, 3, 3, 12, 8], k3s2),
    ];
    for g in &cases {
        // The transposed forward is backward data (with the bias), its input gradient the
        // forward, its weight gradient backward weights.
        for pass in PASSES {
            for precision in ConvPrecision::ALL {
                check_pass(g, pass, precision, ConvTarget::new(8), &mut rng);
            }
        }
    }
}

#[test]
fn tensor_core_kernels_on_both_tiles() {
    let mut rng = Rng::new(75);
    let cases = [
        // The first layer's channels: 4 -> 32 (128 x 32 tiles).
        conv([1, 5, 6, 7, 4], [3, 3, 3, 4, 32], 1, Padding::Same),
        // Wider outputs, strided: 128 x 64 tiles, partial column tiles.
        conv([1, 7, 6, 5, 8], [3, 3, 3, 8, 40], 2, Padding::Same),
    ];
    let mut tiles = std::collections::HashSet::new();
    for g in &cases {
        for pass in PASSES {
            for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
                let ran = check_pass(g, pass, precision, ConvTarget::new(8), &mut rng);
                assert_eq!(ran.kernel.precision, precision);
                tiles.insert(ran.kernel.tile);
            }
        }
    }
    assert!(tiles.contains(&ConvTile::TcN32) && tiles.contains(&ConvTile::TcN64));
}

#[test]
fn split_reductions_sum_their_partials() {
    let mut rng = Rng::new(76);
    // Long reductions on a single tile: 540 (tap, channel) pairs for the forward, 576
    // voxels for the weight gradient.
    let deep = conv([1, 4, 4, 4, 20], [3, 3, 3, 20, 8], 1, Padding::Same);
    let wide = conv([1, 8, 8, 9, 4], [3, 3, 3, 4, 8], 1, Padding::Same);
    // Backward data over two stride phases with a split: (split, phase) share grid.z.
    let phased = conv_strided([1, 4, 3, 3, 8], [3, 3, 3, 8, 32], [2, 1, 1], Padding::Same);
    for precision in ConvPrecision::ALL {
        for (g, pass) in [
            (&deep, ConvPass::Forward),
            (&wide, ConvPass::BackwardWeight),
            (&phased, ConvPass::BackwardData),
        ] {
            let ran = check_pass(g, pass, precision, ConvTarget::new(64), &mut rng);
            assert!(ran.splits > 1, "{pass:?} {precision}: one split");
            assert_eq!(ran.kernel.precision, precision);
        }
    }
}

#[test]
fn random_geometries_match_the_cpu_backend() {
    let mut rng = Rng::new(77);
    for case in 0..8 {
        let mut pick = |lo: usize, hi: usize| lo + rng.below(hi - lo + 1);
        let kernel = [pick(1, 3), pick(1, 3), pick(1, 3)];
        let stride = [pick(1, 2), pick(1, 2), pick(1, 2)];
        let pads = [0, 1, 2].map(|a| [pick(0, kernel[a] - 1), pick(0, kernel[a] - 1)]);
        let input = [0, 1, 2].map(|a| pick(kernel[a], 6));
        // Half the cases with channels the tensor cores take.
        let quad = case % 2 == 0;
        let cin = if quad { 4 * pick(1, 3) } else { pick(1, 9) };
        let cout = if quad { 4 * pick(1, 10) } else { pick(1, 40) };
        let spec = Conv3dSpec {
            stride,
            padding: Padding::Explicit(pads),
        };
        let x = Shape::new(&[pick(1, 2), input[0], input[1], input[2], cin]);
        let w = Shape::new(&[kernel[0], kernel[1], kernel[2], cin, cout]);
        let g = ConvGeometry::conv3d(&x, &w, &spec).unwrap();
        let precision = ConvPrecision::ALL[case % 3];
        let target = [1, 8, 64][case % 3];
        for pass in PASSES {
            check_pass(&g, pass, precision, ConvTarget::new(target), &mut rng);
        }
    }
}

/// Which kernels the padded-channel cases run on.
#[derive(Clone, Copy, PartialEq)]
enum Kernels {
    MmaSync,
    /// wgmma on an H100's 132 SMs, where these small grids put 64-column tiles on the
    /// single-block wgmma tile (below one tile per SM).
    Wgmma,
    /// wgmma on a target of 2 SMs with the pair of 64-column blocks asked for: every
    /// 64-column result of more than one tile runs the pair.
    WgmmaPairs,
}

/// Every pass of geometries with channels the packs pad, at `precision`, on `kernels`,
/// until every (pass, tile) pair of the target has run.
fn padded_channels_every_kernel_shape_and_tile(
    precision: ConvPrecision,
    kernels: Kernels,
    rng: &mut Rng,
) {
    let cases = [
        // cin 4 (padded to 8 at BF16), cout 36, batch 2: 128 x 64 tiles and a partial one.
        conv([2, 5, 6, 7, 4], [3, 3, 3, 4, 36], 1, Padding::Same),
        // 1x1x1 to 130 outputs (three 64-wide tiles); its data gradient reduces over 136
        // (BF16) or 132 (TF32).
        conv([1, 6, 5, 7, 8], [1, 1, 1, 8, 130], 1, Padding::Same),
        // Anisotropic 3x1x1, 40 -> 72: 128-wide tiles over more than one step.
        conv([1, 5, 4, 6, 40], [3, 1, 1, 40, 72], 1, Padding::Same),
        // Strided 'same' with 40 channels in (steps cross taps) and 3 out.
        conv([1, 7, 6, 5, 40], [3, 3, 3, 40, 3], 2, Padding::Same),
        // 40 -> 24 over 210 voxels: a 64-column data gradient on two tiles over 27 taps of
        // 24 channels (the wgmma pair takes reductions of more than two steps).
        conv([1, 7, 6, 5, 40], [3, 3, 3, 40, 24], 1, Padding::Same),
        // 3 samples of 5 x 6 x 7: backward weights reduces over 630 voxels in 10-40 steps,
        // each step's voxels crossing rows, planes and samples (the loader advances its
        // voxel tables by a step instead of dividing).
        conv([3, 5, 6, 7, 8], [3, 3, 3, 8, 16], 1, Padding::Same),
        // 'valid', 12 -> 8, batch 2.
        conv([2, 6, 5, 7, 12], [3, 3, 3, 12, 8], 1, Padding::Valid),
        // The 2x2x2 stride-2 transposed conv of a decoder: 8 one-tap phases.
        transposed([2, 3, 4, 3, 8], [2, 2, 2, 36, 8], K2S2),
        // 72 channels in, 36 out: a 128-wide data gradient over padded output channels.
        conv([1, 4, 5, 3, 72], [1, 1, 2, 72, 36], 1, Padding::Same),
        // 1x1x1, 30 -> 20: both results into 32 columns over a reduction of one step.
        conv([1, 5, 4, 6, 30], [1, 1, 1, 30, 20], 1, Padding::Same),
        // 1x3x3, 12 -> 12: both results into 32 columns over 9 taps of 16 bf16 or 12 tf32
        // (3 or 4 wgmma steps), the 32-column passes that the plan puts on wgmma.
        conv([1, 5, 4, 6, 12], [1, 3, 3, 12, 12], 1, Padding::Same),
    ];
    let target = match kernels {
        Kernels::MmaSync => ConvTarget::new(8),
        Kernels::Wgmma => ConvTarget::new(528).with_wgmma(true),
        Kernels::WgmmaPairs => ConvTarget::new(8).with_wgmma(true).with_wgmma_pairs(true),
    };
    let mut ran_tiles = std::collections::HashSet::new();
    for g in &cases {
        for pass in PASSES {
            let ran = check_pass(g, pass, precision, target, rng);
            assert_eq!(ran.kernel.precision, precision);
            ran_tiles.insert((pass, ran.kernel.tile));
        }
    }
    let n64 = match kernels {
        Kernels::MmaSync => ConvTile::TcN64,
        Kernels::Wgmma => ConvTile::WgN64,
        Kernels::WgmmaPairs => ConvTile::WgN64Pair,
    };
    for pass in PASSES {
        let mn_major = pass == ConvPass::BackwardWeight;
        let tiles = match (kernels, mn_major, precision) {
            (Kernels::MmaSync, _, _) | (_, true, ConvPrecision::Tf32) => {
                [ConvTile::TcN32, ConvTile::TcN64, ConvTile::TcN128]
            }
            (_, true, _) => [ConvTile::TcN32, n64, ConvTile::WgN128],
            (_, false, _) => [ConvTile::WgN32, n64, ConvTile::WgN128],
        };
        for tile in tiles {
            assert!(
                ran_tiles.contains(&(pass, tile)),
                "{precision} {pass:?} {tile:?} not exercised"
            );
        }
    }
}

#[test]
fn tf32_kernels_on_padded_channels_every_kernel_shape_and_tile() {
    padded_channels_every_kernel_shape_and_tile(
        ConvPrecision::Tf32,
        Kernels::MmaSync,
        &mut Rng::new(82),
    );
}

#[test]
fn tf32_wgmma_kernels_on_padded_channels_every_kernel_shape_and_tile() {
    padded_channels_every_kernel_shape_and_tile(
        ConvPrecision::Tf32,
        Kernels::Wgmma,
        &mut Rng::new(84),
    );
}

#[test]
fn bf16_wgmma_kernels_on_padded_channels_every_kernel_shape_and_tile() {
    padded_channels_every_kernel_shape_and_tile(
        ConvPrecision::Bf16,
        Kernels::Wgmma,
        &mut Rng::new(83),
    );
}

#[test]
fn tf32_wgmma_pair_kernels_on_padded_channels_every_kernel_shape_and_tile() {
    padded_channels_every_kernel_shape_and_tile(
        ConvPrecision::Tf32,
        Kernels::WgmmaPairs,
        &mut Rng::new(86),
    );
}

#[test]
fn bf16_wgmma_pair_kernels_on_padded_channels_every_kernel_shape_and_tile() {
    padded_channels_every_kernel_shape_and_tile(
        ConvPrecision::Bf16,
        Kernels::WgmmaPairs,
        &mut Rng::new(85),
    );
}

/// The 256-row wgmma tile over more than one block of rows, the last one partial, so that
/// every warpgroup's rows are written: 72 -> 72 over 2 x 5 x 6 x 7 (420 rows forward and
/// backward data, 27 x 72 backward weights), and a strided 72 -> 120. Results of at most
/// 128 rows keep the 128-row tile.
fn wgmma_m256_tiles_over_several_row_blocks(precision: ConvPrecision, rng: &mut Rng) {
    let cases = [
        conv([2, 5, 6, 7, 72], [3, 3, 3, 72, 72], 1, Padding::Same),
        conv([2, 13, 12, 13, 72], [3, 3, 3, 72, 120], 2, Padding::Same),
    ];
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_m256(Reach::All);
    for g in &cases {
        for pass in PASSES {
            let plan = ConvPlan::new(g, pass, precision, target).unwrap();
            let on_m256 = pass != ConvPass::BackwardWeight || precision == ConvPrecision::Bf16;
            if on_m256 {
                assert_eq!(plan.kernel.tile, ConvTile::WgM256, "{pass:?} {g:?}");
                assert!(plan.dims.grid[0] >= 2, "{pass:?} {g:?}: {:?}", plan.dims);
            }
            check_pass(g, pass, precision, target, rng);
        }
    }
    let small = conv([1, 4, 5, 6, 72], [3, 3, 3, 72, 72], 1, Padding::Same);
    let plan = ConvPlan::new(&small, ConvPass::Forward, precision, target).unwrap();
    assert_eq!(plan.kernel.tile, ConvTile::WgN128, "120 rows");
}

/// Backward weights into 64 columns over a long reduction on several tiles, on wgmma
/// (mma.sync where `VOXSEG_WGMMA_N64_WEIGHTS=off` puts it): 27 x 24 rows (6 tiles) over
/// 1320 voxels (21 steps of 64).
#[test]
fn long_64_column_backward_weights_on_wgmma() {
    let g = conv([1, 11, 10, 12, 24], [3, 3, 3, 24, 40], 1, Padding::Same);
    let hopper = ConvTarget::new(528).with_wgmma(true);
    let tile = |target| {
        ConvPlan::new(&g, ConvPass::BackwardWeight, ConvPrecision::Bf16, target)
            .unwrap()
            .kernel
            .tile
    };
    assert_eq!(tile(hopper.with_wgmma_n64_weights(false)), ConvTile::TcN64);
    assert_eq!(tile(hopper), ConvTile::WgN64);
    check_pass(
        &g,
        ConvPass::BackwardWeight,
        ConvPrecision::Bf16,
        hopper,
        &mut Rng::new(91),
    );
}

/// The warp-specialized wgmma tiles on every pass: per case the tile of forward, backward
/// data and backward weights (None: not warp-specialized, a single-step reduction or
/// tf32's backward weights). A layer over several row blocks, the last one partial; a
/// strided one; 40 -> 64 channels on the 64-column tile; and a 1x1x1 one whose reductions
/// take 2 steps at bf16 (3 at tf32), fewer than the copying threads keep in flight. With
/// the 256-row tile also on, results of more than 128 rows take that tile.
fn wgmma_ws_tiles(precision: ConvPrecision, rng: &mut Rng) {
    use ConvTile::{WgWs128, WgWs64};
    let bf16 = precision == ConvPrecision::Bf16;
    let weights = |tile: ConvTile| bf16.then_some(tile);
    let cases = [
        (
            conv([2, 5, 6, 7, 72], [3, 3, 3, 72, 72], 1, Padding::Same),
            [Some(WgWs128), Some(WgWs128), weights(WgWs128)],
        ),
        (
            conv([2, 13, 12, 13, 72], [3, 3, 3, 72, 120], 2, Padding::Same),
            [Some(WgWs128), Some(WgWs128), weights(WgWs128)],
        ),
        (
            conv([2, 5, 6, 7, 40], [3, 3, 3, 40, 64], 1, Padding::Same),
            [Some(WgWs64), Some(WgWs64), weights(WgWs64)],
        ),
        (
            conv([1, 4, 5, 6, 72], [1, 1, 1, 72, 96], 1, Padding::Same),
            [Some(WgWs128), Some(WgWs128), weights(WgWs128)],
        ),
    ];
    let target = ConvTarget::new(528).with_wgmma(true).with_wgmma_ws(true);
    for (g, tiles) in &cases {
        for (pass, want) in PASSES.into_iter().zip(tiles) {
            let tile = ConvPlan::new(g, pass, precision, target)
                .unwrap()
                .kernel
                .tile;
            match want {
                Some(want) => assert_eq!(tile, *want, "{pass:?} {g:?}"),
                None => assert!(!matches!(tile, WgWs128 | WgWs64), "{pass:?} {g:?}"),
            }
            check_pass(g, pass, precision, target, rng);
        }
    }
    let both = target.with_wgmma_m256(Reach::All);
    let plan = ConvPlan::new(&cases[0].0, ConvPass::Forward, precision, both).unwrap();
    assert_eq!(plan.kernel.tile, ConvTile::WgM256);
}

/// The warp-specialized tiles with only the copies deferred (`emu::Deferred::Copies`): a
/// step published before its copies' wait would otherwise be read late enough to meet
/// them. Separate tests from the default deferral, so that the test threads share them.
fn wgmma_ws_tiles_with_copies_deferred(precision: ConvPrecision, seed: u64) {
    emu::set_deferred(emu::Deferred::Copies);
    wgmma_ws_tiles(precision, &mut Rng::new(seed));
    emu::set_deferred(emu::Deferred::ReadsAndCopies);
}

#[test]
fn bf16_wgmma_ws_tiles() {
    wgmma_ws_tiles(ConvPrecision::Bf16, &mut Rng::new(92));
}

#[test]
fn bf16_wgmma_ws_tiles_with_copies_deferred() {
    wgmma_ws_tiles_with_copies_deferred(ConvPrecision::Bf16, 92);
}

#[test]
fn tf32_wgmma_ws_tiles() {
    wgmma_ws_tiles(ConvPrecision::Tf32, &mut Rng::new(93));
}

#[test]
fn tf32_wgmma_ws_tiles_with_copies_deferred() {
    wgmma_ws_tiles_with_copies_deferred(ConvPrecision::Tf32, 93);
}

/// Runs `pass` of each case on the tensor memory accelerator's tiles at its target: the
/// plan takes the case's tile and matches the CPU (check_pass); the first case's reduction
/// is split.
fn check_tma_cases(
    cases: &[(ConvGeometry, ConvTarget, ConvTile)],
    pass: ConvPass,
    precision: ConvPrecision,
    rng: &mut Rng,
) {
    for (i, (g, target, tile)) in cases.iter().enumerate() {
        let plan = ConvPlan::new(g, pass, precision, *target).unwrap();
        assert_eq!(plan.kernel.tile, *tile, "{precision} {g:?}");
        assert!(plan.tma.is_some(), "{g:?}");
        let ran = check_pass(g, pass, precision, *target, rng);
        assert!(i > 0 || ran.splits > 1, "{precision} {g:?}: not split");
    }
}

/// bf16 backward weights on the tiles the tensor memory accelerator fills (`WgTma128`,
/// `WgTma64`): boxes that overhang the output (w 7 in boxes 8 wide), 'same' windows that
/// start outside x, a block of taps past the last (27 x 64 rows end half way through a
/// 128-row block), dy boxes that read past cout (72, 40 and 200 columns), a strided layer (x's
/// boxes taken every other voxel), a 'valid' one, a 1x1x1 one, a reduction split in two, and
/// a 2x2x2 transposed convolution (its backward weights a stride-2 convolution's).
/// Channels that do not pad to 64, and boxes that would overhang by more than a quarter,
/// keep the other kernels.
#[test]
fn bf16_wgmma_tma_backward_weights() {
    use ConvTile::{WgTma128, WgTma64};
    let mut rng = Rng::new(94);
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All);
    let cases = [
        (
            conv([2, 6, 8, 7, 64], [3, 3, 3, 64, 72], 1, Padding::Same),
            WgTma128,
            1,
        ),
        (
            conv([1, 8, 8, 16, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
            WgTma64,
            2,
        ),
        (
            conv([1, 8, 8, 8, 128], [3, 3, 3, 128, 40], 2, Padding::Same),
            WgTma64,
            1,
        ),
        (
            conv([1, 6, 10, 10, 64], [3, 3, 3, 64, 64], 1, Padding::Valid),
            WgTma64,
            1,
        ),
        (
            conv([2, 4, 8, 8, 64], [1, 1, 1, 64, 200], 1, Padding::Same),
            WgTma128,
            1,
        ),
        (
            transposed([1, 4, 4, 4, 72], [2, 2, 2, 64, 72], K2S2),
            WgTma128,
            1,
        ),
    ];
    for (g, tile, splits) in &cases {
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Bf16, target).unwrap();
        assert_eq!(plan.kernel.tile, *tile, "{g:?}");
        assert!(plan.tma.is_some(), "{g:?}");
        let ran = check_pass(
            g,
            ConvPass::BackwardWeight,
            ConvPrecision::Bf16,
            target,
            &mut rng,
        );
        assert_eq!(ran.splits, *splits, "{g:?}");
    }
    // With the 256-row tiles on, 128-column tiles of more than 128 rows take WgTma256;
    // 27 x 64 rows end three quarters of the way through the last 256-row block.
    let m256 = target.with_wgmma_m256(Reach::All);
    for (g, splits) in [(&cases[0].0, 1), (&cases[4].0, 1)] {
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Bf16, m256);
        let tile = plan.unwrap().kernel.tile;
        let want = if g.kernel_volume() > 1 {
            ConvTile::WgTma256
        } else {
            WgTma128
        };
        assert_eq!(tile, want, "{g:?}");
        let ran = check_pass(
            g,
            ConvPass::BackwardWeight,
            ConvPrecision::Bf16,
            m256,
            &mut rng,
        );
        assert_eq!(ran.splits, splits, "{g:?}");
    }
    // More shapes, each with the 128- and 256-row tiles: a split that starts inside the
    // second of three samples; 60 channels padded to 64 into 200 columns, strided; an
    // anisotropic even kernel, 'valid', strided; a 2x2x2 'same' kernel (padding after
    // only); stride 4.
    for g in [
        conv([3, 6, 8, 8, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
        conv([1, 8, 8, 16, 60], [3, 3, 3, 60, 200], 2, Padding::Same),
        conv([2, 3, 9, 16, 128], [1, 3, 2, 128, 96], 2, Padding::Valid),
        conv([1, 8, 8, 8, 64], [2, 2, 2, 64, 128], 1, Padding::Same),
        conv([2, 16, 16, 16, 64], [3, 3, 3, 64, 64], 4, Padding::Same),
    ] {
        for t in [target, m256] {
            let plan = ConvPlan::new(&g, ConvPass::BackwardWeight, ConvPrecision::Bf16, t);
            assert!(plan.unwrap().tma.is_some(), "{g:?}");
            check_pass(
                &g,
                ConvPass::BackwardWeight,
                ConvPrecision::Bf16,
                t,
                &mut rng,
            );
        }
    }
    let first = ConvPlan::new(
        &cases[0].0,
        ConvPass::BackwardWeight,
        ConvPrecision::Bf16,
        target,
    );
    let boxes = first.unwrap().tma.and_then(|t| t.boxes()).unwrap();
    assert!(boxes.padded_voxels(2) > 2 * 6 * 8 * 7, "{boxes:?} overhang");
    let other = |g: &ConvGeometry| {
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Bf16, target).unwrap();
        (plan.kernel.tile, plan.tma)
    };
    // 72 input channels pad to 72: a 64-row block would hold two taps.
    let (tile, tma) = other(&conv([2, 4, 8, 8, 72], [3, 3, 3, 72, 72], 1, Padding::Same));
    assert!(
        tma.is_none() && !matches!(tile, WgTma128 | WgTma64),
        "{tile:?}"
    );
    // 5 x 6 x 7 voxels: the least overhanging boxes (1 x 8 x 8) cover 320, 1.52x.
    let (tile, tma) = other(&conv([2, 5, 6, 7, 64], [3, 3, 3, 64, 64], 1, Padding::Same));
    assert!(
        tma.is_none() && !matches!(tile, WgTma128 | WgTma64),
        "{tile:?}"
    );
    // tf32's backward weights takes them only where `wgmma_tf32_weights` is on.
    let plan = ConvPlan::new(
        &cases[0].0,
        ConvPass::BackwardWeight,
        ConvPrecision::Tf32,
        target,
    );
    assert!(plan.unwrap().tma.is_none());
}

/// bf16 backward weights on 64-column blocks computed transposed (`WgTmaCols`, where
/// `wgmma_cols_weights` asks for it): 64 and 40 output channels (dy's box reading past
/// cout), 160 (three blocks of output channels, the last part-filled), 27 x 64 rows ending
/// in the seventh 256-row block (taps past the last), 192 input channels (a 256-row block
/// over two taps), stride 2, 'valid', a 1x1x1 kernel, a 2x2x2 transposed convolution, and
/// a split reduction. Without the switch the 128 x 64 tile stays.
#[test]
fn bf16_wgmma_tma_cols_backward_weights() {
    let mut rng = Rng::new(97);
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All)
        .with_wgmma_cols_weights(Reach::All);
    let cases = [
        conv([1, 8, 8, 16, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
        conv([1, 8, 8, 8, 128], [3, 3, 3, 128, 40], 2, Padding::Same),
        conv([1, 6, 10, 10, 64], [3, 3, 3, 64, 64], 1, Padding::Valid),
        conv([1, 4, 8, 8, 192], [3, 3, 3, 192, 48], 1, Padding::Same),
        conv([2, 4, 8, 8, 192], [1, 1, 1, 192, 64], 1, Padding::Same),
        transposed([1, 4, 4, 4, 64], [2, 2, 2, 64, 64], K2S2),
        conv([1, 4, 8, 8, 64], [3, 3, 3, 64, 160], 1, Padding::Same),
    ];
    let mut split = false;
    for g in &cases {
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Bf16, target).unwrap();
        assert_eq!(plan.kernel.tile, ConvTile::WgTmaCols, "{g:?}");
        assert!(plan.tma.is_some(), "{g:?}");
        let off = target.with_wgmma_cols_weights(Reach::Off);
        let plain = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Bf16, off);
        assert_eq!(plain.unwrap().kernel.tile, ConvTile::WgTma64, "{g:?}");
        let ran = check_pass(
            g,
            ConvPass::BackwardWeight,
            ConvPrecision::Bf16,
            target,
            &mut rng,
        );
        split |= ran.splits > 1;
    }
    assert!(split, "no case split its reduction");
}

/// tf32 backward weights on the tensor memory accelerator's tiles over channel-major packs
/// (`ConvTmaTiling::Grid`): 'same' 3x3x3 windows on odd sizes (the grid's border voxels,
/// rows crossing from one sample's grid to the next), a block of taps past the last (27 x
/// 64 rows end half way through a 128-row block), 128-row blocks over two taps' channels
/// (192 a tap), 64 columns (`WgTma64`) and dy's boxes past cout (72 and 200 columns), a
/// 'valid' layer, an anisotropic 1x3x3 kernel with 'same' padding on two axes only, a
/// 1x1x1 one, stride 2 (x split into 8 phases: 'same' on odd sizes, 'valid'), a 2x2x2
/// transposed convolution (its backward weights a stride-2 convolution's), and a
/// reduction split (the first case); then an anisotropic stride, a kernel smaller than its
/// stride, padding past the stride (5^3 at stride 2), more padding before than after, and
/// a 3x3x3 transposed convolution with output padding. x's channels in no whole 64-row
/// blocks, 32 columns, 64 columns with `wgmma_n64_weights` off, and the switch or the
/// tensor memory accelerator's tiles off keep the other kernels.
#[test]
fn tf32_wgmma_tma_grid_backward_weights() {
    use ConvTile::{WgTma128, WgTma256, WgTma64};
    let mut rng = Rng::new(95);
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_tf32_weights(Reach::All);
    let m256 = target.with_wgmma_m256(Reach::All);
    let same_odd = conv([2, 5, 6, 7, 64], [3, 3, 3, 64, 72], 1, Padding::Same);
    let pointwise = conv([2, 4, 5, 6, 64], [1, 1, 1, 64, 128], 1, Padding::Same);
    let cases = [
        (same_odd, target, WgTma128),
        (
            conv([1, 6, 5, 6, 192], [3, 3, 3, 192, 64], 1, Padding::Same),
            target,
            WgTma64,
        ),
        (
            conv([1, 5, 7, 9, 64], [3, 3, 3, 64, 200], 1, Padding::Valid),
            target,
            WgTma128,
        ),
        (
            conv([2, 3, 6, 5, 128], [1, 3, 3, 128, 64], 1, Padding::Same),
            target,
            WgTma64,
        ),
        (pointwise, target, WgTma128),
        (
            conv([2, 8, 7, 9, 64], [3, 3, 3, 64, 72], 2, Padding::Same),
            target,
            WgTma128,
        ),
        (
            conv([1, 9, 9, 10, 128], [3, 3, 3, 128, 64], 2, Padding::Valid),
            target,
            WgTma64,
        ),
        (
            transposed([2, 4, 3, 5, 64], [2, 2, 2, 64, 64], K2S2),
            target,
            WgTma64,
        ),
        (
            conv_strided(
                [1, 5, 8, 9, 64],
                [3, 3, 3, 64, 40],
                [1, 2, 2],
                Padding::Same,
            ),
            target,
            WgTma64,
        ),
        (
            conv_strided([2, 5, 6, 7, 64], [1, 1, 1, 64, 48], [2; 3], Padding::Same),
            target,
            WgTma64,
        ),
        (
            conv_strided([1, 9, 8, 7, 64], [5, 5, 5, 64, 40], [2; 3], Padding::Same),
            target,
            WgTma64,
        ),
        (
            conv_strided(
                [1, 5, 6, 7, 64],
                [3, 3, 3, 64, 40],
                [1; 3],
                Padding::Explicit([[2, 0], [1, 1], [0, 2]]),
            ),
            target,
            WgTma64,
        ),
        (
            transposed([1, 3, 4, 3, 40], [3, 3, 3, 64, 40], K3S2),
            target,
            WgTma64,
        ),
        // 256 x 128 where the 256-row tiles are asked for: 27 x 64 rows end three quarters
        // of the way through the last block; 1 x 1 x 1 x 64 rows fit none and keep 128.
        (same_odd, m256, WgTma256),
        (pointwise, m256, WgTma128),
    ];
    check_tma_cases(
        &cases,
        ConvPass::BackwardWeight,
        ConvPrecision::Tf32,
        &mut rng,
    );
    let grid = |g: &ConvGeometry, t: ConvTarget| {
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Tf32, t).unwrap();
        match plan.tma {
            Some(ConvTmaTiling::Grid(grid)) => Some(grid),
            _ => None,
        }
    };
    for (g, t, _) in &cases {
        assert!(grid(g, *t).is_some(), "{g:?}");
    }
    // The first case's grid: 7 x 8 x 9 voxels a sample, rows of whole chunks (so 12 along
    // w), two samples; x packed three times, for the taps' offsets 0, 1 and 2 along w.
    let first = grid(&same_odd, target).unwrap();
    assert_eq!(
        (first.dims, first.voxels, first.row_lens, first.x_shifts),
        ([7, 8, 12], 1344, [1344; 2], 3)
    );
    // Stride 2, 'same' on 8 x 7 x 9: out 4 x 4 x 5, taps reading phase grid offsets -1..0,
    // so grids of 5 x 5 x 6 (8 along w); x's row holds the 8 phases', packed twice.
    let strided = grid(&cases[5].0, target).unwrap();
    assert_eq!(
        (
            strided.dims,
            strided.voxels,
            strided.row_lens,
            strided.x_shifts
        ),
        ([5, 5, 8], 400, [8 * 400, 400], 2)
    );
    // The transposed 2x2x2's grid is its result's (8 along w): no border, one copy of x.
    let transposed_grid = grid(&cases[7].0, target).unwrap();
    assert_eq!(
        (transposed_grid.dims, transposed_grid.x_shifts),
        ([4, 3, 8], 1)
    );
    let same = |x: [usize; 5], w: [usize; 5], stride| conv(x, w, stride, Padding::Same);
    for (g, t) in [
        (same([1, 6, 6, 6, 96], [3, 3, 3, 96, 64], 1), target),
        (same([1, 6, 6, 6, 64], [3, 3, 3, 64, 32], 1), target),
        (
            same([1, 6, 6, 6, 64], [3, 3, 3, 64, 64], 1),
            target.with_wgmma_tf32_weights(Reach::Off),
        ),
        (
            same([1, 6, 6, 6, 64], [3, 3, 3, 64, 64], 1),
            target.with_wgmma_tma(Reach::Off),
        ),
        (
            same([1, 6, 6, 6, 64], [3, 3, 3, 64, 64], 1),
            target.with_wgmma_n64_weights(false),
        ),
    ] {
        assert_eq!(grid(&g, t), None, "{g:?}");
    }
}

/// tf32 backward weights over channel-major packs into 64-column blocks computed transposed
/// (`WgTmaCols`, where `wgmma_cols_weights` asks for it): dy's box of 64 output channels is
/// A, four blocks of x's taps B. A 1x1x1 kernel over a long reduction (split), 192 input
/// channels (a 256-row block over two taps; taps past the last), an anisotropic kernel,
/// stride 2 'valid', a transposed 2x2x2 convolution, 40 and 48 output channels (dy's box
/// past cout) at an anisotropic stride, 160 (three blocks of output channels, the last
/// part-filled), a 1x1x1 kernel at stride 2 and a 5^3 one, explicit padding, a 3x3x3
/// transposed convolution with output padding.
#[test]
fn tf32_wgmma_tma_grid_cols_backward_weights() {
    let mut rng = Rng::new(102);
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_tf32_weights(Reach::All)
        .with_wgmma_cols_weights(Reach::All);
    let geometries = [
        conv([2, 8, 8, 16, 64], [1, 1, 1, 64, 64], 1, Padding::Same),
        conv([1, 6, 5, 6, 192], [3, 3, 3, 192, 64], 1, Padding::Same),
        conv([2, 3, 6, 5, 128], [1, 3, 3, 128, 64], 1, Padding::Same),
        conv([1, 9, 9, 10, 128], [3, 3, 3, 128, 64], 2, Padding::Valid),
        transposed([2, 4, 3, 5, 64], [2, 2, 2, 64, 64], K2S2),
        conv_strided(
            [1, 5, 8, 9, 64],
            [3, 3, 3, 64, 40],
            [1, 2, 2],
            Padding::Same,
        ),
        conv([1, 6, 5, 6, 64], [3, 3, 3, 64, 160], 1, Padding::Same),
        conv_strided([2, 5, 6, 7, 64], [1, 1, 1, 64, 48], [2; 3], Padding::Same),
        conv_strided([1, 9, 8, 7, 64], [5, 5, 5, 64, 40], [2; 3], Padding::Same),
        conv_strided(
            [1, 5, 6, 7, 64],
            [3, 3, 3, 64, 40],
            [1; 3],
            Padding::Explicit([[2, 0], [1, 1], [0, 2]]),
        ),
        transposed([1, 3, 4, 3, 40], [3, 3, 3, 64, 40], K3S2),
    ];
    let cases: Vec<_> = geometries
        .into_iter()
        .map(|g| (g, target, ConvTile::WgTmaCols))
        .collect();
    check_tma_cases(
        &cases,
        ConvPass::BackwardWeight,
        ConvPrecision::Tf32,
        &mut rng,
    );
    let off = target.with_wgmma_cols_weights(Reach::Off);
    let plan = ConvPlan::new(
        &cases[0].0,
        ConvPass::BackwardWeight,
        ConvPrecision::Tf32,
        off,
    );
    assert_eq!(plan.unwrap().kernel.tile, ConvTile::WgTma64);
}

/// The forward on the tiles the tensor memory accelerator fills: a block's rows are a box
/// of output voxels (128; 256 on `WgTma256`), overhanging the output (w 7 in boxes 8 wide)
/// or not; 'same' windows that start outside x, a strided layer, a 'valid' one, a 1x1x1
/// one; weight boxes that read past cout (72, 40, 200 columns), a reduction split in three
/// (the bias added once). Input channels that do not pad to a row of the box keep the
/// other kernels.
fn wgmma_tma_forward(precision: ConvPrecision, rng: &mut Rng) {
    use ConvTile::{WgTma128, WgTma256, WgTma64};
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All);
    let m256 = target.with_wgmma_m256(Reach::All);
    let cases = [
        (
            conv([2, 6, 8, 7, 64], [3, 3, 3, 64, 72], 1, Padding::Same),
            target,
            WgTma128,
        ),
        (
            conv([1, 16, 16, 16, 64], [3, 3, 3, 64, 40], 2, Padding::Same),
            target,
            WgTma64,
        ),
        (
            conv([1, 6, 10, 10, 64], [3, 3, 3, 64, 64], 1, Padding::Valid),
            target,
            WgTma64,
        ),
        (
            conv([2, 4, 8, 8, 64], [1, 1, 1, 64, 200], 1, Padding::Same),
            target,
            WgTma128,
        ),
        (
            conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 72], 1, Padding::Same),
            m256,
            WgTma256,
        ),
        // An even kernel, 'same' (padding after only).
        (
            conv([1, 8, 8, 16, 64], [2, 2, 2, 64, 64], 1, Padding::Same),
            target,
            WgTma64,
        ),
        // An anisotropic kernel, 'valid': 8 x 14 x 15 voxels in boxes of 1 x 8 x 16.
        (
            conv([1, 8, 16, 16, 128], [1, 3, 2, 128, 72], 1, Padding::Valid),
            target,
            WgTma128,
        ),
        // Boxes of 1 x 4 x 32: rows along w and h of different lengths.
        (
            conv([1, 4, 4, 32, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
            target,
            WgTma64,
        ),
    ];
    check_tma_cases(&cases, ConvPass::Forward, precision, rng);
    let boxes = ConvPlan::new(&cases[0].0, ConvPass::Forward, precision, target)
        .unwrap()
        .tma
        .and_then(|t| t.boxes())
        .unwrap();
    assert!(boxes.padded_voxels(2) > 2 * 6 * 8 * 7, "{boxes:?} overhang");
    // 40 input channels pad to 40: a step of the box would hold two taps.
    let g = conv([2, 6, 8, 8, 40], [3, 3, 3, 40, 72], 1, Padding::Same);
    let plan = ConvPlan::new(&g, ConvPass::Forward, precision, target).unwrap();
    assert!(plan.tma.is_none(), "{:?}", plan.kernel);
}

/// Backward data on the tiles the tensor memory accelerator fills: a block's rows are a
/// box of one stride phase's dx voxels (every voxel at stride 1), A dy's box at the voxels
/// plus the phase's offset and tap ('same' windows past both ends of dy, 'valid' ones that
/// start before it, an even kernel's padding after only), boxes that overhang dx (w 7 in
/// boxes 8 wide), weight boxes past cin (72, 200 columns), anisotropic and 1x1x1 kernels,
/// the 256-row tile, a reduction split; at stride 2, phases of one and two taps per axis,
/// phase grids of different sizes (an odd depth, whose smaller phases leave the last
/// box of the largest one's grid to store nothing), phases that no tap reaches (a 1x1x1
/// kernel: dx is 0 there), an anisotropic stride and a transposed 2x2x2 convolution's
/// forward (a tap per phase), the first split (its one-tap phase's second slice empty).
/// Reduction channels that do not fill a row keep the other kernels, and so do phase grids
/// that boxes would overhang by more than a quarter.
fn wgmma_tma_backward_data(precision: ConvPrecision, rng: &mut Rng) {
    use ConvTile::{WgTma128, WgTma256, WgTma64};
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All);
    let m256 = target.with_wgmma_m256(Reach::All);
    let pass = ConvPass::BackwardData;
    let anisotropic = conv_strided(
        [1, 8, 16, 16, 72],
        [3, 3, 3, 72, 64],
        [1, 2, 2],
        Padding::Same,
    );
    let strided = [
        (
            conv([1, 15, 16, 16, 64], [3, 3, 3, 64, 128], 2, Padding::Same),
            target,
            WgTma64,
        ),
        (
            conv([1, 16, 16, 16, 64], [1, 1, 1, 64, 64], 2, Padding::Valid),
            target,
            WgTma64,
        ),
        (anisotropic, target, WgTma128),
        (
            transposed([1, 8, 8, 8, 128], [2, 2, 2, 64, 128], K2S2),
            target,
            WgTma64,
        ),
    ];
    check_tma_cases(&strided, pass, precision, rng);
    let cases = [
        (
            conv([2, 6, 8, 7, 72], [3, 3, 3, 72, 64], 1, Padding::Same),
            target,
            WgTma128,
        ),
        (
            conv([1, 8, 8, 16, 64], [3, 3, 3, 64, 64], 1, Padding::Valid),
            target,
            WgTma64,
        ),
        (
            conv([1, 8, 8, 16, 64], [2, 2, 2, 64, 64], 1, Padding::Same),
            target,
            WgTma64,
        ),
        (
            conv([1, 8, 16, 16, 72], [1, 3, 2, 72, 64], 1, Padding::Valid),
            target,
            WgTma128,
        ),
        (
            conv([2, 4, 8, 8, 200], [1, 1, 1, 200, 64], 1, Padding::Same),
            target,
            WgTma128,
        ),
        (
            conv([1, 8, 8, 8, 72], [3, 3, 3, 72, 64], 1, Padding::Same),
            m256,
            WgTma256,
        ),
    ];
    check_tma_cases(&cases, pass, precision, rng);
    let boxes = ConvPlan::new(&cases[0].0, pass, precision, target)
        .unwrap()
        .tma
        .and_then(|t| t.boxes())
        .unwrap();
    assert!(boxes.padded_voxels(2) > 2 * 6 * 8 * 7, "{boxes:?} overhang");
    for g in [
        conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 64], 2, Padding::Same),
        conv([2, 6, 8, 8, 64], [3, 3, 3, 64, 40], 1, Padding::Same),
    ] {
        let plan = ConvPlan::new(&g, pass, precision, target).unwrap();
        assert!(plan.tma.is_none(), "{g:?}: {:?}", plan.kernel);
    }
}

/// bf16 forward and backward data whose reduction channels fill half a 128-byte row (32, or
/// 96: three boxes a tap) on the tiles of two 64-byte-swizzled boxes a step (`WgTma128Sw64`,
/// `WgTma64Sw64`): 27 taps (the last step's second boxes past the window: zeros), splits,
/// a strided layer, an even kernel, stride phases of one to eight taps (backward data), a
/// transposed 2x2x2 forward (one tap a phase). tf32 rows of 32 channels are whole; 16 keep
/// the other kernels.
#[test]
fn bf16_wgmma_tma_half_rows() {
    use ConvTile::{WgTma128Sw64, WgTma64Sw64};
    let mut rng = Rng::new(99);
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All);
    let forward = [
        (
            conv([2, 6, 8, 7, 96], [3, 3, 3, 96, 72], 1, Padding::Same),
            target,
            WgTma128Sw64,
        ),
        (
            conv([2, 6, 8, 7, 32], [3, 3, 3, 32, 72], 1, Padding::Same),
            target,
            WgTma128Sw64,
        ),
        (
            conv([1, 16, 16, 16, 32], [3, 3, 3, 32, 64], 2, Padding::Same),
            target,
            WgTma64Sw64,
        ),
        (
            conv([1, 8, 8, 16, 32], [2, 2, 2, 32, 64], 1, Padding::Same),
            target,
            WgTma64Sw64,
        ),
    ];
    check_tma_cases(&forward, ConvPass::Forward, ConvPrecision::Bf16, &mut rng);
    let data = [
        (
            conv([2, 6, 8, 7, 72], [3, 3, 3, 72, 96], 1, Padding::Same),
            target,
            WgTma128Sw64,
        ),
        (
            conv([2, 6, 8, 7, 72], [3, 3, 3, 72, 32], 1, Padding::Same),
            target,
            WgTma128Sw64,
        ),
        (
            conv([2, 8, 8, 8, 64], [3, 3, 3, 64, 32], 1, Padding::Same),
            target,
            WgTma64Sw64,
        ),
        (
            conv([1, 15, 16, 16, 64], [3, 3, 3, 64, 32], 2, Padding::Same),
            target,
            WgTma64Sw64,
        ),
        (
            transposed([1, 8, 8, 8, 32], [2, 2, 2, 64, 32], K2S2),
            target,
            WgTma64Sw64,
        ),
    ];
    check_tma_cases(&data, ConvPass::BackwardData, ConvPrecision::Bf16, &mut rng);
    let tf32 = |cin: usize| {
        let g = conv([1, 8, 8, 8, cin], [3, 3, 3, cin, 64], 1, Padding::Same);
        ConvPlan::new(&g, ConvPass::Forward, ConvPrecision::Tf32, target).unwrap()
    };
    assert_eq!(tf32(32).kernel.tile, ConvTile::WgTma64);
    assert!(tf32(16).tma.is_none(), "{:?}", tf32(16).kernel);
}

/// Forward and backward data into 64 columns computed transposed (`WgTmaCols`; at bf16 over
/// half rows `WgTmaColsSw64`, where `wgmma_cols_gather` asks for it): a block's columns are
/// one box of 256 voxels, its rows 64 result channels (40: the weights' box past the last
/// row, the store past the channels; 160 and 192: blocks of them). Forward: boxes that
/// overhang the output (w 7 in 8), 'same' and 'valid' windows, strided, an even kernel,
/// rows of 32 along w, the bias added once over a split reduction. Backward data: a strided
/// layer's phases (an odd depth, phase grids of two sizes), phases no tap reaches (a 1x1x1
/// kernel at stride 2), a transposed 2x2x2 convolution's forward (the decoder's
/// up-convolution). Without the switch the 128 x 64 tiles stay.
fn wgmma_tma_cols_gather(precision: ConvPrecision, rng: &mut Rng) {
    use ConvTile::{WgTmaCols, WgTmaColsSw64};
    let target = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All)
        .with_wgmma_cols_gather(Reach::All);
    let bf16 = precision == ConvPrecision::Bf16;
    let case = |g, tile| (g, target, tile);
    let mut forward = vec![
        case(
            conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([2, 4, 8, 7, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([1, 16, 16, 16, 64], [3, 3, 3, 64, 40], 2, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([1, 6, 10, 10, 64], [3, 3, 3, 64, 64], 1, Padding::Valid),
            WgTmaCols,
        ),
        case(
            conv([1, 8, 8, 16, 64], [2, 2, 2, 64, 64], 1, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([1, 4, 4, 32, 128], [3, 3, 3, 128, 64], 1, Padding::Same),
            WgTmaCols,
        ),
        // Three blocks of 64 result channels.
        case(
            conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 192], 1, Padding::Same),
            WgTmaCols,
        ),
    ];
    let mut data = vec![
        case(
            conv([1, 15, 16, 16, 64], [3, 3, 3, 64, 128], 2, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([1, 8, 8, 16, 40], [3, 3, 3, 40, 64], 1, Padding::Same),
            WgTmaCols,
        ),
        case(
            conv([1, 16, 16, 16, 64], [1, 1, 1, 64, 64], 2, Padding::Valid),
            WgTmaCols,
        ),
        case(
            transposed([1, 8, 8, 8, 128], [2, 2, 2, 64, 128], K2S2),
            WgTmaCols,
        ),
        // Three blocks of result channels, the last part-filled.
        case(
            conv([1, 8, 8, 8, 160], [3, 3, 3, 160, 64], 1, Padding::Same),
            WgTmaCols,
        ),
    ];
    // Reductions of 32 channels a tap: half rows at bf16, whole ones at tf32.
    let half = if bf16 { WgTmaColsSw64 } else { WgTmaCols };
    forward.push(case(
        conv([1, 8, 8, 8, 32], [3, 3, 3, 32, 64], 1, Padding::Same),
        half,
    ));
    forward.push(case(
        conv([1, 16, 16, 16, 32], [3, 3, 3, 32, 64], 2, Padding::Same),
        half,
    ));
    data.push(case(
        conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 32], 1, Padding::Same),
        half,
    ));
    data.push(case(
        transposed([1, 8, 8, 8, 32], [2, 2, 2, 64, 32], K2S2),
        half,
    ));
    check_tma_cases(&forward, ConvPass::Forward, precision, rng);
    check_tma_cases(&data, ConvPass::BackwardData, precision, rng);
    let off = target.with_wgmma_cols_gather(Reach::Off);
    for (g, pass) in [
        (&forward[0].0, ConvPass::Forward),
        (&data[1].0, ConvPass::BackwardData),
    ] {
        let plan = ConvPlan::new(g, pass, precision, off).unwrap();
        assert_eq!(plan.kernel.tile, ConvTile::WgTma64, "{pass:?} {g:?}");
    }
}

/// The transposed tiles' forward and backward data run persistently
/// (`ConvTarget::wgmma_persist`) by a device of two SMs: each of the two blocks loops over
/// many tiles, its ring carried from tile to tile. Forward: boxes that overhang the output,
/// a strided layer into 40 channels, three blocks of result channels, 32 channels a tap
/// (bf16: two half-row boxes a step). Backward data: a strided layer's phases (grids of two
/// sizes), one whose boxes of the larger phases' grid lie past the smaller's along d (9 at
/// stride 2: phase grids of 5 and 4 planes; those tiles are skipped on both sides), phases
/// no tap reaches (bias only), a transposed 2x2x2 convolution's forward, three blocks of
/// result channels, 32 channels.
fn wgmma_tma_cols_persistent(precision: ConvPrecision, rng: &mut Rng) {
    let target = ConvTarget::new(8)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All)
        .with_wgmma_cols_gather(Reach::All)
        .with_wgmma_persist(true);
    let forward = [
        conv([2, 8, 8, 7, 64], [3, 3, 3, 64, 64], 1, Padding::Same),
        conv([1, 32, 16, 16, 64], [3, 3, 3, 64, 40], 2, Padding::Same),
        conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 192], 1, Padding::Same),
        conv([1, 32, 16, 16, 32], [3, 3, 3, 32, 64], 2, Padding::Same),
    ];
    let data = [
        conv([1, 15, 16, 16, 64], [3, 3, 3, 64, 128], 2, Padding::Same),
        conv([1, 9, 32, 32, 64], [3, 3, 3, 64, 64], 2, Padding::Same),
        conv([1, 16, 16, 16, 64], [1, 1, 1, 64, 64], 2, Padding::Valid),
        transposed([1, 8, 8, 8, 128], [2, 2, 2, 64, 128], K2S2),
        conv([1, 8, 8, 8, 160], [3, 3, 3, 160, 64], 1, Padding::Same),
        conv([1, 16, 8, 8, 64], [3, 3, 3, 64, 32], 1, Padding::Same),
    ];
    let mut ran = std::collections::HashSet::new();
    for (pass, cases) in [
        (ConvPass::Forward, &forward[..]),
        (ConvPass::BackwardData, &data[..]),
    ] {
        for g in cases {
            let plan = ConvPlan::new(g, pass, precision, target).unwrap();
            let as_grid = ConvPlan::new(g, pass, precision, target.with_wgmma_persist(false));
            let tiles: u32 = as_grid.unwrap().dims.grid.iter().product();
            assert!(
                matches!(
                    plan.kernel.tile,
                    ConvTile::WgTmaColsLoop | ConvTile::WgTmaColsSw64Loop
                ),
                "{precision} {pass:?} {g:?}: {:?}",
                plan.kernel.tile
            );
            assert_eq!(plan.dims.grid, [2, 1, 1], "{pass:?} {g:?}");
            assert!(tiles >= 4, "{pass:?} {g:?}: {tiles} tiles for two blocks");
            let got = check_pass(g, pass, precision, target, rng);
            ran.insert(got.kernel.tile);
        }
    }
    let half_rows = precision == ConvPrecision::Bf16;
    assert_eq!(
        ran.contains(&ConvTile::WgTmaColsSw64Loop),
        half_rows,
        "{ran:?}"
    );
}

#[test]
fn bf16_wgmma_tma_cols_persistent() {
    wgmma_tma_cols_persistent(ConvPrecision::Bf16, &mut Rng::new(102));
}

#[test]
fn tf32_wgmma_tma_cols_persistent() {
    wgmma_tma_cols_persistent(ConvPrecision::Tf32, &mut Rng::new(103));
}

#[test]
fn bf16_wgmma_tma_cols_gather() {
    wgmma_tma_cols_gather(ConvPrecision::Bf16, &mut Rng::new(100));
}

#[test]
fn tf32_wgmma_tma_cols_gather() {
    wgmma_tma_cols_gather(ConvPrecision::Tf32, &mut Rng::new(101));
}

#[test]
fn bf16_wgmma_tma_backward_data() {
    wgmma_tma_backward_data(ConvPrecision::Bf16, &mut Rng::new(97));
}

#[test]
fn tf32_wgmma_tma_backward_data() {
    wgmma_tma_backward_data(ConvPrecision::Tf32, &mut Rng::new(98));
}

#[test]
fn bf16_wgmma_tma_forward() {
    wgmma_tma_forward(ConvPrecision::Bf16, &mut Rng::new(95));
}

#[test]
fn tf32_wgmma_tma_forward() {
    wgmma_tma_forward(ConvPrecision::Tf32, &mut Rng::new(96));
}

#[test]
fn bf16_wgmma_m256_tiles_over_several_row_blocks() {
    wgmma_m256_tiles_over_several_row_blocks(ConvPrecision::Bf16, &mut Rng::new(89));
}

#[test]
fn tf32_wgmma_m256_tiles_over_several_row_blocks() {
    wgmma_m256_tiles_over_several_row_blocks(ConvPrecision::Tf32, &mut Rng::new(90));
}

#[test]
fn bf16_kernels_on_padded_channels_every_kernel_shape_and_tile() {
    padded_channels_every_kernel_shape_and_tile(
        ConvPrecision::Bf16,
        Kernels::MmaSync,
        &mut Rng::new(81),
    );
}

/// The halo kernels (kernels/conv3d_halo.cu) on every tile of every pass: 'same', 'valid'
/// and explicit windows, anisotropic and even kernels (k_w of 2 and 3; at 1 the gathering
/// kernels keep the pass), a cropping transposed convolution, channel counts that end a
/// step or a channel block part way, batches whose blocks end inside a sample.
fn halo_kernels_on_every_tile(precision: ConvPrecision, rng: &mut Rng) {
    let cases = [
        // 12 -> 36: 64 columns forward, 32 in backward data; one plane per sample.
        conv([2, 1, 21, 23, 12], [3, 3, 3, 12, 36], 1, Padding::Same),
        // 'valid', 16 -> 72: 128 columns forward; backward data borders dy by 2.
        conv([1, 3, 24, 26, 16], [3, 3, 3, 16, 72], 1, Padding::Valid),
        // 1x3x3, 72 -> 16: 128 columns in backward data, 72 channels per tap forward.
        conv([2, 1, 22, 22, 72], [1, 3, 3, 72, 16], 1, Padding::Same),
        // 1x3x3, 40 -> 64: steps that end part way through a tap's channels.
        conv([1, 2, 20, 30, 40], [1, 3, 3, 40, 64], 1, Padding::Same),
        // 2x2x2 'same': the window's padding is all after.
        conv([1, 3, 24, 24, 16], [2, 2, 2, 16, 20], 1, Padding::Same),
        // Explicit padding, asymmetric and past k - 1 before d: backward data crops dy's
        // first plane off its bordered volume.
        conv(
            [1, 2, 22, 22, 16],
            [3, 3, 3, 16, 16],
            1,
            Padding::Explicit([[3, 0], [0, 2], [2, 1]]),
        ),
        // A stride-1 transposed convolution that crops 3 voxels off each end along d: its
        // forward is backward data whose dy border is -1 there.
        transposed(
            [1, 8, 24, 24, 16],
            [3, 3, 3, 16, 16],
            ConvTranspose3dSpec {
                stride: [1; 3],
                padding: [[3, 3], [1, 1], [1, 1]],
                output_padding: [0; 3],
            },
        ),
    ];
    let target = ConvTarget::new(8).with_halo(Reach::All);
    // Nothing to reuse along w: a 3x3x1 window keeps the gathering kernels.
    let narrow = conv([1, 3, 20, 24, 16], [3, 3, 1, 16, 24], 1, Padding::Same);
    for pass in PASSES {
        let plan = ConvPlan::new(&narrow, pass, precision, target).unwrap();
        assert!(!plan.kernel.tile.is_halo(), "{pass:?} {:?}", plan.kernel);
    }
    let mut ran_tiles = std::collections::HashSet::new();
    for g in &cases {
        for pass in [ConvPass::Forward, ConvPass::BackwardData] {
            let ran = check_pass(g, pass, precision, target, rng);
            assert!(
                ran.kernel.tile.is_halo(),
                "{pass:?} {g:?} ran {:?}",
                ran.kernel
            );
            ran_tiles.insert((pass, ran.kernel.tile));
        }
    }
    // Backward weights reduces over the whole bordered volumes, so its cases keep the
    // borders small with windows of 1 along some axes.
    let weight_cases = [
        // 1x1x3, 40 -> 36: 64 channels per tap, 64 columns.
        conv([2, 2, 3, 12, 40], [1, 1, 3, 40, 36], 1, Padding::Same),
        // 1x3x3 'valid', 16 -> 20: 32 x 32, a split reduction.
        conv([1, 1, 24, 24, 16], [1, 3, 3, 16, 20], 1, Padding::Valid),
        // 72 -> 128: two channel blocks, the second part zeros; 128 columns.
        conv([1, 1, 22, 22, 72], [1, 3, 3, 72, 128], 1, Padding::Same),
        // 48 -> 24: 64 channels per tap into 32 columns.
        conv([1, 2, 4, 12, 48], [1, 1, 3, 48, 24], 1, Padding::Same),
        // 1x1x2 'same': two taps along w, the third warp row idle.
        conv([1, 2, 3, 15, 16], [1, 1, 2, 16, 16], 1, Padding::Same),
        // 3x1x3: tap rows along d.
        conv([1, 22, 1, 22, 16], [3, 1, 3, 16, 8], 1, Padding::Same),
        // 1x3x3 with explicit padding past k - 1 before h and all after w.
        conv(
            [1, 2, 22, 22, 16],
            [1, 3, 3, 16, 16],
            1,
            Padding::Explicit([[0, 0], [3, 0], [0, 2]]),
        ),
    ];
    let mut ran_splits = false;
    for g in &weight_cases {
        let ran = check_pass(g, ConvPass::BackwardWeight, precision, target, rng);
        assert!(ran.kernel.tile.is_halo(), "{g:?} ran {:?}", ran.kernel);
        ran_splits |= ran.splits > 1;
        ran_tiles.insert((ConvPass::BackwardWeight, ran.kernel.tile));
    }
    let expected = [
        (ConvPass::Forward, ConvTile::HaloN32),
        (ConvPass::Forward, ConvTile::HaloN64),
        (ConvPass::Forward, ConvTile::HaloN128),
        (ConvPass::BackwardData, ConvTile::HaloN32),
        (ConvPass::BackwardData, ConvTile::HaloN64),
        (ConvPass::BackwardData, ConvTile::HaloN128),
        (ConvPass::BackwardWeight, ConvTile::HaloWeight32x32),
        (ConvPass::BackwardWeight, ConvTile::HaloWeight64x32),
        (ConvPass::BackwardWeight, ConvTile::HaloWeight64x64),
        (ConvPass::BackwardWeight, ConvTile::HaloWeight64x128),
    ];
    for (pass, tile) in expected {
        assert!(
            ran_tiles.contains(&(pass, tile)),
            "{precision} {pass:?} {tile:?} not exercised"
        );
    }
    assert!(ran_splits, "no split backward-weights reduction");
}

#[test]
fn bf16_halo_kernels_on_every_tile() {
    halo_kernels_on_every_tile(ConvPrecision::Bf16, &mut Rng::new(87));
}

#[test]
fn tf32_halo_kernels_on_every_tile() {
    halo_kernels_on_every_tile(ConvPrecision::Tf32, &mut Rng::new(88));
}

/// Transposed convolutions whose kernel equals their stride (k x k x k at stride k, the
/// anisotropic 1x2x2 at 1x2x2), as the phase kernel's cases need them.
fn transposed_k_eq_s(x: [usize; 5], w: [usize; 5], stride: [usize; 3]) -> ConvGeometry {
    let spec = ConvTranspose3dSpec {
        stride,
        padding: [[0, 0]; 3],
        output_padding: [0; 3],
    };
    transposed(x, w, spec)
}

/// The phase kernel (kernels/conv3d_phase.cu) on backward data whose taps do not overlap:
/// transposed 2x2x2 stride-2 forwards (the U-Net's up-convolutions) and a 1x2x2 one, a
/// convolution's 3^3 stride-3 backward data; dy channels that end a step or a chunk part
/// way, up to the most a block keeps; input channels that end a 64-column block part way or
/// fill two; rows that end a block part way; shares of up to 5 tiles, none empty, and a
/// grid given more shares than tiles (the last ones empty).
fn phase_kernel_on_taps_that_do_not_overlap(precision: ConvPrecision, rng: &mut Rng) {
    // The most dy channels a block keeps: 256 bytes a row.
    let widest = 256 / precision.packed_bytes().unwrap();
    let cases = [
        // 12 -> 20: one step, part of it padding; 210 rows, two row blocks.
        transposed_k_eq_s([2, 5, 3, 7, 12], [2, 2, 2, 20, 12], [2; 3]),
        // 40 -> 72: steps that end part way; two column blocks, the second 8 wide.
        transposed_k_eq_s([1, 4, 6, 5, 40], [2, 2, 2, 72, 40], [2; 3]),
        // 1x2x2 at 1x2x2: 384 rows, three row blocks.
        transposed_k_eq_s([2, 3, 8, 8, 16], [1, 2, 2, 24, 16], [1, 2, 2]),
        // The widest reduction a block keeps.
        transposed_k_eq_s([1, 3, 4, 5, widest], [2, 2, 2, 16, widest], [2; 3]),
        // A convolution's backward data at 3^3 stride 3: 27 taps, shares of 3.
        conv([1, 6, 9, 3, 8], [3, 3, 3, 8, 16], 3, Padding::Valid),
    ];
    let target = ConvTarget::new(4).with_phase(true);
    let mut longest_share = 0;
    for g in &cases {
        let plan = ConvPlan::new(g, ConvPass::BackwardData, precision, target).unwrap();
        let p = &plan.params;
        let tiles = (p.k_d * p.k_h * p.k_w) as u32 * (p.cin as u32).div_ceil(CONV_PHASE_BN);
        let share = tiles.div_ceil(plan.dims.grid[1]);
        longest_share = longest_share.max(share);
        assert!(
            share * (plan.dims.grid[1] - 1) < tiles,
            "{g:?}: an empty share"
        );
        let ran = check_pass(g, ConvPass::BackwardData, precision, target, rng);
        assert_eq!(ran.kernel.tile, ConvTile::Phase64, "{g:?}");
        assert_eq!(ran.splits, 1, "{g:?}");
        // The other passes keep their kernels.
        for pass in [ConvPass::Forward, ConvPass::BackwardWeight] {
            let plan = ConvPlan::new(g, pass, precision, target).unwrap();
            assert_ne!(plan.kernel.tile, ConvTile::Phase64, "{pass:?} {g:?}");
        }
    }
    // A B buffer refilled (a third tile).
    assert!(longest_share >= 3, "{longest_share}");
    // 8 tiles over 6 shares of 2: the last two blocks of each row block have none.
    let g = &cases[0];
    let mut plan = ConvPlan::new(g, ConvPass::BackwardData, precision, target).unwrap();
    plan.dims.grid[1] = 6;
    let (na, nb, nbias) = plan.operand_lens();
    let a = random(rng, na, -1.0, 1.0);
    let b = random(rng, nb, -1.0, 1.0);
    let bias = random(rng, nbias.unwrap(), -1.0, 1.0);
    let got = run(&plan, &a, &b, Some(&bias));
    let want = reference(
        g,
        ConvPass::BackwardData,
        &a,
        &b,
        Some(&bias),
        rounder(precision),
    );
    let e = max_rel(&got, &want);
    assert!(e < 1e-5, "six shares of 8 tiles: max relative error {e:e}");
}

#[test]
fn bf16_phase_kernel_on_taps_that_do_not_overlap() {
    phase_kernel_on_taps_that_do_not_overlap(ConvPrecision::Bf16, &mut Rng::new(91));
}

#[test]
fn tf32_phase_kernel_on_taps_that_do_not_overlap() {
    phase_kernel_on_taps_that_do_not_overlap(ConvPrecision::Tf32, &mut Rng::new(92));
}

/// The phase kernel takes only backward data whose every input voxel one tap reaches, with
/// dy channels a block can keep, and only where the target asks for it; there it comes
/// before the wgmma and tensor-memory-accelerator tiles.
#[test]
fn phase_kernel_plans_only_what_it_runs() {
    let on = ConvTarget::new(4 * 132).with_phase(true);
    let up = transposed_k_eq_s([2, 32, 32, 32, 128], [2, 2, 2, 64, 128], [2; 3]);
    let data = |g: &ConvGeometry, precision, target| {
        ConvPlan::new(g, ConvPass::BackwardData, precision, target)
            .unwrap()
            .kernel
            .tile
    };
    let hopper = on
        .with_wgmma(true)
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_cols_gather(Reach::Measured);
    assert_eq!(data(&up, ConvPrecision::Bf16, on), ConvTile::Phase64);
    assert_eq!(data(&up, ConvPrecision::Bf16, hopper), ConvTile::Phase64);
    assert_ne!(
        data(&up, ConvPrecision::Bf16, hopper.with_phase(false)),
        ConvTile::Phase64
    );
    // The BraTS dec1.up: 512 row blocks, two shares of the 8 tiles fill two waves of an
    // H100's 3 x 132 resident blocks.
    let plan = ConvPlan::new(&up, ConvPass::BackwardData, ConvPrecision::Bf16, on).unwrap();
    assert_eq!(plan.dims.grid, [512, 2, 1]);
    assert_eq!(plan.dims.shared_bytes, 64 * 1024);
    // Three such blocks per SM fit only the largest shared-memory carveout.
    assert!(plan.kernel.needs_most_shared());
    let gathering = ConvPlan::new(
        &up,
        ConvPass::BackwardData,
        ConvPrecision::Bf16,
        hopper.with_phase(false),
    );
    assert!(!gathering.unwrap().kernel.needs_most_shared());
    // 128 tf32 channels are 512 bytes a row, over the 256 a block keeps.
    assert_ne!(data(&up, ConvPrecision::Tf32, on), ConvTile::Phase64);
    let wide = transposed_k_eq_s([1, 4, 4, 4, 136], [2, 2, 2, 16, 136], [2; 3]);
    assert_ne!(data(&wide, ConvPrecision::Bf16, on), ConvTile::Phase64);
    let not_phase = [
        // Overlapping taps.
        transposed([1, 4, 4, 4, 16], [3, 3, 3, 8, 16], K3S2),
        conv([1, 8, 8, 8, 16], [3, 3, 3, 16, 8], 2, Padding::Same),
        // Output padding: the last voxels take no tap.
        transposed(
            [1, 4, 4, 4, 16],
            [2, 2, 2, 8, 16],
            ConvTranspose3dSpec {
                output_padding: [1, 0, 0],
                ..K2S2
            },
        ),
        // Cropping.
        transposed(
            [1, 4, 4, 4, 16],
            [2, 2, 2, 8, 16],
            ConvTranspose3dSpec {
                padding: [[1, 1], [0, 0], [0, 0]],
                ..K2S2
            },
        ),
        // A convolution whose input the output does not tile: 9 voxels at stride 2.
        conv([1, 9, 8, 8, 16], [2, 2, 2, 16, 8], 2, Padding::Valid),
    ];
    for g in &not_phase {
        for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
            assert_ne!(data(g, precision, on), ConvTile::Phase64, "{g:?}");
        }
    }
    assert_eq!(data(&up, ConvPrecision::F32, on), ConvTile::Wide);
}

/// The phase kernels' launches get the shared memory their tile keeps (the harness would
/// not trap a tile larger than its launch).
#[test]
fn phase_launches_get_their_tiles_shared_memory() {
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        let kernel = ConvKernel {
            pass: ConvPass::BackwardData,
            precision,
            tile: ConvTile::Phase64,
        };
        let name = kernel.name().unwrap();
        assert_eq!(
            Some(kernel.shared_bytes()),
            emu_conv::phase_shared_bytes(name),
            "{name}"
        );
    }
    assert_eq!(emu_conv::phase_shared_bytes("conv3d_fwd_bf16_n64"), None);
}

/// The bf16x3 packs (`ConvPack::bf16x3`) write the one-copy bf16 pack of their source's
/// rounding hi in the copies their residual bits leave clear, and of its residual
/// x - hi in the others, rows and bordered, for a batch of three times the source's (the
/// rows over a grid-stride loop): among the values, infinities, NaN and a value that
/// overflows bf16 (whose residual is 0), values exact in bf16 (residual 0), ties, and values
/// that round up to the next power of two.
#[test]
fn bf16x3_packs_write_hi_and_residual_copies() {
    let mut rng = Rng::new(130);
    let tripled_border = |n: i32| ConvBorder {
        n,
        source: [2, 3, 4],
        before: [1, 0, 1],
        dims: [4, 4, 6],
    };
    let cases = [
        (ConvPackKind::Rows, ConvPackKind::Rows, [3 * 700, 1, 13]),
        (
            ConvPackKind::Bordered(tripled_border(6)),
            ConvPackKind::Bordered(tripled_border(2)),
            [6 * 24, 1, 8],
        ),
    ];
    let mut looped = false;
    for (tripled, one, [a, b, c]) in cases {
        let whole = ConvPack::new(tripled, ConvPrecision::Bf16, [a, b, c], 1).unwrap();
        let mut src = random(&mut rng, a / 3 * c, -3.0, 3.0);
        let specials = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.5,
            -0.0,
            1.0 + 3.0 / 128.0,
            1.0 + 1.0 / 256.0,
            f32::from_bits(0x3F7F_FFFF),
            1e-39,
            f32::MAX,
        ];
        src[..specials.len()].copy_from_slice(&specials);
        let hi: Vec<f32> = src.iter().map(|&x| round_bf16(x)).collect();
        let lo: Vec<f32> = src
            .iter()
            .zip(&hi)
            .map(|(&x, &h)| if h.is_finite() { x - h } else { 0.0 })
            .collect();
        assert_eq!(lo[5], 0.0, "1 + 3/128 is exact in bf16");
        assert_eq!((hi[6], lo[6]), (1.0, 1.0 / 256.0), "a tie rounds to even");
        assert!(hi[7] == 1.0 && lo[7] < 0.0, "rounds up to the next power");
        assert!(hi[9].is_infinite() && lo[9] == 0.0, "overflows bf16");
        let single = ConvPack::new(one, ConvPrecision::Bf16, [a / 3, b, c], 1).unwrap();
        let packed_one = |values: &[f32]| {
            let mut dst = vec![<u16 as emu_conv::Packed>::NAN; single.packed_len()];
            emu_conv::conv3d_pack(&single, values, &mut dst).unwrap();
            dst
        };
        let (hi_pack, lo_pack) = (packed_one(&hi), packed_one(&lo));
        for residual in [0b100, 0b010, 0b011] {
            let pack = whole.bf16x3(residual, 1).unwrap();
            assert_eq!(pack.packed_len(), whole.packed_len());
            let threads = pack.dims.grid[0] as usize * pack.dims.block[0] as usize;
            looped |= pack.packed_len() / 3 / 8 > threads;
            assert_eq!(pack.source_len(), src.len());
            let n = pack.packed_len();
            let mut dst = vec![<u16 as emu_conv::Packed>::NAN; n + 8];
            dst[n..].fill(0xABCD);
            emu_conv::conv3d_pack(&pack, &src, &mut dst).unwrap();
            assert!(
                dst[n..].iter().all(|&g| g == 0xABCD),
                "{tripled:?}: past its end"
            );
            for (copy, got) in dst[..n].chunks(n / 3).enumerate() {
                let want = if residual >> copy & 1 == 1 {
                    &lo_pack
                } else {
                    &hi_pack
                };
                assert_eq!(
                    got,
                    &want[..],
                    "{tripled:?} residual {residual:b} copy {copy}"
                );
            }
        }
    }
    assert!(looped, "no case ran the grid-stride loop twice");
    let transposed = ConvPack::new(ConvPackKind::Transposed, ConvPrecision::Bf16, [3, 4, 5], 1);
    assert!(transposed.unwrap().bf16x3(0b100, 1).is_err());
    let tf32 = ConvPack::new(ConvPackKind::Rows, ConvPrecision::Tf32, [6, 1, 4], 1);
    assert!(tf32.unwrap().bf16x3(0b100, 1).is_err());
}

/// tf32 backward weights as three bf16 products (`ConvPlan::bf16x3`): the bf16 kernel the
/// plan picks for three times the samples, over x packed (hi, hi, lo) and dy (hi, lo, hi),
/// within 1e-5 of hi hi' + hi lo' + lo hi' in f64 and within `BF16X3_TOL` of the unrounded
/// result. On mma.sync (no wgmma) and the halo kernels, and on wgmma's tiles, the tensor
/// memory accelerator's and the transposed 64-column ones: odd channels (5, 12, 3
/// columns), 'same' and 'valid', stride 2, a 1x1x1 head and a 2x2x2 transposed
/// convolution. Forward and backward data, and tf32 without the switch, keep tf32.
#[test]
fn tf32_backward_weights_as_three_bf16_products() {
    let mut rng = Rng::new(131);
    let ampere = ConvTarget::new(432).with_tf32_bf16x3(true);
    let hopper = ConvTarget::new(528)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::All)
        .with_tf32_bf16x3(true);
    let cases = [
        (
            conv([1, 5, 6, 7, 5], [3, 3, 3, 5, 12], 1, Padding::Same),
            ampere,
        ),
        (
            conv([2, 7, 6, 5, 12], [3, 3, 3, 12, 16], 2, Padding::Same),
            ampere,
        ),
        (
            conv([2, 4, 5, 6, 32], [1, 1, 1, 32, 3], 1, Padding::Same),
            ampere,
        ),
        (transposed([1, 3, 4, 5, 8], [2, 2, 2, 16, 8], K2S2), ampere),
        (
            conv([2, 2, 30, 30, 32], [1, 3, 3, 32, 32], 1, Padding::Same),
            ampere.with_halo(Reach::All),
        ),
        (
            conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 128], 1, Padding::Same),
            hopper,
        ),
        (
            conv([1, 6, 10, 10, 64], [3, 3, 3, 64, 64], 1, Padding::Valid),
            hopper.with_wgmma_cols_weights(Reach::All),
        ),
    ];
    let mut tiles = Vec::new();
    for (g, target) in &cases {
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Tf32, *target);
        let plan = plan.unwrap();
        assert_eq!(plan.kernel.precision, ConvPrecision::Bf16, "{g:?}");
        assert_eq!(plan.params.n as usize, 3 * g.n, "{g:?}");
        let copies = plan.packs.map(|p| p.map(|pack| pack.copies));
        assert_eq!(
            copies,
            Some([
                ConvPackCopies::Bf16x3 { residual: 0b100 },
                ConvPackCopies::Bf16x3 { residual: 0b010 }
            ]),
            "{g:?}"
        );
        let ran = check_pass(
            g,
            ConvPass::BackwardWeight,
            ConvPrecision::Tf32,
            *target,
            &mut rng,
        );
        tiles.push(ran.kernel.tile);
        for pass in [ConvPass::Forward, ConvPass::BackwardData] {
            let plan = ConvPlan::new(g, pass, ConvPrecision::Tf32, *target).unwrap();
            assert_eq!(plan.kernel.precision, ConvPrecision::Tf32, "{pass:?} {g:?}");
        }
        let off = ConvTarget {
            tf32_bf16x3: false,
            ..*target
        };
        let plan = ConvPlan::new(g, ConvPass::BackwardWeight, ConvPrecision::Tf32, off).unwrap();
        assert_eq!(plan.kernel.precision, ConvPrecision::Tf32, "{g:?}");
    }
    use ConvTile::*;
    assert_eq!(
        tiles,
        [
            TcN32,
            TcN32,
            TcN32,
            TcN32,
            HaloWeight32x32,
            WgTma128,
            WgTmaCols
        ]
    );
}
