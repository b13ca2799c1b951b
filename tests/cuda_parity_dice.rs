//! The fused Dice sums (kernels/dice.cu) and the validation counts (kernels/confusion.cu)
//! of the CUDA backend against the CPU backend on a real device, at training sizes. Ignored by default; scripts/gpu-check.sh runs them with
//! `--include-ignored`. Each test opens the device and fails without one. Inputs are random
//! with a fresh seed per run (printed on failure), and every buffer the pool hands out is
//! NaN-filled first, so an output element a kernel forgets to write fails the comparison.
//!
//! Tolerance (f32): |cuda - cpu| < 1e-5 * |cpu| per sum (sums of non-negative terms, so
//! purely relative), and < 1e-5 * max |cpu| for the gradient and the loss's gradient
//! (products and sums of terms of either sign). Two runs of the same launch must give the
//! same bits (no float atomics). Counts must be equal; their logits are multiples of 1/8,
//! so that every tie is exact and every other pair is far apart: the device's expf may
//! differ from the host's in the last bit, which could flip a decision only within an ulp
//! of a tie or of 0.5.
mod common;

use common::{
    assert_parity_bits, assert_parity_within, device, fresh_seed, largest_magnitude, random,
    Tolerance,
};
use voxseg::autograd::{LeafId, Tape};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::{Backend, BackendBase};
use voxseg::loss::{soft_dice, DiceOptions};
use voxseg::rng::Rng;
use voxseg::tensor::Tensor;
use voxseg::tensor_ops::confusion::{ConfusionSpec, Decision};
use voxseg::tensor_ops::dice_sums::DiceSumsShape;
use voxseg::tensor_ops::{ConfusionKernel, DiceSumsKernel};

const TOL: f32 = 1e-5;

fn assert_relative(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_parity_within(what, seed, gpu, cpu, Tolerance::below(TOL, 0.0));
}

fn assert_scaled(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    let floor = largest_magnitude(what, cpu);
    assert_parity_within(what, seed, gpu, cpu, Tolerance::below(TOL, floor));
}

/// Probabilities in [0, 1] and 0/1 targets with about 30% foreground.
fn inputs(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let p = random(rng, n, 0.0, 1.0);
    let t = random(rng, n, 0.0, 1.0)
        .into_iter()
        .map(|v| if v < 0.3 { 1.0 } else { 0.0 })
        .collect();
    (p, t)
}

#[test]
#[ignore = "needs a CUDA device"]
fn dice_sums_and_gradient_match_cpu_and_repeat_bit_for_bit() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dims in [
        [2, 128, 128, 128, 3],
        [2, 37, 41, 43, 4],
        [3, 17, 19, 23, 1],
        [1, 9, 11, 13, 300],
    ] {
        let n: usize = dims.iter().product();
        let (p, t) = inputs(&mut rng, n);
        let (gp, gt) = (gpu.upload(&p).unwrap(), gpu.upload(&t).unwrap());
        for per_sample in [true, false] {
            let shape = DiceSumsShape::of(dims, per_sample);
            let what = format!("{dims:?} per_sample {per_sample}");
            let want = cpu.dice_sums(&p, &t, shape).unwrap();
            let first = gpu.dice_sums(&gp, &gt, shape).unwrap();
            let got = gpu.download(&first).unwrap();
            assert_relative(&format!("{what} sums"), seed, &got, &want);
            let again = gpu
                .download(&gpu.dice_sums(&gp, &gt, shape).unwrap())
                .unwrap();
            assert_parity_bits(&format!("{what} rerun"), seed, &again, &got);

            let grad = random(&mut rng, shape.sums_len(), -2.0, 2.0);
            let want = cpu.dice_sums_backward(&t, &grad, shape).unwrap();
            let gg = gpu.upload(&grad).unwrap();
            let got = gpu.dice_sums_backward(&gt, &gg, shape).unwrap();
            assert_scaled(
                &format!("{what} dp"),
                seed,
                &gpu.download(&got).unwrap(),
                &want,
            );
        }
    }
}

/// The soft Dice loss and its gradient with respect to the probabilities, on `backend`.
fn soft_dice_on<B: Backend<E = f32>>(
    backend: &B,
    dims: [usize; 5],
    p: &[f32],
    t: &[f32],
    opts: &DiceOptions,
) -> (f32, Vec<f32>) {
    let tape = Tape::new();
    let id = LeafId::fresh();
    let pv = tape.leaf(Tensor::from_host(backend, dims, p).unwrap(), id);
    let tv = voxseg::autograd::Var::constant(Tensor::from_host(backend, dims, t).unwrap());
    let loss = soft_dice(&pv, &tv, opts).unwrap();
    let value = loss.value().item().unwrap() as f32;
    let grads = tape.backward(&loss).unwrap();
    (value, grads.get(id).unwrap().to_vec().unwrap())
}

#[test]
#[ignore = "needs a CUDA device"]
fn soft_dice_loss_and_gradient_match_cpu() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let dims = [2, 64, 64, 64, 3];
    let (p, t) = inputs(&mut rng, dims.iter().product());
    for batch_dice in [false, true] {
        let opts = DiceOptions {
            batch_dice,
            ..DiceOptions::default()
        };
        let what = format!("{opts:?}");
        let (gl, gd) = soft_dice_on(&gpu, dims, &p, &t, &opts);
        let (cl, cd) = soft_dice_on(&cpu, dims, &p, &t, &opts);
        assert_relative(&format!("{what} loss"), seed, &[gl], &[cl]);
        assert_scaled(&format!("{what} gradient"), seed, &gd, &cd);
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn validation_counts_equal_cpu() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let voxels = 131 * 157 * 149;
    let brats = [vec![1, 2, 3], vec![1, 3], vec![3]];
    let classes = [vec![1], vec![2], vec![3]];
    for spec in [
        ConfusionSpec::new(Decision::Paint(vec![2, 1, 3]), 3, &brats).unwrap(),
        ConfusionSpec::new(Decision::Argmax, 4, &classes).unwrap(),
    ] {
        let logits: Vec<f32> = (0..voxels * spec.channels)
            .map(|_| (rng.uniform_range(-32.0, 33.0).floor() / 8.0) as f32)
            .collect();
        let labels: Vec<f32> = (0..voxels)
            .map(|_| rng.uniform_range(0.0, 4.0).floor() as f32)
            .collect();
        let want = cpu.region_confusion(&logits, &labels, &spec).unwrap();
        let (gl, gt) = (gpu.upload(&logits).unwrap(), gpu.upload(&labels).unwrap());
        let got = gpu.region_confusion(&gl, &gt, &spec).unwrap();
        assert_eq!(got, want, "{:?} (seed {seed})", spec.decision);
    }
}
