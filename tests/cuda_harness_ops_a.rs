//! The norm, dropout, matmul, softmax, bce and cross-entropy kernels run on
//! the CPU through the execution harness (kernels/emu), checked against the CPU backend
//! (the numerical reference) on small odd shapes, with the launch plans the device uses and
//! small block targets so that split reductions and grid-stride loops are exercised.
//! Outputs and scratch buffers start as NaN (an element a kernel forgets to write, or a
//! partial a reduction forgets, shows up as NaN) and outputs carry a guard tail that must
//! stay untouched.
//!
//! Tolerance (f32): |harness - cpu| <= 1e-5 * max(|cpu|, floor) per element. The floor is 0
//! (purely relative) where each output is computed the same way on both sides; where an
//! output is a sum of terms of either sign, so that a different but equally exact order of
//! operations leaves an error relative to its terms rather than to itself (matrix products,
//! normalisation gradients, the softmax backward, BCE gradients), the floor is the largest
//! |cpu| of that output. Dropout masks and one-hot encodings must match bit for bit.
mod common;

use common::{check_layout, guarded, largest_magnitude, poisoned, random, written, Tolerance};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::block_sum::{BlockSumPlan, SUM_THREADS};
use voxseg::backend::cuda::emu;
use voxseg::backend::cuda::emu::norm::{NormFinishOutputs, NormInputs};
use voxseg::backend::cuda::launch::{self, ReducePlan};
use voxseg::backend::cuda::params::LaunchDims;
use voxseg::backend::cuda::params_bce::BceKernelParams;
use voxseg::backend::cuda::params_cross_entropy::CrossEntropyKernelParams;
use voxseg::backend::cuda::params_dropout::DropoutKernelParams;
use voxseg::backend::cuda::params_matmul::*;
use voxseg::backend::cuda::params_norm::{
    NormKernelParams, NormMovingParams, NormPlan, NORM_BACKWARD_COEF_PLANES, NORM_GRAD_BETA,
    NORM_GRAD_DX, NORM_GRAD_GAMMA,
};
use voxseg::backend::cuda::params_softmax::SoftmaxKernelParams;
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

/// |harness - cpu| <= TOL * max(|cpu|, floor) everywhere (NaN only where cpu is NaN).
fn assert_within(what: &str, got: &[f32], want: &[f32], floor: f32) {
    let tol = Tolerance::at_most(TOL, floor);
    common::assert_within(what, ("harness", got), ("cpu", want), tol);
}

/// Relative error per element.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_within(what, got, want, 0.0);
}

/// Error relative to the output's largest magnitude (sums of terms of either sign).
fn assert_close_scaled(what: &str, got: &[f32], want: &[f32]) {
    assert_within(what, got, want, largest_magnitude(what, want));
}

#[test]
fn param_structs_have_the_cpp_layout() {
    check_layout!(
        "NormKernelParams",
        NormKernelParams {
            outer,
            mid,
            c,
            cpg,
            eps,
            neg_slope,
            has_gamma,
            has_beta,
            fixed_stats
        }
    );
    check_layout!(
        "NormMovingParams",
        NormMovingParams {
            n,
            momentum,
            correction
        }
    );
    check_layout!(
        "DropoutKernelParams",
        DropoutKernelParams {
            seed,
            n,
            channels,
            example_len,
            threshold,
            scale,
            stream,
            spatial
        }
    );
    check_layout!(
        "MatmulKernelParams",
        MatmulKernelParams {
            m,
            n,
            k,
            k_per_split,
            trans_a,
            trans_b,
            has_bias,
            pad_
        }
    );
    check_layout!(
        "SoftmaxKernelParams",
        SoftmaxKernelParams {
            rows,
            channels,
            log,
            pad_
        }
    );
    check_layout!(
        "BceKernelParams",
        BceKernelParams {
            n,
            weight_group,
            pos_weight,
            scale,
            has_weight,
            pad_
        }
    );
    check_layout!(
        "CrossEntropyKernelParams",
        CrossEntropyKernelParams {
            rows,
            classes,
            has_weights,
            pad_
        }
    );
    for (name, value) in [
        ("VX_MATMUL_BM", MATMUL_BM),
        ("VX_MATMUL_BN", MATMUL_BN),
        ("VX_MATMUL_BK", MATMUL_BK),
        ("VX_MATMUL_THREADS", MATMUL_THREADS),
        ("VX_SUM_THREADS", SUM_THREADS),
        ("VX_NORM_GRAD_DX", NORM_GRAD_DX),
        ("VX_NORM_GRAD_GAMMA", NORM_GRAD_GAMMA),
        ("VX_NORM_GRAD_BETA", NORM_GRAD_BETA),
    ] {
        assert_eq!(emu::launch_constant(name), Some(value), "{name}");
    }
}

