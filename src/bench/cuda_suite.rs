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
//! and the pool's first allocations happen there), then eager runs each bracketed by CUDA
//! events on the stream, at least 5 and at most 30 within 0.5 s of device time, and their
//! median. The GPU idles at each start event, so an eager run also counts the host's
//! launches (4-5 per tensor-core convolution: two packs, the conv, the partial sum), which
//! dominate small cases. The op cases (convolutions, instance norm forward and backward)
//! are therefore timed as scripts/bench_reference.py times cuDNN: `graph_reps` calls
//! (enough for about 2 ms, at most 50) captured into one CUDA graph, one untimed replay,
//! then replays between events (as many as the 0.5 s budget allows, 5 to 30); `ms` is the
//! median replay time / `graph_reps`, with `timing` "graph" and the eager median as
//! `ms_eager`. A case whose
//! calls cannot be captured (with `VOXSEG_POOL=off` every call allocates) keeps the eager
//! figure, `timing` "events", with a note on stderr. The instance norm backward is the
//! backend's alone (dx, dgamma and dbeta from saved tensors and a random dy, as the
//! reference takes PyTorch's gradients; until 2026-11-27 it ran the tape's forward and
//! backward, eager). The training step, whose tape uploads the loss's seed gradient from
//! the host, which a graph cannot replay, is always eager ("events"). Each run includes
//! its pool allocations (served by the cache after warm-up) and, for split reductions, the
//! partial sum. Between shapes the pool's cache is released. Figures measured before graph
//! timing (BENCHMARKS.md up to 2026-11-26) are eager, launch overhead included.
use super::step::{step_runner, StepShape};
use super::{BenchDetails, BenchResult, RunInfo};
use crate::backend::cuda::conv_plan::{ConvPass, ConvPrecision};
use crate::backend::cuda::{graph_reps, Cuda};
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

    /// The op of `direction`: "conv3d.fwd", "conv3d_transpose.bwd_weight", ...
    fn op(&self, direction: Direction) -> String {
        format!("{}.{}", self.family(), direction.name())
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
    cuda.set_conv_precision(precision);
    let results = run_shapes(cuda, filter, precision).and_then(|mut r| {
        r.extend(model_cases(cuda, filter, precision)?);
        Ok(r)
    });
    cuda.set_conv_precision(previous);
    results
}

fn run_info(cuda: &Cuda, precision: ConvPrecision) -> RunInfo {
    RunInfo::new(precision, cuda.device_name().into())
}

fn details(cuda: &Cuda, timed: &Timed, suite: &str, kernel: &str) -> BenchDetails {
    let pool = cuda.pool_stats();
    BenchDetails {
        flop: 0.0,
        tflops: 0.0,
        timing: timed.timing.into(),
        ms_eager: timed.ms_eager,
        graph_reps: timed.graph_reps,
        iters: timed.runs,
        suite: suite.into(),
        layer: None,
        kernel: kernel.into(),
        packs: None,
        pool_peak_bytes: pool.peak_allocated_bytes,
        forward_live_bytes: None,
        pool_device_allocations: pool.device_allocations,
        timed_device_allocations: timed.device_allocations,
    }
}

const NORM_OPS: [&str; 2] = ["instnorm_lrelu.fwd", "instnorm_lrelu.bwd"];

/// One instance norm + LeakyReLU of the suite: `[n, size^3, channels]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormBenchShape {
    pub size: usize,
    pub channels: usize,
    /// "sweep" or "brats".
    pub suite: &'static str,
    /// The network layers with this shape (brats).
    pub layers: Vec<String>,
}

impl NormBenchShape {
    fn dims(&self) -> [usize; 5] {
        let s = self.size;
        [BRATS_BATCH, s, s, s, self.channels]
    }

    /// "NxDxHxWxC".
    pub fn key(&self) -> String {
        self.dims().map(|d| d.to_string()).join("x")
    }
}

/// The sweep's norm (the CPU suite's shape), then the network's: each encoder stage's
/// (after its two convolutions) and each decoder stage's, repeated shapes merged, as
/// scripts/bench_reference.py lists them.
pub fn cuda_norm_shapes() -> Vec<NormBenchShape> {
    let mut shapes = vec![NormBenchShape {
        size: 64,
        channels: 32,
        suite: "sweep",
        layers: Vec::new(),
    }];
    let sizes: Vec<usize> = (0..BRATS_WIDTHS.len()).map(|i| BRATS_PATCH >> i).collect();
    let stages = BRATS_WIDTHS.iter().zip(&sizes).enumerate();
    let encoder = stages
        .clone()
        .map(|(i, (&w, &s))| (format!("enc{i}"), s, w));
    let decoder = stages
        .take(BRATS_WIDTHS.len() - 1)
        .map(|(i, (&w, &s))| (format!("dec{i}"), s, w));
    for (layer, size, channels) in encoder.chain(decoder) {
        match shapes
            .iter_mut()
            .find(|s| s.size == size && s.channels == channels)
        {
            Some(shape) if shape.suite == "brats" => shape.layers.push(layer),
            Some(_) => {}
            None => shapes.push(NormBenchShape {
                size,
                channels,
                suite: "brats",
                layers: vec![layer],
            }),
        }
    }
    shapes
}

