//! The CUDA kernels run on the CPU through the execution harness (kernels/emu): the same
//! kernels/*.cu sources nvcc compiles, checked against the CPU backend (the numerical
//! reference) or a naive f64 reference, with the launch plans the device uses. Outputs
//! start as NaN and carry a guard tail that must stay untouched.
mod common;

use common::{
    assert_within, check_layout, emu_sum, poisoned, random, written, Tolerance, UNARY_OPS,
};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::emu::{self, selftest};
use voxseg::backend::cuda::launch::{self, ReducePlan};
use voxseg::backend::cuda::params::*;
use voxseg::rng::{uniform_at, Rng};
use voxseg::tensor_ops::reduce::Axis1;
use voxseg::tensor_ops::{BinaryKernel, BinaryOp, ReduceKernel, UnaryKernel, UnaryOp};

/// |harness - reference| <= rel * max(|reference|, 1e-30) per element (NaN only where the
/// reference is NaN).
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    let tol = Tolerance::at_most(rel, 1e-30);
    assert_within(what, ("harness", got), ("reference", want), tol);
}

#[test]
fn param_structs_have_the_cpp_layout() {
    check_layout!("UnaryParams", UnaryParams { n, op, arg });
    check_layout!("BinaryParams", BinaryParams { n, nb, op, pad_ });
    check_layout!(
        "ReduceParams",
        ReduceParams {
            outer,
            mid,
            inner,
            mid_per_split,
            cols,
            splits
        }
    );
    check_layout!("BroadcastParams", BroadcastParams { outer, mid, inner });
    check_layout!(
        "UniformParams",
        UniformParams {
            seed,
            offset,
            n,
            stream,
            pad_
        }
    );
    check_layout!(
        "Conv3dParams",
        Conv3dParams {
            n,
            in_d,
            in_h,
            in_w,
            cin,
            out_d,
            out_h,
            out_w,
            cout,
            k_d,
            k_h,
            k_w,
            stride_d,
            stride_h,
            stride_w,
            pad_d,
            pad_h,
            pad_w,
            splits,
            split_len
        }
    );
    check_layout!("VxTensorMap", TensorMap { words });
    check_layout!(
        "Conv3dTmaParams",
        Conv3dTmaParams {
            a,
            b,
            conv,
            box_d,
            box_h,
            box_w,
            boxes_d,
            boxes_h,
            boxes_w,
            grid_h,
            grid_w,
            grid_voxels,
            pad_
        }
    );
    check_layout!(
        "EmuDims",
        LaunchDims {
            grid,
            block,
            shared_bytes
        }
    );
    assert_eq!(emu::param_layout("NoSuchStruct", None), None);
    assert_eq!(
        emu::launch_constant("VX_REDUCE_THREADS"),
        Some(REDUCE_THREADS)
    );
}

fn dims(grid: u32, block: u32) -> LaunchDims {
    LaunchDims::linear([grid, 1, 1], block)
}

#[test]
fn harness_barrier_orders_shared_memory() {
    let d = dims(2, 64);
    let mut out = vec![0.0; 128];
    selftest::barrier(&d, &mut out).unwrap();
    for b in 0..2 {
        for t in 0..64 {
            assert_eq!(out[b * 64 + t], ((t + 1) % 64 + 1) as f32);
        }
    }
    // Reading the neighbour above or below: some block runs the readers first either way.
    for step in [1, -1] {
        let mut out = vec![-1.0; 128];
        selftest::missing_barrier(&dims(2, 64), step, &mut out).unwrap();
        let correct: Vec<usize> = out
            .chunks(64)
            .map(|block| {
                (0..64)
                    .filter(|&t| block[t] == ((t as i32 + 64 + step) % 64 + 1) as f32)
                    .count()
            })
            .collect();
        assert!(
            correct.iter().any(|&c| c <= 1),
            "step {step}: without the barrier threads must read unwritten slots: {correct:?}"
        );
    }
}

#[test]
fn harness_shuffles_match_cuda_semantics() {
    let mut out = vec![0.0; 4 * 64];
    selftest::shuffle(&dims(1, 64), &mut out).unwrap();
    for t in 0..64usize {
        let lane = t % 32;
        assert_eq!(out[4 * t], (lane ^ 5) as f32, "xor, thread {t}");
        let down = if lane + 3 < 32 { lane + 3 } else { lane };
        assert_eq!(out[4 * t + 1], down as f32, "down, thread {t}");
        assert_eq!(out[4 * t + 2], 528.0, "butterfly sum, thread {t}");
        assert_eq!(
            out[4 * t + 3],
            (t - lane + 7) as f32,
            "broadcast, thread {t}"
        );
    }
    let err = selftest::shuffle(&dims(1, 48), &mut out).unwrap_err();
    assert!(err.contains("partial warp"), "{err}");
}

