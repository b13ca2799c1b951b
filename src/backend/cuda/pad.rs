//! `PadKernel` for `Cuda` (kernels/pad.cu): one thread per output element, copying its
//! source cell or writing the fill value.
use super::device::{Cuda, CudaStorage};
use super::launch::elementwise;
use super::ops::launch;
use super::params_spatial::{expect_len, pad_counts};
use crate::error::Result;
use crate::tensor_ops::pad::{Pad3dGeometry, PadKernel};
use cudarc::driver::PushKernelArg;

impl PadKernel for Cuda {
    fn pad3d(&self, x: &CudaStorage, g: Pad3dGeometry, value: f64) -> Result<CudaStorage> {
        let (n_in, n_out) = pad_counts(&g)?;
        expect_len("pad3d", "input", x.len(), n_in)?;
        // Rounded as the CPU backend's f32 kernel rounds it.
        let fill = value as f32;
        let mut y = self.alloc(n_out)?;
        let dims = elementwise(n_out, self.max_elementwise_blocks());
        launch!(
            self,
            "pad",
            "pad3d",
            &dims,
            [&g, &fill, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }
}
