//! voxseg: train 3D U-Nets to segment brain tumours in multi-modal MRI.
//!
//! The tree is the architecture: `tensor` (shapes, buffers), `backend` (the device seam,
//! `cpu` and `cuda`), `tensor_ops` (one folder per op family: forward, backward, kernels,
//! tests), `autograd` (the tape), `nn` (layers and models), `loss`, `optim`, `data`,
//! `train`, `infer`, `metrics`, `log`.
/// `Serialize` and `Deserialize` for an enum whose derived impls are made inherent with
/// `#[serde(remote = "Self", tag = "kind")]`: as derived, except that a configuration may
/// give a bare name, `"dice"`, for `{"kind": "dice"}`. Defined before the modules so that
/// every one can use it.
macro_rules! serde_kind_shorthand {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let value = match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
                    serde_json::Value::String(kind) => serde_json::json!({ "kind": kind }),
                    other => other,
                };
                <$t>::deserialize(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod atomic;
pub mod autograd;
pub mod backend;
pub mod bench;
pub mod data;
pub mod error;
#[cfg(test)]
pub(crate) mod fixture_json;
pub mod infer;
pub mod interrupt;
mod json_keys;
pub mod large_blocks;
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
