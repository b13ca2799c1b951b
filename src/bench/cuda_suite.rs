//! Benchmarks of the CUDA convolutions, keyed like scripts/bench_reference.py (PyTorch +
//! cuDNN) so that scripts/bench_table.py joins the two outputs: op
//! `conv3d.{fwd,bwd_data,bwd_weight}` or `conv3d_transpose.{..}`, shape
//! "NxDxHxWxCin->Cout kKsS" of the forward direction's input (a transposed conv names its
//! own input), precision "fp32" | "tf32" | "bf16", rate gflops = flop / ms / 1e6 with
//! flop = 2 N V Cin Cout k^3 (V: voxels of the strided side) for every direction.
//!
//! Cases: the CPU suite's 3x3x3 sweep and 2x2x2 transposed conv (suite "sweep"), then every
//! conv of the nnU-Net BraTS 3d_fullres network (batch 2, 128^3, 4 channels, stages
//! 32-64-128-256-320-320 at 128..4; suite "brats"): two 3x3x3 convs per stage (the first
//! strided below the top), the 2x2x2 transposed convs up, the decoder convs on the
//! concatenated skips, and the 1x1x1 heads of the 4 supervised outputs (the heads are not
//! in the reference). Convs pad k / 2 on both sides, as the reference's PyTorch padding.
//!
//! Timing: inputs filled on the device (uniform random), two warm-up runs (module loading
//! and the pool's first allocations happen there), then runs each bracketed by CUDA events
//! on the stream, at least 5 and at most 30 within 0.5 s of device time; the median is
//! reported. Each run includes its output's pool allocation and, for split reductions, the
//! partial sum. Between shapes the pool's cache is released.
use super::{BenchDetails, BenchResult};
use crate::backend::cuda::conv_plan::{ConvPass, ConvPrecision};
use crate::backend::cuda::Cuda;
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::Shape;
use crate::tensor_ops::conv::{Conv3dSpec, ConvGeometry, ConvTranspose3dSpec, Padding};
use crate::tensor_ops::Conv3dKernel;

const WARMUP_RUNS: usize = 2;
const MIN_RUNS: usize = 5;
const MAX_RUNS: usize = 30;
/// Device time after which no further run starts once MIN_RUNS are done.
const BUDGET_MS: f64 = 500.0;
const SEED: u64 = 0x5eed;

/// The nnU-Net BraTS network (shared/REFERENCE.md, scripts/bench_reference.py `BRATS`).
const BRATS_BATCH: usize = 2;
const BRATS_PATCH: usize = 128;
const BRATS_IN_CHANNELS: usize = 4;
const BRATS_WIDTHS: [usize; 6] = [32, 64, 128, 256, 320, 320];
const BRATS_REGIONS: usize = 3;
/// Decoder outputs with a deep-supervision head (the lowest of the 5 is weighted 0).
const BRATS_SUPERVISED: usize = 4;

/// One convolution of the suite: forward-direction input `[n, size^3, cin]`, `cout`
/// outputs, a cubic kernel and stride.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvBenchShape {
    pub transposed: bool,
    pub n: usize,
    pub size: usize,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    /// "sweep" or "brats".
    pub suite: &'static str,
    /// The network layers with this shape (brats).
    pub layers: Vec<String>,
}

impl ConvBenchShape {
    fn conv(size: usize, cin: usize, cout: usize, kernel: usize, stride: usize) -> Self {
        Self {
            transposed: false,
            n: BRATS_BATCH,
            size,
            cin,
            cout,
            kernel,
            stride,
            suite: "sweep",
            layers: Vec::new(),
        }
    }

    fn transposed(size: usize, cin: usize, cout: usize) -> Self {
        Self {
            transposed: true,
            ..Self::conv(size, cin, cout, 2, 2)
        }
    }