// ---- normalisation ----

/// The device's statistics: partial sums per split, then one thread per statistic.
fn emu_norm_stats(plan: &NormPlan, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let k = plan.params;
    let mut partial = vec![f64::NAN; plan.partial_len()];
    emu::norm::stats_partial(&plan.reduce_dims, plan.reduce, k, x, &mut partial).unwrap();
    let s = k.stats_len();
    let (mut mean, mut var) = (poisoned(s), poisoned(s));
    emu::norm::stats_finish(
        &plan.stats_dims,
        plan.reduce,
        k,
        &partial,
        x,
        &mut mean,
        &mut var,
    )
    .unwrap();
    (written(&mean, s).to_vec(), written(&var, s).to_vec())
}

fn emu_norm_forward(
    plan: &NormPlan,
    x: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
) -> Vec<f32> {
    let k = plan.params;
    let mut coef = vec![f32::NAN; 2 * k.pairs()];
    let inputs = NormInputs {
        mean,
        var,
        gamma,
        beta,
    };
    emu::norm::affine(&plan.pairs_dims, k, &inputs, &mut coef).unwrap();
    let mut y = poisoned(x.len());
    emu::norm::apply(&plan.element_dims, k, x, &coef, &mut y).unwrap();
    written(&y, x.len()).to_vec()
}

type Grads = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// The device's backward, launch for launch as `NormKernel for Cuda` runs it.
#[allow(clippy::too_many_arguments)]
fn emu_norm_backward(
    plan: &NormPlan,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    needs: [bool; 3],
) -> Grads {
    let k = plan.params;
    let c = k.c as usize;
    let inputs = NormInputs {
        mean,
        var,
        gamma,
        beta,
    };
    let partial = (k.fixed_stats == 0 || needs[1] || needs[2]).then(|| {
        let mut partial = vec![f64::NAN; plan.partial_len()];
        emu::norm::backward_partial(
            &plan.reduce_dims,
            plan.reduce,
            k,
            x,
            dy,
            &inputs,
            &mut partial,
        )
        .unwrap();
        partial
    });
    let coef_len = NORM_BACKWARD_COEF_PLANES * k.pairs();
    let mut coef = vec![f32::NAN; coef_len];
    let (mut dgamma, mut dbeta) = (poisoned(c), poisoned(c));
    let outputs = NormFinishOutputs {
        coef: needs[0].then_some(&mut coef[..]),
        dgamma: needs[1].then_some(&mut dgamma[..]),
        dbeta: needs[2].then_some(&mut dbeta[..]),
    };
    emu::norm::backward_finish(
        &plan.finish_dims,
        plan.reduce,
        k,
        partial.as_deref(),
        &inputs,
        outputs,
    )
    .unwrap();
    let dgamma = needs[1].then(|| written(&dgamma, c).to_vec());
    let dbeta = needs[2].then(|| written(&dbeta, c).to_vec());
    let dx = needs[0].then(|| {
        let mut dx = poisoned(x.len());
        emu::norm::backward_dx(&plan.element_dims, k, x, dy, &coef, &mut dx).unwrap();
        written(&dx, x.len()).to_vec()
    });
    (dx, dgamma, dbeta)
}

fn check_grads(what: &str, got: Grads, want: Grads) {
    let names = ["dx", "dgamma", "dbeta"];
    for ((name, g), w) in names
        .into_iter()
        .zip([got.0, got.1, got.2])
        .zip([want.0, want.1, want.2])
    {
        assert_eq!(g.is_some(), w.is_some(), "{what} {name} presence");
        if let (Some(g), Some(w)) = (g, w) {
            assert_close_scaled(&format!("{what} {name}"), &g, &w);
        }
    }
}

