//! Normalisation of NDHWC activations with a fused affine and activation.
//!
//! Batch norm takes statistics per channel over N, D, H, W; group norm per example over a
//! group of channels and D, H, W (instance norm: one channel per group, layer norm: one
//! group). One kernel family serves all of them: statistics, then
//! `y = act(gamma * (x - mean) / sqrt(var + eps) + beta)` in a single pass over memory, and a
//! backward that recomputes the pre-activation `x * a + b` (as the forward rounded it) for
//! the activation's slope, so `x`, the statistics and the affine are saved, not `y`.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::{Backend, UnaryOp};

/// Which elements share one mean and variance.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Per channel over N, D, H, W: `c` statistics.
    Batch = 0,
    /// Per example and group of `c / groups` channels over D, H, W: `n * groups` statistics.
    Group = 1,
}

/// Geometry and settings of one normalisation, laid out for the CUDA kernels too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormParams {
    pub n: usize,
    /// D * H * W.
    pub spatial: usize,
    pub c: usize,
    /// Channel groups per example for `Group`; 1 for `Batch`.
    pub groups: usize,
    pub eps: f64,
    /// Slope of the fused activation below zero: 1 without activation, 0 for ReLU, s for
    /// LeakyReLU(s). Never negative, so `y > 0` exactly when the pre-activation is.
    pub neg_slope: f64,
    pub kind: NormKind,
    /// The statistics were given (batch norm in eval mode): no gradient flows through them.
    pub fixed_stats: bool,
}

impl NormParams {
    pub fn numel(&self) -> usize {
        self.n * self.spatial * self.c
    }
    /// The geometry the kernels index with: non-empty, whole groups of channels.
    pub fn validate(&self) -> Result<()> {
        let groups_fit = self.groups > 0 && self.c.is_multiple_of(self.groups);
        if !groups_fit || self.numel() == 0 {
            return Err(Error::shape(
                "norm",
                format!("empty input or channels not divisible into groups: {self:?}"),
            ));
        }
        Ok(())
    }
    /// Fails unless buffer `what` has `want` elements.
    pub fn check_len(&self, what: &str, len: usize, want: usize) -> Result<()> {
        if len != want {
            return Err(Error::shape(
                "norm",
                format!("{what} has {len} elements, expected {want} for {self:?}"),
            ));
        }
        Ok(())
    }
    /// Validates `self` and the lengths a forward or backward reads: each of `elements`
    /// (x, and dy for the backward) `numel`, the statistics `stats_len`, a present gamma or
    /// beta one per channel. Every backend checks with this, so with the same messages.
    pub fn check_lens(
        &self,
        elements: &[(&str, usize)],
        mean: usize,
        var: usize,
        affine: [Option<usize>; 2],
    ) -> Result<()> {
        self.validate()?;
        for &(what, len) in elements {
            self.check_len(what, len, self.numel())?;
        }
        self.check_len("mean", mean, self.stats_len())?;
        self.check_len("variance", var, self.stats_len())?;
        for len in affine.into_iter().flatten() {
            self.check_len("gamma/beta", len, self.c)?;
        }
        Ok(())
    }
    /// How many means (and variances) there are.
    pub fn stats_len(&self) -> usize {
        match self.kind {
            NormKind::Batch => self.c,
            NormKind::Group => self.n * self.groups,
        }
    }
    /// How many elements share one statistic.
    pub fn stats_count(&self) -> usize {
        match self.kind {
            NormKind::Batch => self.n * self.spatial,
            NormKind::Group => self.spatial * (self.c / self.groups),
        }
    }
    /// The statistic used by channel `ch` of example `ex`.
    pub fn stat_index(&self, ex: usize, ch: usize) -> usize {
        match self.kind {
            NormKind::Batch => ch,
            NormKind::Group => ex * self.groups + ch / (self.c / self.groups),
        }
    }
}

/// Fails unless the moving statistics and the batch's have the same length.
pub fn check_moving_lens(moving: usize, batch: usize) -> Result<()> {
    if moving != batch {
        return Err(Error::shape(
            "update_moving_stats",
            format!("{moving} moving values for {batch} batch values"),
        ));
    }
    Ok(())
}

/// Gradients of a normalisation; each is present when it was asked for.
pub struct NormGrads<S> {
    pub dx: Option<S>,
    pub dgamma: Option<S>,
    pub dbeta: Option<S>,
}

