//! `StitchKernel` for `Cuda` (kernels/stitch.cu): one launch per window, in the batch's
//! order (windows of a batch may overlap, and the order of additions is what makes the
//! results deterministic and equal to the CPU's), and one launch for the division.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::params_stitch::{StitchDivideParams, StitchParams};
use crate::error::Result;
use crate::tensor_ops::stitch::{StitchGeometry, StitchKernel};

impl StitchKernel for Cuda {
    fn accumulate_windows(
        &self,
        acc: &mut CudaStorage,
        norm: &mut CudaStorage,
        logits: &CudaStorage,
        weights: &CudaStorage,
        g: &StitchGeometry,
    ) -> Result<()> {
        g.check_lengths(acc.len(), norm.len(), logits.len(), weights.len())?;
        for window in 0..g.starts.len() {
            let p = StitchParams::new(g, window)?;
            if p.elements() == 0 {
                continue;
            }
            call_kernel!(
                self,
                "stitch",
                "stitch_accumulate",
                &p.dims(self.max_elementwise_blocks()),
                [
                    &p,
                    logits.block(),
                    weights.block(),
                    acc.block_mut(),
                    norm.block_mut()
                ]
            )?;
        }
        Ok(())
    }

    fn divide_by_weights(
        &self,
        acc: &mut CudaStorage,
        norm: &CudaStorage,
        channels: usize,
    ) -> Result<()> {
        let p = StitchDivideParams::new(acc.len(), norm.len(), channels)?;
        if p.elements() == 0 {
            return Ok(());
        }
        call_kernel!(
            self,
            "stitch",
            "stitch_divide",
            &p.dims(self.max_elementwise_blocks()),
            [&p, norm.block(), acc.block_mut()]
        )
    }
}
