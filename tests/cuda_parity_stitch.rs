//! Sliding-window stitching (kernels/stitch.cu) and whole-case prediction on the CUDA
//! backend against the CPU backend on a real device. Ignored by default;
//! scripts/gpu-check.sh runs them with `--include-ignored`. Each test opens the device and
//! fails without one. Inputs are random with a fresh seed per run (printed on failure), and
//! every buffer the pool hands out is NaN-filled first.
//!
//! Tolerances (f32): the stitching must equal the CPU's bit for bit (the kernel's product
//! is `__fmul_rn`, never fused into the add, the division is IEEE, and the windows add in
//! the same order). Whole-case prediction runs the model's convolutions on the device,
//! whose sums differ in order from the CPU's: |cuda - cpu| < 1e-4 * max |cpu| per logit.
mod common;

use common::{
    assert_parity_bits, assert_parity_within, device, fresh_seed, largest_magnitude, random,
    Tolerance,
};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::Backend;
use voxseg::infer::sliding_window::{predict_volume, window_starts};
use voxseg::infer::SlidingWindow;
use voxseg::nn::{Model, ModelSpec};
use voxseg::rng::Rng;
use voxseg::tensor_ops::stitch::{accumulate_windows, divide_by_weights};
use voxseg::Tensor;

/// Every window of `volume` at overlap 0.5, z slowest.
fn windows(volume: [usize; 3], patch: [usize; 3]) -> Vec<[usize; 3]> {
    let s: Vec<Vec<usize>> = (0..3)
        .map(|a| window_starts(volume[a], patch[a], 0.5))
        .collect();
    let mut out = Vec::new();
    for &z in &s[0] {
        for &y in &s[1] {
            for &x in &s[2] {
                out.push([z, y, x]);
            }
        }
    }
    out
}

/// A volume, its window size, logits per voxel and windows per batch.
#[derive(Clone, Copy, Debug)]
struct Case {
    volume: [usize; 3],
    patch: [usize; 3],
    k: usize,
    batch: usize,
}

/// acc, norm and their quotient after stitching `logits` (every window of `starts`, in
/// batches) on `b`.
fn stitch_on<B: Backend<E = f32>>(
    b: &B,
    case: Case,
    starts: &[[usize; 3]],
    logits: &[f32],
    weights: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Case {
        volume,
        patch,
        k,
        batch,
    } = case;
    let [d, h, w] = volume;
    let cells: usize = patch.iter().product();
    let mut acc = Tensor::zeros(b, [1, d, h, w, k]).unwrap();
    let mut norm = Tensor::zeros(b, [1, d, h, w, 1]).unwrap();
    let wt = Tensor::from_host(b, patch, weights).unwrap();
    for (i, group) in starts.chunks(batch).enumerate() {
        let first = i * batch * cells * k;
        let part = &logits[first..first + group.len() * cells * k];
        let lt =
            Tensor::from_host(b, [group.len(), patch[0], patch[1], patch[2], k], part).unwrap();
        accumulate_windows(&mut acc, &mut norm, &lt, &wt, group).unwrap();
    }
    let (a, n) = (acc.to_vec().unwrap(), norm.to_vec().unwrap());
    let avg = divide_by_weights(acc, &norm).unwrap().to_vec().unwrap();
    (a, n, avg)
}

#[test]
#[ignore = "needs a CUDA device"]
fn stitching_equals_cpu_bit_for_bit() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // Overlapping windows in batches that do not divide their count; BraTS-sized windows;
    // windows larger than the volume on two axes.
    for case in [
        Case {
            volume: [61, 75, 53],
            patch: [32, 40, 24],
            k: 3,
            batch: 3,
        },
        Case {
            volume: [139, 171, 137],
            patch: [128, 128, 128],
            k: 4,
            batch: 3,
        },
        Case {
            volume: [20, 9, 31],
            patch: [24, 16, 16],
            k: 5,
            batch: 1,
        },
    ] {
        let starts = windows(case.volume, case.patch);
        let cells: usize = case.patch.iter().product();
        let logits = random(&mut rng, starts.len() * cells * case.k, -8.0, 8.0);
        let weights = random(&mut rng, cells, 1e-3, 1.0);
        let what = format!("{case:?}");
        let want = stitch_on(&cpu, case, &starts, &logits, &weights);
        let got = stitch_on(&gpu, case, &starts, &logits, &weights);
        assert_parity_bits(&format!("acc {what}"), seed, &got.0, &want.0);
        assert_parity_bits(&format!("norm {what}"), seed, &got.1, &want.1);
        assert_parity_bits(&format!("average {what}"), seed, &got.2, &want.2);
    }
}

fn unet() -> ModelSpec {
    ModelSpec::Unet(common::small_unet())
}

#[test]
#[ignore = "needs a CUDA device"]
fn whole_case_prediction_matches_cpu_and_allocates_nothing_new_after_the_first_case() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (d, h, w, c) = (29, 27, 21, 4);
    let image = random(&mut rng, d * h * w * c, -2.0, 2.0);
    let opts = SlidingWindow {
        patch: [16, 24, 16],
        overlap: 0.5,
        batch: 2,
        tta: true,
        pad_value: -0.5,
    };
    let mut gm = Model::new(&gpu, &unet(), 3).unwrap();
    let mut cm = Model::new(&cpu, &unet(), 3).unwrap();
    let gi = Tensor::from_f32(&gpu, [1, d, h, w, c], &image).unwrap();
    let ci = Tensor::from_f32(&cpu, [1, d, h, w, c], &image).unwrap();
    // The first result is read back and dropped before the second case, which may then
    // reuse its block, as a caller predicting case after case does.
    let got = {
        let first = predict_volume(&mut gm, &gi, &opts).unwrap();
        assert_eq!(first.dims(), &[1, d, h, w, 3]);
        first.to_vec_f32().unwrap()
    };
    let want = predict_volume(&mut cm, &ci, &opts)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let floor = largest_magnitude("logits", &want);
    assert_parity_within("logits", seed, &got, &want, Tolerance::below(1e-4, floor));

    let before = gpu.pool_stats().device_allocations;
    let again = predict_volume(&mut gm, &gi, &opts)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let after = gpu.pool_stats().device_allocations;
    assert_eq!(
        after, before,
        "device allocations of a second case: {before} -> {after}"
    );
    assert_parity_bits("second prediction", seed, &again, &got);
}
