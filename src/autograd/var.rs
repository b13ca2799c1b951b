//! `Var`: a tensor plus, when it is tracked, its node on a tape.
use super::{BackwardOp, Tape};
use crate::backend::Backend;
use crate::tensor::{Shape, Tensor};

pub struct Var<B: Backend> {
    value: Tensor<B>,
    node: Option<(Tape<B>, usize)>,
}

impl<B: Backend> Clone for Var<B> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            node: self.node.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Var<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}, tracked: {})", self.value, self.node.is_some())
    }
}

impl<B: Backend> Var<B> {
    /// A value that no gradient flows into (input data, targets, inference).
    pub fn constant(value: Tensor<B>) -> Self {
        Self { value, node: None }
    }
    pub(super) fn tracked(value: Tensor<B>, tape: Tape<B>, node: usize) -> Self {
        Self {
            value,
            node: Some((tape, node)),
        }
    }
    pub fn value(&self) -> &Tensor<B> {
        &self.value
    }
    pub fn into_value(self) -> Tensor<B> {
        self.value
    }
    pub fn shape(&self) -> &Shape {
        self.value.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.value.dims()
    }
    pub fn backend(&self) -> &B {
        self.value.backend()
    }
    pub fn is_tracked(&self) -> bool {
        self.node.is_some()
    }
    pub fn tape(&self) -> Option<&Tape<B>> {
        self.node.as_ref().map(|(t, _)| t)
    }
    /// This value without its history: gradients stop here.
    pub fn detach(&self) -> Self {
        Self::constant(self.value.clone())
    }
    pub(super) fn node_on(&self, tape: &Tape<B>) -> Option<usize> {
        match &self.node {
            Some((t, n)) if std::rc::Rc::ptr_eq(&t.inner, &tape.inner) => Some(*n),
            _ => None,
        }
    }

    /// The result of an op: records `op` on the tape of the first tracked input, if any.
    /// `op` is built lazily so untracked (inference) calls save nothing.
    pub fn from_op<O, F>(
        op_name: &'static str,
        value: Tensor<B>,
        inputs: &[&Var<B>],
        make_op: F,
    ) -> Self
    where
        O: BackwardOp<B> + 'static,
        F: FnOnce() -> O,
    {
        let Some(tape) = inputs.iter().find_map(|v| v.tape()).cloned() else {
            return Self::constant(value);
        };
        let ids = inputs
            .iter()
            .map(|v| v.node_on(&tape).map(|n| (n, v.shape().clone())))
            .collect();
        let node = tape.push(op_name, ids, Box::new(make_op()));
        Self {
            value,
            node: Some((tape, node)),
        }
    }
}