/// Statistics, forward and backward of one normalisation against the CPU backend, with
/// and without the affine, for each fused activation. Returns the reduction's splits.
fn check_norm(p: NormParams, seed: u64, target_blocks: u32) -> u32 {
    let cpu = Cpu::new();
    let mut rng = Rng::new(seed);
    let n = p.numel();
    // Off-centre inputs: the shifted sums must not lose the variance to the mean.
    let x = random(&mut rng, n, -1.0, 3.0);
    let dy = random(&mut rng, n, -1.0, 1.0);
    let gamma = random(&mut rng, p.c, 0.5, 1.5);
    let beta = random(&mut rng, p.c, -0.5, 0.5);
    let (want_mean, want_var) = cpu.norm_stats(&x, &p).unwrap();
    let mut splits = 0;
    for slope in [1.0, 0.0, 0.01] {
        let p = NormParams {
            neg_slope: slope,
            ..p
        };
        for (g, b) in [
            (None, None),
            (Some(&gamma[..]), Some(&beta[..])),
            (Some(&gamma[..]), None),
        ] {
            let what = format!("{p:?} gamma {} beta {}", g.is_some(), b.is_some());
            let k = NormKernelParams::new(&p, g.is_some(), b.is_some());
            let plan = NormPlan::new(k, target_blocks, 3);
            splits = plan.reduce.splits;
            let (mean, var) = emu_norm_stats(&plan, &x);
            assert_close(&format!("{what} mean"), &mean, &want_mean);
            assert_close(&format!("{what} var"), &var, &want_var);

            let y = emu_norm_forward(&plan, &x, &mean, &var, g, b);
            let gv = g.map(|g| g.to_vec());
            let bv = b.map(|b| b.to_vec());
            let want_y = cpu
                .norm_forward(&x, &want_mean, &want_var, gv.as_ref(), bv.as_ref(), &p)
                .unwrap();
            assert_close_scaled(&format!("{what} y"), &y, &want_y);

            for needs in [[true; 3], [true, false, false], [false, true, true]] {
                let got = emu_norm_backward(&plan, &x, &dy, &mean, &var, g, b, needs);
                let want = cpu
                    .norm_backward(
                        &x,
                        &dy,
                        &want_mean,
                        &want_var,
                        gv.as_ref(),
                        bv.as_ref(),
                        &p,
                        needs,
                    )
                    .unwrap();
                check_grads(
                    &format!("{what} needs {needs:?}"),
                    got,
                    (want.dx, want.dgamma, want.dbeta),
                );
            }
        }
    }
    splits
}

fn norm_params(dims: [usize; 5], kind: NormKind, groups: usize) -> NormParams {
    let [n, d, h, w, c] = dims;
    NormParams {
        n,
        spatial: d * h * w,
        c,
        groups,
        eps: 1e-5,
        neg_slope: 1.0,
        kind,
        fixed_stats: false,
    }
}

#[test]
fn batch_norm_matches_the_cpu_backend() {
    assert_eq!(
        check_norm(norm_params([2, 3, 2, 5, 3], NormKind::Batch, 1), 1, 8),
        1
    );
    // 1386 rows of 5 channels: the statistics run in split partials.
    let splits = check_norm(norm_params([2, 7, 9, 11, 5], NormKind::Batch, 1), 2, 16);
    assert!(splits > 1, "{splits} splits");
}

#[test]
fn instance_group_and_layer_norm_match_the_cpu_backend() {
    for (dims, groups, seed) in [
        ([2, 3, 2, 5, 3], 3, 3),
        ([2, 3, 2, 5, 6], 2, 4),
        ([1, 3, 2, 5, 4], 1, 5),
    ] {
        check_norm(norm_params(dims, NormKind::Group, groups), seed, 8);
    }
    let splits = check_norm(norm_params([2, 7, 9, 11, 6], NormKind::Group, 6), 6, 16);
    assert!(splits > 1, "{splits} splits");
}

