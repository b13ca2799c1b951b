//! Tensor operations, one folder per family: the kernel trait every backend implements,
//! the CPU kernel (`cpu.rs`), the forward/backward wiring onto the tape (`mod.rs`), tests.
//! CUDA kernels live in `kernels/<family>.cu` with their launchers in `backend::cuda`.
pub mod bce;
pub mod binary;
pub mod cross_entropy;
pub mod optim_step;
pub mod reduce;
pub mod softmax;
pub mod ssim;
pub mod unary;

pub use bce::BceKernel;
pub use binary::{add, BinaryKernel, BinaryOp};
pub use cross_entropy::{one_hot, CrossEntropyKernel};
pub use optim_step::OptimStepKernel;
pub use reduce::ReduceKernel;
pub use softmax::{SoftmaxKernel, SoftmaxOp};
pub use ssim::SsimWindowKernel;
pub use unary::{UnaryKernel, UnaryOp};

use crate::backend::BackendBase;

/// Every kernel family: what a backend must implement to train and run models.
pub trait Backend:
    BackendBase
    + UnaryKernel
    + BinaryKernel
    + ReduceKernel
    + SoftmaxKernel
    + BceKernel
    + CrossEntropyKernel
    + SsimWindowKernel
    + OptimStepKernel
{
}

impl<T> Backend for T where
    T: BackendBase
        + UnaryKernel
        + BinaryKernel
        + ReduceKernel
        + SoftmaxKernel
        + BceKernel
        + CrossEntropyKernel
        + SsimWindowKernel
        + OptimStepKernel
{
}
