//! Layers, activations, norms and losses against PyTorch (MONAI for soft Dice and SSIM):
//! the outputs and gradients of the cases in tests/fixtures/torch_reference.json, written
//! by scripts/torch_reference.py; and the U-Net against nnU-Net's (unet_reference.json). The gradient checks show that each backward matches its
//! own forward; these show that the forward is what the operation's name means to a user
//! of those tools. Run on the f64 CPU backend to the reference's precision, and on the f32
//! backend to f32's.
use serde::Deserialize;
use std::collections::BTreeMap;
use voxseg::autograd::{LeafId, Tape, Var};
use voxseg::backend::cpu::{Cpu, Cpu64};
use voxseg::backend::{Backend, Element};
use voxseg::error::Result;
use voxseg::loss::{LossSpec, Target};
use voxseg::nn::layers::{Activation, NormKind};
use voxseg::nn::unet::{Downsample, UNet, UNetConfig, Upsample};
use voxseg::nn::{Ctx, Init};
use voxseg::tensor::Tensor;
use voxseg::tensor_ops::conv::{Conv3dSpec, ConvTranspose3dSpec, Padding};
use voxseg::tensor_ops::{update_moving_stats, Pool3dSpec, PoolPadding, UnaryOp};

#[derive(Deserialize)]
struct Array {
    shape: Vec<usize>,
    data: Vec<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    op: String,
    params: serde_json::Value,
    tolerance: f64,
    inputs: BTreeMap<String, Array>,
    dy: BTreeMap<String, Array>,
    outputs: BTreeMap<String, Array>,
    grads: BTreeMap<String, Array>,
    target: Option<Array>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_reference.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tensor<B: Backend>(b: &B, a: &Array) -> Tensor<B> {
    let data: Vec<B::E> = a.data.iter().map(|&v| B::E::of(v)).collect();
    Tensor::from_host(b, a.shape.as_slice(), &data).unwrap()
}

fn param<T: serde::de::DeserializeOwned>(case: &Case, key: &str) -> T {
    let value = case.params.get(key).unwrap_or_else(|| {
        panic!("{}: parameter {key} missing", case.name);
    });
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{}: {key}: {e}", case.name))
}

/// A list of numbers among the case's parameters as a tensor `[len]`.
fn vector<B: Backend>(b: &B, case: &Case, key: &str) -> Tensor<B> {
    let data: Vec<f64> = param(case, key);
    let shape = vec![data.len()];
    tensor(b, &Array { shape, data })
}

fn padding(case: &Case) -> Padding {
    match param::<String>(case, "padding").as_str() {
        "same" => Padding::Same,
        "valid" => Padding::Valid,
        other => panic!("{}: padding {other}", case.name),
    }
}

fn pool_spec(case: &Case) -> Pool3dSpec {
    Pool3dSpec {
        kernel: param(case, "kernel"),
        stride: param(case, "stride"),
        padding: match padding(case) {
            Padding::Same => PoolPadding::Same,
            _ => PoolPadding::Valid,
        },
    }
}

/// The activation a norm fuses, as the fixture names it.
fn fused(case: &Case) -> Option<UnaryOp> {
    match param::<String>(case, "act").as_str() {
        "none" => None,
        "relu" => Some(UnaryOp::Relu),
        "leaky_relu" => Some(UnaryOp::LeakyRelu(0.01)),
        other => panic!("{}: activation {other}", case.name),
    }
}

fn activation<B: Backend>(op: &str, x: &Var<B>) -> Result<Var<B>> {
    match op {
        "relu" => x.relu(),
        "leaky_relu_0.2" => x.leaky_relu(0.2),
        "elu_1" => x.elu(1.0),
        "elu_0.5" => x.elu(0.5),
        "sigmoid" => x.sigmoid(),
        "tanh" => x.tanh(),
        "softmax" => x.softmax(),
        "log_softmax" => x.log_softmax(),
        other => panic!("unknown op {other}"),
    }
}

/// What a case computed: its output, and moving statistics where it updates them.
struct Computed<B: Backend> {
    y: Var<B>,
    moving: Option<[Vec<f64>; 2]>,
}

fn compute<B: Backend>(b: &B, case: &Case, v: &BTreeMap<String, Var<B>>) -> Result<Computed<B>> {
    let input = |k: &str| &v[k];
    let mut moving = None;
    let y = match case.op.as_str() {
        "conv3d" => {
            let spec = Conv3dSpec {
                stride: param(case, "stride"),
                padding: padding(case),
            };
            input("x").conv3d(input("w"), Some(input("b")), &spec)?
        }
        "conv_transpose3d" => {
            let x = input("x");
            let [_, d, h, w, _] = x.shape().ndhwc("conv_transpose3d")?;
            let spec = ConvTranspose3dSpec::to_size(
                param(case, "kernel"),
                param(case, "stride"),
                [d, h, w],
                param(case, "target"),
            )?;
            x.conv_transpose3d(input("w"), Some(input("b")), &spec)?
        }
        "dense" => input("x").dense(input("w"), Some(input("b")))?,
        "max_pool3d" => input("x").max_pool3d(&pool_spec(case))?,
        "avg_pool3d" => input("x").avg_pool3d(&pool_spec(case))?,
        "upsample_nearest3d" => input("x").upsample_nearest3d(param(case, "factor"))?,
        "upsample_trilinear3d" => input("x").upsample_trilinear3d(param(case, "size"))?,
        "instance_norm" => input("x").instance_norm(
            Some(input("gamma")),
            Some(input("beta")),
            param(case, "eps"),
            fused(case),
        )?,
        "group_norm" => input("x").group_norm(
            param(case, "groups"),
            Some(input("gamma")),
            Some(input("beta")),
            param(case, "eps"),
            fused(case),
        )?,
        "batch_norm_train" => {
            let x = input("x");
            let (y, mean, var) = x.batch_norm_train(
                Some(input("gamma")),
                Some(input("beta")),
                param(case, "eps"),
                fused(case),
            )?;
            let (mut mm, mut mv) = (
                vector(b, case, "moving_mean_before"),
                vector(b, case, "moving_var_before"),
            );
            let count = x.value().numel() / x.shape().last();
            update_moving_stats(
                &mut mm,
                &mut mv,
                &mean,
                &var,
                count,
                param(case, "momentum"),
            )?;
            moving = Some([mm.to_vec_f64()?, mv.to_vec_f64()?]);
            y
        }
        "batch_norm_eval" => input("x").batch_norm_eval(
            Some(input("gamma")),
            Some(input("beta")),
            &vector(b, case, "mean"),
            &vector(b, case, "var"),
            param(case, "eps"),
            fused(case),
        )?,
        "loss" => loss(b, case, input("logits"))?,
        op => activation(op, input("x"))?,
    };
    Ok(Computed { y, moving })
}

fn loss<B: Backend>(b: &B, case: &Case, logits: &Var<B>) -> Result<Var<B>> {
    let target = tensor(b, case.target.as_ref().expect("a loss case has a target"));
    let spec: serde_json::Value = param(case, "spec");
    match spec["kind"].as_str().expect("spec kind") {
        "bce_weight_map" => {
            let map = Var::constant(tensor(b, &param(case, "weight_map")));
            let pos_weight = spec["pos_weight"].as_f64().expect("pos_weight");
            logits.bce_with_logits(&Var::constant(target), pos_weight, Some(&map))
        }
        "ce_class_weights" => {
            let weights: Vec<f64> =
                serde_json::from_value(spec["class_weights"].clone()).expect("class_weights");
            logits.cross_entropy(&target, Some(&weights))
        }
        _ => {
            let spec: LossSpec = serde_json::from_value(spec).expect("a loss spec");
            let target = match param::<String>(case, "target_kind").as_str() {
                "classes" => Target::Classes(target),
                _ => Target::Regions(target),
            };
            spec.compute(logits, &target)
        }
    }
}

/// The largest difference between `got` and `want`, relative to the largest |want| (at
/// least 1e-3, so near-zero results are compared absolutely at that scale).
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f64, |m, d| if d.is_nan() { f64::NAN } else { m.max(d) })
        / scale
}

