use super::{Axis1, ReduceKernel};
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Column sums of a row-major `[rows, cols]` buffer, in f64 per column for accuracy.
pub(crate) fn sum_to_cols<E: Element>(x: &[E], cols: usize) -> Vec<E> {
    let rows = x.len() / cols;
    // Row blocks are summed in parallel, then the partial sums are added.
    let block = (rows / (4 * rayon::current_num_threads())).max(64);
    let partials: Vec<Vec<f64>> = x
        .par_chunks(block * cols)
        .map(|chunk| {
            let mut acc = vec![0.0f64; cols];
            for row in chunk.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v.as_f64();
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0.0f64; cols];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out.into_iter().map(E::of).collect()
}

impl<E: Element> ReduceKernel for CpuBackend<E> {
    fn sum_axis1(&self, x: &Vec<E>, v: Axis1) -> Result<Vec<E>> {
        if x.len() != v.numel() {
            return Err(Error::shape(
                "sum",
                format!("{} elements viewed as {v:?}", x.len()),
            ));
        }
        let mut out = Vec::with_capacity(v.outer * v.inner);
        for o in 0..v.outer {
            let slab = &x[o * v.mid * v.inner..(o + 1) * v.mid * v.inner];
            out.extend(sum_to_cols(slab, v.inner));
        }
        Ok(out)
    }

    fn broadcast_axis1(&self, x: &Vec<E>, v: Axis1) -> Result<Vec<E>> {
        if x.len() != v.outer * v.inner {
            return Err(Error::shape(
                "broadcast",
                format!("{} elements for {v:?}", x.len()),
            ));
        }
        let mut out = vec![E::zero(); v.numel()];
        out.par_chunks_mut(v.inner.max(1))
            .enumerate()
            .for_each(|(row, dst)| {
                let o = row / v.mid.max(1);
                dst.copy_from_slice(&x[o * v.inner..(o + 1) * v.inner]);
            });
        Ok(out)
    }
}
