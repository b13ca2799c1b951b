//! Convolutions against direct loop references (f32 fast path and f64 generic path) and
//! f64 finite-difference gradient checks.
use voxseg::autograd::{check_gradients, Var};
use voxseg::backend::cpu::{Cpu, Cpu64};
use voxseg::backend::Backend;
use voxseg::rng::Rng;
use voxseg::tensor::Tensor;
use voxseg::tensor_ops::conv::{Conv3dSpec, ConvGeometry, ConvTranspose3dSpec, Padding};

fn random(n: usize, rng: &mut Rng) -> Vec<f64> {
    (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect()
}

/// Index of voxel (b, z, y, x), channel c, in an NDHWC buffer of spatial size `dims`.
fn at(dims: [usize; 3], channels: usize, b: usize, v: [usize; 3], c: usize) -> usize {
    (((b * dims[0] + v[0]) * dims[1] + v[1]) * dims[2] + v[2]) * channels + c
}

/// Calls `f(b, out voxel, kernel tap, in voxel)` for every pair the convolution connects:
/// in = out * stride - pad_before + tap, inside the input.
fn for_each_connection(
    g: &ConvGeometry,
    mut f: impl FnMut(usize, [usize; 3], [usize; 3], [usize; 3]),
) {
    for b in 0..g.n {
        for od in 0..g.output[0] {
            for oh in 0..g.output[1] {
                for ow in 0..g.output[2] {
                    for kd in 0..g.kernel[0] {
                        for kh in 0..g.kernel[1] {
                            for kw in 0..g.kernel[2] {
                                let o = [od, oh, ow];
                                let k = [kd, kh, kw];
                                let mut i = [0; 3];
                                let mut inside = true;
                                for a in 0..3 {
                                    let c = (o[a] * g.stride[a] + k[a]) as isize
                                        - g.pad_before[a] as isize;
                                    inside &= c >= 0 && (c as usize) < g.input[a];
                                    i[a] = c.max(0) as usize;
                                }
                                if inside {
                                    f(b, o, k, i);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn tap(g: &ConvGeometry, k: [usize; 3]) -> usize {
    (k[0] * g.kernel[1] + k[1]) * g.kernel[2] + k[2]
}

/// The three passes by direct loops over every connection, in f64.
fn reference(g: &ConvGeometry, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
    let (ci_n, co_n) = (g.cin, g.cout);
    let mut y = vec![0.0; g.n * g.output_voxels() * co_n];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for_each_connection(g, |b, o, k, i| {
        let t = tap(g, k);
        for ci in 0..ci_n {
            let xi = at(g.input, ci_n, b, i, ci);
            for co in 0..co_n {
                let oi = at(g.output, co_n, b, o, co);
                let wi = (t * ci_n + ci) * co_n + co;
                y[oi] += x[xi] * w[wi];
                dx[xi] += dy[oi] * w[wi];
                dw[wi] += x[xi] * dy[oi];
            }
        }
    });
    [y, dx, dw]
}

fn run_kernels<B: Backend>(
    be: &B,
    g: &ConvGeometry,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> [Vec<f64>; 3] {
    let up = |v: &[f64]| {
        let conv: Vec<B::E> = v
            .iter()
            .map(|&a| <B::E as voxseg::backend::Element>::of(a))
            .collect();
        be.upload(&conv).unwrap()
    };
    let down = |s: &B::Storage| -> Vec<f64> {
        be.download(s)
            .unwrap()
            .into_iter()
            .map(voxseg::backend::Element::as_f64)
            .collect()
    };
    let (xs, ws, dys) = (up(x), up(w), up(dy));
    [
        down(&be.conv3d_forward(&xs, &ws, None, g).unwrap()),
        down(&be.conv3d_backward_data(&dys, &ws, None, g).unwrap()),
        down(&be.conv3d_backward_weight(&xs, &dys, g).unwrap()),
    ]
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Fast paths against the direct loops on odd shapes: anisotropic kernels, strides 1 and 2,
/// same/valid/explicit padding, channel counts that are multiples of nothing. Tolerance:
/// 2e-5 relative for f32 (sums of up to ~1000 products of values in [-1, 1]), 1e-12 for f64.
#[test]
fn passes_match_direct_loops() {
    let kernels = [[3, 3, 3], [1, 1, 1], [7, 1, 1], [1, 7, 1], [2, 3, 1]];
    let strides = [[1, 1, 1], [2, 2, 2], [1, 2, 2]];
    let paddings = [
        Padding::Same,
        Padding::Valid,
        Padding::Explicit([[1, 0], [0, 2], [2, 1]]),
    ];
    let channels = [(3, 5), (17, 19), (1, 33), (20, 16), (35, 7)];
    let mut rng = Rng::new(11);
    let mut case = 0;
    for kernel in kernels {
        for stride in strides {
            for padding in paddings {
                let (cin, cout) = channels[case % channels.len()];
                case += 1;
                let x_dims = [2, 9, 8, 7, cin];
                let w_dims = [kernel[0], kernel[1], kernel[2], cin, cout];
                let spec = Conv3dSpec { stride, padding };
                let g = ConvGeometry::conv3d(&x_dims.into(), &w_dims.into(), &spec).unwrap();
                let x = random(x_dims.iter().product(), &mut rng);
                let w = random(w_dims.iter().product(), &mut rng);
                let dy = random(g.n * g.output_voxels() * cout, &mut rng);
                let want = reference(&g, &x, &w, &dy);
                let f32s = run_kernels(&Cpu::new(), &g, &x, &w, &dy);
                let f64s = run_kernels(&Cpu64::new(), &g, &x, &w, &dy);
                for (p, name) in ["forward", "backward_data", "backward_weight"]
                    .iter()
                    .enumerate()
                {
                    let what = format!(
                        "{name} f32, kernel {kernel:?} stride {stride:?} {padding:?} {cin}->{cout}"
                    );
                    assert_close(&f32s[p], &want[p], 2e-5, &what);
                    let what = format!(
                        "{name} f64, kernel {kernel:?} stride {stride:?} {padding:?} {cin}->{cout}"
                    );
                    assert_close(&f64s[p], &want[p], 1e-12, &what);
                }
            }
        }
    }
}

/// A transposed convolution by its definition: every input voxel scatters
/// x[i] * w[k, co, ci] to output voxel i * stride - pad_before + k.
fn transposed_reference(
    x: &[f64],
    x_dims: [usize; 5],
    w: &[f64],
    kernel: [usize; 3],
    cout: usize,
    spec: &ConvTranspose3dSpec,
    out: [usize; 3],
) -> Vec<f64> {
    let [n, d, h, wd, cin] = x_dims;
    let mut y = vec![0.0; n * out.iter().product::<usize>() * cout];
    for b in 0..n {
        for i in 0..d * h * wd {
            let iv = [i / (h * wd), i / wd % h, i % wd];
            for t in 0..kernel.iter().product::<usize>() {
                let k = [
                    t / (kernel[1] * kernel[2]),
                    t / kernel[2] % kernel[1],
                    t % kernel[2],
                ];
                let mut o = [0; 3];
                let mut inside = true;
                for a in 0..3 {
                    let c = (iv[a] * spec.stride[a] + k[a]) as isize - spec.padding[a][0] as isize;
                    inside &= c >= 0 && (c as usize) < out[a];
                    o[a] = c.max(0) as usize;
                }
                if !inside {
                    continue;
                }
                for ci in 0..cin {
                    for co in 0..cout {
                        y[at(out, cout, b, o, co)] +=
                            x[at([d, h, wd], cin, b, iv, ci)] * w[(t * cout + co) * cin + ci];
                    }
                }
            }
        }
    }
    y
}

#[test]
fn transposed_forward_matches_its_definition_and_reaches_target_sizes() {
    let mut rng = Rng::new(5);
    for (kernel, stride, input, target, cin, cout) in [
        ([2, 2, 2], [2, 2, 2], [3, 4, 5], [6, 8, 10], 5, 3),
        ([2, 2, 2], [2, 2, 2], [3, 4, 5], [5, 7, 11], 17, 4),
        ([3, 3, 3], [2, 2, 2], [3, 2, 4], [6, 5, 7], 3, 18),
        ([3, 1, 2], [1, 2, 3], [4, 3, 2], [5, 5, 6], 2, 2),
    ] {
        let spec = ConvTranspose3dSpec::to_size(kernel, stride, input, target).unwrap();
        let x_dims = [2, input[0], input[1], input[2], cin];
        let x = random(x_dims.iter().product(), &mut rng);
        let w = random(kernel.iter().product::<usize>() * cout * cin, &mut rng);
        let bias = random(cout, &mut rng);
        let mut want = transposed_reference(&x, x_dims, &w, kernel, cout, &spec, target);
        for (i, v) in want.iter_mut().enumerate() {
            *v += bias[i % cout];
        }
        let w_dims = [kernel[0], kernel[1], kernel[2], cout, cin];
        let be = Cpu::new();
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let y = Var::constant(Tensor::from_host(&be, x_dims, &to32(&x)).unwrap())
            .conv_transpose3d(
                &Var::constant(Tensor::from_host(&be, w_dims, &to32(&w)).unwrap()),
                Some(&Var::constant(
                    Tensor::from_host(&be, [cout], &to32(&bias)).unwrap(),
                )),
                &spec,
            )
            .unwrap();
        assert_eq!(y.dims(), &[2, target[0], target[1], target[2], cout]);
        assert_close(
            &y.value().to_vec_f64().unwrap(),
            &want,
            2e-5,
            &format!("transposed kernel {kernel:?} stride {stride:?} to {target:?}"),
        );
    }
}

fn tensor64(dims: &[usize], rng: &mut Rng) -> Tensor<Cpu64> {
    let n = dims.iter().product();
    Tensor::from_host(&Cpu64::new(), dims, &random(n, rng)).unwrap()
}

/// Loss = sum(y * r) for a fixed random r, so that every output element's gradient differs.
fn weighted_sum(y: Var<Cpu64>, rng_seed: u64) -> voxseg::Result<Var<Cpu64>> {
    let mut rng = Rng::new(rng_seed);
    let r = tensor64(y.dims(), &mut rng);
    y.mul(&Var::constant(r))?.sum()
}

/// Central differences (eps 1e-6) against the tape, tolerance 1e-6 relative, w.r.t. x, w, bias.
#[test]
fn conv3d_gradients() {
    let mut rng = Rng::new(3);
    for (kernel, stride, padding) in [
        ([3, 3, 3], [1, 1, 1], Padding::Same),
        ([3, 3, 2], [2, 2, 2], Padding::Same),
        ([3, 2, 3], [2, 1, 2], Padding::Valid),
        (
            [2, 3, 1],
            [1, 2, 1],
            Padding::Explicit([[1, 0], [2, 1], [0, 1]]),
        ),
    ] {
        let spec = Conv3dSpec { stride, padding };
        let x = tensor64(&[2, 5, 4, 5, 3], &mut rng);
        let w = tensor64(&[kernel[0], kernel[1], kernel[2], 3, 4], &mut rng);
        let b = tensor64(&[4], &mut rng);
        check_gradients(
            &[x, w, b],
            |v| weighted_sum(v[0].conv3d(&v[1], Some(&v[2]), &spec)?, 9),
            1e-6,
            1e-6,
            60,
        )
        .unwrap_or_else(|e| panic!("kernel {kernel:?} stride {stride:?} {padding:?}: {e}"));
    }
}

#[test]
fn conv_transpose3d_gradients() {
    let mut rng = Rng::new(4);
    for (kernel, stride, input, target) in [
        ([2, 2, 2], [2, 2, 2], [3, 2, 3], [6, 4, 6]),
        ([2, 2, 2], [2, 2, 2], [3, 2, 3], [5, 4, 7]),
        ([3, 3, 3], [2, 2, 2], [2, 3, 2], [4, 6, 4]),
        ([3, 2, 1], [1, 2, 1], [3, 2, 4], [4, 4, 4]),
    ] {
        let spec = ConvTranspose3dSpec::to_size(kernel, stride, input, target).unwrap();
        let x = tensor64(&[2, input[0], input[1], input[2], 3], &mut rng);
        let w = tensor64(&[kernel[0], kernel[1], kernel[2], 4, 3], &mut rng);
        let b = tensor64(&[4], &mut rng);
        check_gradients(
            &[x, w, b],
            |v| {
                let y = v[0].conv_transpose3d(&v[1], Some(&v[2]), &spec)?;
                assert_eq!(y.dims(), &[2, target[0], target[1], target[2], 4]);
                weighted_sum(y, 8)
            },
            1e-6,
            1e-6,
            60,
        )
        .unwrap_or_else(|e| panic!("kernel {kernel:?} stride {stride:?} to {target:?}: {e}"));
    }
}

/// Without a bias, and with only the weight tracked (the input a constant), the recorded
/// op still returns exactly the gradients asked for.
#[test]
fn gradients_without_bias_and_for_weight_only() {
    let mut rng = Rng::new(6);
    let x = tensor64(&[1, 4, 3, 4, 2], &mut rng);
    let w = tensor64(&[3, 3, 3, 2, 3], &mut rng);
    let spec = Conv3dSpec::default();
    check_gradients(
        &[w],
        |v| weighted_sum(Var::constant(x.clone()).conv3d(&v[0], None, &spec)?, 2),
        1e-6,
        1e-6,
        54,
    )
    .unwrap();
}