/// Whether `f32` buffers hold the same bits.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The norm kernels that also write an activation packed for a tensor-core convolution,
/// in elements `E` of `pack`'s format: y (forward) and dx (backward) bit for bit as
/// `norm_apply` and `norm_backward_dx` write them, and each pack bit for bit as the
/// convolution's own pack kernel makes it from that activation.
fn check_norm_packs<E: emu::conv::Packed + PartialEq + std::fmt::Debug>(
    p: &NormParams,
    pack: &voxseg::backend::cuda::conv_plan::ConvPack,
    nan: E,
    rng: &mut Rng,
) {
    let plan = NormPlan::new(NormKernelParams::new(p, true, true), 8, 3);
    let k = plan.params;
    let n = p.numel();
    let what = format!("{p:?} {}", pack.precision);
    let [x, dy] = [(); 2].map(|_| random(rng, n, -2.0, 2.0));
    let coef = random(rng, NORM_BACKWARD_COEF_PLANES * k.pairs(), -1.5, 1.5);
    let packed_of = |v: &[f32]| {
        let mut want = vec![nan; pack.packed_len()];
        emu::conv::conv3d_pack(pack, v, &mut want).unwrap();
        want
    };

    let mut want_y = poisoned(n);
    emu::norm::apply(
        &plan.element_dims,
        k,
        &x,
        &coef[..2 * k.pairs()],
        &mut want_y,
    )
    .unwrap();
    let mut got_y = poisoned(n);
    let mut packed = vec![nan; pack.packed_len()];
    emu::norm::apply_packed(
        &plan.element_dims,
        k,
        pack,
        &x,
        &coef[..2 * k.pairs()],
        &mut got_y,
        &mut packed,
    )
    .unwrap();
    assert!(
        same_bits(written(&got_y, n), written(&want_y, n)),
        "{what}: y"
    );
    assert!(packed == packed_of(written(&want_y, n)), "{what}: y's pack");

    let mut want_dx = poisoned(n);
    emu::norm::backward_dx(&plan.element_dims, k, &x, &dy, &coef, &mut want_dx).unwrap();
    let mut got_dx = poisoned(n);
    let mut packed = vec![nan; pack.packed_len()];
    emu::norm::backward_dx_packed(
        &plan.element_dims,
        k,
        pack,
        &x,
        &dy,
        &coef,
        &mut got_dx,
        &mut packed,
    )
    .unwrap();
    assert!(
        same_bits(written(&got_dx, n), written(&want_dx, n)),
        "{what}: dx"
    );
    assert!(
        packed == packed_of(written(&want_dx, n)),
        "{what}: dx's pack"
    );
}

#[test]
fn norms_write_the_convolutions_packs_of_their_activations() {
    use voxseg::backend::cuda::conv_plan::ConvPrecision;
    use voxseg::backend::cuda::params_norm::norm_pack;
    let mut rng = Rng::new(11);
    for (dims, kind, precision) in [
        ([2, 3, 4, 5, 16], NormKind::Group, ConvPrecision::Bf16),
        ([2, 3, 4, 5, 12], NormKind::Group, ConvPrecision::Tf32),
        ([1, 5, 3, 7, 8], NormKind::Batch, ConvPrecision::Bf16),
        // 2048 chunks over the plan's 768 threads: the grid-stride loop.
        ([2, 8, 8, 8, 16], NormKind::Group, ConvPrecision::Bf16),
    ] {
        let groups = if kind == NormKind::Batch { 1 } else { dims[4] };
        let p = NormParams {
            neg_slope: 0.01,
            ..norm_params(dims, kind, groups)
        };
        let k = NormKernelParams::new(&p, true, true);
        let pack = norm_pack(&k, precision, 528).unwrap();
        match precision {
            ConvPrecision::Tf32 => check_norm_packs(&p, &pack, u32::MAX, &mut rng),
            _ => check_norm_packs(&p, &pack, u16::MAX, &mut rng),
        }
    }
    // 12 channels are three tf32 chunks but one and a half bf16 ones; f32 packs nothing.
    let k = NormKernelParams::new(
        &norm_params([1, 2, 2, 2, 12], NormKind::Batch, 1),
        false,
        false,
    );
    assert!(norm_pack(&k, ConvPrecision::Bf16, 8).is_none());
    assert!(norm_pack(&k, ConvPrecision::F32, 8).is_none());
    let pack = norm_pack(&k, ConvPrecision::Tf32, 8).unwrap();
    let mut packed = vec![0u16; 12 * 8];
    let err = emu::norm::apply_packed(
        &launch::elementwise(96, 1),
        k,
        &pack,
        &[0.0; 96],
        &[0.0; 24],
        &mut [0.0; 96],
        &mut packed,
    )
    .unwrap_err();
    assert!(err.contains("4-byte"), "{err}");
}

