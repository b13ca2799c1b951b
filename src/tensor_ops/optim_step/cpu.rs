use super::{AdamHyper, OptimStepKernel, SgdHyper};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

fn check_len(op: &str, what: &str, want: usize, got: usize) -> Result<()> {
    if want != got {
        return Err(Error::shape(
            "optim_step",
            format!("{op}: {what} has {got} elements, the parameter {want}"),
        ));
    }
    Ok(())
}

impl<E: Element> OptimStepKernel for CpuBackend<E> {
    fn sgd_step(
        &self,
        param: &mut Vec<E>,
        momentum_buf: Option<&mut Vec<E>>,
        grad: &Vec<E>,
        h: SgdHyper,
    ) -> Result<()> {
        let n = param.len();
        check_len("sgd", "the gradient", n, grad.len())?;
        let decayed = |p: f64, g: E| g.as_f64() + h.weight_decay * p;
        match momentum_buf {
            None if h.momentum != 0.0 => Err(Error::shape(
                "optim_step",
                "sgd: momentum without a momentum buffer",
            )),
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
                Ok(())
            }
            Some(buf) => {
                check_len("sgd", "the momentum buffer", n, buf.len())?;
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
                Ok(())
            }
        }
    }

    fn adam_step(
        &self,
        param: &mut Vec<E>,
        m: &mut Vec<E>,
        v: &mut Vec<E>,
        grad: &Vec<E>,
        h: AdamHyper,
    ) -> Result<()> {
        let n = param.len();
        check_len("adam", "the gradient", n, grad.len())?;
        check_len("adam", "the first moment", n, m.len())?;
        check_len("adam", "the second moment", n, v.len())?;
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
                    let step =
                        (mv / h.bias_correction1) / ((vv / h.bias_correction2).sqrt() + h.eps);
                    *p = E::of(pv * decay - h.lr * step);
                }
            });
        Ok(())
    }
}
