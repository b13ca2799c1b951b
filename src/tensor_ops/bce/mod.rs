//! Binary cross-entropy with logits, fused: one pass gives the weighted mean loss, one
//! pass gives its gradients, and the sigmoid is never stored. Per element, with logit x,
//! target t and positive weight p (TensorFlow's `weighted_cross_entropy_with_logits`):
//! `l = (1 - t) x + (1 + (p - 1) t) (log(1 + exp(-|x|)) + max(-x, 0))`,
//! which for p = 1 is `max(x, 0) - x t + log(1 + exp(-|x|))`, finite for any x.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// Hyper-parameters of one BCE launch (shared in layout with a device kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BceParams {
    /// Multiplies the positive (t = 1) term; 1 for plain BCE.
    pub pos_weight: f64,
    /// The loss is `scale * sum_i w_i l_i`: 1 / element count gives the mean.
    pub scale: f64,
    /// Elements sharing one weight: 1 for an element-wise weight map, C for a per-voxel
    /// map broadcast over C channels (weight index = element index / group).
    pub weight_group: u64,
}

pub trait BceKernel: BackendBase {
    /// The one-element buffer `scale * sum_i w_i l(x_i, t_i)` (`w_i = 1` without weights).
    fn bce_forward(
        &self,
        x: &Self::Storage,
        t: &Self::Storage,
        w: Option<&Self::Storage>,
        params: BceParams,
    ) -> Result<Self::Storage>;
    /// Gradients for the inputs flagged in `needs` (logits, targets, weights), given the
    /// one-element upstream gradient `dy`. A grouped weight's gradient sums its group.
    #[allow(clippy::type_complexity)]
    fn bce_backward(
        &self,
        x: &Self::Storage,
        t: &Self::Storage,
        w: Option<&Self::Storage>,
        params: BceParams,
        dy: &Self::Storage,
        needs: [bool; 3],
    ) -> Result<(
        Option<Self::Storage>,
        Option<Self::Storage>,
        Option<Self::Storage>,
    )>;
}

/// The element group a weight map of shape `w` covers in logits of shape `x`: 1 when the
/// shapes are equal, C when `w` is `x`'s shape with the last axis (C channels) set to 1.
fn weight_group(x: &Shape, w: &Shape) -> Result<u64> {
    if x == w {
        return Ok(1);
    }
    let (xd, wd) = (x.dims(), w.dims());
    let per_voxel = !xd.is_empty()
        && xd.len() == wd.len()
        && xd[..xd.len() - 1] == wd[..wd.len() - 1]
        && wd[wd.len() - 1] == 1;
    if per_voxel {
        return Ok(x.last() as u64);
    }
    Err(Error::shape(
        "bce_with_logits",
        format!("weight map of shape {w} is neither the logits' shape {x} nor it with one channel"),
    ))
}

struct BceBackward<B: Backend> {
    x: Tensor<B>,
    t: Tensor<B>,
    w: Option<Tensor<B>>,
    params: BceParams,
}

impl<B: Backend> BackwardOp<B> for BceBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = self.x.backend();
        let (dx, dt, dw) = be.bce_backward(
            self.x.storage(),
            self.t.storage(),
            self.w.as_ref().map(|w| w.storage()),
            self.params,
            grad.storage(),
            [needs[0], needs[1], needs.get(2).copied().unwrap_or(false)],
        )?;
        let wrap = |s: Option<B::Storage>, shape: &Shape| {
            s.map(|s| Tensor::from_storage(be, shape.clone(), s))
                .transpose()
        };
        let mut out = vec![wrap(dx, self.x.shape())?, wrap(dt, self.t.shape())?];
        if let Some(w) = &self.w {
            out.push(wrap(dw, w.shape())?);
        }
        Ok(out)
    }
}

