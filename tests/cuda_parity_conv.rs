//! The CUDA convolutions on a real device against the CPU backend (in f64) and the
//! tensor-core wrappers against their harness twins. Ignored by default;
//! scripts/gpu-check.sh runs them with `--include-ignored`. Each test opens the device and
//! fails without one. Inputs are random with a fresh seed per run (printed on failure), and
//! every buffer the pool hands out is NaN-filled first, so an output element a kernel
//! forgets to write fails the comparison.
//!
//! Error measures (max over elements of |gpu - ref| / max |ref|): f32 kernels < 1e-5;
//! tensor-core kernels < 1e-4 against a reference on inputs rounded as the kernels round
//! them (the tensor cores' own f32 accumulation order and rounding may differ from the
//! harness's), and relative norm ||gpu - ref|| / ||ref|| against the unrounded reference
//! below 2e-3 (TF32), 1e-4 (TF32 backward weights as three bf16 products) and 1e-2 (BF16). Probes: the rounding is bit-exact with the harness
//! twin for normal values; mma results within 1e-5 of the twin's.
//!
//! The conv precision is per device, so the tests that set it hold `common::serial()`.
mod common;

use common::{
    bf16x3_reference, cpu_pass, device, fresh_seed, max_rel, norm_rel, random, serial,
    tma_box_reference, tma_probe_cases,
};
use voxseg::backend::cpu::{Cpu, Cpu64};
use voxseg::backend::cuda::conv_plan::{
    wgmma_probe_depth, ConvPass, ConvPlan, ConvPrecision, ConvTarget, ConvTile, Reach, WGMMA_PROBES,
};
use voxseg::backend::cuda::conv_tma::ConvTmaTiling;
use voxseg::backend::cuda::emu::conv as emu_conv;
use voxseg::backend::cuda::{graph_reps, Cuda};
use voxseg::backend::BackendBase;
use voxseg::rng::Rng;
use voxseg::tensor::Shape;
use voxseg::tensor_ops::conv::{Conv3dSpec, ConvGeometry, ConvTranspose3dSpec, Padding};
use voxseg::tensor_ops::norm::{NormKernel, NormKind, NormParams};
use voxseg::tensor_ops::optim_step::{OptimStepKernel, SgdHyper, SgdSlot};
use voxseg::tensor_ops::Conv3dKernel;

fn round_with(p: ConvPrecision, v: &[f32]) -> Vec<f64> {
    let mut tf32 = vec![0u32; v.len()];
    let mut bf16 = vec![0u32; v.len()];
    emu_conv::tc_round_probe(v, &mut tf32, &mut bf16).unwrap();
    match p {
        ConvPrecision::F32 => v.iter().map(|&x| x as f64).collect(),
        ConvPrecision::Tf32 => tf32.iter().map(|&b| f32::from_bits(b) as f64).collect(),
        ConvPrecision::Bf16 => bf16
            .iter()
            .map(|&b| f32::from_bits(b << 16) as f64)
            .collect(),
    }
}

/// The device's convolution settings as a test found them, put back when the test ends,
/// whether it passes or panics, so that one test's switches never reach the next.
struct RestoreSettings<'a> {
    gpu: &'a Cuda,
    precision: ConvPrecision,
    wgmma: bool,
    wgmma_pairs: bool,
    wgmma_m256: Reach,
    wgmma_ws: bool,
    wgmma_tma: Reach,
    wgmma_n64_weights: bool,
    split_waves: bool,
    wgmma_cols_weights: Reach,
    wgmma_cols_gather: Reach,
    wgmma_tf32_weights: Reach,
    gather_l1: Reach,
    halo: Reach,
    phase: bool,
    wgmma_persist: bool,
    tf32_bf16x3: bool,
    pack_cache: bool,
    save_packed_inputs: bool,
}

impl<'a> RestoreSettings<'a> {
    fn new(gpu: &'a Cuda) -> Self {
        Self {
            gpu,
            precision: gpu.conv_precision().unwrap(),
            wgmma: gpu.wgmma().unwrap(),
            wgmma_pairs: gpu.wgmma_pairs().unwrap(),
            wgmma_m256: gpu.wgmma_m256().unwrap(),
            wgmma_ws: gpu.wgmma_ws().unwrap(),
            wgmma_tma: gpu.wgmma_tma().unwrap(),
            wgmma_n64_weights: gpu.wgmma_n64_weights().unwrap(),
            split_waves: gpu.split_waves().unwrap(),
            wgmma_cols_weights: gpu.wgmma_cols_weights().unwrap(),
            wgmma_cols_gather: gpu.wgmma_cols_gather().unwrap(),
            wgmma_tf32_weights: gpu.wgmma_tf32_weights().unwrap(),
            gather_l1: gpu.gather_l1().unwrap(),
            halo: gpu.halo().unwrap(),
            phase: gpu.phase().unwrap(),
            wgmma_persist: gpu.wgmma_persist().unwrap(),
            tf32_bf16x3: gpu.tf32_bf16x3().unwrap(),
            pack_cache: gpu.pack_cache().unwrap(),
            save_packed_inputs: gpu.save_packed_inputs().unwrap(),
        }
    }
}

impl Drop for RestoreSettings<'_> {
    fn drop(&mut self) {
        let gpu = self.gpu;
        gpu.set_conv_precision(self.precision);
        // Restoring a value the device had cannot fail; a panic here would abort.
        let _ = gpu.set_wgmma(self.wgmma);
        gpu.set_wgmma_pairs(self.wgmma_pairs);
        gpu.set_wgmma_m256(self.wgmma_m256);
        gpu.set_wgmma_ws(self.wgmma_ws);
        gpu.set_wgmma_tma(self.wgmma_tma);
        gpu.set_wgmma_n64_weights(self.wgmma_n64_weights);
        gpu.set_split_waves(self.split_waves);
        gpu.set_wgmma_cols_weights(self.wgmma_cols_weights);
        gpu.set_wgmma_cols_gather(self.wgmma_cols_gather);
        gpu.set_wgmma_tf32_weights(self.wgmma_tf32_weights);
        gpu.set_gather_l1(self.gather_l1);
        gpu.set_halo(self.halo);
        gpu.set_phase(self.phase);
        gpu.set_wgmma_persist(self.wgmma_persist);
        gpu.set_tf32_bf16x3(self.tf32_bf16x3);
        gpu.set_pack_cache(self.pack_cache);
        gpu.set_save_packed_inputs(self.save_packed_inputs);
    }
}

/// Sets the device's plan switches to those of `target`, whatever the environment says, so
/// that a GPU test runs the tiles a device-free test found `target`'s plans to take.
fn plan_like(gpu: &Cuda, target: ConvTarget) {
    gpu.set_wgmma(target.wgmma).unwrap();
    gpu.set_wgmma_pairs(target.wgmma_pairs);
    gpu.set_wgmma_m256(target.wgmma_m256);
    gpu.set_wgmma_ws(target.wgmma_ws);
    gpu.set_wgmma_tma(target.wgmma_tma);
    gpu.set_wgmma_n64_weights(target.wgmma_n64_weights);
    gpu.set_split_waves(target.split_waves);
    gpu.set_wgmma_cols_weights(target.wgmma_cols_weights);
    gpu.set_wgmma_cols_gather(target.wgmma_cols_gather);
    gpu.set_wgmma_tf32_weights(target.wgmma_tf32_weights);
    gpu.set_halo(target.halo);
    gpu.set_gather_l1(target.gather_l1);
    gpu.set_phase(target.phase);
    gpu.set_wgmma_persist(target.wgmma_persist);
    gpu.set_tf32_bf16x3(target.tf32_bf16x3);
}

fn conv(x: [usize; 5], w: [usize; 5], stride: usize, pad: usize) -> ConvGeometry {
    let spec = Conv3dSpec {
        stride: [stride; 3],
        padding: Padding::Explicit([[pad, pad]; 3]),
    };
    ConvGeometry::conv3d(&Shape::new(&x), &Shape::new(&w), &spec).unwrap()
}

/// The U-Net's up-convolution: a 2x2x2 kernel at stride 2, no padding.
const K2S2: ConvTranspose3dSpec = ConvTranspose3dSpec {
    stride: [2; 3],
    padding: [[0, 0]; 3],
    output_padding: [0; 3],
};

fn transposed(x: [usize; 5], w: [usize; 5], spec: ConvTranspose3dSpec) -> ConvGeometry {
    ConvGeometry::conv_transpose3d(&Shape::new(&x), &Shape::new(&w), &spec).unwrap()
}

/// Geometries covering every tile and path: the BraTS first layer, a 32-channel layer at
/// 32^3, a strided downsampling, a deep layer that splits its reductions, the 1x1x1 head,
/// a 2x2x2 transposed conv and a 3x3x3 stride-2 transposed conv with output padding.
fn geometries() -> Vec<ConvGeometry> {
    let k3s2 = ConvTranspose3dSpec {
        stride: [2; 3],
        padding: [[1, 1]; 3],
        output_padding: [1; 3],
    };
    vec![
        conv([2, 24, 20, 18, 4], [3, 3, 3, 4, 32], 1, 1),
        conv([2, 32, 32, 32, 32], [3, 3, 3, 32, 32], 1, 1),
        conv([2, 17, 16, 15, 32], [3, 3, 3, 32, 64], 2, 1),
        conv([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], 1, 1),
        conv([2, 20, 21, 22, 32], [1, 1, 1, 32, 3], 1, 0),
        transposed([2, 9, 8, 7, 64], [2, 2, 2, 32, 64], K2S2),
        transposed([1, 6, 7, 5, 20], [3, 3, 3, 12, 20], k3s2),
    ]
}

const PASSES: [ConvPass; 3] = [
    ConvPass::Forward,
    ConvPass::BackwardData,
    ConvPass::BackwardWeight,
];

#[test]
#[ignore = "needs a CUDA device"]
fn convolutions_match_cpu_at_every_precision() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    for precision in ConvPrecision::ALL {
        gpu.set_conv_precision(precision);
        check_every_pass(&gpu, &geometries());
    }
}

/// Every pass of every geometry at the device's current precision against the CPU
/// backend (see the module comment for the measures).
fn check_every_pass(gpu: &Cuda, geometries: &[ConvGeometry]) {
    check_passes(gpu, geometries, &PASSES);
}

