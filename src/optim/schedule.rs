//! Learning-rate schedules over epochs.
use crate::error::{Error, Result};

/// How the learning rate follows the epoch. `lr(base_lr, epoch, max_epochs)` gives the rate
/// for `epoch` (counted from 0); `reduce_on_plateau` also needs `observe(val_loss)` once per
/// validation and carries its state, so a checkpoint of the schedule resumes it exactly.
// `remote = "Self"`: the derived code becomes inherent functions, which the `Serialize`
// and `Deserialize` impls below call; those accept a plain string as `{"kind": ...}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    /// `base * gamma^(epoch / every)` (integer division); by default a tenth every 30
    /// epochs, the classic ImageNet recipe.
    Step {
        #[serde(default = "step_every")]
        every: usize,
        #[serde(default = "step_gamma")]
        gamma: f64,
    },
    /// nnU-Net: `base * (1 - epoch / max_epochs)^exponent` (exponent 0.9 there).
    Poly {
        #[serde(default = "poly_exponent")]
        exponent: f64,
    },
    /// A linear warm-up `base * (epoch + 1) / warmup_epochs` for the first `warmup_epochs`,
    /// then `base * (1 + cos(pi * progress)) / 2` with progress going from 0 at the end of
    /// the warm-up to 1 at `max_epochs`.
    Cosine {
        #[serde(default)]
        warmup_epochs: usize,
    },
    /// `max(base * factor^reductions, min_lr)`: as Keras' ReduceLROnPlateau (no cooldown,
    /// improvement = strictly lower), one reduction after `patience` observations in a row
    /// without a new best validation loss, the count restarting after each reduction.
    /// Keras' defaults: factor 0.1, patience 10, min_lr 0.
    ReduceOnPlateau {
        #[serde(default = "plateau_factor")]
        factor: f64,
        #[serde(default = "plateau_patience")]
        patience: usize,
        #[serde(default)]
        min_lr: f64,
        #[serde(default)]
        state: PlateauState,
    },
}

fn poly_exponent() -> f64 {
    0.9
}
fn step_every() -> usize {
    30
}
fn step_gamma() -> f64 {
    0.1
}
fn plateau_factor() -> f64 {
    0.1
}
fn plateau_patience() -> usize {
    10
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlateauState {
    /// The lowest validation loss seen.
    pub best: Option<f64>,
    /// Observations since the last new best (or the last reduction).
    pub bad_epochs: usize,
    pub reductions: u32,
}

impl LrSchedule {
    /// nnU-Net's schedule: poly with exponent 0.9.
    pub fn nnunet() -> Self {
        LrSchedule::Poly { exponent: 0.9 }
    }

    /// Fails on parameters the formulas cannot use.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config("learning-rate schedule", msg));
        match *self {
            LrSchedule::Step { every, gamma } if every == 0 || !(gamma > 0.0 && gamma.is_finite()) => {
                bad(format!("step needs every >= 1 and gamma > 0, got every {every}, gamma {gamma}"))
            }
            LrSchedule::Poly { exponent } if !(exponent >= 0.0 && exponent.is_finite()) => {
                bad(format!("poly exponent {exponent} must be >= 0"))
            }
            LrSchedule::ReduceOnPlateau { factor, min_lr, .. }
                if !(factor > 0.0 && factor < 1.0 && min_lr >= 0.0 && min_lr.is_finite()) =>
            {
                bad(format!("reduce_on_plateau needs 0 < factor < 1 and min_lr >= 0, got {factor}, {min_lr}"))
            }
            _ => Ok(()),
        }
    }

    /// The learning rate for `epoch` (0-based) of `max_epochs`.
    pub fn lr(&self, base_lr: f64, epoch: usize, max_epochs: usize) -> f64 {
        match self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { every, gamma } => {
                base_lr * gamma.powi((epoch / (*every).max(1)) as i32)
            }
            LrSchedule::Poly { exponent } => {
                if max_epochs == 0 {
                    return base_lr;
                }
                let done = epoch.min(max_epochs) as f64 / max_epochs as f64;
                base_lr * (1.0 - done).powf(*exponent)
            }
            LrSchedule::Cosine { warmup_epochs } => {
                let w = *warmup_epochs;
                if epoch < w {
                    return base_lr * (epoch + 1) as f64 / w as f64;
                }
                let span = max_epochs.saturating_sub(w).max(1) as f64;
                let progress = ((epoch - w) as f64 / span).min(1.0);
                base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::ReduceOnPlateau {
                factor,
                min_lr,
                state,
                ..
            } => (base_lr * factor.powi(state.reductions as i32)).max(*min_lr),
        }
    }

    /// Records a validation loss; returns whether the rate was reduced. Only
    /// `reduce_on_plateau` reacts; a NaN loss counts as no improvement.
    pub fn observe(&mut self, val_loss: f64) -> bool {
        let LrSchedule::ReduceOnPlateau {
            patience, state, ..
        } = self
        else {
            return false;
        };
        // No best yet counts as +inf (Keras and torch start there), so a NaN, even the
        // first loss, is never a new best that no later loss could beat.
        if val_loss < state.best.unwrap_or(f64::INFINITY) {
            state.best = Some(val_loss);
            state.bad_epochs = 0;
            return false;
        }
        state.bad_epochs += 1;
        if state.bad_epochs >= *patience {
            state.bad_epochs = 0;
            state.reductions += 1;
            return true;
        }
        false
    }
}

