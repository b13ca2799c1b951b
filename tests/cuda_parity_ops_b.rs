//! The spatial CUDA kernels (pool, upsample, concat, pad, flip, SSIM window filter) against
//! the CPU backend on a real device, through the kernel traits. Ignored by default;
//! scripts/gpu-check.sh runs them with `--include-ignored`. Each test opens the device and
//! fails without one. Inputs are random with a fresh seed per run (printed on failure),
//! every buffer the pool hands out is NaN-filled first (an element a kernel forgets to
//! write fails the comparison), and tensors exceed one wave of threads so the grid-stride
//! loops run more than once.
//!
//! Error measure: copies (max pooling forward, nearest forward, channel ranges, pad, flip)
//! must be bit-identical; arithmetic |gpu - cpu| < 1e-5 * max(|cpu|, 1) per element.
mod common;

use common::{assert_parity_bits, assert_parity_within, device, fresh_seed, random, Tolerance};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::BackendBase;
use voxseg::rng::Rng;
use voxseg::tensor_ops::concat::ChannelRange;
use voxseg::tensor_ops::flip::Flip3dGeometry;
use voxseg::tensor_ops::pad::Pad3dGeometry;
use voxseg::tensor_ops::upsample::Resample3dGeometry;
use voxseg::tensor_ops::{
    ConcatKernel, FlipKernel, PadKernel, Pool3dSpec, PoolKernel, PoolPadding, SsimWindowKernel,
    UpsampleKernel,
};
use voxseg::Shape;

const TOL: f32 = 1e-5;

/// Bit-identical, NaNs included.
fn exact(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_parity_bits(what, seed, gpu, cpu);
}

/// |cuda - cpu| < TOL * max(|cpu|, 1) per element.
fn close(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_parity_within(what, seed, gpu, cpu, Tolerance::below(TOL, 1.0));
}

