//! voxseg: train 3D U-Nets to segment brain tumours in multi-modal MRI.
//!
//! The tree is the architecture: `tensor` (shapes, buffers), `backend` (the device seam,
//! `cpu` and `cuda`), `tensor_ops` (one folder per op family: forward, backward, kernels,
//! tests), `autograd` (the tape), `nn` (layers and models), `loss`, `optim`, `data`,
//! `train`, `infer`, `metrics`, `log`.
pub mod atomic;
pub mod autograd;
pub mod backend;
pub mod bench;
pub mod data;
pub mod error;
pub mod huge_pages;
pub mod infer;
pub mod log;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod quickstart;
pub mod rng;
pub mod tensor;
pub mod tensor_ops;
pub mod train;

pub use error::{Error, Result};
pub use tensor::{Shape, Tensor};
