//! The spatial CUDA kernels (pool, upsample, concat, pad, flip, SSIM window filter) run on
//! the CPU through the execution harness (kernels/emu), checked against the CPU backend on
//! small odd shapes with the launch plans the device uses, capped at a few blocks so the
//! grid-stride loops run several rounds. Outputs start as NaN and carry a guard tail that
//! must stay untouched.
//!
//! Tolerances: copies (max pooling, nearest resampling, concat/slice/embed, pad, flip) and
//! sums in the CPU's order without fused products (pooling and nearest backward, the
//! average pool's sum-then-scale) must match bit for bit. Kernels that multiply and add
//! (trilinear, window filter) are held to 1e-5 relative to max(|cpu|, 1): nvcc fuses
//! their multiply-adds on the device, which the CPU does not.
mod common;

use common::{
    assert_bits, assert_within, check_layout, poisoned, random, written, Tolerance, GUARD,
};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::emu::{self, spatial};
use voxseg::backend::cuda::launch;
use voxseg::backend::cuda::params::LaunchDims;
use voxseg::backend::cuda::params_spatial::{
    linear_taps_len, window_passes, LinearTap, WindowAxisParams, LINEAR_TAP_WORDS, WINDOW_MAX_TAPS,
};
use voxseg::rng::Rng;
use voxseg::tensor_ops::concat::ChannelRange;
use voxseg::tensor_ops::flip::Flip3dGeometry;
use voxseg::tensor_ops::pad::Pad3dGeometry;
use voxseg::tensor_ops::pool::Pool3dGeometry;
use voxseg::tensor_ops::upsample::{linear_taps, Resample3dGeometry};
use voxseg::tensor_ops::{
    ConcatKernel, FlipKernel, PadKernel, Pool3dSpec, PoolKernel, PoolPadding, SsimWindowKernel,
    UpsampleKernel,
};
use voxseg::Shape;

/// Blocks per launch: a few, so that every kernel's grid-stride loop runs several rounds.
const BLOCKS: u32 = 3;
/// For the kernels that multiply and add (see the module comment).
const TOL: f32 = 1e-5;

fn dims(n: usize) -> LaunchDims {
    launch::elementwise(n, BLOCKS)
}

/// Values on a coarse grid (multiples of 0.5 in [-2, 2]) so that windows hold ties.
fn coarse(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.below(9) as f32 * 0.5 - 2.0).collect()
}

/// Bit-identical, NaNs included.
fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_bits(what, ("harness", got), ("cpu", want));
}

/// |got - want| <= TOL * max(|want|, 1), NaNs matching.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let tol = Tolerance::at_most(TOL, 1.0);
    assert_within(what, ("harness", got), ("cpu", want), tol);
}

#[test]
fn spatial_param_structs_have_the_cpp_layout() {
    check_layout!(
        "Pool3dGeometry",
        Pool3dGeometry {
            batch,
            channels,
            input,
            output,
            kernel,
            stride,
            pad_before
        }
    );
    check_layout!(
        "Resample3dGeometry",
        Resample3dGeometry {
            batch,
            channels,
            input,
            output
        }
    );
    check_layout!(
        "ChannelRange",
        ChannelRange {
            rows,
            channels,
            start,
            end
        }
    );
    check_layout!(
        "Pad3dGeometry",
        Pad3dGeometry {
            batch,
            channels,
            input,
            output,
            before
        }
    );
    check_layout!(
        "Flip3dGeometry",
        Flip3dGeometry {
            batch,
            channels,
            dims,
            mirror
        }
    );
    check_layout!("LinearTap", LinearTap { i0, w0, w1 });
    assert_eq!(size_of::<LinearTap>(), LINEAR_TAP_WORDS * size_of::<f32>());
    check_layout!(
        "WindowAxisParams",
        WindowAxisParams {
            outer,
            len,
            inner,
            k,
            taps
        }
    );
    assert_eq!(
        emu::launch_constant("VX_WINDOW_MAX_TAPS"),
        Some(WINDOW_MAX_TAPS as u32)
    );
}