    /// "conv3d" or "conv3d_transpose".
    pub fn family(&self) -> &'static str {
        if self.transposed {
            "conv3d_transpose"
        } else {
            "conv3d"
        }
    }

    /// "NxDxHxWxCin->Cout kKsS".
    pub fn key(&self) -> String {
        let (n, s) = (self.n, self.size);
        format!(
            "{n}x{s}x{s}x{s}x{}->{} k{}s{}",
            self.cin, self.cout, self.kernel, self.stride
        )
    }

    /// The geometry of the convolution (for a transposed one: of the convolution it
    /// reverses).
    pub fn geometry(&self) -> Result<ConvGeometry> {
        let (s, k) = (self.size, self.kernel);
        let x = Shape::new(&[self.n, s, s, s, self.cin]);
        if self.transposed {
            let w = Shape::new(&[k, k, k, self.cout, self.cin]);
            let spec = ConvTranspose3dSpec {
                stride: [self.stride; 3],
                padding: [[0, 0]; 3],
                output_padding: [0; 3],
            };
            ConvGeometry::conv_transpose3d(&x, &w, &spec)
        } else {
            let w = Shape::new(&[k, k, k, self.cin, self.cout]);
            let spec = Conv3dSpec {
                stride: [self.stride; 3],
                padding: Padding::Explicit([[k / 2, k / 2]; 3]),
            };
            ConvGeometry::conv3d(&x, &w, &spec)
        }
    }
}

/// The three timed directions of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Fwd,
    BwdData,
    BwdWeight,
}

impl Direction {
    const ALL: [Direction; 3] = [Self::Fwd, Self::BwdData, Self::BwdWeight];

    fn name(self) -> &'static str {
        match self {
            Self::Fwd => "fwd",
            Self::BwdData => "bwd_data",
            Self::BwdWeight => "bwd_weight",
        }
    }

    /// The kernel pass: a transposed conv's forward is its geometry's backward data and
    /// its data gradient that geometry's forward.
    fn pass(self, transposed: bool) -> ConvPass {
        match (self, transposed) {
            (Self::Fwd, false) | (Self::BwdData, true) => ConvPass::Forward,
            (Self::BwdData, false) | (Self::Fwd, true) => ConvPass::BackwardData,
            (Self::BwdWeight, _) => ConvPass::BackwardWeight,
        }
    }
}

/// Every shape of the suite, in report order, repeated network shapes merged.
pub fn cuda_conv_shapes() -> Vec<ConvBenchShape> {
    let mut shapes = Vec::new();
    for (size, cin, cout) in [(64, 32, 32), (32, 64, 64), (16, 128, 128), (8, 256, 256)] {
        shapes.push(ConvBenchShape::conv(size, cin, cout, 3, 1));
    }
    shapes.push(ConvBenchShape::transposed(32, 64, 32));
    let sweep = shapes.len();
    let mut add = |layer: String, shape: ConvBenchShape| {
        let shape = ConvBenchShape {
            suite: "brats",
            layers: vec![layer.clone()],
            ..shape
        };
        let same = |s: &ConvBenchShape| s.family() == shape.family() && s.key() == shape.key();
        match shapes.iter_mut().position(|s| same(s)) {
            Some(i) if i >= sweep => shapes[i].layers.push(layer),
            Some(_) => {}
            None => shapes.push(shape),
        }
    };
    let sizes: Vec<usize> = (0..BRATS_WIDTHS.len()).map(|i| BRATS_PATCH >> i).collect();
    let mut cin = BRATS_IN_CHANNELS;
    for (i, (&w, &size)) in BRATS_WIDTHS.iter().zip(&sizes).enumerate() {
        let (input, stride) = if i == 0 { (size, 1) } else { (sizes[i - 1], 2) };
        add(
            format!("enc{i}.conv0"),
            ConvBenchShape::conv(input, cin, w, 3, stride),
        );
        add(
            format!("enc{i}.conv1"),
            ConvBenchShape::conv(size, w, w, 3, 1),
        );
        cin = w;
    }
    for i in (0..BRATS_WIDTHS.len() - 1).rev() {
        let (w, size) = (BRATS_WIDTHS[i], sizes[i]);
        add(
            format!("dec{i}.up"),
            ConvBenchShape::transposed(sizes[i + 1], BRATS_WIDTHS[i + 1], w),
        );
        add(
            format!("dec{i}.conv0"),
            ConvBenchShape::conv(size, 2 * w, w, 3, 1),
        );
        add(
            format!("dec{i}.conv1"),
            ConvBenchShape::conv(size, w, w, 3, 1),
        );
    }
    for level in 0..BRATS_SUPERVISED {
        add(
            format!("head{level}"),
            ConvBenchShape::conv(sizes[level], BRATS_WIDTHS[level], BRATS_REGIONS, 1, 1),
        );
    }
    shapes
}

