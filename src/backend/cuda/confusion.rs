//! `ConfusionKernel` for `Cuda` (kernels/confusion.cu): the decisions and counts on the
//! device; only the 3 u64 counts per region come back.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_confusion::{ConfusionKernelParams, CONFUSION_THREADS};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::tensor_ops::confusion::MAX_REGIONS;
use crate::tensor_ops::confusion::{ConfusionKernel, ConfusionSpec};

impl ConfusionKernel for Cuda {
    fn region_confusion(
        &self,
        logits: &CudaStorage,
        labels: &CudaStorage,
        spec: &ConfusionSpec,
    ) -> Result<Vec<Confusion>> {
        let voxels = spec.voxels(logits.len(), labels.len())?;
        let dims = elementwise(voxels, self.max_elementwise_blocks());
        // Each block counts into u32 shared counters.
        let per_block = voxels.div_ceil(dims.grid[0] as usize * CONFUSION_THREADS as usize)
            * CONFUSION_THREADS as usize;
        if per_block > u32::MAX as usize {
            return Err(Error::shape(
                "region_confusion",
                format!("{voxels} voxels overflow the per-block counters"),
            ));
        }
        let mut counts = Vec::with_capacity(3 * spec.regions.len());
        for regions in spec.regions.chunks(MAX_REGIONS) {
            let p = ConfusionKernelParams::new(spec, regions, voxels);
            // u64 counts in an f32 block of twice the length, zeroed.
            let mut block = self.zeros(2 * p.counts_len())?;
            if voxels > 0 {
                call_kernel!(
                    self,
                    "confusion",
                    "region_confusion",
                    &dims,
                    [&p, logits.block(), labels.block(), block.block_mut()]
                )?;
            }
            counts.extend(self.download_pod::<u64>(&block)?);
        }
        Ok(counts
            .chunks_exact(3)
            .map(|c| Confusion {
                true_pos: c[0],
                false_pos: c[1],
                false_neg: c[2],
                true_neg: voxels as u64 - c[0] - c[1] - c[2],
            })
            .collect())
    }
}