fn spec(kernel: [usize; 3], stride: [usize; 3], padding: PoolPadding) -> Pool3dSpec {
    Pool3dSpec {
        kernel,
        stride,
        padding,
    }
}

/// Overlapping, strided, gapped ('stride > kernel'), 'same'-padded and anisotropic windows.
const POOL_SPECS: [([usize; 3], [usize; 3], PoolPadding); 8] = [
    ([2, 2, 2], [2, 2, 2], PoolPadding::Valid),
    ([2, 2, 2], [2, 2, 2], PoolPadding::Same),
    ([3, 3, 3], [2, 2, 2], PoolPadding::Same),
    ([3, 3, 3], [1, 1, 1], PoolPadding::Same),
    ([3, 2, 2], [3, 3, 3], PoolPadding::Valid),
    ([3, 2, 1], [1, 2, 3], PoolPadding::Same),
    ([1, 3, 2], [2, 1, 2], PoolPadding::Valid),
    ([2, 3, 3], [3, 2, 1], PoolPadding::Same),
];

#[test]
fn pooling_matches_the_cpu_backend_with_ties_and_nans() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(101);
    let shape = Shape::new(&[2, 5, 7, 6, 3]);
    for (case, (k, s, padding)) in POOL_SPECS.into_iter().enumerate() {
        let g = spec(k, s, padding).geometry("max_pool3d", &shape).unwrap();
        let (n_in, n_out) = (shape.numel(), g.output_shape().numel());
        let what = format!("{k:?} / {s:?} {padding:?}");
        let mut x = coarse(&mut rng, n_in);
        // A NaN first cell stays a window's maximum; a later NaN is passed over.
        if case % 2 == 0 {
            x[0] = f32::NAN;
            x[n_in / 2 + 1] = f32::NAN;
        }
        let dy = random(&mut rng, n_out, -1.0, 1.0);

        let mut y = poisoned(n_out);
        spatial::max_pool3d_forward(&dims(n_out), g, &x, &mut y).unwrap();
        let want = cpu.max_pool3d_forward(&x, g).unwrap();
        assert_exact(&format!("max {what}"), written(&y, n_out), &want);

        let mut winner = vec![u32::MAX; n_out + GUARD];
        spatial::max_pool3d_argmax(&dims(n_out), g, &x, &mut winner).unwrap();
        assert!(winner[n_out..].iter().all(|&w| w == u32::MAX));
        let spatial_cells = (g.input[0] * g.input[1] * g.input[2]) as u32;
        assert!(winner[..n_out].iter().all(|&w| w < spatial_cells));
        let mut dx = poisoned(n_in);
        spatial::max_pool3d_backward(&dims(n_in), g, &winner, &dy, &mut dx).unwrap();
        let want = cpu.max_pool3d_backward(&x, &dy, g).unwrap();
        assert_exact(&format!("max backward {what}"), written(&dx, n_in), &want);

        let x = random(&mut rng, n_in, -2.0, 2.0);
        let mut y = poisoned(n_out);
        spatial::avg_pool3d_forward(&dims(n_out), g, &x, &mut y).unwrap();
        let want = cpu.avg_pool3d_forward(&x, g).unwrap();
        assert_exact(&format!("avg {what}"), written(&y, n_out), &want);

        let mut scaled = poisoned(n_out);
        spatial::avg_pool3d_scale_gradient(&dims(n_out), g, &dy, &mut scaled).unwrap();
        let mut dx = poisoned(n_in);
        spatial::avg_pool3d_backward(&dims(n_in), g, written(&scaled, n_out), &mut dx).unwrap();
        let want = cpu.avg_pool3d_backward(&dy, g).unwrap();
        assert_exact(&format!("avg backward {what}"), written(&dx, n_in), &want);
    }
}