fn check_passes(gpu: &Cuda, geometries: &[ConvGeometry], passes: &[ConvPass]) {
    let (cpu, cpu32) = (Cpu64::new(), Cpu::new());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for g in geometries {
        let nx = g.n * g.input_voxels() * g.cin;
        let ny = g.n * g.output_voxels() * g.cout;
        let nw = g.kernel_volume() * g.cin * g.cout;
        for &pass in passes {
            let plan = gpu.conv_plan(g, pass).unwrap();
            let used = plan.kernel.precision;
            let bf16x3 = plan.is_bf16x3();
            let what = format!("{pass:?} {:?} {g:?} (seed {seed})", plan.kernel);
            let (na, nb, nbias) = plan.operand_lens();
            assert_eq!(
                (na, nb),
                match pass {
                    ConvPass::Forward => (nx, nw),
                    ConvPass::BackwardData => (ny, nw),
                    ConvPass::BackwardWeight => (nx, ny),
                }
            );
            let a = random(&mut rng, na, -1.0, 1.0);
            let b = random(&mut rng, nb, -1.0, 1.0);
            let bias = nbias.map(|n| random(&mut rng, n, -1.0, 1.0));
            let (ga, gb) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
            let gbias = bias.as_ref().map(|v| gpu.upload(v).unwrap());
            // Where the time goes, for a run that outlasts its limit (gpu-session.sh runs
            // these tests with --nocapture): the pass is named before it starts.
            eprintln!("{what}: started");
            let started = std::time::Instant::now();
            let out = match pass {
                ConvPass::Forward => gpu.conv3d_forward(&ga, &gb, gbias.as_ref(), g),
                ConvPass::BackwardData => gpu.conv3d_backward_data(&ga, &gb, gbias.as_ref(), g),
                ConvPass::BackwardWeight => gpu.conv3d_backward_weight(&ga, &gb, g),
            }
            .unwrap();
            let got = gpu.download(&out).unwrap();
            let on_gpu = started.elapsed();
            // In f64 for the f32 kernels; for the tensor-core ones, whose bounds are a
            // hundred times the f32 backend's rounding on these sums, in f32, which is many
            // times faster (the large cases' f64 references outran the tests' limit).
            let reference = |round: ConvPrecision| -> Vec<f64> {
                let (a, b) = (round_with(round, &a), round_with(round, &b));
                let bias: Option<Vec<f64>> =
                    bias.as_ref().map(|v| v.iter().map(|&x| x as f64).collect());
                let operands = (&a[..], &b[..], bias.as_deref());
                if used == ConvPrecision::F32 {
                    cpu_pass(&cpu, pass, operands, g)
                } else {
                    cpu_pass(&cpu32, pass, operands, g)
                }
            };
            let rounded = if bf16x3 {
                // The twin's bf16 rounding, which the rounding test checks bit for bit.
                let hi = |v: &[f32]| {
                    let rounded = round_with(ConvPrecision::Bf16, v);
                    rounded.into_iter().map(|x| x as f32).collect()
                };
                bf16x3_reference(&cpu32, g, &a, &b, hi)
            } else {
                reference(used)
            };
            let e = max_rel(&got, &rounded);
            let tol = if used == ConvPrecision::F32 {
                1e-5
            } else {
                1e-4
            };
            assert!(e < tol, "{what}: max relative error {e:e}");
            if used != ConvPrecision::F32 {
                let e = norm_rel(&got, &reference(ConvPrecision::F32));
                // bf16x3: well under tf32's 2e-4 to 3e-4 on these sums; the f32 reference
                // and the tensor cores' own accumulation over reductions of up to 2^16
                // voxels add about 1e-5 to the 4e-6 the harness measures on short ones.
                let tol = if bf16x3 {
                    1e-4
                } else if used == ConvPrecision::Tf32 {
                    2e-3
                } else {
                    1e-2
                };
                assert!(e < tol, "{what}: relative norm error {e:e} to f32 inputs");
            }
            eprintln!(
                "{what}: passed, {:.3} s on the device (first launches compile), {:.3} s in all",
                on_gpu.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// tf32 backward weights as three bf16 products (`VOXSEG_CONV_TF32_BF16X3`) on the
/// device's default tiles for the other switches: `geometries()` and BraTS layers at 16^3
/// and 8^3 (the cases that mma.sync ran slowest against cuDNN), each on the bf16 kernel of
/// three times the samples.
#[test]
#[ignore = "needs a CUDA device"]
fn tf32_bf16x3_backward_weights_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_conv_precision(ConvPrecision::Tf32);
    gpu.set_tf32_bf16x3(true);
    let mut cases = geometries();
    cases.extend([
        same([2, 16, 16, 16, 256], [3, 3, 3, 256, 256], 1),
        same([2, 8, 8, 8, 640], [3, 3, 3, 640, 320], 1),
        same([2, 16, 16, 16, 256], [3, 3, 3, 256, 320], 2),
    ]);
    for g in &cases {
        let plan = gpu.conv_plan(g, ConvPass::BackwardWeight).unwrap();
        assert_eq!(plan.kernel.precision, ConvPrecision::Bf16, "{g:?}");
    }
    check_passes(&gpu, &cases, &[ConvPass::BackwardWeight]);
}

fn same(x: [usize; 5], w: [usize; 5], stride: usize) -> ConvGeometry {
    let spec = Conv3dSpec {
        stride: [stride; 3],
        padding: Padding::Same,
    };
    ConvGeometry::conv3d(&Shape::new(&x), &Shape::new(&w), &spec).unwrap()
}

/// The benchmark's graph timing (`voxseg bench --device cuda`) of a small TF32 conv (two
/// packs, the conv, maybe a partial sum): its calls are captured without a device
/// allocation, the replays give a positive per-call time not above the eager one by more
/// than half, and the conv still computes the same afterwards. Calls that copy from the
/// host or synchronize are not captured: the timing says why and the stream stays usable.
#[test]
#[ignore = "needs a CUDA device"]
fn graph_timing_captures_a_conv_and_falls_back_cleanly() {
    let _serial = serial();
    let gpu = Cuda::new(0).unwrap();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_conv_precision(ConvPrecision::Tf32);
    let g = same([2, 16, 16, 16, 32], [3, 3, 3, 32, 32], 1);
    let x = gpu
        .uniform(7, 1, 0, g.n * g.input_voxels() * g.cin)
        .unwrap();
    let w = gpu
        .uniform(7, 2, 0, g.kernel_volume() * g.cin * g.cout)
        .unwrap();
    let forward = || gpu.download(&gpu.conv3d_forward(&x, &w, None, &g).unwrap());
    let before_timing = forward().unwrap();
    let mut run = || gpu.conv3d_forward(&x, &w, None, &g).map(drop);
    run().unwrap();
    let mut eager: Vec<f64> = (0..9).map(|_| gpu.time_ms(&mut run).unwrap()).collect();
    eager.sort_by(f64::total_cmp);
    let eager_ms = eager[4];
    let reps = graph_reps(eager_ms);
    let allocations = gpu.pool_stats().device_allocations;
    let mut per_call = gpu
        .time_graph_ms(&mut run, reps, 9)
        .unwrap()
        .unwrap_or_else(|why| panic!("the conv was not captured: {why}"));
    assert_eq!(
        gpu.pool_stats().device_allocations,
        allocations,
        "device allocations during the capture or the replays"
    );
    assert_eq!(per_call.len(), 9);
    per_call.sort_by(f64::total_cmp);
    let graph_ms = per_call[4];
    assert!(
        graph_ms > 0.0 && graph_ms <= 1.5 * eager_ms,
        "graph {graph_ms} ms per call ({reps} per replay), eager {eager_ms} ms"
    );
    assert_eq!(
        forward().unwrap(),
        before_timing,
        "the conv after the timing"
    );

    let mut uploads = || gpu.upload(&[1.0, 2.0]).map(drop);
    uploads().unwrap();
    let why = gpu.time_graph_ms(&mut uploads, 3, 5).unwrap().unwrap_err();
    assert!(why.contains("upload"), "{why}");
    let mut synchronizes = || gpu.synchronize();
    let why = gpu.time_graph_ms(&mut synchronizes, 3, 5).unwrap();
    assert!(why.is_err(), "a synchronization was captured: {why:?}");
    assert_eq!(forward().unwrap(), before_timing, "after failed captures");
}

/// The mma.sync tensor-core kernels (TF32 and BF16) where the harness tests run them, at sizes
/// where every tile runs many blocks: channels padded (4, 12, 40, 5 in; 3, 36, 72, 130, 7
/// out), 3x3x3, 3x1x1 and 1x1x1 kernels, stride 2 'same', 'valid', the 2x2x2 transposed
/// conv, and a deep layer whose reductions split.
#[test]
#[ignore = "needs a CUDA device"]
fn tensor_core_convolutions_on_padded_channels_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    // The mma.sync kernels, which a Hopper device otherwise runs only into 32 columns
    // (wgmma_convolutions_match_cpu runs these cases on wgmma).
    gpu.set_wgmma(false).unwrap();
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        for g in &padded_cases() {
            for pass in PASSES {
                let plan = gpu.conv_plan(g, pass).unwrap();
                assert_eq!(plan.kernel.precision, precision, "{plan:?}");
            }
        }
        check_every_pass(&gpu, &padded_cases());
    }
}

/// The geometries of `tensor_core_convolutions_on_padded_channels_match_cpu`.
fn padded_cases() -> Vec<ConvGeometry> {
    vec![
        same([2, 20, 18, 16, 4], [3, 3, 3, 4, 36], 1),
        same([2, 16, 15, 17, 12], [3, 1, 1, 12, 72], 1),
        same([2, 13, 12, 14, 40], [3, 3, 3, 40, 3], 2),
        same([1, 16, 17, 15, 8], [1, 1, 1, 8, 130], 1),
        conv([2, 10, 11, 12, 12], [3, 3, 3, 12, 8], 1, 0),
        transposed([2, 8, 7, 9, 64], [2, 2, 2, 36, 64], K2S2),
        same([1, 6, 6, 6, 64], [3, 3, 3, 64, 256], 1),
        same([2, 14, 13, 15, 5], [3, 3, 3, 5, 7], 1),
    ]
}

/// The Hopper wgmma kernels (64- and 128-wide tiles; backward weights in BF16) on the
/// padded-channel cases, a strided downsampling and a deep layer whose reductions split;
/// fails on a device that cannot run them (every GPU this project is lent is an H100 or
/// H200).
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_convolutions_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_wgmma(true).unwrap();
    // The tiles that the warpgroups fill themselves.
    gpu.set_wgmma_tma(Reach::Off);
    let mut cases = padded_cases();
    cases.extend([
        conv([2, 17, 16, 15, 32], [3, 3, 3, 32, 64], 2, 1),
        conv([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], 1, 1),
    ]);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        let wgmma_plans = cases
            .iter()
            .flat_map(|g| PASSES.map(|pass| gpu.conv_plan(g, pass).unwrap()))
            .filter(|plan| plan.kernel.module() == "conv3d_wgmma")
            .count();
        assert!(wgmma_plans >= 8, "{precision}: {wgmma_plans} wgmma plans");
        check_every_pass(&gpu, &cases);
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_matches_the_harness_twin() {
    let _serial = serial();
    let gpu = device();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (precision, layout, widths) in WGMMA_PROBES {
        for &n in widths {
            let k = wgmma_probe_depth(precision);
            let a = random(&mut rng, 128 * k, -1.0, 1.0);
            let b = random(&mut rng, n * k, -1.0, 1.0);
            let got = gpu.wgmma_probe(precision, layout, n, &a, &b).unwrap();
            let mut want = vec![f32::NAN; 128 * n];
            emu_conv::wgmma_probe(precision, layout, n, &a, &b, &mut want).unwrap();
            for i in 0..128 * n {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0),
                    "{precision} {layout:?} n {n} D[{}][{}]: device {} twin {} \
                     (seed {seed})",
                    i / n,
                    i % n,
                    got[i],
                    want[i]
                );
            }
        }
    }
}

