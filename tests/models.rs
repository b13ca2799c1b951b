//! The models end to end on the CPU backend: shapes, determinism, checkpoints naming,
//! eval-mode behaviour, the f64 gradient check of a whole U-Net-like chain, and learning.
use voxseg::autograd::{check_gradients, Tape, Var};
use voxseg::backend::cpu::{Cpu, Cpu64};
use voxseg::infer::{predict_logits, SlidingWindow};
use voxseg::loss::{dice_ce, Target};
use voxseg::nn::fcn::FcnConfig;
use voxseg::nn::layers::{Activation, NormKind};
use voxseg::nn::unet::{Downsample, UNetConfig, Upsample};
use voxseg::nn::{Ctx, Init, Model, ModelSpec, Module};
use voxseg::optim::{Adam, Optimizer};
use voxseg::rng::Rng;
use voxseg::tensor_ops::conv::{Conv3dSpec, ConvTranspose3dSpec, Padding};
use voxseg::Tensor;

fn small_unet(norm: NormKind, deep_supervision: bool) -> UNetConfig {
    UNetConfig {
        in_channels: 2,
        out_channels: 3,
        base_features: 4,
        max_features: 8,
        depth: 3,
        convs_per_stage: 2,
        norm,
        activation: Activation::LeakyRelu { slope: 0.01 },
        downsample: Downsample::StridedConv,
        upsample: Upsample::TransposedConv,
        deep_supervision,
        dropout: 0.0,
        init: Init::HeNormal,
        strides: Vec::new(),
        kernels: Vec::new(),
    }
}

fn random(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| rng.normal() as f32)
        .collect()
}

#[test]
fn unet_output_shapes_with_odd_sizes_and_deep_supervision() {
    let b = Cpu::new();
    let mut cfg = small_unet(NormKind::Instance, true);
    cfg.depth = 4;
    let mut m = Model::new(&b, &ModelSpec::Unet(cfg), 1).unwrap();
    let x = Tensor::from_f32(&b, [1, 9, 12, 10, 2], &random(&[1, 9, 12, 10, 2], 3)).unwrap();
    let outs = m
        .forward(&Var::constant(x.clone()), &Ctx::train(Tape::new(), 0))
        .unwrap();
    let shapes: Vec<Vec<usize>> = outs.iter().map(|o| o.dims().to_vec()).collect();
    // Decoder outputs at 1, 1/2 and 1/4 resolution; like nnU-Net the lowest one is dropped.
    assert_eq!(shapes, vec![vec![1, 9, 12, 10, 3], vec![1, 5, 6, 5, 3]]);
    let eval = m.forward(&Var::constant(x), &Ctx::eval()).unwrap();
    assert_eq!(
        eval.len(),
        1,
        "eval returns only the full-resolution output"
    );
}

#[test]
fn every_variant_builds_runs_and_gets_gradients_for_every_parameter() {
    let b = Cpu::new();
    let mut specs = Vec::new();
    for norm in [NormKind::Instance, NormKind::Batch, NormKind::None] {
        let mut c = small_unet(norm, true);
        c.downsample = Downsample::MaxPool;
        c.upsample = Upsample::TrilinearConv;
        c.dropout = 0.2;
        specs.push(ModelSpec::Unet(c));
    }
    specs.push(ModelSpec::Unet(small_unet(NormKind::Instance, false)));
    specs.push(ModelSpec::Fcn(FcnConfig {
        in_channels: 2,
        out_channels: 3,
        features: 4,
        levels: 2,
        blocks_per_level: 1,
        norm: NormKind::Batch,
        activation: Activation::Elu { alpha: 1.0 },
        dropout: 0.0,
        init: Init::GlorotUniform,
    }));
    for spec in specs {
        let mut m = Model::new(&b, &spec, 7).unwrap();
        let x = Tensor::from_f32(&b, [2, 8, 8, 8, 2], &random(&[2, 8, 8, 8, 2], 5)).unwrap();
        let labels: Vec<f32> = (0..2 * 512).map(|i| (i % 3) as f32).collect();
        let target = Target::Classes(Tensor::from_f32(&b, [2, 8, 8, 8], &labels).unwrap());
        let tape = Tape::new();
        let outs = m
            .forward(&Var::constant(x), &Ctx::train(tape.clone(), 9))
            .unwrap();
        assert_eq!(outs[0].dims(), &[2, 8, 8, 8, 3], "{spec:?}");
        let loss = dice_ce(&outs[0], &target).unwrap();
        let grads = tape.backward(&loss).unwrap();
        for p in m.params() {
            let g = grads
                .get(p.id)
                .unwrap_or_else(|| panic!("no gradient for {}", p.name));
            assert_eq!(g.shape(), p.value.shape());
            assert!(
                g.to_vec().unwrap().iter().all(|v| v.is_finite()),
                "{}",
                p.name
            );
        }
    }
}

