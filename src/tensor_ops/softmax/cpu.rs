use super::{SoftmaxKernel, SoftmaxOp};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

fn check_rows(op: &str, len: usize, channels: usize) -> Result<()> {
    if channels == 0 || !len.is_multiple_of(channels) {
        return Err(Error::shape(
            "softmax",
            format!("{op}: {len} elements are not rows of {channels} channels"),
        ));
    }
    Ok(())
}

/// Rows per rayon task: about `PAR_CHUNK` elements.
fn rows_per_task(channels: usize) -> usize {
    (PAR_CHUNK / channels).max(1)
}

impl<E: Element> SoftmaxKernel for CpuBackend<E> {
    fn softmax_forward(&self, op: SoftmaxOp, x: &Vec<E>, channels: usize) -> Result<Vec<E>> {
        check_rows("forward", x.len(), channels)?;
        let mut y = vec![E::zero(); x.len()];
        let chunk = rows_per_task(channels) * channels;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_exact_mut(channels).zip(xc.chunks_exact(channels)) {
                    let max = xr.iter().copied().fold(E::neg_infinity(), E::max);
                    let mut total = E::zero();
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = (v - max).exp();
                        total = total + *o;
                    }
                    match op {
                        SoftmaxOp::Softmax => yr.iter_mut().for_each(|o| *o = *o / total),
                        SoftmaxOp::LogSoftmax => {
                            let log_total = total.ln();
                            for (o, &v) in yr.iter_mut().zip(xr) {
                                *o = v - max - log_total;
                            }
                        }
                    }
                }
            });
        Ok(y)
    }

    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &Vec<E>,
        dy: &Vec<E>,
        channels: usize,
    ) -> Result<Vec<E>> {
        check_rows("backward", y.len(), channels)?;
        if dy.len() != y.len() {
            return Err(Error::shape(
                "softmax",
                format!("backward: y {} vs dy {} elements", y.len(), dy.len()),
            ));
        }
        let mut dx = vec![E::zero(); y.len()];
        let chunk = rows_per_task(channels) * channels;
        dx.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .for_each(|(dxc, (yc, dyc))| {
                let rows = dxc
                    .chunks_exact_mut(channels)
                    .zip(yc.chunks_exact(channels).zip(dyc.chunks_exact(channels)));
                for (dxr, (yr, dyr)) in rows {
                    match op {
                        SoftmaxOp::Softmax => {
                            let dot = yr.iter().zip(dyr).fold(E::zero(), |a, (&p, &g)| a + p * g);
                            for ((o, &p), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
                                *o = p * (g - dot);
                            }
                        }
                        SoftmaxOp::LogSoftmax => {
                            let total = dyr.iter().copied().fold(E::zero(), |a, g| a + g);
                            for ((o, &lp), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
                                *o = g - lp.exp() * total;
                            }
                        }
                    }
                }
            });
        Ok(dx)
    }
}
