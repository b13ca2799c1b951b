//! The CUDA backend: device buffers from a caching pool, PTX modules built from kernels/*.cu
//! by build.rs, one Rust launcher per kernel with its `#[repr(C)]` parameter struct.
//!
//! - `device`: context, stream, module cache, `BackendBase for Cuda`, `cuda_available`.
//! - `pool`: the caching allocator; `storage`: the buffer, with the operand conversions
//!   the convolutions keep beside it; `timing`: device time between CUDA events, of eager
//!   calls or of replays of a CUDA graph that captured them.
//! - `params*`: the parameter structs, mirrors of kernels/params*.h (layouts checked by a
//!   test); `launch`, `block_sum`, `conv_plan`: launch plans shared by the device and the
//!   harness; `kernel_call`: the checked launch.
//! - One launcher module per op family, each with `impl <Family>Kernel for Cuda`: `ops`
//!   (unary, binary, reduce, random fills), `conv` (f32 and tensor-core convolution),
//!   `norm`, `dropout`, `matmul`, `softmax`, `bce`, `cross_entropy`, `dice` (fused Dice
//!   sums), `confusion` (validation counts), `optim_step`, `pooling`, `upsample`, `concat`,
//!   `pad`, `flip`, `ssim`, `stitch` (sliding-window accumulation).
//! - `emu`: the same kernels compiled for the host (kernels/emu/cuda_emu.h), for tests
//!   where no GPU is lent.
mod bce;
pub mod block_sum;
mod concat;
mod confusion;
mod conv;
pub mod conv_plan;
pub mod conv_tma;
mod cross_entropy;
mod device;
mod dice;
mod dropout;
pub mod emu;
mod flip;
mod kernel_call;
pub mod launch;
mod matmul;
mod norm;
mod ops;
mod optim_step;
mod pad;
pub mod params;
pub mod params_bce;
pub mod params_confusion;
pub mod params_cross_entropy;
pub mod params_dice;
pub mod params_dropout;
pub mod params_matmul;
pub mod params_norm;
pub mod params_optim_step;
pub mod params_softmax;
pub mod params_spatial;
pub mod params_stitch;
pub mod pool;
mod pooling;
mod ptx;
mod sass;
mod softmax;
mod ssim;
mod stitch;
mod storage;
mod timing;
mod upsample;

pub use conv_plan::{ConvPrecision, CONV_PRECISION_ENV};
pub use device::{
    cuda_available, targets_sm90a, Cuda, CudaStorage, ModuleCode, StreamAlloc, BUILT_WITH_PTX,
};
pub use pool::PoolStats;
pub use ptx::PTX_MODULES;
pub use sass::{compute_capability_of, SASS_ARCH, SASS_ENV, SASS_MODULES};
pub use timing::graph_reps;
