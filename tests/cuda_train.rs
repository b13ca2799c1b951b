//! Whole training steps on a GPU: the same tiny U-Net step on the CUDA and CPU backends
//! gives the same loss and gradients, and after the first step a step allocates nothing new
//! from the device (the caching pool serves every buffer).
mod common;

use voxseg::autograd::{Gradients, Tape, Var};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::Cuda;
use voxseg::backend::Backend;
use voxseg::loss::{dice_ce, Target};
use voxseg::nn::unet::UNetConfig;
use voxseg::nn::{Ctx, Model, ModelSpec, Module};
use voxseg::optim::{Optimizer, OptimizerSpec};
use voxseg::rng::Rng;
use voxseg::Tensor;

fn spec() -> ModelSpec {
    ModelSpec::Unet(UNetConfig {
        deep_supervision: true,
        dropout: 0.1,
        ..common::small_unet()
    })
}

fn batch(seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let x = (0..2 * 16 * 16 * 16 * 4)
        .map(|_| rng.normal() as f32)
        .collect();
    let t = (0..2 * 16 * 16 * 16 * 3)
        .map(|_| (rng.uniform() < 0.3) as u8 as f32)
        .collect();
    (x, t)
}

/// Gradients by parameter name, downloaded.
type Named = Vec<(String, Vec<f32>)>;

/// The loss of batch `seed`, and its gradients, downloaded by parameter name and as the
/// backend holds them; `between` runs after the forward (the model's outputs dropped),
/// before the backward.
fn loss_and_gradients<B: Backend>(
    b: &B,
    model: &mut Model<B>,
    seed: u64,
    between: impl FnOnce(),
) -> (f64, Named, Gradients<B>) {
    let (x, t) = batch(seed);
    let tape = Tape::new();
    let out = model
        .forward(
            &Var::constant(Tensor::from_f32(b, [2, 16, 16, 16, 4], &x).unwrap()),
            &Ctx::train(tape.clone(), seed),
        )
        .unwrap();
    let target = Target::Regions(Tensor::from_f32(b, [2, 16, 16, 16, 3], &t).unwrap());
    let loss = dice_ce(&out[0], &target).unwrap();
    drop(out);
    between();
    let value = loss.value().item().unwrap();
    let grads = tape.backward(&loss).unwrap();
    let named = model
        .params()
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                grads.get(p.id).unwrap().to_vec_f32().unwrap(),
            )
        })
        .collect();
    (value, named, grads)
}

/// Each gradient of `got` within `rel` times the largest magnitude (at least 1e-6) of its
/// twin in `want`.
fn assert_gradients_close(what: &str, got: (&Named, &str), want: (&Named, &str), rel: f32) {
    assert_eq!(got.0.len(), want.0.len(), "{what}: parameters");
    for ((name, g), (_, w)) in got.0.iter().zip(want.0) {
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        common::assert_within(
            &format!("{what}: gradient of {name}"),
            (got.1, g),
            (want.1, w),
            common::Tolerance::at_most(rel, scale),
        );
    }
}

/// One step: loss, and the gradients by parameter name.
fn step<B: Backend>(
    b: &B,
    model: &mut Model<B>,
    opt: &mut dyn Optimizer<B>,
    seed: u64,
) -> (f64, Named) {
    let (value, named, grads) = loss_and_gradients(b, model, seed, || ());
    let mut params = model.params_mut();
    opt.step(&mut params, &grads, 1e-2).unwrap();
    (value, named)
}