/// Runs every case on backend `b`; returns one line per comparison beyond tolerance
/// (`tolerance(case)`), and the largest relative error seen.
fn check_all<B: Backend>(b: &B, tolerance: impl Fn(&Case) -> f64) -> (Vec<String>, f64) {
    let fixture = fixture();
    assert!(
        fixture.cases.len() >= 40,
        "only {} cases",
        fixture.cases.len()
    );
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for case in &fixture.cases {
        let tape = Tape::new();
        let ids: BTreeMap<&str, LeafId> = case
            .inputs
            .keys()
            .map(|k| (k.as_str(), LeafId::fresh()))
            .collect();
        let vars: BTreeMap<String, Var<B>> = case
            .inputs
            .iter()
            .map(|(k, a)| (k.clone(), tape.leaf(tensor(b, a), ids[k.as_str()])))
            .collect();
        let computed = compute(b, case, &vars).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(case.outputs.len(), 1, "{}: one output", case.name);
        let (name, want) = case.outputs.iter().next().expect("an output");
        let dy = Var::constant(tensor(b, &case.dy[name]));
        let loss = computed.y.mul(&dy).and_then(|p| p.sum()).unwrap();
        let grads = tape.backward(&loss).unwrap();
        let mut compare = |what: String, got: Vec<f64>, want: &[f64]| {
            let err = if got.len() == want.len() {
                relative_error(&got, want)
            } else {
                f64::INFINITY
            };
            worst = worst.max(err);
            let tol = tolerance(case);
            if err.is_nan() || err > tol {
                failures.push(format!(
                    "{} {what}: relative error {err:e} > {tol:e}",
                    case.name
                ));
            }
        };
        let got = computed.y.value();
        compare(
            format!("output {name}"),
            got.to_vec_f64().unwrap(),
            &want.data,
        );
        assert_eq!(got.dims(), want.shape.as_slice(), "{} output", case.name);
        for (k, want) in &case.grads {
            let got = grads.get(ids[k.as_str()]).map(|g| g.to_vec_f64().unwrap());
            compare(
                format!("gradient of {k}"),
                got.unwrap_or_default(),
                &want.data,
            );
        }
        if let Some([mean, var]) = computed.moving {
            compare(
                "moving mean".into(),
                mean,
                &param::<Vec<f64>>(case, "moving_mean_after"),
            );
            compare(
                "moving variance".into(),
                var,
                &param::<Vec<f64>>(case, "moving_var_after"),
            );
        }
    }
    (failures, worst)
}

