//! The multi-tensor optimiser kernels of the CUDA backend against the CPU backend on a real
//! device. Ignored by default; scripts/gpu-check.sh runs them with `--include-ignored`.
//! Each test opens the device and fails without one. Inputs are random with a fresh seed
//! per run (printed on failure), eight tensors from 0 and 1 element to past 2^20, with
//! weight decay on some; every buffer the pool hands out is NaN-filled first.
//!
//! Tolerance: updates and scaling must match the CPU bit for bit (the kernels round every
//! f64 operation as the CPU does), and all tensors at once must equal one tensor per call.
//! The sum of squares must equal the harness's bit for bit (same chunks, same order) and
//! be within 1e-12 relative of an f64 sum. Clipping through `clip_grad_norm` differs from
//! the CPU's only in the CPU's f32 squares: the norms within 1e-6 relative, the clipped
//! gradients within 1e-6 relative per element.
mod common;

use common::{assert_parity_bits, assert_parity_within, device, fresh_seed, random, Tolerance};
use voxseg::autograd::{Gradients, LeafId, Tape, Var};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::params_optim_step::OPTIM_CHUNK;
use voxseg::backend::cuda::{emu, Cuda, CudaStorage};
use voxseg::backend::{Backend, BackendBase};
use voxseg::nn::Param;
use voxseg::optim::{clip_grad_norm, OptimizerSpec};
use voxseg::rng::Rng;
use voxseg::tensor::Tensor;
use voxseg::tensor_ops::optim_step::{AdamHyper, AdamSlot, SgdHyper, SgdSlot};
use voxseg::tensor_ops::OptimStepKernel;

const LENS: [usize; 8] = [1, 7, 0, 255, 16_383, 16_384, 16_385, (1 << 20) + 3];
const STEPS: usize = 3;

fn decays(k: usize) -> bool {
    k % 3 != 1
}

fn random_tensors(rng: &mut Rng) -> Vec<Vec<f32>> {
    LENS.iter().map(|&n| random(rng, n, -1.0, 1.0)).collect()
}

fn upload(gpu: &Cuda, host: &[Vec<f32>]) -> Vec<CudaStorage> {
    host.iter().map(|t| gpu.upload(t).unwrap()).collect()
}

fn zeros(gpu: &Cuda) -> Vec<CudaStorage> {
    LENS.iter().map(|&n| gpu.zeros(n).unwrap()).collect()
}

fn assert_all_bits(what: &str, seed: u64, gpu: &Cuda, got: &[CudaStorage], want: &[Vec<f32>]) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let what = format!("{what} tensor {k} ({} elements)", LENS[k]);
        assert_parity_bits(&what, seed, &gpu.download(g).unwrap(), w);
    }
}

/// One SGD step over the tensors `range` of the state, as one multi-tensor call.
fn sgd_step<B: OptimStepKernel>(
    b: &B,
    [p, buf]: &mut [Vec<B::Storage>; 2],
    grads: &[B::Storage],
    range: std::ops::Range<usize>,
    h: SgdHyper,
) {
    let with_buffers = h.momentum != 0.0;
    let mut slots: Vec<SgdSlot<'_, B::Storage>> = p[range.clone()]
        .iter_mut()
        .zip(&mut buf[range.clone()])
        .zip(&grads[range.clone()])
        .zip(range)
        .map(|(((param, b), grad), k)| SgdSlot {
            param,
            momentum_buf: with_buffers.then_some(b),
            grad,
            decay: decays(k),
        })
        .collect();
    b.sgd_step_multi(&mut slots, h).unwrap();
}

/// One Adam step over the tensors `range` of the state, as one multi-tensor call.
fn adam_step<B: OptimStepKernel>(
    b: &B,
    [p, m, v]: &mut [Vec<B::Storage>; 3],
    grads: &[B::Storage],
    range: std::ops::Range<usize>,
    h: AdamHyper,
) {
    let mut slots: Vec<AdamSlot<'_, B::Storage>> = p[range.clone()]
        .iter_mut()
        .zip(&mut m[range.clone()])
        .zip(&mut v[range.clone()])
        .zip(&grads[range.clone()])
        .zip(range)
        .map(|((((param, m), v), grad), k)| AdamSlot {
            param,
            m,
            v,
            grad,
            decay: decays(k),
        })
        .collect();
    b.adam_step_multi(&mut slots, h).unwrap();
}