#[test]
fn eval_mode_with_fixed_statistics_matches_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(7);
    let p = NormParams {
        fixed_stats: true,
        neg_slope: 0.01,
        ..norm_params([2, 3, 4, 5, 3], NormKind::Batch, 1)
    };
    let n = p.numel();
    let x = random(&mut rng, n, -2.0, 2.0);
    let dy = random(&mut rng, n, -1.0, 1.0);
    let mean = random(&mut rng, 3, -0.5, 0.5);
    let var = random(&mut rng, 3, 0.5, 2.0);
    let gamma = random(&mut rng, 3, 0.5, 1.5);
    let beta = random(&mut rng, 3, -0.5, 0.5);
    let plan = NormPlan::new(NormKernelParams::new(&p, true, true), 8, 3);
    let y = emu_norm_forward(&plan, &x, &mean, &var, Some(&gamma), Some(&beta));
    let want_y = cpu
        .norm_forward(&x, &mean, &var, Some(&gamma), Some(&beta), &p)
        .unwrap();
    assert_close_scaled("eval y", &y, &want_y);
    for needs in [[true; 3], [true, false, false], [false, true, true]] {
        let (g, b) = (Some(&gamma[..]), Some(&beta[..]));
        let got = emu_norm_backward(&plan, &x, &dy, &mean, &var, g, b, needs);
        let want = cpu
            .norm_backward(&x, &dy, &mean, &var, Some(&gamma), Some(&beta), &p, needs)
            .unwrap();
        check_grads(
            &format!("eval needs {needs:?}"),
            got,
            (want.dx, want.dgamma, want.dbeta),
        );
    }
}

/// The device's backward chooses the forward's slopes, 1 exactly where the pre-activation
/// is positive, at zero and one step either side of it included, as the CPU backend does
/// (its unit test `backward_slopes_follow_the_forwards_pre_activation`): fixed statistics
/// with rstd = 1 and b = beta - mean = -0.5 make dx the slope itself.
#[test]
fn norm_backward_slopes_follow_the_forwards_pre_activation() {
    let tiny = 2f32.powi(-20);
    let x = [0.5, 0.5 + tiny, 0.5 - tiny, 3.0, -1.0];
    let p = NormParams {
        eps: 0.25,
        neg_slope: 0.01,
        fixed_stats: true,
        ..norm_params([1, 1, 1, x.len(), 1], NormKind::Batch, 1)
    };
    let plan = NormPlan::new(NormKernelParams::new(&p, true, true), 8, 3);
    let (mean, var, gamma, beta) = ([0.75], [0.75], [1.0], [0.25]);
    let (g, b) = (Some(&gamma[..]), Some(&beta[..]));
    let y = emu_norm_forward(&plan, &x, &mean, &var, g, b);
    let (dx, _, _) = emu_norm_backward(&plan, &x, &[1.0; 5], &mean, &var, g, b, [true; 3]);
    let dx = dx.unwrap();
    assert_eq!(dx, [0.01, 1.0, 0.01, 1.0, 0.01]);
    for (y, dx) in y.iter().zip(&dx) {
        assert_eq!(*y > 0.0, *dx == 1.0, "y {y}, dx {dx}");
    }
}

#[test]
fn moving_statistics_update_matches_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(8);
    let n = 301;
    let start = random(&mut rng, n, 0.1, 2.0);
    let batch = random(&mut rng, n, 0.1, 2.0);
    let (momentum, correction) = (0.99, 10.0 / 9.0);
    let mut want = start.clone();
    cpu.norm_update_moving(&mut want, &batch, momentum, correction)
        .unwrap();
    let mut got = guarded(&start);
    let p = NormMovingParams {
        n: n as u64,
        momentum,
        correction,
    };
    emu::norm::update_moving(&launch::elementwise(n, 1), p, &mut got, &batch).unwrap();
    assert_close("moving", written(&got, n), &want);
}

// ---- dropout ----

#[test]
fn dropout_masks_are_bit_identical_to_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(9);
    let dims = [2, 3, 5, 7, 3];
    let n: usize = dims.iter().product();
    let mut x = random(&mut rng, n, -2.0, 2.0);
    x[4] = f32::NAN;
    for (spatial, p, seed, stream) in [
        (false, 0.3, 42, 0),
        (false, 0.0, 5, 1),
        (true, 0.5, 7, 3),
        (true, 0.25, u64::MAX, u32::MAX),
    ] {
        let params = DropoutParams {
            seed,
            stream,
            threshold: p as f32,
            scale: 1.0 / (1.0 - p),
            channels: dims[4],
            example_len: n / dims[0],
            spatial,
        };
        let want = cpu.dropout_apply(&x, &params).unwrap();
        let mut y = poisoned(n);
        // Two blocks for 630 elements: the grid-stride loop runs twice.
        let kp = DropoutKernelParams::new(&params, n);
        emu::dropout::apply(&launch::elementwise(n, 2), kp, &x, &mut y).unwrap();
        let y = written(&y, n);
        for (i, (g, w)) in y.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "spatial {spatial} p {p} [{i}]: {g} vs {w}"
            );
        }
        let kept = y.iter().filter(|v| **v != 0.0).count();
        assert!(kept > 0 && (p == 0.0 || kept < n), "{kept} kept");
    }
}

