//! The CUDA backend: device buffers from a caching pool, PTX modules built from kernels/*.cu
//! by build.rs, one Rust launcher per kernel with its `#[repr(C)]` parameter struct.
//!
//! - `params`: the parameter structs, mirrors of kernels/params.h.
//! - `launch`: launch plans (grids, reduction splits), shared by the device and the harness.
//! - `device`: context, stream, module cache, `BackendBase for Cuda`, `cuda_available`.
//! - `pool`: the caching allocator.
//! - `ops`: `UnaryKernel`, `BinaryKernel`, `ReduceKernel` for `Cuda`, and random fills.
//! - `conv_plan`, `conv`: convolution launch plans (f32 and tensor-core kernels) and
//!   `Conv3dKernel` for `Cuda` with its precision option.
//! - `timing`: device time of enqueued work, between CUDA events.
//! - `emu`: the same kernels compiled for the host (kernels/emu/cuda_emu.h), for tests
//!   where no GPU is lent.
mod conv;
pub mod conv_plan;
mod device;
pub mod emu;
pub mod launch;
mod ops;
pub mod params;
pub mod pool;
mod ptx;
mod timing;

pub use conv_plan::{ConvPrecision, CONV_PRECISION_ENV};
pub use device::{cuda_available, Cuda, CudaStorage, StreamAlloc, BUILT_WITH_PTX};
pub use pool::PoolStats;