#[test]
fn harness_atomics_and_dynamic_shared_memory() {
    let mut out = vec![0.0f32; 2];
    selftest::atomic(&dims(3, 96), &mut out).unwrap();
    assert_eq!(out, vec![288.0, 3.0 * (95.0 * 96.0 / 2.0)]);

    let d = LaunchDims {
        shared_bytes: 4 * 64,
        ..dims(2, 64)
    };
    // Both blocks write the same outputs: the second block's show the refilled poison.
    let mut out = vec![0.0f32; 256];
    selftest::dynamic_shared(&d, &mut out).unwrap();
    assert!(
        out[..64].iter().all(|v| v.is_nan()),
        "shared memory starts poisoned"
    );
    for t in 0..64 {
        assert_eq!(out[64 + t], (2 * ((t + 1) % 64)) as f32);
    }
}

#[test]
fn harness_poisons_static_shared_memory_for_every_block() {
    let n = 64;
    let mut out = vec![0.0f32; 3 * 3 * n];
    selftest::static_shared(&dims(3, n as u32), &mut out).unwrap();
    for (b, block) in out.chunks(3 * n).enumerate() {
        assert!(
            block[..n].iter().all(|v| v.is_nan()),
            "block {b} starts poisoned, with nothing of the block before"
        );
        for t in 0..n {
            assert_eq!(
                block[n + t],
                (b * 1000 + (t + 1) % n + 1) as f32,
                "block {b}"
            );
        }
        assert!(
            block[2 * n..].iter().all(|&v| v == (b + 7) as f32),
            "block {b}: a helper's static shared memory is the same in every call"
        );
    }
}

#[test]
fn harness_reports_deadlocks_and_bad_launches() {
    let mut out = vec![0.0f32; 1024];
    let err = selftest::deadlock(&dims(1, 32), &mut out).unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
    let err = selftest::barrier(&dims(1, 2048), &mut vec![0.0; 2048]).unwrap_err();
    assert!(err.contains("invalid block"), "{err}");
    let bad_grid = LaunchDims::linear([1, 70_000, 1], 32);
    let err = selftest::atomic(&bad_grid, &mut out).unwrap_err();
    assert!(err.contains("invalid grid"), "{err}");
    // The harness recovers: the next launch on this thread works.
    selftest::barrier(&dims(1, 32), &mut out).unwrap();
}

#[test]
fn harness_traps_async_copies_outside_the_launch_buffers() {
    let d = dims(1, 64);
    let src: Vec<f32> = (0..256).map(|i| i as f32 * 0.5).collect();
    let mut out = vec![f32::NAN; 256];
    selftest::global_read(&d, &src, Some(256), &mut out).unwrap();
    assert_eq!(out, src);
    // Thread 62's copy, src[248..252], is the first to leave the 250 registered elements.
    let err = selftest::global_read(&d, &src, Some(250), &mut out).unwrap_err();
    assert!(
        err.contains("thread 62") && err.contains("at byte 992 of registered buffer 0"),
        "{err}"
    );
    assert!(err.contains("which has 1000 bytes"), "{err}");
    // A launch whose wrapper registered nothing fails rather than go unchecked.
    let err = selftest::global_read(&d, &src, None, &mut out).unwrap_err();
    assert!(err.contains("registered no global buffers"), "{err}");
}

#[test]
fn unary_kernels_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(11);
    let n = 1500;
    for op in UNARY_OPS {
        let positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt);
        let mut x = if positive {
            random(&mut rng, n, 1e-3, 30.0)
        } else {
            random(&mut rng, n, -6.0, 6.0)
        };
        // Overflow-prone and exact-zero inputs.
        let specials: &[f32] = if positive {
            &[1.0, 1e-30, 3e38]
        } else {
            &[0.0, -0.0, 100.0, -100.0, 89.0, -104.0, f32::NAN]
        };
        x[..specials.len()].copy_from_slice(specials);
        let p = UnaryParams::new(op, n);
        // Three blocks for 1500 elements: the grid-stride loop runs twice.
        let d = launch::elementwise(n, 3);
        let mut y = poisoned(n);
        emu::unary_forward(&d, p, &x, &mut y).unwrap();
        let want = cpu.unary_forward(op, &x).unwrap();
        assert_close(&format!("{op:?} forward"), written(&y, n), &want, 0.0);

        let dy = random(&mut rng, n, -2.0, 2.0);
        let mut dx = poisoned(n);
        emu::unary_backward(&d, p, &x, &want, &dy, &mut dx).unwrap();
        let want_dx = cpu.unary_backward(op, &x, &want, &dy).unwrap();
        assert_close(&format!("{op:?} backward"), written(&dx, n), &want_dx, 0.0);
    }
}

