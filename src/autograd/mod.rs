//! Reverse-mode automatic differentiation with a tape.
//!
//! Each op that has a tracked input pushes an [`Entry`]: the ids of its inputs, the shapes
//! they had, and a [`BackwardOp`] struct holding exactly what its backward needs. `backward`
//! walks the tape in reverse, consuming (and so freeing) each entry, summing gradients where
//! a value was used twice. Values made without a tape (inference, `no_grad`) record nothing.
mod gradcheck;
mod var;

pub use gradcheck::{check_gradients, GradcheckReport};
pub use var::Var;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The backward half of an op. `needs[i]` says whether input `i` wants a gradient;
/// the result has one entry per input (`None` where not needed).
pub trait BackwardOp<B: Backend> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>>;
}

/// Identifies a leaf whose gradient the caller wants back: a model parameter or a watched input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafId(pub usize);

static NEXT_LEAF: AtomicUsize = AtomicUsize::new(0);

impl LeafId {
    /// A process-wide unique id.
    pub fn fresh() -> Self {
        LeafId(NEXT_LEAF.fetch_add(1, Ordering::Relaxed))
    }
}

struct Entry<B: Backend> {
    output: usize,
    op_name: &'static str,
    inputs: Vec<Option<(usize, Shape)>>,
    op: Box<dyn BackwardOp<B>>,
}

struct TapeInner<B: Backend> {
    next_node: usize,
    entries: Vec<Entry<B>>,
    leaves: HashMap<usize, LeafId>,
}

/// The record of one forward pass. Cheap to clone (shared).
pub struct Tape<B: Backend> {
    inner: Rc<RefCell<TapeInner<B>>>,
}

impl<B: Backend> Clone for Tape<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> Default for Tape<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Tape<B> {
    pub fn new() -> Self {
        Self {
            inner: Rc::new(RefCell::new(TapeInner {
                next_node: 0,
                entries: Vec::new(),
                leaves: HashMap::new(),
            })),
        }
    }

    fn new_node(&self) -> usize {
        let mut inner = self.inner.borrow_mut();
        inner.next_node += 1;
        inner.next_node - 1
    }

    /// A tracked leaf: its gradient is returned by `backward` under `id`.
    pub fn leaf(&self, value: Tensor<B>, id: LeafId) -> Var<B> {
        let node = self.new_node();
        self.inner.borrow_mut().leaves.insert(node, id);
        Var::tracked(value, self.clone(), node)
    }

    /// Number of recorded ops (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(
        &self,
        op_name: &'static str,
        inputs: Vec<Option<(usize, Shape)>>,
        op: Box<dyn BackwardOp<B>>,
    ) -> usize {
        let output = self.new_node();
        self.inner.borrow_mut().entries.push(Entry {
            output,
            op_name,
            inputs,
            op,
        });
        output
    }

    /// Back-propagates from the scalar `loss`, consuming the tape.
    pub fn backward(&self, loss: &Var<B>) -> Result<Gradients<B>> {
        let Some(loss_node) = loss.node_on(self) else {
            return Err(Error::shape(
                "backward",
                "the loss was not computed on this tape",
            ));
        };
        if loss.value().numel() != 1 {
            return Err(Error::shape(
                "backward",
                format!("the loss must be a scalar, got shape {}", loss.shape()),
            ));
        }
        let (entries, leaves) = {
            let mut inner = self.inner.borrow_mut();
            (
                std::mem::take(&mut inner.entries),
                std::mem::take(&mut inner.leaves),
            )
        };
        let backend = loss.value().backend().clone();
        let mut grads: HashMap<usize, Tensor<B>> = HashMap::new();
        grads.insert(
            loss_node,
            Tensor::full(&backend, loss.shape().clone(), 1.0)?,
        );
        for entry in entries.into_iter().rev() {
            let Some(grad) = grads.remove(&entry.output) else {
                continue;
            };
            let needs: Vec<bool> = entry.inputs.iter().map(Option::is_some).collect();
            let input_grads = entry.op.backward(&grad, &needs)?;
            drop(grad);
            for (input, g) in entry.inputs.into_iter().zip(input_grads) {
                let (Some((node, shape)), Some(g)) = (input, g) else {
                    continue;
                };
                if g.shape() != &shape {
                    return Err(Error::shape(
                        entry.op_name,
                        format!("backward produced a gradient of shape {} for an input of shape {shape}", g.shape()),
                    ));
                }
                let summed = match grads.remove(&node) {
                    Some(prev) => crate::tensor_ops::add(&prev, &g)?,
                    None => g,
                };
                grads.insert(node, summed);
            }
        }
        let mut by_leaf = HashMap::new();
        for (node, id) in leaves {
            // A parameter used twice in one pass has two leaf nodes with one id: sum them.
            if let Some(g) = grads.remove(&node) {
                let summed = match by_leaf.remove(&id) {
                    Some(prev) => crate::tensor_ops::add(&prev, &g)?,
                    None => g,
                };
                by_leaf.insert(id, summed);
            }
        }
        Ok(Gradients { by_leaf })
    }
}

/// Gradients of the loss with respect to the tape's leaves.
pub struct Gradients<B: Backend> {
    by_leaf: HashMap<LeafId, Tensor<B>>,
}

impl<B: Backend> Gradients<B> {
    pub fn get(&self, id: LeafId) -> Option<&Tensor<B>> {
        self.by_leaf.get(&id)
    }
    pub fn remove(&mut self, id: LeafId) -> Option<Tensor<B>> {
        self.by_leaf.remove(&id)
    }
    pub fn insert(&mut self, id: LeafId, grad: Tensor<B>) {
        self.by_leaf.insert(id, grad);
    }
    pub fn len(&self) -> usize {
        self.by_leaf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_leaf.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&LeafId, &Tensor<B>)> {
        self.by_leaf.iter()
    }
}
