//! Row copies, one rayon task per block of rows of the output.
use super::{ChannelRange, ConcatKernel};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Rows per task so a task moves about `PAR_CHUNK` elements.
fn rows_per_task(width: usize) -> usize {
    (PAR_CHUNK / width.max(1)).max(1)
}

fn check_range(op: &'static str, r: &ChannelRange, full: usize, part: usize) -> Result<()> {
    if r.start > r.end
        || r.end > r.channels
        || full != r.rows * r.channels
        || part != r.rows * r.width()
    {
        return Err(Error::shape(
            op,
            format!("buffers of {full} and {part} elements do not fit {r:?}"),
        ));
    }
    Ok(())
}

impl<E: Element> ConcatKernel for CpuBackend<E> {
    fn concat_channels(&self, parts: &[&Vec<E>], widths: &[usize], rows: usize) -> Result<Vec<E>> {
        if parts.len() != widths.len()
            || parts.iter().zip(widths).any(|(p, &w)| p.len() != rows * w)
        {
            let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            return Err(Error::shape(
                "concat_channels",
                format!("parts of {lens:?} elements do not fit {rows} rows of widths {widths:?}"),
            ));
        }
        let total: usize = widths.iter().sum();
        let mut y = vec![E::zero(); rows * total];
        let block = rows_per_task(total);
        y.par_chunks_mut((block * total).max(1))
            .enumerate()
            .for_each(|(t, out)| {
                for (k, row) in out.chunks_exact_mut(total).enumerate() {
                    let r = t * block + k;
                    let mut start = 0;
                    for (p, &w) in parts.iter().zip(widths) {
                        row[start..start + w].copy_from_slice(&p[r * w..(r + 1) * w]);
                        start += w;
                    }
                }
            });
        Ok(y)
    }

    fn slice_channels(&self, x: &Vec<E>, r: ChannelRange) -> Result<Vec<E>> {
        check_range(
            "slice_channels",
            &r,
            x.len(),
            r.rows * r.end.saturating_sub(r.start),
        )?;
        let w = r.width();
        let mut y = vec![E::zero(); r.rows * w];
        let block = rows_per_task(w);
        y.par_chunks_mut((block * w).max(1))
            .enumerate()
            .for_each(|(t, out)| {
                for (k, row) in out.chunks_exact_mut(w).enumerate() {
                    let src = (t * block + k) * r.channels;
                    row.copy_from_slice(&x[src + r.start..src + r.end]);
                }
            });
        Ok(y)
    }

    fn embed_channels(&self, part: &Vec<E>, r: ChannelRange) -> Result<Vec<E>> {
        check_range(
            "slice_channels backward",
            &r,
            r.rows * r.channels,
            part.len(),
        )?;
        let w = r.width();
        let mut y = vec![E::zero(); r.rows * r.channels];
        let block = rows_per_task(r.channels);
        y.par_chunks_mut((block * r.channels).max(1))
            .enumerate()
            .for_each(|(t, out)| {
                for (k, row) in out.chunks_exact_mut(r.channels).enumerate() {
                    let src = (t * block + k) * w;
                    row[r.start..r.end].copy_from_slice(&part[src..src + w]);
                }
            });
        Ok(y)
    }
}