// ---- matmul ----

/// The device's product: one launch, or split partials and sum_axis1.
fn emu_matmul(
    p: &MatmulParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    target: u32,
) -> (Vec<f32>, usize) {
    let plan = MatmulPlan::new(p, bias.is_some(), target).unwrap();
    let len = p.m * p.n;
    let mut ws = poisoned(plan.workspace_len());
    emu::matmul::tiled(&plan.dims, plan.params, a, b, bias, &mut ws).unwrap();
    let ws = written(&ws, plan.workspace_len());
    let c = match &plan.sum {
        None => ws.to_vec(),
        Some(sum) => {
            let mut c = poisoned(len);
            emu::sum_axis1(&sum.first_dims, sum.first, ws, &mut c).unwrap();
            written(&c, len).to_vec()
        }
    };
    (c, plan.splits())
}

#[test]
fn matmul_with_transpose_flags_and_bias_matches_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(10);
    // Two row tiles and two column tiles with ragged edges; k of five steps, the last partial.
    let (m, n, k) = (70, 67, 75);
    let a = random(&mut rng, m * k, -1.0, 1.0);
    let b = random(&mut rng, k * n, -1.0, 1.0);
    let bias = random(&mut rng, n, -1.0, 1.0);
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let p = MatmulParams {
            m,
            n,
            k,
            trans_a,
            trans_b,
        };
        for bias in [None, Some(&bias)] {
            let want = cpu.matmul(&a, &b, bias, &p).unwrap();
            let (got, splits) = emu_matmul(&p, &a, &b, bias.map(|v| &v[..]), 4);
            assert_eq!(splits, 1);
            assert_close_scaled(&format!("{p:?} bias {}", bias.is_some()), &got, &want);
        }
    }
}

#[test]
fn matmul_splits_long_products_and_handles_empty_k() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(11);
    // The weight gradient of a dense layer: [in, rows] x [rows, out], rows long.
    let (m, n, k) = (5, 3, 1037);
    let a = random(&mut rng, m * k, -1.0, 1.0);
    let b = random(&mut rng, k * n, -1.0, 1.0);
    let bias = random(&mut rng, n, -1.0, 1.0);
    let p = MatmulParams {
        m,
        n,
        k,
        trans_a: true,
        trans_b: false,
    };
    let want = cpu.matmul(&a, &b, Some(&bias), &p).unwrap();
    let (got, splits) = emu_matmul(&p, &a, &b, Some(&bias), 8);
    assert_eq!(splits, 8);
    assert_close_scaled("split-k product", &got, &want);

    let empty = MatmulParams { k: 0, ..p };
    let want = cpu.matmul(&vec![], &vec![], Some(&bias), &empty).unwrap();
    let (got, _) = emu_matmul(&empty, &[], &[], Some(&bias), 8);
    assert_close("k = 0 gives the bias rows", &got, &want);
}

// ---- softmax ----

#[test]
fn softmax_and_log_softmax_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(12);
    for (rows, channels) in [(1001, 3), (37, 13), (20, 1)] {
        let n = rows * channels;
        let mut x = random(&mut rng, n, -8.0, 8.0);
        // Scores that overflow exp without the maximum shift.
        x[..channels].fill(95.0);
        x[channels] = -95.0;
        let dy = random(&mut rng, n, -1.0, 1.0);
        let d = launch::elementwise(rows, 2);
        for op in [SoftmaxOp::Softmax, SoftmaxOp::LogSoftmax] {
            let what = format!("{op:?} {rows}x{channels}");
            let p = SoftmaxKernelParams::new(op, n, channels);
            let want = cpu.softmax_forward(op, &x, channels).unwrap();
            let mut y = poisoned(n);
            emu::softmax::forward(&d, p, &x, &mut y).unwrap();
            assert_close(&what, written(&y, n), &want);

            let want_dx = cpu.softmax_backward(op, &want, &dy, channels).unwrap();
            let mut dx = poisoned(n);
            emu::softmax::backward(&d, p, &want, &dy, &mut dx).unwrap();
            let dx = written(&dx, n);
            if channels == 1 {
                // One class: the gradient is exactly zero on both sides.
                assert!(dx.iter().chain(&want_dx).all(|v| v.abs() < 1e-6), "{what}");
            } else {
                assert_close_scaled(&format!("{what} backward"), dx, &want_dx);
            }
        }
    }
}

// ---- binary cross-entropy ----

