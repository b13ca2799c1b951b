//! `UpsampleKernel` for `Cuda` (kernels/upsample.cu): nearest-neighbour and trilinear
//! resampling, forward and backward as gathers. Trilinear calls first build the per-axis
//! tap table (`linear_taps` in f64 on the device), which both passes read.
use super::device::{Cuda, CudaStorage};
use super::launch::elementwise;
use super::ops::launch;
use super::params_spatial::{
    expect_len, linear_taps_len, nearest_factors, resample_counts, LINEAR_TAP_WORDS,
};
use crate::error::Result;
use crate::tensor_ops::upsample::{Resample3dGeometry, UpsampleKernel};
use cudarc::driver::PushKernelArg;

impl Cuda {
    /// The `LinearTap` table of `g`: one entry per output cell of D, H and W.
    fn linear_taps_table(&self, g: &Resample3dGeometry) -> Result<CudaStorage> {
        let entries = linear_taps_len(g);
        let mut table = self.alloc(entries * LINEAR_TAP_WORDS)?;
        let dims = elementwise(entries, self.max_elementwise_blocks());
        launch!(
            self,
            "upsample",
            "linear_taps_table",
            &dims,
            [g, table.block_mut()]
        )?;
        Ok(table)
    }
}

impl UpsampleKernel for Cuda {
    fn upsample_nearest3d_forward(
        &self,
        x: &CudaStorage,
        g: Resample3dGeometry,
    ) -> Result<CudaStorage> {
        let op = "upsample_nearest3d";
        let (n_in, n_out) = resample_counts(op, &g)?;
        expect_len(op, "input", x.len(), n_in)?;
        nearest_factors(&g)?;
        let mut y = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "upsample",
            "upsample_nearest3d_forward",
            &dims,
            [&g, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }

    fn upsample_nearest3d_backward(
        &self,
        dy: &CudaStorage,
        g: Resample3dGeometry,
    ) -> Result<CudaStorage> {
        let op = "upsample_nearest3d backward";
        let (n_in, n_out) = resample_counts(op, &g)?;
        expect_len(op, "gradient", dy.len(), n_out)?;
        nearest_factors(&g)?;
        let mut dx = self.alloc(n_in)?;
        let dims = elementwise(n_in, self.max_elementwise_blocks());
        launch!(
            self,
            "upsample",
            "upsample_nearest3d_backward",
            &dims,
            [&g, dy.block(), dx.block_mut()]
        )?;
        Ok(dx)
    }

    fn upsample_trilinear3d_forward(
        &self,
        x: &CudaStorage,
        g: Resample3dGeometry,
    ) -> Result<CudaStorage> {
        let op = "upsample_trilinear3d";
        let (n_in, n_out) = resample_counts(op, &g)?;
        expect_len(op, "input", x.len(), n_in)?;
        let table = self.linear_taps_table(&g)?;
        let mut y = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "upsample",
            "upsample_trilinear3d_forward",
            &dims,
            [&g, table.block(), x.block(), y.block_mut()]
        )?;
        Ok(y)
    }

    fn upsample_trilinear3d_backward(
        &self,
        dy: &CudaStorage,
        g: Resample3dGeometry,
    ) -> Result<CudaStorage> {
        let op = "upsample_trilinear3d backward";
        let (n_in, n_out) = resample_counts(op, &g)?;
        expect_len(op, "gradient", dy.len(), n_out)?;
        let table = self.linear_taps_table(&g)?;
        let mut dx = self.alloc(n_in)?;
        let dims = elementwise(n_in, self.max_elementwise_blocks());
        launch!(
            self,
            "upsample",
            "upsample_trilinear3d_backward",
            &dims,
            [&g, table.block(), dy.block(), dx.block_mut()]
        )?;
        Ok(dx)
    }
}
