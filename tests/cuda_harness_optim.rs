//! The multi-tensor optimiser kernels (kernels/optim_step.cu) run on the CPU through the
//! execution harness and are compared with the CPU backend, always (no GPU needed). Inputs
//! are eight tensors of lengths from 0 and 1 to just past a device chunk, with weight decay
//! on some of them, run with the device's chunk size and with a small one that puts many
//! chunk boundaries inside the tensors. Updated buffers carry guard tails.
//!
//! Tolerance: the updates and the scaling are bit-identical to the CPU backend (the kernels
//! round every f64 operation as the CPU does). The sum of squares is the exact f64 sum of
//! exact squares up to the rounding of its adds: within 1e-12 relative of an f64 sum in
//! index order.
mod common;

use common::{assert_bits, check_layout, guarded, random, written};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::emu;
use voxseg::backend::cuda::params_optim_step::{
    AdamKernelParams, OptimTableParams, OptimTensor, ScaleKernelParams, SgdKernelParams,
    OPTIM_CHUNK, OPTIM_THREADS,
};
use voxseg::rng::Rng;
use voxseg::tensor_ops::optim_step::{AdamHyper, AdamSlot, SgdHyper, SgdSlot};
use voxseg::tensor_ops::OptimStepKernel;

const LENS: [usize; 8] = [1, 7, 0, 255, 256, 257, 1000, 16_385];
const CHUNKS: [u64; 2] = [256, OPTIM_CHUNK];
const STEPS: usize = 3;

fn decays(k: usize) -> bool {
    k % 3 != 1
}

fn random_tensors(rng: &mut Rng, lo: f64, hi: f64) -> Vec<Vec<f32>> {
    LENS.iter().map(|&n| random(rng, n, lo, hi)).collect()
}

fn zeros() -> Vec<Vec<f32>> {
    LENS.iter().map(|&n| vec![0.0; n]).collect()
}

fn guard_all(v: &[Vec<f32>]) -> Vec<Vec<f32>> {
    v.iter().map(|t| guarded(t)).collect()
}

/// Gradients with every third entry exactly zero (LazyAdam skips those).
fn sparse_grads(rng: &mut Rng, step: usize) -> Vec<Vec<f32>> {
    random_tensors(rng, -1.0, 1.0)
        .into_iter()
        .map(|g| {
            g.into_iter()
                .enumerate()
                .map(|(i, x)| if (i + step).is_multiple_of(3) { 0.0 } else { x })
                .collect()
        })
        .collect()
}

/// Every harness tensor (guard tail intact) bit-identical to the CPU's.
fn assert_all_bits(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let what = format!("{what} tensor {k} ({} elements)", LENS[k]);
        assert_bits(&what, ("harness", written(g, LENS[k])), ("cpu", w));
    }
}

#[test]
fn param_structs_have_the_cpp_layout() {
    check_layout!(
        "OptimTensor",
        OptimTensor {
            param,
            grad,
            state0,
            state1,
            n,
            first_chunk,
            decay,
            pad_
        }
    );
    check_layout!(
        "OptimTableParams",
        OptimTableParams {
            chunk,
            tensors,
            chunks
        }
    );
    check_layout!(
        "SgdKernelParams",
        SgdKernelParams {
            table,
            lr,
            momentum,
            weight_decay,
            nesterov,
            pad_
        }
    );
    check_layout!(
        "AdamKernelParams",
        AdamKernelParams {
            table,
            lr,
            beta1,
            beta2,
            eps,
            l2,
            decoupled_decay,
            bias_correction1,
            bias_correction2,
            lazy,
            pad_
        }
    );
    check_layout!(
        "ScaleKernelParams",
        ScaleKernelParams {
            table,
            factor,
            pad_
        }
    );
    assert_eq!(
        emu::launch_constant("VX_OPTIM_THREADS"),
        Some(OPTIM_THREADS)
    );
}

#[test]
fn multi_tensor_sgd_is_bit_identical_to_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(16);
    for chunk in CHUNKS {
        for (momentum, nesterov, weight_decay) in [
            (0.0, 0, 0.0),
            (0.0, 0, 3e-2),
            (0.9, 0, 1e-2),
            (0.99, 1, 3e-2),
        ] {
            let h = SgdHyper {
                lr: 0.05,
                momentum,
                weight_decay,
                nesterov,
            };
            let buffers = momentum != 0.0;
            let what = format!("chunk {chunk} {h:?}");
            let start = random_tensors(&mut rng, -1.0, 1.0);
            let (mut want, mut want_buf) = (start.clone(), zeros());
            let (mut got, mut got_buf) = (guard_all(&start), guard_all(&zeros()));
            for step in 0..STEPS {
                let grads = random_tensors(&mut rng, -1.0, 1.0);
                let mut slots: Vec<SgdSlot<'_, Vec<f32>>> = want
                    .iter_mut()
                    .zip(want_buf.iter_mut())
                    .zip(&grads)
                    .enumerate()
                    .map(|(k, ((param, b), grad))| SgdSlot {
                        param,
                        momentum_buf: buffers.then_some(b),
                        grad,
                        decay: decays(k),
                    })
                    .collect();
                cpu.sgd_step_multi(&mut slots, h).unwrap();
                let mut slots: Vec<SgdSlot<'_, [f32]>> = got
                    .iter_mut()
                    .zip(got_buf.iter_mut())
                    .zip(&grads)
                    .zip(LENS)
                    .enumerate()
                    .map(|(k, (((p, b), grad), n))| SgdSlot {
                        param: &mut p[..n],
                        momentum_buf: buffers.then_some(&mut b[..n]),
                        grad,
                        decay: decays(k),
                    })
                    .collect();
                emu::optim_step::sgd(&mut slots, h, chunk).unwrap();
                assert_all_bits(&format!("{what} step {step}"), &got, &want);
                assert_all_bits(&format!("{what} buffer {step}"), &got_buf, &want_buf);
            }
            assert_ne!(want, start, "{what}: the step moved nothing");
        }
    }
}

