//! Benchmarks of the CPU kernels: named cases, each timed as the median of several runs
//! after a warm-up and reported as a table or as JSON lines. `voxseg bench --device cpu
//! [--json] [--filter S]` runs [`cpu_suite`]; `benches/conv.rs` runs the same cases under
//! criterion. [`cuda_suite::cuda_suite`] times the CUDA kernels with device events (and
//! CUDA graph replays).
pub mod cuda_suite;
pub mod step;

use crate::backend::cpu::Cpu;
use crate::backend::cuda::ConvPrecision;
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Shape;
use crate::tensor_ops::conv::{Conv3dSpec, ConvGeometry, ConvTranspose3dSpec};
use crate::tensor_ops::Conv3dKernel;
use std::time::Instant;

/// One measured case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchResult {
    pub op: String,
    pub shape: String,
    /// Median wall time of one run, in milliseconds.
    pub ms: f64,
    /// Floating-point operations per second of that median run, in 1e9 (0 when the case
    /// does not count operations).
    pub gflops: f64,
    /// What ran the case, as further top-level JSON keys.
    #[serde(flatten)]
    pub run: RunInfo,
    /// What a device run adds (none for the CPU suite), as further top-level JSON keys.
    #[serde(flatten)]
    pub details: Option<BenchDetails>,
}

/// What ran a case, named as scripts/bench_reference.py names it, so that a line says on
/// which device and at which precision it was measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunInfo {
    /// "voxseg".
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The convolutions' precision: "fp32", "tf32" or "bf16".
    pub precision: String,
    /// The GPU's name, or the CPU backend's (its threads and convolution engine).
    pub device: String,
}

impl RunInfo {
    pub fn new(precision: ConvPrecision, device: String) -> Self {
        Self {
            implementation: "voxseg".into(),
            precision: precision.name().into(),
            device,
        }
    }

    /// The CPU backend `be`.
    pub fn cpu(be: &Cpu) -> Self {
        Self::new(be.conv_precision(), be.name())
    }
}

/// Keys of a device benchmark line beyond op, shape, ms and gflops, named as
/// scripts/bench_reference.py names them so that scripts/bench_table.py joins the two.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchDetails {
    /// Floating-point operations of one run.
    pub flop: f64,
    /// gflops / 1000.
    pub tflops: f64,
    /// "graph": per call, from replays of a CUDA graph of `graph_reps` captured calls
    /// (no host launch overhead, as the reference times cuDNN); "events": device time
    /// between CUDA events around each eager run (the host's launches included).
    pub timing: String,
    /// With "graph": the eager median ("events" timing) of the same case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_eager: Option<f64>,
    /// With "graph": the calls captured into the graph (a replay's time / this = ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_reps: Option<usize>,
    /// Timed samples the median is taken over (eager runs or graph replays).
    pub iters: usize,
    /// "sweep" or "brats".
    pub suite: String,
    /// The network layers of this shape, comma-separated (brats cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The kernel the launch plan chose.
    pub kernel: String,
    /// Tensor-core convolutions: "kept" when the operands' bf16/tf32 packs are made by the
    /// warm-up and kept beside them, so the timed calls read operands already converted, as
    /// cuDNN's bf16 cases read bf16 tensors; "per call" when every call packs its operands
    /// (`VOXSEG_PACK_CACHE=off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packs: Option<String>,
    /// The pool's peak of allocated bytes during the case: what was live when its timing
    /// began (its inputs, a model) and what it allocated.
    pub pool_peak_bytes: u64,
    /// The training step: the pool's allocated bytes once the forward and the loss are
    /// built, before the backward (what the tape saved, with the model and its inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_live_bytes: Option<u64>,
    /// Device allocations the pool has made so far, and those made during the timed runs
    /// (0 once the cache is warm).
    pub pool_device_allocations: u64,
    pub timed_device_allocations: u64,
}

/// The timed body of a case, with its inputs already allocated.
pub type BenchRun = Box<dyn FnMut() -> Result<()>>;