/// Instance norm + LeakyReLU on the tensor-core path writes its activations packed beside
/// them (kernels/norm.cu): its output, which the next convolution reads forward, and its
/// input's gradient, the previous convolution's dy, which that convolution's backward data
/// reads. The convolutions use those packs instead of making their own, and everything is
/// bit for bit what it is with keeping off (the convs' own pack kernels then pack them).
#[test]
#[ignore = "needs a CUDA device"]
fn a_norms_activations_carry_the_packs_their_convolutions_read() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    let g = conv([2, 10, 9, 8, 32], [3, 3, 3, 32, 32], 1, 1);
    let p = NormParams {
        n: g.n,
        spatial: g.input_voxels(),
        c: g.cin,
        groups: g.cin,
        eps: 1e-5,
        neg_slope: 0.01,
        kind: NormKind::Group,
        fixed_stats: false,
    };
    let mut rng = Rng::new(fresh_seed());
    let x = random(&mut rng, p.numel(), -2.0, 2.0);
    let dy = random(&mut rng, p.numel(), -1.0, 1.0);
    let w = random(&mut rng, g.kernel_volume() * g.cin * g.cout, -1.0, 1.0);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        let run = |keep: bool| -> (Vec<Vec<f32>>, [usize; 4]) {
            gpu.set_pack_cache(keep);
            let [gx, gdy, gw] = [&x, &dy, &w].map(|v| gpu.upload(v).unwrap());
            let (mean, var) = gpu.norm_stats(&gx, &p).unwrap();
            let y = gpu.norm_forward(&gx, &mean, &var, None, None, &p).unwrap();
            let y_packs = gpu.kept_packs(&y);
            let out = gpu.conv3d_forward(&y, &gw, None, &g).unwrap();
            let grads = gpu
                .norm_backward(&gx, &gdy, &mean, &var, None, None, &p, [true, false, false])
                .unwrap();
            let dx = grads.dx.unwrap();
            let dx_packs = gpu.kept_packs(&dx);
            let back = gpu.conv3d_backward_data(&dx, &gw, None, &g).unwrap();
            let kept = [y_packs, gpu.kept_packs(&y), dx_packs, gpu.kept_packs(&dx)];
            let values = [&y, &out, &dx, &back].map(|s| gpu.download(s).unwrap());
            (values.to_vec(), kept)
        };
        let (kept_values, kept) = run(true);
        assert_eq!(
            kept,
            [1, 1, 1, 1],
            "{precision}: packs beside y and dx, after the norm and after the conv"
        );
        let (fresh_values, none) = run(false);
        assert_eq!(none, [0; 4], "{precision}");
        for (i, name) in ["y", "conv of y", "dx", "backward data of dx"]
            .iter()
            .enumerate()
        {
            assert_eq!(kept_values[i], fresh_values[i], "{precision}: {name}");
        }
    }
}

/// The pair of 64-column wgmma blocks per SM (`VOXSEG_WGMMA_PAIRS`), on grids of at least
/// one tile per SM: forward and backward data of a 64-channel layer at 24^3 (216 tiles),
/// and backward weights of 640 channels into 64 (135 tiles of 27 x 640 rows).
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_pair_convolutions_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_wgmma(true).unwrap();
    gpu.set_wgmma_pairs(true);
    // The tensor memory accelerator's tiles would take the wide backward weights.
    gpu.set_wgmma_tma(Reach::Off);
    let layer = conv([2, 24, 24, 24, 64], [3, 3, 3, 64, 64], 1, 1);
    let wide = conv([1, 6, 6, 6, 640], [3, 3, 3, 640, 64], 1, 1);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        let tile = |g: &ConvGeometry, pass| gpu.conv_plan(g, pass).unwrap().kernel.tile;
        assert_eq!(tile(&layer, ConvPass::Forward), ConvTile::WgN64Pair);
        assert_eq!(tile(&layer, ConvPass::BackwardData), ConvTile::WgN64Pair);
        if precision == ConvPrecision::Bf16 {
            assert_eq!(tile(&wide, ConvPass::BackwardWeight), ConvTile::WgN64Pair);
        }
        check_every_pass(&gpu, &[layer, wide]);
    }
}

/// The 256 x 128 wgmma tile (`VOXSEG_WGMMA_M256`): every pass of a 128-channel layer at
/// 12^3 (14 blocks of 256 rows in each pass), and of a strided 72 -> 120 whose last block
/// of rows is partial; backward weights at TF32 stays on mma.sync.
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_m256_convolutions_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_wgmma(true).unwrap();
    gpu.set_wgmma_m256(Reach::All);
    // The 256-row tiles that the tensor memory accelerator does not fill.
    gpu.set_wgmma_tma(Reach::Off);
    let layer = conv([2, 12, 12, 12, 128], [3, 3, 3, 128, 128], 1, 1);
    let strided = conv([1, 11, 10, 9, 72], [3, 3, 3, 72, 120], 2, 1);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        for g in [&layer, &strided] {
            for pass in PASSES {
                let plan = gpu.conv_plan(g, pass).unwrap();
                if pass != ConvPass::BackwardWeight || precision == ConvPrecision::Bf16 {
                    assert_eq!(plan.kernel.tile, ConvTile::WgM256, "{precision} {pass:?}");
                }
            }
        }
        check_every_pass(&gpu, &[layer, strided]);
    }
}

/// Geometries and the warp-specialized tile each pass takes (but tf32's backward weights,
/// which has no wgmma kernel): a layer of 128 channels, a strided one, and 40 -> 64 over a
/// reduction of 7 steps.
fn wgmma_ws_cases() -> [(ConvGeometry, ConvTile); 3] {
    [
        (
            conv([2, 12, 12, 12, 128], [3, 3, 3, 128, 128], 1, 1),
            ConvTile::WgWs128,
        ),
        (
            conv([1, 11, 10, 9, 72], [3, 3, 3, 72, 120], 2, 1),
            ConvTile::WgWs128,
        ),
        (
            conv([2, 5, 6, 7, 40], [3, 3, 3, 40, 64], 1, 1),
            ConvTile::WgWs64,
        ),
    ]
}

/// An H100 (132 SMs) with wgmma, the pair and the warp-specialized tiles on.
fn wgmma_ws_target() -> ConvTarget {
    ConvTarget::new(4 * 132)
        .with_wgmma(true)
        .with_wgmma_pairs(true)
        .with_wgmma_ws(true)
}

/// An H100's plan (wgmma and its warp-specialized tiles on) takes the tiles
/// `wgmma_ws_cases` names, so that the GPU test below runs each of them.
#[test]
fn wgmma_ws_cases_plan_their_tiles_on_an_h100() {
    let h100 = wgmma_ws_target();
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        for (g, tile) in wgmma_ws_cases() {
            for pass in PASSES {
                if pass == ConvPass::BackwardWeight && precision == ConvPrecision::Tf32 {
                    continue;
                }
                let plan = ConvPlan::new(&g, pass, precision, h100).unwrap();
                assert_eq!(plan.kernel.tile, tile, "{precision} {pass:?} {g:?}");
            }
        }
    }
}

/// The warp-specialized wgmma tiles (`VOXSEG_WGMMA_WS`, 128 and 64 columns) on every pass
/// they take: their mbarrier hand-over, and the fences and waits the harness cannot check
/// (it copies and multiplies when they are issued).
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_ws_convolutions_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_ws_target());
    let cases = wgmma_ws_cases();
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        for (g, tile) in &cases {
            for pass in PASSES {
                let plan = gpu.conv_plan(g, pass).unwrap();
                if pass != ConvPass::BackwardWeight || precision == ConvPrecision::Bf16 {
                    assert_eq!(plan.kernel.tile, *tile, "{precision} {pass:?} {g:?}");
                }
            }
        }
        check_every_pass(&gpu, &cases.map(|(g, _)| g));
    }
}

/// The tensor memory accelerator's box copies on the device leave what the harness's twin
/// and the tensor map's rules (`tma_box_reference`) say, bit for bit: zero fill, boxes
/// wholly outside the tensor (their bytes still complete, or the wait traps), both
/// swizzles, traversal strides, bf16 and 32-bit elements. The copies alone: where the
/// convolutions on them fail, this tells a wrong twin from a wrong kernel.
#[test]
#[ignore = "needs a CUDA device"]
fn tma_copies_match_the_harness_twin() {
    let gpu = device();
    for (map, data, coords) in tma_probe_cases() {
        let got = gpu.tma_probe(&map, &data, coords).unwrap();
        let mut twin = vec![0; got.len()];
        emu_conv::tma_probe(&map, &data, coords, &mut twin).unwrap();
        assert_eq!(got, twin, "device against twin: {map:?} at {coords:?}");
        assert_eq!(
            got,
            tma_box_reference(&map, &data, coords),
            "{map:?} at {coords:?}"
        );
    }
}

