//! Soft Dice, and nnU-Net's default Dice + cross-entropy.
use super::{check_finite, Target};
use crate::autograd::Var;
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::tensor_ops::dice_sums::{SUM_P, SUM_PT, SUM_T};
use crate::tensor_ops::one_hot;

/// How logits become probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiceMode {
    /// Independent sigmoid per channel: overlapping regions (BraTS WT/TC/ET).
    Sigmoid,
    /// Softmax over channels: exclusive classes, channel 0 the background.
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DiceOptions {
    /// Added to numerator and denominator of every channel's Dice, so a channel empty in
    /// both prediction and target scores 1 and the gradient stays finite. Default 1e-5, as
    /// nnU-Net's soft Dice; must be positive.
    pub smooth: f64,
    /// Sum over the whole batch before dividing (one Dice per channel) instead of one Dice
    /// per sample and channel. nnU-Net uses it for 2D, not for 3d_fullres.
    pub batch_dice: bool,
    /// Whether channel 0 takes part in the mean. nnU-Net leaves the background out for
    /// softmax classes and keeps every channel for sigmoid regions.
    pub include_background: bool,
}

impl Default for DiceOptions {
    fn default() -> Self {
        Self {
            smooth: 1e-5,
            batch_dice: false,
            include_background: true,
        }
    }
}

impl DiceOptions {
    /// nnU-Net's 3d_fullres settings for `mode`: smooth 1e-5, no batch Dice, background
    /// excluded for softmax only.
    pub fn nnunet(mode: DiceMode) -> Self {
        Self {
            include_background: mode == DiceMode::Sigmoid,
            ..Self::default()
        }
    }
}

/// `1 - mean_c (2 sum(p t) + smooth) / (sum p + sum t + smooth)` over the channels (and,
/// without `batch_dice`, the samples) of NDHWC `probs` and `targets` (same shape). The
/// three sums come from one fused pass ([`Var::dice_sums`]); `targets` is a constant (a
/// tracked one is refused: it would get no gradient).
pub fn soft_dice<B: Backend>(
    probs: &Var<B>,
    targets: &Var<B>,
    opts: &DiceOptions,
) -> Result<Var<B>> {
    probs.shape().expect_eq(targets.shape(), "soft_dice")?;
    let [_, _, _, _, c] = probs.shape().ndhwc("soft_dice")?;
    if !(opts.smooth > 0.0 && opts.smooth.is_finite()) {
        return Err(Error::config(
            "dice smooth",
            format!("{} (must be positive and finite)", opts.smooth),
        ));
    }
    if targets.is_tracked() {
        return Err(Error::shape(
            "soft_dice",
            "the targets are on the tape, but soft Dice gives them no gradient",
        ));
    }
    let first = usize::from(!opts.include_background);
    if c <= first {
        return Err(Error::shape(
            "soft_dice",
            format!(
                "no channel left to score in {} without the background",
                probs.shape()
            ),
        ));
    }
    let sums = probs.dice_sums(targets.value(), !opts.batch_dice)?;
    let rows = sums.dims()[0];
    let sum = |k: usize| sums.slice_channels(k, k + 1)?.reshape([rows, c]);
    let dice = sum(SUM_PT)?
        .scale(2.0)?
        .add_scalar(opts.smooth)?
        .div(&sum(SUM_P)?.add(&sum(SUM_T)?)?.add_scalar(opts.smooth)?)?;
    let scored = (0..c)
        .map(|k| B::E::of(if k >= first { 1.0 } else { 0.0 }))
        .collect::<Vec<_>>();
    let mask = Var::constant(Tensor::from_host(probs.backend(), [c], &scored)?);
    let mean = dice
        .mul(&mask)?
        .sum()?
        .scale(1.0 / (rows * (c - first)) as f64)?;
    check_finite("soft_dice", mean.scale(-1.0)?.add_scalar(1.0)?)
}

/// Soft Dice of the probabilities `mode` makes from `logits`, against `targets` of the
/// same shape (region channels, or one-hot classes for softmax).
pub fn dice_loss_from_logits<B: Backend>(
    logits: &Var<B>,
    targets: &Var<B>,
    mode: DiceMode,
    opts: &DiceOptions,
) -> Result<Var<B>> {
    let probs = match mode {
        DiceMode::Sigmoid => logits.sigmoid()?,
        DiceMode::Softmax => logits.softmax()?,
    };
    soft_dice(&probs, targets, opts)
}