#[test]
fn max_pool_ties_go_to_the_first_cell_of_the_window() {
    // One sample, one channel, 2x2x2 windows of equal values: every window's winner is its
    // (z0, y0, x0) corner.
    let shape = Shape::new(&[1, 4, 4, 4, 1]);
    let g = spec([2, 2, 2], [2, 2, 2], PoolPadding::Valid)
        .geometry("max_pool3d", &shape)
        .unwrap();
    let x = vec![1.5f32; 64];
    let mut winner = vec![0u32; 8];
    spatial::max_pool3d_argmax(&dims(8), g, &x, &mut winner).unwrap();
    assert_eq!(winner, vec![0, 2, 8, 10, 32, 34, 40, 42]);
}

fn resample(input: [usize; 3], output: [usize; 3]) -> Resample3dGeometry {
    Resample3dGeometry {
        batch: 2,
        channels: 3,
        input,
        output,
    }
}

#[test]
fn nearest_resampling_matches_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(102);
    for factor in [[2, 1, 3], [1, 2, 2], [3, 3, 1], [1, 1, 1]] {
        let input = [3, 4, 5];
        let g = resample(input, [0, 1, 2].map(|a| input[a] * factor[a]));
        let (n_in, n_out) = (g.input_shape().numel(), g.output_shape().numel());
        let x = random(&mut rng, n_in, -1.0, 1.0);
        let mut y = poisoned(n_out);
        spatial::upsample_nearest3d_forward(&dims(n_out), g, &x, &mut y).unwrap();
        let want = cpu.upsample_nearest3d_forward(&x, g).unwrap();
        assert_exact(&format!("nearest {factor:?}"), written(&y, n_out), &want);

        let dy = random(&mut rng, n_out, -1.0, 1.0);
        let mut dx = poisoned(n_in);
        spatial::upsample_nearest3d_backward(&dims(n_in), g, &dy, &mut dx).unwrap();
        let want = cpu.upsample_nearest3d_backward(&dy, g).unwrap();
        assert_exact(
            &format!("nearest backward {factor:?}"),
            written(&dx, n_in),
            &want,
        );
    }
    let err = spatial::upsample_nearest3d_forward(
        &dims(1),
        resample([3, 4, 5], [6, 6, 5]),
        &[0.0; 360],
        &mut [0.0; 1080],
    )
    .unwrap_err();
    assert!(err.contains("whole multiple"), "{err}");
}

/// The tap table through the harness: one entry per output cell of D, H, W.
fn taps_table(g: Resample3dGeometry) -> Vec<LinearTap> {
    let n = linear_taps_len(&g);
    let poison = LinearTap {
        i0: u32::MAX,
        w0: f32::NAN,
        w1: f32::NAN,
    };
    let mut table = vec![poison; n + GUARD];
    spatial::linear_taps_table(&launch::elementwise(n, 1), g, &mut table).unwrap();
    assert!(table[n..].iter().all(|t| t.i0 == u32::MAX));
    table.truncate(n);
    table
}

/// Larger, exactly doubled, smaller, mixed per axis, the identity, and steep ratios both
/// ways (every input cell read by many outputs; most inputs read by none).
const TRILINEAR_SIZES: [([usize; 3], [usize; 3]); 7] = [
    ([5, 3, 4], [9, 7, 8]),
    ([5, 3, 4], [10, 6, 8]),
    ([5, 3, 4], [3, 2, 3]),
    ([5, 3, 4], [7, 2, 5]),
    ([5, 3, 4], [5, 3, 4]),
    ([2, 3, 2], [9, 13, 1]),
    ([11, 9, 2], [2, 3, 7]),
];

#[test]
fn trilinear_taps_are_the_cpu_taps_bit_for_bit() {
    for (input, output) in TRILINEAR_SIZES {
        let g = resample(input, output);
        let table = taps_table(g);
        let mut at = 0;
        for a in 0..3 {
            for o in 0..output[a] {
                let (i0, i1, w1) = linear_taps(o, input[a], output[a]);
                let t = table[at];
                assert_eq!(
                    t.i0 as usize, i0,
                    "axis {a} cell {o} of {input:?} -> {output:?}"
                );
                assert_eq!(i1, (i0 + 1).min(input[a] - 1));
                assert_eq!(t.w0.to_bits(), ((1.0 - w1) as f32).to_bits());
                assert_eq!(t.w1.to_bits(), (w1 as f32).to_bits());
                at += 1;
            }
        }
    }
}

