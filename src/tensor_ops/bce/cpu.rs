use super::{BceKernel, BceParams};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// log(1 + exp(-x)) without overflow.
fn softplus_neg(x: f64) -> f64 {
    (-x.abs()).exp().ln_1p() + (-x).max(0.0)
}

fn loss(x: f64, t: f64, p: f64) -> f64 {
    (1.0 - t) * x + (1.0 + (p - 1.0) * t) * softplus_neg(x)
}

/// (dl/dx, dl/dt).
fn partials(x: f64, t: f64, p: f64) -> (f64, f64) {
    let sig_neg = crate::tensor_ops::unary::sigmoid(-x);
    (
        (1.0 - t) - (1.0 + (p - 1.0) * t) * sig_neg,
        -x + (p - 1.0) * softplus_neg(x),
    )
}

fn check<E>(x: &[E], t: &[E], w: Option<&Vec<E>>, p: &BceParams) -> Result<()> {
    let group = p.weight_group.max(1) as usize;
    let weights_fit = w.is_none_or(|w| w.len() * group == x.len());
    if x.len() != t.len() || !weights_fit || p.weight_group == 0 {
        return Err(Error::shape(
            "bce_with_logits",
            format!(
                "logits {} / targets {} / weights {:?} elements, weight group {}",
                x.len(),
                t.len(),
                w.map(|w| w.len()),
                p.weight_group
            ),
        ));
    }
    Ok(())
}

impl<E: Element> BceKernel for CpuBackend<E> {
    fn bce_forward(
        &self,
        x: &Vec<E>,
        t: &Vec<E>,
        w: Option<&Vec<E>>,
        p: BceParams,
    ) -> Result<Vec<E>> {
        check(x, t, w, &p)?;
        let group = p.weight_group as usize;
        // Per-chunk partial sums added in chunk order: the same total on any thread count.
        let partials: Vec<f64> = x
            .par_chunks(PAR_CHUNK)
            .enumerate()
            .map(|(c, xc)| {
                let base = c * PAR_CHUNK;
                let mut acc = 0.0;
                for (k, &xv) in xc.iter().enumerate() {
                    let i = base + k;
                    let weight = w.map_or(1.0, |w| w[i / group].as_f64());
                    acc += weight * loss(xv.as_f64(), t[i].as_f64(), p.pos_weight);
                }
                acc
            })
            .collect();
        Ok(vec![E::of(partials.iter().sum::<f64>() * p.scale)])
    }

    fn bce_backward(
        &self,
        x: &Vec<E>,
        t: &Vec<E>,
        w: Option<&Vec<E>>,
        p: BceParams,
        dy: &Vec<E>,
        needs: [bool; 3],
    ) -> Result<(Option<Vec<E>>, Option<Vec<E>>, Option<Vec<E>>)> {
        check(x, t, w, &p)?;
        let Some(&dy) = dy.first() else {
            return Err(Error::shape("bce_with_logits", "empty upstream gradient"));
        };
        let g = dy.as_f64() * p.scale;
        let group = p.weight_group as usize;
        let elementwise = |f: &(dyn Fn(usize) -> f64 + Sync)| -> Vec<E> {
            let mut out = vec![E::zero(); x.len()];
            out.par_chunks_mut(PAR_CHUNK)
                .enumerate()
                .for_each(|(c, oc)| {
                    for (k, o) in oc.iter_mut().enumerate() {
                        *o = E::of(f(c * PAR_CHUNK + k));
                    }
                });
            out
        };
        let weight = |i: usize| w.map_or(1.0, |w| w[i / group].as_f64());
        let dx = needs[0].then(|| {
            elementwise(&|i| g * weight(i) * partials(x[i].as_f64(), t[i].as_f64(), p.pos_weight).0)
        });
        let dt = needs[1].then(|| {
            elementwise(&|i| g * weight(i) * partials(x[i].as_f64(), t[i].as_f64(), p.pos_weight).1)
        });
        let dw = match (needs[2], w) {
            (true, Some(w)) => {
                let mut out = vec![E::zero(); w.len()];
                out.par_iter_mut().enumerate().for_each(|(j, o)| {
                    let sum: f64 = (j * group..(j + 1) * group)
                        .map(|i| loss(x[i].as_f64(), t[i].as_f64(), p.pos_weight))
                        .sum();
                    *o = E::of(g * sum);
                });
                Some(out)
            }
            _ => None,
        };
        Ok((dx, dt, dw))
    }
}
