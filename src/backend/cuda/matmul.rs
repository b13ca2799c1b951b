//! `MatmulKernel` for `Cuda` (kernels/matmul.cu): the tiled product, with k split over
//! the grid and the partial products added by `sum_axis1` (reduce.cu) when the output is
//! too small to fill the device.
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::params_matmul::MatmulPlan;
use crate::error::{Error, Result};
use crate::tensor_ops::matmul::{MatmulKernel, MatmulParams};

impl MatmulKernel for Cuda {
    fn matmul(
        &self,
        a: &CudaStorage,
        b: &CudaStorage,
        bias: Option<&CudaStorage>,
        p: &MatmulParams,
    ) -> Result<CudaStorage> {
        let (m, n, k) = (p.m, p.n, p.k);
        let lens = [
            ("a", a.len(), m * k),
            ("b", b.len(), k * n),
            ("bias", bias.map_or(n, |b| b.len()), n),
        ];
        for (what, len, want) in lens {
            if len != want {
                return Err(Error::shape(
                    "matmul",
                    format!("{what} has {len} elements, expected {want} for {p:?}"),
                ));
            }
        }
        let mut c = self.alloc(m * n)?;
        if m * n == 0 {
            return Ok(c);
        }
        let plan = MatmulPlan::new(p, bias.is_some(), self.target_blocks())?;
        // Without a bias the kernel does not read one (has_bias 0); `a` stands in.
        let bias = bias.unwrap_or(a);
        match &plan.sum {
            None => call_kernel!(
                self,
                "matmul",
                "matmul_tiled",
                &plan.dims,
                [
                    &plan.params,
                    a.block(),
                    b.block(),
                    bias.block(),
                    c.block_mut()
                ]
            )?,
            Some(sum) => {
                let mut partial = self.alloc(plan.workspace_len())?;
                call_kernel!(
                    self,
                    "matmul",
                    "matmul_tiled",
                    &plan.dims,
                    [
                        &plan.params,
                        a.block(),
                        b.block(),
                        bias.block(),
                        partial.block_mut()
                    ]
                )?;
                call_kernel!(
                    self,
                    "reduce",
                    "sum_axis1",
                    &sum.first_dims,
                    [&sum.first, partial.block(), c.block_mut()]
                )?;
            }
        }
        Ok(c)
    }
}