pub trait NormKernel: BackendBase {
    /// Mean and biased variance of each statistics group (`p.stats_len()` of each).
    fn norm_stats(
        &self,
        x: &Self::Storage,
        p: &NormParams,
    ) -> Result<(Self::Storage, Self::Storage)>;
    /// `y = act(gamma[c] * (x - mean[s]) / sqrt(var[s] + eps) + beta[c])`, where `s` is the
    /// element's statistic; an absent gamma is 1 and an absent beta 0.
    #[allow(clippy::too_many_arguments)]
    fn norm_forward(
        &self,
        x: &Self::Storage,
        mean: &Self::Storage,
        var: &Self::Storage,
        gamma: Option<&Self::Storage>,
        beta: Option<&Self::Storage>,
        p: &NormParams,
    ) -> Result<Self::Storage>;
    /// Gradients with respect to x, gamma and beta, as flagged in `needs`. The activation's
    /// slope at each element is that of the forward's pre-activation, computed again from
    /// x, the statistics, gamma and beta exactly as the forward computed it, so the output
    /// need not be kept for the backward.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        mean: &Self::Storage,
        var: &Self::Storage,
        gamma: Option<&Self::Storage>,
        beta: Option<&Self::Storage>,
        p: &NormParams,
        needs: [bool; 3],
    ) -> Result<NormGrads<Self::Storage>>;
    /// `moving = momentum * moving + (1 - momentum) * correction * batch`, in place.
    fn norm_update_moving(
        &self,
        moving: &mut Self::Storage,
        batch: &Self::Storage,
        momentum: f64,
        correction: f64,
    ) -> Result<()>;
}

/// The negative-side slope of a fused activation (see [`NormParams::neg_slope`]).
fn fused_slope(op: &'static str, act: Option<UnaryOp>) -> Result<f64> {
    match act {
        None => Ok(1.0),
        Some(UnaryOp::Relu) => Ok(0.0),
        Some(UnaryOp::LeakyRelu(s)) if s.is_finite() && s >= 0.0 => Ok(s),
        Some(other) => Err(Error::shape(
            op,
            format!(
                "fused activation {other:?} is not supported (only Relu or LeakyRelu with a slope >= 0)"
            ),
        )),
    }
}

/// Checks the input and affine shapes and the settings; returns the NDHWC dimensions.
fn check_inputs<B: Backend>(
    op: &'static str,
    x: &Var<B>,
    gamma: Option<&Var<B>>,
    beta: Option<&Var<B>>,
    eps: f64,
) -> Result<[usize; 5]> {
    let dims = x.shape().ndhwc(op)?;
    if x.value().numel() == 0 {
        return Err(Error::shape(op, format!("empty input {}", x.shape())));
    }
    let c = dims[4];
    for (name, v) in [("gamma", gamma), ("beta", beta)] {
        if let Some(v) = v {
            if v.dims() != [c] {
                return Err(Error::shape(
                    op,
                    format!(
                        "{name} of shape {} does not match input {} (expected [{c}])",
                        v.shape(),
                        x.shape()
                    ),
                ));
            }
        }
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::shape(op, format!("eps must be positive, got {eps}")));
    }
    Ok(dims)
}

/// Normalises `x` with the given statistics and records the backward.
fn normalize<B: Backend>(
    op: &'static str,
    x: &Var<B>,
    gamma: Option<&Var<B>>,
    beta: Option<&Var<B>>,
    mean: &Tensor<B>,
    var: &Tensor<B>,
    p: NormParams,
) -> Result<Var<B>> {
    let be = x.backend();
    let y = be.norm_forward(
        x.value().storage(),
        mean.storage(),
        var.storage(),
        gamma.map(|g| g.value().storage()),
        beta.map(|b| b.value().storage()),
        &p,
    )?;
    let y = Tensor::from_storage(be, x.shape().clone(), y)?;
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    Ok(Var::from_op(op, y, &inputs, || NormBackward {
        x: x.value().clone(),
        mean: mean.clone(),
        var: var.clone(),
        gamma: gamma.map(|g| g.value().clone()),
        beta: beta.map(|b| b.value().clone()),
        p,
    }))
}

/// Saves the input, the statistics and the affine: not the output, whose activation slope
/// the backward computes again from these (the output is often kept by the next layer
/// only in a converted form, and so is freed).
struct NormBackward<B: Backend> {
    x: Tensor<B>,
    mean: Tensor<B>,
    var: Tensor<B>,
    gamma: Option<Tensor<B>>,
    beta: Option<Tensor<B>>,
    p: NormParams,
}

impl<B: Backend> BackwardOp<B> for NormBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let gamma_slot = self.gamma.as_ref().map(|_| 1);
        let beta_slot = self
            .beta
            .as_ref()
            .map(|_| 1 + usize::from(gamma_slot.is_some()));
        let wants = |slot: Option<usize>| slot.is_some_and(|i| needs[i]);
        let be = self.x.backend();
        let grads = be.norm_backward(
            self.x.storage(),
            grad.storage(),
            self.mean.storage(),
            self.var.storage(),
            self.gamma.as_ref().map(|g| g.storage()),
            self.beta.as_ref().map(|b| b.storage()),
            &self.p,
            [needs[0], wants(gamma_slot), wants(beta_slot)],
        )?;
        let channels = Shape::new(&[self.p.c]);
        let mut out = vec![grads
            .dx
            .map(|s| Tensor::from_storage(be, self.x.shape().clone(), s))
            .transpose()?];
        if gamma_slot.is_some() {
            out.push(
                grads
                    .dgamma
                    .map(|s| Tensor::from_storage(be, channels.clone(), s))
                    .transpose()?,
            );
        }
        if beta_slot.is_some() {
            out.push(
                grads
                    .dbeta
                    .map(|s| Tensor::from_storage(be, channels, s))
                    .transpose()?,
            );
        }
        Ok(out)
    }
}

