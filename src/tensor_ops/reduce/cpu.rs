use super::{Axis1, ReduceKernel};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Independent f64 sums a block keeps at least: one column (a whole-tensor sum) would
/// otherwise be a single chain of dependent additions, several times slower than reading
/// the data.
const MIN_SUMS: usize = 16;

/// Column sums of a row-major `[rows, cols]` buffer, in f64 per column for accuracy.
pub(crate) fn sum_to_cols<E: Element>(x: &[E], cols: usize) -> Vec<E> {
    let rows = x.len() / cols;
    // Row blocks are summed in parallel, then the partial sums are added. Within a block,
    // `group` consecutive rows are summed side by side (`group * cols` running sums) and
    // folded into the columns at the end.
    let group = MIN_SUMS.div_ceil(cols);
    let block = ((rows / (4 * rayon::current_num_threads())).max(64)).next_multiple_of(group);
    let partials: Vec<Vec<f64>> = x
        .par_chunks(block * cols)
        .map(|chunk| {
            let mut acc = vec![0.0f64; group * cols];
            let mut groups = chunk.chunks_exact(group * cols);
            for rows in &mut groups {
                for (a, &v) in acc.iter_mut().zip(rows) {
                    *a += v.as_f64();
                }
            }
            for (a, &v) in acc.iter_mut().zip(groups.remainder()) {
                *a += v.as_f64();
            }
            let mut sums = vec![0.0f64; cols];
            for row in acc.chunks_exact(cols) {
                for (s, a) in sums.iter_mut().zip(row) {
                    *s += a;
                }
            }
            sums
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
        // Tasks of whole rows, about PAR_CHUNK elements each: a task per row made one rayon
        // item per element of a whole-tensor broadcast (the backward of a full sum).
        let inner = v.inner.max(1);
        let rows_per_task = (PAR_CHUNK / inner).max(1);
        out.par_chunks_mut(rows_per_task * inner)
            .enumerate()
            .for_each(|(task, dst)| {
                let mid = v.mid.max(1);
                let first = task * rows_per_task;
                let (mut o, mut m) = (first / mid, first % mid);
                for row in dst.chunks_exact_mut(inner) {
                    match &x[o * v.inner..(o + 1) * v.inner] {
                        [value] => row[0] = *value,
                        values => row.copy_from_slice(values),
                    }
                    m += 1;
                    if m == mid {
                        (o, m) = (o + 1, 0);
                    }
                }
            });
        Ok(out)
    }
}
