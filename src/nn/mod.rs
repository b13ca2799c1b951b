//! Layers and models built from tensor ops: parameters, conv blocks, the U-Net and the FCN.
mod param;

pub use param::{Buffer, Module, Param};