/// Geometries and the tiles the tensor memory accelerator's plans give their forward,
/// backward data (both at bf16 and tf32) and bf16 backward weights (None: not on those
/// tiles): a deep layer (128 -> 128 at 16^3); a strided one into 320 columns (64-wide
/// tiles; a 4^3 output, and backward data's 4^3 stride phases, are under one box of 128
/// voxels); a strided one whose backward data runs its 8 phases on boxes of their 8^3
/// grids; boxes that overhang the output (w 7 in boxes 8 wide) into 72 columns (dy's and
/// the weights' boxes read past cout; backward data's 72 reduction channels do not fill a
/// row); two 'valid' ones (an output of 6 x 6 x 14 that boxes of 128 would overhang by
/// half).
fn wgmma_tma_cases() -> [(ConvGeometry, [Option<ConvTile>; 3]); 6] {
    use ConvTile::{WgTma128, WgTma64};
    [
        (
            conv([2, 16, 16, 16, 128], [3, 3, 3, 128, 128], 1, 1),
            [Some(WgTma128), Some(WgTma128), Some(WgTma128)],
        ),
        (
            conv([1, 8, 8, 8, 256], [3, 3, 3, 256, 320], 2, 1),
            [None, None, Some(WgTma64)],
        ),
        (
            conv([2, 16, 16, 16, 64], [3, 3, 3, 64, 128], 2, 1),
            [Some(WgTma128), Some(WgTma64), Some(WgTma128)],
        ),
        (
            conv([2, 6, 8, 7, 64], [3, 3, 3, 64, 72], 1, 1),
            [Some(WgTma128), None, Some(WgTma128)],
        ),
        (
            conv([1, 10, 10, 10, 64], [3, 3, 3, 64, 64], 1, 0),
            [Some(WgTma64), None, Some(WgTma64)],
        ),
        (
            conv([1, 8, 8, 16, 64], [3, 3, 3, 64, 64], 1, 0),
            [None, Some(WgTma64), Some(WgTma64)],
        ),
    ]
}

/// An H100 (132 SMs) with wgmma, the pair and the tensor memory accelerator's tiles on.
fn wgmma_tma_target() -> ConvTarget {
    ConvTarget::new(4 * 132)
        .with_wgmma(true)
        .with_wgmma_pairs(true)
        .with_wgmma_tma(Reach::All)
}

/// The tile of the plan `plan_of` makes for `pass` at `precision`, where it is a tensor
/// memory accelerator's; None where it is not, or where the pass at that precision has
/// none (tf32's backward weights).
fn tma_tile(plan_of: impl Fn(ConvPass) -> ConvPlan, pass: ConvPass) -> Option<ConvTile> {
    let plan = plan_of(pass);
    plan.tma.map(|_| plan.kernel.tile)
}

/// What `wgmma_tma_cases` says of `pass` at `precision`.
fn tma_expected(
    tiles: &[Option<ConvTile>; 3],
    pass: ConvPass,
    precision: ConvPrecision,
) -> Option<ConvTile> {
    match pass {
        ConvPass::Forward => tiles[0],
        ConvPass::BackwardData => tiles[1],
        ConvPass::BackwardWeight if precision == ConvPrecision::Bf16 => tiles[2],
        ConvPass::BackwardWeight => None,
    }
}

/// An H100's plan (wgmma and the tensor memory accelerator's tiles on) takes the tiles
/// `wgmma_tma_cases` names, so that the GPU test below runs them; with the 256-row tiles
/// also on, the deep case takes them in every pass.
#[test]
fn wgmma_tma_cases_plan_their_tiles_on_an_h100() {
    for (g, tiles) in wgmma_tma_cases() {
        for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
            let plan_of = |pass| ConvPlan::new(&g, pass, precision, wgmma_tma_target()).unwrap();
            for pass in PASSES {
                let want = tma_expected(&tiles, pass, precision);
                assert_eq!(tma_tile(plan_of, pass), want, "{precision} {pass:?} {g:?}");
            }
        }
    }
    let m256 = wgmma_tma_target().with_wgmma_m256(Reach::All);
    let deep = &wgmma_tma_cases()[0].0;
    for pass in PASSES {
        let plan = ConvPlan::new(deep, pass, ConvPrecision::Bf16, m256).unwrap();
        assert_eq!(plan.kernel.tile, ConvTile::WgTma256, "{pass:?}");
    }
}

/// Every pass on the tensor memory accelerator where `wgmma_tma_cases` says
/// (`VOXSEG_WGMMA_TMA`; then also `VOXSEG_WGMMA_M256` for the 256 x 128 tiles on the deep
/// case), at tf32 and bf16: the tensor maps the driver encodes from our arguments, their
/// boxes, zero fill and swizzle, and the mbarriers' transaction bytes, which the harness
/// only emulates. A wrong byte count would hang the test rather than fail it.
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_tma_convolutions_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_tma_target());
    let cases = wgmma_tma_cases();
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        for (g, tiles) in &cases {
            for pass in PASSES {
                let want = tma_expected(tiles, pass, precision);
                let got = tma_tile(|pass| gpu.conv_plan(g, pass).unwrap(), pass);
                assert_eq!(got, want, "{precision} {pass:?} {g:?}");
            }
        }
        check_every_pass(&gpu, &cases.map(|(g, _)| g));
    }
    // The 256 x 128 tiles, four warpgroups multiplying.
    gpu.set_wgmma_m256(Reach::All);
    let deep = cases[0].0;
    for pass in PASSES {
        let plan = gpu.conv_plan(&deep, pass).unwrap();
        assert_eq!(plan.kernel.tile, ConvTile::WgTma256, "{pass:?}");
    }
    check_every_pass(&gpu, &[deep]);
}

/// tf32 backward weights over channel-major packs (`ConvTmaTiling::Grid`) and the tile each
/// plans: the deepest layers' 320 -> 320 (64 columns) on two samples, 128 -> 128 at 16^3,
/// dy's boxes past cout (72 columns) on odd sizes, a 'valid' layer, a stride-2 one (x in 8
/// phases) and a 2x2x2 transposed one.
fn wgmma_tma_grid_cases() -> [(ConvGeometry, ConvTile); 6] {
    use ConvTile::{WgTma128, WgTma64};
    [
        (conv([2, 6, 6, 6, 320], [3, 3, 3, 320, 320], 1, 1), WgTma64),
        (
            conv([1, 16, 16, 16, 128], [3, 3, 3, 128, 128], 1, 1),
            WgTma128,
        ),
        (conv([2, 6, 8, 7, 64], [3, 3, 3, 64, 72], 1, 1), WgTma128),
        (conv([1, 10, 10, 10, 64], [3, 3, 3, 64, 64], 1, 0), WgTma64),
        (
            conv([1, 12, 12, 12, 128], [3, 3, 3, 128, 256], 2, 1),
            WgTma128,
        ),
        (
            transposed([1, 4, 4, 4, 320], [2, 2, 2, 256, 320], K2S2),
            WgTma64,
        ),
    ]
}

/// An H100 with the tensor memory accelerator's tiles where measured and tf32 backward
/// weights over channel-major packs on.
fn wgmma_tma_grid_target() -> ConvTarget {
    wgmma_tma_target()
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_tf32_weights(Reach::All)
}

/// The tile of a tf32 backward weights over channel-major packs, None for any other plan.
fn grid_tile(plan: &ConvPlan) -> Option<ConvTile> {
    matches!(plan.tma, Some(ConvTmaTiling::Grid(_))).then_some(plan.kernel.tile)
}

/// Within their measured reach (the default), tf32 backward weights run over channel-major
/// packs on the BraTS layers an H200 timed faster so, packs included (2026-11-28, call 10,
/// BENCHMARKS.md): stride 1 into 128 and 256 channels at 16^3 and 32^3; not the 16^3 and
/// 8^3 layers of fewer multiply-adds, the strided ones, the 64- and 320-channel ones, nor
/// the transposed convolutions' (stride 2).
#[test]
fn tf32_weights_take_the_brats_layers_measured_faster_on_an_h200() {
    let measured = wgmma_tma_target()
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_tf32_weights(Reach::Measured);
    let layers = [
        (
            "enc2.conv1",
            conv([2, 32, 32, 32, 128], [3, 3, 3, 128, 128], 1, 1),
            true,
        ),
        (
            "dec2.conv0",
            conv([2, 32, 32, 32, 256], [3, 3, 3, 256, 128], 1, 1),
            true,
        ),
        (
            "enc3.conv1",
            conv([2, 16, 16, 16, 256], [3, 3, 3, 256, 256], 1, 1),
            true,
        ),
        (
            "dec3.conv0",
            conv([2, 16, 16, 16, 512], [3, 3, 3, 512, 256], 1, 1),
            true,
        ),
        (
            "16^3 128",
            conv([2, 16, 16, 16, 128], [3, 3, 3, 128, 128], 1, 1),
            false,
        ),
        (
            "8^3 256",
            conv([2, 8, 8, 8, 256], [3, 3, 3, 256, 256], 1, 1),
            false,
        ),
        (
            "enc1.conv1",
            conv([2, 64, 64, 64, 64], [3, 3, 3, 64, 64], 1, 1),
            false,
        ),
        (
            "dec1.conv0",
            conv([2, 64, 64, 64, 128], [3, 3, 3, 128, 64], 1, 1),
            false,
        ),
        (
            "enc2.conv0",
            conv([2, 64, 64, 64, 64], [3, 3, 3, 64, 128], 2, 1),
            false,
        ),
        (
            "enc3.conv0",
            conv([2, 32, 32, 32, 128], [3, 3, 3, 128, 256], 2, 1),
            false,
        ),
        (
            "dec4.conv0",
            conv([2, 8, 8, 8, 640], [3, 3, 3, 640, 320], 1, 1),
            false,
        ),
        (
            "dec2.up",
            transposed([2, 16, 16, 16, 256], [2, 2, 2, 128, 256], K2S2),
            false,
        ),
    ];
    for (name, g, channel_major) in layers {
        let plan = ConvPlan::new(&g, ConvPass::BackwardWeight, ConvPrecision::Tf32, measured);
        let tile = grid_tile(&plan.unwrap());
        assert_eq!(tile.is_some(), channel_major, "{name}: {tile:?}");
        let off = measured.with_wgmma_tf32_weights(Reach::Off);
        let plan = ConvPlan::new(&g, ConvPass::BackwardWeight, ConvPrecision::Tf32, off);
        assert_eq!(grid_tile(&plan.unwrap()), None, "{name} off");
    }
}

