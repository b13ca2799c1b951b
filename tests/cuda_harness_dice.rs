//! The fused Dice-sum kernels (kernels/dice.cu) and the validation counts
//! (kernels/confusion.cu) run on the CPU through the execution harness, checked against the
//! CPU backend on odd shapes. Dice sums: with the launch plan the device
//! uses and small block targets so that split rows, channel chunks (more than 256
//! channels) and partial groups (256 not a multiple of C) are exercised. Outputs and the
//! f64 partials start as NaN and outputs carry a guard tail that must stay untouched.
//!
//! Tolerance (f32): |harness - cpu| <= 1e-5 * |cpu| per element. Every sum adds
//! non-negative terms (p and t in [0, 1]), so the error is relative to the sum itself; the
//! gradient is one product and one sum per element, the same on both sides. Counts must be
//! equal.
mod common;

use common::{check_layout, poisoned, random, written, Tolerance};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::emu;
use voxseg::backend::cuda::launch;
use voxseg::backend::cuda::params_confusion::{ConfusionKernelParams, CONFUSION_THREADS};
use voxseg::backend::cuda::params_dice::{DiceKernelParams, DicePlan, DICE_THREADS};
use voxseg::metrics::Confusion;
use voxseg::rng::Rng;
use voxseg::tensor_ops::confusion::{
    ConfusionSpec, Decision, MAX_CHANNELS, MAX_CLASSES, MAX_REGIONS,
};
use voxseg::tensor_ops::dice_sums::DiceSumsShape;
use voxseg::tensor_ops::{ConfusionKernel, DiceSumsKernel};

const TOL: f32 = 1e-5;

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    common::assert_within(
        what,
        ("harness", got),
        ("cpu", want),
        Tolerance::at_most(TOL, 0.0),
    );
}

#[test]
fn param_struct_and_threads_match_the_cpp_side() {
    check_layout!(
        "DiceKernelParams",
        DiceKernelParams {
            rows,
            row_voxels,
            channels,
            voxels_per_split,
            splits,
            chunk_channels
        }
    );
    assert_eq!(emu::launch_constant("VX_DICE_THREADS"), Some(DICE_THREADS));
    check_layout!(
        "ConfusionKernelParams",
        ConfusionKernelParams {
            voxels,
            region_classes,
            channels,
            regions,
            argmax,
            pad_,
            paint
        }
    );
    for (name, value) in [
        ("VX_CONFUSION_THREADS", CONFUSION_THREADS as usize),
        ("VX_CONFUSION_MAX_CHANNELS", MAX_CHANNELS),
        ("VX_CONFUSION_MAX_REGIONS", MAX_REGIONS),
        ("VX_CONFUSION_MAX_CLASSES", MAX_CLASSES),
    ] {
        assert_eq!(emu::launch_constant(name), Some(value as u32), "{name}");
    }
}

/// The sums through the device's two launches on the harness; also returns the splits.
fn emu_sums(plan: &DicePlan, p: &[f32], t: &[f32], n_sums: usize) -> (Vec<f32>, u32) {
    let mut partial = vec![f64::NAN; plan.partial_len()];
    emu::dice::sums_partial(&plan.dims, plan.params, p, t, &mut partial).unwrap();
    assert!(
        partial.iter().all(|v| v.is_finite()),
        "a partial was not written"
    );
    let mut out = poisoned(n_sums);
    emu::dice::sums_finish(&plan.finish_dims, plan.params, &partial, &mut out).unwrap();
    (written(&out, n_sums).to_vec(), plan.params.splits)
}

/// Probabilities in [0, 1] and 0/1 targets, both with some exact zeros and ones.
fn inputs(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut p = random(rng, n, 0.0, 1.0);
    for v in p.iter_mut().step_by(11) {
        *v = 1.0;
    }
    let t = random(rng, n, 0.0, 1.0)
        .into_iter()
        .map(|v| if v < 0.4 { 1.0 } else { 0.0 })
        .collect();
    (p, t)
}

#[test]
fn sums_and_gradient_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(29);
    let mut saw = [false; 3];
    for dims in [
        [2, 3, 5, 7, 3],
        [3, 2, 3, 5, 1],
        [1, 5, 3, 2, 5],
        [2, 1, 3, 5, 300],
        [1, 4, 4, 4, 8],
    ] {
        let n: usize = dims.iter().product();
        let (p, t) = inputs(&mut rng, n);
        for per_sample in [true, false] {
            let shape = DiceSumsShape::of(dims, per_sample);
            let want = cpu.dice_sums(&p, &t, shape).unwrap();
            let grad = random(&mut rng, shape.sums_len(), -2.0, 2.0);
            let want_dp = cpu.dice_sums_backward(&t, &grad, shape).unwrap();
            for target_blocks in [1, 5, 64] {
                let plan = DicePlan::new(shape, target_blocks, 3).unwrap();
                let what = format!("{dims:?} per_sample {per_sample} target {target_blocks}");
                let (got, splits) = emu_sums(&plan, &p, &t, shape.sums_len());
                assert_close(&format!("{what} sums"), &got, &want);
                saw[0] |= splits > 1;
                saw[1] |= plan.dims.grid[2] > 1;
                saw[2] |= !DICE_THREADS.is_multiple_of(plan.params.chunk_channels);

                let mut dp = poisoned(n);
                emu::dice::backward(&plan.dims, plan.params, &t, &grad, &mut dp).unwrap();
                assert_close(&format!("{what} dp"), written(&dp, n), &want_dp);
            }
        }
    }
    assert_eq!(saw, [true; 3], "split rows, channel chunks, partial groups");
}