#[test]
fn trilinear_resampling_matches_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(103);
    for (input, output) in TRILINEAR_SIZES {
        let g = resample(input, output);
        let what = format!("{input:?} -> {output:?}");
        let table = taps_table(g);
        let (n_in, n_out) = (g.input_shape().numel(), g.output_shape().numel());
        let x = random(&mut rng, n_in, -2.0, 2.0);
        let mut y = poisoned(n_out);
        spatial::upsample_trilinear3d_forward(&dims(n_out), g, &table, &x, &mut y).unwrap();
        let want = cpu.upsample_trilinear3d_forward(&x, g).unwrap();
        assert_close(&format!("trilinear {what}"), written(&y, n_out), &want);

        let dy = random(&mut rng, n_out, -2.0, 2.0);
        let mut dx = poisoned(n_in);
        spatial::upsample_trilinear3d_backward(&dims(n_in), g, &table, &dy, &mut dx).unwrap();
        let want = cpu.upsample_trilinear3d_backward(&dy, g).unwrap();
        assert_close(
            &format!("trilinear backward {what}"),
            written(&dx, n_in),
            &want,
        );
    }
    let mut bad = taps_table(resample([2, 2, 2], [3, 3, 3]));
    bad[4].i0 = 2;
    let err = spatial::upsample_trilinear3d_forward(
        &dims(1),
        resample([2, 2, 2], [3, 3, 3]),
        &bad,
        &[0.0; 48],
        &mut [0.0; 162],
    )
    .unwrap_err();
    assert!(err.contains("outside axis 1"), "{err}");
}

#[test]
fn channel_ranges_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(104);
    let rows = 2 * 3 * 5 * 7;
    let widths = [3, 1, 5, 2];
    let channels: usize = widths.iter().sum();
    let parts: Vec<Vec<f32>> = widths
        .iter()
        .map(|&w| random(&mut rng, rows * w, -1.0, 1.0))
        .collect();

    // Concatenation as the device runs it: one placement per part into one output.
    let n = rows * channels;
    let mut y = poisoned(n);
    let mut start = 0;
    for (part, &w) in parts.iter().zip(&widths) {
        let r = ChannelRange {
            rows,
            channels,
            start,
            end: start + w,
        };
        spatial::channels_place(&dims(rows * w), r, part, &mut y).unwrap();
        start += w;
    }
    let refs: Vec<&Vec<f32>> = parts.iter().collect();
    let want = cpu.concat_channels(&refs, &widths, rows).unwrap();
    assert_exact("concat", written(&y, n), &want);

    for (s, e) in [(0, 1), (3, 4), (4, 9), (0, 11), (9, 11)] {
        let r = ChannelRange {
            rows,
            channels,
            start: s,
            end: e,
        };
        let w = e - s;
        let mut part = poisoned(rows * w);
        spatial::channels_slice(&dims(rows * w), r, &want, &mut part).unwrap();
        let want_part = cpu.slice_channels(&want, r).unwrap();
        assert_exact(
            &format!("slice {s}..{e}"),
            written(&part, rows * w),
            &want_part,
        );

        let mut full = poisoned(n);
        spatial::channels_embed(&dims(n), r, &want_part, &mut full).unwrap();
        let want_full = cpu.embed_channels(&want_part, r).unwrap();
        assert_exact(&format!("embed {s}..{e}"), written(&full, n), &want_full);
    }
    let backwards = ChannelRange {
        rows,
        channels,
        start: 5,
        end: 4,
    };
    assert!(spatial::channels_slice(&dims(1), backwards, &want, &mut [0.0; 1]).is_err());
}