#[test]
#[ignore = "needs a CUDA device"]
fn unet_training_step_matches_the_cpu() {
    let _serial = common::serial();
    let cuda = Cuda::new(0).unwrap();
    let cpu = Cpu::new();
    let mut gm = Model::new(&cuda, &spec(), 5).unwrap();
    let mut cm = Model::new(&cpu, &spec(), 5).unwrap();
    let mut go = OptimizerSpec::nnunet_sgd().build::<Cuda>().unwrap();
    let mut co = OptimizerSpec::nnunet_sgd().build::<Cpu>().unwrap();
    for s in 0..3 {
        let (gl, gg) = step(&cuda, &mut gm, go.as_mut(), s);
        let (cl, cg) = step(&cpu, &mut cm, co.as_mut(), s);
        assert!(
            (gl - cl).abs() <= 1e-4 * cl.abs().max(1.0),
            "step {s}: loss {gl} vs {cl}"
        );
        assert_gradients_close(&format!("step {s}"), (&gg, "cuda"), (&cg, "cpu"), 1e-3);
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn after_the_first_step_a_step_allocates_nothing_new() {
    let _serial = common::serial();
    let cuda = Cuda::new(0).unwrap();
    let mut model = Model::new(&cuda, &spec(), 1).unwrap();
    let mut opt = OptimizerSpec::nnunet_sgd().build::<Cuda>().unwrap();
    step(&cuda, &mut model, opt.as_mut(), 0);
    step(&cuda, &mut model, opt.as_mut(), 1);
    let before = cuda.pool_stats().device_allocations;
    for s in 2..5 {
        step(&cuda, &mut model, opt.as_mut(), s);
    }
    let after = cuda.pool_stats().device_allocations;
    assert_eq!(
        after, before,
        "device allocations after warm-up: {before} -> {after}"
    );
    // What training reports as the run's device memory: the pool's peak, above what the
    // model and its optimiser hold between steps.
    use voxseg::backend::BackendBase;
    let peak = cuda.memory_peak_bytes().unwrap();
    assert!(peak > cuda.pool_stats().allocated_bytes, "peak {peak}");
}

/// With `set_save_packed_inputs` the tape keeps, of each tensor-core convolution's input,
/// only the pack its weight gradient reads: a step's loss and gradients are those it has
/// without, and what the forward leaves allocated for the backward is smaller (each conv's
/// f32 input, here the dropout outputs and the decoder's concatenations, is freed once the
/// forward has read it). The small network's weight gradients (32 columns at most) save the
/// row packs of mma.sync and the halo kernels; a wider one's save the TMA tiles' packs at
/// bf16, and with `set_wgmma_tf32_weights` at tf32 keep x where the channel-major pack its
/// gradient reads (a bordered grid, x once per tap shift) would take more bytes than x and
/// its tf32 pack; with `set_tf32_bf16x3` they save the bf16x3 packs (6 bytes an element)
/// in place of x and its tf32 pack (8).
#[test]
#[ignore = "needs a CUDA device"]
fn saving_packed_inputs_keeps_the_gradients_and_frees_the_f32_inputs() {
    use voxseg::backend::cuda::conv_plan::{ConvPrecision, Reach};
    let _serial = common::serial();
    let cuda = Cuda::new(0).unwrap();
    /// Puts the device's settings back, whether the test passes or not (the other tests of
    /// this process share them).
    struct Restore<'a>(&'a Cuda, ConvPrecision, bool, Reach, bool);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.set_conv_precision(self.1);
            self.0.set_save_packed_inputs(self.2);
            self.0.set_wgmma_tf32_weights(self.3);
            self.0.set_tf32_bf16x3(self.4);
        }
    }
    let _restore = Restore(
        &cuda,
        cuda.conv_precision().unwrap(),
        cuda.save_packed_inputs().unwrap(),
        cuda.wgmma_tf32_weights().unwrap(),
        cuda.tf32_bf16x3().unwrap(),
    );
    let run = |spec: &ModelSpec, save: bool| -> (f64, Named, u64) {
        cuda.set_save_packed_inputs(save);
        let mut model = Model::new(&cuda, spec, 5).unwrap();
        let before = cuda.pool_stats().allocated_bytes;
        let mut kept = 0;
        let (value, named, _) = loss_and_gradients(&cuda, &mut model, 3, || {
            kept = cuda.pool_stats().allocated_bytes - before;
        });
        (value, named, kept)
    };
    let wide = match spec() {
        ModelSpec::Unet(net) => ModelSpec::Unet(UNetConfig {
            base_features: 64,
            max_features: 128,
            ..net
        }),
        other => panic!("expected a U-Net, got {other:?}"),
    };
    // (network, precision, tf32 weights: "tf32w" on wgmma, "bf16x3" as three bf16
    // products, the most kept with packs saved / without). bf16x3's packs of x (6 bytes an
    // element) take the place of x and the forward's tf32 pack of it (8).
    let cases = [
        ("small", spec(), ConvPrecision::Bf16, "", 0.8),
        ("small", spec(), ConvPrecision::Tf32, "", 0.8),
        ("wide", wide.clone(), ConvPrecision::Bf16, "", 1.0),
        ("wide", wide.clone(), ConvPrecision::Tf32, "tf32w", 1.0),
        ("wide", wide, ConvPrecision::Tf32, "bf16x3", 0.95),
    ];
    for (name, spec, p, weights, most_kept) in cases {
        let what = format!("{name} {p} {weights}");
        cuda.set_conv_precision(p);
        let tf32w = weights == "tf32w";
        cuda.set_wgmma_tf32_weights(if tf32w { Reach::All } else { Reach::Off });
        cuda.set_tf32_bf16x3(weights == "bf16x3");
        let (full_loss, full_grads, full_kept) = run(&spec, false);
        let (packed_loss, packed_grads, packed_kept) = run(&spec, true);
        assert_eq!(packed_loss, full_loss, "{what}: loss");
        let (packed, full) = ((&packed_grads, "packed"), (&full_grads, "full"));
        assert_gradients_close(&what, packed, full, 1e-5);
        assert!(
            (packed_kept as f64) <= most_kept * full_kept as f64,
            "{what}: the forward left {packed_kept} bytes for the backward, {full_kept} \
             without saving packed inputs"
        );
    }
}
