//! Joining tensors along the last (channel) axis and taking a channel range back out:
//! U-Net skip connections, and splitting a multi-channel prediction into its parts.
//! Each is the other's backward.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// A channel range of a tensor viewed as `[rows, channels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ChannelRange {
    pub rows: usize,
    pub channels: usize,
    pub start: usize,
    /// Exclusive.
    pub end: usize,
}

impl ChannelRange {
    pub fn width(&self) -> usize {
        self.end - self.start
    }
}

pub trait ConcatKernel: BackendBase {
    /// Rows of `[rows, widths[i]]` parts laid side by side: `[rows, sum(widths)]`.
    fn concat_channels(
        &self,
        parts: &[&Self::Storage],
        widths: &[usize],
        rows: usize,
    ) -> Result<Self::Storage>;
    /// `[rows, channels]` -> `[rows, end - start]`.
    fn slice_channels(&self, x: &Self::Storage, r: ChannelRange) -> Result<Self::Storage>;
    /// `[rows, end - start]` -> `[rows, channels]`, zero outside the range.
    fn embed_channels(&self, part: &Self::Storage, r: ChannelRange) -> Result<Self::Storage>;
}

/// The shared leading dimensions and each part's channel count, or an error naming all shapes.
fn concat_layout(shapes: &[&Shape]) -> Result<(Shape, Vec<usize>)> {
    let op = "concat_channels";
    let Some(first) = shapes.first() else {
        return Err(Error::shape(op, "no tensors to concatenate"));
    };
    let lead = &first.dims()[..first.rank().saturating_sub(1)];
    let fits =
        |s: &&Shape| s.rank() == first.rank() && s.rank() > 0 && &s.dims()[..lead.len()] == lead;
    if !shapes.iter().all(fits) {
        let listed: Vec<String> = shapes.iter().map(|s| s.to_string()).collect();
        return Err(Error::shape(
            op,
            format!(
                "all dimensions but the last must match: {}",
                listed.join(", ")
            ),
        ));
    }
    Ok((Shape::new(lead), shapes.iter().map(|s| s.last()).collect()))
}

fn with_channels(lead: &Shape, channels: usize) -> Shape {
    let mut dims = lead.dims().to_vec();
    dims.push(channels);
    Shape(dims)
}

/// Concatenation along the last axis, without recording.
pub fn concat_channels<B: Backend>(parts: &[&Tensor<B>]) -> Result<Tensor<B>> {
    let shapes: Vec<&Shape> = parts.iter().map(|t| t.shape()).collect();
    let (lead, widths) = concat_layout(&shapes)?;
    let be = parts[0].backend();
    let storages: Vec<&B::Storage> = parts.iter().map(|t| t.storage()).collect();
    let y = be.concat_channels(&storages, &widths, lead.numel())?;
    Tensor::from_storage(be, with_channels(&lead, widths.iter().sum()), y)
}

fn slice_range(x: &Shape, start: usize, end: usize) -> Result<ChannelRange> {
    let channels = x.last();
    if x.rank() == 0 || start >= end || end > channels {
        return Err(Error::shape(
            "slice_channels",
            format!("channel range {start}..{end} is empty or outside input {x}"),
        ));
    }
    Ok(ChannelRange {
        rows: x.numel() / channels,
        channels,
        start,
        end,
    })
}

/// Channels `start..end` of the last axis, without recording.
pub fn slice_channels<B: Backend>(x: &Tensor<B>, start: usize, end: usize) -> Result<Tensor<B>> {
    let r = slice_range(x.shape(), start, end)?;
    let y = x.backend().slice_channels(x.storage(), r)?;
    let dims = x.dims();
    let lead = Shape::new(&dims[..dims.len() - 1]);
    Tensor::from_storage(x.backend(), with_channels(&lead, r.width()), y)
}

/// Saves each part's channel range: the gradient of part i is that slice of the output's.
struct ConcatBackward {
    ranges: Vec<ChannelRange>,
    shapes: Vec<Shape>,
}

impl<B: Backend> BackwardOp<B> for ConcatBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        self.ranges
            .into_iter()
            .zip(self.shapes)
            .zip(needs)
            .map(|((r, shape), &need)| {
                need.then(|| {
                    let dx = be.slice_channels(grad.storage(), r)?;
                    Tensor::from_storage(be, shape, dx)
                })
                .transpose()
            })
            .collect()
    }
}

/// Saves the range: the gradient is the output's, placed back among zero channels.
struct SliceBackward {
    range: ChannelRange,
    input_shape: Shape,
}

