//! The norm, dropout, matmul, softmax, bce and cross-entropy kernels of
//! the CUDA backend against the CPU backend (the numerical reference) on a real device, at
//! training sizes. Ignored by default; scripts/gpu-check.sh runs them with
//! `--include-ignored`. Each test opens the device and fails without one. Inputs are random
//! with a fresh seed per run (printed on failure), and every buffer the pool hands out is
//! NaN-filled first, so an output element a kernel forgets to write fails the comparison.
//!
//! Tolerance (f32): |cuda - cpu| <= 1e-5 * max(|cpu|, floor) per element, with the floor
//! of tests/cuda_harness_ops_a.rs: 0 (purely relative) where both sides compute an output
//! the same way, the output's largest |cpu| where it is a sum of terms of either sign
//! (matrix products, normalisation outputs and gradients, softmax backward, BCE and
//! cross-entropy gradients). Dropout masks and one-hot encodings must match bit for bit,
//! and bad labels must give the CPU's error message.
mod common;

use common::{assert_parity_within, device, fresh_seed, largest_magnitude, random, Tolerance};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::Cuda;
use voxseg::backend::BackendBase;
use voxseg::rng::Rng;
use voxseg::tensor_ops::bce::BceParams;
use voxseg::tensor_ops::dropout::DropoutParams;
use voxseg::tensor_ops::matmul::MatmulParams;
use voxseg::tensor_ops::norm::{NormKind, NormParams};
use voxseg::tensor_ops::{
    BceKernel, CrossEntropyKernel, DropoutKernel, MatmulKernel, NormKernel, SoftmaxKernel,
    SoftmaxOp,
};

const TOL: f32 = 1e-5;

/// |cuda - cpu| <= TOL * max(|cpu|, floor) per element (see the module comment).
fn assert_within(what: &str, seed: u64, gpu: &[f32], cpu: &[f32], floor: f32) {
    assert_parity_within(what, seed, gpu, cpu, Tolerance::at_most(TOL, floor));
}

/// Relative error per element.
fn assert_parity(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_within(what, seed, gpu, cpu, 0.0);
}

/// Error relative to the output's largest magnitude.
fn assert_parity_scaled(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_within(what, seed, gpu, cpu, largest_magnitude(what, cpu));
}

fn norm_params(dims: [usize; 5], kind: NormKind, groups: usize, neg_slope: f64) -> NormParams {
    let [n, d, h, w, c] = dims;
    NormParams {
        n,
        spatial: d * h * w,
        c,
        groups,
        eps: 1e-5,
        neg_slope,
        kind,
        fixed_stats: false,
    }
}

