//! The CUDA backend: device buffers from a caching pool, PTX modules built from kernels/*.cu
//! by build.rs, one Rust launcher per kernel with its `#[repr(C)]` parameter struct.
//!
//! - `params`: the parameter structs, mirrors of kernels/params.h.
//! - `launch`: launch plans (grids, reduction splits), shared by the device and the harness.
//! - `device`: context, stream, module cache, `BackendBase for Cuda`, `cuda_available`.
//! - `pool`: the caching allocator.
//! - `ops`: `UnaryKernel`, `BinaryKernel`, `ReduceKernel` for `Cuda`, and random fills.
//! - `emu`: the same kernels compiled for the host (kernels/emu/cuda_emu.h), for tests
//!   where no GPU is lent.
//! - `params_spatial`, `pooling`, `upsample`, `concat`, `pad`, `flip`, `ssim`: the spatial
//!   families (`PoolKernel`, `UpsampleKernel`, `ConcatKernel`, `PadKernel`, `FlipKernel`,
//!   `SsimWindowKernel`) for `Cuda`.
mod device;
pub mod emu;
pub mod launch;
mod ops;
pub mod params;
pub mod pool;
mod ptx;

mod concat;
mod flip;
mod pad;
pub mod params_spatial;
mod pooling;
mod ssim;
mod upsample;

pub use device::{cuda_available, Cuda, CudaStorage, StreamAlloc, BUILT_WITH_PTX};
pub use pool::PoolStats;

// Second wave, cuda-ops-a: norm, dropout, matmul, softmax, bce, cross_entropy and
// optim_step. `params_<family>`: the mirrors of kernels/params_<family>.h and launch plans;
// `<family>`: the launchers and `impl <Family>Kernel for Cuda`; `block_sum`: the plan of
// the loss reductions; `kernel_call`: the checked launch they share.
mod bce;
pub mod block_sum;
mod cross_entropy;
mod dropout;
mod kernel_call;
mod matmul;
mod norm;
mod optim_step;
pub mod params_bce;
pub mod params_cross_entropy;
pub mod params_dropout;
pub mod params_matmul;
pub mod params_norm;
pub mod params_optim_step;
pub mod params_softmax;
mod softmax;