/// The nnU-Net BraTS network's training step.
fn brats_step() -> StepShape {
    StepShape {
        batch: BRATS_BATCH,
        patch: BRATS_PATCH,
        in_channels: BRATS_IN_CHANNELS,
        regions: BRATS_REGIONS,
        base_features: BRATS_WIDTHS[0],
        max_features: BRATS_WIDTHS[BRATS_WIDTHS.len() - 1],
        depth: BRATS_WIDTHS.len(),
    }
}

/// Every case of the suite as "op shape", the text `--filter` is matched against.
pub fn cuda_case_names() -> Vec<String> {
    let mut names = Vec::new();
    for shape in cuda_conv_shapes() {
        for d in Direction::ALL {
            names.push(format!("{} {}", shape.op(d), shape.key()));
        }
    }
    for shape in cuda_norm_shapes() {
        names.extend(NORM_OPS.map(|op| format!("{op} {}", shape.key())));
    }
    names.push(format!("unet_step {}", brats_step().name()));
    names
}

/// Instance norm + LeakyReLU (fused kernels; the CPU suite's shape and the network's) and
/// a whole training step of the nnU-Net BraTS network (forward with deep supervision,
/// Dice + BCE on 3 regions, backward, clipping at 12, SGD Nesterov), named as the
/// reference names them.
fn model_cases(
    cuda: &Cuda,
    filter: Option<&str>,
    precision: ConvPrecision,
) -> Result<Vec<BenchResult>> {
    use crate::tensor::Tensor;
    use crate::tensor_ops::norm::{NormKernel, NormKind, NormParams};
    let want = |op: &str, shape: &str| filter.is_none_or(|f| format!("{op} {shape}").contains(f));
    let mut results = Vec::new();
    for (shape, op) in cuda_norm_shapes()
        .into_iter()
        .flat_map(|shape| NORM_OPS.map(|op| (shape.clone(), op)))
    {
        let norm_shape = shape.key();
        if !want(op, &norm_shape) {
            continue;
        }
        let [n, d, h, w, c] = shape.dims();
        let numel = n * d * h * w * c;
        let x = cuda.uniform(SEED, 4, 0, numel)?;
        let gamma = cuda.upload(&vec![1.0; c])?;
        let beta = cuda.upload(&vec![0.0; c])?;
        let p = NormParams {
            n,
            spatial: d * h * w,
            c,
            groups: c,
            eps: 1e-5,
            neg_slope: 0.01,
            kind: NormKind::Group,
            fixed_stats: false,
        };
        // The forward: statistics, then the fused normalisation and LeakyReLU. The
        // backward: dx, dgamma and dbeta from what the forward saves (x, the statistics,
        // gamma and beta) and a random dy,
        // as the reference takes PyTorch's gradients of (x, weight, bias).
        let (mean, var) = cuda.norm_stats(&x, &p)?;
        let dy = cuda.uniform(SEED, 5, 0, numel)?;
        let mut run = || -> Result<()> {
            if op.ends_with("bwd") {
                let needs = [true; 3];
                let (gamma, beta) = (Some(&gamma), Some(&beta));
                cuda.norm_backward(&x, &dy, &mean, &var, gamma, beta, &p, needs)?;
            } else {
                let (mean, var) = cuda.norm_stats(&x, &p)?;
                cuda.norm_forward(&x, &mean, &var, Some(&gamma), Some(&beta), &p)?;
            }
            Ok(())
        };
        let timed = time_case(cuda, &format!("{op} {norm_shape}"), Timing::Graph, &mut run)?;
        results.push(BenchResult {
            op: op.into(),
            shape: norm_shape,
            ms: timed.ms,
            gflops: 0.0,
            run: run_info(cuda, precision),
            details: Some(BenchDetails {
                layer: (!shape.layers.is_empty()).then(|| shape.layers.join(",")),
                ..details(cuda, &timed, shape.suite, "norm")
            }),
        });
    }
    let step = brats_step();
    let step_shape = step.name();
    if want("unet_step", &step_shape) {
        let x = Tensor::from_storage(
            cuda,
            Shape::new(&step.input_dims()),
            cuda.uniform(SEED, 5, 0, step.input_dims().iter().product())?,
        )?;
        let forward_live = std::rc::Rc::new(std::cell::Cell::new(0));
        let probe = {
            let (forward_live, cuda) = (forward_live.clone(), cuda.clone());
            move || forward_live.set(cuda.pool_stats().allocated_bytes)
        };
        let mut train = step_runner(cuda, &step, x, SEED, probe)?;
        let mut run = || train().map(|_| ());
        let timed = time_median(cuda, &mut run)?;
        results.push(BenchResult {
            op: "unet_step".into(),
            shape: step_shape,
            ms: timed.ms,
            gflops: 0.0,
            run: run_info(cuda, precision),
            details: Some(BenchDetails {
                forward_live_bytes: Some(forward_live.get()),
                ..details(cuda, &timed, "brats", "model")
            }),
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
    let packs_kept = cuda.pack_cache()?;
    for shape in cuda_conv_shapes() {
        let key = shape.key();
        let selected: Vec<Direction> = Direction::ALL
            .into_iter()
            .filter(|d| filter.is_none_or(|f| format!("{} {key}", shape.op(*d)).contains(f)))
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
            let op = shape.op(direction);
            let timed = time_case(cuda, &format!("{op} {key}"), Timing::Graph, &mut run)?;
            // The L1 build variant runs the same kernel names, and tf32 backward weights as
            // three bf16 products the bf16 kernels: the label says which ran.
            let plan = cuda.conv_plan(&g, pass)?;
            let name = plan.kernel.name().unwrap_or("?");
            let kernel = format!(
                "{name}{}{}",
                if plan.gather_l1 { "+l1" } else { "" },
                if plan.is_bf16x3() { "+bf16x3" } else { "" }
            );
            let flop = g.flops();
            let gflops = flop / timed.ms / 1e6;
            results.push(BenchResult {
                op,
                shape: key.clone(),
                ms: timed.ms,
                gflops,
                run: run_info(cuda, precision),
                details: Some(BenchDetails {
                    flop,
                    tflops: gflops / 1e3,
                    layer: (!shape.layers.is_empty()).then(|| shape.layers.join(",")),
                    packs: (precision != ConvPrecision::F32)
                        .then(|| if packs_kept { "kept" } else { "per call" }.into()),
                    ..details(cuda, &timed, shape.suite, &kernel)
                }),
            });
        }
        drop((input, output, weight));
        cuda.synchronize()?;
        cuda.release_cached();
    }
    Ok(results)
}

/// Whether a case is also timed from a CUDA graph (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    Eager,
    Graph,
}

struct Timed {
    /// The reported time of one call.
    ms: f64,
    /// Timed samples: eager runs or graph replays.
    runs: usize,
    device_allocations: u64,
    /// "events" (eager) or "graph".
    timing: &'static str,
    /// With graph timing: the eager median and the calls per graph.
    ms_eager: Option<f64>,
    graph_reps: Option<usize>,
}

/// The median of `times` (not empty), which must be positive.
fn positive_median(times: &mut [f64]) -> Result<f64> {
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let ms = match times.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => times[mid],
        _ => (times[mid - 1] + times[mid]) / 2.0,
    };
    if ms.is_nan() || ms <= 0.0 {
        return Err(Error::Backend {
            backend: "cuda",
            msg: format!("benchmark timed {ms} ms"),
        });
    }
    Ok(ms)
}