#[test]
fn same_seed_same_weights_unique_names_and_checkpoint_refuses_other_architectures() {
    let b = Cpu::new();
    let spec = ModelSpec::Unet(small_unet(NormKind::Batch, true));
    let a = Model::new(&b, &spec, 11).unwrap();
    let c = Model::new(&b, &spec, 11).unwrap();
    let ta = a.named_tensors();
    let tc = c.named_tensors();
    for ((na, va), (nc, vc)) in ta.iter().zip(&tc) {
        assert_eq!(na, nc);
        let bits = |t: &Tensor<Cpu>| {
            t.to_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(va), bits(vc), "{na}");
    }
    let mut names: Vec<&String> = ta.iter().map(|(n, _)| n).collect();
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "tensor names are unique");
    assert!(ta.iter().any(|(n, _)| n == "encoder.0.block0.conv.weight"));
    assert!(ta.iter().any(|(n, _)| n.ends_with("moving_mean")));

    let mut other = Model::new(
        &b,
        &ModelSpec::Unet(small_unet(NormKind::Instance, true)),
        11,
    )
    .unwrap();
    let err = other
        .load_named_tensors(ta.clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another architecture") || err.contains("does not belong"),
        "{err}"
    );
    let mut same = Model::new(&b, &spec, 99).unwrap();
    same.load_named_tensors(ta).unwrap();
    assert_eq!(
        same.named_tensors()[0].1.to_vec().unwrap(),
        a.named_tensors()[0].1.to_vec().unwrap()
    );
}

#[test]
fn batch_norm_eval_uses_moving_statistics_and_dropout_is_off_in_eval() {
    let b = Cpu::new();
    let mut cfg = small_unet(NormKind::Batch, false);
    cfg.dropout = 0.5;
    let mut m = Model::new(&b, &ModelSpec::Unet(cfg), 3).unwrap();
    let x =
        Var::constant(Tensor::from_f32(&b, [1, 8, 8, 8, 2], &random(&[1, 8, 8, 8, 2], 1)).unwrap());
    let e1 = m.forward(&x, &Ctx::eval()).unwrap()[0]
        .value()
        .to_vec()
        .unwrap();
    let e2 = m.forward(&x, &Ctx::eval()).unwrap()[0]
        .value()
        .to_vec()
        .unwrap();
    assert_eq!(
        e1, e2,
        "eval is deterministic: no dropout, no statistics update"
    );
    let before = m.buffers()[0].value.to_vec().unwrap();
    m.forward(&x, &Ctx::train(Tape::new(), 1)).unwrap();
    let after = m.buffers()[0].value.to_vec().unwrap();
    assert_ne!(before, after, "training updates the moving statistics");
    let e3 = m.forward(&x, &Ctx::eval()).unwrap()[0]
        .value()
        .to_vec()
        .unwrap();
    assert_ne!(e1, e3, "eval output follows the moving statistics");
}

/// conv -> instance norm -> LeakyReLU -> strided conv -> transposed conv -> concat ->
/// 1x1 conv -> Dice+CE, checked against central differences in f64.
#[test]
fn whole_unet_like_chain_gradient_check_f64() {
    let b = Cpu64::new();
    let t = |shape: &[usize], seed: u64, scale: f64| {
        let mut rng = Rng::new(seed);
        let v: Vec<f64> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() * scale)
            .collect();
        Tensor::from_host(&b, voxseg::Shape::new(shape), &v).unwrap()
    };
    let x = t(&[1, 4, 5, 3, 2], 1, 1.0);
    let w1 = t(&[3, 3, 3, 2, 3], 2, 0.4);
    let gamma = t(&[3], 3, 0.3)
        .to_vec()
        .unwrap()
        .iter()
        .map(|v| v + 1.0)
        .collect::<Vec<_>>();
    let gamma = Tensor::from_host(&b, [3], &gamma).unwrap();
    let beta = t(&[3], 4, 0.2);
    let w2 = t(&[3, 3, 3, 3, 4], 5, 0.3);
    let wt = t(&[2, 2, 2, 3, 4], 6, 0.3);
    let wh = t(&[1, 1, 1, 6, 3], 7, 0.5);
    let bh = t(&[3], 8, 0.1);
    let labels: Vec<f64> = (0..60).map(|i| ((i * 7) % 3) as f64).collect();
    let target = Target::Classes(Tensor::from_host(&b, [1, 4, 5, 3], &labels).unwrap());
    let report = check_gradients(
        &[x, w1, gamma, beta, w2, wt, wh, bh],
        |v| {
            let h = v[0].conv3d(&v[1], None, &Conv3dSpec::default())?;
            let h = h.instance_norm(
                Some(&v[2]),
                Some(&v[3]),
                1e-5,
                Some(voxseg::tensor_ops::UnaryOp::LeakyRelu(0.01)),
            )?;
            let down = h.conv3d(
                &v[4],
                None,
                &Conv3dSpec {
                    stride: [2; 3],
                    padding: Padding::Same,
                },
            )?;
            let [_, d, hh, w, _] = down.shape().ndhwc("test")?;
            let spec = ConvTranspose3dSpec::to_size([2; 3], [2; 3], [d, hh, w], [4, 5, 3])?;
            let up = down.conv_transpose3d(&v[5], None, &spec)?;
            let cat = Var::concat_channels(&[&h, &up])?;
            let logits = cat.conv3d(
                &v[6],
                Some(&v[7]),
                &Conv3dSpec {
                    stride: [1; 3],
                    padding: Padding::Valid,
                },
            )?;
            dice_ce(&logits, &target)
        },
        1e-6,
        1e-5,
        24,
    )
    .unwrap();
    assert!(report.checked >= 8 * 3);
}

