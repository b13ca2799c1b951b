//! Parameters (trainable, with gradients) and buffers (state such as batch-norm running
//! statistics, saved in checkpoints but never given gradients).
use crate::autograd::{LeafId, Tape, Var};
use crate::backend::Backend;
use crate::tensor::Tensor;

pub struct Param<B: Backend> {
    /// The key of this parameter's gradient on a tape.
    pub id: LeafId,
    /// Dotted path naming the layer, e.g. `encoder.0.conv1.weight`; the checkpoint key.
    pub name: String,
    pub value: Tensor<B>,
    /// Whether weight decay and L1/L2 penalties apply (kernels yes; biases, norm scales no).
    pub decay: bool,
}

impl<B: Backend> Param<B> {
    pub fn new(name: impl Into<String>, value: Tensor<B>, decay: bool) -> Self {
        Self {
            id: LeafId::fresh(),
            name: name.into(),
            value,
            decay,
        }
    }
    /// This parameter as an input to the forward pass: tracked when a tape is given.
    pub fn var(&self, tape: Option<&Tape<B>>) -> Var<B> {
        match tape {
            Some(t) => t.leaf(self.value.clone(), self.id),
            None => Var::constant(self.value.clone()),
        }
    }
}

/// Non-trainable state of a layer.
pub struct Buffer<B: Backend> {
    pub name: String,
    pub value: Tensor<B>,
}

/// Visits a model's parameters and buffers, in a fixed order.
pub trait Module<B: Backend> {
    fn params(&self) -> Vec<&Param<B>>;
    fn params_mut(&mut self) -> Vec<&mut Param<B>>;
    fn buffers(&self) -> Vec<&Buffer<B>> {
        Vec::new()
    }
    fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        Vec::new()
    }
}