/// Timed graph replays for a replay of about `replay_ms`: as many as fit in the budget,
/// MIN_RUNS to MAX_RUNS.
fn graph_replays(replay_ms: f64) -> usize {
    ((BUDGET_MS / replay_ms.max(1e-3)).floor() as usize).clamp(MIN_RUNS, MAX_RUNS)
}

/// The eager median of `run` (case `name`), then with `Timing::Graph` the median per-call
/// time of graph replays; when the calls cannot be captured, a note on stderr and the
/// eager figures.
fn time_case(
    cuda: &Cuda,
    name: &str,
    timing: Timing,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<Timed> {
    let eager = time_median(cuda, run)?;
    if timing == Timing::Eager {
        return Ok(eager);
    }
    let reps = graph_reps(eager.ms);
    let replays = graph_replays(eager.ms * reps as f64);
    match cuda.time_graph_ms(run, reps, replays)? {
        Ok(mut per_call) => Ok(Timed {
            ms: positive_median(&mut per_call)?,
            runs: per_call.len(),
            timing: "graph",
            ms_eager: Some(eager.ms),
            graph_reps: Some(reps),
            ..eager
        }),
        Err(why) => {
            eprintln!("  {name}: graph capture failed ({why}); eager timing kept");
            Ok(eager)
        }
    }
}

/// The median device time of `run` after the warm-up, and the pool's new device
/// allocations during the timed runs. The pool's peaks start over here, so that a case's
/// `pool_peak_bytes` is what was live when it began (its inputs, a model) and what it
/// allocated, not an earlier case's.
fn time_median(cuda: &Cuda, run: &mut dyn FnMut() -> Result<()>) -> Result<Timed> {
    cuda.reset_pool_peaks();
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
    Ok(Timed {
        ms: positive_median(&mut times)?,
        runs: times.len(),
        device_allocations: cuda.pool_stats().device_allocations - before,
        timing: "events",
        ms_eager: None,
        graph_reps: None,
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
    fn norm_shapes_follow_the_reference_naming() {
        let shapes = cuda_norm_shapes();
        let named: Vec<_> = shapes
            .iter()
            .map(|s| (s.key(), s.suite, s.layers.join(",")))
            .collect();
        let row = |key: &str, suite, layers: &str| (key.to_string(), suite, layers.to_string());
        assert_eq!(
            named,
            [
                row("2x64x64x64x32", "sweep", ""),
                row("2x128x128x128x32", "brats", "enc0,dec0"),
                row("2x64x64x64x64", "brats", "enc1,dec1"),
                row("2x32x32x32x128", "brats", "enc2,dec2"),
                row("2x16x16x16x256", "brats", "enc3,dec3"),
                row("2x8x8x8x320", "brats", "enc4,dec4"),
                row("2x4x4x4x320", "brats", "enc5"),
            ]
        );
        let names = cuda_case_names();
        assert!(names.contains(&"instnorm_lrelu.bwd 2x128x128x128x32".to_string()));
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

    fn line(timing: &str, ms_eager: Option<f64>, graph_reps: Option<usize>) -> serde_json::Value {
        let r = BenchResult {
            op: "conv3d.fwd".into(),
            shape: "2x64x64x64x32->32 k3s1".into(),
            ms: 2.0,
            gflops: 3000.0,
            run: RunInfo::new(ConvPrecision::Tf32, "NVIDIA H100".into()),
            details: Some(BenchDetails {
                flop: 6e9,
                tflops: 3.0,
                timing: timing.into(),
                ms_eager,
                graph_reps,
                iters: 30,
                suite: "sweep".into(),
                layer: None,
                kernel: "conv3d_fwd_tf32_n32".into(),
                packs: Some("kept".into()),
                pool_peak_bytes: 1 << 30,
                forward_live_bytes: None,
                pool_device_allocations: 12,
                timed_device_allocations: 0,
            }),
        };
        serde_json::from_str(super::super::json_lines(&[r]).unwrap().trim()).unwrap()
    }

    #[test]
    fn device_lines_carry_the_reference_keys() {
        let eager = line("events", None, None);
        for key in [
            "op",
            "shape",
            "ms",
            "gflops",
            "tflops",
            "precision",
            "impl",
            "flop",
            "timing",
            "iters",
        ] {
            assert!(eager.get(key).is_some(), "{key} missing from {eager}");
        }
        assert_eq!(eager["precision"], "tf32");
        assert_eq!(eager["timing"], "events");
        for absent in ["layer", "ms_eager", "graph_reps", "forward_live_bytes"] {
            assert!(eager.get(absent).is_none(), "{absent} in {eager}");
        }
        let graph = line("graph", Some(2.75), Some(7));
        assert_eq!(graph["timing"], "graph");
        assert_eq!(graph["ms"], 2.0);
        assert_eq!(graph["ms_eager"], 2.75);
        assert_eq!(graph["graph_reps"], 7);
        let keys = |v: &serde_json::Value| v.as_object().unwrap().len();
        assert_eq!(keys(&graph), keys(&eager) + 2, "the old keys all stay");
    }

    #[test]
    fn medians_must_be_positive() {
        assert_eq!(positive_median(&mut [3.0, 1.0, 2.0]).unwrap(), 2.0);
        assert_eq!(positive_median(&mut [4.0, 1.0, 2.0, 3.0]).unwrap(), 2.5);
        assert!(positive_median(&mut [0.0, 0.0, 1.0]).is_err());
        assert!(positive_median(&mut []).is_err());
        assert!(positive_median(&mut [f64::NAN]).is_err());
    }

    #[test]
    fn graph_reps_and_replays_follow_the_eager_time() {
        // A 0.03 ms conv: 67 calls would fill 2 ms, 50 are captured; 333 replays of
        // 1.5 ms would fit in the 0.5 s budget, 30 are timed.
        let reps = graph_reps(0.03);
        assert_eq!(reps, 50);
        assert_eq!(graph_replays(0.03 * reps as f64), MAX_RUNS);
        // A 40 ms case: one call per graph, 12 replays fit in 0.5 s.
        assert_eq!(graph_reps(40.0), 1);
        assert_eq!(graph_replays(40.0), 12);
        assert_eq!(graph_replays(400.0), MIN_RUNS);
        assert_eq!(graph_replays(0.0), MAX_RUNS);
    }
}