fn emu_bce_loss(
    p: BceKernelParams,
    x: &[f32],
    t: &[f32],
    w: Option<&[f32]>,
    max_blocks: u32,
) -> f32 {
    let plan = BlockSumPlan::new(x.len(), max_blocks);
    let mut partial = vec![f64::NAN; plan.blocks as usize];
    emu::bce::forward_partial(&plan.partial_dims, p, x, t, w, &mut partial).unwrap();
    let mut loss = poisoned(1);
    emu::bce::forward_finish(&plan.finish_dims, p, plan.blocks, &partial, &mut loss).unwrap();
    written(&loss, 1)[0]
}

#[test]
fn bce_loss_and_gradients_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(13);
    let (voxels, channels) = (2 * 3 * 5 * 7, 3);
    let n = voxels * channels;
    let mut x = random(&mut rng, n, -6.0, 6.0);
    x[..4].copy_from_slice(&[0.0, 40.0, -40.0, 500.0]);
    let t: Vec<f32> = random(&mut rng, n, 0.0, 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i % 3 == 0 { v.round() } else { v })
        .collect();
    let per_element = random(&mut rng, n, 0.2, 2.0);
    let per_voxel = random(&mut rng, voxels, 0.2, 2.0);
    let dy = [0.75f32];
    for pos_weight in [1.0, 2.5] {
        for (w, group) in [
            (None, 1),
            (Some(&per_element), 1),
            (Some(&per_voxel), channels),
        ] {
            let what = format!("pos_weight {pos_weight} weights {:?}", w.map(|w| w.len()));
            let params = BceParams {
                pos_weight,
                scale: 1.0 / n as f64,
                weight_group: group as u64,
            };
            let p = BceKernelParams::new(&params, n, w.is_some());
            let ws = w.map(|w| &w[..]);
            let want = cpu.bce_forward(&x, &t, w, params).unwrap();
            for max_blocks in [1, 3] {
                let got = emu_bce_loss(p, &x, &t, ws, max_blocks);
                assert_close(&format!("{what} loss ({max_blocks} blocks)"), &[got], &want);
            }

            let (want_dx, want_dt, want_dw) = cpu
                .bce_backward(&x, &t, w, params, &dy.to_vec(), [true; 3])
                .unwrap();
            let d = launch::elementwise(n, 2);
            for (targets, want) in [(false, want_dx.unwrap()), (true, want_dt.unwrap())] {
                let mut out = poisoned(n);
                emu::bce::backward(&d, p, &x, &t, ws, &dy, targets, &mut out).unwrap();
                assert_close_scaled(
                    &format!("{what} d{}", if targets { "t" } else { "x" }),
                    written(&out, n),
                    &want,
                );
            }
            if let (Some(w), Some(want_dw)) = (w, want_dw) {
                let mut dw = poisoned(w.len());
                emu::bce::backward_weight(
                    &launch::elementwise(w.len(), 2),
                    p,
                    &x,
                    &t,
                    &dy,
                    &mut dw,
                )
                .unwrap();
                assert_close(&format!("{what} dw"), written(&dw, w.len()), &want_dw);
            }
        }
    }
}

// ---- cross-entropy and one-hot ----

#[test]
fn cross_entropy_loss_and_gradient_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(14);
    let (rows, classes) = (2 * 3 * 5 * 7, 4);
    let mut logits = random(&mut rng, rows * classes, -5.0, 5.0);
    logits[..classes].copy_from_slice(&[90.0, -90.0, 89.0, 0.0]);
    let labels: Vec<f32> = (0..rows).map(|_| rng.below(classes) as f32).collect();
    let weights = [0.2f32, 1.0, 3.5, 0.7];
    let dy = [1.3f32];
    for w in [None, Some(weights.to_vec())] {
        let what = format!("class weights {}", w.is_some());
        let p = CrossEntropyKernelParams::new(rows, classes, w.is_some());
        let ws = w.as_deref();
        let (want_loss, want_total) = cpu
            .cross_entropy_forward(&logits, &labels, w.as_ref(), classes)
            .unwrap();
        let plan = BlockSumPlan::new(rows, 3);
        let mut partial = vec![f64::NAN; 2 * plan.blocks as usize];
        let mut bad = vec![0.0f32];
        emu::cross_entropy::forward_partial(
            &plan.partial_dims,
            p,
            &logits,
            &labels,
            ws,
            &mut partial,
            &mut bad,
        )
        .unwrap();
        let (mut loss, mut total) = (poisoned(1), poisoned(1));
        emu::cross_entropy::forward_finish(
            &plan.finish_dims,
            plan.blocks,
            &partial,
            &mut loss,
            &mut total,
        )
        .unwrap();
        assert_eq!(bad, [0.0], "{what}: no bad label");
        assert_close(&format!("{what} loss"), written(&loss, 1), &want_loss);
        assert_close(&format!("{what} total"), written(&total, 1), &want_total);

        let want_dx = cpu
            .cross_entropy_backward(
                &logits,
                &labels,
                w.as_ref(),
                &want_total,
                &dy.to_vec(),
                classes,
            )
            .unwrap();
        let mut dx = poisoned(rows * classes);
        emu::cross_entropy::backward(
            &launch::elementwise(rows, 2),
            p,
            &logits,
            &labels,
            ws,
            &want_total,
            &dy,
            &mut dx,
            &mut bad,
        )
        .unwrap();
        assert_eq!(bad, [0.0], "{what}: no bad label");
        assert_close_scaled(
            &format!("{what} dx"),
            written(&dx, rows * classes),
            &want_dx,
        );
    }
}