#[test]
fn padding_and_cropping_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(105);
    let input = [5, 3, 4];
    let x = random(&mut rng, 2 * 5 * 3 * 4 * 3, -1.0, 1.0);
    let cases: [([i64; 3], [i64; 3], f64); 5] = [
        ([1, 2, 0], [2, 0, 1], 0.25),
        ([-1, -1, 0], [-2, 0, -3], 0.0),
        ([-2, 1, 2], [1, -2, -1], -7.5),
        ([0, 0, 0], [0, 0, 0], 1.0),
        // D cropped past the whole input: every output cell is fill.
        ([-6, 0, -3], [5, 1, 2], 0.1),
    ];
    for (before, after, value) in cases {
        let output = [0, 1, 2].map(|a| (input[a] as i64 + before[a] + after[a]) as usize);
        let g = Pad3dGeometry {
            batch: 2,
            channels: 3,
            input,
            output,
            before,
        };
        let n = g.output_shape().numel();
        let mut y = poisoned(n);
        spatial::pad3d(&dims(n), g, value as f32, &x, &mut y).unwrap();
        let want = cpu.pad3d(&x, g, value).unwrap();
        assert_exact(&format!("pad {before:?} {after:?}"), written(&y, n), &want);
    }
}

#[test]
fn flips_match_the_cpu_backend_on_every_axis_set() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(106);
    let x = random(&mut rng, 2 * 5 * 3 * 4 * 3, -1.0, 1.0);
    for bits in 0..8usize {
        let g = Flip3dGeometry {
            batch: 2,
            channels: 3,
            dims: [5, 3, 4],
            mirror: [bits & 1, (bits >> 1) & 1, (bits >> 2) & 1],
        };
        let n = x.len();
        let mut y = poisoned(n);
        spatial::flip3d(&dims(n), g, &x, &mut y).unwrap();
        let want = cpu.flip3d(&x, g).unwrap();
        assert_exact(&format!("flip {:?}", g.mirror), written(&y, n), &want);
    }
}

/// The window filter through the harness, pass by pass as the device runs it.
fn window_filter(x: &[f32], dims5: [usize; 5], taps: &[f64], adjoint: bool) -> Vec<f32> {
    let passes = window_passes(dims5, taps).unwrap();
    let mut current = x.to_vec();
    let order: Vec<&WindowAxisParams> = if adjoint {
        passes.iter().rev().collect()
    } else {
        passes.iter().collect()
    };
    for p in order {
        let n = if adjoint {
            p.input_len()
        } else {
            p.output_len()
        };
        let mut out = poisoned(n);
        if adjoint {
            spatial::window_filter_axis_adjoint(&dims(n), *p, &current, &mut out).unwrap();
        } else {
            spatial::window_filter_axis(&dims(n), *p, &current, &mut out).unwrap();
        }
        current = written(&out, n).to_vec();
    }
    current
}

#[test]
fn window_filter_matches_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(107);
    let gaussian7: Vec<f64> = (0..7)
        .map(|i| (-((i as f64 - 3.0).powi(2)) / 4.5).exp())
        .collect();
    let cases: [([usize; 5], Vec<f64>); 4] = [
        ([2, 5, 4, 6, 3], vec![0.25, 0.5, 0.25]),
        ([1, 9, 8, 7, 2], gaussian7),
        ([2, 3, 3, 3, 1], vec![1.0]),
        ([1, 4, 5, 4, 2], vec![0.2, 0.7, 0.1, 0.4]),
    ];
    for (dims5, taps) in cases {
        let what = format!("{dims5:?} with {} taps", taps.len());
        let n: usize = dims5.iter().product();
        let x = random(&mut rng, n, -1.0, 1.0);
        let got = window_filter(&x, dims5, &taps, false);
        let want = cpu.window_filter_forward(&x, dims5, &taps).unwrap();
        assert_close(&format!("filter {what}"), &got, &want);

        let dy = random(&mut rng, want.len(), -1.0, 1.0);
        let got = window_filter(&dy, dims5, &taps, true);
        let want = cpu.window_filter_backward(&dy, dims5, &taps).unwrap();
        assert_close(&format!("filter adjoint {what}"), &got, &want);
    }
    assert!(window_passes([1, 4, 2, 4, 1], &[1.0; 3]).is_err());
    assert!(window_passes([1, 40, 40, 40, 1], &[0.03; 33]).is_err());
}
