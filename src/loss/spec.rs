//! A loss named in a configuration, e.g. `{"kind": "wbce", "pos_weight": 5.0}`.
use super::dice::dense_channels;
use super::{
    bce_with_logits, cross_entropy, dice_ce, dice_loss_from_logits, mae, mse, ssim3d, DiceOptions,
    SsimOptions, Target,
};
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};

// `remote = "Self"`: the derived code becomes inherent functions, which the `Serialize`
// and `Deserialize` impls below call; those accept a plain string as `{"kind": ...}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "snake_case")]
pub enum LossSpec {
    /// Dice + CE (class targets) or Dice + BCE (region targets), nnU-Net's default.
    DiceCe,
    /// Soft Dice alone, softmax or sigmoid after the target, nnU-Net's Dice options.
    Dice,
    /// BCE with logits against region channels.
    Bce,
    /// BCE with the positive term weighted by `pos_weight` (5 when omitted).
    Wbce {
        #[serde(default = "wbce_pos_weight")]
        pos_weight: f64,
    },
    /// Softmax cross-entropy against class indices.
    Ce,
    /// Mean squared error of the sigmoid probabilities against dense targets.
    Mse,
    /// Mean absolute error of the sigmoid probabilities against dense targets.
    Mae,
    /// 1 - SSIM of the sigmoid probabilities against dense targets (data range 1 by
    /// default, the probabilities' own).
    Ssim(SsimOptions),
}

fn wbce_pos_weight() -> f64 {
    5.0
}

impl LossSpec {
    /// The configuration name (`kind`).
    pub fn name(&self) -> &'static str {
        match self {
            LossSpec::DiceCe => "dice_ce",
            LossSpec::Dice => "dice",
            LossSpec::Bce => "bce",
            LossSpec::Wbce { .. } => "wbce",
            LossSpec::Ce => "ce",
            LossSpec::Mse => "mse",
            LossSpec::Mae => "mae",
            LossSpec::Ssim(_) => "ssim",
        }
    }

    /// The loss of `logits` (NDHWC network outputs) against `target`. Fails when the
    /// target kind does not suit the loss (CE needs class indices; BCE, MSE, MAE and SSIM
    /// need dense channels) or does not fit the logits' shape.
    pub fn compute<B: Backend>(&self, logits: &Var<B>, target: &Target<B>) -> Result<Var<B>> {
        target.check_fits(self.name(), logits.shape())?;
        let dense = || match target {
            Target::Regions(t) => Ok(Var::constant(t.clone())),
            Target::Classes(_) => Err(Error::config(
                "loss",
                format!(
                    "{} needs region/dense target channels, got class indices",
                    self.name()
                ),
            )),
        };
        match self {
            LossSpec::DiceCe => dice_ce(logits, target),
            LossSpec::Dice => {
                let mode = target.mode();
                let channels = dense_channels(logits, target)?;
                dice_loss_from_logits(logits, &channels, mode, &DiceOptions::nnunet(mode))
            }
            LossSpec::Bce => bce_with_logits(logits, &dense()?, None, None),
            LossSpec::Wbce { pos_weight } => {
                bce_with_logits(logits, &dense()?, Some(*pos_weight), None)
            }
            LossSpec::Ce => match target {
                Target::Classes(labels) => cross_entropy(logits, labels, None),
                Target::Regions(_) => Err(Error::config(
                    "loss",
                    "ce needs class-index targets, got region channels",
                )),
            },
            // Prediction reads these channels through a sigmoid, as the BCE family's: the
            // loss must score the same probabilities, not the logits (a logit trained
            // towards 0 is a probability of 0.5).
            LossSpec::Mse => mse(&logits.sigmoid()?, &dense()?),
            LossSpec::Mae => mae(&logits.sigmoid()?, &dense()?),
            LossSpec::Ssim(opts) => ssim3d(&logits.sigmoid()?, &dense()?, opts),
        }
    }
}

