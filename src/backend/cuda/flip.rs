//! `FlipKernel` for `Cuda` (kernels/flip.cu): one thread per output element, reading its
//! mirrored source.
use super::device::{Cuda, CudaStorage};
use super::launch::elementwise;
use super::ops::launch;
use super::params_spatial::{expect_len, flip_count};
use crate::error::Result;
use crate::tensor_ops::flip::{Flip3dGeometry, FlipKernel};
use cudarc::driver::PushKernelArg;

impl FlipKernel for Cuda {
    fn flip3d(&self, x: &CudaStorage, g: Flip3dGeometry) -> Result<CudaStorage> {
        let n = flip_count(&g)?;
        expect_len("flip3d", "input", x.len(), n)?;
        let mut y = self.alloc(n)?;
        let dims = elementwise(n, self.max_elementwise_blocks());
        launch!(
            self,
            "flip",
            "flip3d",
            &dims,
            [&g, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }
}