impl<B: Backend> BackwardOp<B> for SliceBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let dx = be.embed_channels(grad.storage(), self.range)?;
        Ok(vec![Some(Tensor::from_storage(be, self.input_shape, dx)?)])
    }
}

impl<B: Backend> Var<B> {
    /// Concatenation along the last axis; all other dimensions must match.
    pub fn concat_channels(parts: &[&Var<B>]) -> Result<Var<B>> {
        let values: Vec<&Tensor<B>> = parts.iter().map(|v| v.value()).collect();
        let y = concat_channels(&values)?;
        Ok(Var::from_op("concat_channels", y, parts, || {
            let shapes: Vec<Shape> = parts.iter().map(|p| p.shape().clone()).collect();
            let dims = shapes[0].dims();
            let rows = dims[..dims.len() - 1].iter().product();
            let channels = shapes.iter().map(Shape::last).sum();
            let mut start = 0;
            let ranges = shapes
                .iter()
                .map(|s| {
                    start += s.last();
                    ChannelRange {
                        rows,
                        channels,
                        start: start - s.last(),
                        end: start,
                    }
                })
                .collect();
            ConcatBackward { ranges, shapes }
        }))
    }
    /// Channels `start..end` of the last axis.
    pub fn slice_channels(&self, start: usize, end: usize) -> Result<Var<B>> {
        let range = slice_range(self.shape(), start, end)?;
        let y = slice_channels(self.value(), start, end)?;
        Ok(Var::from_op("slice_channels", y, &[self], || {
            SliceBackward {
                range,
                input_shape: self.shape().clone(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu;
    use crate::tensor_ops::test_inputs::{wavy, weighted_sum};

    fn var(shape: impl Into<Shape>, data: &[f32]) -> Var<Cpu> {
        Var::constant(Tensor::from_host(&Cpu::new(), shape, data).unwrap())
    }

    #[test]
    fn concat_interleaves_rows_and_slice_takes_them_back() {
        let a = var([1, 1, 1, 2, 1], &[1.0, 2.0]);
        let b = var([1, 1, 1, 2, 2], &[10.0, 11.0, 20.0, 21.0]);
        let y = Var::concat_channels(&[&a, &b]).unwrap();
        assert_eq!(y.dims(), &[1, 1, 1, 2, 3]);
        assert_eq!(
            y.value().to_vec().unwrap(),
            vec![1.0, 10.0, 11.0, 2.0, 20.0, 21.0]
        );
        assert_eq!(
            y.slice_channels(0, 1).unwrap().value().to_vec().unwrap(),
            a.value().to_vec().unwrap()
        );
        let back = y.slice_channels(1, 3).unwrap();
        assert_eq!(back.dims(), b.dims());
        assert_eq!(back.value().to_vec().unwrap(), b.value().to_vec().unwrap());
    }

    #[test]
    fn gradients_of_concat_and_slice() {
        let parts = [
            wavy([2, 5, 3, 4, 3]),
            wavy([2, 5, 3, 4, 1]),
            wavy([2, 5, 3, 4, 2]),
        ];
        check_gradients(
            &parts,
            |v| weighted_sum(&Var::concat_channels(&[&v[0], &v[1], &v[2]])?),
            1e-6,
            1e-7,
            usize::MAX,
        )
        .unwrap();
        for (start, end) in [(0, 1), (1, 3), (0, 3), (2, 3)] {
            check_gradients(
                &[parts[0].clone()],
                |v| weighted_sum(&v[0].slice_channels(start, end)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("slice {start}..{end}: {e}"));
        }
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_op_and_shapes() {
        let a = var([1, 1, 2, 2, 1], &[1.0; 4]);
        let b = var([1, 1, 2, 1, 2], &[1.0; 4]);
        let err = Var::concat_channels(&[&a, &b]).unwrap_err().to_string();
        assert!(
            err.contains("concat_channels")
                && err.contains("[1, 1, 2, 2, 1]")
                && err.contains("[1, 1, 2, 1, 2]"),
            "{err}"
        );
        let flat = var([1, 2, 2, 1], &[1.0; 4]);
        let rank = Var::concat_channels(&[&a, &flat]).unwrap_err().to_string();
        assert!(rank.contains("[1, 2, 2, 1]"), "{rank}");
        let none = Var::<Cpu>::concat_channels(&[]).unwrap_err().to_string();
        assert!(none.contains("concat_channels"), "{none}");
        for (start, end) in [(0, 2), (1, 1), (2, 1)] {
            let err = a.slice_channels(start, end).unwrap_err().to_string();
            assert!(
                err.contains("slice_channels")
                    && err.contains(&format!("{start}..{end}"))
                    && err.contains("[1, 1, 2, 2, 1]"),
                "{err}"
            );
        }
    }
}
