use super::{check_tiling, BinaryKernel, BinaryOp};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::Result;
use crate::tensor_ops::reduce::sum_to_cols;
use rayon::prelude::*;

impl<E: Element> BinaryKernel for CpuBackend<E> {
    fn binary_forward(&self, op: BinaryOp, a: &Vec<E>, b: &Vec<E>) -> Result<Vec<E>> {
        check_tiling(a.len(), b.len())?;
        let nb = b.len();
        let mut y = vec![E::zero(); a.len()];
        y.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let base = c * PAR_CHUNK;
                for (k, o) in out.iter_mut().enumerate() {
                    let i = base + k;
                    *o = op.apply(a[i], b[i % nb]);
                }
            });
        Ok(y)
    }

    fn binary_backward(
        &self,
        op: BinaryOp,
        a: &Vec<E>,
        b: &Vec<E>,
        dy: &Vec<E>,
        needs: [bool; 2],
    ) -> Result<(Option<Vec<E>>, Option<Vec<E>>)> {
        check_tiling(a.len(), b.len())?;
        let nb = b.len();
        let partial = |want_b: bool| -> Vec<E> {
            let mut g = vec![E::zero(); a.len()];
            g.par_chunks_mut(PAR_CHUNK)
                .enumerate()
                .for_each(|(c, out)| {
                    let base = c * PAR_CHUNK;
                    for (k, o) in out.iter_mut().enumerate() {
                        let i = base + k;
                        let (pa, pb) = op.partials(a[i], b[i % nb]);
                        *o = dy[i] * if want_b { pb } else { pa };
                    }
                });
            g
        };
        let da = needs[0].then(|| partial(false));
        let db = needs[1].then(|| {
            let full = partial(true);
            if nb == a.len() {
                full
            } else {
                sum_to_cols(&full, nb)
            }
        });
        Ok((da, db))
    }
}
