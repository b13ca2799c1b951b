//! The tensor: a shape, an immutable reference-counted buffer on some backend, and the backend.
mod shape;

pub use shape::Shape;

use crate::backend::{BackendBase, Element};
use crate::error::{Error, Result};
use std::sync::Arc;

pub struct Tensor<B: BackendBase> {
    shape: Shape,
    storage: Arc<B::Storage>,
    backend: B,
}

impl<B: BackendBase> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Self {
            shape: self.shape.clone(),
            storage: self.storage.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<B: BackendBase> std::fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}, {})", self.shape, self.backend.name())
    }
}

impl<B: BackendBase> Tensor<B> {
    /// Wraps a backend buffer; its length must equal the shape's element count.
    pub fn from_storage(backend: &B, shape: Shape, storage: B::Storage) -> Result<Self> {
        let len = B::storage_len(&storage);
        if len != shape.numel() {
            return Err(Error::shape(
                "tensor",
                format!("buffer of {len} elements for shape {shape}"),
            ));
        }
        Ok(Self {
            shape,
            storage: Arc::new(storage),
            backend: backend.clone(),
        })
    }
    pub fn from_host(backend: &B, shape: impl Into<Shape>, data: &[B::E]) -> Result<Self> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "tensor",
                format!(
                    "{} values for shape {shape} ({} elements)",
                    data.len(),
                    shape.numel()
                ),
            ));
        }
        let storage = backend.upload(data)?;
        Self::from_storage(backend, shape, storage)
    }
    /// Builds a tensor from f32 host data, converting to the backend's element type.
    pub fn from_f32(backend: &B, shape: impl Into<Shape>, data: &[f32]) -> Result<Self> {
        let converted: Vec<B::E> = data.iter().map(|&v| B::E::of(v as f64)).collect();
        Self::from_host(backend, shape, &converted)
    }
    pub fn zeros(backend: &B, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let storage = backend.zeros(shape.numel())?;
        Self::from_storage(backend, shape, storage)
    }
    pub fn full(backend: &B, shape: impl Into<Shape>, value: f64) -> Result<Self> {
        let shape = shape.into();
        let data = vec![B::E::of(value); shape.numel()];
        Self::from_host(backend, shape, &data)
    }
    pub fn scalar(backend: &B, value: f64) -> Result<Self> {
        Self::full(backend, Shape::scalar(), value)
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }
    pub fn backend(&self) -> &B {
        &self.backend
    }
    pub fn to_vec(&self) -> Result<Vec<B::E>> {
        self.backend.download(&self.storage)
    }
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(self
            .to_vec()?
            .into_iter()
            .map(|v| v.as_f64() as f32)
            .collect())
    }
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.to_vec()?.into_iter().map(|v| v.as_f64()).collect())
    }
    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("tensor of shape {} has more than one value", self.shape),
            ));
        }
        Ok(self.to_vec()?[0].as_f64())
    }
    /// The same buffer seen with another shape of equal element count.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {} as {shape}", self.shape),
            ));
        }
        Ok(Self {
            shape,
            storage: self.storage.clone(),
            backend: self.backend.clone(),
        })
    }
    /// Mutable access to the buffer, for in-place updates (optimiser steps, running
    /// statistics). A buffer shared with another tensor is copied first.
    pub fn storage_mut(&mut self) -> Result<&mut B::Storage> {
        if Arc::get_mut(&mut self.storage).is_none() {
            let copy = self.backend.copy(&self.storage)?;
            self.storage = Arc::new(copy);
        }
        Ok(Arc::get_mut(&mut self.storage).expect("buffer was just made unique"))
    }
    /// Whether two tensors share one buffer (a reshape of the other, or a clone).
    pub fn same_storage(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}