impl<B: Backend> Var<B> {
    /// Batch norm in training mode: statistics per channel over N, D, H, W. Returns y and the
    /// batch mean and biased variance `[C]` (untracked) for the moving statistics.
    pub fn batch_norm_train(
        &self,
        gamma: Option<&Var<B>>,
        beta: Option<&Var<B>>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<(Var<B>, Tensor<B>, Tensor<B>)> {
        const OP: &str = "batch_norm_train";
        let [n, d, h, w, c] = check_inputs(OP, self, gamma, beta, eps)?;
        let p = NormParams {
            n,
            spatial: d * h * w,
            c,
            groups: 1,
            eps,
            neg_slope: fused_slope(OP, act)?,
            kind: NormKind::Batch,
            fixed_stats: false,
        };
        let be = self.backend();
        let (mean, var) = be.norm_stats(self.value().storage(), &p)?;
        let mean = Tensor::from_storage(be, Shape::new(&[c]), mean)?;
        let var = Tensor::from_storage(be, Shape::new(&[c]), var)?;
        let y = normalize(OP, self, gamma, beta, &mean, &var, p)?;
        Ok((y, mean, var))
    }

    /// Batch norm in eval mode: normalises with the given moving mean and variance `[C]`.
    pub fn batch_norm_eval(
        &self,
        gamma: Option<&Var<B>>,
        beta: Option<&Var<B>>,
        mean: &Tensor<B>,
        var: &Tensor<B>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<Var<B>> {
        const OP: &str = "batch_norm_eval";
        let [n, d, h, w, c] = check_inputs(OP, self, gamma, beta, eps)?;
        for (name, t) in [("mean", mean), ("variance", var)] {
            if t.dims() != [c] {
                return Err(Error::shape(
                    OP,
                    format!(
                        "moving {name} of shape {} does not match input {} (expected [{c}])",
                        t.shape(),
                        self.shape()
                    ),
                ));
            }
        }
        let p = NormParams {
            n,
            spatial: d * h * w,
            c,
            groups: 1,
            eps,
            neg_slope: fused_slope(OP, act)?,
            kind: NormKind::Batch,
            fixed_stats: true,
        };
        normalize(OP, self, gamma, beta, mean, var, p)
    }

    /// Instance norm: statistics per example and channel over D, H, W.
    pub fn instance_norm(
        &self,
        gamma: Option<&Var<B>>,
        beta: Option<&Var<B>>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<Var<B>> {
        let c = self.shape().ndhwc("instance_norm")?[4];
        self.group_norm_named("instance_norm", c, gamma, beta, eps, act)
    }

    /// Group norm: statistics per example over groups of `C / groups` channels and D, H, W
    /// (`groups == C` is instance norm, 1 is layer norm).
    pub fn group_norm(
        &self,
        groups: usize,
        gamma: Option<&Var<B>>,
        beta: Option<&Var<B>>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<Var<B>> {
        self.group_norm_named("group_norm", groups, gamma, beta, eps, act)
    }

    fn group_norm_named(
        &self,
        op: &'static str,
        groups: usize,
        gamma: Option<&Var<B>>,
        beta: Option<&Var<B>>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<Var<B>> {
        let [n, d, h, w, c] = check_inputs(op, self, gamma, beta, eps)?;
        if groups == 0 || c % groups != 0 {
            return Err(Error::shape(
                op,
                format!(
                    "{c} channels of input {} are not divisible into {groups} groups",
                    self.shape()
                ),
            ));
        }
        let p = NormParams {
            n,
            spatial: d * h * w,
            c,
            groups,
            eps,
            neg_slope: fused_slope(op, act)?,
            kind: NormKind::Group,
            fixed_stats: false,
        };
        let be = self.backend();
        let (mean, var) = be.norm_stats(self.value().storage(), &p)?;
        let mean = Tensor::from_storage(be, Shape::new(&[p.stats_len()]), mean)?;
        let var = Tensor::from_storage(be, Shape::new(&[p.stats_len()]), var)?;
        normalize(op, self, gamma, beta, &mean, &var, p)
    }
}

/// Updates moving statistics in place, Keras style:
/// `moving = momentum * moving + (1 - momentum) * batch`. The batch variance (biased, as
/// `batch_norm_train` returns it) is first made unbiased with `count / (count - 1)`, where
/// `count` is the number of elements per channel it was taken over.
pub fn update_moving_stats<B: Backend>(
    moving_mean: &mut Tensor<B>,
    moving_var: &mut Tensor<B>,
    batch_mean: &Tensor<B>,
    batch_var: &Tensor<B>,
    count: usize,
    momentum: f64,
) -> Result<()> {
    const OP: &str = "update_moving_stats";
    let pairs = [
        (moving_mean.shape(), batch_mean.shape()),
        (moving_var.shape(), batch_var.shape()),
        (moving_mean.shape(), moving_var.shape()),
    ];
    for (a, b) in pairs {
        if a != b || a.rank() != 1 {
            return Err(Error::shape(
                OP,
                format!(
                    "moving mean {}, moving variance {}, batch mean {} and batch variance {} must all be the same [C]",
                    moving_mean.shape(),
                    moving_var.shape(),
                    batch_mean.shape(),
                    batch_var.shape()
                ),
            ));
        }
    }
    if count < 2 {
        return Err(Error::shape(
            OP,
            format!("an unbiased variance needs at least 2 elements per channel, got {count}"),
        ));
    }
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::shape(
            OP,
            format!("momentum must be in [0, 1], got {momentum}"),
        ));
    }
    let be = moving_mean.backend().clone();
    be.norm_update_moving(
        moving_mean.storage_mut()?,
        batch_mean.storage(),
        momentum,
        1.0,
    )?;
    let unbias = count as f64 / (count - 1) as f64;
    be.norm_update_moving(
        moving_var.storage_mut()?,
        batch_var.storage(),
        momentum,
        unbias,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};
    use crate::rng::Rng;

    /// Odd sizes on every axis: N=2, D=3, H=2, W=5.
    const DIMS: [usize; 4] = [2, 3, 2, 5];

    fn normal(len: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.normal()).collect()
    }

    fn input(c: usize, seed: u64) -> Tensor<Cpu64> {
        let [n, d, h, w] = DIMS;
        // Channels with different offsets and spreads, so per-channel statistics matter.
        let data: Vec<f64> = normal(n * d * h * w * c, seed)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i % c) as f64) + 2.0 * (i % c) as f64 - 1.0)
            .collect();
        Tensor::from_host(&Cpu64::new(), [n, d, h, w, c], &data).unwrap()
    }

    fn channels(values: &[f64]) -> Tensor<Cpu64> {
        Tensor::from_host(&Cpu64::new(), [values.len()], values).unwrap()
    }

    /// Mean and biased variance of `data` ([N, S, C]) for each (n, c) or each c.
    fn naive_stats(data: &[f64], n: usize, c: usize, per_example: bool) -> Vec<(f64, f64)> {
        let s = data.len() / (n * c);
        let groups = if per_example { n * c } else { c };
        (0..groups)
            .map(|g| {
                let vals: Vec<f64> = (0..data.len())
                    .filter(|i| {
                        let (ex, ch) = (i / (s * c), i % c);
                        if per_example {
                            ex * c + ch == g
                        } else {
                            ch == g
                        }
                    })
                    .map(|i| data[i])
                    .collect();
                let m = vals.iter().sum::<f64>() / vals.len() as f64;
                let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
                (m, v)
            })
            .collect()
    }

    /// `sum(y * w)` for fixed weights w, so every output element's gradient differs.
    fn weighted_sum(y: &Var<Cpu64>, seed: u64) -> Result<Var<Cpu64>> {
        let w = Tensor::from_host(
            &Cpu64::new(),
            y.shape().clone(),
            &normal(y.value().numel(), seed),
        )?;
        y.mul(&Var::constant(w))?.sum()
    }

    const ACTS: [Option<UnaryOp>; 3] = [None, Some(UnaryOp::Relu), Some(UnaryOp::LeakyRelu(0.2))];

    /// Every backend checks lengths with `NormParams::check_lens` and `check_moving_lens`:
    /// the CPU's errors name the buffer, its length and the one expected.
    #[test]
    fn kernels_refuse_buffers_of_the_wrong_length_naming_them() {
        let cpu = Cpu::new();
        let p = NormParams {
            n: 2,
            spatial: 3,
            c: 2,
            groups: 2,
            eps: 1e-5,
            neg_slope: 0.01,
            kind: NormKind::Group,
            fixed_stats: false,
        };
        let (x, stats, ch) = (vec![1.0f32; 12], vec![1.0f32; 4], vec![1.0f32; 2]);
        let short = vec![1.0f32; 3];
        fn err<T>(r: Result<T>) -> String {
            r.err().map(|e| e.to_string()).unwrap_or_default()
        }
        let forward = cpu.norm_forward(&x, &stats, &stats, Some(&ch), Some(&short), &p);
        assert!(err(forward).contains("gamma/beta has 3 elements, expected 2"));
        let backward = cpu.norm_backward(&x, &short, &stats, &stats, None, None, &p, [true; 3]);
        assert!(err(backward).contains("dy has 3 elements, expected 12"));
        let backward = cpu.norm_backward(&x, &x, &stats, &short, None, None, &p, [true; 3]);
        assert!(err(backward).contains("variance has 3 elements, expected 4"));
        let moving = cpu.norm_update_moving(&mut stats.clone(), &short, 0.9, 1.0);
        assert!(err(moving).contains("4 moving values for 3 batch values"));
    }

    /// The backward's slope is the forward's: 1 exactly where the pre-activation is
    /// positive, at zero and one step either side of it included. With fixed statistics
    /// chosen so that rstd = 1 and b = beta - mean = -0.5 (beta counts: without it the
    /// slopes would differ), dx is dz itself.
    #[test]
    fn backward_slopes_follow_the_forwards_pre_activation() {
        let tiny = 2f32.powi(-20);
        let x = [0.5, 0.5 + tiny, 0.5 - tiny, 3.0, -1.0];
        let p = NormParams {
            n: 1,
            spatial: x.len(),
            c: 1,
            groups: 1,
            eps: 0.25,
            neg_slope: 0.01,
            kind: NormKind::Batch,
            fixed_stats: true,
        };
        fn run<B: Backend>(b: &B, x: &[f32], p: &NormParams) -> (Vec<f64>, Vec<f64>) {
            let up = |v: &[f32]| Tensor::from_f32(b, [v.len()], v).unwrap();
            let (x, dy) = (up(x), up(&vec![1.0; x.len()]));
            let (mean, var, gamma, beta) = (up(&[0.75]), up(&[0.75]), up(&[1.0]), up(&[0.25]));
            fn s<B: Backend>(t: &Tensor<B>) -> &B::Storage {
                t.storage()
            }
            let (g, bt) = (Some(s(&gamma)), Some(s(&beta)));
            let y = b.norm_forward(s(&x), s(&mean), s(&var), g, bt, p).unwrap();
            let dx = b
                .norm_backward(s(&x), s(&dy), s(&mean), s(&var), g, bt, p, [true; 3])
                .unwrap()
                .dx
                .unwrap();
            let host = |v: B::Storage| Tensor::from_storage(b, Shape::new(&[p.spatial]), v);
            (
                host(y).unwrap().to_vec_f64().unwrap(),
                host(dx).unwrap().to_vec_f64().unwrap(),
            )
        }
        for (what, (y, dx)) in [
            ("f64", run(&Cpu64::new(), &x, &p)),
            ("f32", run(&Cpu::new(), &x, &p)),
        ] {
            // The slope in the backend's precision.
            let low = if what == "f32" { 0.01f32 as f64 } else { 0.01 };
            assert_eq!(dx, [low, 1.0, low, 1.0, low], "{what}");
            for (y, dx) in y.iter().zip(&dx) {
                assert_eq!(*y > 0.0, *dx == 1.0, "{what}: y {y}, dx {dx}");
            }
        }
    }

    #[test]
    fn batch_norm_train_gives_zero_mean_unit_variance_per_channel() {
        let x = input(3, 1);
        let xs = x.to_vec().unwrap();
        let eps = 1e-5;
        let (y, mean, var) = Var::constant(x)
            .batch_norm_train(None, None, eps, None)
            .unwrap();
        let want = naive_stats(&xs, 2, 3, false);
        let (mean, var) = (mean.to_vec().unwrap(), var.to_vec().unwrap());
        for (ch, (m, v)) in want.iter().enumerate() {
            assert!(
                (mean[ch] - m).abs() < 1e-12,
                "mean {ch}: {} vs {m}",
                mean[ch]
            );
            assert!((var[ch] - v).abs() < 1e-12, "var {ch}: {} vs {v}", var[ch]);
        }
        let out = naive_stats(&y.value().to_vec().unwrap(), 2, 3, false);
        for (ch, (m, v)) in out.iter().enumerate() {
            assert!(m.abs() < 1e-12, "channel {ch} mean {m}");
            let expected = var[ch] / (var[ch] + eps);
            assert!((v - expected).abs() < 1e-12, "channel {ch} var {v}");
            assert!((v - 1.0).abs() < 1e-4, "channel {ch} var {v}");
        }
    }

    #[test]
    fn batch_norm_affine_sets_mean_and_spread() {
        let x = Var::constant(input(3, 2));
        let gamma = Var::constant(channels(&[2.0, -0.5, 1.5]));
        let beta = Var::constant(channels(&[1.0, -3.0, 0.25]));
        let (y, _, _) = x
            .batch_norm_train(Some(&gamma), Some(&beta), 1e-9, None)
            .unwrap();
        let out = naive_stats(&y.value().to_vec().unwrap(), 2, 3, false);
        for (ch, (g, b)) in [(2.0f64, 1.0), (-0.5, -3.0), (1.5, 0.25)]
            .into_iter()
            .enumerate()
        {
            assert!((out[ch].0 - b).abs() < 1e-9, "channel {ch}: {:?}", out[ch]);
            assert!(
                (out[ch].1.sqrt() - g.abs()).abs() < 1e-6,
                "channel {ch}: {:?}",
                out[ch]
            );
        }
    }

    #[test]
    fn f32_statistics_survive_a_large_offset() {
        // 1e4 + noise of spread 1: a one-pass sum of squares in f32 loses every digit of the
        // variance; the two-pass f64 statistics keep it.
        let noise = normal(2 * 7 * 5 * 3 * 2, 3);
        let data: Vec<f32> = noise.iter().map(|v| (1e4 + v) as f32).collect();
        let as_f64: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let x = Var::constant(Tensor::from_host(&Cpu::new(), [2, 7, 5, 3, 2], &data).unwrap());
        let (_, mean, var) = x.batch_norm_train(None, None, 1e-3, None).unwrap();
        let want = naive_stats(&as_f64, 2, 2, false);
        let (mean, var) = (mean.to_vec().unwrap(), var.to_vec().unwrap());
        for ch in 0..2 {
            assert!((mean[ch] as f64 - want[ch].0).abs() < 2e-3);
            let rel = (var[ch] as f64 - want[ch].1).abs() / want[ch].1;
            assert!(rel < 1e-5, "channel {ch}: {} vs {}", var[ch], want[ch].1);
        }
    }

    #[test]
    fn batch_norm_eval_uses_the_moving_statistics() {
        // One example, two voxels, two channels: x = [[1, 2], [3, 4]].
        let b = Cpu64::new();
        let x =
            Var::constant(Tensor::from_host(&b, [1, 1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap());
        let mean = channels(&[0.5, 1.0]);
        // var + eps = [4, 1], so the standard deviations are 2 and 1.
        let var = channels(&[3.999, 0.999]);
        let gamma = Var::constant(channels(&[2.0, -1.0]));
        let beta = Var::constant(channels(&[0.5, 0.0]));
        // channel 0: 2 * (x - 0.5) / 2 + 0.5 = x; channel 1: -(x - 1).
        let cases = [
            (None, [1.0, -1.0, 3.0, -3.0]),
            (Some(UnaryOp::Relu), [1.0, 0.0, 3.0, 0.0]),
            (Some(UnaryOp::LeakyRelu(0.1)), [1.0, -0.1, 3.0, -0.3]),
        ];
        for (act, want) in cases {
            let y = x
                .batch_norm_eval(Some(&gamma), Some(&beta), &mean, &var, 1e-3, act)
                .unwrap()
                .value()
                .to_vec()
                .unwrap();
            for (got, want) in y.iter().zip(want) {
                assert!((got - want).abs() < 1e-12, "{act:?}: {y:?}");
            }
        }
    }

    #[test]
    fn moving_statistics_update_by_hand() {
        let mut mean = channels(&[1.0, 2.0]);
        let mut var = channels(&[1.0, 1.0]);
        let batch_mean = channels(&[3.0, -2.0]);
        let batch_var = channels(&[2.0, 4.0]);
        update_moving_stats(&mut mean, &mut var, &batch_mean, &batch_var, 5, 0.9).unwrap();
        // mean: 0.9 * [1, 2] + 0.1 * [3, -2]; var: unbiased [2, 4] * 5/4 = [2.5, 5].
        let (mean, var) = (mean.to_vec().unwrap(), var.to_vec().unwrap());
        for (got, want) in mean.iter().chain(&var).zip([1.2, 1.6, 1.15, 1.4]) {
            assert!((got - want).abs() < 1e-12, "{mean:?} {var:?}");
        }
        let mut m = channels(&[0.0]);
        let mut v = channels(&[0.0]);
        let err = update_moving_stats(
            &mut m,
            &mut v,
            &channels(&[1.0]),
            &channels(&[1.0]),
            1,
            0.99,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("update_moving_stats"), "{err}");
        let err = update_moving_stats(&mut m, &mut v, &batch_mean, &batch_var, 4, 0.99)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("update_moving_stats") && err.contains("[2]"),
            "{err}"
        );
    }

    #[test]
    fn instance_norm_gives_zero_mean_unit_variance_per_example_and_channel() {
        let x = input(3, 4);
        let xs = x.to_vec().unwrap();
        let eps = 1e-5;
        let y = Var::constant(x)
            .instance_norm(None, None, eps, None)
            .unwrap();
        let before = naive_stats(&xs, 2, 3, true);
        let after = naive_stats(&y.value().to_vec().unwrap(), 2, 3, true);
        for ((_, v0), (m, v)) in before.iter().zip(&after) {
            assert!(m.abs() < 1e-12, "mean {m}");
            assert!((v - v0 / (v0 + eps)).abs() < 1e-12, "var {v}");
            assert!((v - 1.0).abs() < 1e-4, "var {v}");
        }
    }

    #[test]
    fn group_norm_pools_channels_and_layer_norm_pools_all() {
        let x = Var::constant(input(4, 5));
        let xs = x.value().to_vec().unwrap();
        let per_example = xs.len() / 2;
        for groups in [1, 2] {
            let y = x.group_norm(groups, None, None, 1e-5, None).unwrap();
            let ys = y.value().to_vec().unwrap();
            let cpg = 4 / groups;
            for ex in 0..2 {
                for g in 0..groups {
                    let sel = |v: &[f64]| -> Vec<f64> {
                        (ex * per_example..(ex + 1) * per_example)
                            .filter(|i| (i % 4) / cpg == g)
                            .map(|i| v[i])
                            .collect()
                    };
                    let vals = sel(&ys);
                    let m = vals.iter().sum::<f64>() / vals.len() as f64;
                    let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
                    assert!(m.abs() < 1e-12, "groups {groups} ex {ex} g {g}: mean {m}");
                    assert!(
                        (v - 1.0).abs() < 1e-4,
                        "groups {groups} ex {ex} g {g}: var {v}"
                    );
                }
            }
        }
        // groups == C is instance norm.
        let a = x.group_norm(4, None, None, 1e-5, None).unwrap();
        let b = x.instance_norm(None, None, 1e-5, None).unwrap();
        assert_eq!(a.value().to_vec().unwrap(), b.value().to_vec().unwrap());
    }

    #[test]
    fn fused_activation_equals_separate_activation() {
        let x = Var::constant(input(3, 6));
        let gamma = Var::constant(channels(&[1.5, -0.7, 0.9]));
        let beta = Var::constant(channels(&[0.2, 0.1, -0.4]));
        let plain = x
            .instance_norm(Some(&gamma), Some(&beta), 1e-5, None)
            .unwrap();
        for (act, op) in [
            (UnaryOp::Relu, UnaryOp::Relu),
            (UnaryOp::LeakyRelu(0.01), UnaryOp::LeakyRelu(0.01)),
        ] {
            let fused = x
                .instance_norm(Some(&gamma), Some(&beta), 1e-5, Some(act))
                .unwrap();
            let separate = plain.unary(op).unwrap();
            let (f, s) = (
                fused.value().to_vec().unwrap(),
                separate.value().to_vec().unwrap(),
            );
            assert!(
                f.iter().zip(&s).all(|(a, b)| (a - b).abs() < 1e-12),
                "{act:?}"
            );
            assert!(s.iter().any(|&v| v < 0.0) || act == UnaryOp::Relu);
        }
    }

    // Gradient checks: central differences with eps 1e-6 in f64; tolerance 1e-6 relative
    // (|analytic - numeric| <= 1e-6 (1 + |numeric|)).
    const GRAD_EPS: f64 = 1e-6;
    const GRAD_TOL: f64 = 1e-6;

    #[test]
    fn batch_norm_train_gradients() {
        let x = input(3, 7);
        let gamma = channels(&[1.3, -0.6, 0.8]);
        let beta = channels(&[0.1, -0.2, 0.3]);
        for act in ACTS {
            check_gradients(
                &[x.clone(), gamma.clone(), beta.clone()],
                |v| {
                    let (y, _, _) = v[0].batch_norm_train(Some(&v[1]), Some(&v[2]), 1e-3, act)?;
                    weighted_sum(&y, 8)
                },
                GRAD_EPS,
                GRAD_TOL,
                1000,
            )
            .unwrap_or_else(|e| panic!("affine {act:?}: {e}"));
            check_gradients(
                std::slice::from_ref(&x),
                |v| {
                    let (y, _, _) = v[0].batch_norm_train(None, None, 1e-3, act)?;
                    weighted_sum(&y, 9)
                },
                GRAD_EPS,
                GRAD_TOL,
                1000,
            )
            .unwrap_or_else(|e| panic!("no affine {act:?}: {e}"));
        }
        // Only beta: the gradient slots follow the inputs actually given.
        check_gradients(
            &[x, beta],
            |v| {
                let (y, _, _) = v[0].batch_norm_train(None, Some(&v[1]), 1e-3, None)?;
                weighted_sum(&y, 10)
            },
            GRAD_EPS,
            GRAD_TOL,
            1000,
        )
        .unwrap();
    }

    #[test]
    fn batch_norm_eval_gradients() {
        let x = input(3, 11);
        let gamma = channels(&[1.3, -0.6, 0.8]);
        let beta = channels(&[0.1, -0.2, 0.3]);
        let mean = channels(&[-0.5, 1.2, 3.0]);
        let var = channels(&[0.7, 2.5, 9.0]);
        for act in ACTS {
            check_gradients(
                &[x.clone(), gamma.clone(), beta.clone()],
                |v| {
                    let y =
                        v[0].batch_norm_eval(Some(&v[1]), Some(&v[2]), &mean, &var, 1e-3, act)?;
                    weighted_sum(&y, 12)
                },
                GRAD_EPS,
                GRAD_TOL,
                1000,
            )
            .unwrap_or_else(|e| panic!("{act:?}: {e}"));
        }
    }

    #[test]
    fn instance_and_group_norm_gradients() {
        for (c, groups) in [(3, 3), (4, 1), (4, 2), (4, 4)] {
            let x = input(c, 13 + c as u64);
            let gamma = channels(&normal(c, 14).iter().map(|v| v + 1.0).collect::<Vec<_>>());
            let beta = channels(&normal(c, 15));
            for act in ACTS {
                check_gradients(
                    &[x.clone(), gamma.clone(), beta.clone()],
                    |v| {
                        let y = if groups == c {
                            v[0].instance_norm(Some(&v[1]), Some(&v[2]), 1e-5, act)?
                        } else {
                            v[0].group_norm(groups, Some(&v[1]), Some(&v[2]), 1e-5, act)?
                        };
                        weighted_sum(&y, 16)
                    },
                    GRAD_EPS,
                    GRAD_TOL,
                    1000,
                )
                .unwrap_or_else(|e| panic!("C {c} groups {groups} {act:?}: {e}"));
            }
            check_gradients(
                &[x],
                |v| weighted_sum(&v[0].group_norm(groups, None, None, 1e-5, None)?, 17),
                GRAD_EPS,
                GRAD_TOL,
                1000,
            )
            .unwrap_or_else(|e| panic!("C {c} groups {groups} without affine: {e}"));
        }
    }

    #[test]
    fn f32_backward_matches_f64() {
        let x64 = input(3, 18);
        let x32 =
            Tensor::from_f32(&Cpu::new(), x64.shape().clone(), &x64.to_vec_f32().unwrap()).unwrap();
        let g64 = channels(&[1.3, -0.6, 0.8]);
        let g32 = Tensor::from_f32(&Cpu::new(), [3], &[1.3, -0.6, 0.8]).unwrap();
        let dy = normal(x64.numel(), 19);
        let dy32: Vec<f32> = dy.iter().map(|&v| v as f32).collect();
        let p = NormParams {
            n: 2,
            spatial: 30,
            c: 3,
            groups: 3,
            eps: 1e-5,
            neg_slope: 0.01,
            kind: NormKind::Group,
            fixed_stats: false,
        };
        let grads64 = {
            let b = Cpu64::new();
            let (m, v) = b.norm_stats(x64.storage(), &p).unwrap();
            b.norm_backward(
                x64.storage(),
                &dy,
                &m,
                &v,
                Some(g64.storage()),
                None,
                &p,
                [true; 3],
            )
            .unwrap()
        };
        let grads32 = {
            let b = Cpu::new();
            let (m, v) = b.norm_stats(x32.storage(), &p).unwrap();
            b.norm_backward(
                x32.storage(),
                &dy32,
                &m,
                &v,
                Some(g32.storage()),
                None,
                &p,
                [true; 3],
            )
            .unwrap()
        };
        let pairs = [
            (grads64.dx.unwrap(), grads32.dx.unwrap()),
            (grads64.dgamma.unwrap(), grads32.dgamma.unwrap()),
            (grads64.dbeta.unwrap(), grads32.dbeta.unwrap()),
        ];
        for (a, b) in pairs {
            for (x, y) in a.iter().zip(&b) {
                assert!((x - *y as f64).abs() < 1e-4 * (1.0 + x.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_naming_op_and_shapes() {
        let x = Var::constant(input(3, 20));
        let short = Var::constant(channels(&[1.0, 2.0]));
        let err = x
            .batch_norm_train(Some(&short), None, 1e-3, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch_norm_train")
                && err.contains("[2]")
                && err.contains("[2, 3, 2, 5, 3]"),
            "{err}"
        );
        let err = x
            .instance_norm(None, Some(&short), 1e-3, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instance_norm") && err.contains("beta"),
            "{err}"
        );
        let err = x
            .group_norm(2, None, None, 1e-3, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("group_norm")
                && err.contains("2 groups")
                && err.contains("[2, 3, 2, 5, 3]"),
            "{err}"
        );
        let flat = Var::constant(Tensor::from_host(&Cpu64::new(), [4, 3], &[0.0; 12]).unwrap());
        for err in [
            flat.instance_norm(None, None, 1e-3, None).unwrap_err(),
            flat.group_norm(1, None, None, 1e-3, None).unwrap_err(),
            flat.batch_norm_train(None, None, 1e-3, None).unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("norm") && err.contains("[4, 3]") && err.contains("rank 5"),
                "{err}"
            );
        }
        let err = x
            .batch_norm_eval(
                None,
                None,
                &channels(&[0.0; 4]),
                &channels(&[1.0; 3]),
                1e-3,
                None,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch_norm_eval") && err.contains("[4]"),
            "{err}"
        );
        let err = x
            .instance_norm(None, None, 1e-3, Some(UnaryOp::Sigmoid))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instance_norm") && err.contains("Sigmoid"),
            "{err}"
        );
        let err = x
            .instance_norm(None, None, 1e-3, Some(UnaryOp::LeakyRelu(-0.5)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LeakyRelu"), "{err}");
        assert!(x.instance_norm(None, None, 0.0, None).is_err());
        // The kernel checks its geometry itself, for callers that bypass `Var`.
        let p = NormParams {
            n: 2,
            spatial: 30,
            c: 3,
            groups: 2,
            eps: 1e-5,
            neg_slope: 1.0,
            kind: NormKind::Group,
            fixed_stats: false,
        };
        let err = Cpu64::new()
            .norm_stats(x.value().storage(), &p)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("norm") && err.contains("groups: 2"), "{err}");
    }
}
