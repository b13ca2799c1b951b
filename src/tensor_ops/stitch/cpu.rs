//! Windows one after another; within a window, one rayon task per volume plane (z) it
//! covers, so no two tasks touch the same voxel and the order of additions per voxel is
//! the window order.
use super::{check_divide_lengths, StitchGeometry, StitchKernel};
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::Result;
use rayon::prelude::*;

impl<E: Element> StitchKernel for CpuBackend<E> {
    fn accumulate_windows(
        &self,
        acc: &mut Vec<E>,
        norm: &mut Vec<E>,
        logits: &Vec<E>,
        weights: &Vec<E>,
        g: &StitchGeometry,
    ) -> Result<()> {
        g.check_lengths(acc.len(), norm.len(), logits.len(), weights.len())?;
        let ([_, h, w], [_, ph, pw], k) = (g.volume, g.patch, g.channels);
        let window = g.window_cells() * k;
        let plane = h * w;
        for (i, start) in g.starts.iter().enumerate() {
            let extent = g.extent(i);
            let win = &logits[i * window..(i + 1) * window];
            let planes = start[0]..start[0] + extent[0];
            acc[planes.start * plane * k..planes.end * plane * k]
                .par_chunks_mut(plane * k)
                .zip(norm[planes.start * plane..planes.end * plane].par_chunks_mut(plane))
                .enumerate()
                .for_each(|(z, (acc_plane, norm_plane))| {
                    for y in 0..extent[1] {
                        for x in 0..extent[2] {
                            let p = (z * ph + y) * pw + x;
                            let v = (start[1] + y) * w + start[2] + x;
                            let wt = weights[p];
                            norm_plane[v] = norm_plane[v] + wt;
                            let src = &win[p * k..(p + 1) * k];
                            for (a, &s) in acc_plane[v * k..(v + 1) * k].iter_mut().zip(src) {
                                *a = *a + wt * s;
                            }
                        }
                    }
                });
        }
        Ok(())
    }

    fn divide_by_weights(&self, acc: &mut Vec<E>, norm: &Vec<E>, channels: usize) -> Result<()> {
        check_divide_lengths(acc.len(), norm.len(), channels)?;
        if channels == 0 {
            return Ok(());
        }
        acc.par_chunks_mut(channels)
            .zip(norm.par_iter())
            .for_each(|(row, &n)| row.iter_mut().for_each(|a| *a = *a / n));
        Ok(())
    }
}