#[test]
fn a_tiny_unet_learns_a_simple_segmentation() {
    let b = Cpu::new();
    let mut cfg = small_unet(NormKind::Instance, false);
    cfg.in_channels = 1;
    cfg.out_channels = 2;
    let mut m = Model::new(&b, &ModelSpec::Unet(cfg), 2).unwrap();
    // Foreground = a bright ball of random radius and position in noise.
    let make = |seed: u64| {
        let mut rng = Rng::new(seed);
        let (mut img, mut lab) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let c = [
                rng.uniform_range(4.0, 8.0),
                rng.uniform_range(4.0, 8.0),
                rng.uniform_range(4.0, 8.0),
            ];
            let r = rng.uniform_range(2.0, 3.5);
            for z in 0..12 {
                for y in 0..12 {
                    for x in 0..12 {
                        let d = ((z as f64 - c[0]).powi(2)
                            + (y as f64 - c[1]).powi(2)
                            + (x as f64 - c[2]).powi(2))
                        .sqrt();
                        let fg = d < r;
                        img.push((if fg { 1.0 } else { 0.0 } + 0.3 * rng.normal()) as f32);
                        lab.push(if fg { 1.0f32 } else { 0.0 });
                    }
                }
            }
        }
        (
            Tensor::from_f32(&b, [2, 12, 12, 12, 1], &img).unwrap(),
            Tensor::from_f32(&b, [2, 12, 12, 12], &lab).unwrap(),
        )
    };
    let mut opt = Adam::new(0.9, 0.999, 1e-7, 0.0).unwrap();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..40 {
        let (x, y) = make(step);
        let tape = Tape::new();
        let out = m
            .forward(&Var::constant(x), &Ctx::train(tape.clone(), step))
            .unwrap();
        let loss = dice_ce(&out[0], &Target::Classes(y)).unwrap();
        last = loss.value().item().unwrap();
        first.get_or_insert(last);
        let grads = tape.backward(&loss).unwrap();
        let mut params = m.params_mut();
        opt.step(&mut params, &grads, 1e-2).unwrap();
    }
    let first = first.unwrap();
    assert!(last < 0.5 * first && last < 0.6, "loss {first} -> {last}");
}

#[test]
fn sliding_window_over_one_window_equals_the_direct_forward() {
    let b = Cpu::new();
    let mut m = Model::new(
        &b,
        &ModelSpec::Unet(small_unet(NormKind::Instance, false)),
        4,
    )
    .unwrap();
    let img = random(&[8, 8, 8, 2], 8);
    let direct = m
        .forward(
            &Var::constant(Tensor::from_f32(&b, [1, 8, 8, 8, 2], &img).unwrap()),
            &Ctx::eval(),
        )
        .unwrap()[0]
        .value()
        .to_vec()
        .unwrap();
    let opts = SlidingWindow {
        patch: [8, 8, 8],
        overlap: 0.5,
        batch: 2,
        tta: false,
        pad_value: 0.0,
    };
    let windowed = predict_logits(&mut m, &b, &img, [8, 8, 8], 2, &opts).unwrap();
    let max_err = direct
        .iter()
        .zip(&windowed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err < 1e-5, "{max_err}");
    // A larger volume with overlapping windows and mirroring gives finite logits everywhere.
    let big = random(&[13, 10, 9, 2], 9);
    let opts = SlidingWindow { tta: true, ..opts };
    let out = predict_logits(&mut m, &b, &big, [13, 10, 9], 2, &opts).unwrap();
    assert_eq!(out.len(), 13 * 10 * 9 * 3);
    assert!(out.iter().all(|v| v.is_finite()));
}