serde_kind_shorthand!(LossSpec);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu64;
    use crate::loss::SsimWindow;
    use crate::tensor::Tensor;

    #[test]
    fn serde_names_are_snake_case_with_options() {
        let specs = [
            (LossSpec::DiceCe, r#"{"kind":"dice_ce"}"#),
            (
                LossSpec::Wbce { pos_weight: 5.0 },
                r#"{"kind":"wbce","pos_weight":5.0}"#,
            ),
            (LossSpec::Ce, r#"{"kind":"ce"}"#),
        ];
        for (spec, json) in specs {
            assert_eq!(serde_json::to_string(&spec).unwrap(), json);
            assert_eq!(serde_json::from_str::<LossSpec>(json).unwrap(), spec);
        }
        let ssim: LossSpec = serde_json::from_str(r#"{"kind":"ssim","data_range":2.0}"#).unwrap();
        assert_eq!(
            ssim,
            LossSpec::Ssim(SsimOptions {
                data_range: 2.0,
                ..SsimOptions::default()
            })
        );
        assert!(serde_json::from_str::<LossSpec>(r#"{"kind":"focal"}"#).is_err());
    }

    #[test]
    fn a_plain_string_is_short_for_the_kind() {
        assert_eq!(
            serde_json::from_str::<LossSpec>(r#""dice""#).unwrap(),
            LossSpec::Dice
        );
        let err = serde_json::from_str::<LossSpec>(r#""focal""#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `focal`"), "{err}");
        assert_eq!(
            serde_json::from_str::<LossSpec>(r#""wbce""#).unwrap(),
            LossSpec::Wbce { pos_weight: 5.0 }
        );
    }

    #[test]
    fn wrong_target_kinds_are_errors() {
        let b = Cpu64::new();
        let x = Var::constant(Tensor::zeros(&b, [1, 1, 1, 2, 3]).unwrap());
        let classes = Target::Classes(Tensor::zeros(&b, [1, 1, 1, 2]).unwrap());
        let regions = Target::Regions(Tensor::zeros(&b, [1, 1, 1, 2, 3]).unwrap());
        for spec in [
            LossSpec::Bce,
            LossSpec::Mse,
            LossSpec::Mae,
            LossSpec::Wbce { pos_weight: 2.0 },
        ] {
            let err = spec.compute(&x, &classes).unwrap_err().to_string();
            assert!(
                err.contains(spec.name()) && err.contains("class indices"),
                "{err}"
            );
        }
        assert!(LossSpec::Ce
            .compute(&x, &regions)
            .unwrap_err()
            .to_string()
            .contains("ce needs"));
        let small = Target::Regions(Tensor::zeros(&b, [1, 1, 1, 2, 2]).unwrap());
        let err = LossSpec::Dice.compute(&x, &small).unwrap_err().to_string();
        assert!(
            err.contains("dice") && err.contains("[1, 1, 1, 2, 2]"),
            "{err}"
        );
    }

    /// MSE and MAE score the probabilities prediction thresholds: a logit of 0 is 0.5 away
    /// from either target, and a large logit is close to a target of 1.
    #[test]
    fn mse_and_mae_score_sigmoid_probabilities() {
        let b = Cpu64::new();
        let x = Var::constant(Tensor::from_host(&b, [1, 1, 1, 2, 1], &[0.0, 20.0]).unwrap());
        let t = Target::Regions(Tensor::from_host(&b, [1, 1, 1, 2, 1], &[1.0, 1.0]).unwrap());
        let value = |spec: LossSpec| spec.compute(&x, &t).unwrap().value().item().unwrap();
        let far = 1.0 - 1.0 / (1.0 + (-20.0f64).exp());
        assert!((value(LossSpec::Mse) - (0.25 + far * far) / 2.0).abs() < 1e-12);
        assert!((value(LossSpec::Mae) - (0.5 + far) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn every_spec_has_correct_gradients() {
        let b = Cpu64::new();
        let dims = [1, 3, 3, 3, 2];
        let n: usize = dims.iter().product();
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.91).sin() * 1.5).collect();
        let x = Tensor::from_host(&b, dims, &x).unwrap();
        let regions: Vec<f64> = (0..n).map(|i| f64::from(i % 3 == 0)).collect();
        let regions = Target::Regions(Tensor::from_host(&b, dims, &regions).unwrap());
        let labels: Vec<f64> = (0..n / 2).map(|i| (i % 2) as f64).collect();
        let classes = Target::Classes(Tensor::from_host(&b, [1, 3, 3, 3], &labels).unwrap());
        let ssim = LossSpec::Ssim(SsimOptions {
            window: SsimWindow::Gaussian {
                size: 3,
                sigma: 1.5,
            },
            ..SsimOptions::default()
        });
        let cases = [
            (LossSpec::DiceCe, &regions),
            (LossSpec::DiceCe, &classes),
            (LossSpec::Dice, &regions),
            (LossSpec::Dice, &classes),
            (LossSpec::Bce, &regions),
            (LossSpec::Wbce { pos_weight: 3.0 }, &regions),
            (LossSpec::Ce, &classes),
            (LossSpec::Mse, &regions),
            (LossSpec::Mae, &regions),
            (ssim, &regions),
        ];
        for (spec, target) in cases {
            check_gradients(
                std::slice::from_ref(&x),
                |v| spec.compute(&v[0], target),
                1e-6,
                1e-6,
                54,
            )
            .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        }
    }
}
