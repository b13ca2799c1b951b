//! `SoftmaxKernel` for `Cuda` (kernels/softmax.cu): one thread per row.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_softmax::SoftmaxKernelParams;
use crate::error::{Error, Result};
use crate::tensor_ops::{SoftmaxKernel, SoftmaxOp};

fn check_rows(op: &str, len: usize, channels: usize) -> Result<()> {
    if channels == 0 || !len.is_multiple_of(channels) {
        return Err(Error::shape(
            "softmax",
            format!("{op}: {len} elements are not rows of {channels} channels"),
        ));
    }
    Ok(())
}

impl SoftmaxKernel for Cuda {
    fn softmax_forward(
        &self,
        op: SoftmaxOp,
        x: &CudaStorage,
        channels: usize,
    ) -> Result<CudaStorage> {
        check_rows("forward", x.len(), channels)?;
        let p = SoftmaxKernelParams::new(op, x.len(), channels);
        let mut y = self.alloc(x.len())?;
        if p.rows > 0 {
            call_kernel!(
                self,
                "softmax",
                "softmax_forward",
                &elementwise(p.rows as usize, self.max_elementwise_blocks()),
                [&p, x.block(), y.block_mut()]
            )?;
        }
        Ok(y)
    }

    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &CudaStorage,
        dy: &CudaStorage,
        channels: usize,
    ) -> Result<CudaStorage> {
        check_rows("backward", y.len(), channels)?;
        if dy.len() != y.len() {
            return Err(Error::shape(
                "softmax",
                format!("backward: y {} vs dy {} elements", y.len(), dy.len()),
            ));
        }
        let p = SoftmaxKernelParams::new(op, y.len(), channels);
        let mut dx = self.alloc(y.len())?;
        if p.rows > 0 {
            call_kernel!(
                self,
                "softmax",
                "softmax_backward",
                &elementwise(p.rows as usize, self.max_elementwise_blocks()),
                [&p, y.block(), dy.block(), dx.block_mut()]
            )?;
        }
        Ok(dx)
    }
}
