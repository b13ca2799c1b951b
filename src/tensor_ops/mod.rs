//! Tensor operations, one folder per family: the kernel trait every backend implements,
//! the CPU kernel (`cpu.rs`), the forward/backward wiring onto the tape (`mod.rs`), tests.
//! CUDA kernels live in `kernels/<family>.cu` with their launchers in `backend::cuda`.
pub mod bce;
pub mod binary;
pub mod concat;
pub mod confusion;
pub mod conv;
pub mod cross_entropy;
pub mod dice_sums;
pub mod dropout;
pub mod flip;
pub mod matmul;
pub mod norm;
pub mod optim_step;
pub mod pad;
pub mod pool;
pub mod reduce;
pub mod reshape;
pub mod softmax;
pub mod ssim;
pub mod stitch;
#[cfg(test)]
pub(crate) mod test_inputs;
pub mod unary;
pub mod upsample;

pub use bce::BceKernel;
pub use binary::{add, BinaryKernel, BinaryOp};
pub use concat::ConcatKernel;
pub use confusion::ConfusionKernel;
pub use conv::Conv3dKernel;
pub use cross_entropy::{one_hot, CrossEntropyKernel};
pub use dice_sums::DiceSumsKernel;
pub use dropout::DropoutKernel;
pub use flip::FlipKernel;
pub use matmul::MatmulKernel;
pub use norm::{update_moving_stats, NormKernel};
pub use optim_step::OptimStepKernel;
pub use pad::PadKernel;
pub use pool::{Pool3dSpec, PoolKernel, PoolPadding};
pub use reduce::ReduceKernel;
pub use softmax::{SoftmaxKernel, SoftmaxOp};
pub use ssim::SsimWindowKernel;
pub use stitch::StitchKernel;
pub use unary::{UnaryKernel, UnaryOp};
pub use upsample::UpsampleKernel;

use crate::backend::BackendBase;

/// Every kernel family: what a backend must implement to train and run models.
pub trait Backend:
    BackendBase
    + UnaryKernel
    + BinaryKernel
    + ReduceKernel
    + Conv3dKernel
    + NormKernel
    + DropoutKernel
    + MatmulKernel
    + PoolKernel
    + UpsampleKernel
    + ConcatKernel
    + PadKernel
    + FlipKernel
    + SoftmaxKernel
    + BceKernel
    + CrossEntropyKernel
    + SsimWindowKernel
    + OptimStepKernel
    + DiceSumsKernel
    + ConfusionKernel
    + StitchKernel
{
}

impl<T> Backend for T where
    T: BackendBase
        + UnaryKernel
        + BinaryKernel
        + ReduceKernel
        + Conv3dKernel
        + NormKernel
        + DropoutKernel
        + MatmulKernel
        + PoolKernel
        + UpsampleKernel
        + ConcatKernel
        + PadKernel
        + FlipKernel
        + SoftmaxKernel
        + BceKernel
        + CrossEntropyKernel
        + SsimWindowKernel
        + OptimStepKernel
        + DiceSumsKernel
        + ConfusionKernel
        + StitchKernel
{
}
