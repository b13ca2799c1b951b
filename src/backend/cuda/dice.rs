//! `DiceSumsKernel` for `Cuda` (kernels/dice.cu): the sums as f64 block partials added in
//! split order by a second launch, the gradient in one element-wise pass.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::params_dice::DicePlan;
use crate::error::Result;
use crate::tensor_ops::dice_sums::{DiceSumsKernel, DiceSumsShape};

impl Cuda {
    fn dice_plan(&self, shape: DiceSumsShape) -> Result<DicePlan> {
        DicePlan::new(shape, self.target_blocks(), self.max_elementwise_blocks())
    }
}

impl DiceSumsKernel for Cuda {
    fn dice_sums(
        &self,
        p: &CudaStorage,
        t: &CudaStorage,
        shape: DiceSumsShape,
    ) -> Result<CudaStorage> {
        shape.check(p.len(), t.len(), None)?;
        let mut out = self.alloc(shape.sums_len())?;
        if shape.sums_len() == 0 {
            return Ok(out);
        }
        let plan = self.dice_plan(shape)?;
        let mut partial = self.alloc_f64(plan.partial_len())?;
        call_kernel!(
            self,
            "dice",
            "dice_sums_partial",
            &plan.dims,
            [&plan.params, p.block(), t.block(), partial.block_mut()]
        )?;
        call_kernel!(
            self,
            "dice",
            "dice_sums_finish",
            &plan.finish_dims,
            [&plan.params, partial.block(), out.block_mut()]
        )?;
        Ok(out)
    }

    fn dice_sums_backward(
        &self,
        t: &CudaStorage,
        grad: &CudaStorage,
        shape: DiceSumsShape,
    ) -> Result<CudaStorage> {
        shape.check(t.len(), t.len(), Some(grad.len()))?;
        let mut dp = self.alloc(t.len())?;
        if t.is_empty() {
            return Ok(dp);
        }
        let plan = self.dice_plan(shape)?;
        call_kernel!(
            self,
            "dice",
            "dice_sums_backward",
            &plan.dims,
            [&plan.params, t.block(), grad.block(), dp.block_mut()]
        )?;
        Ok(dp)
    }
}