#[test]
fn wgmma_tma_grid_cases_plan_their_tiles_on_an_h100() {
    for (g, tile) in wgmma_tma_grid_cases() {
        let plan = ConvPlan::new(
            &g,
            ConvPass::BackwardWeight,
            ConvPrecision::Tf32,
            wgmma_tma_grid_target(),
        )
        .unwrap();
        assert_eq!(grid_tile(&plan), Some(tile), "{g:?}");
    }
    let m256 = wgmma_tma_grid_target().with_wgmma_m256(Reach::All);
    let deep = wgmma_tma_grid_cases()[1].0;
    let plan = ConvPlan::new(&deep, ConvPass::BackwardWeight, ConvPrecision::Tf32, m256);
    assert_eq!(grid_tile(&plan.unwrap()), Some(ConvTile::WgTma256));
}

/// Backward weights into 64-column blocks computed transposed (`VOXSEG_WGMMA_COLS_WEIGHTS`,
/// `ConvTile::WgTmaCols`), which the harness only emulates, at bf16 and at tf32 over
/// channel-major packs: 64 output channels over 64 and 128 input channels (the decoder's
/// layers, smaller), 40 (dy's box past cout), 160 (three blocks of output channels),
/// stride 2, and a 2x2x2 transposed convolution.
fn wgmma_tma_cols_cases() -> [ConvGeometry; 5] {
    [
        conv([2, 16, 16, 16, 64], [3, 3, 3, 64, 64], 1, 1),
        conv([1, 16, 16, 16, 128], [3, 3, 3, 128, 64], 1, 1),
        conv([1, 16, 16, 16, 128], [3, 3, 3, 128, 40], 2, 1),
        conv([1, 8, 8, 8, 64], [3, 3, 3, 64, 160], 1, 1),
        transposed([1, 8, 8, 8, 64], [2, 2, 2, 64, 64], K2S2),
    ]
}

/// An H100 with the tensor memory accelerator's tiles where measured, tf32 backward weights
/// on them, and the transposed 64-column backward weights on.
fn wgmma_tma_cols_target() -> ConvTarget {
    wgmma_tma_target()
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_tf32_weights(Reach::All)
        .with_wgmma_cols_weights(Reach::All)
}

#[test]
fn wgmma_tma_cols_cases_plan_their_tile_on_an_h100() {
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        for g in wgmma_tma_cols_cases() {
            let pass = ConvPass::BackwardWeight;
            let plan = ConvPlan::new(&g, pass, precision, wgmma_tma_cols_target());
            assert_eq!(
                plan.unwrap().kernel.tile,
                ConvTile::WgTmaCols,
                "{precision} {g:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_tma_cols_backward_weights_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_tma_cols_target());
    let cases = wgmma_tma_cols_cases();
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        gpu.set_conv_precision(precision);
        for g in &cases {
            let plan = gpu.conv_plan(g, ConvPass::BackwardWeight).unwrap();
            assert_eq!(plan.kernel.tile, ConvTile::WgTmaCols, "{precision} {g:?}");
        }
        check_passes(&gpu, &cases, &[ConvPass::BackwardWeight]);
    }
}

/// An H100 with the tensor memory accelerator's tiles where measured and forward and
/// backward data into 64 columns computed transposed.
fn wgmma_tma_cols_gather_target() -> ConvTarget {
    wgmma_tma_target()
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_cols_gather(Reach::All)
}

/// Within their measured reach (the default), the transposed 64-column tiles take the
/// nnU-Net BraTS layers an H200 timed faster on them (2026-11-28, BENCHMARKS.md) and leave
/// the others on the 128 x 64 tiles: forward and backward data where the taps overlap
/// (enc1.conv0's stride-2 forward over 32 channels a tap, the backward data of enc1.conv1,
/// enc2.conv0 at tf32 and dec0.conv0), not bf16 backward data of a strided convolution
/// (enc2.conv0), nor a transposed convolution's 2x2x2 stride-2 passes (dec1.up's forward,
/// dec0.up's backward data); bf16 backward weights over 1024 of dy's voxels and more
/// (dec1.conv0, dec4.conv0), not over 128 (enc5's) nor a transposed convolution's
/// (dec3.up); tf32 backward weights over channel-major packs only over 2 x 64^3 voxels
/// (dec1.conv0; not a 64-channel layer at 2 x 32^3, nor dec4.conv0).
#[test]
fn cols_tiles_take_the_brats_layers_measured_faster_on_an_h200() {
    use ConvPass::{BackwardData, BackwardWeight, Forward};
    use ConvPrecision::{Bf16, Tf32};
    let measured = wgmma_tma_target()
        .with_wgmma_tma(Reach::Measured)
        .with_wgmma_cols_gather(Reach::Measured)
        .with_wgmma_cols_weights(Reach::Measured);
    let tf32w = measured.with_wgmma_tf32_weights(Reach::All);
    let layers = [
        (
            "enc1.conv0",
            conv([2, 128, 128, 128, 32], [3, 3, 3, 32, 64], 2, 1),
            Forward,
            Bf16,
            true,
        ),
        (
            "enc1.conv1",
            conv([2, 64, 64, 64, 64], [3, 3, 3, 64, 64], 1, 1),
            BackwardData,
            Bf16,
            true,
        ),
        (
            "enc2.conv0",
            conv([2, 64, 64, 64, 64], [3, 3, 3, 64, 128], 2, 1),
            BackwardData,
            Tf32,
            true,
        ),
        (
            "enc2.conv0",
            conv([2, 64, 64, 64, 64], [3, 3, 3, 64, 128], 2, 1),
            BackwardData,
            Bf16,
            false,
        ),
        (
            "dec0.conv0",
            conv([2, 128, 128, 128, 64], [3, 3, 3, 64, 32], 1, 1),
            BackwardData,
            Bf16,
            true,
        ),
        (
            "dec1.up",
            transposed([2, 32, 32, 32, 128], [2, 2, 2, 64, 128], K2S2),
            BackwardData,
            Bf16,
            false,
        ),
        (
            "dec0.up",
            transposed([2, 64, 64, 64, 64], [2, 2, 2, 32, 64], K2S2),
            Forward,
            Bf16,
            false,
        ),
        (
            "dec1.conv0",
            conv([2, 64, 64, 64, 128], [3, 3, 3, 128, 64], 1, 1),
            BackwardWeight,
            Bf16,
            true,
        ),
        (
            "dec4.conv0",
            conv([2, 8, 8, 8, 640], [3, 3, 3, 640, 320], 1, 1),
            BackwardWeight,
            Bf16,
            true,
        ),
        (
            "enc5.conv1",
            conv([2, 4, 4, 4, 320], [3, 3, 3, 320, 320], 1, 1),
            BackwardWeight,
            Bf16,
            false,
        ),
        (
            "enc5.conv0",
            conv([2, 8, 8, 8, 320], [3, 3, 3, 320, 320], 2, 1),
            BackwardWeight,
            Bf16,
            false,
        ),
        (
            "dec3.up",
            transposed([2, 8, 8, 8, 320], [2, 2, 2, 256, 320], K2S2),
            BackwardWeight,
            Bf16,
            false,
        ),
    ];
    for (layer, g, pass, precision, cols) in layers {
        let tile = ConvPlan::new(&g, pass, precision, measured)
            .unwrap()
            .kernel
            .tile;
        assert_eq!(is_transposed_tile(tile), cols, "{layer} {pass:?}: {tile:?}");
        // Everywhere they tile the result, the transposed tiles run these layers.
        let all = measured
            .with_wgmma_cols_gather(Reach::All)
            .with_wgmma_cols_weights(Reach::All);
        let tile = ConvPlan::new(&g, pass, precision, all).unwrap().kernel.tile;
        assert!(
            is_transposed_tile(tile),
            "{layer} {pass:?} within all: {tile:?}"
        );
        let off = measured
            .with_wgmma_cols_gather(Reach::Off)
            .with_wgmma_cols_weights(Reach::Off);
        let tile = ConvPlan::new(&g, pass, precision, off).unwrap().kernel.tile;
        assert!(!is_transposed_tile(tile), "{layer} {pass:?} off: {tile:?}");
    }
    for (layer, g, cols) in [
        (
            "dec1.conv0",
            conv([2, 64, 64, 64, 128], [3, 3, 3, 128, 64], 1, 1),
            true,
        ),
        (
            "32^3 64 -> 64",
            conv([2, 32, 32, 32, 64], [3, 3, 3, 64, 64], 1, 1),
            false,
        ),
        (
            "dec4.conv0",
            conv([2, 8, 8, 8, 640], [3, 3, 3, 640, 320], 1, 1),
            false,
        ),
    ] {
        let tile = ConvPlan::new(&g, BackwardWeight, Tf32, tf32w)
            .unwrap()
            .kernel
            .tile;
        let expected = if cols {
            ConvTile::WgTmaCols
        } else {
            ConvTile::WgTma64
        };
        assert_eq!(tile, expected, "tf32 {layer}");
    }
}

/// Forward and backward data into 64 columns computed transposed
/// (`VOXSEG_WGMMA_COLS_GATHER`, `ConvTile::WgTmaCols`, `WgTmaColsSw64`), which the harness
/// only emulates: the slow BraTS layers' shapes, smaller (enc1.conv0's stride-2 forward over
/// 32 channels, enc1.conv1's and enc2.conv0's backward data, dec1.up's forward), 40 result
/// channels (the store past the last), and an odd size whose boxes overhang.
fn wgmma_tma_cols_gather_cases() -> [(ConvGeometry, ConvPass); 6] {
    use ConvPass::{BackwardData, Forward};
    [
        (conv([2, 32, 32, 32, 32], [3, 3, 3, 32, 64], 2, 1), Forward),
        (
            conv([1, 16, 16, 16, 64], [3, 3, 3, 64, 64], 1, 1),
            BackwardData,
        ),
        (
            conv([1, 32, 32, 32, 64], [3, 3, 3, 64, 128], 2, 1),
            BackwardData,
        ),
        (
            transposed([1, 16, 16, 16, 128], [2, 2, 2, 64, 128], K2S2),
            BackwardData,
        ),
        (conv([1, 16, 16, 16, 64], [3, 3, 3, 64, 40], 1, 1), Forward),
        (conv([1, 16, 16, 15, 64], [3, 3, 3, 64, 64], 1, 1), Forward),
    ]
}

fn is_transposed_tile(tile: ConvTile) -> bool {
    matches!(tile, ConvTile::WgTmaCols | ConvTile::WgTmaColsSw64)
}

#[test]
fn wgmma_tma_cols_gather_cases_plan_their_tiles_on_an_h100() {
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        for (g, pass) in wgmma_tma_cols_gather_cases() {
            let plan = ConvPlan::new(&g, pass, precision, wgmma_tma_cols_gather_target());
            let tile = plan.unwrap().kernel.tile;
            assert!(
                is_transposed_tile(tile),
                "{precision} {pass:?} {g:?}: {tile:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_tma_cols_gather_matches_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_tma_cols_gather_target());
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        gpu.set_conv_precision(precision);
        for (g, pass) in &wgmma_tma_cols_gather_cases() {
            let tile = gpu.conv_plan(g, *pass).unwrap().kernel.tile;
            assert!(
                is_transposed_tile(tile),
                "{precision} {pass:?} {g:?}: {tile:?}"
            );
            check_passes(&gpu, std::slice::from_ref(g), &[*pass]);
        }
    }
}

/// The phase kernel's cases (`VOXSEG_CONV_PHASE`): the BraTS decoder's up-convolutions
/// dec0.up (one sample) and dec1.up (at bf16 only: its 128 channels are too many tf32 for
/// a block), one at a quarter of dec1.up's rows, and a 1x2x2 one whose channels end a step
/// and a column block part way.
fn phase_cases(precision: ConvPrecision) -> Vec<ConvGeometry> {
    let mut cases = vec![
        transposed([1, 64, 64, 64, 64], [2, 2, 2, 32, 64], K2S2),
        transposed([1, 16, 16, 32, 64], [2, 2, 2, 32, 64], K2S2),
        transposed(
            [2, 8, 30, 30, 40],
            [1, 2, 2, 72, 40],
            ConvTranspose3dSpec {
                stride: [1, 2, 2],
                ..K2S2
            },
        ),
    ];
    if precision == ConvPrecision::Bf16 {
        cases.push(transposed([2, 32, 32, 32, 128], [2, 2, 2, 64, 128], K2S2));
    }
    cases
}

fn phase_target() -> ConvTarget {
    ConvTarget::new(4 * 132)
        .with_wgmma(true)
        .with_wgmma_tma(Reach::Measured)
        .with_phase(true)
}

#[test]
fn phase_cases_plan_their_tile_on_an_h100() {
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        for g in phase_cases(precision) {
            let plan = ConvPlan::new(&g, ConvPass::BackwardData, precision, phase_target());
            let tile = plan.unwrap().kernel.tile;
            assert_eq!(tile, ConvTile::Phase64, "{precision} {g:?}");
        }
    }
}

/// The phase kernel on a GPU: every case of `phase_cases`, at both precisions, against the
/// CPU backend.
#[test]
#[ignore = "needs a CUDA device"]
fn phase_kernel_matches_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, phase_target());
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        gpu.set_conv_precision(precision);
        let cases = phase_cases(precision);
        for g in &cases {
            let tile = gpu
                .conv_plan(g, ConvPass::BackwardData)
                .unwrap()
                .kernel
                .tile;
            assert_eq!(tile, ConvTile::Phase64, "{precision} {g:?}");
        }
        check_passes(&gpu, &cases, &[ConvPass::BackwardData]);
    }
}

