//! An optimiser named in a configuration, e.g. `{"kind": "sgd"}` (nnU-Net's settings) or
//! `{"kind": "adam", "eps": 1e-8}`; omitted fields take the documented defaults.
use super::{Adam, AdamW, LazyAdam, Optimizer, Sgd};
use crate::backend::Backend;
use crate::error::Result;

// `remote = "Self"`: the derived code becomes inherent functions, which the `Serialize`
// and `Deserialize` impls below call; those accept a plain string as `{"kind": ...}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "snake_case")]
pub enum OptimizerSpec {
    /// Defaults from nnU-Net: momentum 0.99, Nesterov, weight decay 3e-5 (lr 1e-2).
    Sgd {
        #[serde(default = "sgd_momentum")]
        momentum: f64,
        #[serde(default = "yes")]
        nesterov: bool,
        #[serde(default = "sgd_weight_decay")]
        weight_decay: f64,
    },
    /// Defaults from Keras: betas 0.9 / 0.999, eps 1e-7, no L2 term (lr 1e-3).
    Adam {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "keras_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// Defaults from Keras' AdamW: as Adam, decoupled weight decay 0.004 (lr 1e-3).
    #[serde(rename = "adamw")]
    AdamW {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "keras_eps")]
        eps: f64,
        #[serde(default = "adamw_weight_decay")]
        weight_decay: f64,
    },
    /// Defaults as Adam (lr 1e-3).
    LazyAdam {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "keras_eps")]
        eps: f64,
    },
}

fn sgd_momentum() -> f64 {
    0.99
}
fn yes() -> bool {
    true
}
fn sgd_weight_decay() -> f64 {
    3e-5
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn keras_eps() -> f64 {
    1e-7
}
fn adamw_weight_decay() -> f64 {
    0.004
}

impl OptimizerSpec {
    /// nnU-Net's optimiser: SGD, Nesterov momentum 0.99, weight decay 3e-5.
    pub fn nnunet_sgd() -> Self {
        OptimizerSpec::Sgd {
            momentum: sgd_momentum(),
            nesterov: true,
            weight_decay: sgd_weight_decay(),
        }
    }

    /// Keras' Adam defaults.
    pub fn keras_adam() -> Self {
        OptimizerSpec::Adam {
            beta1: beta1(),
            beta2: beta2(),
            eps: keras_eps(),
            weight_decay: 0.0,
        }
    }

    /// The usual starting learning rate: 1e-2 for SGD (nnU-Net), 1e-3 for the Adam family
    /// (Keras).
    pub fn default_lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { .. } => 1e-2,
            _ => 1e-3,
        }
    }

    /// The same optimiser with another weight decay (L2 in the gradient for SGD and Adam,
    /// decoupled for AdamW); lazy Adam has none and refuses.
    pub fn with_weight_decay(self, wd: f64) -> crate::error::Result<Self> {
        Ok(match self {
            OptimizerSpec::Sgd {
                momentum, nesterov, ..
            } => OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay: wd,
            },
            OptimizerSpec::Adam {
                beta1, beta2, eps, ..
            } => OptimizerSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            },
            OptimizerSpec::AdamW {
                beta1, beta2, eps, ..
            } => OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            },
            OptimizerSpec::LazyAdam { .. } => {
                return Err(crate::error::Error::config(
                    "weight-decay",
                    "lazy Adam takes no weight decay; use --l2",
                ))
            }
        })
    }

    /// The optimiser, with fresh state; fails on out-of-range coefficients.
    pub fn build<B: Backend>(&self) -> Result<Box<dyn Optimizer<B>>> {
        Ok(match *self {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => Box::new(Sgd::new(momentum, nesterov, weight_decay)?),
            OptimizerSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(Adam::new(beta1, beta2, eps, weight_decay)?),
            OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(AdamW::new(beta1, beta2, eps, weight_decay)?),
            OptimizerSpec::LazyAdam { beta1, beta2, eps } => {
                Box::new(LazyAdam::new(beta1, beta2, eps)?)
            }
        })
    }
}

serde_kind_shorthand!(OptimizerSpec);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn a_plain_string_is_short_for_the_kind_with_defaults() {
        let adam: OptimizerSpec = serde_json::from_str(r#""adam""#).unwrap();
        let full: OptimizerSpec = serde_json::from_str(r#"{"kind":"adam"}"#).unwrap();
        assert_eq!(adam, full);
        assert!(matches!(adam, OptimizerSpec::Adam { eps, .. } if eps == 1e-7));
        assert_eq!(
            serde_json::to_string(&adam).unwrap(),
            serde_json::to_string(&full).unwrap()
        );
    }

    #[test]
    fn defaults_fill_omitted_fields() {
        let sgd: OptimizerSpec = serde_json::from_str(r#"{"kind":"sgd"}"#).unwrap();
        assert_eq!(sgd, OptimizerSpec::nnunet_sgd());
        let adam: OptimizerSpec = serde_json::from_str(r#"{"kind":"adam"}"#).unwrap();
        assert_eq!(adam, OptimizerSpec::keras_adam());
        let adamw: OptimizerSpec = serde_json::from_str(r#"{"kind":"adamw","eps":1e-8}"#).unwrap();
        assert_eq!(
            adamw,
            OptimizerSpec::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.004
            }
        );
        let lazy: OptimizerSpec = serde_json::from_str(r#"{"kind":"lazy_adam"}"#).unwrap();
        assert_eq!(lazy.build::<Cpu>().unwrap().kind(), "lazy_adam");
        assert_eq!(adamw.build::<Cpu>().unwrap().kind(), "adamw");
        assert_eq!(sgd.default_lr(), 1e-2);
        assert_eq!(adam.default_lr(), 1e-3);
    }

    #[test]
    fn out_of_range_coefficients_fail_to_build() {
        let bad = [
            OptimizerSpec::Sgd {
                momentum: 1.0,
                nesterov: true,
                weight_decay: 0.0,
            },
            OptimizerSpec::Sgd {
                momentum: 0.0,
                nesterov: true,
                weight_decay: 0.0,
            },
            OptimizerSpec::Adam {
                beta1: 0.9,
                beta2: 1.0,
                eps: 1e-7,
                weight_decay: 0.0,
            },
            OptimizerSpec::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 0.0,
                weight_decay: 0.0,
            },
            OptimizerSpec::LazyAdam {
                beta1: -0.1,
                beta2: 0.999,
                eps: 1e-7,
            },
        ];
        for spec in bad {
            assert!(spec.build::<Cpu>().is_err(), "{spec:?}");
        }
    }
}
