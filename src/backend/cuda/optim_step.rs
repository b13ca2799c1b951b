//! `OptimStepKernel` for `Cuda` (kernels/optim_step.cu): one fused in-place pass per
//! parameter and step.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_optim_step::{AdamKernelParams, SgdKernelParams};
use crate::error::{Error, Result};
use crate::tensor_ops::optim_step::{AdamHyper, OptimStepKernel, SgdHyper};

fn check_len(op: &str, what: &str, want: usize, got: usize) -> Result<()> {
    if want != got {
        return Err(Error::shape(
            "optim_step",
            format!("{op}: {what} has {got} elements, the parameter {want}"),
        ));
    }
    Ok(())
}

impl OptimStepKernel for Cuda {
    fn sgd_step(
        &self,
        param: &mut CudaStorage,
        momentum_buf: Option<&mut CudaStorage>,
        grad: &CudaStorage,
        hyper: SgdHyper,
    ) -> Result<()> {
        let n = param.len();
        check_len("sgd", "the gradient", n, grad.len())?;
        if momentum_buf.is_none() && hyper.momentum != 0.0 {
            return Err(Error::shape(
                "optim_step",
                "sgd: momentum without a momentum buffer",
            ));
        }
        if let Some(buf) = &momentum_buf {
            check_len("sgd", "the momentum buffer", n, buf.len())?;
        }
        if n == 0 {
            return Ok(());
        }
        let p = SgdKernelParams::new(&hyper, n);
        let dims = elementwise(n, self.max_elementwise_blocks());
        match momentum_buf {
            None => call_kernel!(
                self,
                "optim_step",
                "sgd_step",
                &dims,
                [&p, param.block_mut(), grad.block()]
            ),
            Some(buf) => call_kernel!(
                self,
                "optim_step",
                "sgd_momentum_step",
                &dims,
                [&p, param.block_mut(), buf.block_mut(), grad.block()]
            ),
        }
    }

    fn adam_step(
        &self,
        param: &mut CudaStorage,
        m: &mut CudaStorage,
        v: &mut CudaStorage,
        grad: &CudaStorage,
        hyper: AdamHyper,
    ) -> Result<()> {
        let n = param.len();
        check_len("adam", "the gradient", n, grad.len())?;
        check_len("adam", "the first moment", n, m.len())?;
        check_len("adam", "the second moment", n, v.len())?;
        if n == 0 {
            return Ok(());
        }
        let p = AdamKernelParams::new(&hyper, n);
        call_kernel!(
            self,
            "optim_step",
            "adam_step",
            &elementwise(n, self.max_elementwise_blocks()),
            [
                &p,
                param.block_mut(),
                m.block_mut(),
                v.block_mut(),
                grad.block()
            ]
        )
    }
}
