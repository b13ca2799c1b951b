//! The CUDA backend against the CPU backend (the numerical reference) on a real device.
//! Ignored by default; scripts/gpu-check.sh runs them with `--include-ignored`. Each test
//! opens the device and fails without one. Inputs are random with a fresh seed per run
//! (printed on failure), and every buffer the pool hands out is NaN-filled first, so an
//! output element a kernel forgets to write fails the comparison.
//!
//! Error measure: |gpu - cpu| / max(|cpu|, 1) < 1e-5 per element: relative for values
//! above 1, absolute below (the inputs are O(1), so e.g. elu(x) = a (exp(x) - 1) near 0,
//! where a 1-ulp difference in exp is large relative to the result, is still judged fairly).
mod common;

use common::{assert_parity_within, device, fresh_seed, random, Tolerance, UNARY_OPS};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::{
    compute_capability_of, targets_sm90a, Cuda, ModuleCode, PTX_MODULES, SASS_ARCH, SASS_ENV,
    SASS_MODULES,
};
use voxseg::backend::BackendBase;
use voxseg::rng::{uniform_at, Rng};
use voxseg::tensor_ops::reduce::Axis1;
use voxseg::tensor_ops::{BinaryKernel, BinaryOp, ReduceKernel, UnaryKernel, UnaryOp};

const TOL: f32 = 1e-5;

/// Every embedded module this device can run compiles (the driver's JIT) and loads: all on
/// compute capability 9.0, elsewhere all but the sm_90a ones; each from the machine code
/// build.rs assembled where that is for this device (`VOXSEG_CUDA_SASS`), unless
/// `VOXSEG_SASS=off`. scripts/gpu-session.sh runs this first, alone, so that the tests
/// after it find the modules compiled (in the driver's cache where they come from PTX).
#[test]
#[ignore = "needs a CUDA device"]
fn every_kernel_module_loads() {
    let gpu = device();
    let loaded = gpu.load_every_module().unwrap();
    println!("{SASS_ARCH:?} machine code built; loaded: {loaded:?}");
    let names: Vec<&str> = loaded.iter().map(|(name, _)| *name).collect();
    let runnable: Vec<&str> = PTX_MODULES
        .iter()
        .filter(|(_, ptx)| gpu.compute_capability() == (9, 0) || !targets_sm90a(ptx))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(names, runnable);
    for module in ["conv3d_pipe", "conv3d_halo", "norm", "optim_step"] {
        assert!(names.contains(&module), "{module} not among {names:?}");
    }
    let sass_off = std::env::var(SASS_ENV).is_ok_and(|v| v == "off");
    for (name, code) in loaded {
        let has_sass = SASS_MODULES.iter().any(|&(module, arch, _)| {
            module == name && compute_capability_of(arch) == Some(gpu.compute_capability())
        });
        let expected = if has_sass && !sass_off {
            ModuleCode::Sass
        } else {
            ModuleCode::Ptx
        };
        assert_eq!(code, expected, "{name}");
    }
}

/// |cuda - cpu| < TOL * max(|cpu|, 1) per element (see the module comment).
fn assert_parity(what: &str, seed: u64, gpu: &[f32], cpu: &[f32]) {
    assert_parity_within(what, seed, gpu, cpu, Tolerance::below(TOL, 1.0));
}

#[test]
#[ignore = "needs a CUDA device"]
fn unary_ops_match_cpu() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // More elements than one wave of threads: the grid-stride loops run several times.
    let n = (1 << 21) + 123;
    for op in UNARY_OPS {
        let mut x = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt) {
            random(&mut rng, n, 1e-3, 30.0)
        } else {
            random(&mut rng, n, -6.0, 6.0)
        };
        if !matches!(op, UnaryOp::Log | UnaryOp::Sqrt) {
            x[..6].copy_from_slice(&[0.0, -0.0, 100.0, -100.0, 89.0, -104.0]);
        }
        let y_cpu = cpu.unary_forward(op, &x).unwrap();
        let xs = gpu.upload(&x).unwrap();
        let ys = gpu.unary_forward(op, &xs).unwrap();
        assert_parity(
            &format!("{op:?}"),
            seed,
            &gpu.download(&ys).unwrap(),
            &y_cpu,
        );

        let dy = random(&mut rng, n, -2.0, 2.0);
        let dx_cpu = cpu.unary_backward(op, &x, &y_cpu, &dy).unwrap();
        let (yc, dys) = (gpu.upload(&y_cpu).unwrap(), gpu.upload(&dy).unwrap());
        let dx = gpu.unary_backward(op, &xs, &yc, &dys).unwrap();
        assert_parity(
            &format!("{op:?} backward"),
            seed,
            &gpu.download(&dx).unwrap(),
            &dx_cpu,
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn binary_ops_with_broadcast_match_cpu() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // Full, per-channel (32 channels of a 64^3 volume), scalar, odd suffix.
    for (n, nb) in [
        (100_003, 100_003),
        (32 << 18, 32),
        (65_537, 1),
        (7 * 3 * 5_000, 21),
    ] {
        let a = random(&mut rng, n, -3.0, 3.0);
        let b: Vec<f32> = random(&mut rng, nb, 0.5, 2.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 2 == 0 { v } else { -v })
            .collect();
        let dy = random(&mut rng, n, -1.0, 1.0);
        let (ga, gb, gdy) = (
            gpu.upload(&a).unwrap(),
            gpu.upload(&b).unwrap(),
            gpu.upload(&dy).unwrap(),
        );
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let what = format!("{op:?} n {n} nb {nb}");
            let out = gpu.binary_forward(op, &ga, &gb).unwrap();
            let want = cpu.binary_forward(op, &a, &b).unwrap();
            assert_parity(&what, seed, &gpu.download(&out).unwrap(), &want);
            for needs in [[true, true], [false, true], [true, false]] {
                let (da, db) = gpu.binary_backward(op, &ga, &gb, &gdy, needs).unwrap();
                let (wa, wb) = cpu.binary_backward(op, &a, &b, &dy, needs).unwrap();
                assert_eq!((da.is_some(), db.is_some()), (needs[0], needs[1]));
                if let (Some(g), Some(c)) = (da, wa) {
                    assert_parity(&format!("{what} da"), seed, &gpu.download(&g).unwrap(), &c);
                }
                if let (Some(g), Some(c)) = (db, wb) {
                    assert_parity(&format!("{what} db"), seed, &gpu.download(&g).unwrap(), &c);
                }
            }
        }
    }
}