/// The target as 0/1 channels of the logits' shape (class indices one-hot encoded).
pub(super) fn dense_channels<B: Backend>(logits: &Var<B>, target: &Target<B>) -> Result<Var<B>> {
    Ok(Var::constant(match target {
        Target::Regions(t) => t.clone(),
        Target::Classes(t) => one_hot(t, logits.shape().last())?,
    }))
}

/// nnU-Net's default loss with weights 1:1, the activation following the target: class
/// indices give softmax Dice (background excluded) + cross-entropy, region channels give
/// sigmoid Dice (all channels) + BCE. Dice uses [`DiceOptions::nnunet`].
pub fn dice_ce<B: Backend>(logits: &Var<B>, target: &Target<B>) -> Result<Var<B>> {
    target.check_fits("dice_ce", logits.shape())?;
    let mode = target.mode();
    let channels = dense_channels(logits, target)?;
    let dice = dice_loss_from_logits(logits, &channels, mode, &DiceOptions::nnunet(mode))?;
    let ce = match target {
        Target::Regions(_) => logits.bce_with_logits(&channels, 1.0, None)?,
        Target::Classes(labels) => logits.cross_entropy(labels, None)?,
    };
    check_finite("dice_ce", dice.add(&ce)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    fn tensor(dims: [usize; 5], data: &[f64]) -> Tensor<Cpu64> {
        Tensor::from_host(&Cpu64::new(), dims, data).unwrap()
    }

    fn value(v: Result<Var<Cpu64>>) -> f64 {
        v.unwrap().value().item().unwrap()
    }

    #[test]
    fn perfect_prediction_scores_zero_and_disjoint_almost_one() {
        let t = tensor(
            [2, 1, 1, 3, 2],
            &[1., 0., 1., 1., 0., 0., 0., 1., 1., 0., 0., 1.],
        );
        let t = Var::constant(t);
        for batch_dice in [false, true] {
            let opts = DiceOptions {
                batch_dice,
                ..DiceOptions::default()
            };
            assert!(value(soft_dice(&t, &t, &opts)).abs() < 1e-12);
        }
        // Disjoint, one sample, one channel: sums 2 and 1, overlap 0.
        let p = Var::constant(tensor([1, 1, 1, 3, 1], &[1.0, 1.0, 0.0]));
        let t = Var::constant(tensor([1, 1, 1, 3, 1], &[0.0, 0.0, 1.0]));
        let opts = DiceOptions::default();
        let want = 1.0 - opts.smooth / (3.0 + opts.smooth);
        assert!((value(soft_dice(&p, &t, &opts)) - want).abs() < 1e-15);
        assert!(want < 1.0 && want > 1.0 - 1e-5);
    }

    #[test]
    fn keras_formula_on_a_tiny_example() {
        // Keras: 1 - 2 sum(y p) / (sum y + sum p + 1e-7) = 1 - 3.2 / (3.9 + 1e-7).
        let p = Var::constant(tensor([1, 1, 2, 2, 1], &[0.9, 0.2, 0.7, 0.1]));
        let t = Var::constant(tensor([1, 1, 2, 2, 1], &[1.0, 0.0, 1.0, 0.0]));
        let opts = DiceOptions {
            smooth: 1e-7,
            batch_dice: true,
            include_background: true,
        };
        let keras = 1.0 - 3.2 / (3.9 + 1e-7);
        let got = value(soft_dice(&p, &t, &opts));
        // Ours also adds the smoothing term to the numerator: s / (3.9 + s) less loss.
        let numerator_term = 1e-7 / (3.9 + 1e-7);
        assert!(
            (got - (keras - numerator_term)).abs() < 1e-14,
            "{got} vs {keras}"
        );
        assert!((got - 0.179_487_17).abs() < 1e-8);
    }

    #[test]
    fn per_sample_per_channel_mean_and_background_exclusion() {
        // Two samples, two channels; Dice per (sample, channel) with smooth s.
        let p = tensor([2, 1, 1, 2, 2], &[0.5, 0.5, 1.0, 0.0, 0.2, 0.8, 0.6, 0.4]);
        let t = tensor([2, 1, 1, 2, 2], &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let s = 1e-5;
        let d = |tp: f64, sp: f64, st: f64| (2.0 * tp + s) / (sp + st + s);
        let (d00, d01) = (d(1.5, 1.5, 2.0), d(0.0, 0.5, 0.0));
        let (d10, d11) = (d(0.6, 0.8, 1.0), d(0.8, 1.2, 1.0));
        let (p, t) = (Var::constant(p), Var::constant(t));
        let all = DiceOptions::default();
        let want = 1.0 - (d00 + d01 + d10 + d11) / 4.0;
        assert!((value(soft_dice(&p, &t, &all)) - want).abs() < 1e-12);
        let fg = DiceOptions {
            include_background: false,
            ..all
        };
        let want = 1.0 - (d01 + d11) / 2.0;
        assert!((value(soft_dice(&p, &t, &fg)) - want).abs() < 1e-12);
        let batch = DiceOptions {
            batch_dice: true,
            ..all
        };
        let want = 1.0 - (d(2.1, 2.3, 3.0) + d(0.8, 1.7, 1.0)) / 2.0;
        assert!((value(soft_dice(&p, &t, &batch)) - want).abs() < 1e-12);
    }

    #[test]
    fn bad_options_and_shapes_are_errors() {
        let b = Cpu::new();
        let one = Var::constant(Tensor::zeros(&b, [1, 1, 1, 2, 1]).unwrap());
        let fg = DiceOptions {
            include_background: false,
            ..DiceOptions::default()
        };
        assert!(soft_dice(&one, &one, &fg)
            .unwrap_err()
            .to_string()
            .contains("background"));
        let zero = DiceOptions {
            smooth: 0.0,
            ..DiceOptions::default()
        };
        assert!(soft_dice(&one, &one, &zero)
            .unwrap_err()
            .to_string()
            .contains("smooth"));
        let other = Var::constant(Tensor::zeros(&b, [1, 1, 2, 1, 1]).unwrap());
        let err = soft_dice(&one, &other, &DiceOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("soft_dice") && err.contains("[1, 1, 2, 1, 1]"),
            "{err}"
        );
    }

    #[test]
    fn dice_ce_adds_the_parts_for_both_target_kinds() {
        let b = Cpu64::new();
        let x = tensor(
            [1, 1, 2, 2, 3],
            &[
                0.3, -1.0, 2.0, 1.1, 0.4, -0.2, -0.7, 0.9, 0.1, 1.5, -1.3, 0.6,
            ],
        );
        let xv = Var::constant(x);
        let labels = Tensor::from_host(&b, [1, 1, 2, 2], &[2.0, 0.0, 1.0, 0.0]).unwrap();
        let hot = Var::constant(one_hot(&labels, 3).unwrap());
        let want = value(dice_loss_from_logits(
            &xv,
            &hot,
            DiceMode::Softmax,
            &DiceOptions::nnunet(DiceMode::Softmax),
        )) + value(xv.cross_entropy(&labels, None));
        assert!((value(dice_ce(&xv, &Target::Classes(labels))) - want).abs() < 1e-12);
        let regions = tensor(
            [1, 1, 2, 2, 3],
            &[1., 0., 1., 1., 1., 0., 0., 0., 0., 1., 0., 0.],
        );
        let rv = Var::constant(regions.clone());
        let want = value(dice_loss_from_logits(
            &xv,
            &rv,
            DiceMode::Sigmoid,
            &DiceOptions::default(),
        )) + value(xv.bce_with_logits(&rv, 1.0, None));
        assert!((value(dice_ce(&xv, &Target::Regions(regions))) - want).abs() < 1e-12);
    }

    /// soft_dice as it was composed before the fused sums: mul, per-axis sums, add.
    fn composed_soft_dice(p: &Var<Cpu64>, t: &Var<Cpu64>, opts: &DiceOptions) -> Result<f64> {
        let [n, _, _, _, c] = p.shape().ndhwc("composed")?;
        let sums = |v: &Var<Cpu64>| {
            if opts.batch_dice {
                v.sum_to_channels()
            } else {
                v.sum_spatial()
            }
        };
        let overlap = sums(&p.mul(t)?)?;
        let volume = sums(p)?.add(&sums(t)?)?;
        let dice = overlap
            .scale(2.0)?
            .add_scalar(opts.smooth)?
            .div(&volume.add_scalar(opts.smooth)?)?
            .value()
            .to_vec()?;
        let first = usize::from(!opts.include_background);
        let rows = if opts.batch_dice { 1 } else { n };
        let scored: f64 = dice
            .iter()
            .enumerate()
            .filter(|(i, _)| i % c >= first)
            .map(|(_, d)| d)
            .sum();
        Ok(1.0 - scored / (rows * (c - first)) as f64)
    }

    fn soft_inputs(dims: [usize; 5]) -> (Tensor<Cpu64>, Tensor<Cpu64>) {
        let n: usize = dims.iter().product();
        let p: Vec<f64> = (0..n)
            .map(|i| 0.5 + 0.45 * (i as f64 * 0.83).sin())
            .collect();
        let t: Vec<f64> = (0..n).map(|i| f64::from((i * 7 % 11) < 4)).collect();
        (tensor(dims, &p), tensor(dims, &t))
    }

    fn every_option() -> impl Iterator<Item = DiceOptions> {
        [false, true].into_iter().flat_map(|batch_dice| {
            [false, true].map(move |include_background| DiceOptions {
                smooth: 1e-5,
                batch_dice,
                include_background,
            })
        })
    }

    #[test]
    fn fused_sums_give_the_composed_loss() {
        let (p, t) = soft_inputs([2, 3, 5, 7, 3]);
        let (p, t) = (Var::constant(p), Var::constant(t));
        for opts in every_option() {
            let got = value(soft_dice(&p, &t, &opts));
            let want = composed_soft_dice(&p, &t, &opts).unwrap();
            assert!((got - want).abs() < 1e-14, "{opts:?}: {got} vs {want}");
            assert!(got > 0.05 && got < 0.95, "{opts:?}: {got} tests little");
        }
    }

    #[test]
    fn gradient_of_soft_dice_through_the_fused_sums() {
        let (p, t) = soft_inputs([2, 2, 1, 3, 3]);
        let t = Var::constant(t);
        for opts in every_option() {
            check_gradients(
                std::slice::from_ref(&p),
                |v| soft_dice(&v[0], &t, &opts),
                1e-6,
                1e-8,
                64,
            )
            .unwrap_or_else(|e| panic!("{opts:?}: {e}"));
        }
    }

    #[test]
    fn tracked_targets_are_refused() {
        let (p, t) = soft_inputs([1, 1, 1, 2, 2]);
        let err = check_gradients(
            &[p, t],
            |v| soft_dice(&v[0], &v[1], &DiceOptions::default()),
            1e-6,
            1e-8,
            4,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("soft_dice") && err.contains("targets"),
            "{err}"
        );
    }

    #[test]
    fn gradients_of_dice_losses() {
        let b = Cpu64::new();
        let n = 2 * 2 * 2 * 3;
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.77).sin() * 2.0).collect();
        let x = tensor([2, 2, 2, 1, 3], &x);
        let regions: Vec<f64> = (0..n).map(|i| f64::from((i * 5 % 7) < 3)).collect();
        let regions = tensor([2, 2, 2, 1, 3], &regions);
        let labels: Vec<f64> = (0..n / 3).map(|i| ((i * 2) % 3) as f64).collect();
        let labels = Tensor::from_host(&b, [2, 2, 2, 1], &labels).unwrap();
        let hot = one_hot(&labels, 3).unwrap();
        for batch_dice in [false, true] {
            for include_background in [false, true] {
                let opts = DiceOptions {
                    smooth: 1e-5,
                    batch_dice,
                    include_background,
                };
                for (mode, t) in [(DiceMode::Sigmoid, &regions), (DiceMode::Softmax, &hot)] {
                    check_gradients(
                        std::slice::from_ref(&x),
                        |v| dice_loss_from_logits(&v[0], &Var::constant(t.clone()), mode, &opts),
                        1e-6,
                        1e-7,
                        64,
                    )
                    .unwrap_or_else(|e| panic!("{opts:?} {mode:?}: {e}"));
                }
            }
        }
        for target in [
            Target::Regions(regions.clone()),
            Target::Classes(labels.clone()),
        ] {
            check_gradients(
                std::slice::from_ref(&x),
                |v| dice_ce(&v[0], &target),
                1e-6,
                1e-7,
                64,
            )
            .unwrap_or_else(|e| panic!("{:?}: {e}", target.mode()));
        }
    }
}