/// Statistics (unless fixed), forward and backward on both backends.
fn check_norm(gpu: &Cuda, p: NormParams, seed: u64) {
    let cpu = Cpu::new();
    let mut rng = Rng::new(seed);
    let n = p.numel();
    let x = random(&mut rng, n, -1.0, 3.0);
    let dy = random(&mut rng, n, -1.0, 1.0);
    let gamma = random(&mut rng, p.c, 0.5, 1.5);
    let beta = random(&mut rng, p.c, -0.5, 0.5);
    let what = format!("{p:?}");
    let (mean, var) = if p.fixed_stats {
        let s = p.stats_len();
        (
            random(&mut rng, s, -0.5, 0.5),
            random(&mut rng, s, 0.5, 2.0),
        )
    } else {
        let (m, v) = cpu.norm_stats(&x, &p).unwrap();
        let (gm, gv) = gpu.norm_stats(&gpu.upload(&x).unwrap(), &p).unwrap();
        assert_parity(
            &format!("{what} mean"),
            seed,
            &gpu.download(&gm).unwrap(),
            &m,
        );
        assert_parity(
            &format!("{what} var"),
            seed,
            &gpu.download(&gv).unwrap(),
            &v,
        );
        (m, v)
    };
    let up = |v: &[f32]| gpu.upload(v).unwrap();
    let (gx, gdy, gmean, gvar) = (up(&x), up(&dy), up(&mean), up(&var));
    let (ggamma, gbeta) = (up(&gamma), up(&beta));
    let y = cpu
        .norm_forward(&x, &mean, &var, Some(&gamma), Some(&beta), &p)
        .unwrap();
    let gy = gpu
        .norm_forward(&gx, &gmean, &gvar, Some(&ggamma), Some(&gbeta), &p)
        .unwrap();
    assert_parity_scaled(&format!("{what} y"), seed, &gpu.download(&gy).unwrap(), &y);
    // Both backwards recompute the pre-activation from the same statistics, rounding as
    // each other, so they choose the same activation slopes.
    for needs in [[true; 3], [true, false, false], [false, true, true]] {
        let want = cpu
            .norm_backward(&x, &dy, &mean, &var, Some(&gamma), Some(&beta), &p, needs)
            .unwrap();
        let (g, b) = (Some(&ggamma), Some(&gbeta));
        let got = gpu
            .norm_backward(&gx, &gdy, &gmean, &gvar, g, b, &p, needs)
            .unwrap();
        for (name, g, c) in [
            ("dx", got.dx, want.dx),
            ("dgamma", got.dgamma, want.dgamma),
            ("dbeta", got.dbeta, want.dbeta),
        ] {
            assert_eq!(g.is_some(), c.is_some(), "{what} {name} presence");
            if let (Some(g), Some(c)) = (g, c) {
                let label = format!("{what} needs {needs:?} {name}");
                assert_parity_scaled(&label, seed, &gpu.download(&g).unwrap(), &c);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn instance_norm_leaky_relu_matches_cpu() {
    let gpu = device();
    let seed = fresh_seed();
    // The U-Net's hot pattern: instance norm with a fused LeakyReLU(0.01), 32 channels.
    check_norm(
        &gpu,
        norm_params([2, 32, 32, 32, 32], NormKind::Group, 32, 0.01),
        seed,
    );
}

#[test]
#[ignore = "needs a CUDA device"]
fn batch_group_and_eval_norms_match_cpu() {
    let gpu = device();
    let seed = fresh_seed();
    check_norm(
        &gpu,
        norm_params([2, 17, 16, 15, 24], NormKind::Batch, 1, 0.0),
        seed,
    );
    check_norm(
        &gpu,
        norm_params([3, 9, 10, 11, 12], NormKind::Group, 4, 1.0),
        seed + 1,
    );
    check_norm(
        &gpu,
        norm_params([2, 9, 10, 11, 7], NormKind::Group, 1, 0.2),
        seed + 2,
    );
    let eval = NormParams {
        fixed_stats: true,
        ..norm_params([2, 13, 12, 11, 16], NormKind::Batch, 1, 0.01)
    };
    check_norm(&gpu, eval, seed + 3);

    let cpu = Cpu::new();
    let mut rng = Rng::new(seed);
    let moving = random(&mut rng, 320, 0.1, 2.0);
    let batch = random(&mut rng, 320, 0.1, 2.0);
    let mut want = moving.clone();
    cpu.norm_update_moving(&mut want, &batch, 0.99, 1.001)
        .unwrap();
    let mut got = gpu.upload(&moving).unwrap();
    gpu.norm_update_moving(&mut got, &gpu.upload(&batch).unwrap(), 0.99, 1.001)
        .unwrap();
    assert_parity("moving", seed, &gpu.download(&got).unwrap(), &want);
}

#[test]
#[ignore = "needs a CUDA device"]
fn dropout_masks_are_bit_identical_to_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let dims = [2, 32, 32, 33, 16];
    let n: usize = dims.iter().product();
    let x = random(&mut rng, n, -2.0, 2.0);
    let gx = gpu.upload(&x).unwrap();
    for (spatial, p) in [(false, 0.3), (true, 0.5)] {
        let params = DropoutParams {
            seed,
            stream: 7,
            threshold: p as f32,
            scale: 1.0 / (1.0 - p),
            channels: dims[4],
            example_len: n / dims[0],
            spatial,
        };
        let want = cpu.dropout_apply(&x, &params).unwrap();
        let got = gpu
            .download(&gpu.dropout_apply(&gx, &params).unwrap())
            .unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "seed {seed} spatial {spatial} [{i}]"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn matmul_matches_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (m, n, k) in [(300, 200, 150), (1, 1, 1), (129, 65, 17)] {
        let a = random(&mut rng, m * k, -1.0, 1.0);
        let b = random(&mut rng, k * n, -1.0, 1.0);
        let bias = random(&mut rng, n, -1.0, 1.0);
        let (ga, gb, gbias) = (
            gpu.upload(&a).unwrap(),
            gpu.upload(&b).unwrap(),
            gpu.upload(&bias).unwrap(),
        );
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = MatmulParams {
                m,
                n,
                k,
                trans_a,
                trans_b,
            };
            for with_bias in [false, true] {
                let want = cpu.matmul(&a, &b, with_bias.then_some(&bias), &p).unwrap();
                let got = gpu
                    .matmul(&ga, &gb, with_bias.then_some(&gbias), &p)
                    .unwrap();
                let what = format!("{p:?} bias {with_bias}");
                assert_parity_scaled(&what, seed, &gpu.download(&got).unwrap(), &want);
            }
        }
    }
    // A dense layer's weight gradient over 2^18 voxels: split k.
    let (m, n, k) = (32, 3, 1 << 18);
    let a = random(&mut rng, m * k, -1.0, 1.0);
    let b = random(&mut rng, k * n, -1.0, 1.0);
    let p = MatmulParams {
        m,
        n,
        k,
        trans_a: true,
        trans_b: false,
    };
    let want = cpu.matmul(&a, &b, None, &p).unwrap();
    let got = gpu
        .matmul(&gpu.upload(&a).unwrap(), &gpu.upload(&b).unwrap(), None, &p)
        .unwrap();
    assert_parity_scaled("split-k", seed, &gpu.download(&got).unwrap(), &want);
}

#[test]
#[ignore = "needs a CUDA device"]
fn softmax_matches_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (rows, channels) in [(2 << 15, 4), (3001, 33)] {
        let n = rows * channels;
        let mut x = random(&mut rng, n, -10.0, 10.0);
        x[..channels].fill(95.0);
        let dy = random(&mut rng, n, -1.0, 1.0);
        let gx = gpu.upload(&x).unwrap();
        for op in [SoftmaxOp::Softmax, SoftmaxOp::LogSoftmax] {
            let what = format!("{op:?} {rows}x{channels}");
            let want = cpu.softmax_forward(op, &x, channels).unwrap();
            let got = gpu.softmax_forward(op, &gx, channels).unwrap();
            // Log-probabilities are differences of O(10) terms: their error scales with
            // those terms, not with the (possibly tiny) result.
            let forward = gpu.download(&got).unwrap();
            match op {
                SoftmaxOp::Softmax => assert_parity(&what, seed, &forward, &want),
                SoftmaxOp::LogSoftmax => assert_parity_scaled(&what, seed, &forward, &want),
            }
            let want_dx = cpu.softmax_backward(op, &want, &dy, channels).unwrap();
            let got_dx = gpu
                .softmax_backward(
                    op,
                    &gpu.upload(&want).unwrap(),
                    &gpu.upload(&dy).unwrap(),
                    channels,
                )
                .unwrap();
            let dx = gpu.download(&got_dx).unwrap();
            assert_parity_scaled(&format!("{what} backward"), seed, &dx, &want_dx);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn bce_matches_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (voxels, channels) = (2 * 32 * 32 * 32, 3);
    let n = voxels * channels;
    let x = random(&mut rng, n, -8.0, 8.0);
    let t: Vec<f32> = random(&mut rng, n, 0.0, 1.0)
        .into_iter()
        .map(|v| v.round())
        .collect();
    let w = random(&mut rng, voxels, 0.2, 2.0);
    let dy = [0.5f32];
    let up = |v: &[f32]| gpu.upload(v).unwrap();
    let (gx, gt, gw, gdy) = (up(&x), up(&t), up(&w), up(&dy));
    for (pos_weight, weighted) in [(1.0, false), (2.5, true)] {
        let params = BceParams {
            pos_weight,
            scale: 1.0 / n as f64,
            weight_group: if weighted { channels as u64 } else { 1 },
        };
        let what = format!("{params:?}");
        let want = cpu
            .bce_forward(&x, &t, weighted.then_some(&w), params)
            .unwrap();
        let got = gpu
            .bce_forward(&gx, &gt, weighted.then_some(&gw), params)
            .unwrap();
        assert_parity(
            &format!("{what} loss"),
            seed,
            &gpu.download(&got).unwrap(),
            &want,
        );
        let want = cpu
            .bce_backward(
                &x,
                &t,
                weighted.then_some(&w),
                params,
                &dy.to_vec(),
                [true; 3],
            )
            .unwrap();
        let got = gpu
            .bce_backward(&gx, &gt, weighted.then_some(&gw), params, &gdy, [true; 3])
            .unwrap();
        for (name, g, c) in [
            ("dx", got.0, want.0),
            ("dt", got.1, want.1),
            ("dw", got.2, want.2),
        ] {
            assert_eq!(g.is_some(), c.is_some(), "{what} {name} presence");
            if let (Some(g), Some(c)) = (g, c) {
                let label = format!("{what} {name}");
                assert_parity_scaled(&label, seed, &gpu.download(&g).unwrap(), &c);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn cross_entropy_and_one_hot_match_cpu() {
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (rows, classes) = (2 * 32 * 32 * 32, 4);
    let logits = random(&mut rng, rows * classes, -6.0, 6.0);
    let mut labels: Vec<f32> = (0..rows).map(|_| rng.below(classes) as f32).collect();
    let weights = vec![0.3f32, 1.0, 2.0, 4.0];
    let dy = [1.7f32];
    let up = |v: &[f32]| gpu.upload(v).unwrap();
    let (gl, gy, gw, gdy) = (up(&logits), up(&labels), up(&weights), up(&dy));
    for weighted in [false, true] {
        let what = format!("class weights {weighted}");
        let (loss, total) = cpu
            .cross_entropy_forward(&logits, &labels, weighted.then_some(&weights), classes)
            .unwrap();
        let (gloss, gtotal) = gpu
            .cross_entropy_forward(&gl, &gy, weighted.then_some(&gw), classes)
            .unwrap();
        assert_parity(
            &format!("{what} loss"),
            seed,
            &gpu.download(&gloss).unwrap(),
            &loss,
        );
        assert_parity(
            &format!("{what} total"),
            seed,
            &gpu.download(&gtotal).unwrap(),
            &total,
        );
        let want = cpu
            .cross_entropy_backward(
                &logits,
                &labels,
                weighted.then_some(&weights),
                &total,
                &dy.to_vec(),
                classes,
            )
            .unwrap();
        let got = gpu
            .cross_entropy_backward(
                &gl,
                &gy,
                weighted.then_some(&gw),
                &up(&total),
                &gdy,
                classes,
            )
            .unwrap();
        assert_parity_scaled(
            &format!("{what} dx"),
            seed,
            &gpu.download(&got).unwrap(),
            &want,
        );
    }
    let hot = gpu.download(&gpu.one_hot(&gy, classes).unwrap()).unwrap();
    assert_eq!(hot, cpu.one_hot(&labels, classes).unwrap(), "one_hot");

    labels[rows / 3] = 2.5;
    let gy = up(&labels);
    let want = error_of(cpu.cross_entropy_forward(&logits, &labels, None, classes));
    let got = error_of(gpu.cross_entropy_forward(&gl, &gy, None, classes));
    assert_eq!(got, want);
    let got = error_of(gpu.cross_entropy_backward(&gl, &gy, None, &up(&[1.0]), &gdy, classes));
    assert_eq!(got, want);
    let want = error_of(cpu.one_hot(&labels, classes));
    assert_eq!(error_of(gpu.one_hot(&gy, classes)), want);
}

/// The message of an expected error.
fn error_of<T>(r: voxseg::error::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}
