use super::{
    check_adam_slots, check_sgd_slots, AdamHyper, AdamSlot, OptimStepKernel, SgdHyper, SgdSlot,
};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::Result;
use crate::tensor_ops::reduce::{Axis1, ReduceKernel};
use crate::tensor_ops::unary::{UnaryKernel, UnaryOp};
use rayon::prelude::*;

/// The reference: one tensor after the other.
impl<E: Element> OptimStepKernel for CpuBackend<E> {
    fn sgd_step_multi(&self, slots: &mut [SgdSlot<'_, Vec<E>>], hyper: SgdHyper) -> Result<()> {
        check_sgd_slots(slots, &hyper, Vec::len)?;
        for s in slots.iter_mut() {
            sgd_one(
                s.param,
                s.momentum_buf.as_mut().map(|b| b.as_mut_slice()),
                s.grad,
                hyper.for_tensor(s.decay),
            );
        }
        Ok(())
    }

    fn adam_step_multi(&self, slots: &mut [AdamSlot<'_, Vec<E>>], hyper: AdamHyper) -> Result<()> {
        check_adam_slots(slots, Vec::len)?;
        for s in slots.iter_mut() {
            adam_one(s.param, s.m, s.v, s.grad, hyper.for_tensor(s.decay));
        }
        Ok(())
    }

    /// Per tensor, the squares in the element type summed by the CPU `sum_axis1`, then the
    /// tensors' sums added in f64 in the order given (what clipping has always computed).
    fn sum_squares_multi(&self, tensors: &[&Vec<E>]) -> Result<f64> {
        let mut total = 0.0;
        for t in tensors {
            let squares = self.unary_forward(UnaryOp::Square, t)?;
            let view = Axis1 {
                outer: 1,
                mid: t.len(),
                inner: 1,
            };
            total += self.sum_axis1(&squares, view)?[0].as_f64();
        }
        Ok(total)
    }

    fn scale_multi(&self, tensors: &mut [&mut Vec<E>], factor: f64) -> Result<()> {
        let f = E::of(factor);
        for t in tensors.iter_mut() {
            t.par_chunks_mut(PAR_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x = *x * f));
        }
        Ok(())
    }
}

/// One tensor's SGD update (lengths checked by the caller): the reference arithmetic.
fn sgd_one<E: Element>(param: &mut [E], momentum_buf: Option<&mut [E]>, grad: &[E], h: SgdHyper) {
    let decayed = |p: f64, g: E| g.as_f64() + h.weight_decay * p;
    match momentum_buf {
        None => {
            param
                .par_chunks_mut(PAR_CHUNK)
                .zip(grad.par_chunks(PAR_CHUNK))
                .for_each(|(pc, gc)| {
                    for (p, &g) in pc.iter_mut().zip(gc) {
                        let pv = p.as_f64();
                        *p = E::of(pv - h.lr * decayed(pv, g));
                    }
                });
        }
        Some(buf) => {
            param
                .par_chunks_mut(PAR_CHUNK)
                .zip(buf.par_chunks_mut(PAR_CHUNK))
                .zip(grad.par_chunks(PAR_CHUNK))
                .for_each(|((pc, bc), gc)| {
                    for ((p, b), &g) in pc.iter_mut().zip(bc).zip(gc) {
                        let pv = p.as_f64();
                        let g = decayed(pv, g);
                        let bv = h.momentum * b.as_f64() + g;
                        *b = E::of(bv);
                        let dir = if h.nesterov != 0 {
                            g + h.momentum * bv
                        } else {
                            bv
                        };
                        *p = E::of(pv - h.lr * dir);
                    }
                });
        }
    }
}

/// One tensor's Adam update (lengths checked by the caller): the reference arithmetic.
fn adam_one<E: Element>(param: &mut [E], m: &mut [E], v: &mut [E], grad: &[E], h: AdamHyper) {
    let decay = 1.0 - h.lr * h.decoupled_decay;
    param
        .par_chunks_mut(PAR_CHUNK)
        .zip(m.par_chunks_mut(PAR_CHUNK))
        .zip(v.par_chunks_mut(PAR_CHUNK))
        .zip(grad.par_chunks(PAR_CHUNK))
        .for_each(|(((pc, mc), vc), gc)| {
            for (((p, m), v), &g) in pc.iter_mut().zip(mc).zip(vc).zip(gc) {
                if h.lazy != 0 && g == E::zero() {
                    continue;
                }
                let pv = p.as_f64();
                let g = g.as_f64() + h.l2 * pv;
                let mv = h.beta1 * m.as_f64() + (1.0 - h.beta1) * g;
                let vv = h.beta2 * v.as_f64() + (1.0 - h.beta2) * g * g;
                *m = E::of(mv);
                *v = E::of(vv);
                let step = (mv / h.bias_correction1) / ((vv / h.bias_correction2).sqrt() + h.eps);
                *p = E::of(pv * decay - h.lr * step);
            }
        });
}