/// The persistent transposed tiles' cases (`VOXSEG_WGMMA_PERSIST`), each on a grid large
/// enough not to split its reduction: the two slow BraTS passes they are for, at a quarter
/// of their voxels (enc1.conv0's stride-2 forward over 32 channels a tap, dec0.conv0's
/// backward data into 64 channels), enc2.conv0's strided backward data (eight phases) and
/// dec1.up's forward (a transposed 2x2x2 convolution's one-tap phases).
fn persistent_cases() -> [(ConvGeometry, ConvPass); 4] {
    [
        (
            conv([2, 64, 64, 128, 32], [3, 3, 3, 32, 64], 2, 1),
            ConvPass::Forward,
        ),
        (
            conv([1, 64, 64, 128, 64], [3, 3, 3, 64, 32], 1, 1),
            ConvPass::BackwardData,
        ),
        (
            conv([1, 64, 64, 64, 64], [3, 3, 3, 64, 128], 2, 1),
            ConvPass::BackwardData,
        ),
        (
            transposed([2, 32, 32, 32, 128], [2, 2, 2, 64, 128], K2S2),
            ConvPass::BackwardData,
        ),
    ]
}

fn persistent_target() -> ConvTarget {
    wgmma_tma_cols_gather_target().with_wgmma_persist(true)
}

fn is_persistent_tile(tile: ConvTile) -> bool {
    matches!(tile, ConvTile::WgTmaColsLoop | ConvTile::WgTmaColsSw64Loop)
}

#[test]
fn persistent_cases_plan_their_tiles_on_an_h100() {
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        for (g, pass) in persistent_cases() {
            let plan = ConvPlan::new(&g, pass, precision, persistent_target()).unwrap();
            assert!(
                is_persistent_tile(plan.kernel.tile),
                "{precision} {pass:?} {g:?}: {:?}",
                plan.kernel.tile
            );
            let [blocks, y, z] = plan.dims.grid;
            assert!(
                blocks <= 132 && y == 1 && z == 1,
                "{precision} {pass:?} {g:?}"
            );
        }
    }
}

/// The persistent transposed tiles on a GPU, every case of `persistent_cases` at both
/// precisions, against the CPU backend.
#[test]
#[ignore = "needs a CUDA device"]
fn persistent_cols_tiles_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, persistent_target());
    for precision in [ConvPrecision::Bf16, ConvPrecision::Tf32] {
        gpu.set_conv_precision(precision);
        for (g, pass) in &persistent_cases() {
            let tile = gpu.conv_plan(g, *pass).unwrap().kernel.tile;
            assert!(
                is_persistent_tile(tile),
                "{precision} {pass:?} {g:?}: {tile:?}"
            );
            check_passes(&gpu, std::slice::from_ref(g), &[*pass]);
        }
    }
}

/// Backward weights split by whole waves (`VOXSEG_SPLIT_WAVES`): a layer of 27 tiles
/// whose one-wave split leaves a fifth of the SMs idle (bf16 on the tensor memory
/// accelerator's 128 x 64 tiles) takes more slices, and matches the CPU backend as the
/// one-wave split does.
#[test]
#[ignore = "needs a CUDA device"]
fn split_waves_backward_weights_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_tma_target().with_wgmma_tma(Reach::Measured));
    gpu.set_conv_precision(ConvPrecision::Bf16);
    let g = conv([2, 32, 32, 32, 128], [3, 3, 3, 128, 64], 1, 1);
    let one_wave = gpu.conv_plan(&g, ConvPass::BackwardWeight).unwrap();
    gpu.set_split_waves(true);
    let waves = gpu.conv_plan(&g, ConvPass::BackwardWeight).unwrap();
    assert!(
        waves.splits() > one_wave.splits(),
        "{} splits, {} without whole waves",
        waves.splits(),
        one_wave.splits()
    );
    check_passes(&gpu, &[g], &[ConvPass::BackwardWeight]);
}

/// tf32 backward weights over channel-major packs (`VOXSEG_WGMMA_TF32_WEIGHTS`,
/// `wgmma_tma_grid_cases`): the channel-major packs (x's shifted copies), the driver's maps
/// over them, and tf32 wgmma on k-major tiles in backward weights, which the harness only
/// emulates. Call 8 (an H200) failed here with an illegal instruction: boxes started
/// within a 16-byte chunk, which the harness now refuses too.
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_tma_grid_backward_weights_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_tma_grid_target());
    gpu.set_conv_precision(ConvPrecision::Tf32);
    let cases = wgmma_tma_grid_cases();
    for (g, tile) in &cases {
        let plan = gpu.conv_plan(g, ConvPass::BackwardWeight).unwrap();
        assert_eq!(grid_tile(&plan), Some(*tile), "{g:?}");
    }
    check_passes(&gpu, &cases.map(|(g, _)| g), &[ConvPass::BackwardWeight]);
    // The 256 x 128 tile, four warpgroups multiplying.
    gpu.set_wgmma_m256(Reach::All);
    let deep = cases[1].0;
    let plan = gpu.conv_plan(&deep, ConvPass::BackwardWeight).unwrap();
    assert_eq!(grid_tile(&plan), Some(ConvTile::WgTma256));
    check_passes(&gpu, &[deep], &[ConvPass::BackwardWeight]);
}

/// bf16 geometries and the tiles of two 64-byte-swizzled boxes a step that their forward and
/// backward data plan (None: not those tiles): the encoder's strided 32 -> 64 layer, the
/// decoder's 64 -> 32 one (its data gradient reduces over 32 channels), and 96 channels (three
/// boxes a tap) into 72 columns.
fn wgmma_tma_half_row_cases() -> [(ConvGeometry, [Option<ConvTile>; 2]); 3] {
    use ConvTile::{WgTma128Sw64, WgTma64Sw64};
    [
        (
            conv([2, 16, 16, 16, 32], [3, 3, 3, 32, 64], 2, 1),
            [Some(WgTma64Sw64), None],
        ),
        (
            conv([2, 8, 8, 8, 64], [3, 3, 3, 64, 32], 1, 1),
            [None, Some(WgTma64Sw64)],
        ),
        (
            conv([1, 8, 8, 8, 96], [3, 3, 3, 96, 72], 1, 1),
            [Some(WgTma128Sw64), None],
        ),
    ]
}

/// The tiles of the forward and backward data plans that `plan_of` makes, where they are
/// the tensor memory accelerator's.
fn half_row_tiles(plan_of: impl Fn(ConvPass) -> ConvPlan) -> [Option<ConvTile>; 2] {
    [ConvPass::Forward, ConvPass::BackwardData].map(|pass| tma_tile(&plan_of, pass))
}