serde_kind_shorthand!(LrSchedule);

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn poly_at_start_half_and_end() {
        let s = LrSchedule::nnunet();
        assert!(close(s.lr(1e-2, 0, 1000), 1e-2));
        assert!(close(s.lr(1e-2, 500, 1000), 1e-2 * 0.5f64.powf(0.9)));
        assert!(close(s.lr(1e-2, 500, 1000), 0.005_358_867_312_681_466));
        assert_eq!(s.lr(1e-2, 1000, 1000), 0.0);
    }

    #[test]
    fn a_plain_string_is_short_for_the_kind() {
        let poly: LrSchedule = serde_json::from_str(r#""poly""#).unwrap();
        assert_eq!(poly, LrSchedule::nnunet());
        assert_eq!(
            serde_json::from_str::<LrSchedule>(r#""constant""#).unwrap(),
            LrSchedule::Constant
        );
        assert_eq!(
            serde_json::from_str::<LrSchedule>(r#""step""#).unwrap(),
            LrSchedule::Step {
                every: 30,
                gamma: 0.1
            }
        );
        assert_eq!(
            serde_json::from_str::<LrSchedule>(r#""reduce_on_plateau""#).unwrap(),
            LrSchedule::ReduceOnPlateau {
                factor: 0.1,
                patience: 10,
                min_lr: 0.0,
                state: PlateauState::default()
            }
        );
        assert_eq!(
            serde_json::to_string(&LrSchedule::Constant).unwrap(),
            r#"{"kind":"constant"}"#
        );
    }

    #[test]
    fn step_and_constant() {
        let s = LrSchedule::Step {
            every: 30,
            gamma: 0.1,
        };
        assert!(close(s.lr(1.0, 29, 100), 1.0));
        assert!(close(s.lr(1.0, 30, 100), 0.1));
        assert!(close(s.lr(1.0, 65, 100), 0.01));
        assert_eq!(LrSchedule::Constant.lr(0.3, 77, 100), 0.3);
    }

    #[test]
    fn cosine_warm_up_then_decay() {
        let s = LrSchedule::Cosine { warmup_epochs: 4 };
        assert!(close(s.lr(1.0, 0, 104), 0.25));
        assert!(close(s.lr(1.0, 3, 104), 1.0));
        assert!(close(s.lr(1.0, 4, 104), 1.0));
        assert!(close(s.lr(1.0, 54, 104), 0.5));
        assert!(s.lr(1.0, 104, 104).abs() < 1e-15);
        let plain = LrSchedule::Cosine { warmup_epochs: 0 };
        assert!(close(
            plain.lr(2.0, 25, 100),
            1.0 + (std::f64::consts::PI / 4.0).cos()
        ));
    }

    #[test]
    fn plateau_reduces_after_patience_and_stops_at_min_lr() {
        let mut s = LrSchedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 2,
            min_lr: 0.2,
            state: PlateauState::default(),
        };
        let losses = [1.0, 0.9, 0.95, 0.9, 0.8, 0.85, 0.81, 0.9, 0.9, 0.9, 0.9];
        let reduced: Vec<bool> = losses.iter().map(|&l| s.observe(l)).collect();
        assert_eq!(
            reduced,
            [false, false, false, true, false, false, true, false, true, false, true]
        );
        // Four reductions: 0.5^4 = 0.0625 of the base, floored at 0.2.
        assert!(close(s.lr(1.0, 10, 100), 0.2));
        assert!(close(s.lr(4.0, 10, 100), 0.25));
        let json = serde_json::to_string(&s).unwrap();
        let back: LrSchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let config: LrSchedule = serde_json::from_str(
            r#"{"kind":"reduce_on_plateau","factor":0.1,"patience":10,"min_lr":0.0}"#,
        )
        .unwrap();
        assert!(close(config.lr(1e-3, 0, 10), 1e-3));
    }

    #[test]
    fn a_nan_loss_is_never_the_best() {
        let mut s = LrSchedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 3,
            min_lr: 0.0,
            state: PlateauState::default(),
        };
        let losses = [f64::NAN, 0.8, 0.7, f64::NAN, 0.7, 0.75, 0.6];
        let reduced: Vec<bool> = losses.iter().map(|&l| s.observe(l)).collect();
        assert_eq!(reduced, [false, false, false, false, false, true, false]);
        let LrSchedule::ReduceOnPlateau { state, .. } = &s else {
            unreachable!()
        };
        assert_eq!((state.best, state.bad_epochs), (Some(0.6), 0));
    }

    #[test]
    fn validation_and_serde_names() {
        assert!(LrSchedule::Step {
            every: 0,
            gamma: 0.5
        }
        .validate()
        .is_err());
        assert!(LrSchedule::Poly { exponent: -1.0 }.validate().is_err());
        let plateau = LrSchedule::ReduceOnPlateau {
            factor: 1.5,
            patience: 1,
            min_lr: 0.0,
            state: PlateauState::default(),
        };
        assert!(plateau.validate().is_err());
        assert!(LrSchedule::nnunet().validate().is_ok());
        let poly: LrSchedule = serde_json::from_str(r#"{"kind":"poly"}"#).unwrap();
        assert_eq!(poly, LrSchedule::Poly { exponent: 0.9 });
        assert_eq!(
            serde_json::to_string(&LrSchedule::Constant).unwrap(),
            r#"{"kind":"constant"}"#
        );
    }
}