impl<B: Backend> Var<B> {
    /// Mean over elements of `weight * bce(self, targets)` with the positive term scaled by
    /// `pos_weight`. `self` holds logits; `targets` has the same shape (values in [0, 1]);
    /// `weight` is element-wise (same shape) or per voxel (last axis 1, broadcast over
    /// channels). Gradients flow to all three.
    pub fn bce_with_logits(
        &self,
        targets: &Var<B>,
        pos_weight: f64,
        weight: Option<&Var<B>>,
    ) -> Result<Var<B>> {
        self.shape().expect_eq(targets.shape(), "bce_with_logits")?;
        if !pos_weight.is_finite() || pos_weight < 0.0 {
            return Err(Error::config(
                "pos_weight",
                format!("{pos_weight} (must be finite and non-negative)"),
            ));
        }
        let group = match weight {
            Some(w) => weight_group(self.shape(), w.shape())?,
            None => 1,
        };
        let params = BceParams {
            pos_weight,
            scale: 1.0 / self.value().numel().max(1) as f64,
            weight_group: group,
        };
        let (x, t) = (self.value(), targets.value());
        let y = x.backend().bce_forward(
            x.storage(),
            t.storage(),
            weight.map(|w| w.value().storage()),
            params,
        )?;
        let y = Tensor::from_storage(x.backend(), Shape::scalar(), y)?;
        let mut inputs = vec![self, targets];
        inputs.extend(weight);
        Ok(Var::from_op("bce_with_logits", y, &inputs, || {
            BceBackward {
                x: x.clone(),
                t: t.clone(),
                w: weight.map(|w| w.value().clone()),
                params,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    fn reference(x: f64, t: f64, p: f64) -> f64 {
        let s = 1.0 / (1.0 + (-x).exp());
        -(p * t * s.ln() + (1.0 - t) * (1.0 - s).ln())
    }

    #[test]
    fn matches_the_textbook_formula_and_ln2_at_zero() {
        let b = Cpu64::new();
        let xs = [0.0, 1.5, -2.0, 0.3];
        let ts = [1.0, 0.0, 1.0, 0.25];
        let x = Var::constant(Tensor::from_host(&b, [4], &xs).unwrap());
        let t = Var::constant(Tensor::from_host(&b, [4], &ts).unwrap());
        for p in [1.0, 3.0] {
            let got = x
                .bce_with_logits(&t, p, None)
                .unwrap()
                .value()
                .item()
                .unwrap();
            let want: f64 = xs
                .iter()
                .zip(ts)
                .map(|(&x, t)| reference(x, t, p))
                .sum::<f64>()
                / 4.0;
            assert!((got - want).abs() < 1e-12, "p {p}: {got} vs {want}");
        }
        let zero = Var::constant(Tensor::zeros(&b, [3]).unwrap());
        let half = Var::constant(Tensor::full(&b, [3], 0.5).unwrap());
        let l = zero
            .bce_with_logits(&half, 1.0, None)
            .unwrap()
            .value()
            .item()
            .unwrap();
        assert!((l - std::f64::consts::LN_2).abs() < 1e-15);
    }

    #[test]
    fn huge_logits_stay_finite() {
        let b = Cpu::new();
        let x =
            Var::constant(Tensor::from_host(&b, [4], &[1e30f32, -1e30, 500.0, -500.0]).unwrap());
        let t = Var::constant(Tensor::from_host(&b, [4], &[1.0f32, 0.0, 0.0, 1.0]).unwrap());
        let l = x
            .bce_with_logits(&t, 2.0, None)
            .unwrap()
            .value()
            .item()
            .unwrap();
        // Two confident right answers (loss 0) and two wrong by 500 (loss 500, 2 * 500).
        assert!((l - 1500.0 / 4.0).abs() < 1e-3, "{l}");
    }

    #[test]
    fn per_voxel_weights_broadcast_over_channels() {
        let b = Cpu64::new();
        let x =
            Var::constant(Tensor::from_host(&b, [1, 1, 1, 2, 2], &[0.5, -1.0, 2.0, 0.1]).unwrap());
        let t =
            Var::constant(Tensor::from_host(&b, [1, 1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]).unwrap());
        let wv = Var::constant(Tensor::from_host(&b, [1, 1, 1, 2, 1], &[2.0, 0.5]).unwrap());
        let we =
            Var::constant(Tensor::from_host(&b, [1, 1, 1, 2, 2], &[2.0, 2.0, 0.5, 0.5]).unwrap());
        let a = x
            .bce_with_logits(&t, 1.0, Some(&wv))
            .unwrap()
            .value()
            .item()
            .unwrap();
        let e = x
            .bce_with_logits(&t, 1.0, Some(&we))
            .unwrap()
            .value()
            .item()
            .unwrap();
        let want = (2.0 * reference(0.5, 1.0, 1.0)
            + 2.0 * reference(-1.0, 0.0, 1.0)
            + 0.5 * reference(2.0, 0.0, 1.0)
            + 0.5 * reference(0.1, 1.0, 1.0))
            / 4.0;
        assert!(
            (a - want).abs() < 1e-12 && (e - want).abs() < 1e-12,
            "{a} {e} {want}"
        );
        let bad = Var::constant(Tensor::zeros(&b, [1, 1, 1, 1, 2]).unwrap());
        let err = x
            .bce_with_logits(&t, 1.0, Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[1, 1, 1, 1, 2]") && err.contains("[1, 1, 1, 2, 2]"),
            "{err}"
        );
    }

    #[test]
    fn gradients_for_logits_targets_and_weights() {
        let b = Cpu64::new();
        let n = 2 * 2 * 3 * 3;
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.83).sin() * 3.0).collect();
        let t: Vec<f64> = (0..n)
            .map(|i| ((i as f64 * 0.41).cos() + 1.0) / 2.0)
            .collect();
        let we: Vec<f64> = (0..n).map(|i| 0.5 + (i % 5) as f64 * 0.3).collect();
        let wv: Vec<f64> = (0..n / 3).map(|i| 0.2 + (i % 4) as f64 * 0.7).collect();
        let x = Tensor::from_host(&b, [2, 1, 2, 3, 3], &x).unwrap();
        let t = Tensor::from_host(&b, [2, 1, 2, 3, 3], &t).unwrap();
        let we = Tensor::from_host(&b, [2, 1, 2, 3, 3], &we).unwrap();
        let wv = Tensor::from_host(&b, [2, 1, 2, 3, 1], &wv).unwrap();
        for p in [1.0, 2.5] {
            check_gradients(
                &[x.clone(), t.clone()],
                |v| v[0].bce_with_logits(&v[1], p, None),
                1e-6,
                1e-7,
                64,
            )
            .unwrap_or_else(|e| panic!("pos_weight {p}: {e}"));
            for w in [&we, &wv] {
                check_gradients(
                    &[x.clone(), t.clone(), w.clone()],
                    |v| v[0].bce_with_logits(&v[1], p, Some(&v[2])),
                    1e-6,
                    1e-7,
                    64,
                )
                .unwrap_or_else(|e| panic!("pos_weight {p}, weight {}: {e}", w.shape()));
            }
        }
    }
}