#[test]
fn binary_kernels_match_the_cpu_backend_with_broadcast() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(12);
    for (n, nb) in [(1000, 1000), (15_000, 3), (2_870, 7), (513, 1)] {
        let a = random(&mut rng, n, -3.0, 3.0);
        // Divisors kept away from zero.
        let b: Vec<f32> = random(&mut rng, nb, 0.5, 2.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 2 == 0 { v } else { -v })
            .collect();
        let dy = random(&mut rng, n, -1.0, 1.0);
        let d = launch::elementwise(n, 4);
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let what = format!("{op:?} n {n} nb {nb}");
            let p = BinaryParams::new(op, n, nb);
            let mut out = poisoned(n);
            emu::binary_forward(&d, p, &a, &b, &mut out).unwrap();
            let want = cpu.binary_forward(op, &a, &b).unwrap();
            assert_close(&what, written(&out, n), &want, 0.0);

            let (want_da, want_db) = cpu.binary_backward(op, &a, &b, &dy, [true, true]).unwrap();
            let mut da = poisoned(n);
            emu::binary_backward_a(&d, p, &a, &b, &dy, &mut da).unwrap();
            assert_close(
                &format!("{what} da"),
                written(&da, n),
                &want_da.unwrap(),
                0.0,
            );

            let mut db = poisoned(nb);
            if nb == n {
                emu::binary_backward_b(&d, p, &a, &b, &dy, &mut db).unwrap();
            } else {
                let view = Axis1 {
                    outer: 1,
                    mid: n / nb,
                    inner: nb,
                };
                let plan = ReducePlan::new(view, 8);
                let mut partial = vec![f64::NAN; plan.partial_len()];
                emu::binary_backward_b_partial(
                    &plan.first_dims,
                    plan.first,
                    p,
                    &a,
                    &b,
                    &dy,
                    &mut partial,
                )
                .unwrap();
                emu::sum_axis1_finish(&plan.finish_dims, plan.finish, &partial, &mut db).unwrap();
            }
            assert_close(
                &format!("{what} db"),
                written(&db, nb),
                &want_db.unwrap(),
                1e-6,
            );
        }
    }
    let split = ReducePlan::new(
        Axis1 {
            outer: 1,
            mid: 5000,
            inner: 3,
        },
        8,
    );
    assert_eq!(
        split.splits(),
        8,
        "the broadcast gradient above ran in 8 splits"
    );
}

#[test]
fn sums_and_broadcasts_match_the_cpu_backend() {
    let cpu = Cpu::new();
    let mut rng = Rng::new(13);
    let views = [
        (1, 20_000, 1),
        (1, 3_000, 5),
        (2, 700, 3),
        (500, 4, 1),
        (3, 9, 40),
        (3, 0, 2),
        // Enough outputs for the column sum however long the rows.
        (2, 30, 200),
    ];
    let mut split_runs = 0;
    for (outer, mid, inner) in views {
        let v = Axis1 { outer, mid, inner };
        let x = random(&mut rng, v.numel(), -1.0, 1.0);
        let want = cpu.sum_axis1(&x, v).unwrap();
        for target in [1, 16] {
            let (got, splits) = emu_sum(&x, v, target);
            split_runs += usize::from(splits > 1);
            assert_close(&format!("sum {v:?} target {target}"), &got, &want, 1e-6);
        }
        let small = random(&mut rng, outer * inner, -1.0, 1.0);
        let p = BroadcastParams {
            outer: outer as u64,
            mid: mid as u64,
            inner: inner as u64,
        };
        let n = v.numel();
        let mut out = poisoned(n);
        emu::broadcast_axis1(&launch::elementwise(n, 3), p, &small, &mut out).unwrap();
        let want = cpu.broadcast_axis1(&small, v).unwrap();
        assert_close(&format!("broadcast {v:?}"), written(&out, n), &want, 0.0);
    }
    assert!(
        split_runs >= 3,
        "only {split_runs} runs used split partials"
    );
}

#[test]
fn philox_uniform_matches_rng_bit_for_bit() {
    let cases = [
        (0u64, 0u32, 0u64),
        (7, 3, 1_000),
        (u64::MAX, u32::MAX, 0),
        (0x1234_5678_9abc_def0, 42, (1u64 << 32) - 150),
    ];
    for (seed, stream, offset) in cases {
        let n = 300;
        let p = UniformParams {
            seed,
            offset,
            n: n as u64,
            stream,
            pad_: 0,
        };
        let mut out = poisoned(n);
        emu::uniform_fill(&launch::elementwise(n, 1), p, &mut out).unwrap();
        for (i, &v) in written(&out, n).iter().enumerate() {
            let want = uniform_at(seed, stream, offset + i as u64);
            assert_eq!(
                v.to_bits(),
                want.to_bits(),
                "seed {seed} stream {stream} index {i}"
            );
        }
    }
}
