//! Layers and models built from tensor ops: parameters, conv blocks, the U-Net and the FCN.
mod ctx;
pub mod fcn;
mod init;
pub mod layers;
pub mod model;
mod param;
pub mod unet;

pub use ctx::Ctx;
pub use init::Init;
pub use model::{Model, ModelSpec};
pub use param::{Buffer, Module, Param};
