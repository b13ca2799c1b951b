//! `DropoutKernel` for `Cuda` (kernels/dropout.cu): the CPU's Philox mask, regenerated
//! per element on the device.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_dropout::DropoutKernelParams;
use crate::error::{Error, Result};
use crate::tensor_ops::dropout::{DropoutKernel, DropoutParams};

impl DropoutKernel for Cuda {
    fn dropout_apply(&self, x: &CudaStorage, p: &DropoutParams) -> Result<CudaStorage> {
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
        let n = x.len();
        let mut y = self.alloc(n)?;
        if n > 0 {
            let params = DropoutKernelParams::new(p, n);
            call_kernel!(
                self,
                "dropout",
                "dropout_apply",
                &elementwise(n, self.max_elementwise_blocks()),
                [&params, x.block(), y.block_mut()]
            )?;
        }
        Ok(y)
    }
}