#[test]
fn one_hot_is_exact_and_bad_labels_raise_the_flag() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(15);
    let (rows, classes) = (3 * 5 * 7, 5);
    let labels: Vec<f32> = (0..rows).map(|_| rng.below(classes) as f32).collect();
    let p = CrossEntropyKernelParams::new(rows, classes, false);
    let d = launch::elementwise(rows, 1);
    let mut out = poisoned(rows * classes);
    let mut bad = vec![0.0f32];
    emu::cross_entropy::one_hot(&d, p, &labels, &mut out, &mut bad).unwrap();
    assert_eq!(bad, [0.0]);
    assert_eq!(
        written(&out, rows * classes),
        cpu.one_hot(&labels, classes).unwrap()
    );

    let logits = random(&mut rng, rows * classes, -1.0, 1.0);
    for wrong in [5.0f32, -1.0, 1.5, f32::NAN] {
        let mut labels = labels.clone();
        labels[rows / 2] = wrong;
        assert!(cpu.one_hot(&labels, classes).is_err());
        let mut bad = vec![0.0f32];
        emu::cross_entropy::one_hot(&d, p, &labels, &mut out, &mut bad).unwrap();
        assert_eq!(bad, [1.0], "one_hot, label {wrong}");

        let plan = BlockSumPlan::new(rows, 2);
        let mut partial = vec![f64::NAN; 2 * plan.blocks as usize];
        let mut bad = vec![0.0f32];
        emu::cross_entropy::forward_partial(
            &plan.partial_dims,
            p,
            &logits,
            &labels,
            None,
            &mut partial,
            &mut bad,
        )
        .unwrap();
        assert_eq!(bad, [1.0], "cross-entropy forward, label {wrong}");
        let mut bad = vec![0.0f32];
        let mut dx = poisoned(rows * classes);
        emu::cross_entropy::backward(
            &d,
            p,
            &logits,
            &labels,
            None,
            &[7.0],
            &[1.0],
            &mut dx,
            &mut bad,
        )
        .unwrap();
        assert_eq!(bad, [1.0], "cross-entropy backward, label {wrong}");
    }
}

#[test]
fn launch_plans_match_the_kernels_assumptions() {
    // The loss reductions use whole warps; the norm reduction keeps its grid inside the plan.
    let plan = BlockSumPlan::new(10_000, 3);
    assert_eq!(plan.partial_dims.block, [SUM_THREADS, 1, 1]);
    assert_eq!(SUM_THREADS % 32, 0);
    let k = NormKernelParams::new(
        &norm_params([2, 7, 9, 11, 5], NormKind::Batch, 1),
        false,
        false,
    );
    let plan = NormPlan::new(k, 16, 3);
    let reduce = ReducePlan::new(
        voxseg::tensor_ops::reduce::Axis1 {
            outer: 1,
            mid: 2 * 7 * 9 * 11,
            inner: 5,
        },
        16,
    );
    assert_eq!(
        (plan.reduce, plan.reduce_dims),
        (reduce.first, reduce.first_dims)
    );
    let bad = LaunchDims {
        grid: [plan.reduce_dims.grid[0], plan.reduce.splits + 1, 1],
        ..plan.reduce_dims
    };
    let x = vec![0.0f32; k.numel()];
    let mut partial = vec![0.0f64; plan.partial_len()];
    let err = emu::norm::stats_partial(&bad, plan.reduce, k, &x, &mut partial).unwrap_err();
    assert!(err.contains("reduce view"), "{err}");
}