#[test]
#[ignore = "needs a CUDA device"]
fn pooling_matches_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let shape = Shape::new(&[2, 33, 34, 35, 5]);
    let n_in = shape.numel();
    let specs = [
        ([2, 2, 2], [2, 2, 2], PoolPadding::Valid),
        ([2, 2, 2], [2, 2, 2], PoolPadding::Same),
        ([3, 3, 3], [2, 2, 2], PoolPadding::Same),
        ([3, 3, 3], [1, 1, 1], PoolPadding::Same),
        ([3, 2, 1], [1, 2, 3], PoolPadding::Valid),
    ];
    // Coarse values so windows hold ties, and NaNs, which the CPU's `v > best` passes over
    // unless they come first.
    let mut x: Vec<f32> = (0..n_in).map(|_| rng.below(9) as f32 * 0.5 - 2.0).collect();
    for _ in 0..50 {
        x[rng.below(n_in)] = f32::NAN;
    }
    let xs = gpu.upload(&x).unwrap();
    for (kernel, stride, padding) in specs {
        let spec = Pool3dSpec {
            kernel,
            stride,
            padding,
        };
        let g = spec.geometry("max_pool3d", &shape).unwrap();
        let what = format!("{spec:?}");
        let dy = random(&mut rng, g.output_shape().numel(), -1.0, 1.0);
        let dys = gpu.upload(&dy).unwrap();

        let y = gpu.max_pool3d_forward(&xs, g).unwrap();
        let want = cpu.max_pool3d_forward(&x, g).unwrap();
        exact(
            &format!("max {what}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
        let dx = gpu.max_pool3d_backward(&xs, &dys, g).unwrap();
        let want = cpu.max_pool3d_backward(&x, &dy, g).unwrap();
        close(
            &format!("max backward {what}"),
            seed,
            &gpu.download(&dx).unwrap(),
            &want,
        );

        let smooth = random(&mut rng, n_in, -2.0, 2.0);
        let y = gpu
            .avg_pool3d_forward(&gpu.upload(&smooth).unwrap(), g)
            .unwrap();
        let want = cpu.avg_pool3d_forward(&smooth, g).unwrap();
        close(
            &format!("avg {what}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
        let dx = gpu.avg_pool3d_backward(&dys, g).unwrap();
        let want = cpu.avg_pool3d_backward(&dy, g).unwrap();
        close(
            &format!("avg backward {what}"),
            seed,
            &gpu.download(&dx).unwrap(),
            &want,
        );
    }
    // One element short: an error naming the op, before any launch.
    let g = Pool3dSpec {
        kernel: [2; 3],
        stride: [2; 3],
        padding: PoolPadding::Valid,
    }
    .geometry("max_pool3d", &shape)
    .unwrap();
    let short = gpu.upload(&x[1..]).unwrap();
    let Err(err) = gpu.max_pool3d_forward(&short, g) else {
        panic!("an input one element short must be an error");
    };
    let err = err.to_string();
    assert!(err.contains("max_pool3d") && err.contains("input"), "{err}");
}

#[test]
#[ignore = "needs a CUDA device"]
fn resampling_matches_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let geometry = |input: [usize; 3], output: [usize; 3]| Resample3dGeometry {
        batch: 2,
        channels: 4,
        input,
        output,
    };
    for factor in [[2, 2, 2], [1, 2, 3]] {
        let input = [17, 16, 15];
        let g = geometry(input, [0, 1, 2].map(|a| input[a] * factor[a]));
        let x = random(&mut rng, g.input_shape().numel(), -1.0, 1.0);
        let y = gpu
            .upsample_nearest3d_forward(&gpu.upload(&x).unwrap(), g)
            .unwrap();
        let want = cpu.upsample_nearest3d_forward(&x, g).unwrap();
        exact(
            &format!("nearest {factor:?}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
        let dy = random(&mut rng, g.output_shape().numel(), -1.0, 1.0);
        let dx = gpu
            .upsample_nearest3d_backward(&gpu.upload(&dy).unwrap(), g)
            .unwrap();
        let want = cpu.upsample_nearest3d_backward(&dy, g).unwrap();
        close(
            &format!("nearest backward {factor:?}"),
            seed,
            &gpu.download(&dx).unwrap(),
            &want,
        );
    }
    for (input, output) in [
        ([17, 16, 15], [34, 32, 30]),
        ([33, 32, 31], [16, 17, 9]),
        ([20, 7, 30], [13, 29, 30]),
    ] {
        let g = geometry(input, output);
        let what = format!("{input:?} -> {output:?}");
        let x = random(&mut rng, g.input_shape().numel(), -1.0, 1.0);
        let y = gpu
            .upsample_trilinear3d_forward(&gpu.upload(&x).unwrap(), g)
            .unwrap();
        let want = cpu.upsample_trilinear3d_forward(&x, g).unwrap();
        close(
            &format!("trilinear {what}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
        let dy = random(&mut rng, g.output_shape().numel(), -1.0, 1.0);
        let dx = gpu
            .upsample_trilinear3d_backward(&gpu.upload(&dy).unwrap(), g)
            .unwrap();
        let want = cpu.upsample_trilinear3d_backward(&dy, g).unwrap();
        close(
            &format!("trilinear backward {what}"),
            seed,
            &gpu.download(&dx).unwrap(),
            &want,
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn channel_ranges_match_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // A U-Net skip join (32 + 32 channels of a 2 x 24^3 batch) and odd widths.
    for (rows, widths) in [(2 * 24 * 24 * 24, vec![32, 32]), (100_003, vec![3, 1, 5])] {
        let parts: Vec<Vec<f32>> = widths
            .iter()
            .map(|&w| random(&mut rng, rows * w, -1.0, 1.0))
            .collect();
        let stored: Vec<_> = parts.iter().map(|p| gpu.upload(p).unwrap()).collect();
        let refs: Vec<_> = stored.iter().collect();
        let y = gpu.concat_channels(&refs, &widths, rows).unwrap();
        let cpu_refs: Vec<&Vec<f32>> = parts.iter().collect();
        let want = cpu.concat_channels(&cpu_refs, &widths, rows).unwrap();
        exact(
            &format!("concat {widths:?}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );

        let channels: usize = widths.iter().sum();
        for (start, end) in [(0, widths[0]), (1, channels), (channels - 1, channels)] {
            let r = ChannelRange {
                rows,
                channels,
                start,
                end,
            };
            let part = gpu.slice_channels(&y, r).unwrap();
            let want_part = cpu.slice_channels(&want, r).unwrap();
            exact(
                &format!("slice {r:?}"),
                seed,
                &gpu.download(&part).unwrap(),
                &want_part,
            );
            let full = gpu.embed_channels(&part, r).unwrap();
            let want_full = cpu.embed_channels(&want_part, r).unwrap();
            exact(
                &format!("embed {r:?}"),
                seed,
                &gpu.download(&full).unwrap(),
                &want_full,
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn pad_and_flip_match_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let input = [21, 18, 19];
    let x = random(&mut rng, 2 * 21 * 18 * 19 * 3, -1.0, 1.0);
    let xs = gpu.upload(&x).unwrap();
    for (before, after, value) in [
        ([3, 0, 5], [2, 7, 0], 0.0),
        ([-4, -1, 0], [-2, 0, -6], 0.0),
        ([-3, 2, 1], [4, -5, -2], -1.25),
    ] {
        let output = [0, 1, 2].map(|a| (input[a] as i64 + before[a] + after[a]) as usize);
        let g = Pad3dGeometry {
            batch: 2,
            channels: 3,
            input,
            output,
            before,
        };
        let y = gpu.pad3d(&xs, g, value).unwrap();
        let want = cpu.pad3d(&x, g, value).unwrap();
        exact(
            &format!("pad {before:?} {after:?}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
    }
    for bits in 0..8usize {
        let g = Flip3dGeometry {
            batch: 2,
            channels: 3,
            dims: input,
            mirror: [bits & 1, (bits >> 1) & 1, (bits >> 2) & 1],
        };
        let y = gpu.flip3d(&xs, g).unwrap();
        let want = cpu.flip3d(&x, g).unwrap();
        exact(
            &format!("flip {:?}", g.mirror),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn window_filter_matches_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let gaussian7: Vec<f64> = {
        let raw: Vec<f64> = (0..7)
            .map(|i| (-((i as f64 - 3.0).powi(2)) / 4.5).exp())
            .collect();
        let total: f64 = raw.iter().sum();
        raw.iter().map(|w| w / total).collect()
    };
    for (dims, taps) in [
        ([2, 40, 41, 39, 2], gaussian7),
        ([1, 30, 33, 35, 3], vec![1.0 / 3.0; 3]),
    ] {
        let what = format!("{dims:?} with {} taps", taps.len());
        let n: usize = dims.iter().product();
        let x = random(&mut rng, n, -1.0, 1.0);
        let y = gpu
            .window_filter_forward(&gpu.upload(&x).unwrap(), dims, &taps)
            .unwrap();
        let want = cpu.window_filter_forward(&x, dims, &taps).unwrap();
        close(
            &format!("filter {what}"),
            seed,
            &gpu.download(&y).unwrap(),
            &want,
        );
        let dy = random(&mut rng, want.len(), -1.0, 1.0);
        let dx = gpu
            .window_filter_backward(&gpu.upload(&dy).unwrap(), dims, &taps)
            .unwrap();
        let want = cpu.window_filter_backward(&dy, dims, &taps).unwrap();
        close(
            &format!("filter adjoint {what}"),
            seed,
            &gpu.download(&dx).unwrap(),
            &want,
        );
    }
}
