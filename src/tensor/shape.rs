//! Shapes. Activations are NDHWC: (batch, depth, height, width, channels), channels fastest.
//! Depth is the NIfTI z axis, height y, width x, so a single-channel volume's buffer is the
//! NIfTI C-order `[z][y][x]` array unchanged.
use crate::error::{Error, Result};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// The last dimension (channels for NDHWC); 1 for a scalar.
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
    /// The five dimensions of an NDHWC tensor, or an error naming `op`.
    pub fn ndhwc(&self, op: &'static str) -> Result<[usize; 5]> {
        match self.0.as_slice() {
            &[n, d, h, w, c] => Ok([n, d, h, w, c]),
            _ => Err(Error::shape(
                op,
                format!("expected an NDHWC tensor (rank 5), got {self}"),
            )),
        }
    }
    /// Fails with a message naming `op` unless both shapes are equal.
    pub fn expect_eq(&self, other: &Shape, op: &'static str) -> Result<()> {
        if self != other {
            return Err(Error::shape(
                op,
                format!("shapes differ: {self} vs {other}"),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