/// A case: its name, the work of one run, and how to allocate its inputs (only done when
/// the case is selected).
pub struct BenchCase {
    pub op: String,
    pub shape: String,
    /// Floating-point operations of one run (0 when not meaningful).
    pub flops: f64,
    pub prepare: Box<dyn FnOnce() -> Result<BenchRun>>,
}

impl BenchCase {
    /// Whether `filter` (a substring of "op shape") selects this case; no filter selects all.
    pub fn matches(&self, filter: Option<&str>) -> bool {
        filter.is_none_or(|f| format!("{} {}", self.op, self.shape).contains(f))
    }
}

/// Median wall time of `run` in milliseconds: one warm-up run, then at least `min_runs`
/// and at most `max_runs` timed runs, stopping after `budget_s` seconds once `min_runs` are done.
pub fn time_median_ms(
    run: &mut dyn FnMut() -> Result<()>,
    min_runs: usize,
    max_runs: usize,
    budget_s: f64,
) -> Result<f64> {
    run()?;
    let start = Instant::now();
    let mut times = Vec::with_capacity(max_runs);
    while times.len() < max_runs.max(1)
        && (times.len() < min_runs || start.elapsed().as_secs_f64() < budget_s)
    {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    Ok(if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2.0
    })
}

/// Prepares and times one case; `run_info` says what runs it.
pub fn run_case(case: BenchCase, run_info: &RunInfo) -> Result<BenchResult> {
    let mut run = (case.prepare)()?;
    let ms = time_median_ms(&mut run, 5, 21, 2.0)?;
    Ok(BenchResult {
        op: case.op,
        shape: case.shape,
        ms,
        gflops: if ms > 0.0 {
            case.flops / (ms * 1e-3) / 1e9
        } else {
            0.0
        },
        run: run_info.clone(),
        details: None,
    })
}

fn random_storage(be: &Cpu, shape: &Shape, seed: u64) -> Result<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let data: Vec<f32> = (0..shape.numel())
        .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
        .collect();
    be.upload(&data)
}

/// The three passes of a 3x3x3 'same' convolution, batch 2, `size`^3 voxels.
fn conv3d_cases(
    cases: &mut Vec<BenchCase>,
    be: Cpu,
    size: usize,
    cin: usize,
    cout: usize,
) -> Result<()> {
    let x = Shape::new(&[2, size, size, size, cin]);
    let w = Shape::new(&[3, 3, 3, cin, cout]);
    let g = ConvGeometry::conv3d(&x, &w, &Conv3dSpec::default())?;
    let shape = format!("2x{size}x{size}x{size}x{cin}->{cout} k3s1");
    for pass in Pass::ALL {
        cases.push(BenchCase {
            op: format!("conv3d.{}", pass.name()),
            shape: shape.clone(),
            flops: g.flops(),
            prepare: Box::new(move || pass.prepare(be, g, false)),
        });
    }
    Ok(())
}