#[test]
fn f64_backend_matches_pytorch() {
    let (failures, worst) = check_all(&Cpu64::new(), |c| c.tolerance);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("f64: largest relative error {worst:e}");
}

#[test]
fn f32_backend_matches_pytorch_to_f32_precision() {
    let (failures, worst) = check_all(&Cpu::new(), |c| c.tolerance.max(2e-5));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("f32: largest relative error {worst:e}");
}

#[derive(Deserialize)]
struct UNetConfigFixture {
    in_channels: usize,
    out_channels: usize,
    features: Vec<usize>,
    strides: Vec<[usize; 3]>,
    kernels: Vec<[usize; 3]>,
    eps: f64,
    slope: f64,
}

#[derive(Deserialize)]
struct UNetFixture {
    config: UNetConfigFixture,
    x: Array,
    params: BTreeMap<String, Array>,
    dy: Vec<Array>,
    outputs: Vec<Array>,
    grad_x: Array,
    grads: BTreeMap<String, Array>,
}

/// voxseg's U-Net against nnU-Net's PlainConvUNet (dynamic_network_architectures) with the
/// same weights: both outputs of deep supervision and the gradients of the input and of one
/// parameter of each kind. The fixture bridges the two documented differences (Keras
/// padding of strided convolutions, the order of the concatenated halves).
#[test]
fn unet_matches_nnunet_plain_conv_unet() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unet_reference.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let f: UNetFixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let c = &f.config;
    // Widths double from the base up to the cap, as the fixture's do.
    let (base, max) = (c.features[0], *c.features.iter().max().unwrap());
    let cfg = UNetConfig {
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        base_features: base,
        max_features: max,
        depth: c.features.len(),
        convs_per_stage: 2,
        norm: NormKind::Instance,
        activation: Activation::LeakyRelu { slope: c.slope },
        downsample: Downsample::StridedConv,
        upsample: Upsample::TransposedConv,
        deep_supervision: true,
        dropout: 0.0,
        init: Init::HeNormal,
        strides: c.strides.clone(),
        kernels: c.kernels.clone(),
    };
    let widths: Vec<usize> = (0..cfg.depth).map(|s| cfg.features(s)).collect();
    assert_eq!(widths, c.features);
    let b = Cpu64::new();
    let mut net = UNet::new(&b, cfg, 1).unwrap();
    let mut loaded = 0;
    for p in net.params_mut() {
        let a = f
            .params
            .get(&p.name)
            .unwrap_or_else(|| panic!("{} not in the fixture", p.name));
        assert_eq!(p.value.dims(), a.shape.as_slice(), "{}", p.name);
        p.value = tensor(&b, a);
        loaded += 1;
    }
    assert_eq!(loaded, f.params.len(), "parameters the U-Net does not have");
    // The U-Net's instance norms use nnU-Net's eps.
    assert_eq!(c.eps, 1e-5);

    let tape = Tape::new();
    let x_id = LeafId::fresh();
    let x = tape.leaf(tensor(&b, &f.x), x_id);
    let outputs = net.forward(&x, &Ctx::train(tape.clone(), 0)).unwrap();
    assert_eq!(outputs.len(), f.outputs.len(), "deep supervision outputs");
    let mut loss: Option<Var<Cpu64>> = None;
    for ((out, want), dy) in outputs.iter().zip(&f.outputs).zip(&f.dy) {
        assert_eq!(out.dims(), want.shape.as_slice());
        let err = relative_error(&out.value().to_vec_f64().unwrap(), &want.data);
        assert!(
            err < 1e-10,
            "output {:?}: relative error {err:e}",
            want.shape
        );
        let term = out
            .mul(&Var::constant(tensor(&b, dy)))
            .unwrap()
            .sum()
            .unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => l.add(&term).unwrap(),
        });
    }
    let grads = tape.backward(&loss.unwrap()).unwrap();
    let grad = |id| grads.get(id).unwrap().to_vec_f64().unwrap();
    let err = relative_error(&grad(x_id), &f.grad_x.data);
    assert!(err < 1e-10, "gradient of the input: relative error {err:e}");
    for p in net.params() {
        if let Some(want) = f.grads.get(&p.name) {
            let err = relative_error(&grad(p.id), &want.data);
            assert!(
                err < 1e-10,
                "gradient of {}: relative error {err:e}",
                p.name
            );
        }
    }
    let checked = net
        .params()
        .iter()
        .filter(|p| f.grads.contains_key(&p.name))
        .count();
    assert_eq!(checked, f.grads.len());
}