#[test]
fn multi_tensor_adam_adamw_and_lazy_adam_are_bit_identical_to_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(17);
    for chunk in CHUNKS {
        for (l2, decoupled_decay, lazy) in
            [(0.0, 0.0, 0), (1e-2, 0.0, 0), (0.0, 0.04, 0), (0.0, 0.0, 1)]
        {
            let what = format!("chunk {chunk} l2 {l2} decay {decoupled_decay} lazy {lazy}");
            let start = random_tensors(&mut rng, -1.0, 1.0);
            let mut want = [start.clone(), zeros(), zeros()];
            let mut got = [guard_all(&start), guard_all(&zeros()), guard_all(&zeros())];
            for step in 1..=STEPS {
                let (beta1, beta2) = (0.9f64, 0.999f64);
                let h = AdamHyper {
                    lr: 1e-2,
                    beta1,
                    beta2,
                    eps: 1e-7,
                    l2,
                    decoupled_decay,
                    bias_correction1: 1.0 - beta1.powi(step as i32),
                    bias_correction2: 1.0 - beta2.powi(step as i32),
                    lazy,
                };
                let grads = sparse_grads(&mut rng, step);
                let [p, m, v] = &mut want;
                let mut slots: Vec<AdamSlot<'_, Vec<f32>>> = p
                    .iter_mut()
                    .zip(m.iter_mut())
                    .zip(v.iter_mut())
                    .zip(&grads)
                    .enumerate()
                    .map(|(k, (((param, m), v), grad))| AdamSlot {
                        param,
                        m,
                        v,
                        grad,
                        decay: decays(k),
                    })
                    .collect();
                cpu.adam_step_multi(&mut slots, h).unwrap();
                let [p, m, v] = &mut got;
                let mut slots: Vec<AdamSlot<'_, [f32]>> = p
                    .iter_mut()
                    .zip(m.iter_mut())
                    .zip(v.iter_mut())
                    .zip(&grads)
                    .zip(LENS)
                    .enumerate()
                    .map(|(k, ((((p, m), v), grad), n))| AdamSlot {
                        param: &mut p[..n],
                        m: &mut m[..n],
                        v: &mut v[..n],
                        grad,
                        decay: decays(k),
                    })
                    .collect();
                emu::optim_step::adam(&mut slots, h, chunk).unwrap();
                for (name, g, w) in [
                    ("param", &got[0], &want[0]),
                    ("m", &got[1], &want[1]),
                    ("v", &got[2], &want[2]),
                ] {
                    assert_all_bits(&format!("{what} {name} step {step}"), g, w);
                }
            }
            assert_ne!(want[0], start, "{what}: the step moved nothing");
        }
    }
}

#[test]
fn sum_of_squares_matches_an_f64_sum_and_scaling_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(18);
    let x = random_tensors(&mut rng, -3.0, 3.0);
    let want: f64 = x.iter().flatten().map(|&v| (v as f64) * (v as f64)).sum();
    for chunk in CHUNKS {
        let views: Vec<&[f32]> = x.iter().map(|t| &t[..]).collect();
        let got = emu::optim_step::sum_squares(&views, chunk).unwrap();
        assert!(
            (got - want).abs() <= 1e-12 * want,
            "chunk {chunk}: harness {got}, f64 sum {want}"
        );
        let mut want_scaled = x.clone();
        let mut refs: Vec<&mut Vec<f32>> = want_scaled.iter_mut().collect();
        cpu.scale_multi(&mut refs, 0.37).unwrap();
        let mut got_scaled = guard_all(&x);
        let mut views: Vec<&mut [f32]> = got_scaled
            .iter_mut()
            .zip(LENS)
            .map(|(t, n)| &mut t[..n])
            .collect();
        emu::optim_step::scale(&mut views, 0.37, chunk).unwrap();
        assert_all_bits(&format!("scale, chunk {chunk}"), &got_scaled, &want_scaled);
    }
    assert_eq!(emu::optim_step::sum_squares(&[], OPTIM_CHUNK).unwrap(), 0.0);
    let with_nan = [1.0, f32::NAN, 2.0];
    let nan = emu::optim_step::sum_squares(&[&x[1], &with_nan], 256).unwrap();
    assert!(nan.is_nan(), "a NaN gradient gives a NaN norm, got {nan}");
}
