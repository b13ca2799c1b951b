//! The checked launch used by the launchers of norm, dropout, matmul, softmax, bce,
//! cross_entropy and optim_step: `call_kernel!` loads a kernel through the module cache,
//! pushes its arguments and launches it on the backend's stream; a failure becomes an
//! `Error::Backend` naming the kernel.
use super::device::driver_error;
use super::params::LaunchDims;
use crate::error::Result;
use cudarc::driver::{LaunchArgs, LaunchConfig};

pub(super) fn launch(name: &str, dims: &LaunchDims, mut args: LaunchArgs<'_>) -> Result<()> {
    let config = LaunchConfig {
        grid_dim: (dims.grid[0], dims.grid[1], dims.grid[2]),
        block_dim: (dims.block[0], dims.block[1], dims.block[2]),
        shared_mem_bytes: dims.shared_bytes,
    };
    // SAFETY: every `call_kernel!` passes the kernel's arguments in its order and types,
    // with buffers at least as long as its parameters make the kernel index (the
    // launchers check lengths before launching).
    unsafe { args.launch(config) }.map_err(|e| driver_error(name, e))?;
    Ok(())
}

/// Launches kernel `$name` (a `&'static str`) of kernels/`$module`.cu on `$dims` with the
/// arguments listed.
macro_rules! call_kernel {
    ($cuda:expr, $module:literal, $name:expr, $dims:expr, [$($arg:expr),+ $(,)?]) => {{
        let name: &'static str = $name;
        let f = $cuda.function($module, name)?;
        let mut args = $cuda.stream().launch_builder(&f);
        $(cudarc::driver::PushKernelArg::arg(&mut args, $arg);)+
        $crate::backend::cuda::kernel_call::launch(name, $dims, args)
    }};
}
pub(super) use call_kernel;
