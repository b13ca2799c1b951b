//! Forward passes run one task per output row (n, z, y). Backward passes gather into one
//! input row per task from the output cells that read it, so writes never collide.
use super::{linear_taps, Resample3dGeometry, UpsampleKernel};
use crate::backend::cpu::ndhwc_offset as offset;
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::{check_len, Error, Result};
use rayon::prelude::*;

fn check_multiple(g: &Resample3dGeometry) -> Result<[usize; 3]> {
    if (0..3).any(|a| !g.output[a].is_multiple_of(g.input[a])) {
        return Err(Error::shape(
            "upsample_nearest3d",
            format!(
                "output size {:?} is not a whole multiple of input size {:?}",
                g.output, g.input
            ),
        ));
    }
    Ok([0, 1, 2].map(|a| g.output[a] / g.input[a]))
}

/// Per output cell along one axis: both source cells with their weights.
fn taps<E: Element>(n_in: usize, n_out: usize) -> Vec<[(usize, E); 2]> {
    (0..n_out)
        .map(|o| {
            let (i0, i1, w1) = linear_taps(o, n_in, n_out);
            [(i0, E::of(1.0 - w1)), (i1, E::of(w1))]
        })
        .collect()
}

/// Per input cell along one axis: the output cells that read it, with their weights
/// (the transpose of [`taps`]; zero weights left out).
fn readers<E: Element>(n_in: usize, n_out: usize) -> Vec<Vec<(usize, E)>> {
    let mut by_input = vec![Vec::new(); n_in];
    for (o, pair) in taps::<E>(n_in, n_out).into_iter().enumerate() {
        for (i, w) in pair {
            if w != E::zero() {
                by_input[i].push((o, w));
            }
        }
    }
    by_input
}

impl<E: Element> UpsampleKernel for CpuBackend<E> {
    fn upsample_nearest3d_forward(&self, x: &Vec<E>, g: Resample3dGeometry) -> Result<Vec<E>> {
        check_len(
            "upsample_nearest3d",
            "input",
            x.len(),
            g.input_shape().numel(),
        )?;
        let f = check_multiple(&g)?;
        let [od, oh, ow] = g.output;
        let c = g.channels;
        let mut y = vec![E::zero(); g.output_shape().numel()];
        y.par_chunks_mut((ow * c).max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let (n, oz, oy) = (row / (od * oh), row / oh % od, row % oh);
                let src = &x[offset(g.input, c, n, oz / f[0], oy / f[1], 0)..];
                for (ox, cell) in out.chunks_exact_mut(c).enumerate() {
                    cell.copy_from_slice(&src[ox / f[2] * c..][..c]);
                }
            });
        Ok(y)
    }

    fn upsample_nearest3d_backward(&self, dy: &Vec<E>, g: Resample3dGeometry) -> Result<Vec<E>> {
        check_len(
            "upsample_nearest3d backward",
            "gradient",
            dy.len(),
            g.output_shape().numel(),
        )?;
        let f = check_multiple(&g)?;
        let [id, ih, iw] = g.input;
        let c = g.channels;
        let mut dx = vec![E::zero(); g.input_shape().numel()];
        dx.par_chunks_mut((iw * c).max(1))
            .enumerate()
            .for_each(|(row, acc)| {
                let (n, iz, iy) = (row / (id * ih), row / ih % id, row % ih);
                for oz in iz * f[0]..(iz + 1) * f[0] {
                    for oy in iy * f[1]..(iy + 1) * f[1] {
                        let src = &dy[offset(g.output, c, n, oz, oy, 0)..][..g.output[2] * c];
                        for (ox, cell) in src.chunks_exact(c).enumerate() {
                            let dst = &mut acc[ox / f[2] * c..][..c];
                            for (d, &v) in dst.iter_mut().zip(cell) {
                                *d = *d + v;
                            }
                        }
                    }
                }
            });
        Ok(dx)
    }

    fn upsample_trilinear3d_forward(&self, x: &Vec<E>, g: Resample3dGeometry) -> Result<Vec<E>> {
        check_len(
            "upsample_trilinear3d",
            "input",
            x.len(),
            g.input_shape().numel(),
        )?;
        let [od, oh, ow] = g.output;
        let c = g.channels;
        let tz = taps::<E>(g.input[0], od);
        let ty = taps::<E>(g.input[1], oh);
        let tx = taps::<E>(g.input[2], ow);
        let mut y = vec![E::zero(); g.output_shape().numel()];
        y.par_chunks_mut((ow * c).max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let (n, oz, oy) = (row / (od * oh), row / oh % od, row % oh);
                for (ox, acc) in out.chunks_exact_mut(c).enumerate() {
                    for &(iz, wz) in &tz[oz] {
                        for &(iy, wy) in &ty[oy] {
                            for &(ix, wx) in &tx[ox] {
                                let w = wz * wy * wx;
                                let cell = &x[offset(g.input, c, n, iz, iy, ix)..][..c];
                                for (a, &v) in acc.iter_mut().zip(cell) {
                                    *a = *a + w * v;
                                }
                            }
                        }
                    }
                }
            });
        Ok(y)
    }

    fn upsample_trilinear3d_backward(&self, dy: &Vec<E>, g: Resample3dGeometry) -> Result<Vec<E>> {
        check_len(
            "upsample_trilinear3d backward",
            "gradient",
            dy.len(),
            g.output_shape().numel(),
        )?;
        let [id, ih, iw] = g.input;
        let c = g.channels;
        let rz = readers::<E>(id, g.output[0]);
        let ry = readers::<E>(ih, g.output[1]);
        let rx = readers::<E>(iw, g.output[2]);
        let mut dx = vec![E::zero(); g.input_shape().numel()];
        dx.par_chunks_mut((iw * c).max(1))
            .enumerate()
            .for_each(|(row, dst)| {
                let (n, iz, iy) = (row / (id * ih), row / ih % id, row % ih);
                for (ix, acc) in dst.chunks_exact_mut(c).enumerate() {
                    for &(oz, wz) in &rz[iz] {
                        for &(oy, wy) in &ry[iy] {
                            for &(ox, wx) in &rx[ix] {
                                let w = wz * wy * wx;
                                let cell = &dy[offset(g.output, c, n, oz, oy, ox)..][..c];
                                for (a, &v) in acc.iter_mut().zip(cell) {
                                    *a = *a + w * v;
                                }
                            }
                        }
                    }
                }
            });
        Ok(dx)
    }
}
