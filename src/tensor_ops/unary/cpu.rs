use super::{UnaryKernel, UnaryOp};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

impl<E: Element> UnaryKernel for CpuBackend<E> {
    fn unary_forward(&self, op: UnaryOp, x: &Vec<E>) -> Result<Vec<E>> {
        let mut y = vec![E::zero(); x.len()];
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(yc, xc)| {
                for (o, &i) in yc.iter_mut().zip(xc) {
                    *o = op.apply(i);
                }
            });
        Ok(y)
    }

    fn unary_backward(&self, op: UnaryOp, x: &Vec<E>, y: &Vec<E>, dy: &Vec<E>) -> Result<Vec<E>> {
        if x.len() != dy.len() || y.len() != dy.len() {
            return Err(Error::shape(
                "unary backward",
                format!("x {} / y {} / dy {} elements", x.len(), y.len(), dy.len()),
            ));
        }
        let mut dx = vec![E::zero(); x.len()];
        dx.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let base = c * PAR_CHUNK;
                for (k, o) in out.iter_mut().enumerate() {
                    let i = base + k;
                    *o = dy[i] * op.derivative(x[i], y[i]);
                }
            });
        Ok(dx)
    }
}