/// Times the suite's cases that `filter` selects (a substring of "op shape"; all without
/// one) with the convolutions at `precision`; the device's precision is restored after.
pub fn cuda_suite(
    cuda: &Cuda,
    filter: Option<&str>,
    precision: ConvPrecision,
) -> Result<Vec<BenchResult>> {
    let previous = cuda.conv_precision()?;
    cuda.set_conv_precision(precision)?;
    let results = run_shapes(cuda, filter, precision).and_then(|mut r| {
        r.extend(model_cases(cuda, filter, precision)?);
        Ok(r)
    });
    cuda.set_conv_precision(previous)?;
    results
}

fn details(
    cuda: &Cuda,
    precision: ConvPrecision,
    timed: &Timed,
    suite: &str,
    kernel: &str,
) -> BenchDetails {
    let pool = cuda.pool_stats();
    BenchDetails {
        implementation: "voxseg".into(),
        precision: precision.name().into(),
        flop: 0.0,
        tflops: 0.0,
        timing: "events".into(),
        iters: timed.runs,
        suite: suite.into(),
        layer: None,
        device: cuda.device_name().into(),
        kernel: kernel.into(),
        pool_peak_bytes: pool.peak_allocated_bytes,
        pool_device_allocations: pool.device_allocations,
        timed_device_allocations: timed.device_allocations,
    }
}

/// Instance norm + LeakyReLU (the CPU suite's shape, fused kernels) and a whole training
/// step of the nnU-Net BraTS network (forward with deep supervision, Dice + BCE on 3
/// regions, backward, clipping at 12, SGD Nesterov), named as the reference names them.
fn model_cases(
    cuda: &Cuda,
    filter: Option<&str>,
    precision: ConvPrecision,
) -> Result<Vec<BenchResult>> {
    use crate::autograd::{LeafId, Tape, Var};
    use crate::loss::{dice_ce, Target};
    use crate::nn::unet::UNetConfig;
    use crate::nn::{Ctx, Model, ModelSpec, Module};
    use crate::optim::{clip_grad_norm, OptimizerSpec};
    use crate::tensor::Tensor;
    use crate::tensor_ops::UnaryOp;
    let want = |op: &str, shape: &str| filter.is_none_or(|f| format!("{op} {shape}").contains(f));
    let mut results = Vec::new();
    let norm_shape = "2x64x64x64x32";
    for op in ["instnorm_lrelu.fwd", "instnorm_lrelu.bwd"] {
        if !want(op, norm_shape) {
            continue;
        }
        let dims = [2, 64, 64, 64, 32];
        let x = Tensor::from_storage(
            cuda,
            Shape::new(&dims),
            cuda.uniform(SEED, 4, 0, dims.iter().product())?,
        )?;
        let gamma = Tensor::full(cuda, [32], 1.0)?;
        let beta = Tensor::zeros(cuda, [32])?;
        let act = Some(UnaryOp::LeakyRelu(0.01));
        let backward = op.ends_with("bwd");
        let mut run = || -> Result<()> {
            let tape = Tape::new();
            let xv = if backward {
                tape.leaf(x.clone(), LeafId::fresh())
            } else {
                Var::constant(x.clone())
            };
            let y = xv.instance_norm(
                Some(&Var::constant(gamma.clone())),
                Some(&Var::constant(beta.clone())),
                1e-5,
                act,
            )?;
            if backward {
                tape.backward(&y.sum()?)?;
            }
            Ok(())
        };
        let timed = time_median(cuda, &mut run)?;
        results.push(BenchResult {
            op: op.into(),
            shape: norm_shape.into(),
            ms: timed.ms,
            gflops: 0.0,
            details: Some(details(cuda, precision, &timed, "sweep", "norm")),
        });
    }
    let step_shape = "2x128x128x128x4 32-64-128-256-320-320";
    if want("unet_step", step_shape) {
        let spec = ModelSpec::Unet(UNetConfig::nnunet(BRATS_IN_CHANNELS, BRATS_REGIONS));
        let mut model = Model::new(cuda, &spec, SEED)?;
        let mut opt = OptimizerSpec::nnunet_sgd().build::<Cuda>()?;
        let p = BRATS_PATCH;
        let x = Tensor::from_storage(
            cuda,
            Shape::new(&[BRATS_BATCH, p, p, p, BRATS_IN_CHANNELS]),
            cuda.uniform(SEED, 5, 0, BRATS_BATCH * p * p * p * BRATS_IN_CHANNELS)?,
        )?;
        let mut step = 0u64;
        let mut run = || -> Result<()> {
            let tape = Tape::new();
            let outputs =
                model.forward(&Var::constant(x.clone()), &Ctx::train(tape.clone(), step))?;
            let mut loss: Option<Var<Cuda>> = None;
            for (i, out) in outputs.iter().enumerate() {
                let t = Tensor::full(
                    cuda,
                    out.shape().clone(),
                    if i % 2 == 0 { 1.0 } else { 0.0 },
                )?;
                let term = dice_ce(out, &Target::Regions(t))?.scale(0.5f64.powi(i as i32))?;
                loss = Some(match loss {
                    Some(l) => l.add(&term)?,
                    None => term,
                });
            }
            let loss = loss.ok_or_else(|| Error::shape("unet_step", "no output"))?;
            let mut grads = tape.backward(&loss)?;
            clip_grad_norm(&mut grads, 12.0)?;
            let mut params = model.params_mut();
            opt.step(&mut params, &grads, 1e-2)?;
            step += 1;
            Ok(())
        };
        let timed = time_median(cuda, &mut run)?;
        results.push(BenchResult {
            op: "unet_step".into(),
            shape: step_shape.into(),
            ms: timed.ms,
            gflops: 0.0,
            details: Some(details(cuda, precision, &timed, "brats", "model")),
        });
    }
    Ok(results)
}

