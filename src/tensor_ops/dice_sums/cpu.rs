use super::{DiceSumsKernel, DiceSumsShape, SUM_P, SUM_PT, SUM_T};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::Result;
use rayon::prelude::*;

/// Voxels per partial sum. Fixed (not derived from the thread count) so the order of
/// additions, and so the result, is the same on any machine.
const CHUNK_VOXELS: usize = 4096;

impl<E: Element> DiceSumsKernel for CpuBackend<E> {
    fn dice_sums(&self, p: &Vec<E>, t: &Vec<E>, s: DiceSumsShape) -> Result<Vec<E>> {
        s.check(p.len(), t.len(), None)?;
        if s.sums_len() == 0 {
            return Ok(Vec::new());
        }
        let (c, row_voxels) = (s.c, s.row_voxels());
        let chunks = row_voxels.div_ceil(CHUNK_VOXELS);
        // f64 partials per (row, chunk), each [c, 3], then added per row in chunk order.
        let partials: Vec<Vec<f64>> = (0..s.rows() * chunks)
            .into_par_iter()
            .map(|rc| {
                let (row, chunk) = (rc / chunks, rc % chunks);
                let first = row * row_voxels + chunk * CHUNK_VOXELS;
                let last = (first + CHUNK_VOXELS).min((row + 1) * row_voxels);
                let mut acc = vec![0.0f64; 3 * c];
                let (pc, tc) = (&p[first * c..last * c], &t[first * c..last * c]);
                for (pv, tv) in pc.chunks_exact(c).zip(tc.chunks_exact(c)) {
                    for (k, (&pk, &tk)) in pv.iter().zip(tv).enumerate() {
                        let (pk, tk) = (pk.as_f64(), tk.as_f64());
                        acc[3 * k + SUM_PT] += pk * tk;
                        acc[3 * k + SUM_P] += pk;
                        acc[3 * k + SUM_T] += tk;
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0.0f64; s.sums_len()];
        for (row, sums) in out.chunks_exact_mut(3 * c).enumerate() {
            for part in &partials[row * chunks..(row + 1) * chunks] {
                for (o, v) in sums.iter_mut().zip(part) {
                    *o += v;
                }
            }
        }
        Ok(out.into_iter().map(E::of).collect())
    }

    fn dice_sums_backward(&self, t: &Vec<E>, grad: &Vec<E>, s: DiceSumsShape) -> Result<Vec<E>> {
        s.check(t.len(), t.len(), Some(grad.len()))?;
        let row_len = s.row_voxels() * s.c;
        let mut dp = vec![E::zero(); t.len()];
        dp.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(chunk, out)| {
                let base = chunk * PAR_CHUNK;
                for (k, o) in out.iter_mut().enumerate() {
                    let i = base + k;
                    let g = 3 * ((i / row_len) * s.c + i % s.c);
                    *o =
                        E::of(grad[g + SUM_PT].as_f64() * t[i].as_f64() + grad[g + SUM_P].as_f64());
                }
            });
        Ok(dp)
    }
}