/// The three passes of a 2x2x2 stride-2 transposed convolution, batch 2, `size`^3 input.
fn conv_transpose3d_cases(
    cases: &mut Vec<BenchCase>,
    be: Cpu,
    size: usize,
    cin: usize,
    cout: usize,
) -> Result<()> {
    let x = Shape::new(&[2, size, size, size, cin]);
    let w = Shape::new(&[2, 2, 2, cout, cin]);
    let spec = ConvTranspose3dSpec {
        stride: [2; 3],
        padding: [[0, 0]; 3],
        output_padding: [0; 3],
    };
    let g = ConvGeometry::conv_transpose3d(&x, &w, &spec)?;
    let shape = format!("2x{size}x{size}x{size}x{cin}->{cout} k2s2");
    for pass in Pass::ALL {
        cases.push(BenchCase {
            op: format!("conv3d_transpose.{}", pass.name()),
            shape: shape.clone(),
            flops: g.flops(),
            prepare: Box::new(move || pass.prepare(be, g, true)),
        });
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Pass {
    Forward,
    BackwardData,
    BackwardWeight,
}

impl Pass {
    const ALL: [Pass; 3] = [Pass::Forward, Pass::BackwardData, Pass::BackwardWeight];

    fn name(self) -> &'static str {
        match self {
            Pass::Forward => "fwd",
            Pass::BackwardData => "bwd_data",
            Pass::BackwardWeight => "bwd_weight",
        }
    }

    /// Allocates the inputs of this pass for `g` on `be` (of a transposed convolution when
    /// `transposed`: its x is the geometry's output, its y the geometry's input).
    fn prepare(self, be: Cpu, g: ConvGeometry, transposed: bool) -> Result<BenchRun> {
        // Conv input side (x of a convolution, y of a transposed one) and output side.
        let small = random_storage(&be, &g.input_shape(), 1)?;
        let large = random_storage(&be, &g.output_shape(), 2)?;
        let w = random_storage(&be, &g.weight_shape(), 3)?;
        let run: BenchRun = match (self, transposed) {
            (Pass::Forward, false) | (Pass::BackwardData, true) => {
                Box::new(move || be.conv3d_forward(&small, &w, None, &g).map(drop))
            }
            (Pass::BackwardData, false) | (Pass::Forward, true) => {
                Box::new(move || be.conv3d_backward_data(&large, &w, None, &g).map(drop))
            }
            (Pass::BackwardWeight, _) => {
                Box::new(move || be.conv3d_backward_weight(&small, &large, &g).map(drop))
            }
        };
        Ok(run)
    }
}

/// Every CPU case, in report order, run on `be` (which sets the convolutions' precision).
pub fn cpu_cases(be: Cpu) -> Result<Vec<BenchCase>> {
    let mut cases = Vec::new();
    for (size, cin, cout) in [(64, 32, 32), (32, 64, 64), (16, 128, 128), (8, 256, 256)] {
        conv3d_cases(&mut cases, be, size, cin, cout)?;
    }
    conv_transpose3d_cases(&mut cases, be, 32, 64, 32)?;
    instance_norm_cases(&mut cases, 64, 32);
    cases.push(unet_step_case(be, cpu_step()));
    Ok(cases)
}

/// The training step the CPU suite times: nnU-Net's recipe at a size a CPU trains at
/// (batch 2, 64^3, 4 modalities, 5 stages of 16 to 256 features).
pub fn cpu_step() -> step::StepShape {
    step::StepShape {
        batch: 2,
        patch: 64,
        in_channels: 4,
        regions: 3,
        base_features: 16,
        max_features: 256,
        depth: 5,
    }
}

/// A whole U-Net training step (see [`step`]).
fn unet_step_case(b: Cpu, shape: step::StepShape) -> BenchCase {
    BenchCase {
        op: "unet_step".into(),
        shape: shape.name(),
        flops: 0.0,
        prepare: Box::new(move || {
            let dims = Shape::new(&shape.input_dims());
            let x = crate::tensor::Tensor::from_storage(
                &b,
                dims.clone(),
                random_storage(&b, &dims, 5)?,
            )?;
            let mut train = step::step_runner(&b, &shape, x, 5, || ())?;
            let run: BenchRun = Box::new(move || train().map(|_| ()));
            Ok(run)
        }),
    }
}

/// Instance norm with the fused LeakyReLU(0.01), the block after every conv of the U-Net:
/// forward alone, and forward + backward through the tape.
fn instance_norm_cases(cases: &mut Vec<BenchCase>, size: usize, c: usize) {
    use crate::autograd::{LeafId, Tape, Var};
    use crate::tensor::Tensor;
    use crate::tensor_ops::UnaryOp;
    let shape = format!("2x{size}x{size}x{size}x{c}");
    for backward in [false, true] {
        cases.push(BenchCase {
            op: format!("instnorm_lrelu.{}", if backward { "bwd" } else { "fwd" }),
            shape: shape.clone(),
            flops: 0.0,
            prepare: Box::new(move || {
                let b = Cpu::new();
                let shape = Shape::new(&[2, size, size, size, c]);
                let x = Tensor::from_storage(&b, shape.clone(), random_storage(&b, &shape, 3)?)?;
                let gamma = Tensor::full(&b, [c], 1.0)?;
                let beta = Tensor::zeros(&b, [c])?;
                let act = Some(UnaryOp::LeakyRelu(0.01));
                let run: BenchRun = Box::new(move || {
                    if backward {
                        let tape = Tape::new();
                        let xv = tape.leaf(x.clone(), LeafId::fresh());
                        let g = tape.leaf(gamma.clone(), LeafId::fresh());
                        let y = xv.instance_norm(
                            Some(&g),
                            Some(&Var::constant(beta.clone())),
                            1e-5,
                            act,
                        )?;
                        tape.backward(&y.sum()?)?;
                    } else {
                        Var::constant(x.clone()).instance_norm(
                            Some(&Var::constant(gamma.clone())),
                            Some(&Var::constant(beta.clone())),
                            1e-5,
                            act,
                        )?;
                    }
                    Ok(())
                });
                Ok(run)
            }),
        });
    }
}

/// Fails when `filter` selects none of `names` ("op shape" of each case), listing the ops.
pub fn check_filter(filter: &str, names: &[String]) -> Result<()> {
    if names.iter().any(|n| n.contains(filter)) {
        return Ok(());
    }
    let mut ops: Vec<&str> = Vec::new();
    for n in names {
        let op = n.split_once(' ').map_or(n.as_str(), |(op, _)| op);
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    Err(Error::config(
        "--filter",
        format!(
            "'{filter}' matches no case (it is looked for in \"op shape\"); the ops are {}",
            ops.join(", ")
        ),
    ))
}

/// Runs the CPU cases that `filter` selects (all without one).
pub fn cpu_suite(be: Cpu, filter: Option<&str>) -> Result<Vec<BenchResult>> {
    let run_info = RunInfo::cpu(&be);
    cpu_cases(be)?
        .into_iter()
        .filter(|c| c.matches(filter))
        .map(|case| run_case(case, &run_info))
        .collect()
}

/// The results as an aligned text table.
pub fn format_table(results: &[BenchResult]) -> String {
    let op_w = results.iter().map(|r| r.op.len()).max().unwrap_or(0).max(2);
    let shape_w = results
        .iter()
        .map(|r| r.shape.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:op_w$}  {:shape_w$}  {:>10}  {:>8}\n",
        "op", "shape", "ms", "GFLOP/s"
    );
    for r in results {
        // Memory-bound cases count no operations: a dash, not a rate of 0.
        let rate = if r.gflops > 0.0 {
            format!("{:.1}", r.gflops)
        } else {
            "-".into()
        };
        out += &format!(
            "{:op_w$}  {:shape_w$}  {:>10.3}  {rate:>8}\n",
            r.op, r.shape, r.ms
        );
    }
    out
}

pub fn print_table(results: &[BenchResult]) {
    print!("{}", format_table(results));
}

/// One JSON object per line: `{"op", "shape", "ms", "gflops"}`.
pub fn json_lines(results: &[BenchResult]) -> Result<String> {
    let mut out = String::new();
    for r in results {
        out += &serde_json::to_string(r).map_err(|e| Error::data("bench", e.to_string()))?;
        out.push('\n');
    }
    Ok(out)
}

pub fn print_json_lines(results: &[BenchResult]) -> Result<()> {
    print!("{}", json_lines(results)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_ops::conv::Padding;

    #[test]
    fn median_after_one_warm_up() {
        let mut calls = 0;
        let mut run = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        let ms = time_median_ms(&mut run, 4, 4, 10.0).unwrap();
        assert_eq!(calls, 5);
        assert!((0.0..10.0).contains(&ms));
    }

    #[test]
    fn suite_lists_the_conv_cases_and_filters_them() {
        let cases = cpu_cases(Cpu::new()).unwrap();
        // 4 shapes x 3 conv passes, 3 transposed-conv passes, instance norm fwd and bwd,
        // the training step.
        assert_eq!(cases.len(), 18);
        assert_eq!(cases[16].op, "instnorm_lrelu.bwd");
        assert_eq!(cases[17].op, "unet_step");
        assert_eq!(cases[17].shape, "2x64x64x64x4 16-32-64-128-256");
        assert_eq!(cases[0].op, "conv3d.fwd");
        assert_eq!(cases[0].shape, "2x64x64x64x32->32 k3s1");
        // 2 * 2 * 64^3 voxels * 32 * 32 * 27.
        assert_eq!(cases[0].flops, 2.0 * 2.0 * 262144.0 * 32.0 * 32.0 * 27.0);
        let t: Vec<_> = cases
            .iter()
            .filter(|c| c.matches(Some("transpose")))
            .collect();
        assert_eq!(t.len(), 3);
        assert_eq!(t[2].op, "conv3d_transpose.bwd_weight");
        assert_eq!(t[2].shape, "2x32x32x32x64->32 k2s2");
        assert_eq!(t[2].flops, 2.0 * 2.0 * 32768.0 * 64.0 * 32.0 * 8.0);
        assert!(cpu_suite(Cpu::new(), Some("no such case"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_small_case_runs_and_reports() {
        let g = ConvGeometry::conv3d(
            &Shape::new(&[1, 4, 4, 4, 3]),
            &Shape::new(&[3, 3, 3, 3, 5]),
            &Conv3dSpec {
                stride: [1; 3],
                padding: Padding::Same,
            },
        )
        .unwrap();
        let case = BenchCase {
            op: "conv3d.bwd_weight".into(),
            shape: "tiny".into(),
            flops: g.flops(),
            prepare: Box::new(move || Pass::BackwardWeight.prepare(Cpu::new(), g, false)),
        };
        let r = run_case(case, &RunInfo::cpu(&Cpu::new())).unwrap();
        assert!(r.ms > 0.0 && r.gflops > 0.0, "{r:?}");
        assert_eq!(r.run.precision, "fp32");
        assert!(r.run.device.starts_with("cpu ("), "{r:?}");
    }

    #[test]
    fn table_and_json_lines() {
        let results = vec![BenchResult {
            op: "conv3d.fwd".into(),
            shape: "2x8x8x8x256->256 k3s1".into(),
            ms: 12.5,
            gflops: 96.25,
            run: RunInfo::new(
                ConvPrecision::Bf16,
                "cpu (2 threads, f32, bf16 convolutions by AVX512-BF16)".into(),
            ),
            details: None,
        }];
        let table = format_table(&results);
        assert!(table.starts_with("op"), "{table}");
        assert!(
            table.contains("conv3d.fwd  2x8x8x8x256->256 k3s1      12.500      96.2"),
            "{table}"
        );
        assert_eq!(
            json_lines(&results).unwrap(),
            "{\"op\":\"conv3d.fwd\",\"shape\":\"2x8x8x8x256->256 k3s1\",\"ms\":12.5,\"gflops\":96.25,\
             \"impl\":\"voxseg\",\"precision\":\"bf16\",\
             \"device\":\"cpu (2 threads, f32, bf16 convolutions by AVX512-BF16)\"}\n"
        );
    }

    #[test]
    fn a_filter_that_selects_nothing_lists_the_ops_and_a_dash_replaces_no_rate() {
        let names = [
            "conv3d.fwd 2x8x8x8x256".to_string(),
            "instnorm_lrelu.fwd 2x8".into(),
            "conv3d.fwd 2x16x16x16x128".into(),
        ];
        check_filter("2x16x16", &names).unwrap();
        let err = check_filter("zzzz", &names).unwrap_err().to_string();
        assert!(
            err.contains("'zzzz' matches no case")
                && err.ends_with("the ops are conv3d.fwd, instnorm_lrelu.fwd"),
            "{err}"
        );
        let memory_bound = BenchResult {
            op: "instnorm_lrelu.fwd".into(),
            shape: "2x8".into(),
            ms: 1.5,
            gflops: 0.0,
            run: RunInfo::cpu(&Cpu::new()),
            details: None,
        };
        let table = format_table(&[memory_bound]);
        let row = table.lines().nth(1).unwrap();
        assert!(row.ends_with("1.500         -"), "{row:?}");
    }
}
