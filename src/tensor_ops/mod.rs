//! Tensor operations, one folder per family: the kernel trait every backend implements,
//! the CPU kernel (`cpu.rs`), the forward/backward wiring onto the tape (`mod.rs`), tests.
//! CUDA kernels live in `kernels/<family>.cu` with their launchers in `backend::cuda`.
pub mod binary;
pub mod conv;
pub mod reduce;
pub mod unary;

pub use binary::{add, BinaryKernel, BinaryOp};
pub use conv::Conv3dKernel;
pub use reduce::ReduceKernel;
pub use unary::{UnaryKernel, UnaryOp};

use crate::backend::BackendBase;

/// Every kernel family: what a backend must implement to train and run models.
pub trait Backend: BackendBase + UnaryKernel + BinaryKernel + ReduceKernel + Conv3dKernel {}

impl<T> Backend for T where T: BackendBase + UnaryKernel + BinaryKernel + ReduceKernel + Conv3dKernel
{}
