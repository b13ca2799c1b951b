//! Layers and models built from tensor ops: parameters, conv blocks, the U-Net and the FCN.
mod ctx;
mod init;
mod param;

pub use ctx::Ctx;
pub use init::Init;
pub use param::{Buffer, Module, Param};