#[test]
fn wgmma_tma_half_row_cases_plan_their_tiles_on_an_h100() {
    for (g, tiles) in wgmma_tma_half_row_cases() {
        let plan_of =
            |pass| ConvPlan::new(&g, pass, ConvPrecision::Bf16, wgmma_tma_target()).unwrap();
        assert_eq!(half_row_tiles(plan_of), tiles, "{g:?}");
    }
}

/// bf16 forward and backward data on the tiles of two 64-byte-swizzled boxes a step
/// (`wgmma_tma_half_row_cases`): the driver's maps in the 64-byte swizzle, the boxes past
/// the window's last tap (wholly outside both maps: zeros that still count their bytes),
/// and the wgmma descriptors of that swizzle in a pass (the probes check them alone).
#[test]
#[ignore = "needs a CUDA device"]
fn wgmma_tma_half_rows_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    plan_like(&gpu, wgmma_tma_target());
    gpu.set_conv_precision(ConvPrecision::Bf16);
    let cases = wgmma_tma_half_row_cases();
    for (g, tiles) in &cases {
        let got = half_row_tiles(|pass| gpu.conv_plan(g, pass).unwrap());
        assert_eq!(got, *tiles, "{g:?}");
    }
    check_every_pass(&gpu, &cases.map(|(g, _)| g));
}

/// The build variant whose activation gathers also go through L1 (`VOXSEG_GATHER_L1`):
/// every pass of every geometry on mma.sync and, where the device runs them, on wgmma.
#[test]
#[ignore = "needs a CUDA device"]
fn l1_gather_variant_matches_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_gather_l1(Reach::All);
    // The halo kernels and the tensor memory accelerator's tiles have no L1 build: keep
    // every pass on the gathering kernels.
    gpu.set_halo(Reach::Off);
    gpu.set_wgmma_tma(Reach::Off);
    let families = if gpu.supports_wgmma() {
        vec![false, true]
    } else {
        vec![false]
    };
    for wgmma in families {
        gpu.set_wgmma(wgmma).unwrap();
        for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
            gpu.set_conv_precision(precision);
            check_every_pass(&gpu, &geometries());
        }
    }
}

/// Geometries whose passes run every halo tile on an H100 (132 SMs) with wgmma off, at
/// TF32 and BF16, with the tiles of forward, backward data and backward weights. The
/// volume is about the smallest whose forward and backward data grids fill the device and
/// whose borders add at most 20%; the channels are the fewest that fill half of a step or
/// of a backward-weights block (16 and 40), to keep the f64 CPU reference short.
fn halo_cases() -> [(ConvGeometry, [ConvTile; 3]); 5] {
    use ConvTile::*;
    let halo = |cin, cout| conv([2, 24, 40, 40, cin], [3, 3, 3, cin, cout], 1, 1);
    [
        (halo(40, 40), [HaloN64, HaloN64, HaloWeight64x64]),
        (halo(16, 16), [HaloN32, HaloN32, HaloWeight32x32]),
        (halo(40, 72), [HaloN128, HaloN64, HaloWeight64x128]),
        (halo(40, 16), [HaloN32, HaloN64, HaloWeight64x32]),
        (halo(72, 16), [HaloN32, HaloN128, HaloWeight64x32]),
    ]
}

/// The plan of an H100 takes the halo tiles `halo_cases` names, so that the GPU test below
/// runs each of them (checked here, without a device, as the GPU planner plans).
#[test]
fn halo_cases_plan_their_tiles_on_an_h100() {
    let h100 = ConvTarget::new(4 * 132).with_halo(Reach::All);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        for (g, tiles) in halo_cases() {
            for (pass, want) in PASSES.into_iter().zip(tiles) {
                let tile = ConvPlan::new(&g, pass, precision, h100)
                    .unwrap()
                    .kernel
                    .tile;
                assert_eq!(tile, want, "{precision} {pass:?} {g:?}");
            }
        }
    }
}

/// The halo kernels (`VOXSEG_CONV_HALO`) at `precision` on grids that fill an H100's
/// resident blocks: every tile of every pass, from operands packed inside zero borders
/// (wgmma off, so that the 128 columns run the halo too). One test per precision: their
/// f64 references took one process past 170 s beside the other tests (call 7).
fn check_halo_convolutions(precision: ConvPrecision) {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_wgmma(false).unwrap();
    gpu.set_halo(Reach::All);
    gpu.set_conv_precision(precision);
    let cases = halo_cases();
    for (g, tiles) in &cases {
        for (pass, want) in PASSES.into_iter().zip(tiles) {
            let tile = gpu.conv_plan(g, pass).unwrap().kernel.tile;
            assert_eq!(tile, *want, "{pass:?} {g:?}");
        }
    }
    check_every_pass(&gpu, &cases.map(|(g, _)| g));
}

#[test]
#[ignore = "needs a CUDA device"]
fn halo_convolutions_match_cpu_tf32() {
    check_halo_convolutions(ConvPrecision::Tf32);
}

#[test]
#[ignore = "needs a CUDA device"]
fn halo_convolutions_match_cpu_bf16() {
    check_halo_convolutions(ConvPrecision::Bf16);
}

/// Kernels that the other GPU tests' geometries never reach (an audit of 2026-11-26 ran
/// the planner on each): per case, the precision, whether wgmma is on, the geometry, and
/// the kernel its forward, backward data or backward weights must run (None: any).
fn rare_kernel_cases() -> Vec<(ConvPrecision, bool, ConvGeometry, [Option<&'static str>; 3])> {
    use ConvPrecision::*;
    // A reduction of 4 (one tap of 4 channels) into 16 channels: the shallow f32 tile.
    let shallow = conv([2, 10, 9, 8, 4], [1, 1, 1, 4, 16], 1, 0);
    // The data gradient into 128 channels on mma.sync.
    let wide = conv([2, 8, 7, 6, 128], [3, 3, 3, 128, 8], 1, 1);
    // Into 16 channels over 27 taps of 4 (tf32-padded) channels: wgmma's 32-column tile.
    let narrow = conv([2, 9, 8, 7, 16], [3, 3, 3, 16, 4], 1, 1);
    vec![
        (
            F32,
            false,
            shallow,
            [Some("conv3d_fwd_f32_shallow"), None, None],
        ),
        (
            Tf32,
            false,
            wide,
            [None, Some("conv3d_bwd_data_tf32_n128"), None],
        ),
        (
            Bf16,
            false,
            wide,
            [None, Some("conv3d_bwd_data_bf16_n128"), None],
        ),
        (
            Tf32,
            true,
            narrow,
            [None, Some("conv3d_bwd_data_tf32_wg32"), None],
        ),
    ]
}

/// An H100 (132 SMs) with the default reaches, wgmma on or off.
fn rare_kernel_target(wgmma: bool) -> ConvTarget {
    ConvTarget::new(4 * 132)
        .with_wgmma(wgmma)
        .with_halo(Reach::Measured)
        .with_gather_l1(Reach::Measured)
}

/// The plan of an H100 (the default reaches, with wgmma on or off as each case says)
/// takes the kernels `rare_kernel_cases` names, so that the GPU test below runs them.
#[test]
fn rare_kernel_cases_plan_their_kernels_on_an_h100() {
    for (precision, wgmma, g, names) in rare_kernel_cases() {
        let h100 = rare_kernel_target(wgmma);
        for (pass, want) in PASSES.into_iter().zip(names) {
            let Some(want) = want else { continue };
            let plan = ConvPlan::new(&g, pass, precision, h100).unwrap();
            assert_eq!(plan.kernel.name(), Some(want), "{precision} {pass:?} {g:?}");
        }
    }
}

/// Every pass of the `rare_kernel_cases` against the CPU backend, each on the kernel the
/// case names.
#[test]
#[ignore = "needs a CUDA device"]
fn rare_kernels_match_cpu() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    for (precision, wgmma, g, names) in rare_kernel_cases() {
        if wgmma && !gpu.supports_wgmma() {
            eprintln!("{precision} {g:?}: no wgmma on this device, not run");
            continue;
        }
        plan_like(&gpu, rare_kernel_target(wgmma));
        gpu.set_conv_precision(precision);
        for (pass, want) in PASSES.into_iter().zip(names) {
            if let Some(want) = want {
                let plan = gpu.conv_plan(&g, pass).unwrap();
                assert_eq!(plan.kernel.name(), Some(want), "{precision} {pass:?} {g:?}");
            }
        }
        check_every_pass(&gpu, &[g]);
    }
}

/// TF32 and BF16 pack their operands into pool buffers: once every size has been seen,
/// repeating the passes allocates nothing new on the device. Two rounds see them: the
/// first keeps the packs of x, dy and w, which live on, and a pack may take the block a
/// result of the same size class freed earlier in the round (at TF32, dy's pack takes
/// y's), so the second round allocates that result once more (an H100 counted 12 against
/// 11 after one round, 2026-11-26). A training step drops its activations, and their packs
/// with them, so each step repeats the first's allocations from the pool (cuda_train.rs).
#[test]
#[ignore = "needs a CUDA device"]
fn tensor_core_passes_allocate_nothing_new_once_warm() {
    let _serial = serial();
    let gpu = Cuda::new(0).unwrap();
    let _restore = RestoreSettings::new(&gpu);
    let g = same([2, 12, 12, 12, 4], [3, 3, 3, 4, 32], 1);
    let x = gpu
        .upload(&vec![0.5; g.n * g.input_voxels() * g.cin])
        .unwrap();
    let dy = gpu
        .upload(&vec![0.25; g.n * g.output_voxels() * g.cout])
        .unwrap();
    let w = gpu
        .upload(&vec![0.125; g.kernel_volume() * g.cin * g.cout])
        .unwrap();
    let passes = || {
        drop(gpu.conv3d_forward(&x, &w, None, &g).unwrap());
        drop(gpu.conv3d_backward_data(&dy, &w, None, &g).unwrap());
        drop(gpu.conv3d_backward_weight(&x, &dy, &g).unwrap());
    };
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        passes();
        passes();
        let before = gpu.pool_stats().device_allocations;
        for _ in 0..3 {
            passes();
        }
        gpu.synchronize().unwrap();
        let after = gpu.pool_stats().device_allocations;
        assert_eq!(
            after, before,
            "{precision}: device allocations after two rounds of passes"
        );
    }
}

