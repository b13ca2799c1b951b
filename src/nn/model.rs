//! A model chosen by configuration, and its weights as named tensors for checkpoints.
use super::fcn::{Fcn, FcnConfig};
use super::unet::{UNet, UNetConfig};
use super::{Buffer, Ctx, Module, Param};
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    Unet(UNetConfig),
    Fcn(FcnConfig),
}

impl ModelSpec {
    pub fn in_channels(&self) -> usize {
        match self {
            ModelSpec::Unet(c) => c.in_channels,
            ModelSpec::Fcn(c) => c.in_channels,
        }
    }
    pub fn out_channels(&self) -> usize {
        match self {
            ModelSpec::Unet(c) => c.out_channels,
            ModelSpec::Fcn(c) => c.out_channels,
        }
    }
}

pub enum Model<B: Backend> {
    Unet(Box<UNet<B>>),
    Fcn(Box<Fcn<B>>),
}

impl<B: Backend> Model<B> {
    /// A freshly initialised model; the same spec and seed give bit-identical weights.
    pub fn new(backend: &B, spec: &ModelSpec, seed: u64) -> Result<Self> {
        Ok(match spec {
            ModelSpec::Unet(c) => Model::Unet(Box::new(UNet::new(backend, c.clone(), seed)?)),
            ModelSpec::Fcn(c) => Model::Fcn(Box::new(Fcn::new(backend, c.clone(), seed)?)),
        })
    }
    pub fn spec(&self) -> ModelSpec {
        match self {
            Model::Unet(m) => ModelSpec::Unet(m.config.clone()),
            Model::Fcn(m) => ModelSpec::Fcn(m.config.clone()),
        }
    }
    /// Full-resolution logits first, then deep-supervision outputs (training only).
    pub fn forward(&mut self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Vec<Var<B>>> {
        match self {
            Model::Unet(m) => m.forward(x, ctx),
            Model::Fcn(m) => m.forward(x, ctx),
        }
    }
    pub fn parameter_count(&self) -> usize {
        self.params().iter().map(|p| p.value.numel()).sum()
    }

    /// Every parameter and buffer as (name, tensor), in a fixed order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor<B>)> {
        let mut out: Vec<(String, Tensor<B>)> = self
            .params()
            .into_iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        out.extend(
            self.buffers()
                .into_iter()
                .map(|b| (b.name.clone(), b.value.clone())),
        );
        out
    }

    /// Replaces every parameter and buffer from `tensors`; names and shapes must match
    /// exactly, so a checkpoint of another architecture is refused with the first mismatch.
    pub fn load_named_tensors(&mut self, tensors: Vec<(String, Tensor<B>)>) -> Result<()> {
        let mut by_name: std::collections::HashMap<String, Tensor<B>> =
            tensors.into_iter().collect();
        let mut take = |name: &str, current: &Tensor<B>| -> Result<Tensor<B>> {
            let t = by_name.remove(name).ok_or_else(|| {
                Error::data(
                    "checkpoint",
                    format!(
                        "tensor '{name}' is missing: the checkpoint is of another architecture"
                    ),
                )
            })?;
            if t.shape() != current.shape() {
                return Err(Error::data(
                    "checkpoint",
                    format!(
                        "tensor '{name}' has shape {} but the model expects {}",
                        t.shape(),
                        current.shape()
                    ),
                ));
            }
            Ok(t)
        };
        let mut staged = Vec::new();
        for p in self.params() {
            staged.push(take(&p.name, &p.value)?);
        }
        let mut staged_buffers = Vec::new();
        for b in self.buffers() {
            staged_buffers.push(take(&b.name, &b.value)?);
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(Error::data(
                "checkpoint",
                format!("tensor '{extra}' does not belong to this model"),
            ));
        }
        for (p, t) in self.params_mut().into_iter().zip(staged) {
            p.value = t;
        }
        for (b, t) in self.buffers_mut().into_iter().zip(staged_buffers) {
            b.value = t;
        }
        Ok(())
    }
}

impl<B: Backend> Module<B> for Model<B> {
    fn params(&self) -> Vec<&Param<B>> {
        match self {
            Model::Unet(m) => m.params(),
            Model::Fcn(m) => m.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        match self {
            Model::Unet(m) => m.params_mut(),
            Model::Fcn(m) => m.params_mut(),
        }
    }
    fn buffers(&self) -> Vec<&Buffer<B>> {
        match self {
            Model::Unet(m) => m.buffers(),
            Model::Fcn(m) => m.buffers(),
        }
    }
    fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        match self {
            Model::Unet(m) => m.buffers_mut(),
            Model::Fcn(m) => m.buffers_mut(),
        }
    }
}