#[test]
fn empty_rows_give_zero_sums() {
    let shape = DiceSumsShape::of([2, 0, 3, 3, 2], true);
    let plan = DicePlan::new(shape, 64, 3).unwrap();
    let (got, _) = emu_sums(&plan, &[], &[], shape.sums_len());
    assert_eq!(got, vec![0.0; 12]);
}

#[test]
fn the_harness_refuses_a_grid_that_is_not_the_plans() {
    let shape = DiceSumsShape::of([2, 3, 5, 7, 3], true);
    let plan = DicePlan::new(shape, 64, 3).unwrap();
    let mut dims = plan.dims;
    dims.grid[1] += 1;
    let n = shape.numel();
    let err = emu::dice::backward(
        &dims,
        plan.params,
        &vec![0.0; n],
        &[0.0; 6],
        &mut vec![0.0; n],
    )
    .unwrap_err();
    assert!(err.contains("grid"), "{err}");
}

/// The counts through the device's launches on the harness (one per MAX_REGIONS regions),
/// as the launcher assembles them.
fn emu_confusion(
    spec: &ConfusionSpec,
    logits: &[f32],
    labels: &[f32],
    blocks: u32,
) -> Vec<Confusion> {
    let dims = launch::elementwise(labels.len(), blocks);
    let mut counts = Vec::new();
    for regions in spec.regions.chunks(MAX_REGIONS) {
        let p = ConfusionKernelParams::new(spec, regions, labels.len());
        let mut part = vec![0u64; p.counts_len()];
        emu::confusion::region_confusion(&dims, p, logits, labels, &mut part).unwrap();
        counts.extend(part);
    }
    counts
        .chunks_exact(3)
        .map(|c| Confusion {
            true_pos: c[0],
            false_pos: c[1],
            false_neg: c[2],
            true_neg: labels.len() as u64 - c[0] - c[1] - c[2],
        })
        .collect()
}

#[test]
fn validation_counts_equal_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(31);
    let voxels = 3 * 5 * 7 * 11;
    // BraTS regions (WT, TC, ET painting 2, 1, 3) and softmax classes 0..3.
    let brats = [vec![1, 2, 3], vec![1, 3], vec![3]];
    let classes = [vec![1], vec![2], vec![3]];
    // More channels and regions than one launch takes (an argmax has no channel limit).
    let many: Vec<Vec<u8>> = (1..=MAX_REGIONS as u8 + 2)
        .map(|c| vec![c, c + 1, c - 1])
        .collect();
    for spec in [
        ConfusionSpec::new(Decision::Paint(vec![2, 1, 3]), 3, &brats).unwrap(),
        ConfusionSpec::new(Decision::Argmax, 4, &classes).unwrap(),
        ConfusionSpec::new(Decision::Paint(vec![2]), 1, &[vec![2]]).unwrap(),
        ConfusionSpec::new(Decision::Argmax, MAX_CHANNELS + 4, &many).unwrap(),
    ] {
        let mut logits = random(&mut rng, voxels * spec.channels, -4.0, 4.0);
        // Exact ties and logits of exactly 0 (sigmoid 0.5, not over it) in every 13th row.
        for row in logits.chunks_exact_mut(spec.channels).step_by(13) {
            row.fill(0.0);
        }
        // Labels 0..max(channels, 4) - 1, with a few values that are not classes.
        let top = spec.channels.max(4) as u32;
        let labels: Vec<f32> = (0..voxels)
            .map(|i| match i % 97 {
                0 => 2.5,
                1 => -1.0,
                _ => (rng.uniform_range(0.0, top as f64) as u32).min(top - 1) as f32,
            })
            .collect();
        let want = cpu.region_confusion(&logits, &labels, &spec).unwrap();
        assert!(
            want.iter()
                .all(|c| c.true_pos > 0 && c.false_pos > 0 && c.false_neg > 0),
            "{want:?} tests little"
        );
        for blocks in [1, 3, 64] {
            let got = emu_confusion(&spec, &logits, &labels, blocks);
            assert_eq!(got, want, "{:?}, {blocks} blocks", spec.decision);
        }
    }
}

#[test]
fn classes_beyond_64_are_counted() {
    // One sigmoid channel painting class 200 against labels 0 / 200 / 255 / 256 (not a class).
    let spec = ConfusionSpec::new(Decision::Paint(vec![200]), 1, &[vec![200], vec![255]]).unwrap();
    let logits = [3.0, 3.0, -3.0, -3.0, 3.0, 3.0];
    let labels = [200.0, 0.0, 200.0, 255.0, 256.0, 255.0];
    let want = [
        Confusion {
            true_pos: 1,
            false_pos: 3,
            false_neg: 1,
            true_neg: 1,
        },
        Confusion {
            true_pos: 0,
            false_pos: 0,
            false_neg: 2,
            true_neg: 4,
        },
    ];
    assert_eq!(
        Cpu::new()
            .region_confusion(&logits.to_vec(), &labels.to_vec(), &spec)
            .unwrap(),
        want
    );
    assert_eq!(emu_confusion(&spec, &logits, &labels, 2), want);
}