#[test]
#[ignore = "needs a CUDA device"]
fn multi_tensor_sgd_is_bit_identical_to_the_cpu_and_to_one_tensor_per_call() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (momentum, nesterov, weight_decay) in [(0.0, 0, 3e-2), (0.9, 0, 1e-2), (0.99, 1, 3e-2)] {
        let h = SgdHyper {
            lr: 0.05,
            momentum,
            weight_decay,
            nesterov,
        };
        let start = random_tensors(&mut rng);
        let zero: Vec<Vec<f32>> = LENS.iter().map(|&n| vec![0.0; n]).collect();
        let mut want = [start.clone(), zero];
        let mut all = [upload(&gpu, &start), zeros(&gpu)];
        let mut one = [upload(&gpu, &start), zeros(&gpu)];
        for _ in 0..STEPS {
            let grads = random_tensors(&mut rng);
            sgd_step(&cpu, &mut want, &grads, 0..LENS.len(), h);
            let dev_grads = upload(&gpu, &grads);
            sgd_step(&gpu, &mut all, &dev_grads, 0..LENS.len(), h);
            for k in 0..LENS.len() {
                sgd_step(&gpu, &mut one, &dev_grads, k..k + 1, h);
            }
        }
        for (name, i) in [("param", 0), ("buffer", 1)] {
            let what = format!("{h:?} {name}");
            assert_all_bits(&format!("{what} all"), seed, &gpu, &all[i], &want[i]);
            assert_all_bits(&format!("{what} one"), seed, &gpu, &one[i], &want[i]);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn multi_tensor_adam_variants_are_bit_identical_to_the_cpu_and_to_one_tensor_per_call() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (l2, decoupled_decay, lazy) in [(1e-2, 0.0, 0), (0.0, 0.04, 0), (0.0, 0.0, 1)] {
        let start = random_tensors(&mut rng);
        let zero: Vec<Vec<f32>> = LENS.iter().map(|&n| vec![0.0; n]).collect();
        let mut want = [start.clone(), zero.clone(), zero];
        let mut all = [upload(&gpu, &start), zeros(&gpu), zeros(&gpu)];
        let mut one = [upload(&gpu, &start), zeros(&gpu), zeros(&gpu)];
        for t in 1..=STEPS as i32 {
            let h = AdamHyper {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
                l2,
                decoupled_decay,
                bias_correction1: 1.0 - 0.9f64.powi(t),
                bias_correction2: 1.0 - 0.999f64.powi(t),
                lazy,
            };
            // Every fifth gradient exactly zero (LazyAdam leaves those entries alone).
            let grads: Vec<Vec<f32>> = random_tensors(&mut rng)
                .into_iter()
                .map(|g| {
                    let zeroed = |(i, x): (usize, f32)| {
                        if (i + t as usize).is_multiple_of(5) {
                            0.0
                        } else {
                            x
                        }
                    };
                    g.into_iter().enumerate().map(zeroed).collect()
                })
                .collect();
            adam_step(&cpu, &mut want, &grads, 0..LENS.len(), h);
            let dev_grads = upload(&gpu, &grads);
            adam_step(&gpu, &mut all, &dev_grads, 0..LENS.len(), h);
            for k in 0..LENS.len() {
                adam_step(&gpu, &mut one, &dev_grads, k..k + 1, h);
            }
        }
        for (name, i) in [("param", 0), ("m", 1), ("v", 2)] {
            let what = format!("adam l2 {l2} decay {decoupled_decay} lazy {lazy} {name}");
            assert_all_bits(&format!("{what} all"), seed, &gpu, &all[i], &want[i]);
            assert_all_bits(&format!("{what} one"), seed, &gpu, &one[i], &want[i]);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn sum_of_squares_equals_the_harness_and_scaling_the_cpu() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let x = random_tensors(&mut rng);
    let dev = upload(&gpu, &x);
    let refs: Vec<&CudaStorage> = dev.iter().collect();
    let got = gpu.sum_squares_multi(&refs).unwrap();
    let views: Vec<&[f32]> = x.iter().map(|t| &t[..]).collect();
    let harness = emu::optim_step::sum_squares(&views, OPTIM_CHUNK).unwrap();
    assert_eq!(
        got.to_bits(),
        harness.to_bits(),
        "cuda {got}, harness {harness} (seed {seed})"
    );
    let f64_sum: f64 = x.iter().flatten().map(|&v| (v as f64) * (v as f64)).sum();
    assert!(
        (got - f64_sum).abs() <= 1e-12 * f64_sum,
        "cuda {got}, f64 {f64_sum} (seed {seed})"
    );
    let mut dev = dev;
    let mut refs: Vec<&mut CudaStorage> = dev.iter_mut().collect();
    gpu.scale_multi(&mut refs, 0.37).unwrap();
    let mut want = x.clone();
    let mut refs: Vec<&mut Vec<f32>> = want.iter_mut().collect();
    cpu.scale_multi(&mut refs, 0.37).unwrap();
    assert_all_bits("scale", seed, &gpu, &dev, &want);
}

/// Parameters of the lengths `LENS` (zeros) and gradients `values` for them.
fn params_and_grads<B: Backend>(b: &B, values: &[Vec<f32>]) -> (Vec<Param<B>>, Gradients<B>) {
    let tape = Tape::new();
    let mut loss = Var::constant(Tensor::scalar(b, 0.0).unwrap());
    let mut params = Vec::new();
    for (k, v) in values.iter().enumerate() {
        let id = LeafId::fresh();
        let x = tape.leaf(Tensor::zeros(b, [v.len()]).unwrap(), id);
        let c = Var::constant(Tensor::from_f32(b, [v.len()], v).unwrap());
        loss = loss.add(&x.mul(&c).unwrap().sum().unwrap()).unwrap();
        let mut p = Param::new(
            format!("p{k}"),
            Tensor::zeros(b, [v.len()]).unwrap(),
            decays(k),
        );
        p.id = id;
        params.push(p);
    }
    (params, tape.backward(&loss).unwrap())
}

#[test]
#[ignore = "needs a CUDA device"]
fn clipping_matches_the_cpu_and_a_clipped_step_allocates_nothing_new() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let values = random_tensors(&mut rng);
    let (_, mut want) = params_and_grads(&cpu, &values);
    let (_, mut got) = params_and_grads(&gpu, &values);
    let want_norm = clip_grad_norm(&mut want, 1.0).unwrap();
    let got_norm = clip_grad_norm(&mut got, 1.0).unwrap();
    assert!(
        (got_norm - want_norm).abs() <= 1e-6 * want_norm && want_norm > 1.0,
        "norms: cuda {got_norm}, cpu {want_norm} (seed {seed})"
    );
    let tol = Tolerance::at_most(1e-6, 0.0);
    for ((_, w), (_, g)) in sorted(&want).into_iter().zip(sorted(&got)) {
        let what = format!("clipped gradient of {} elements", w.numel());
        assert_parity_within(&what, seed, &g.to_vec().unwrap(), &w.to_vec().unwrap(), tol);
    }

    let (mut params, _) = params_and_grads(&gpu, &values);
    let mut opt = OptimizerSpec::nnunet_sgd().build::<Cuda>().unwrap();
    let mut clipped_step = |params: &mut Vec<Param<Cuda>>| {
        let (fresh, mut grads) = params_and_grads(&gpu, &values);
        for (p, f) in params.iter_mut().zip(fresh) {
            p.id = f.id;
        }
        clip_grad_norm(&mut grads, 1.0).unwrap();
        let mut refs: Vec<&mut Param<Cuda>> = params.iter_mut().collect();
        opt.step(&mut refs, &grads, 1e-2).unwrap();
    };
    clipped_step(&mut params);
    clipped_step(&mut params);
    let before = gpu.pool_stats().device_allocations;
    for _ in 0..3 {
        clipped_step(&mut params);
    }
    gpu.synchronize().unwrap();
    let after = gpu.pool_stats().device_allocations;
    assert_eq!(
        after, before,
        "device allocations after warm-up: {before} -> {after}"
    );
}

fn sorted<B: Backend>(g: &Gradients<B>) -> Vec<(LeafId, Tensor<B>)> {
    let mut v: Vec<_> = g.iter().map(|(id, t)| (*id, t.clone())).collect();
    v.sort_by_key(|(id, _)| *id);
    v
}
