//! `ConcatKernel` for `Cuda` (kernels/concat.cu): a concatenation places each part into its
//! channel range of the output, one launch per part; slicing and embedding are one launch.
use super::device::{Cuda, CudaStorage};
use super::launch::elementwise;
use super::ops::launch;
use super::params_spatial::{channel_counts, expect_len};
use crate::error::{Error, Result};
use crate::tensor_ops::concat::{ChannelRange, ConcatKernel};
use cudarc::driver::PushKernelArg;

impl ConcatKernel for Cuda {
    fn concat_channels(
        &self,
        parts: &[&CudaStorage],
        widths: &[usize],
        rows: usize,
    ) -> Result<CudaStorage> {
        let op = "concat_channels";
        if parts.len() != widths.len()
            || parts
                .iter()
                .zip(widths)
                .any(|(p, &w)| Some(p.len()) != rows.checked_mul(w))
        {
            let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            return Err(Error::shape(
                op,
                format!("parts of {lens:?} elements do not fit {rows} rows of widths {widths:?}"),
            ));
        }
        let channels: usize = widths.iter().sum();
        let mut range = ChannelRange {
            rows,
            channels,
            start: 0,
            end: channels,
        };
        let (total, _) = channel_counts(op, &range)?;
        let mut y = self.alloc(total)?;
        for (part, &w) in parts.iter().zip(widths) {
            range.end = range.start + w;
            let n = rows * w;
            if n > 0 {
                let dims = elementwise(n, self.max_elementwise_blocks());
                launch!(
                    self,
                    "concat",
                    "channels_place",
                    &dims,
                    [&range, part.block(), y.block_mut()]
                )?;
            }
            range.start = range.end;
        }
        Ok(y)
    }

    fn slice_channels(&self, x: &CudaStorage, r: ChannelRange) -> Result<CudaStorage> {
        let op = "slice_channels";
        let (full, part) = channel_counts(op, &r)?;
        expect_len(op, "input", x.len(), full)?;
        let mut y = self.alloc(part)?;
        let dims = elementwise(part, self.max_elementwise_blocks());
        launch!(
            self,
            "concat",
            "channels_slice",
            &dims,
            [&r, x.block(), y.block_mut()]
        )?;
        Ok(y)
    }

    fn embed_channels(&self, part: &CudaStorage, r: ChannelRange) -> Result<CudaStorage> {
        let op = "slice_channels backward";
        let (full, width) = channel_counts(op, &r)?;
        expect_len(op, "gradient", part.len(), width)?;
        let mut y = self.alloc(full)?;
        let dims = elementwise(full, self.max_elementwise_blocks());
        launch!(
            self,
            "concat",
            "channels_embed",
            &dims,
            [&r, part.block(), y.block_mut()]
        )?;
        Ok(y)
    }
}