/// The packs kept beside an operand (src/backend/cuda/storage.rs): forward and backward
/// weights share x's, backward data and backward weights share dy's, each pass computes
/// exactly what it computes with keeping off, and an in-place update of the weights (an
/// SGD step) drops their packs, so the next forward reads the new weights.
#[test]
#[ignore = "needs a CUDA device"]
fn kept_packs_serve_later_passes_and_go_with_writes() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    let g = conv([2, 12, 10, 9, 32], [3, 3, 3, 32, 64], 1, 1);
    let mut rng = Rng::new(fresh_seed());
    let x = random(&mut rng, g.n * g.input_voxels() * g.cin, -1.0, 1.0);
    let dy = random(&mut rng, g.n * g.output_voxels() * g.cout, -1.0, 1.0);
    let w = random(&mut rng, g.kernel_volume() * g.cin * g.cout, -1.0, 1.0);
    let step = random(&mut rng, w.len(), -1.0, 1.0);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        gpu.set_conv_precision(precision);
        // Forward, backward weights, backward data, an SGD step on w, forward again.
        let run = |keep: bool| -> (Vec<Vec<f32>>, [usize; 3]) {
            gpu.set_pack_cache(keep);
            let (gx, gdy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
            let mut gw = gpu.upload(&w).unwrap();
            let y = gpu.conv3d_forward(&gx, &gw, None, &g).unwrap();
            let dw = gpu.conv3d_backward_weight(&gx, &gdy, &g).unwrap();
            let dx = gpu.conv3d_backward_data(&gdy, &gw, None, &g).unwrap();
            let kept = [
                gpu.kept_packs(&gx),
                gpu.kept_packs(&gdy),
                gpu.kept_packs(&gw),
            ];
            let grad = gpu.upload(&step).unwrap();
            let hyper = SgdHyper {
                lr: 0.5,
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: 0,
            };
            let mut slots = [SgdSlot {
                param: &mut gw,
                momentum_buf: None,
                grad: &grad,
                decay: false,
            }];
            gpu.sgd_step_multi(&mut slots, hyper).unwrap();
            assert_eq!(
                gpu.kept_packs(&gw),
                0,
                "{precision}: w's packs after its update"
            );
            let y_after = gpu.conv3d_forward(&gx, &gw, None, &g).unwrap();
            let outputs = [y, dw, dx, y_after].map(|o| gpu.download(&o).unwrap());
            (outputs.to_vec(), kept)
        };
        let (kept_outputs, kept) = run(true);
        // x and dy: one pack each, read twice; w: packed differently by forward and
        // backward data.
        assert_eq!(kept, [1, 1, 2], "{precision}: packs kept beside x, dy, w");
        let (fresh_outputs, none) = run(false);
        assert_eq!(none, [0, 0, 0], "{precision}: packs kept with keeping off");
        for (i, name) in ["y", "dw", "dx", "y after the step"].iter().enumerate() {
            assert_eq!(
                kept_outputs[i], fresh_outputs[i],
                "{precision}: {name} with kept packs"
            );
        }
        assert_ne!(
            kept_outputs[0], kept_outputs[3],
            "{precision}: the step changed nothing"
        );
    }
}

/// A convolution's input saved for its weight gradient (`conv3d_saved_input`) at tf32 on
/// the halo kernels, whose pack is a bordered grid larger than x: once the forward has kept
/// that pack beside x (which keeping x would keep too) the tape saves the pack alone, with
/// x's values; before it, it keeps x rather than make a larger pack.
#[test]
#[ignore = "needs a CUDA device"]
fn a_saved_input_is_the_pack_the_forward_kept_even_when_larger() {
    let _serial = serial();
    let gpu = device();
    let _restore = RestoreSettings::new(&gpu);
    gpu.set_wgmma(false).unwrap();
    gpu.set_halo(Reach::All);
    gpu.set_pack_cache(true);
    gpu.set_save_packed_inputs(true);
    gpu.set_conv_precision(ConvPrecision::Tf32);
    let g = conv([2, 24, 40, 40, 16], [3, 3, 3, 16, 16], 1, 1);
    let plan = gpu.conv_plan(&g, ConvPass::BackwardWeight).unwrap();
    assert_eq!(plan.kernel.tile, ConvTile::HaloWeight32x32);
    let pack = plan.packs.unwrap()[0];
    let forward = gpu.conv_plan(&g, ConvPass::Forward).unwrap();
    assert_eq!(
        forward.packs.unwrap()[0],
        pack,
        "the forward reads x as the gradient does"
    );
    let x_len = g.n * g.input_voxels() * g.cin;
    assert!(
        pack.packed_len() * pack.element_bytes() > x_len * 4,
        "the bordered pack is larger than x"
    );
    let mut rng = Rng::new(fresh_seed());
    let x = random(&mut rng, x_len, -1.0, 1.0);
    let w = random(&mut rng, g.kernel_volume() * g.cin * g.cout, -1.0, 1.0);
    let dy = random(&mut rng, g.n * g.output_voxels() * g.cout, -1.0, 1.0);
    let (gx, gw, gdy) = (
        gpu.upload(&x).unwrap(),
        gpu.upload(&w).unwrap(),
        gpu.upload(&dy).unwrap(),
    );
    assert!(
        gpu.conv3d_saved_input(&gx, &g, false).unwrap().is_none(),
        "a pack larger than x made only to be saved"
    );
    gpu.conv3d_forward(&gx, &gw, None, &g).unwrap();
    let saved = gpu.conv3d_saved_input(&gx, &g, false).unwrap();
    let saved = saved.expect("the forward's kept pack saved in place of x");
    let from_saved = gpu.conv3d_backward_weight(&saved, &gdy, &g).unwrap();
    let from_x = gpu.conv3d_backward_weight(&gx, &gdy, &g).unwrap();
    assert_eq!(
        gpu.download(&from_saved).unwrap(),
        gpu.download(&from_x).unwrap(),
        "the weight gradient from the saved pack"
    );
}

#[test]
#[ignore = "needs a CUDA device"]
fn ldmatrix_matches_the_harness_twin() {
    let _serial = serial();
    let gpu = device();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for _ in 0..10 {
        let rows: Vec<u16> = (0..256).map(|_| rng.below(1 << 16) as u16).collect();
        let got = gpu.ldmatrix_probe(&rows).unwrap();
        let mut want = vec![0u32; 32 * 14];
        emu_conv::ldmatrix_probe(&rows, &mut want).unwrap();
        assert_eq!(got, want, "seed {seed}");
    }
}

/// The main loops' fragments (k-major through ldmatrix, mn-major through ldmatrix.trans
/// at BF16 and 32-bit loads at TF32) on random words, bit for bit as the harness gives
/// them (whose layout tests/cuda_harness_conv.rs checks against the PTX ISA).
#[test]
#[ignore = "needs a CUDA device"]
fn main_loop_fragments_match_the_harness_twin() {
    let _serial = serial();
    let gpu = device();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        for _ in 0..10 {
            let mut words = || -> Vec<u32> { (0..256).map(|_| rng.next_u64() as u32).collect() };
            let (a, b) = (words(), words());
            let got = gpu.fragment_probe(precision, &a, &b).unwrap();
            let mut want = vec![0u32; 32 * 32];
            emu_conv::fragment_probe(precision, &a, &b, &mut want).unwrap();
            assert_eq!(got, want, "{precision} (seed {seed})");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn buffers_that_do_not_fit_the_geometry_are_errors() {
    let _serial = serial();
    let gpu = device();
    let g = conv([1, 4, 4, 4, 8], [3, 3, 3, 8, 4], 1, 1);
    let x = gpu.upload(&vec![0.5; 4 * 4 * 4 * 8 - 1]).unwrap();
    let w = gpu.upload(&vec![0.5; 27 * 8 * 4]).unwrap();
    let err = match gpu.conv3d_forward(&x, &w, None, &g) {
        Ok(_) => panic!("a short x must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("conv3d forward") && err.contains("x has 511"),
        "{err}"
    );
    let bias = gpu.upload(&[0.0; 5]).unwrap();
    let err = match gpu.conv3d_backward_data(&w, &w, Some(&bias), &g) {
        Ok(_) => panic!("a dy of the weight's length must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("conv3d backward_data") && err.contains("dy has"),
        "{err}"
    );
}

#[test]
#[ignore = "needs a CUDA device"]
fn tensor_core_rounding_matches_the_harness_bit_for_bit() {
    let _serial = serial();
    let gpu = device();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // Normal values over many binades, plus exact ties for both formats.
    let mut x: Vec<f32> = (0..100_000)
        .map(|i| rng.uniform_range(-1.0, 1.0) as f32 * 2f32.powi(i % 80 - 40))
        .filter(|v| v.is_normal())
        .collect();
    x.extend([0.0, -0.0, 1.0, -1.0]);
    x.extend([0x3F80_1000u32, 0xBF80_3000, 0x3F80_8000, 0x3F81_8000].map(f32::from_bits));
    let (tf32, bf16) = gpu.tc_round_probe(&x).unwrap();
    let mut want_tf32 = vec![0u32; x.len()];
    let mut want_bf16 = vec![0u32; x.len()];
    emu_conv::tc_round_probe(&x, &mut want_tf32, &mut want_bf16).unwrap();
    for i in 0..x.len() {
        assert_eq!(
            tf32[i],
            want_tf32[i],
            "tf32 of {:#x} (seed {seed})",
            x[i].to_bits()
        );
        assert_eq!(
            bf16[i],
            want_bf16[i],
            "bf16 pair at {i}: {:#x} (seed {seed})",
            x[i].to_bits()
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn tensor_core_fragments_match_the_harness_twin() {
    let _serial = serial();
    let gpu = device();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (precision, k) in [(ConvPrecision::Tf32, 8), (ConvPrecision::Bf16, 16)] {
        for _ in 0..20 {
            let a = random(&mut rng, 16 * k, -1.0, 1.0);
            let b = random(&mut rng, k * 8, -1.0, 1.0);
            let c = random(&mut rng, 128, -1.0, 1.0);
            let got = gpu.mma_probe(precision, &a, &b, &c).unwrap();
            let mut want = vec![f32::NAN; 128];
            emu_conv::mma_probe(precision, &a, &b, &c, &mut want).unwrap();
            for i in 0..128 {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0),
                    "{precision} D[{}][{}]: device {} twin {} (seed {seed})",
                    i / 8,
                    i % 8,
                    got[i],
                    want[i]
                );
            }
        }
    }
}
