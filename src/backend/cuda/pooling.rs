//! `PoolKernel` for `Cuda` (kernels/pool.cu): one thread per output element forward; the
//! backward passes gather into each input element from the windows that cover it, after a
//! first pass over the windows: the max-pool backward records each window's winner (as the
//! CPU backend does), the average-pool backward scales each window's gradient.
use super::device::{Cuda, CudaStorage};
use super::launch::elementwise;
use super::ops::launch;
use super::params_spatial::{expect_len, pool_counts};
use crate::error::Result;
use crate::tensor_ops::pool::{Pool3dGeometry, PoolKernel};
use cudarc::driver::PushKernelArg;

impl PoolKernel for Cuda {
    fn max_pool3d_forward(&self, x: &CudaStorage, g: Pool3dGeometry) -> Result<CudaStorage> {
        let (n_in, n_out) = pool_counts("max_pool3d", &g)?;
        expect_len("max_pool3d", "input", x.len(), n_in)?;
        let mut y = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "pool",
            "max_pool3d_forward",
            &dims,
            [&g, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }

    fn max_pool3d_backward(
        &self,
        x: &CudaStorage,
        dy: &CudaStorage,
        g: Pool3dGeometry,
    ) -> Result<CudaStorage> {
        let op = "max_pool3d backward";
        let (n_in, n_out) = pool_counts(op, &g)?;
        expect_len(op, "input", x.len(), n_in)?;
        expect_len(op, "gradient", dy.len(), n_out)?;
        // Each window's winning cell (u32 in an f32-sized buffer).
        let mut winner = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "pool",
            "max_pool3d_argmax",
            &dims,
            [&g, x.block(), winner.block_mut()]
        )?;
        let mut dx = self.alloc(n_in)?;
        let dims = elementwise(n_in, self.max_elementwise_blocks());
        launch!(
            self,
            "pool",
            "max_pool3d_backward",
            &dims,
            [&g, winner.block(), dy.block(), dx.block_mut()]
        )?;
        Ok(dx)
    }

    fn avg_pool3d_forward(&self, x: &CudaStorage, g: Pool3dGeometry) -> Result<CudaStorage> {
        let (n_in, n_out) = pool_counts("avg_pool3d", &g)?;
        expect_len("avg_pool3d", "input", x.len(), n_in)?;
        let mut y = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "pool",
            "avg_pool3d_forward",
            &dims,
            [&g, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }

    fn avg_pool3d_backward(&self, dy: &CudaStorage, g: Pool3dGeometry) -> Result<CudaStorage> {
        let op = "avg_pool3d backward";
        let (n_in, n_out) = pool_counts(op, &g)?;
        expect_len(op, "gradient", dy.len(), n_out)?;
        // Each window's gradient over its cell count, then the gather adds them.
        let mut scaled = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "pool",
            "avg_pool3d_scale_gradient",
            &dims,
            [&g, dy.block(), scaled.block_mut()]
        )?;
        let mut dx = self.alloc(n_in)?;
        let dims = elementwise(n_in, self.max_elementwise_blocks());
        launch!(
            self,
            "pool",
            "avg_pool3d_backward",
            &dims,
            [&g, scaled.block(), dx.block_mut()]
        )?;
        Ok(dx)
    }
}
