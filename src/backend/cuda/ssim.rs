//! `SsimWindowKernel` for `Cuda` (kernels/ssim.cu): the separable window filter as three
//! one-axis passes through f32 intermediates (W, H, D forward; D, H, W for the adjoint), the
//! order and views of the CPU backend.
use super::device::{Cuda, CudaStorage};
use super::launch::elementwise;
use super::ops::launch;
use super::params_spatial::{window_passes, WindowAxisParams};
use crate::error::{Error, Result};
use crate::tensor_ops::SsimWindowKernel;
use cudarc::driver::PushKernelArg;

fn expect(what: &str, len: usize, want: usize, dims: [usize; 5], k: usize) -> Result<()> {
    if len != want {
        return Err(Error::shape(
            "window_filter",
            format!("{what}: {len} elements for input dims {dims:?} and {k} taps"),
        ));
    }
    Ok(())
}

impl Cuda {
    fn filter_pass(&self, p: &WindowAxisParams, x: &CudaStorage) -> Result<CudaStorage> {
        let n = p.output_len();
        let mut y = self.alloc(n)?;
        let dims = elementwise(n, self.max_elementwise_blocks());
        launch!(
            self,
            "ssim",
            "window_filter_axis",
            &dims,
            [p, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }

    fn adjoint_pass(&self, p: &WindowAxisParams, dy: &CudaStorage) -> Result<CudaStorage> {
        let n = p.input_len();
        let mut dx = self.alloc(n)?;
        let dims = elementwise(n, self.max_elementwise_blocks());
        launch!(
            self,
            "ssim",
            "window_filter_axis_adjoint",
            &dims,
            [p, dy.block(), dx.block_mut()]
        )?;
        Ok(dx)
    }
}

impl SsimWindowKernel for Cuda {
    fn window_filter_forward(
        &self,
        x: &CudaStorage,
        dims: [usize; 5],
        taps: &[f64],
    ) -> Result<CudaStorage> {
        let [w, h, d] = window_passes(dims, taps)?;
        expect("forward", x.len(), w.input_len(), dims, taps.len())?;
        let y = self.filter_pass(&w, x)?;
        let y = self.filter_pass(&h, &y)?;
        self.filter_pass(&d, &y)
    }

    fn window_filter_backward(
        &self,
        dy: &CudaStorage,
        dims: [usize; 5],
        taps: &[f64],
    ) -> Result<CudaStorage> {
        let [w, h, d] = window_passes(dims, taps)?;
        expect("backward", dy.len(), d.output_len(), dims, taps.len())?;
        let g = self.adjoint_pass(&d, dy)?;
        let g = self.adjoint_pass(&h, &g)?;
        self.adjoint_pass(&w, &g)
    }
}