/// (outer, mid, inner) views of the sums below: on an H100 (132 SMs) they take each of
/// the reduce module's paths (checked without a device below).
const SUM_VIEWS: [(usize, usize, usize); 7] = [
    (1, (1 << 24) + 7, 1),
    (1, 2 * 64 * 64 * 64, 32),
    (2, 64 * 64 * 64, 4),
    (2 * 64 * 64 * 64, 4, 1),
    (3, 1000, 77),
    (1, 40, 100_000),
    (5, 0, 3),
];

#[test]
fn sum_views_take_every_path_on_an_h100() {
    use voxseg::backend::cuda::launch::{column_sum, ReducePlan};
    let (elementwise_blocks, target_blocks) = (8 * 132, 4 * 132);
    let path = |&(outer, mid, inner): &(usize, usize, usize)| {
        let v = Axis1 { outer, mid, inner };
        if column_sum(v, elementwise_blocks).is_some() {
            "sum_axis1_columns"
        } else if ReducePlan::new(v, target_blocks).splits() == 1 {
            "sum_axis1"
        } else {
            "sum_axis1_partial"
        }
    };
    let taken: Vec<_> = SUM_VIEWS.iter().map(path).collect();
    for kernel in ["sum_axis1_columns", "sum_axis1", "sum_axis1_partial"] {
        assert!(taken.contains(&kernel), "no view takes {kernel}: {taken:?}");
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn sums_and_broadcasts_match_cpu() {
    let _serial = common::serial();
    let (gpu, cpu) = (device(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (outer, mid, inner) in SUM_VIEWS {
        let v = Axis1 { outer, mid, inner };
        let x = random(&mut rng, v.numel(), -1.0, 1.0);
        let got = gpu.sum_axis1(&gpu.upload(&x).unwrap(), v).unwrap();
        let want = cpu.sum_axis1(&x, v).unwrap();
        assert_parity(
            &format!("sum {v:?}"),
            seed,
            &gpu.download(&got).unwrap(),
            &want,
        );

        let small = random(&mut rng, outer * inner, -1.0, 1.0);
        let got = gpu
            .broadcast_axis1(&gpu.upload(&small).unwrap(), v)
            .unwrap();
        let want = cpu.broadcast_axis1(&small, v).unwrap();
        assert_parity(
            &format!("broadcast {v:?}"),
            seed,
            &gpu.download(&got).unwrap(),
            &want,
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn uniform_fill_is_bit_identical_to_rng() {
    let _serial = common::serial();
    let gpu = device();
    let seed = fresh_seed();
    let offset = (1u64 << 32) - 1000;
    let n = 1 << 20;
    let got = gpu
        .download(&gpu.uniform(seed, 9, offset, n).unwrap())
        .unwrap();
    for (i, v) in got.iter().enumerate() {
        let want = uniform_at(seed, 9, offset + i as u64);
        assert_eq!(v.to_bits(), want.to_bits(), "seed {seed} index {i}");
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn storage_round_trips_and_the_pool_reuses_blocks() {
    let _serial = common::serial();
    let gpu = device();
    let data: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.5).collect();
    let s = gpu.upload(&data).unwrap();
    assert_eq!(gpu.download(&s).unwrap(), data);
    assert_eq!(gpu.download(&gpu.copy(&s).unwrap()).unwrap(), data);
    assert_eq!(
        gpu.download(&gpu.zeros(777).unwrap()).unwrap(),
        vec![0.0; 777]
    );
    assert!(gpu.download(&gpu.upload(&[]).unwrap()).unwrap().is_empty());
    gpu.synchronize().unwrap();

    // Warm up one step's allocations, then repeat it: nothing new with caching on.
    let step = |g: &Cuda| {
        let y = g.unary_forward(UnaryOp::Sigmoid, &s).unwrap();
        let v = Axis1 {
            outer: 1,
            mid: 100,
            inner: 100,
        };
        g.sum_axis1(&y, v).unwrap();
    };
    step(&gpu);
    let before = gpu.pool_stats();
    step(&gpu);
    let after = gpu.pool_stats();
    if gpu.pool_caching() {
        assert_eq!(before.device_allocations, after.device_allocations);
    } else {
        assert!(after.device_allocations > before.device_allocations);
    }
    assert!(after.peak_allocated_bytes >= after.allocated_bytes);
    assert!(after.reserved_bytes >= after.allocated_bytes);
}
