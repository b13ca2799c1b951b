//! Forward passes run one task per output row (n, od, oh). Backward passes gather into
//! one input plane (n, d) per task from the output planes whose windows cover it, so no
//! two tasks write the same gradient cell.
use super::{Pool3dGeometry, PoolKernel};
use crate::backend::cpu::ndhwc_offset as offset;
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::{check_len, Result};
use rayon::prelude::*;

/// Each channel's largest value in the window of output cell (oz, oy, ox) of sample `n`,
/// and where it is: the spatial offset `(z * H + y) * W + x` of the first such cell.
fn window_max<E: Element>(
    x: &[E],
    g: &Pool3dGeometry,
    n: usize,
    [oz, oy, ox]: [usize; 3],
    best: &mut [E],
    at: &mut [usize],
) {
    let c = g.channels;
    let [_, ih, iw] = g.input;
    let (z0, z1) = g.window(0, oz);
    let (y0, y1) = g.window(1, oy);
    let (x0, x1) = g.window(2, ox);
    best.copy_from_slice(&x[offset(g.input, c, n, z0, y0, x0)..][..c]);
    at.fill((z0 * ih + y0) * iw + x0);
    for z in z0..z1 {
        for yy in y0..y1 {
            for xx in x0..x1 {
                let cell = &x[offset(g.input, c, n, z, yy, xx)..][..c];
                let pos = (z * ih + yy) * iw + xx;
                for ((b, a), &v) in best.iter_mut().zip(at.iter_mut()).zip(cell) {
                    if v > *b {
                        *b = v;
                        *a = pos;
                    }
                }
            }
        }
    }
}

impl<E: Element> PoolKernel for CpuBackend<E> {
    fn max_pool3d_forward(&self, x: &Vec<E>, g: Pool3dGeometry) -> Result<Vec<E>> {
        check_len("max_pool3d", "input", x.len(), g.input_shape().numel())?;
        let [od, oh, ow] = g.output;
        let c = g.channels;
        let mut y = vec![E::zero(); g.output_shape().numel()];
        y.par_chunks_mut((ow * c).max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let (n, oz, oy) = (row / (od * oh), row / oh % od, row % oh);
                let mut at = vec![0; c];
                for (ox, best) in out.chunks_exact_mut(c).enumerate() {
                    window_max(x, &g, n, [oz, oy, ox], best, &mut at);
                }
            });
        Ok(y)
    }

    /// Two passes: the position of every window's maximum (one task per output row), then
    /// a gather into each input plane from the windows that cover it.
    fn max_pool3d_backward(&self, x: &Vec<E>, dy: &Vec<E>, g: Pool3dGeometry) -> Result<Vec<E>> {
        check_len(
            "max_pool3d backward",
            "input",
            x.len(),
            g.input_shape().numel(),
        )?;
        check_len(
            "max_pool3d backward",
            "gradient",
            dy.len(),
            g.output_shape().numel(),
        )?;
        let [id, ih, iw] = g.input;
        let [od, oh, ow] = g.output;
        let c = g.channels;
        let mut winner = vec![0usize; dy.len()];
        winner
            .par_chunks_mut((ow * c).max(1))
            .enumerate()
            .for_each(|(row, at)| {
                let (n, oz, oy) = (row / (od * oh), row / oh % od, row % oh);
                let mut best = vec![E::zero(); c];
                for (ox, at) in at.chunks_exact_mut(c).enumerate() {
                    window_max(x, &g, n, [oz, oy, ox], &mut best, at);
                }
            });
        let plane = ih * iw;
        let mut dx = vec![E::zero(); x.len()];
        dx.par_chunks_mut((plane * c).max(1))
            .enumerate()
            .for_each(|(p, dxp)| {
                let (n, iz) = (p / id, p % id);
                let here = iz * plane..(iz + 1) * plane;
                let (oz0, oz1) = g.covering(0, iz);
                for oz in oz0..oz1 {
                    let rows =
                        offset(g.output, c, n, oz, 0, 0)..offset(g.output, c, n, oz + 1, 0, 0);
                    for (i, (&pos, &grad)) in winner[rows.clone()].iter().zip(&dy[rows]).enumerate()
                    {
                        if here.contains(&pos) {
                            let d = &mut dxp[(pos - here.start) * c + i % c];
                            *d = *d + grad;
                        }
                    }
                }
            });
        Ok(dx)
    }

    fn avg_pool3d_forward(&self, x: &Vec<E>, g: Pool3dGeometry) -> Result<Vec<E>> {
        check_len("avg_pool3d", "input", x.len(), g.input_shape().numel())?;
        let [od, oh, ow] = g.output;
        let c = g.channels;
        let mut y = vec![E::zero(); g.output_shape().numel()];
        y.par_chunks_mut((ow * c).max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let (n, oz, oy) = (row / (od * oh), row / oh % od, row % oh);
                let (z0, z1) = g.window(0, oz);
                let (y0, y1) = g.window(1, oy);
                for (ox, acc) in out.chunks_exact_mut(c).enumerate() {
                    let (x0, x1) = g.window(2, ox);
                    for z in z0..z1 {
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                let cell = &x[offset(g.input, c, n, z, yy, xx)..][..c];
                                for (a, &v) in acc.iter_mut().zip(cell) {
                                    *a = *a + v;
                                }
                            }
                        }
                    }
                    let count = (z1 - z0) * (y1 - y0) * (x1 - x0);
                    let scale = E::of(1.0 / count as f64);
                    for a in acc.iter_mut() {
                        *a = *a * scale;
                    }
                }
            });
        Ok(y)
    }

    fn avg_pool3d_backward(&self, dy: &Vec<E>, g: Pool3dGeometry) -> Result<Vec<E>> {
        check_len(
            "avg_pool3d backward",
            "gradient",
            dy.len(),
            g.output_shape().numel(),
        )?;
        let [id, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let c = g.channels;
        let mut dx = vec![E::zero(); g.input_shape().numel()];
        dx.par_chunks_mut((ih * iw * c).max(1))
            .enumerate()
            .for_each(|(plane, dxp)| {
                let (n, iz) = (plane / id, plane % id);
                let (oz0, oz1) = g.covering(0, iz);
                for oz in oz0..oz1 {
                    let (z0, z1) = g.window(0, oz);
                    for oy in 0..oh {
                        let (y0, y1) = g.window(1, oy);
                        for ox in 0..ow {
                            let (x0, x1) = g.window(2, ox);
                            let count = (z1 - z0) * (y1 - y0) * (x1 - x0);
                            let scale = E::of(1.0 / count as f64);
                            let grad = &dy[offset(g.output, c, n, oz, oy, ox)..][..c];
                            for yy in y0..y1 {
                                for xx in x0..x1 {
                                    let cell = &mut dxp[(yy * iw + xx) * c..][..c];
                                    for (d, &v) in cell.iter_mut().zip(grad) {
                                        *d = *d + v * scale;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok(dx)
    }
}
