//! One rayon task per output row (n, z, y), reading its mirrored source row.
use super::{Flip3dGeometry, FlipKernel};
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

impl<E: Element> FlipKernel for CpuBackend<E> {
    fn flip3d(&self, x: &Vec<E>, g: Flip3dGeometry) -> Result<Vec<E>> {
        if x.len() != g.shape().numel() {
            return Err(Error::shape(
                "flip3d",
                format!(
                    "input has {} elements, the geometry needs {}",
                    x.len(),
                    g.shape().numel()
                ),
            ));
        }
        let [d, h, w] = g.dims;
        let c = g.channels;
        let source = |i: usize, axis: usize| {
            if g.mirror[axis] != 0 {
                g.dims[axis] - 1 - i
            } else {
                i
            }
        };
        let mut y = vec![E::zero(); x.len()];
        y.par_chunks_mut((w * c).max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let (n, z, yy) = (row / (d * h), row / h % d, row % h);
                let src = &x[(((n * d + source(z, 0)) * h + source(yy, 1)) * w) * c..][..w * c];
                if g.mirror[2] == 0 {
                    out.copy_from_slice(src);
                    return;
                }
                for (cell, from) in out.chunks_exact_mut(c).zip(src.chunks_exact(c).rev()) {
                    cell.copy_from_slice(from);
                }
            });
        Ok(y)
    }
}
