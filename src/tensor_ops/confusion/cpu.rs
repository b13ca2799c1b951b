use super::{count_voxel, label_class, ConfusionKernel, ConfusionSpec};
use crate::backend::cpu::CpuBackend;
use crate::backend::Element;
use crate::error::Result;
use crate::metrics::Confusion;
use rayon::prelude::*;

/// Voxels per parallel task (counts are integers: any split gives the same totals).
const CHUNK_VOXELS: usize = 1 << 14;

impl<E: Element> ConfusionKernel for CpuBackend<E> {
    fn region_confusion(
        &self,
        logits: &Vec<E>,
        labels: &Vec<E>,
        spec: &ConfusionSpec,
    ) -> Result<Vec<Confusion>> {
        spec.voxels(logits.len(), labels.len())?;
        let c = spec.channels;
        let regions = spec.regions.len();
        let parts: Vec<Vec<Confusion>> = logits
            .par_chunks(CHUNK_VOXELS * c)
            .zip(labels.par_chunks(CHUNK_VOXELS))
            .map(|(rows, labels)| {
                let mut counts = vec![Confusion::default(); regions];
                let mut row32 = vec![0.0f32; c];
                for (row, &label) in rows.chunks_exact(c).zip(labels) {
                    for (r, &l) in row32.iter_mut().zip(row) {
                        *r = l.as_f64() as f32;
                    }
                    let pred = spec.decide(&row32);
                    count_voxel(
                        &spec.regions,
                        pred,
                        label_class(label.as_f64()),
                        &mut counts,
                    );
                }
                counts
            })
            .collect();
        let mut total = vec![Confusion::default(); regions];
        for part in parts {
            for (t, p) in total.iter_mut().zip(part) {
                t.true_pos += p.true_pos;
                t.false_pos += p.false_pos;
                t.false_neg += p.false_neg;
                t.true_neg += p.true_neg;
            }
        }
        Ok(total)
    }
}
