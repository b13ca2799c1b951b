use super::{DropoutKernel, DropoutParams};
use crate::backend::cpu::{CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

impl<E: Element> DropoutKernel for CpuBackend<E> {
    fn dropout_apply(&self, x: &Vec<E>, p: &DropoutParams) -> Result<Vec<E>> {
        if p.spatial
            && (p.channels == 0 || p.example_len == 0 || !x.len().is_multiple_of(p.example_len))
        {
            return Err(Error::shape(
                "dropout",
                format!(
                    "{} elements are not whole examples of {} elements in {} channels",
                    x.len(),
                    p.example_len,
                    p.channels
                ),
            ));
        }
        let scale = E::of(p.scale);
        // Spatial masks are one draw per (example, channel): draw them once, up front.
        let channel_keep: Vec<bool> = if p.spatial {
            (0..(x.len() / p.example_len) * p.channels)
                .map(|k| p.keeps(k as u64))
                .collect()
        } else {
            Vec::new()
        };
        let mut y = vec![E::zero(); x.len()];
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .enumerate()
            .for_each(|(chunk, (yc, xc))| {
                let base = chunk * PAR_CHUNK;
                for (k, (o, &v)) in yc.iter_mut().zip(xc).enumerate() {
                    let index = p.mask_index(base + k);
                    let keep = if p.spatial {
                        channel_keep[index as usize]
                    } else {
                        p.keeps(index)
                    };
                    // A product, not a select, so a NaN in a dropped element still shows.
                    *o = v * if keep { scale } else { E::zero() };
                }
            });
        Ok(y)
    }
}