fn run_shapes(
    cuda: &Cuda,
    filter: Option<&str>,
    precision: ConvPrecision,
) -> Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    for shape in cuda_conv_shapes() {
        let key = shape.key();
        let selected: Vec<Direction> = Direction::ALL
            .into_iter()
            .filter(|d| {
                let name = format!("{}.{} {key}", shape.family(), d.name());
                filter.is_none_or(|f| name.contains(f))
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let g = shape.geometry()?;
        let input = cuda.uniform(SEED, 1, 0, g.n * g.input_voxels() * g.cin)?;
        let output = cuda.uniform(SEED, 2, 0, g.n * g.output_voxels() * g.cout)?;
        let weight = cuda.uniform(SEED, 3, 0, g.kernel_volume() * g.cin * g.cout)?;
        for direction in selected {
            let pass = direction.pass(shape.transposed);
            let mut run = || -> Result<()> {
                match pass {
                    ConvPass::Forward => cuda.conv3d_forward(&input, &weight, None, &g),
                    ConvPass::BackwardData => cuda.conv3d_backward_data(&output, &weight, None, &g),
                    ConvPass::BackwardWeight => cuda.conv3d_backward_weight(&input, &output, &g),
                }
                .map(drop)
            };
            let timed = time_median(cuda, &mut run)?;
            let kernel = cuda.conv_plan(&g, pass)?.kernel.name().unwrap_or("?");
            let flop = g.flops();
            let gflops = flop / timed.ms / 1e6;
            let pool = cuda.pool_stats();
            results.push(BenchResult {
                op: format!("{}.{}", shape.family(), direction.name()),
                shape: key.clone(),
                ms: timed.ms,
                gflops,
                details: Some(BenchDetails {
                    implementation: "voxseg".into(),
                    precision: precision.name().into(),
                    flop,
                    tflops: gflops / 1e3,
                    timing: "events".into(),
                    iters: timed.runs,
                    suite: shape.suite.into(),
                    layer: (!shape.layers.is_empty()).then(|| shape.layers.join(",")),
                    device: cuda.device_name().into(),
                    kernel: kernel.into(),
                    pool_peak_bytes: pool.peak_allocated_bytes,
                    pool_device_allocations: pool.device_allocations,
                    timed_device_allocations: timed.device_allocations,
                }),
            });
        }
        drop((input, output, weight));
        cuda.synchronize()?;
        cuda.release_cached();
    }
    Ok(results)
}

struct Timed {
    ms: f64,
    runs: usize,
    device_allocations: u64,
}

/// The median device time of `run` after the warm-up, and the pool's new device
/// allocations during the timed runs.
fn time_median(cuda: &Cuda, run: &mut dyn FnMut() -> Result<()>) -> Result<Timed> {
    for _ in 0..WARMUP_RUNS {
        run()?;
    }
    cuda.synchronize()?;
    let before = cuda.pool_stats().device_allocations;
    let mut times = Vec::with_capacity(MAX_RUNS);
    let mut total = 0.0;
    while times.len() < MAX_RUNS && (times.len() < MIN_RUNS || total < BUDGET_MS) {
        let ms = cuda.time_ms(run)?;
        total += ms;
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let ms = if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2.0
    };
    if ms <= 0.0 {
        return Err(Error::Backend {
            backend: "cuda",
            msg: format!("benchmark timed {ms} ms"),
        });
    }
    Ok(Timed {
        ms,
        runs: times.len(),
        device_allocations: cuda.pool_stats().device_allocations - before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(shapes: &'a [ConvBenchShape], family: &str, key: &str) -> &'a ConvBenchShape {
        shapes
            .iter()
            .find(|s| s.family() == family && s.key() == key)
            .unwrap_or_else(|| panic!("no {family} {key}"))
    }

    #[test]
    fn shapes_follow_the_reference_naming() {
        let shapes = cuda_conv_shapes();
        // 5 sweep shapes, 22 distinct network convs, 4 heads.
        assert_eq!(shapes.len(), 31);
        assert_eq!(shapes[0].key(), "2x64x64x64x32->32 k3s1");
        assert_eq!(shapes[4].family(), "conv3d_transpose");
        assert_eq!(shapes[4].key(), "2x32x32x32x64->32 k2s2");
        assert!(shapes[..5].iter().all(|s| s.suite == "sweep"));
        assert!(shapes[5..].iter().all(|s| s.suite == "brats"));

        let down = find(&shapes, "conv3d", "2x128x128x128x32->64 k3s2");
        assert_eq!(down.layers, ["enc1.conv0"]);
        let g = down.geometry().unwrap();
        assert_eq!((g.output, g.pad_before), ([64; 3], [1; 3]));
        // 2 N V Cin Cout k^3 with V the strided (output) side.
        assert_eq!(g.flops(), 2.0 * 2.0 * 64f64.powi(3) * 32.0 * 64.0 * 27.0);

        let up = find(&shapes, "conv3d_transpose", "2x64x64x64x64->32 k2s2");
        assert_eq!(up.layers, ["dec0.up"]);
        let g = up.geometry().unwrap();
        assert_eq!(
            (g.input, g.cin, g.output, g.cout),
            ([128; 3], 32, [64; 3], 64)
        );
        assert_eq!(g.flops(), 2.0 * 2.0 * 64f64.powi(3) * 64.0 * 32.0 * 8.0);

        let shared = find(&shapes, "conv3d", "2x8x8x8x320->320 k3s1");
        assert_eq!(shared.layers, ["enc4.conv1", "dec4.conv1"]);
        let first = find(&shapes, "conv3d", "2x128x128x128x4->32 k3s1");
        assert_eq!(first.layers, ["enc0.conv0"]);
        let head = find(&shapes, "conv3d", "2x128x128x128x32->3 k1s1");
        assert_eq!(head.layers, ["head0"]);
        assert_eq!(head.geometry().unwrap().output, [128; 3]);
        let keys: std::collections::HashSet<_> =
            shapes.iter().map(|s| (s.family(), s.key())).collect();
        assert_eq!(keys.len(), shapes.len(), "no shape twice");
    }

    #[test]
    fn directions_map_to_kernel_passes() {
        assert_eq!(Direction::Fwd.pass(false), ConvPass::Forward);
        assert_eq!(Direction::Fwd.pass(true), ConvPass::BackwardData);
        assert_eq!(Direction::BwdData.pass(true), ConvPass::Forward);
        assert_eq!(Direction::BwdWeight.pass(true), ConvPass::BackwardWeight);
        let names: Vec<_> = Direction::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["fwd", "bwd_data", "bwd_weight"]);
    }

    #[test]
    fn device_lines_carry_the_reference_keys() {
        let r = BenchResult {
            op: "conv3d.fwd".into(),
            shape: "2x64x64x64x32->32 k3s1".into(),
            ms: 2.0,
            gflops: 3000.0,
            details: Some(BenchDetails {
                implementation: "voxseg".into(),
                precision: "tf32".into(),
                flop: 6e9,
                tflops: 3.0,
                timing: "events".into(),
                iters: 30,
                suite: "sweep".into(),
                layer: None,
                device: "NVIDIA H100".into(),
                kernel: "conv3d_fwd_tf32_n32".into(),
                pool_peak_bytes: 1 << 30,
                pool_device_allocations: 12,
                timed_device_allocations: 0,
            }),
        };
        let line: serde_json::Value =
            serde_json::from_str(super::super::json_lines(&[r]).unwrap().trim()).unwrap();
        for key in [
            "op",
            "shape",
            "ms",
            "gflops",
            "tflops",
            "precision",
            "impl",
            "flop",
        ] {
            assert!(line.get(key).is_some(), "{key} missing from {line}");
        }
        assert_eq!(line["precision"], "tf32");
        assert!(line.get("layer").is_none());
    }
}
