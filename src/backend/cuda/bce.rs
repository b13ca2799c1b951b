//! `BceKernel` for `Cuda` (kernels/bce.cu): the loss as a device-side reduction (block
//! partials, then one block), the gradients element-wise with the upstream gradient read
//! on the device.
use super::block_sum::BlockSumPlan;
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_bce::BceKernelParams;
use crate::error::{Error, Result};
use crate::tensor_ops::bce::{BceKernel, BceParams};

fn check(x: usize, t: usize, w: Option<usize>, p: &BceParams) -> Result<()> {
    let group = p.weight_group.max(1) as usize;
    let weights_fit = w.is_none_or(|w| w * group == x);
    if x != t || !weights_fit || p.weight_group == 0 {
        return Err(Error::shape(
            "bce_with_logits",
            format!(
                "logits {x} / targets {t} / weights {w:?} elements, weight group {}",
                p.weight_group
            ),
        ));
    }
    Ok(())
}

impl BceKernel for Cuda {
    fn bce_forward(
        &self,
        x: &CudaStorage,
        t: &CudaStorage,
        w: Option<&CudaStorage>,
        params: BceParams,
    ) -> Result<CudaStorage> {
        check(x.len(), t.len(), w.map(|w| w.len()), &params)?;
        let p = BceKernelParams::new(&params, x.len(), w.is_some());
        let plan = BlockSumPlan::new(x.len(), self.max_elementwise_blocks());
        let mut partial = self.alloc_f64(plan.blocks as usize)?;
        // Without weights the kernel does not read any (has_weight 0); `x` stands in.
        call_kernel!(
            self,
            "bce",
            "bce_forward_partial",
            &plan.partial_dims,
            [
                &p,
                x.block(),
                t.block(),
                w.unwrap_or(x).block(),
                partial.block_mut()
            ]
        )?;
        let mut loss = self.alloc(1)?;
        call_kernel!(
            self,
            "bce",
            "bce_forward_finish",
            &plan.finish_dims,
            [&p, &plan.blocks, partial.block(), loss.block_mut()]
        )?;
        Ok(loss)
    }

    fn bce_backward(
        &self,
        x: &CudaStorage,
        t: &CudaStorage,
        w: Option<&CudaStorage>,
        params: BceParams,
        dy: &CudaStorage,
        needs: [bool; 3],
    ) -> Result<(
        Option<CudaStorage>,
        Option<CudaStorage>,
        Option<CudaStorage>,
    )> {
        check(x.len(), t.len(), w.map(|w| w.len()), &params)?;
        if dy.is_empty() {
            return Err(Error::shape("bce_with_logits", "empty upstream gradient"));
        }
        let p = BceKernelParams::new(&params, x.len(), w.is_some());
        let n = x.len();
        // dx (targets = 0) or dt (targets = 1).
        let elementwise_grad = |targets: u32| -> Result<CudaStorage> {
            let mut out = self.alloc(n)?;
            if n > 0 {
                call_kernel!(
                    self,
                    "bce",
                    "bce_backward",
                    &elementwise(n, self.max_elementwise_blocks()),
                    [
                        &p,
                        x.block(),
                        t.block(),
                        w.unwrap_or(x).block(),
                        dy.block(),
                        &targets,
                        out.block_mut()
                    ]
                )?;
            }
            Ok(out)
        };
        let dx = needs[0].then(|| elementwise_grad(0)).transpose()?;
        let dt = needs[1].then(|| elementwise_grad(1)).transpose()?;
        let dw = match (needs[2], w) {
            (true, Some(w)) => {
                let mut dw = self.alloc(w.len())?;
                if !w.is_empty() {
                    call_kernel!(
                        self,
                        "bce",
                        "bce_backward_weight",
                        &elementwise(w.len(), self.max_elementwise_blocks()),
                        [&p, x.block(), t.block(), dy.block(), dw.block_mut()]
                    )?;
                }
                Some(dw)
            }
            _ => None,
        };
        Ok((dx, dt, dw))
    }
}
