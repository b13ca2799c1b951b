//! One rayon task per output row (n, z, y): a fill, a contiguous copy, a fill.
use super::{Pad3dGeometry, PadKernel};
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// The output cells `[lo, hi)` along an axis of `out` cells that read input cells, when
/// input cell i lands on output cell i + before.
fn inside(before: i64, input: usize, out: usize) -> (usize, usize) {
    let lo = before.clamp(0, out as i64);
    let hi = (before + input as i64).clamp(lo, out as i64);
    (lo as usize, hi as usize)
}

impl<E: Element> PadKernel for CpuBackend<E> {
    fn pad3d(&self, x: &Vec<E>, g: Pad3dGeometry, value: f64) -> Result<Vec<E>> {
        if x.len() != g.input_shape().numel() {
            return Err(Error::shape(
                "pad3d",
                format!(
                    "input has {} elements, the geometry needs {}",
                    x.len(),
                    g.input_shape().numel()
                ),
            ));
        }
        let [id, ih, iw] = g.input;
        let [od, oh, ow] = g.output;
        let c = g.channels;
        let fill = E::of(value);
        let (z0, z1) = inside(g.before[0], id, od);
        let (y0, y1) = inside(g.before[1], ih, oh);
        let (x0, x1) = inside(g.before[2], iw, ow);
        let mut y = vec![fill; g.output_shape().numel()];
        y.par_chunks_mut((ow * c).max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let (n, oz, oy) = (row / (od * oh), row / oh % od, row % oh);
                if !(z0..z1).contains(&oz) || !(y0..y1).contains(&oy) || x0 == x1 {
                    return;
                }
                let iz = (oz as i64 - g.before[0]) as usize;
                let iy = (oy as i64 - g.before[1]) as usize;
                let ix = (x0 as i64 - g.before[2]) as usize;
                let src = (((n * id + iz) * ih + iy) * iw + ix) * c;
                out[x0 * c..x1 * c].copy_from_slice(&x[src..src + (x1 - x0) * c]);
            });
        Ok(y)
    }
}
